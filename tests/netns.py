"""Test hosts of the suite's own: network namespaces joined by veth pairs to a bridge."""

from __future__ import annotations

import secrets
import shutil
import subprocess

import pytest


def _ip(*args: str) -> None:
    result = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
    if result.returncode != 0:
        pytest.fail(f"ip {' '.join(args)}: {result.stderr.strip()}")


class Hosts:
    """`count` hosts on 10.231.N.0/24; the bridge (this machine) is .1, host i is .(10 + i)."""

    def __init__(self, count: int) -> None:
        if shutil.which("ip") is None:
            pytest.fail("iproute2 (`ip`) is required for the many-hosts tests")
        tag = secrets.token_hex(3)
        self.subnet = f"10.231.{secrets.randbelow(250) + 1}"
        self.bridge = f"rrb{tag}"
        self.gateway = f"{self.subnet}.1"
        self.names = [f"rrh{tag}{i}" for i in range(count)]
        self.links = [f"rrv{tag}{i}" for i in range(count)]
        self.created: list[str] = []

    def up(self) -> None:
        _ip("link", "add", self.bridge, "type", "bridge")
        self.created.append("bridge")
        _ip("addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _ip("link", "set", self.bridge, "up")
        for i, (name, link) in enumerate(zip(self.names, self.links, strict=True)):
            _ip("netns", "add", name)
            self.created.append(name)
            _ip("link", "add", link, "type", "veth", "peer", "name", "eth0", "netns", name)
            _ip("link", "set", link, "master", self.bridge)
            _ip("link", "set", link, "up")
            _ip("-n", name, "addr", "add", f"{self.subnet}.{10 + i}/24", "dev", "eth0")
            _ip("-n", name, "link", "set", "eth0", "up")
            _ip("-n", name, "link", "set", "lo", "up")

    def cut(self, i: int) -> None:
        """Unplug host i's cable."""
        _ip("link", "set", self.links[i], "down")

    def mend(self, i: int) -> None:
        _ip("link", "set", self.links[i], "up")

    def prefix(self, i: int) -> list[str]:
        """Run a command on host i."""
        return ["ip", "netns", "exec", self.names[i]]

    def down(self) -> None:
        for name in self.names:
            if name in self.created:
                subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=30)
        if "bridge" in self.created:
            subprocess.run(["ip", "link", "del", self.bridge], capture_output=True, timeout=30)
