"""The API process imports no worker, sandbox or observer code, and no Kafka client in SQL mode:
building the app (as `reporun api` does) in a fresh interpreter leaves them out of
sys.modules."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BUILD_THE_APP = """
import asyncio, json, secrets, sys
import reporun.cli
from reporun.api.app import create_app
from reporun.api.auth import LocalAuth
from reporun.api.server import build_services
from reporun.config import Settings
from reporun.store import Store

settings = Settings(data_dir=sys.argv[1], secret_key=secrets.token_urlsafe(32))
store = Store.open(settings.db_url)
auth = LocalAuth(settings.secret_key.get_secret_value(), store.tokens)
app = create_app(build_services(settings, store, auth))
asyncio.run(store.close())
print(json.dumps(sorted(m for m in sys.modules if m.startswith(("reporun", "aiokafka")))))
"""


def test_building_the_api_app_imports_no_worker_sandbox_or_observer(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-c", BUILD_THE_APP, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    modules = json.loads(result.stdout)
    assert "reporun.api.app" in modules and "reporun.queue.sql" in modules
    leaked = [
        m
        for m in modules
        if m.startswith(("reporun.worker", "reporun.observer", "reporun.doctor", "aiokafka"))
        or m in ("reporun.queue.kafka", "reporun.queue.relay")
    ]
    assert leaked == [], leaked
