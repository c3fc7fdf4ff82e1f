"""Storage: one Database API over SQLite (default) with SQL written once, numbered migrations.

Feature modules keep their SQL in their own repository classes (agent/store/outbound.py, ...)
and talk to the database only through ``Database``. Placeholders are ``?`` everywhere.
"""

from agent.store.db import Database, open_database

__all__ = ["Database", "open_database"]
