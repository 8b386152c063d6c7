"""A real container engine for the tests: rootful podman serving the Docker API on a socket.

The `podman` fixture (session scope) writes a containers.conf (runc, ulimits lowered to what
this machine allows), starts `podman system service --time=0 unix://<tmp>/podman.sock`, builds
the base image `localhost/debian:bookworm` when it is missing (debootstrap + `podman import`; no
registry can be pulled from) and the reporun image from deploy/Dockerfile, tagged with a hash of
its inputs so that an unchanged tree reuses it. At the end it removes every container and network
it (or a compose project it ran) created and stops the service.

What talks to it: the Docker SDK (`docker.DockerClient(base_url=podman.docker_host)`), Debian's
`docker-compose` 1.29 (`podman.compose(file)`), and the `podman` command (`podman.cli(...)`), each
with `podman.env`.

A worker container can run bubblewrap only with `WORKER_SECURITY_OPT` (see there and
deploy/Dockerfile). A container reaches a service of the host at `HOST_ADDRESS`; the service must
listen on 0.0.0.0 (the bridge's gateway address exists only while a container is attached).

The first build on a fresh machine takes about 3 minutes (debootstrap ~1 min, image ~1 min):
tests that use the fixture carry `pytest.mark.timeout(BUILD_TIMEOUT)`. Missing tools fail the
tests, never skip them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import httpx
import pytest

from tests.harness.git import GitServer

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "deploy" / "Dockerfile"
BASE_IMAGE = "localhost/debian:bookworm"
IMAGE_REPO = "localhost/reporun"
DEBIAN_MIRROR = os.environ.get("REPORUN_TEST_DEBIAN_MIRROR", "http://deb.debian.org/debian")
# The host's own CA certificates (this machine's egress re-signs TLS): the base image carries
# them, so that pip inside `podman build` trusts PyPI. A stock base image needs none.
HOST_CA_DIR = Path("/usr/local/share/ca-certificates")
LOCK_DIR = Path(tempfile.gettempdir())
SESSION_LABEL = "reporun.test.session"
INPUTS_LABEL = "reporun.test.inputs"
CAS_LABEL = "reporun.test.cas"
CONTAINERS_CONF = """\
[containers]
default_ulimits = ["nofile=20000:20000", "nproc=4096:4096"]

[engine]
runtime = "runc"

[network]
network_backend = "netavark"
"""
# Debian packages the fixture needs, by what it looks for. Installed without Recommends, podman
# would get crun and CNI (no DNS between a compose project's containers) and docker-compose would
# not pull in docker.io: name them all.
REQUIRED = (
    ("podman", "podman"),
    ("runc", "runc"),
    ("docker-compose", "docker-compose"),
    ("iptables", "iptables"),
    ("catatonit", "catatonit"),
    ("/usr/lib/podman/netavark", "netavark"),
    ("/usr/lib/podman/aardvark-dns", "aardvark-dns"),
)
PACKAGES = "podman runc netavark aardvark-dns catatonit iptables docker-compose debootstrap"
# What a container needs for bubblewrap inside it: a /proc without podman's masked and
# read-only submounts (the kernel refuses a new procfs in a user namespace while parts of the
# current one are hidden) and a seccomp policy that allows sethostname (`bwrap --hostname`;
# podman's default profile allows it only with CAP_SYS_ADMIN). Never --privileged, never root:
# with /proc unmasked, a root user could write host sysctls. docker-compose 1.29 sends a seccomp
# profile's content, which podman 4.3 refuses, so compose can only say `unconfined` here; the
# SDK can name a profile file (`bwrap_seccomp_profile()`) instead.
WORKER_SECURITY_OPT = ("systempaths=unconfined", "seccomp=unconfined")
# How a container on a podman bridge network (the default network or a compose project's)
# reaches the host: podman puts this name in each container's /etc/hosts, pointing at that
# network's gateway (10.88.0.1 on `podman`, 10.89.N.1 on compose networks).
HOST_ADDRESS = "host.containers.internal"
START_TIMEOUT = 30.0
BUILD_TIMEOUT = 900
COMMAND_TIMEOUT = 300.0


def _tool(name: str, package: str) -> str:
    path = name if name.startswith("/") and os.access(name, os.X_OK) else shutil.which(name)
    if path is None:
        pytest.fail(
            f"{name} is required for the container tests (tests/podman.py); `make test` "
            f"installs it when run as root (Debian package {package}; all of them: "
            f"apt-get install --no-install-recommends {PACKAGES})"
        )
    return path


def _tail(text: str, limit: int = 4000) -> str:
    return text[-limit:].strip()


def _run(
    argv: list[str],
    name: str,
    env: Mapping[str, str],
    *,
    check: bool,
    timeout: float,
    cwd: Path | None = None,
    input: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command of the container tools; a timeout, or a failure with `check`, fails the
    test with the command's output."""
    shown = " ".join(argv[1:7])
    try:
        result = subprocess.run(
            argv,
            cwd=cwd,
            env=dict(env),
            input=input,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{name} {shown} took more than {timeout:.0f} s")
    if check and result.returncode != 0:
        pytest.fail(
            f"{name} {shown} failed ({result.returncode}):\n"
            f"{_tail(result.stdout)}\n{_tail(result.stderr)}"
        )
    return result


def _accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
        try:
            probe.connect(str(path))
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _file_lock(name: str) -> Iterator[None]:
    """A lock across processes (parallel test runs on this machine share podman's storage)."""
    with (LOCK_DIR / name).open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def build_inputs_digest(root: Path = ROOT) -> str:
    """A hash of what goes into the image: Dockerfile, .dockerignore, pyproject.toml, README.md
    and src/ (less bytecode)."""
    digest = hashlib.sha256()
    files = [root / "deploy" / "Dockerfile", root / ".dockerignore"]
    files += [root / "pyproject.toml", root / "README.md"]
    files += sorted(
        path
        for path in (root / "src").rglob("*")
        if path.is_file()
        and "__pycache__" not in path.parts
        and path.suffix not in (".pyc", ".pyo")
    )
    for path in files:
        digest.update(str(path.relative_to(root)).encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"<missing>")
        digest.update(b"\0")
    return digest.hexdigest()


def _host_cas() -> list[Path]:
    return sorted(HOST_CA_DIR.glob("*.crt")) if HOST_CA_DIR.is_dir() else []


def _cas_digest() -> str:
    digest = hashlib.sha256()
    for path in _host_cas():
        digest.update(path.name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:16]


class Compose:
    """One docker-compose project (Debian's 1.29, through the podman socket)."""

    def __init__(
        self, podman: Podman, file: Path, project: str, env_file: Path | None = None
    ) -> None:
        self.podman = podman
        self.file = Path(file)
        self.project = project
        self.env_file = env_file

    def run(
        self, *args: str, check: bool = True, timeout: float = COMMAND_TIMEOUT
    ) -> subprocess.CompletedProcess[str]:
        """`docker-compose -p PROJECT -f FILE ARGS...`; a non-zero exit fails the test."""
        compose = self.podman.compose_bin
        argv = [compose, "--ansi", "never", "-p", self.project, "-f", str(self.file)]
        if self.env_file is not None:
            argv += ["--env-file", str(self.env_file)]
        argv += args
        return _run(
            argv,
            "docker-compose",
            self.podman.env,
            check=check,
            timeout=timeout,
            cwd=self.file.parent,
        )

    def up(self, *services: str, scale: Mapping[str, int] | None = None) -> None:
        """`up -d` (with `--scale SERVICE=N` for each of `scale`); existing containers stay."""
        args = ["up", "-d", "--no-recreate", "--no-build"]
        for service, count in (scale or {}).items():
            args += ["--scale", f"{service}={count}"]
        self.run(*args, *services)
        self.pin_bridge_mac()

    def pin_bridge_mac(self) -> None:
        """Give each of the project's bridges a fixed MAC address, as netavark 1.9 and later do
        themselves (containers/netavark#833). Before, a bridge takes the lowest MAC of its
        ports, so removing a container can change it, and the other containers lose the host
        (the gateway) until their ARP entry expires, up to ~100 s; Debian 12 has netavark 1.4."""
        for network in self.networks():
            result = self.podman.cli(
                "network", "inspect", network, "--format", "{{.NetworkInterface}}", check=False
            )
            bridge = result.stdout.strip()
            if result.returncode != 0 or not bridge:
                continue
            address = Path(f"/sys/class/net/{bridge}/address").read_text().strip()
            subprocess.run(["ip", "link", "set", "dev", bridge, "address", address], check=True)

    def networks(self) -> list[str]:
        """The names of the project's networks."""
        return self._labelled("network")

    def volumes(self) -> list[str]:
        return self._labelled("volume")

    def _labelled(self, kind: str) -> list[str]:
        """The names of the project's objects of `kind` (network, volume)."""
        label = f"label=com.docker.compose.project={self.project}"
        found = self.podman.cli(kind, "ls", "--filter", label, "--format", "{{.Name}}", check=False)
        return found.stdout.split()

    def scale(self, service: str, count: int) -> None:
        self.up(service, scale={service: count})

    def ps(self, service: str | None = None) -> list[str]:
        """Full ids of the project's containers (of `service`), as `docker-compose ps -q`."""
        result = self.run("ps", "-q", *([service] if service else []))
        return [line for line in result.stdout.split() if line]

    def down(self, timeout: int = 10) -> None:
        self.run("down", "--remove-orphans", "--volumes", "-t", str(timeout))

    def containers(self, service: str | None = None, *, all: bool = True) -> list[dict[str, str]]:
        """The project's containers as podman lists them (also those made by a scaler through
        the API, which carry the project's labels): Id, Names, State, Labels."""
        filters = [f"label=com.docker.compose.project={self.project}"]
        if service:
            filters.append(f"label=com.docker.compose.service={service}")
        return self.podman.containers(*filters, all=all)


class Podman:
    """Rootful podman with its Docker-compatible API on a socket of the session's own."""

    def __init__(self, state_dir: Path | None = None) -> None:
        self.state_dir = state_dir or Path(tempfile.mkdtemp(prefix="reporun-podman-"))
        self.socket = self.state_dir / "podman.sock"
        self.docker_host = f"unix://{self.socket}"
        self.containers_conf = self.state_dir / "containers.conf"
        self.session = secrets.token_hex(4)
        self.env: dict[str, str] = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("DOCKER_", "COMPOSE_"))},
            "DOCKER_HOST": self.docker_host,
            "CONTAINERS_CONF": str(self.containers_conf),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.image = ""
        self.projects: list[Compose] = []
        self.podman_bin = ""
        self.compose_bin = ""

    # -- lifecycle ----------------------------------------------------------------------------

    def start_cli(self) -> None:
        """The podman command alone, without the API service: enough to build images."""
        found = {name: _tool(name, package) for name, package in REQUIRED}
        self.podman_bin = found["podman"]
        self.compose_bin = found["docker-compose"]
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self.containers_conf.write_text(CONTAINERS_CONF)

    def start(self) -> None:
        self.start_cli()
        log = (self.state_dir / "service.log").open("wb")
        self.process = subprocess.Popen(
            [self.podman_bin, "system", "service", "--time=0", self.docker_host],
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()
        transport = httpx.HTTPTransport(uds=str(self.socket))
        with httpx.Client(transport=transport, base_url="http://podman", timeout=2.0) as http:
            deadline = time.monotonic() + START_TIMEOUT
            while True:
                if self.process.poll() is not None:
                    pytest.fail(f"podman system service exited: {self.service_log()}")
                # A plain connect first, closed here: a refused connect inside httpx leaves
                # its socket to the garbage collector (a ResourceWarning, an error here).
                if _accepts(self.socket):
                    with contextlib.suppress(httpx.TransportError):
                        if http.get("/_ping").text == "OK":
                            break
                if time.monotonic() > deadline:
                    pytest.fail(f"podman system service did not answer: {self.service_log()}")
                time.sleep(0.05)

    def stop(self) -> None:
        """Remove what this session created (compose projects, labelled containers, their
        networks), then stop the service."""
        if self.podman_bin:
            for project in self.projects:
                with contextlib.suppress(Exception, pytest.fail.Exception):
                    project.run("down", "--remove-orphans", "--volumes", "-t", "2", check=False)
            filters = [f"label={SESSION_LABEL}={self.session}"]
            filters += [f"label=com.docker.compose.project={p.project}" for p in self.projects]
            for filter_ in filters:  # what a scaler started, or a test left behind
                with contextlib.suppress(Exception, pytest.fail.Exception):
                    ids = [c["Id"] for c in self.containers(filter_, all=True)]
                    if ids:
                        self.cli("rm", "--force", "--time", "0", *ids, check=False)
                    listed = self.cli("network", "ls", "--quiet", "--filter", filter_, check=False)
                    if listed.stdout.split():
                        self.cli("network", "rm", "--force", *listed.stdout.split(), check=False)
        if self.process is not None and self.process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()
        shutil.rmtree(self.state_dir, ignore_errors=True)

    def service_log(self) -> str:
        with contextlib.suppress(OSError):
            return _tail((self.state_dir / "service.log").read_text(errors="replace"))
        return ""

    # -- the podman command -------------------------------------------------------------------

    def cli(
        self,
        *args: str,
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
        input: bytes | None = None,
    ) -> subprocess.CompletedProcess[str]:
        """`podman ARGS...` with this session's containers.conf."""
        argv = [self.podman_bin or "podman", *args]
        text = input.decode() if input is not None else None
        return _run(argv, "podman", self.env, check=check, timeout=timeout, input=text)

    def containers(self, *filters: str, all: bool = True) -> list[dict[str, str]]:
        args = ["ps", "--format", "json", *(["--all"] if all else [])]
        for filter_ in filters:
            args += ["--filter", filter_]
        return list(json.loads(self.cli(*args).stdout or "[]"))

    def run(
        self,
        *command: str,
        image: str | None = None,
        options: Sequence[str] = (),
        check: bool = True,
        timeout: float = COMMAND_TIMEOUT,
    ) -> subprocess.CompletedProcess[str]:
        """`podman run --rm [OPTIONS] IMAGE COMMAND...` (default: the reporun image, whose
        entrypoint is `reporun`), labelled so that `stop` removes it if it is left over."""
        return self.cli(
            "run",
            "--rm",
            "--label",
            f"{SESSION_LABEL}={self.session}",
            *options,
            image or self.image,
            *command,
            check=check,
            timeout=timeout,
        )

    def image_exists(self, image: str) -> bool:
        return self.cli("image", "exists", image, check=False).returncode == 0

    def image_label(self, image: str, label: str) -> str:
        result = self.cli(
            "image", "inspect", "--format", f'{{{{index .Labels "{label}"}}}}', image, check=False
        )
        return result.stdout.strip() if result.returncode == 0 else ""

    # -- images -------------------------------------------------------------------------------

    def ensure_base_image(self) -> str:
        """`localhost/debian:bookworm`, from debootstrap, carrying the host's extra CAs."""
        wanted = _cas_digest()
        if self.image_label(BASE_IMAGE, CAS_LABEL) == wanted:
            return BASE_IMAGE
        with _file_lock("reporun-podman-base.lock"):
            if self.image_label(BASE_IMAGE, CAS_LABEL) == wanted:
                return BASE_IMAGE
            debootstrap = _tool("debootstrap", "debootstrap")
            rootfs = Path(tempfile.mkdtemp(prefix="reporun-rootfs-", dir="/var/tmp"))
            try:
                try:
                    result = subprocess.run(
                        [debootstrap, "--variant=minbase", "bookworm", str(rootfs), DEBIAN_MIRROR],
                        capture_output=True,
                        text=True,
                        timeout=BUILD_TIMEOUT / 2,
                        check=False,
                    )
                except subprocess.TimeoutExpired:
                    pytest.fail("debootstrap of the test base image took too long")
                if result.returncode != 0:
                    details = result.stdout + result.stderr
                    with contextlib.suppress(OSError):
                        details += (rootfs / "debootstrap" / "debootstrap.log").read_text()
                    pytest.fail(f"debootstrap failed ({result.returncode}):\n{_tail(details)}")
                cas = rootfs / "usr" / "local" / "share" / "ca-certificates"
                cas.mkdir(parents=True, exist_ok=True)
                for ca in _host_cas():
                    shutil.copy(ca, cas / ca.name)
                for leftover in ("var/cache/apt/archives", "var/lib/apt/lists"):
                    for entry in (rootfs / leftover).glob("*"):
                        if entry.is_file():
                            entry.unlink()
                tar = subprocess.Popen(
                    ["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE
                )
                assert tar.stdout is not None
                imported = subprocess.run(
                    [
                        self.podman_bin,
                        "import",
                        "--change",
                        f"LABEL {CAS_LABEL}={wanted}",
                        "--change",
                        'CMD ["/bin/bash"]',
                        "-",
                        BASE_IMAGE,
                    ],
                    stdin=tar.stdout,
                    env=self.env,
                    capture_output=True,
                    text=True,
                    timeout=BUILD_TIMEOUT / 2,
                    check=False,
                )
                tar.stdout.close()
                tar.wait()
                if imported.returncode != 0 or tar.returncode != 0:
                    pytest.fail(f"podman import of the base image failed: {imported.stderr}")
            finally:
                shutil.rmtree(rootfs, ignore_errors=True)
        return BASE_IMAGE

    def build_image(self, *, keep: int = 3) -> str:
        """The reporun image of this tree: `localhost/reporun:test-<hash of the inputs>`, built
        only when no image of that tag exists. Older test tags beyond `keep` are removed."""
        base = self.ensure_base_image()
        base_id = self.cli("image", "inspect", "--format", "{{.Id}}", base).stdout.strip()
        digest = hashlib.sha256(f"{build_inputs_digest()}:{base_id}".encode()).hexdigest()
        tag = f"{IMAGE_REPO}:test-{digest[:16]}"
        if not self.image_exists(tag):
            with _file_lock("reporun-podman-build.lock"):
                if not self.image_exists(tag):
                    self._build(tag, base, digest)
                    self._prune_test_images(keep=keep, current=tag)
        self.image = tag
        return tag

    def _build(self, tag: str, base: str, digest: str) -> None:
        log = self.state_dir / "build.log"
        with log.open("w") as out:
            try:
                result = subprocess.run(
                    [
                        self.podman_bin,
                        "build",
                        "--pull=never",
                        "--build-arg",
                        f"BASE={base}",
                        "--label",
                        f"{INPUTS_LABEL}={digest}",
                        "-f",
                        str(DOCKERFILE),
                        "-t",
                        tag,
                        str(ROOT),
                    ],
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    timeout=BUILD_TIMEOUT,
                    check=False,
                )
            except subprocess.TimeoutExpired:
                pytest.fail(f"podman build took more than {BUILD_TIMEOUT} s (log: {log})")
        if result.returncode != 0:
            pytest.fail(f"podman build of deploy/Dockerfile failed:\n{_tail(log.read_text())}")

    def _prune_test_images(self, *, keep: int, current: str) -> None:
        listed = self.cli(
            "images", "--format", "{{.Repository}}:{{.Tag}} {{.CreatedAt}}", IMAGE_REPO, check=False
        ).stdout.splitlines()
        tags = [line.split(" ", 1) for line in listed if ":test-" in line]
        tags.sort(key=lambda item: item[1] if len(item) > 1 else "", reverse=True)
        old = [item[0] for item in tags if item[0] != current][max(keep - 1, 0) :]
        for name in old:  # one in use by a container stays
            self.cli("rmi", name, check=False)
        # The untagged wheel stages of earlier builds (the build lock is held); the current one
        # keeps the build tools' layer in the cache.
        listed = self.cli(
            "images",
            "--format",
            "json",
            "--filter",
            "dangling=true",
            "--filter",
            f"label={INPUTS_LABEL}",
            check=False,
        ).stdout
        digest = self.image_label(current, INPUTS_LABEL)
        stale = [
            image["Id"]
            for image in json.loads(listed or "[]")
            if (image.get("Labels") or {}).get(INPUTS_LABEL) != digest
        ]
        if stale:
            self.cli("rmi", *stale, check=False)

    # -- helpers ------------------------------------------------------------------------------

    def compose(
        self, file: Path, project: str | None = None, *, env_file: Path | None = None
    ) -> Compose:
        """A compose project of `file`, taken down (with what a scaler added) at `stop`."""
        project = project or f"reporuntest{secrets.token_hex(4)}"
        compose = Compose(self, file, project, env_file)
        self.projects.append(compose)
        return compose

    def bwrap_seccomp_profile(self) -> Path:
        """podman's default seccomp profile plus sethostname/setdomainname: with
        `systempaths=unconfined`, enough for bubblewrap. Only usable where a file path is
        accepted (podman CLI, Docker SDK against podman), not through docker-compose 1.29."""
        target = self.state_dir / "seccomp-bwrap.json"
        if not target.is_file():
            profile = json.loads(Path("/usr/share/containers/seccomp.json").read_text())
            names = {"sethostname", "setdomainname"}
            for rule in profile["syscalls"]:
                if rule.get("action") == "SCMP_ACT_ERRNO":
                    rule["names"] = [n for n in rule["names"] if n not in names]
            profile["syscalls"] = [r for r in profile["syscalls"] if r["names"]]
            profile["syscalls"].append(
                {"names": sorted(names), "action": "SCMP_ACT_ALLOW", "args": [], "includes": {}}
            )
            target.write_text(json.dumps(profile))
        return target


@pytest.fixture(scope="session")
def podman() -> Iterator[Podman]:
    """The engine with the reporun image built (`podman.image`)."""
    engine = Podman()
    try:
        engine.start()
        engine.build_image()
        yield engine
    finally:
        engine.stop()


@pytest.fixture(scope="module")
def host_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GitServer]:
    """A git daemon on every address of the host: containers clone from it at HOST_ADDRESS
    (the URLs it gives name 0.0.0.0; replace that with HOST_ADDRESS)."""
    server = GitServer(
        tmp_path_factory.mktemp("git-base"), tmp_path_factory.mktemp("git-work"), host="0.0.0.0"
    )
    server.start()
    yield server
    server.stop()
