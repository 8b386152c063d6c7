"""Persistence: tables, migrations and repository functions (SQLite and PostgreSQL)."""

from reporun.store.store import EndedTotals, Page, Store, WorkerRecord, utcnow

__all__ = ["EndedTotals", "Page", "Store", "WorkerRecord", "utcnow"]
