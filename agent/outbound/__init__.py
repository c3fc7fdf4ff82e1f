"""Outbound caller ID per call: the route (FastAGI), the service facade (service.py) over one
module per job (decide, claims, reports, promotions, audit), the number view (view.py, pure)
beside the pure policy (eligibility, local presence, least used), and the repo that owns
numbers, daily_usage, rests, quarantines, spam_reports and writes call_audit."""
