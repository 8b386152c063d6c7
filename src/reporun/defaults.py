"""Defaults the server's Settings and the CLI share, importable without pydantic (the client
commands start without it)."""

from __future__ import annotations

from pathlib import Path

DEFAULT_DATA_DIR = Path(".reporun")
ADMIN_TOKEN_FILE = "admin.token"
