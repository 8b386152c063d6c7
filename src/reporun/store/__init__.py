"""Persistence: tables, migrations and repository functions (SQLite and PostgreSQL)."""

from reporun.store.figures import EndedTotals
from reporun.store.store import Page, Quota, Store, WorkerRecord, utcnow

__all__ = ["EndedTotals", "Page", "Quota", "Store", "WorkerRecord", "utcnow"]
