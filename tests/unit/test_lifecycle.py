"""What `reporun serve` says when it is stopped, and the two-step shutdown signal."""

from __future__ import annotations

import signal
import uuid

from reporun.jobs import Job
from reporun.lifecycle import stopping_line, waiting_line
from reporun.signals import Shutdown


def jobs(count: int) -> list[Job]:
    """Running jobs, as far as the lines need them (their ids)."""
    return [Job.model_construct(id=uuid.UUID(int=n + 1)) for n in range(count)]


def test_the_waiting_line_names_the_jobs_or_counts_them() -> None:
    one = jobs(1)
    assert waiting_line(one, 10.0, signal.SIGINT) == (
        f"waiting up to 10 s for job {one[0].id} to finish (Ctrl-C again to stop now)"
    )
    two = jobs(2)
    assert waiting_line(two, 2.5, signal.SIGTERM) == (
        f"waiting up to 2.5 s for jobs {two[0].id}, {two[1].id} to finish "
        "(send SIGTERM again to stop now)"
    )
    assert waiting_line(jobs(7), 600, None) == (
        "waiting up to 600 s for 7 running jobs to finish (Ctrl-C again to stop now)"
    )


def test_the_stopping_line_says_what_goes_back() -> None:
    one = jobs(1)
    assert stopping_line(one) == f"stopping now: job {one[0].id} goes back to the queue"
    assert stopping_line(jobs(4)) == "stopping now: 4 running jobs go back to the queue"
    assert stopping_line([]) == "stopping now"


def test_the_first_signal_asks_to_stop_the_second_to_stop_now() -> None:
    shutdown = Shutdown()
    shutdown.request(signal.SIGTERM)
    assert shutdown.stop.is_set() and not shutdown.now.is_set()
    assert shutdown.first is signal.SIGTERM
    shutdown.request(signal.SIGINT)
    assert shutdown.now.is_set() and shutdown.first is signal.SIGTERM
