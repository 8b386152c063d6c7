"""Building the parts every process shares from the one Settings object, once at start: the
store, the queue and the rules for jobs, each given its own small config. What only one part
needs is built beside it (`worker.main`, `observer.main`, `api.server`), so a process imports
only the parts it runs."""

from __future__ import annotations

from typing import TYPE_CHECKING

from reporun.config import Settings
from reporun.errors import ConfigError
from reporun.jobs import JobRules, LimitRange, OpenNetwork
from reporun.queue import QueueBackend, QueueConfig
from reporun.queue.sql import SqlQueue
from reporun.store import Store
from reporun.store.migrate import is_current
from reporun.store.outbox import Outbox
from reporun.urlpolicy import UrlPolicy

if TYPE_CHECKING:
    from reporun.health import HealthServer
    from reporun.queue.broker import KafkaConfig


def url_policy(settings: Settings) -> UrlPolicy:
    return UrlPolicy.of(
        settings.allowed_schemes,
        settings.allowed_hosts,
        settings.trusted_hosts,
        settings.allow_local_repos,
    )


def job_rules(settings: Settings) -> JobRules:
    def limit(name: str) -> LimitRange:
        return LimitRange(getattr(settings, f"{name}_default"), getattr(settings, f"{name}_max"))

    return JobRules(
        url_policy=url_policy(settings),
        timeout=limit("timeout"),
        memory=limit("memory"),
        processes=limit("processes"),
        log=limit("log_limit"),
        disk=limit("disk"),
        env_max_vars=settings.env_max_vars,
        env_max_bytes=settings.env_max_bytes,
        command_max_bytes=settings.command_max_bytes,
        runtimes=settings.catalog,
        open_network=OpenNetwork.of(settings.network_open),
    )


def queue_config(settings: Settings) -> QueueConfig:
    return QueueConfig(
        lease_seconds=settings.lease_seconds,
        max_attempts=settings.max_attempts,
        poll_interval=settings.poll_interval,
        notify=settings.notify,
    )


def kafka_config(settings: Settings) -> KafkaConfig:
    from reporun.queue.broker import KafkaConfig

    partitions = settings.kafka_partitions or max(2, 2 * settings.pool_bounds[1])
    return KafkaConfig(
        bootstrap=settings.required_bootstrap(),
        jobs_topic=settings.kafka_jobs_topic,
        results_topic=settings.kafka_results_topic,
        group=settings.kafka_group,
        observer_group=settings.kafka_observer_group,
        partitions=partitions,
        replication=settings.kafka_replication,
        max_poll_interval=settings.kafka_max_poll_interval,
        session_timeout=settings.kafka_session_timeout,
        rebalance_timeout=settings.kafka_rebalance_timeout,
        handoff=settings.kafka_handoff,
        idempotence=settings.kafka_idempotence,
    )


def open_store(settings: Settings) -> Store:
    """The store; in Kafka mode one that announces each queued and each ended job through the
    outbox, whichever process changes it."""
    outbox = None
    if settings.queue == "kafka":
        outbox = Outbox(settings.kafka_jobs_topic, settings.kafka_results_topic)
    return Store.open(settings.db_url, outbox=outbox)


def build_queue(settings: Settings, store: Store) -> QueueBackend:
    if settings.queue == "kafka":
        from reporun.queue.broker import aiokafka
        from reporun.queue.kafka import KafkaQueue

        aiokafka()  # the install hint, at start
        return KafkaQueue(store, queue_config(settings), kafka_config(settings))
    return SqlQueue(store, queue_config(settings))


async def check_schema(store: Store) -> None:
    if not await is_current(store.engine):
        raise ConfigError("the database schema is not current: run `reporun db upgrade`")


def health_server(
    settings: Settings, part: str, store: Store, queue: QueueBackend
) -> HealthServer | None:
    """The probe server of a worker or an observer, when REPORUN_HEALTH_PORT asks for one: it
    checks the database and the queue."""
    if settings.health_port is None:
        return None
    from reporun.health import HealthServer

    probes = (("database", store.ping), (queue.check_name, queue.ping))
    return HealthServer(part, settings.health_host, settings.health_port, probes)
