"""API and dashboard tokens: roles (``roles.py``, pure), SQL (``repo.py``), use cases
(``service.py``: create, list, revoke, authenticate). Tokens are shown once and stored hashed."""
