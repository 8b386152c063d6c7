"""`reporun doctor`: whether this host can run jobs safely, and if not, why."""

from __future__ import annotations

import asyncio
import errno
import shutil
import tempfile
from collections.abc import Callable
from functools import partial
from pathlib import Path

from reporun.config import Settings
from reporun.jobs import Limits
from reporun.store import Store
from reporun.store.engine import sqlite_file
from reporun.store.migrate import is_current
from reporun.worker.egress import EgressPolicy, egress_for
from reporun.worker.main import sandbox_config
from reporun.worker.names import names_for
from reporun.worker.netjail import helper_python, refused_networks
from reporun.worker.runtimes import RootStore, RuntimeUnavailable
from reporun.worker.sandbox import Bubblewrap, World
from reporun.worker.uids import UidPool


def _bubblewrap(settings: Settings) -> Bubblewrap:
    config = sandbox_config(settings)
    return Bubblewrap(
        UidPool(config.uid_base, config.uid_count),
        open_network=config.open_network,
    )


class ProbeFailed(Exception):
    """A probe job that could not be run (its message says why)."""


async def _probe(settings: Settings, command: str, network: str = "none") -> tuple[int | None, str]:
    """Run `command` as a small job of network `network` in this host's sandbox; its exit
    code and output. Any failure to run it raises, with what it printed."""
    sandbox = _bubblewrap(settings)
    output = bytearray()

    async def keep(chunk: bytes) -> None:
        output.extend(chunk)

    limits = Limits(
        timeout=20, memory=256 << 20, processes=32, log=4096, disk=16 << 20, network=network
    )
    policy = EgressPolicy.of(settings.egress_hosts, settings.egress_private_hosts)
    with tempfile.TemporaryDirectory(prefix="reporun-doctor-") as tmp:
        Path(tmp).chmod(0o755)
        workspace = Path(tmp) / "ws"
        workspace.mkdir(mode=0o755)
        try:
            refused = partial(refused_networks, tuple(settings.network_open_refused))
            async with (
                egress_for(network, policy, Path(tmp) / "egress", keep) as socket,
                names_for(network, refused, Path(tmp) / "egress", keep) as names,
            ):
                result = await sandbox.run(
                    workspace=workspace,
                    command=command,
                    env={},
                    limits=limits,
                    on_output=keep,
                    stop=asyncio.Event(),
                    world=World(egress=socket, names=names),
                )
        except Exception as exc:
            said = output.decode(errors="replace").strip()[:300]
            raise ProbeFailed(f"{exc} (output: {said})") from None
    return result.exit_code, output.decode(errors="replace")


async def _sandbox_works(settings: Settings) -> str | None:
    problems = Bubblewrap.problems()
    if problems:
        return "; ".join(problems)
    try:
        code, text = await _probe(settings, "echo sandbox-ok")
    except ProbeFailed as exc:
        return str(exc)
    if code != 0 or "sandbox-ok" not in text:
        return f"bubblewrap exited {code}: {text.strip()[:300] or 'no output'}"
    return None


# Through a `registries` job's proxy, ask for the cloud metadata address: the proxy must
# answer, and refuse it (nothing leaves this host).
EGRESS_PROBE = (
    "python3 -c \"import socket; s = socket.create_connection(('127.0.0.1', 3128), 10); "
    "s.sendall(b'CONNECT 169.254.169.254:80 HTTP/1.1\\r\\n\\r\\n'); "
    'print(s.recv(100).split()[1].decode())"'
)
# From an `open` job, connect to the cloud metadata address (its routes must refuse it,
# EACCES), and send it a datagram bound to the job's device, past the routes (netfilter must
# refuse it, EPERM): before anything leaves.
OPEN_PROBE = (
    'python3 -c "import socket\n'
    "try:\n socket.create_connection(('169.254.169.254', 80), 10); print('reached')\n"
    "except OSError as e:\n print('errno', e.errno)\n"
    "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
    "s.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b'tap0')\n"
    "try:\n s.sendto(b'x', ('169.254.169.254', 9)); print('sent')\n"
    "except OSError as e:\n print('bound', e.errno)\""
)


async def _egress_works(settings: Settings) -> str | None:
    """Whether a `registries` job gets its network namespace and reaches the proxy, which
    refuses what it must."""
    if helper_python() is None:
        return "no Python every uid may run (/usr/bin/python3) to make a job's network with"
    try:
        code, text = await _probe(settings, EGRESS_PROBE, "registries")
    except ProbeFailed as exc:
        return str(exc)
    if code != 0 or "403" not in text or "egress to 169.254.169.254:80 refused" not in text:
        return f"the probe through the proxy exited {code}: {text.strip()[:300]}"
    return None


async def _open_works(settings: Settings) -> str | None:
    """Whether an `open` job gets its network (slirp4netns) and its routes refuse what they
    must."""
    problems = _bubblewrap(settings).open_problems()
    if problems:
        return "; ".join(problems)
    try:
        code, text = await _probe(settings, OPEN_PROBE, "open")
    except ProbeFailed as exc:
        return str(exc)
    if code != 0 or f"errno {errno.EACCES}" not in text or f"bound {errno.EPERM}" not in text:
        return f"the probe of 169.254.169.254 exited {code}: {text.strip()[:300]}"
    return None


def sandbox_hint(problem: str) -> str:
    """What to do about bubblewrap's complaint."""
    if "mount proc" in problem or "set hostname" in problem:
        return (
            "in a container, give it security_opt systempaths=unconfined and "
            "seccomp=unconfined (or a profile allowing sethostname), never --privileged nor "
            "root (see deploy/Dockerfile)"
        )
    return (
        "needs bubblewrap and unprivileged user namespaces"
        " (sysctl kernel.unprivileged_userns_clone=1)"
    )


async def _runtimes(settings: Settings, report: Callable[[str, str | None, str], None]) -> None:
    """Each image runtime: whether its image can be looked up, and whether this host has its
    root prepared (the first job that needs it prepares it)."""
    catalog = settings.catalog
    print(f"-     runtimes: {', '.join(catalog.names())} (default {catalog.default})")
    if not catalog.images:
        return
    missing = [tool for tool in ("skopeo", "umoci") if shutil.which(tool) is None]
    if missing:
        report("runtimes", f"{' and '.join(missing)} not installed", "apt-get install skopeo umoci")
        return
    roots = RootStore(settings.runtimes_dir)
    for name in sorted(catalog.images):
        runtime = catalog.get(name)
        try:
            digest, ready = await roots.status(runtime)
        except RuntimeUnavailable as exc:
            report(f"runtime {name}", exc.message, f"check {runtime.image}")
            continue
        state = "prepared" if ready else "not prepared yet (the first job that needs it does)"
        report(f"runtime {name} ({digest[:19]}): {state}", None, "")


async def diagnose(settings: Settings) -> bool:
    ok = True

    def report(name: str, problem: str | None, hint: str = "") -> None:
        nonlocal ok
        if problem is None:
            print(f"ok    {name}")
        else:
            ok = False
            print(f"FAIL  {name}: {problem}{' - ' + hint if hint else ''}")

    report("git", None if shutil.which("git") else "git is not installed", "apt-get install git")
    if settings.sandbox == "none":
        report("sandbox", "REPORUN_SANDBOX=none: jobs run unconfined (trusted code only)")
    else:
        problem = await _sandbox_works(settings)
        report("sandbox (bubblewrap)", problem, sandbox_hint(problem or ""))
        if problem is None:
            egress = await _egress_works(settings)
            report("network mode registries (its own namespace, the egress proxy)", egress)
            print(f"-     egress hosts: {', '.join(settings.egress_hosts) or 'none'}")
            if settings.network_open:
                opened = await _open_works(settings)
                report("network mode open (slirp4netns, private ranges refused)", opened)
                print(f"-     network open for: {', '.join(settings.network_open)}")
            else:
                print("-     network mode open: offered to nobody (REPORUN_NETWORK_OPEN)")
    await _runtimes(settings, report)
    path = sqlite_file(settings.db_url)
    if path is not None and not path.is_file():
        # Nothing to check, and nothing is created here: `serve` makes the database.
        print(f"-     database: none yet at {path} (`reporun serve` creates it)")
        return ok
    store = Store.open(settings.db_url, read_only=True)
    try:
        await asyncio.wait_for(store.ping(), 5)
        current = await is_current(store.engine)
        report("database", None if current else "schema is not current", "run `reporun db upgrade`")
    except Exception as exc:
        report("database", f"{type(exc).__name__}: {str(exc)[:200]}")
    finally:
        await store.close()
    return ok
