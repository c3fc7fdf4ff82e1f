"""Outcomes of the calls we place, and what they say about our numbers' reputation.

drift (pure CUSUM policy), service (feeds drift, acts on its signals), providers + scanner +
repo (reputation lookups and their history), report + report_html + weekly (the weekly
report), config (the pools.toml keys of all this).
"""
