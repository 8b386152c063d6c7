"""The Celery peer's one task: what the hand loop does for a job (bench/hand.py: a fresh clone,
reporun's very bubblewrap run, the clone removed), run by a Celery worker fed through Redis.
Imported by `celery -A celery_tasks worker` and by the bench that sends the tasks; the broker
and the queue come from BENCH_CELERY_REDIS and BENCH_CELERY_QUEUE."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from celery import Celery
from hand import hand_job

from reporun.worker.sandbox import Bubblewrap

app = Celery("reporun_bench")
app.conf.update(
    broker_url=os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/9"),
    result_backend=os.environ.get("BENCH_CELERY_REDIS", "redis://127.0.0.1:6379/9"),
    task_default_queue=os.environ.get("BENCH_CELERY_QUEUE", "reporun-bench"),
    # One job at a time per worker process, as a reporun worker takes them.
    worker_prefetch_multiplier=1,
    task_acks_late=True,
    broker_connection_retry_on_startup=True,
    result_expires=600,
)
_sandbox: list[Bubblewrap] = []


@app.task(name="reporun_bench.clone_and_run")
def clone_and_run(repo: str, dest: str) -> None:
    if not _sandbox:
        _sandbox.append(Bubblewrap())
    asyncio.run(hand_job(_sandbox[0], repo, Path(dest)))
