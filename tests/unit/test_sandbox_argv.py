"""The bubblewrap command line: what the job is given, and nothing more."""

from __future__ import annotations

from ipaddress import ip_network
from pathlib import Path

import pytest

from reporun.errors import SandboxError
from reporun.jobs import Limits
from reporun.worker.bwrap import ETC_FILES, bwrap_argv, etc_copies, job_environment
from reporun.worker.netjail import (
    REFUSED_RANGES,
    TUN_NAMESPACE,
    OpenTools,
    open_jail,
    proxy_jail,
)

LIMITS = Limits(timeout=60, memory=256 << 20, processes=32, log=1 << 20, disk=64 << 20)


def argv(**overrides: object) -> list[str]:
    options: dict[str, object] = {
        "workspace": Path("/srv/ws/job"),
        "command": "make test",
        "env": {"GREETING": "hola"},
        "limits": LIMITS,
        "uid": 1_100_042,
        "nproc": 32,
    }
    options.update(overrides)
    return bwrap_argv(**options)  # type: ignore[arg-type]


def pairs(args: list[str], flag: str) -> list[str]:
    return [args[i + 1] for i, a in enumerate(args) if a == flag]


def test_drops_to_the_job_uid_then_limits_then_bubblewrap() -> None:
    args = argv()
    assert args[:2] == ["setpriv", "--reuid=1100042"]
    assert args.index("prlimit") < args.index("bwrap")
    for limit in ("--as=268435456", "--nproc=32", "--fsize=67108864", "--core=0"):
        assert limit in args


def test_namespaces_session_and_a_clean_environment() -> None:
    args = argv()
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--clearenv"):
        assert flag in args
    assert "--share-net" not in args
    with pytest.raises(SandboxError, match="registries"):
        argv(limits=LIMITS.model_copy(update={"network": "registries"}))
    env = dict(
        zip(
            pairs(args, "--setenv")[::1],
            [args[i + 2] for i, a in enumerate(args) if a == "--setenv"],
            strict=True,
        )
    )
    assert env == job_environment({"GREETING": "hola"})
    assert all(not name.startswith("REPORUN_") or name == "REPORUN" for name in env)


def test_filesystem_is_read_only_but_workspace_and_tmp_capped() -> None:
    args = argv()
    assert args[args.index("--ro-bind") : args.index("--ro-bind") + 3] == [
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    assert pairs(args, "--size") == [str(64 << 20)]
    assert pairs(args, "--tmpfs") == ["/sandbox"]  # one cap for the workspace and /tmp
    assert pairs(args, "--symlink")[-2:] == ["/sandbox/work", "/sandbox/tmp"]
    assert pairs(args, "--remount-ro") == ["/"]
    binds = pairs(args, "--bind")
    assert binds == []  # nothing of the host is writable
    assert args[args.index("/srv/ws/job") + 1] == "/src"
    assert args[-1] == "make test"


def test_without_root_no_uid_switch() -> None:
    assert argv(uid=None)[0] == "prlimit"


def test_registries_runs_in_the_jails_network_with_the_proxy_named() -> None:
    jail = proxy_jail("/usr/bin/python3", Path("/run/e.sock"))
    args = argv(limits=LIMITS.model_copy(update={"network": "registries"}), jail=jail)
    # As the job's uid, the jail first (it makes the network namespace), then the limits.
    assert args.index("setpriv") < args.index("/usr/bin/python3") < args.index("prlimit")
    at = args.index("/usr/bin/python3") + 5
    assert args[at : at + 2] == ["proxy", "/run/e.sock"]
    assert "--share-net" in args and "--unshare-all" in args
    env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert env["PIP_PROXY"] == env["npm_config_https_proxy"] == "http://127.0.0.1:3128"
    plain = {args[i + 1] for i, a in enumerate(argv()) if a == "--setenv"}
    assert "HTTPS_PROXY" not in plain


def test_open_runs_in_the_jails_network_behind_slirp4netns_with_its_resolver() -> None:
    refused = [ip_network(network) for network in REFUSED_RANGES]
    tools = OpenTools("/usr/bin/slirp4netns", "/sbin/iptables-restore", "/sbin/ip6tables-restore")
    jail = open_jail("/usr/bin/python3", Path("/run/n.sock"), tools, refused)
    limits = LIMITS.model_copy(update={"network": "open"})
    args = argv(limits=limits, jail=jail, data=[(7, "/etc/resolv.conf")], before=TUN_NAMESPACE)
    # Root makes the tun node's namespace, then the job's uid the network, then the limits.
    assert args[: len(TUN_NAMESPACE)] == list(TUN_NAMESPACE)
    assert args.index("setpriv") < args.index("/usr/bin/python3") < args.index("prlimit")
    at = args.index("/usr/bin/python3") + 5
    assert args[at : at + 6] == [
        "open",
        "/run/n.sock",
        "/usr/bin/slirp4netns",
        ",".join(REFUSED_RANGES),
        "/sbin/iptables-restore",
        "/sbin/ip6tables-restore",
    ]
    assert "--share-net" in args
    assert args[args.index("--ro-bind-data") : args.index("--ro-bind-data") + 3] == [
        "--ro-bind-data",
        "7",
        "/etc/resolv.conf",
    ]
    env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert "HTTPS_PROXY" not in env  # no proxy: the job's own connections
    with pytest.raises(SandboxError, match="open"):
        argv(limits=limits)


def test_open_refuses_every_range_a_host_keeps_to_itself() -> None:
    import ipaddress

    refused = [ipaddress.ip_network(network) for network in REFUSED_RANGES]
    for address in (
        "10.1.2.3",
        "172.20.0.1",
        "192.168.1.1",
        "100.64.0.1",
        "127.0.0.1",
        "169.254.169.254",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "10.0.2.2",
    ):
        assert any(ipaddress.ip_address(address) in network for network in refused), address
    for address in ("198.51.100.10", "8.8.8.8", "151.101.0.223"):
        assert not any(ipaddress.ip_address(address) in network for network in refused)


def test_the_hosts_own_networks_and_gateways_are_refused_to_open() -> None:
    """Read from this host: its loopback, each address, each network it is on, each gateway."""
    import socket
    import struct

    from reporun.worker.netjail import host_networks, refused_networks

    found = host_networks()
    assert ip_network("127.0.0.0/8") in found
    with open("/proc/net/route") as routes:
        gateways = {
            socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
            for fields in (line.split() for line in list(routes)[1:])
            if fields[2] != "00000000"
        }
    assert {ip_network(f"{g}/32") for g in gateways} <= set(found)
    extra = ip_network("203.0.113.0/24")
    assert extra in refused_networks([extra])


def test_the_seccomp_filter_is_whole_and_known_machines_only() -> None:
    from reporun.worker.seccomp import socket_filter

    program = socket_filter("x86_64")
    assert program is not None and len(program) % 8 == 0 and len(program) // 8 < 64
    assert socket_filter("aarch64") is not None
    assert socket_filter("mips") is None


def test_the_hosts_etc_files_are_copied_in_and_only_its_directories_bound() -> None:
    """Each file of ETC_FILES is a copy written into the root (read-only at the end), not a
    mount; the directories among them are bound read-only; nothing else of /etc is there."""
    copies = etc_copies()
    assert "/etc/hosts" in copies and copies["/etc/hosts"] == Path("/etc/hosts").read_bytes()
    copied = [(10 + n, path) for n, path in enumerate(copies)]
    args = argv(copied=copied)
    files = [args[i + 2] for i, a in enumerate(args) if a == "--file"]
    assert files == list(copies)
    at = [i for i, a in enumerate(args) if a == "--file"]
    assert all(args[i - 2 : i] == ["--perms", "0644"] for i in at)
    bound = [path for path in pairs(args, "--ro-bind") if path.startswith("/etc")]
    assert bound and all(Path(path).is_dir() for path in bound)
    assert set(bound) | set(files) <= {f"/etc/{name}" for name in ETC_FILES}
    assert args.index("--remount-ro") > max(at)
