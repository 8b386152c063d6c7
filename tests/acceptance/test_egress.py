"""Network modes for real: a worker on a host of the suite's own (a network namespace with no
route out, so nothing could leave this machine even if the proxy were wrong) runs jobs that
try to reach a package index the test serves on another such host, hosts off the list, a
private address, the cloud metadata address, the worker host's loopback and DNS.

The index host also has a public-looking address (198.51.100.10, a documentation range) and
serves DNS; the worker host has one of its own (203.0.113.7) with a service on it: what an
`open` job may reach, and what it may not."""

from __future__ import annotations

import base64
import hashlib
import secrets
import shutil
import subprocess
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.acceptance.test_many_hosts import Network
from tests.conftest import processes_with
from tests.harness.processes import Processes, require_tool
from tests.harness.server import REPORUN
from tests.netns import Hosts
from tests.runtime_image import ROOTS, runtime_archive

PROBES = r"""
import socket, ssl, sys, urllib.request

def get(label, url):
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            print(label, "ok", response.read().decode().strip())
    except Exception as exc:
        print(label, "refused", getattr(exc, "code", type(exc).__name__))

def tunnel(label, host, port):
    # What pip does for https: CONNECT through the proxy, then talk through the tunnel.
    try:
        with socket.create_connection(("127.0.0.1", 3128), timeout=20) as s:
            s.sendall(f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n\r\n".encode())
            head = s.recv(4096).decode(errors="replace").splitlines()[0]
            if " 200 " not in head:
                print(label, "refused", head.split()[1]); return
            s.sendall(f"GET /hello.txt HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
            data = b""
            while chunk := s.recv(4096):
                data += chunk
            if not data:
                print(label, "refused closed"); return
            print(label, "ok", data.decode().split("\r\n\r\n", 1)[1].strip())
    except Exception as exc:
        print(label, "refused", type(exc).__name__)

def tls(label, server_name, verify=True):
    # What pip does for https: CONNECT, then TLS through the tunnel, asking for `server_name`.
    try:
        context = ssl.create_default_context(cafile="index.pem")
        if not verify:  # nothing but the proxy stands in the way of a name of the job's own
            context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        with socket.create_connection(("127.0.0.1", 3128), timeout=20) as s:
            s.sendall(b"CONNECT index.test:8443 HTTP/1.1\r\nHost: index.test:8443\r\n\r\n")
            head = s.recv(4096).decode(errors="replace").splitlines()[0]
            if " 200 " not in head:
                print(label, "refused", head.split()[1]); return
            with context.wrap_socket(s, server_hostname=server_name) as t:
                t.sendall(b"GET /hello.txt HTTP/1.0\r\nHost: index.test\r\n\r\n")
                data = b""
                while chunk := t.recv(4096):
                    data += chunk
            print(label, "ok", data.decode().split("\r\n\r\n", 1)[1].strip())
    except Exception as exc:
        print(label, "refused", type(exc).__name__)

get("allowed", "http://index.test:8080/hello.txt")
tunnel("tunnel", "index.test", 8080)
tls("tls", "index.test")
tls("sni", "evil.test", verify=False)
get("unlisted", "http://unlisted.test:8080/hello.txt")
get("port", "http://index.test:8081/hello.txt")
# A Host header of the job's own is not what the proxy sends on.
req = urllib.request.Request("http://index.test:8080/host", headers={"Host": "evil.test"})
get("host", req)
get("upload", urllib.request.Request("http://index.test:8080/hello.txt", data=b"x"))
get("literal", "http://10.255.255.1/")
get("metadata", "http://169.254.169.254/latest/meta-data/")
get("loopback", "http://sneaky.test:8080/")
get("private", "http://db.test:5432/")
try:
    socket.getaddrinfo("pypi.org", 443)
    print("dns ok")
except OSError as exc:
    print("dns refused", type(exc).__name__)
try:
    socket.create_connection(("GATEWAY", 5432), timeout=5).close()
    print("direct ok")
except OSError as exc:
    print("direct refused", type(exc).__name__)
"""


# The test's package index: a file, and the Host header each request came with.
INDEX = r"""
import functools, http.server, ssl, sys, threading

class Index(http.server.SimpleHTTPRequestHandler):
    def do_GET(self):
        if self.path != "/host":
            return super().do_GET()
        body = self.headers["Host"].encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

Index = functools.partial(Index, directory=sys.argv[4])

secure = http.server.ThreadingHTTPServer((sys.argv[1], 8443), Index)
context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
context.load_cert_chain(sys.argv[2], sys.argv[3])
secure.socket = context.wrap_socket(secure.socket, server_side=True)
threading.Thread(target=secure.serve_forever, daemon=True).start()
http.server.ThreadingHTTPServer((sys.argv[1], 8080), Index).serve_forever()
"""


# The index host's DNS server: an A record for each NAME=ADDRESS argument, NXDOMAIN else.
DNS = r"""
import socket, struct, sys
answers = dict(argument.split("=") for argument in sys.argv[2:])
server = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
server.bind((sys.argv[1], 53))
while True:
    query, peer = server.recvfrom(512)
    at, labels = 12, []
    while query[at]:
        labels.append(query[at + 1 : at + 1 + query[at]].decode().lower())
        at += 1 + query[at]
    kind = struct.unpack(">H", query[at + 1 : at + 3])[0]
    question, address = query[12 : at + 5], answers.get(".".join(labels))
    head = struct.pack(">H", struct.unpack(">H", query[:2])[0])
    if address and kind == 1:
        record = b"\xc0\x0c" + struct.pack(">HHIH", 1, 1, 60, 4) + socket.inet_aton(address)
        server.sendto(head + struct.pack(">HHHHH", 0x8180, 1, 1, 0, 0) + question + record, peer)
    else:
        code = 0 if address else 3  # no AAAA record, or no such name
        server.sendto(head + struct.pack(">HHHHH", 0x8180 | code, 1, 0, 0, 0) + question, peer)
"""

PUBLIC = "198.51.100.10"  # the index host's public-looking address
OWN = "203.0.113.7"  # the worker host's own public-looking address, a service on port 8090

OPEN_PROBES = r"""
import socket, struct, urllib.request

def get(label, url):
    try:
        with urllib.request.urlopen(url, timeout=20) as response:
            print(label, "ok", response.read().decode().strip())
    except Exception as exc:
        print(label, "refused", type(getattr(exc, "reason", exc)).__name__)

def connect(label, host, port):
    try:
        socket.create_connection((host, port), timeout=5).close()
        print(label, "ok")
    except OSError as exc:
        print(label, "refused", type(exc).__name__)

get("public", "http://PUBLIC:8080/hello.txt")
get("named", "http://public.test:8080/hello.txt")  # a name, through slirp4netns' DNS
connect("private", "INDEX", 8080)  # the same index, by its private address
connect("gateway", "GATEWAY", PGPORT)  # where the workers' PostgreSQL listens
connect("metadata", "169.254.169.254", 80)
connect("hostloop", "10.0.2.2", 8090)  # slirp4netns' way to the worker host's loopback
connect("own", "OWN", 8090)  # the worker host's own address
connect("inside", "inside.test", 5432)  # a name that resolves to a private address
connect("dnsalias", "10.0.2.3", 53)  # slirp4netns' way to the host's resolver

def send(label, address, *options):
    # A datagram sent past the routes: to a device, or out of an interface for multicast.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for level, name, value in options:
            s.setsockopt(level, name, value)
        try:
            s.sendto(b"x", (address, 9))
            print(label, "sent")
        except OSError as exc:
            print(label, "refused", type(exc).__name__)

tap = socket.inet_aton("10.0.2.100")
send("bound", "INDEX", (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"tap0"))
send("multicast", "239.255.0.1", (socket.IPPROTO_IP, socket.IP_MULTICAST_IF, tap))
send("broadcast", "10.0.2.255", (socket.SOL_SOCKET, socket.SO_BROADCAST, 1))
send("gateway2", "10.0.2.2", (socket.SOL_SOCKET, socket.SO_BINDTODEVICE, b"tap0"))
# The routes that refuse these are out of the job's reach: RTM_DELROUTE of 10.0.0.0/8.
with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
    body = (struct.pack("BBBBBBBBI", socket.AF_INET, 8, 0, 0, 254, 4, 0, 8, 0)
            + struct.pack("HH", 8, 1) + socket.inet_aton("10.0.0.0"))
    s.send(struct.pack("IHHII", 16 + len(body), 25, 0x1 | 0x4, 1, 0) + body)
    error = -struct.unpack("i", s.recv(4096)[16:20])[0]
    print("routes", "kept" if error else "deleted", error)
print(open("/etc/resolv.conf").read().split()[1])
print("localhost", socket.gethostbyname("localhost"))  # from its /etc/hosts
"""


def _wheel(path: Path) -> str:
    """A wheel of the package `reporun_hello` (what a setup phase installs), by hand; its
    sha256."""
    files = {
        "reporun_hello/__init__.py": b'GREETING = "hello from a wheel"\n',
        "reporun_hello-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: reporun-hello\n"
        b"Version: 1.0\n",
        "reporun_hello-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: reporun-tests\n"
        b"Root-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = [
        f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b'=').decode()},"
        f"{len(data)}"
        for name, data in files.items()
    ]
    files["reporun_hello-1.0.dist-info/RECORD"] = (
        "\n".join([*record, "reporun_hello-1.0.dist-info/RECORD,,"]) + "\n"
    ).encode()
    with zipfile.ZipFile(path, "w") as wheel:
        for name, data in files.items():
            wheel.writestr(name, data)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def serve_index(served: Path) -> None:
    """A package index (PEP 503) holding reporun-hello, and a file for the probes."""
    (served / "files").mkdir(parents=True)
    (served / "hello.txt").write_text("hello-from-index\n")
    name = "reporun_hello-1.0-py3-none-any.whl"
    digest = _wheel(served / "files" / name)
    (served / "simple" / "reporun-hello").mkdir(parents=True)
    (served / "simple" / "reporun-hello" / "index.html").write_text(
        f'<html><body><a href="../../files/{name}#sha256={digest}">{name}</a></body></html>\n'
    )


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Network]:
    """One world for the module's tests (each makes its own repositories)."""
    require_tool("bwrap", "the job sandbox")
    tmp_path = tmp_path_factory.mktemp("egress")
    processes = Processes()
    hosts = Hosts(2)
    etc = Path("/etc/netns") / hosts.names[0]
    try:
        hosts.up()
        index_ip = f"{hosts.subnet}.11"
        # How the worker's host resolves the names the jobs ask for.
        etc.mkdir(parents=True, exist_ok=True)
        (etc / "hosts").write_text(
            f"127.0.0.1 localhost\n{index_ip} index.test\n127.0.0.1 sneaky.test\n"
            f"{hosts.gateway} db.test\n"
        )
        (etc / "resolv.conf").write_text(f"nameserver {index_ip}\n")
        # Public-looking addresses: the index host's, routed to from the worker host, and
        # the worker host's own.
        worker_host, index_host = hosts.names
        for command in (
            ["-n", index_host, "addr", "add", f"{PUBLIC}/32", "dev", "eth0"],
            ["-n", worker_host, "route", "add", f"{PUBLIC}/32", "via", index_ip],
            ["-n", worker_host, "addr", "add", f"{OWN}/32", "dev", "lo"],
        ):
            subprocess.run(["ip", *command], check=True, capture_output=True, timeout=30)
        cert, key = tmp_path / "index.pem", tmp_path / "index.key"
        subprocess.run(
            [
                *(
                    "openssl",
                    "req",
                    "-x509",
                    "-newkey",
                    "ec",
                    "-pkeyopt",
                    "ec_paramgen_curve:P-256",
                ),
                *("-nodes", "-days", "2", "-subj", "/CN=index.test"),
                *("-addext", "subjectAltName=DNS:index.test"),
                *("-keyout", str(key), "-out", str(cert)),
            ],
            check=True,
            capture_output=True,
            timeout=60,
        )
        served = tmp_path / "served"
        serve_index(served)
        index = processes.start(
            [*hosts.prefix(1), "python3", "-c", INDEX, "0.0.0.0", str(cert), str(key), str(served)],
            {"PATH": "/usr/bin:/bin"},
            tmp_path / "index.log",
        )
        names = (f"public.test={PUBLIC}", f"inside.test={hosts.gateway}")
        processes.start(
            [*hosts.prefix(1), "python3", "-c", DNS, index_ip, *names],
            {"PATH": "/usr/bin:/bin"},
            tmp_path / "dns.log",
        )
        # A service of the worker host's own, on every address it has.
        processes.start(
            [
                *hosts.prefix(0),
                "python3",
                "-m",
                "http.server",
                "8090",
                "--bind",
                "0.0.0.0",
                "--directory",
                str(served),
            ],
            {"PATH": "/usr/bin:/bin"},
            tmp_path / "own.log",
        )
        net = Network(tmp_path, processes, hosts, REPORUN_NETWORK_OPEN="admins")
        try:
            net.worker(
                0,
                REPORUN_EGRESS_HOSTS=(
                    "index.test:8080,index.test:8443,sneaky.test:8080,db.test:5432,10.255.255.1,"
                    "169.254.169.254"
                ),
                REPORUN_EGRESS_PRIVATE_HOSTS="index.test,sneaky.test",
                REPORUN_RUNTIMES=f"py={runtime_archive()}",
                REPORUN_RUNTIMES_DIR=str(ROOTS),
                REPORUN_NETWORK_OPEN="admins",
            )
            yield net
        finally:
            for process in processes:
                if process.popen.poll() is None:
                    process.stop()
            index.stop()
            net.close()
    finally:
        processes.close()
        shutil.rmtree(etc, ignore_errors=True)
        hosts.down()


def _run(world: Network, network: str) -> tuple[dict, list[str]]:
    script = PROBES.replace("GATEWAY", world.hosts.gateway)
    files = {"probes.py": script, "run.sh": "#!/bin/sh\npython3 probes.py\n"}
    files["index.pem"] = (world.tmp_path / "index.pem").read_text()
    repo = world.git.make_repo(files)
    job = world.wait(world.api.submit(repo, network=network)["id"], {"succeeded", "failed"})
    log = world.api.log(job["id"]).decode(errors="replace")
    assert job["status"] == "succeeded", (job, log, world.logs())
    return job, log.splitlines()


def test_registries_reaches_the_named_hosts_only(world: Network) -> None:
    job, lines = _run(world, "registries")
    assert job["network"] == "registries"
    results = {line.split()[0]: line for line in lines if not line.startswith("reporun:")}
    assert results["allowed"] == "allowed ok hello-from-index", lines
    assert results["tls"] == "tls ok hello-from-index", lines
    # A tunnel whose handshake asks for another name (a CDN would route by it), or that
    # carries no TLS at all (and so no name), is cut.
    assert results["sni"].startswith("sni refused"), lines
    assert results["tunnel"] == "tunnel refused closed", lines
    assert results["host"] == "host ok index.test:8080", lines
    assert results["upload"] == "upload refused 400", lines  # only GET and HEAD pass
    for refused in ("unlisted", "port", "literal", "metadata", "loopback", "private"):
        assert results[refused] == f"{refused} refused 403", lines
    assert results["dns"].startswith("dns refused"), lines
    assert results["direct"].startswith("direct refused"), lines
    said = "\n".join(line for line in lines if line.startswith("reporun: egress"))
    # Each refusal is a line of the job's log, saying why.
    assert "egress to unlisted.test:8080 refused: unlisted.test:8080 is not one of the" in said
    assert "egress to index.test:8081 refused: index.test:8081 is not one of the" in said
    assert "egress to 10.255.255.1:80 refused: 10.255.255.1 is a private address" in said
    assert "169.254.169.254:80 refused: 169.254.169.254 is a link-local address" in said
    assert "sneaky.test:8080 refused: 127.0.0.1 is a loopback address" in said
    assert f"db.test:5432 refused: {world.hosts.gateway} is a private address" in said
    assert "reporun: egress to index.test:8080 (" in said
    assert "index.test:8443 refused: the TLS handshake asks for evil.test" in said
    assert "index.test:8080 refused: a tunnel carries TLS naming its host" in said


def test_none_reaches_nothing(world: Network) -> None:
    job, lines = _run(world, "none")
    assert job["network"] == "none"
    results = {line.split()[0]: line for line in lines}
    for label in (
        "allowed",
        "unlisted",
        "port",
        "metadata",
        "loopback",
        "private",
        "dns",
        "direct",
    ):
        assert results[label].startswith(f"{label} refused"), lines
    assert results["tunnel"].startswith("tunnel refused"), lines
    assert results["tls"].startswith("tls refused"), lines
    assert not [line for line in lines if line.startswith("reporun: egress")]


# In the command line of a registries job's network helper (and its forwarder).
JAIL_MARK = "the job's network could not be made"
# In the command line of an open job's slirp4netns.
SLIRP_MARK = "--disable-host-loopback --disable-dns"

SETUP = (
    "python3 -m venv .venv && .venv/bin/pip install --disable-pip-version-check -q "
    "--index-url http://index.test:8080/simple/ --trusted-host index.test reporun-hello"
)
TESTS = """\
import reporun_hello, urllib.request
print(reporun_hello.GREETING)
try:
    urllib.request.urlopen("http://index.test:8080/hello.txt", timeout=5)
    print("network during the command")
except OSError as exc:
    print("no network during the command:", type(exc).__name__)
"""


def test_a_setup_installs_from_the_index_and_the_next_job_skips_it(world: Network) -> None:
    """A Python runtime's job installs a wheel from the test's index in its setup phase
    (network registries), then runs its tests with network none; the next job of the same
    commit finds what setup made kept, and skips it."""
    repo = world.git.make_repo(
        {
            "reporun.toml": (
                f'runtime = "py"\nsetup = "{SETUP}"\ncommand = ".venv/bin/python -m t"\n'
            ),
            "requirements.txt": "reporun-hello==1.0\n",
            "t.py": TESTS,
        }
    )
    first = world.wait(world.api.submit(repo)["id"], {"succeeded", "failed"}, timeout=180)
    log = world.api.log(first["id"]).decode(errors="replace")
    assert first["status"] == "succeeded", log
    assert first["setup"] == SETUP and first["runtime"] == "py" and first["network"] == "none"
    assert "hello from a wheel" in log
    assert "no network during the command: URLError" in log
    assert "reporun: setup (network registries): python3 -m venv" in log
    assert "reporun: egress to index.test:8080 (" in log
    took = float(log.split("reporun: setup took ")[1].split(" s")[0])
    assert "for the next jobs" in log

    second = world.wait(world.api.submit(repo)["id"], {"succeeded", "failed"}, timeout=120)
    again = world.api.log(second["id"]).decode(errors="replace")
    assert second["status"] == "succeeded", (second, again)
    assert "hello from a wheel" in again and "reporun: setup skipped (" in again
    assert "reporun: egress" not in again  # nothing was fetched
    skipped = float(again.split("reporun: setup skipped (")[1].split(" s)")[0])
    assert skipped < took, (skipped, took)


def test_a_failed_setup_fails_the_job_saying_so(world: Network) -> None:
    repo = world.git.make_repo({"run.sh": "#!/bin/sh\necho never\n"})
    job = world.wait(
        world.api.submit(repo, setup="echo installing; exit 3")["id"], {"succeeded", "failed"}
    )
    log = world.api.log(job["id"]).decode(errors="replace")
    assert job["status"] == "failed" and job["reason"] == "setup failed: exit code 3", job
    assert "installing" in log and "never" not in log


def test_a_registries_job_out_of_time_leaves_nothing_behind(world: Network) -> None:
    """The timeout kills a registries job whole: its command, the network namespace's
    forwarder (which runs beside the sandbox) and every connection through the proxy."""
    marker = f"still-here-{secrets.token_hex(4)}"
    script = (
        "#!/bin/sh\n"
        'python3 -c \'import socket,time; s=socket.create_connection(("127.0.0.1", 3128)); '
        f"time.sleep(300)' {marker} &\n"
        f"sleep 300 # {marker}\n"
    )
    repo = world.git.make_repo({"run.sh": script})
    job = world.wait(
        world.api.submit(repo, network="registries", timeout=3)["id"], {"timed_out", "failed"}
    )
    assert job["status"] == "timed_out", job
    deadline = time.monotonic() + 10
    while (
        left := processes_with(marker) + processes_with(JAIL_MARK)
    ) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], left


@pytest.mark.parametrize("runtime", ["host", "py"])
def test_open_reaches_public_addresses_and_nothing_of_the_hosts(
    world: Network, runtime: str
) -> None:
    """An `open` job (an admin's, on a server that offers it to admins) reaches a public
    address, and a name through slirp4netns' DNS; not a private address, the gateway, the
    metadata address, the worker host's loopback or own address, nor a name that resolves to
    a private address; and it cannot remove the routes that refuse them. Nothing of its
    network outlives it."""
    script = (
        OPEN_PROBES.replace("PUBLIC", PUBLIC)
        .replace("INDEX", f"{world.hosts.subnet}.11")
        .replace("GATEWAY", world.hosts.gateway)
        .replace("OWN", OWN)
        .replace("PGPORT", str(world.postgres.port))
    )
    files = {"probes.py": script, "run.sh": "#!/bin/sh\npython3 probes.py\n"}
    files["reporun.toml"] = f'runtime = "{runtime}"\n'  # the worker's runtimes, not the API's
    submitted = world.api.submit(world.git.make_repo(files), network="open")
    job = world.wait(submitted["id"], {"succeeded", "failed"})
    log = world.api.log(job["id"]).decode(errors="replace")
    assert job["status"] == "succeeded", (job, log, world.logs())
    assert job["network"] == "open" and job["runtime"] == runtime
    lines = log.splitlines()
    results = {line.split()[0]: line for line in lines if not line.startswith("reporun:")}
    assert results["public"] == "public ok hello-from-index", lines
    assert results["named"] == "named ok hello-from-index", lines
    for refused in ("private", "gateway", "metadata", "hostloop", "own", "dnsalias"):
        assert results[refused] == f"{refused} refused PermissionError", lines
    # Past the routes (a device, multicast, broadcast), netfilter refuses it still.
    for refused in ("bound", "multicast", "broadcast", "gateway2"):
        assert results[refused] == f"{refused} refused PermissionError", lines
    # A name of the inside is as good as none (and the job's log says so, not where it points).
    assert results["inside"] == "inside refused gaierror", lines
    assert (
        "reporun: name inside.test refused: it resolves only to addresses this job may not reach"
    ) in lines, lines
    assert world.hosts.gateway not in log.replace(f"{world.hosts.gateway}:", ""), lines
    assert results["routes"] == "routes kept 1", lines  # EPERM
    assert results["localhost"] == "localhost 127.0.0.1", lines
    assert "127.0.0.1" in results, lines  # its resolv.conf: the relay to the worker's names
    deadline = time.monotonic() + 10
    while (left := processes_with(SLIRP_MARK)) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert left == [], left


def test_a_reporun_toml_asking_for_open_needs_its_owner_allowed(world: Network) -> None:
    repo = world.git.make_repo(
        {"reporun.toml": 'network = "open"\n', "run.sh": "#!/bin/sh\necho never\n"}
    )
    alice = world.server.blocking_client(world.server.mint("alice"), poll=0.1)
    try:
        job = alice.wait(alice.submit(repo)["id"], {"succeeded", "failed"}, explain=world.logs)
    finally:
        alice.close()
    assert job["status"] == "failed", job
    assert job["reason"] == (
        "reporun.toml: network 'open' is not allowed to this job's owner on this server "
        "(use registries)"
    )


def test_doctor_probes_network_open_where_it_is_offered(world: Network) -> None:
    """On the worker host (no route out), `reporun doctor` runs an `open` job against the
    metadata address, which its routes refuse."""
    env = {**world.server.env, **world.worker_env, "REPORUN_NETWORK_OPEN": "admins"}
    env["REPORUN_DATA_DIR"] = str(world.tmp_path / "doctor")
    result = subprocess.run(
        [*world.hosts.prefix(0), *REPORUN, "doctor"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok    network mode open (slirp4netns, private ranges refused)" in result.stdout
    assert "-     network open for: admins" in result.stdout
