"""Outbound caller ID per call: the route (FastAGI), the service (decide, claim, reports,
promotions), the pure policy (eligibility, local presence, least used) and the repo that owns
numbers, daily_usage, rests, quarantines, spam_reports and writes call_audit."""
