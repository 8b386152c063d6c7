"""A job is hostile code: each escape a repository might try, tried for real, in the host's
system and in an image runtime (its root filesystem bound as the job's `/`)."""

from __future__ import annotations

import os
import secrets
import socket
import threading
from collections.abc import Iterator

import pytest

from reporun.config import Settings
from tests.conftest import processes_with
from tests.harness.git import GitServer, run_git
from tests.integration.conftest import Api, WorkerFactory
from tests.runtime_image import ROOTS

SECRET_NAME = "REPORUN_TEST_SERVER_SECRET"


@pytest.fixture(params=["host", "image"])
def settings(request: pytest.FixtureRequest, settings: Settings) -> Settings:
    """Every test twice: on the host's system, and in an image runtime as the default."""
    if request.param == "host":
        return settings
    image = request.getfixturevalue("runtime_image")
    return settings.model_copy(
        update={"runtimes": {"image": image}, "runtime_default": "image", "runtimes_path": ROOTS}
    )


@pytest.fixture
def server_secret(monkeypatch: pytest.MonkeyPatch) -> str:
    """A secret in the environment of the process that runs the worker."""
    value = f"s3cr3t-{secrets.token_hex(12)}"
    monkeypatch.setenv(SECRET_NAME, value)
    return value


@pytest.fixture
def listener() -> Iterator[int]:
    """A TCP port on the host's loopback (standing in for the API and the database)."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(16)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        sock.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(sock.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield int(sock.getsockname()[1])
    stop.set()
    thread.join()
    assert accepted == [], "the job reached a port on the host"
    sock.close()


async def run_script(
    api: Api, git_server: GitServer, script: str, **body: object
) -> tuple[dict, str]:
    repo = git_server.make_repo({"run.sh": "#!/bin/sh\n" + script})
    job = await api.wait((await api.submit(repo=repo, **body))["id"], timeout=90)
    return job, (await api.log(job["id"])).decode(errors="replace")


async def test_cannot_see_the_worker_environment(
    api: Api,
    git_server: GitServer,
    start_worker: WorkerFactory,
    server_secret: str,
    settings: Settings,
) -> None:
    start_worker()
    job, log = await run_script(
        api,
        git_server,
        "env; cat /proc/*/environ 2>/dev/null | tr '\\0' '\\n'; cat /proc/1/cmdline;"
        " ps -ef 2>/dev/null || ls /proc\n",
    )
    assert job["status"] == "succeeded", (job, log)
    assert job["runtime"] == settings.runtime_default  # this run's world: host, or the image
    assert "HOME=/work" in log
    assert server_secret not in log
    assert SECRET_NAME not in log


async def test_cannot_read_the_data_dir(
    api: Api, git_server: GitServer, start_worker: WorkerFactory, settings: Settings
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    token = f"admin-token-{secrets.token_hex(8)}"
    (settings.data_dir / "admin.token").write_text(token)
    start_worker()
    data = settings.data_dir.resolve()
    _, log = await run_script(
        api,
        git_server,
        f"cat {data}/admin.token; ls -la {data} {data}/mirrors;"
        f" cat {data}/reporun.db | head -c 100;"
        " find / \\( -name 'reporun.db*' -o -name admin.token -o -name '*.git' \\)"
        " -printf 'FOUND %p\\n' 2>/dev/null; echo probe-done\n",
    )
    assert "probe-done" in log, log
    assert token not in log
    assert "FOUND" not in log, log
    assert "SQLite format" not in log


async def test_cannot_connect_to_the_host(
    api: Api, git_server: GitServer, start_worker: WorkerFactory, listener: int
) -> None:
    start_worker()
    job, log = await run_script(
        api,
        git_server,
        "python3 - <<'EOF'\n"
        "import socket\n"
        f"for host, port in [('127.0.0.1', {listener}), ('127.0.0.1', {git_server.port}),"
        " ('127.0.0.1', 5432), ('10.0.2.2', 80)]:\n"
        "    try:\n"
        "        socket.create_connection((host, port), timeout=2).close()\n"
        "        print('CONNECTED', host, port)\n"
        "    except OSError as exc:\n"
        "        print('refused', host, port, exc.errno)\n"
        "EOF\n",
    )
    assert job["status"] == "succeeded", (job, log)
    assert "CONNECTED" not in log
    assert log.count("refused") == 4


async def test_only_unix_ip_and_netlink_sockets_and_no_namespaces_of_its_own(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    """vsock reaches a virtual machine's host past every network namespace (this machine is
    one: /dev/vsock); the kernel's crypto sockets are attack surface; a user namespace of the
    job's own would give it CAP_NET_ADMIN there. Each is refused, 32-bit calls included."""
    start_worker()
    job, log = await run_script(
        api,
        git_server,
        "python3 - <<'EOF'\n"
        "import ctypes, socket\n"
        "for name, family in (('vsock', 40), ('alg', 38), ('bluetooth', 31), ('inet', 2),"
        " ('unix', 1)):\n"
        "    try:\n"
        "        socket.socket(family, socket.SOCK_STREAM if family != 31 else 1).close()\n"
        "        print(name, 'made')\n"
        "    except OSError as exc:\n"
        "        print(name, 'refused', exc.errno)\n"
        "libc = ctypes.CDLL(None, use_errno=True)\n"
        "print('userns', libc.unshare(0x10000000), ctypes.get_errno())\n"
        "EOF\n",
    )
    assert job["status"] == "succeeded", (job, log)
    lines = set(log.splitlines())
    assert {"vsock refused 97", "alg refused 97", "bluetooth refused 97"} <= lines, log
    assert {"inet made", "unix made"} <= lines, log
    assert "userns -1 28" in lines, log  # ENOSPC: no user namespace may be made


async def test_cannot_write_outside_its_workspace_and_tmp(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    marker = secrets.token_hex(6)
    _, log = await run_script(
        api,
        git_server,
        f"for path in /usr/{marker} /etc/{marker} /{marker} /src/{marker} /proc/{marker}; do\n"
        f"  (echo x > $path) 2>/dev/null && echo WROTE $path || echo denied $path\n"
        "done\n"
        "echo ok > $HOME/mine && echo ok > /tmp/mine && echo wrote-allowed\n",
    )
    assert "WROTE" not in log, log
    assert log.count("denied") == 5 and "wrote-allowed" in log
    for path in (f"/usr/{marker}", f"/etc/{marker}", f"/{marker}"):
        assert not os.path.exists(path)


async def test_a_fork_bomb_stops_at_the_process_limit(
    api: Api, git_server: GitServer, start_worker: WorkerFactory, settings: Settings
) -> None:
    start_worker()
    marker = f"{secrets.randbelow(10**6) + 1000}"
    job, log = await run_script(
        api,
        git_server,
        "python3 - <<'EOF'\n"
        "import subprocess\n"
        f"marker = {marker}\n"
        "spawned = []\n"
        "for _ in range(100):\n"
        "    try:\n"
        "        child = subprocess.Popen(['sleep', f'3{marker}'], start_new_session=True)\n"
        "        spawned.append(child)\n"
        "    except OSError:\n"
        "        break\n"
        "print('spawned', len(spawned), flush=True)\n"
        "EOF\n"
        "bomb() { bomb | bomb & }; bomb 2>/dev/null\n"
        "sleep 30\n",
        timeout=5,
        limits={"processes": 32},
    )
    assert job["status"] in {"failed", "timed_out"}, (job, log)
    spawned = int(log.split("spawned ")[1].split()[0])
    assert spawned < 32, log
    # Nothing of the job is left on the host, and the next job runs normally.
    assert processes_with(f"sleep 3{marker}") == []
    after, log = await run_script(api, git_server, "echo next job ran\n")
    assert after["status"] == "succeeded" and "next job ran" in log


async def test_what_a_job_leaves_running_is_gone_when_it_ends(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    """Daemons a job starts in every way it can (in the background, in a session of their
    own, double-forked, ignoring SIGHUP and SIGTERM) do not outlive it: as soon as the job has
    ended, none of them is on the host."""
    start_worker()
    marker = f"{secrets.randbelow(10**6) + 1000}"
    job, log = await run_script(
        api,
        git_server,
        f"sleep 4{marker} &\n"
        f"setsid sleep 4{marker} &\n"
        f"( trap '' HUP TERM; ( sleep 4{marker} & ) & )\n"
        f"nohup sleep 4{marker} >/dev/null 2>&1 &\n"
        "sleep 0.2; echo started them\n",
    )
    assert job["status"] == "succeeded" and "started them" in log, (job, log)
    assert processes_with(f"sleep 4{marker}") == []


async def test_cannot_allocate_past_the_memory_limit(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    job, log = await run_script(
        api,
        git_server,
        "python3 -c 'x = bytearray(512 * 1024 * 1024); print(\"ALLOCATED\")'\n",
        limits={"memory": 256 * 1024 * 1024},
    )
    assert job["status"] == "failed", (job, log)
    assert "MemoryError" in log and "ALLOCATED" not in log


async def test_cannot_write_past_the_disk_limit(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    job, log = await run_script(
        api,
        git_server,
        "dd if=/dev/zero of=$HOME/big bs=1M count=100 2>&1\n"
        "for i in 1 2 3 4 5 6 7 8; do head -c 8388608 /dev/zero > $HOME/many$i 2>/dev/null; done\n"
        "dd if=/dev/zero of=/tmp/big bs=1M count=100 2>&1\n"
        "du -smc /work/ /tmp/\n",
        limits={"disk": 32 * 1024 * 1024},
    )
    assert job["status"] == "succeeded", (job, log)
    assert any(m in log for m in ("No space left", "File too large", "File size limit")), log
    total = [int(line.split()[0]) for line in log.splitlines() if line.endswith("total")]
    assert total and total[0] <= 32, log


async def test_cannot_kill_the_worker(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    me = os.getpid()
    job, log = await run_script(
        api,
        git_server,
        f"kill -9 {me} 2>&1; pkill -9 -f pytest 2>&1; echo tried; kill -9 -1\n",
    )
    assert "tried" in log and "No such process" in log, (job, log)
    # This process (the worker's) is alive to read the answer, and the worker runs the next job.
    after, log = await run_script(api, git_server, "echo worker alive\n")
    assert after["status"] == "succeeded" and "worker alive" in log


async def test_symlinked_reporun_toml_is_not_followed_by_the_worker(
    api: Api, git_server: GitServer, start_worker: WorkerFactory, settings: Settings
) -> None:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    secret_file = settings.data_dir / "secret-config.toml"
    secret_file.write_text('command = "echo LEAKED-CONFIG"\n')
    repo = git_server.make_repo(
        {"run.sh": "#!/bin/sh\necho normal entry\n"}, name=f"link-{secrets.token_hex(3)}"
    )
    source = git_server.work / repo.rsplit("/", 1)[1].removesuffix(".git")
    (source / "reporun.toml").symlink_to(secret_file.resolve())
    git_server.commit(source, {})
    name = source.name
    run_git("push", "-q", str(git_server.base / f"{name}.git"), "main", cwd=source)
    start_worker()
    job = await api.wait((await api.submit(repo=repo))["id"])
    log = (await api.log(job["id"])).decode()
    assert "LEAKED-CONFIG" not in log and job["command"] == "./run.sh", (job, log)
