"""Inbound spam screening: explainable rules, a verdict the dialplan acts on, audit of decisions.

One file per role: ``config`` (the ``[screening]`` section), ``callers`` (who calls, on which
line: attestation, caller ID, dialled number; pure), ``rules`` (pure scoring),
``lists`` (block/allow entries, pure), ``windows`` (burst/flood counters in memory),
``callees`` (recently called numbers, as hashes, in memory), ``repo`` (its SQL), ``service``
(the use case), ``route`` (the FastAGI adapter). Nothing here runs at import time.
"""
