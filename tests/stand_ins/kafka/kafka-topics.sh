#!/opt/reporun/bin/python
"""Kafka's `kafka-topics.sh --bootstrap-server HOST:PORT --list`, for the healthcheck: prints
the topics; exits 1 when the broker does not answer."""

import argparse
import asyncio
import sys

from aiokafka.admin import AIOKafkaAdminClient


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--bootstrap-server", required=True)
    parser.add_argument("--list", action="store_true", required=True)
    args = parser.parse_args()
    admin = AIOKafkaAdminClient(bootstrap_servers=args.bootstrap_server, request_timeout_ms=5000)
    try:
        await asyncio.wait_for(admin.start(), 10)
        for topic in sorted(await asyncio.wait_for(admin.list_topics(), 10)):
            print(topic)
    except Exception as exc:
        print(f"kafka-topics: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    finally:
        await admin.close()
    return 0


sys.exit(asyncio.run(main()))
