"""Call outcomes: what AMI events say about each call we placed (calls.py, pure), the repo
that records outcomes on call_audit, and the answer-rate figures (stats.py)."""
