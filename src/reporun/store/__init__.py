"""Persistence: tables, migrations and repository functions (SQLite and PostgreSQL)."""

from reporun.store.store import Page, Store, WorkerRecord, utcnow

__all__ = ["Page", "Store", "WorkerRecord", "utcnow"]
