"""A TCP proxy in front of a server, whose connections a test can cut all at once, as a proxy
restarting or a network dropping them would: the clients see their connection end midway and
must reconnect (new connections go through as before)."""

from __future__ import annotations

import contextlib
import select
import socket
import threading

from tests.harness.ports import LOOPBACK

CHUNK = 64 * 1024


class CutProxy:
    """Listens on a free loopback port and forwards each connection to `target_port`."""

    def __init__(self, target_port: int) -> None:
        self.target = (LOOPBACK, target_port)
        self.listener = socket.create_server((LOOPBACK, 0))
        self.listener.settimeout(0.2)  # so that `close` ends the accepting thread soon
        self.port = int(self.listener.getsockname()[1])
        self.lock = threading.Lock()
        self.pairs: set[tuple[socket.socket, socket.socket]] = set()
        self.cuts = 0
        self.closed = False
        self.thread = threading.Thread(target=self._accept, name="cut-proxy", daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            pair = (client, upstream)
            with self.lock:
                self.pairs.add(pair)
            threading.Thread(target=self._pipe, args=(pair,), daemon=True).start()

    def _pipe(self, pair: tuple[socket.socket, socket.socket]) -> None:
        client, upstream = pair
        other = {client: upstream, upstream: client}
        try:
            while True:
                ready, _, _ = select.select([client, upstream], [], [])
                for sock in ready:
                    data = sock.recv(CHUNK)
                    if not data:
                        return
                    other[sock].sendall(data)
        except (OSError, ValueError):
            return
        finally:
            self._drop(pair)

    def _drop(self, pair: tuple[socket.socket, socket.socket]) -> None:
        with self.lock:
            self.pairs.discard(pair)
        for sock in pair:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()

    def open_connections(self) -> int:
        with self.lock:
            return len(self.pairs)

    def cut(self) -> int:
        """Ends every connection open now; returns how many there were."""
        with self.lock:
            pairs = list(self.pairs)
            self.cuts += 1
        for pair in pairs:
            self._drop(pair)
        return len(pairs)

    def close(self) -> None:
        self.closed = True
        self.thread.join(timeout=2)
        self.listener.close()
        self.cut()
