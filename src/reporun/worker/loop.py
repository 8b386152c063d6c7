"""The worker: claim a job, check it out, run it in the sandbox, report once; heartbeat and
reap lost workers' jobs on the side; on stop, take nothing new and finish what it has."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import shutil
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from ipaddress import IPv4Network
from pathlib import Path

from reporun.errors import SandboxError
from reporun.jobs import Job
from reporun.queue import Outcome, QueueBackend
from reporun.retry import compute_backoff, retry_until
from reporun.runtimes import Catalog
from reporun.store import Store
from reporun.tasks import wait_any
from reporun.urlpolicy import UrlPolicy
from reporun.worker.checkout import Mirrors
from reporun.worker.egress import EgressPolicy, egress_dir
from reporun.worker.execute import Parts, Runner, Watch
from reporun.worker.output import LogWriter
from reporun.worker.runtimes import RootStore
from reporun.worker.sandbox import Sandbox
from reporun.worker.setup import SetupCache
from reporun.worker.workdir import prepare_work_dir

logger = logging.getLogger("reporun.worker")

CANCEL_POLL = 0.25
# Writing a job's end (or giving it back) is retried through a database outage this long. The
# lease is no longer renewed by then: once a reaper has taken the job back, the write changes
# nothing and the job runs again elsewhere.
REPORT_DEADLINE = 300.0
# How often unused runtime roots and leftovers of setups are looked for (roots also after each
# preparation).
TIDY_EVERY = 3600.0


def new_worker_id() -> str:
    return f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"


@dataclass(frozen=True, slots=True)
class WorkerConfig:
    """What a worker needs besides its store, queue and sandbox (leases and polling are the
    queue's own: `queue.config`)."""

    work_dir: Path
    mirrors_dir: Path
    url_policy: UrlPolicy
    worker_id: str | None = None
    checkout_timeout: float = 300.0
    # A job still running this long after a stop request goes back to the queue.
    drain_grace: float = 600.0
    # What reporun.toml may ask for: a timeout up to this.
    timeout_max: int = 3600
    # Which hosts a job of network mode `registries` may reach.
    egress: EgressPolicy = field(default_factory=EgressPolicy)
    # Where setup phases' results are kept (default: beside the work dir), and how many bytes.
    setup_cache_dir: Path | None = None
    setup_cache_max: int = 10 * 1024**3
    # The runtimes a job may run in, and where their roots are prepared.
    runtimes: Catalog = field(default_factory=lambda: Catalog({}))
    runtimes_dir: Path | None = None
    # Whether this worker gives network `open` (REPORUN_NETWORK_OPEN is set), and what such a
    # job may not reach besides netjail.REFUSED_RANGES and this host's addresses.
    open_network: bool = False
    open_refused: tuple[IPv4Network, ...] = ()


class Worker:
    def __init__(
        self,
        *,
        config: WorkerConfig,
        store: Store,
        queue: QueueBackend,
        sandbox: Sandbox,
    ) -> None:
        self.config = config
        self.store = store
        self.queue = queue
        self.sandbox = sandbox
        self.id = config.worker_id or new_worker_id()
        self.mirrors = Mirrors(
            config.mirrors_dir, config.url_policy, timeout=config.checkout_timeout
        )
        self.work_dir = config.work_dir
        self.runtimes = config.runtimes
        self.roots = RootStore(config.runtimes_dir or config.work_dir / "runtimes")
        self.egress_dir = egress_dir(config.work_dir)
        self.setups = SetupCache(
            config.setup_cache_dir or config.work_dir.with_name(f"{config.work_dir.name}-setup"),
            max_bytes=config.setup_cache_max,
        )
        self.runner = Runner(
            Parts(
                worker_id=self.id,
                queue=queue,
                sandbox=sandbox,
                mirrors=self.mirrors,
                runtimes=self.runtimes,
                roots=self.roots,
                setups=self.setups,
                egress=config.egress,
                egress_dir=self.egress_dir,
                timeout_max=config.timeout_max,
                open_network=config.open_network,
                open_refused=config.open_refused,
            )
        )
        self.lease_seconds = queue.config.lease_seconds
        self.state = "idle"
        self.current: Job | None = None
        self._watch: Watch | None = None

    def _log(self, action: str, job: Job | None = None, **fields: object) -> dict[str, object]:
        extra: dict[str, object] = {"action": action, "worker": self.id, **fields}
        if job is not None:
            extra["job_id"] = str(job.id)
        return extra

    # Main loop --------------------------------------------------------------------------------
    async def run(
        self,
        stop: asyncio.Event,
        retire: asyncio.Event | None = None,
        *,
        now: asyncio.Event | None = None,
    ) -> None:
        """Claim and run jobs until `stop` (finish the job up to the drain grace, or until
        `now`, then give it back without using an attempt) or `retire` (scale-in: take nothing
        new, finish the job however long it runs)."""
        retire = retire or asyncio.Event()
        now = now or asyncio.Event()
        prepare_work_dir(self.work_dir)
        if self.runtimes.images:
            self.roots.check()
        logger.info("worker started", extra=self._log("start", sandbox=self.sandbox.name))
        # Registered before the first claim, so the observer knows every worker holding a job.
        try:
            await self._heartbeat()
        except Exception:
            logger.warning("first heartbeat failed", exc_info=True, extra=self._log("heartbeat"))
        side = [
            asyncio.create_task(
                self._every("heartbeat", self.lease_seconds / 3, self._heartbeat), name="heartbeat"
            ),
            # Reaping often keeps a lost worker's job waiting little more than one lease.
            asyncio.create_task(
                self._every("reap", self.lease_seconds / 4, self._reap), name="reaper"
            ),
            # Unused runtime roots, and what crashed setups and preparations left.
            asyncio.create_task(self._every("tidy", TIDY_EVERY, self._tidy), name="tidy"),
        ]
        try:
            while not stop.is_set() and not retire.is_set():
                job = await self._claim()
                if job is None:
                    await wait_any(
                        stop.wait(), retire.wait(), self.queue.wait(self.queue.config.poll_interval)
                    )
                    continue
                await self._run_draining(job, stop, retire, now)
            if retire.is_set():
                logger.info("retired by scale-in", extra=self._log("retire"))
        finally:
            self.state = "stopped"
            for task in side:
                task.cancel()
            await asyncio.gather(*side, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.shield(self.store.remove_worker(self.id))
            logger.info("worker stopped", extra=self._log("stop"))

    async def _claim(self) -> Job | None:
        try:
            return await self.queue.claim(self.id)
        except Exception:
            logger.warning("claim failed", exc_info=True, extra=self._log("claim"))
            await asyncio.sleep(compute_backoff(3))
            return None

    async def _run_draining(
        self, job: Job, stop: asyncio.Event, retire: asyncio.Event, now: asyncio.Event
    ) -> None:
        """Run the job; a stop request lets it finish, up to the drain grace period or `now`."""
        task = asyncio.create_task(self.process(job), name=f"job-{job.id}")
        retiring = asyncio.create_task(self._retiring(retire, task), name="retire-watch")
        try:
            await wait_any(asyncio.shield(task), stop.wait())
        finally:
            retiring.cancel()
            await asyncio.gather(retiring, return_exceptions=True)
        if not task.done():
            self.state = "draining"
            logger.info("draining", extra=self._log("drain", job))
            hurry = asyncio.create_task(now.wait(), name="stop-now")
            await asyncio.wait(
                {task, hurry}, timeout=self.config.drain_grace, return_when=asyncio.FIRST_COMPLETED
            )
            hurry.cancel()
            await asyncio.gather(hurry, return_exceptions=True)
            if not task.done() and self._watch is not None:
                logger.info("stopping the job to give it back", extra=self._log("give_back", job))
                self._watch.drained = True
                self._watch.stop.set()
            await task

    async def _retiring(self, retire: asyncio.Event, task: asyncio.Task[None]) -> None:
        await retire.wait()
        if not task.done():
            self.state = "draining"
            logger.info("retiring after this job", extra=self._log("retire", self.current))

    async def _every(
        self, name: str, seconds: float, action: Callable[[], Awaitable[object]]
    ) -> None:
        while True:
            try:
                await action()
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning(f"{name} failed", exc_info=True, extra=self._log(name))
            await asyncio.sleep(seconds)

    async def _heartbeat(self) -> None:
        await self.store.worker_heartbeat(
            self.id,
            host=socket.gethostname(),
            pid=os.getpid(),
            state=self.state,
            current_job=self.current.id if self.current else None,
        )

    async def _tidy(self) -> None:
        if self.runtimes.images:
            await self.roots.tidy()
        await self.setups.tidy()

    async def _reap(self) -> None:
        if reaped := await self.queue.reap():
            logger.warning("reaped jobs of lost workers", extra=self._log("reap", count=reaped))
        await self.store.prune_workers(older_than=self.lease_seconds * 10)

    # One job ----------------------------------------------------------------------------------
    async def process(self, job: Job) -> None:
        self.state, self.current = "busy", job
        self._watch = watch = Watch()
        workspace = self.work_dir / str(job.id)
        log = LogWriter(self.store, job, self.id)
        logger.info("job claimed", extra=self._log("claim", job, attempt=job.attempts))
        monitor = asyncio.create_task(self._monitor(job, watch, log), name=f"monitor-{job.id}")
        outcome: Outcome | None = None
        try:
            if job.attempts > 1 or job.log_bytes:  # what an earlier run wrote
                await self.store.logs.reset(job.id, worker=self.id, attempt=job.attempts)
            outcome = await self.runner.execute(job, workspace, watch, log)
            if outcome is not None and not log.ended:
                # It ended early (checkout, setup): what it had goes in with its end.
                tail, start = await log.tail(truncated=False)
                outcome = dataclasses.replace(outcome, tail=tail, start=start)
        except SandboxError as exc:
            await self._give_back(job, f"sandbox failed: {exc.message}")
        except Exception as exc:
            logger.exception("job crashed the worker", extra=self._log("crash", job))
            await self._give_back(job, f"worker error: {type(exc).__name__}")
        finally:
            monitor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await monitor
            shutil.rmtree(workspace, ignore_errors=True)
            if self.state == "busy":
                self.state = "idle"
            self.current, self._watch = None, None
        if outcome is not None:
            outcome = dataclasses.replace(outcome, phases=dict(watch.phases))
            await asyncio.shield(self._report(job, outcome))
        elif watch.drained:  # the operator stopped this worker: the attempt does not count
            await asyncio.shield(
                self._give_back(job, "its worker stopped before the job ended", attempt_used=False)
            )

    async def _monitor(self, job: Job, watch: Watch, log: LogWriter) -> None:
        """Renew the lease, notice cancel requests, flush quiet logs. Every database call has
        a deadline, and a separate fence stops the run once the lease may have run out: a
        hung database never lets two workers run the job at once."""
        renew_every = self.lease_seconds / 3
        watch.held_until = time.monotonic() + self.lease_seconds
        fence = asyncio.create_task(self._fence(job, watch, renew_every), name=f"fence-{job.id}")
        last_renew = time.monotonic()
        try:
            while not watch.lease_lost:
                await asyncio.sleep(CANCEL_POLL)
                now = time.monotonic()
                due = now - last_renew >= renew_every
                step = "lease renewal" if due else "lease check"
                # One deadline for the round: a slow database costs at most half a renewal.
                try:
                    async with asyncio.timeout(renew_every / 2):
                        if due:
                            lease = await self.queue.renew(job, self.id)
                            if lease.held:
                                last_renew = now
                                watch.held_until = now + self.lease_seconds
                        else:
                            lease = await self.queue.check(job, self.id)
                        watch.lease_lost |= not lease.held
                        watch.cancel_requested |= lease.cancel_requested
                        if watch.lease_lost or watch.cancel_requested:
                            watch.stop.set()
                        step = "log flush"
                        await log.flush()
                except Exception:
                    logger.warning(f"{step} failed", exc_info=True, extra=self._log("monitor", job))
        finally:
            fence.cancel()
            await asyncio.gather(fence, return_exceptions=True)

    async def _fence(self, job: Job, watch: Watch, margin: float) -> None:
        while time.monotonic() < watch.held_until - margin / 2 and not watch.lease_lost:
            await asyncio.sleep(CANCEL_POLL)
        watch.lease_lost = True
        watch.stop.set()
        logger.warning("lease lost; stopping the run", extra=self._log("lease_lost", job))

    async def _report(self, job: Job, outcome: Outcome) -> None:
        """Write the terminal record, retrying through a database outage up to a deadline."""
        wrote, done = await retry_until(
            lambda: self.queue.finish(job, self.id, outcome),
            deadline=REPORT_DEADLINE,
            what="report",
            log=logger,
            extra=self._log("report", job, status=outcome.status.value),
        )
        if not wrote:
            return
        if done is None:
            logger.warning("job was no longer ours; result dropped", extra=self._log("report", job))
        else:
            logger.info(
                "job finished",
                extra=self._log("finish", job, status=done.status.value, reason=done.reason),
            )

    async def _give_back(self, job: Job, reason: str, *, attempt_used: bool = True) -> None:
        if attempt_used:
            logger.warning("platform fault", extra=self._log("release", job, reason=reason))
        else:
            logger.info("job given back", extra=self._log("release", job, reason=reason))
        await retry_until(
            lambda: self.queue.release(job, self.id, reason, attempt_used=attempt_used),
            deadline=REPORT_DEADLINE,
            what="giving the job back",
            log=logger,
            extra=self._log("release", job, reason=reason),
        )
