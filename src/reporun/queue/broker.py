"""Talking to Kafka (REPORUN_QUEUE=kafka): the small config every Kafka part gets, aiokafka
imported only here and only when used, the topics made sure of at start, and the clients built
the way reporun needs them (acks=all, manual commits, no keys)."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Any

from reporun.errors import BrokerError, ConfigError

logger = logging.getLogger("reporun.kafka")

# What a topic-creating call may see and still go on: the topic is there.
TOPIC_ALREADY_EXISTS = 36


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    bootstrap: str
    jobs_topic: str = "jobs"
    results_topic: str = "results"
    group: str = "workers"
    observer_group: str = "observer"
    partitions: int = 4
    max_poll_interval: float = 300.0
    session_timeout: float = 10.0
    rebalance_timeout: float = 30.0
    handoff: float = 1.0
    idempotence: bool = True
    # Replicas of a topic reporun creates; None: 3, or as many as the cluster has brokers.
    replication: int | None = None
    request_timeout: float = 10.0


def aiokafka() -> ModuleType:
    """The aiokafka package, or one line saying how to install it."""
    try:
        import aiokafka as module
    except ImportError:
        raise ConfigError(
            "REPORUN_QUEUE=kafka needs aiokafka: pip install 'reporun[kafka]'"
        ) from None
    found: ModuleType = module
    return found


def _ms(seconds: float) -> int:
    return max(1, round(seconds * 1000))


async def ensure_topics(config: KafkaConfig, *, check_partitions: bool = True) -> list[str]:
    """Create the jobs and results topics when missing (as the seed does); the names created.
    A topic that exists keeps its partitions: fewer than asked for is logged, with
    `check_partitions` (a part's first call, not the periodic checks that the topics are still
    there, which would repeat the warning and its round trip every time)."""
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=config.bootstrap, request_timeout_ms=_ms(config.request_timeout)
    )
    try:
        async with asyncio.timeout(config.request_timeout):
            await admin.start()
            wanted = [config.jobs_topic, config.results_topic]
            present = set(await admin.list_topics())
            missing = [name for name in wanted if name not in present]
            if missing:
                replicas = config.replication or await _default_replication(admin)
                response = await admin.create_topics(
                    [NewTopic(name, config.partitions, replicas) for name in missing]
                )
                for name, code, message in response.topic_errors:
                    if code not in (0, TOPIC_ALREADY_EXISTS):
                        raise BrokerError(f"cannot create topic {name}: {message or code}")
                logger.info(
                    "topics created",
                    extra={"action": "topics", "topics": missing, "partitions": config.partitions},
                )
            described = await admin.describe_topics([config.jobs_topic]) if check_partitions else []
            for found in described:
                count = len(found.get("partitions") or [])
                if 0 < count < config.partitions:
                    logger.warning(
                        "the jobs topic has fewer partitions than asked for",
                        extra={
                            "action": "topics",
                            "partitions": count,
                            "wanted": config.partitions,
                        },
                    )
            return missing
    except (TimeoutError, OSError) as exc:
        raise BrokerError(f"Kafka at {config.bootstrap} is not answering") from exc
    except BrokerError:
        raise
    except Exception as exc:
        if type(exc).__module__.startswith("aiokafka"):
            raise BrokerError(f"Kafka at {config.bootstrap}: {type(exc).__name__}") from exc
        raise
    finally:
        await stop_client(admin, method="close")


# What a broker answers aiokafka's InitProducerId v0 with when it will not make the producer
# idempotent (Tansu, for one): publish with acks=all alone.
REFUSED_IDEMPOTENCE = frozenset({"UnknownError", "UnsupportedVersionError"})


async def start_producer(config: KafkaConfig) -> Any:
    """A started producer: acks=all and, where the broker grants it, idempotent."""
    module = aiokafka()

    async def started(idempotent: bool) -> Any:
        producer = module.AIOKafkaProducer(
            bootstrap_servers=config.bootstrap,
            acks="all",
            enable_idempotence=idempotent,
            linger_ms=0,
            request_timeout_ms=_ms(config.request_timeout),
            metadata_max_age_ms=_ms(min(30.0, config.session_timeout)),
            client_id="reporun-relay",
        )
        try:
            await producer.start()
        except BaseException:
            await stop_client(producer)
            raise
        return producer

    try:
        return await started(config.idempotence)
    except Exception as exc:
        if not config.idempotence or type(exc).__name__ not in REFUSED_IDEMPOTENCE:
            raise
        logger.warning(
            "the broker refused an idempotent producer; publishing with acks=all alone "
            "(a duplicate message is skipped by the claim)",
            extra={"action": "producer", "reason": type(exc).__name__},
        )
    return await started(False)


def consumer(config: KafkaConfig, group: str, **options: Any) -> Any:
    """A consumer in `group` that commits by hand, not started or subscribed yet."""
    module = aiokafka()
    settings: dict[str, Any] = {"auto_offset_reset": "earliest", **options}
    return module.AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap,
        group_id=group,
        enable_auto_commit=False,
        max_poll_interval_ms=_ms(config.max_poll_interval),
        session_timeout_ms=_ms(config.session_timeout),
        heartbeat_interval_ms=_ms(config.session_timeout / 4),
        rebalance_timeout_ms=_ms(config.rebalance_timeout),
        request_timeout_ms=_ms(max(config.request_timeout, config.session_timeout + 1)),
        fetch_max_wait_ms=100,
        # A topic re-created after the broker lost it is found again soon.
        metadata_max_age_ms=_ms(min(30.0, config.session_timeout)),
        retry_backoff_ms=200,
        **settings,
    )


async def _default_replication(admin: Any) -> int:
    """3 replicas, or as many as there are brokers (1 where the cluster will not say)."""
    try:
        brokers = len((await admin.describe_cluster()).get("brokers") or [])
    except Exception:
        return 1
    return min(3, max(1, brokers))


async def ping(config: KafkaConfig, *, timeout: float = 1.0) -> None:
    """Raise BrokerError unless the broker answers a metadata request within `timeout` (the
    client's clean-up included: /readyz never waits on it)."""
    from aiokafka.admin import AIOKafkaAdminClient

    admin = AIOKafkaAdminClient(bootstrap_servers=config.bootstrap, request_timeout_ms=_ms(timeout))
    try:
        async with asyncio.timeout(timeout):
            await admin.start()
            await admin.list_topics()
    except Exception as exc:
        raise BrokerError(f"Kafka at {config.bootstrap} is not answering") from exc
    finally:
        await stop_client(admin, timeout=0.5, method="close")


async def group_lag(config: KafkaConfig, *, timeout: float = 2.0) -> dict[int, int]:
    """Messages on the jobs topic that the workers' group has not committed, by partition
    (BrokerError when the broker does not tell within `timeout`: a scrape never waits long)."""
    module = aiokafka()
    probe = module.AIOKafkaConsumer(
        bootstrap_servers=config.bootstrap,
        group_id=config.group,
        enable_auto_commit=False,
        request_timeout_ms=_ms(timeout),
    )
    try:
        async with asyncio.timeout(timeout):
            await probe.start()
            parts = probe.partitions_for_topic(config.jobs_topic) or set()
            tps = [module.TopicPartition(config.jobs_topic, p) for p in sorted(parts)]
            ends = await probe.end_offsets(tps) if tps else {}
            lag = {}
            for tp in tps:
                committed = await probe.committed(tp)
                lag[tp.partition] = max(0, ends[tp] - (committed or 0))
            return lag
    except Exception as exc:
        raise BrokerError(f"Kafka at {config.bootstrap} is not answering") from exc
    finally:
        await stop_client(probe)


async def stop_client(client: Any, *, timeout: float = 5.0, method: str = "stop") -> None:
    """Stop (or `close`) an aiokafka client, whatever state the broker is in: within `timeout`,
    and never letting the CancelledError that aiokafka's own fetcher can raise from `stop()`
    (with the broker gone) pass for a cancel of the caller."""
    task = asyncio.ensure_future(getattr(client, method)())
    try:
        done, _ = await asyncio.wait({task}, timeout=timeout)
    except asyncio.CancelledError:
        task.cancel()  # the caller is cancelled: do not leave the stop running behind it
        raise
    if not done:
        task.cancel()
        await asyncio.wait({task}, timeout=1.0)
        logger.warning("a Kafka client did not stop in time", extra={"action": "close"})
    elif not task.cancelled() and task.exception() is not None:
        logger.info(
            "a Kafka client stopped with an error",
            extra={"action": "close", "reason": type(task.exception()).__name__},
        )
