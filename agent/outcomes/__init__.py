"""Outcomes of the calls we place, and what they say about our numbers.

calls (AMI events to facts, pure), intake (acts on those facts: stores outcomes, hands
reports and recordings on), repo (the outcome columns of call_audit), stats (answer rates),
drift (pure CUSUM policy), service (feeds drift, acts on its signals), report + report_html +
weekly (the weekly report), config (the pools.toml keys of all this).
"""
