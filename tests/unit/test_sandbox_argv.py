"""The bubblewrap command line: what the job is given, and nothing more."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporun.errors import SandboxError
from reporun.jobs import Limits
from reporun.worker.netjail import netjail_argv
from reporun.worker.sandbox import bwrap_argv, job_environment

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
    jail = netjail_argv("/usr/bin/python3", Path("/run/e.sock"))
    args = argv(limits=LIMITS.model_copy(update={"network": "registries"}), jail=jail)
    # As the job's uid, the jail first (it makes the network namespace), then the limits.
    assert args.index("setpriv") < args.index("/usr/bin/python3") < args.index("prlimit")
    assert args[args.index("/usr/bin/python3") + 5] == "/run/e.sock"
    assert "--share-net" in args and "--unshare-all" in args
    env = {args[i + 1]: args[i + 2] for i, a in enumerate(args) if a == "--setenv"}
    assert env["HTTPS_PROXY"] == env["http_proxy"] == "http://127.0.0.1:3128"
    assert env["PIP_PROXY"] == env["npm_config_https_proxy"] == "http://127.0.0.1:3128"
    plain = {args[i + 1] for i, a in enumerate(argv()) if a == "--setenv"}
    assert "HTTPS_PROXY" not in plain
