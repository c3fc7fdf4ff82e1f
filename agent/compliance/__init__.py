"""Compliance: call windows in the callee's time zone, attempt limits, opt-outs, retention and
the tamper-evident audit trail.

- ``policy``: the pure rules (windows, holidays, the callee's zone, limits) and the verdict.
- ``config``: the ``[windows]``, ``[limits]`` and ``[retention]`` sections of pools.toml.
- ``numbers``: a callee's E.164 that knows France's overseas departments.
- ``service``: may this call go out, opt-outs (CLI, AMI ``UserEvent(OptOut)``), retention.
- ``attempts``: attempts per callee and purpose, tailed from call_audit.
- ``chain``: the hash chain over call, admin and recording audits; verify; daily anchors.
- ``export``: the auditor's CSV / JSON lines. ``repo``: the SQL. ``route``: FastAGI wrapper.
"""
