"""What the admin edges (HTTP API, dashboard, token commands) share: the admin audit writer
(``audit.py``) and the read-only queries the dashboard's pages draw from (``views.py``)."""
