"""The network namespace of a job that has a network: `registries` and `open`.

`registries`: loopback only, and on it 127.0.0.1:3128, a forwarder to the job's egress proxy
(worker/egress.py), reached through a Unix socket in the host's filesystem (which no network
namespace stops).

`open`: besides loopback a tap device, behind which slirp4netns (running outside, as the job's
uid, with no way to the host's loopback) makes the job's connections from the worker host as
its own. Routes of type prohibit, set before the job starts and out of its reach (it runs in a
user namespace below the one that owns the network), refuse every private, shared, link-local,
loopback, multicast and reserved range and each of the host's own addresses: the job reaches
public addresses, and names through slirp4netns' DNS at 10.0.2.3.

The helper's command line (`proxy_jail`, `open_jail`) goes in front of a job's prlimit and
bubblewrap: a small program, run as the job's uid with the host's Python before the sandbox
exists, that makes a user and network namespace of its own, brings its loopback up, forks what
serves the network (which dies with it) and then becomes the rest of the command line.
bubblewrap then keeps that network namespace (`--share-net`) and makes every other namespace
new, as for any job.
"""

from __future__ import annotations

import os
import re
import stat
import sys
from collections.abc import Sequence
from ipaddress import IPv4Network
from pathlib import Path

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# What an `open` job's /etc/resolv.conf says: the helper's relay to the worker's name server
# (worker/names.py), never the host's resolver.
OPEN_RESOLV_CONF = b"nameserver 127.0.0.1\n"
TUN = Path("/dev/net/tun")
LOCAL_ROUTE = re.compile(r"^/(\d+) host LOCAL$")
# Refused to an `open` job, besides the host's own addresses: this network, private,
# shared (CGNAT), loopback, link-local (cloud metadata), IETF, 6to4 relays, benchmarking,
# multicast and reserved ranges, Azure's host service address, and slirp4netns' gateway (the
# host itself) and its DNS (off: the worker answers a job's names).
REFUSED_RANGES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "168.63.129.16/32",
    "10.0.2.2/32",
    "10.0.2.3/32",
)

# Standalone (it runs in /usr/bin/python3 -I -S, with nothing of reporun importable).
# Its arguments: `proxy SOCKET -- ARGV...`, or `open SOCKET SLIRP4NETNS NETWORKS -- ARGV...`.
HELPER = r"""
import ctypes, fcntl, os, resource, select, signal, socket, struct, sys, threading
end = sys.argv.index("--")
mode, path, extra, argv = sys.argv[1], sys.argv[2], sys.argv[3:end], sys.argv[end + 1:]
libc = ctypes.CDLL(None, use_errno=True)
def fail(what, errno=None):
    errno = ctypes.get_errno() if errno is None else errno
    sys.stderr.write("reporun: the job's network could not be made: %s%s\n"
                     % (what, ": " + os.strerror(errno) if errno else ""))
    sys.exit(125)
def child(keep):  # a process that dies with the job, holding only the descriptors `keep`
    parent = os.getpid()
    if os.fork() != 0:
        return False
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the job
    if os.getppid() != parent:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the job's output open
        os.dup2(null, fd)
    for fd in keep:
        os.set_inheritable(fd, True)
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, 1 << 16)
    return True
def prohibit(networks):  # RTM_NEWROUTE of type RTN_PROHIBIT in the main table, per network
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, 0) as s:
        s.bind((0, 0))
        for seq, network in enumerate(networks, 1):
            address, length = network.split("/")
            body = (struct.pack("BBBBBBBBI", socket.AF_INET, int(length), 0, 0, 254, 4, 0, 8, 0)
                    + struct.pack("HH", 8, 1) + socket.inet_aton(address))
            # NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
            s.send(struct.pack("IHHII", 16 + len(body), 24, 0x1 | 0x4 | 0x400 | 0x100, seq, 0)
                   + body)
            reply = s.recv(4096)
            kind, error = struct.unpack("H", reply[4:6])[0], struct.unpack("i", reply[16:20])[0]
            if kind != 2 or error:  # anything but NLMSG_ERROR saying 0 is a failure
                fail("route " + network, -error if kind == 2 else 0)
def relay(data):  # one exchange with the worker: a length-prefixed message, then the answer
    with socket.socket(socket.AF_UNIX) as upstream:
        upstream.settimeout(30)
        upstream.connect(path)
        upstream.sendall(struct.pack(">H", len(data)) + data)
        answer = b""
        while len(answer) < 2 or len(answer) < 2 + struct.unpack(">H", answer[:2])[0]:
            chunk = upstream.recv(4096)
            if not chunk:
                raise OSError("closed")
            answer += chunk
        return answer[2:2 + struct.unpack(">H", answer[:2])[0]]
uid, gid, job = os.getuid(), os.getgid(), os.getpid()
if mode == "open":
    slirp, networks = extra[0], extra[1].split(",")
    ready, ready_w = os.pipe()
    said, said_w = os.pipe()  # what slirp4netns says, should it fail
    go_r, go = os.pipe()
    if child((ready_w, said_w, go_r)):
        os.dup2(said_w, 2)
        if os.read(go_r, 1) != b"1":  # the namespace is made (or the helper gave up)
            os._exit(0)
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # outside the job's
        resource.setrlimit(resource.RLIMIT_NOFILE, (4096, 4096))
        os.execv(slirp, [slirp, "--configure", "--mtu=65520", "--disable-host-loopback",
                         "--disable-dns", "--enable-seccomp", "--ready-fd=%d" % ready_w,
                         str(job), "tap0"])
    for fd in (go_r, ready_w, said_w):
        os.close(fd)
if libc.unshare(0x10000000 | 0x40000000) != 0:  # CLONE_NEWUSER | CLONE_NEWNET
    fail("unshare")
try:
    for name, text in (("setgroups", "deny"), ("uid_map", "%d %d 1" % (uid, uid)),
                       ("gid_map", "%d %d 1" % (gid, gid))):
        with open("/proc/self/" + name, "w") as f:
            f.write(text)
    with socket.socket() as s:  # loopback up: SIOCGIFFLAGS, then SIOCSIFFLAGS with IFF_UP
        ifr = struct.pack("16sH14x", b"lo", 0)
        flags = struct.unpack("16sH14x", fcntl.ioctl(s, 0x8913, ifr))[1]
        fcntl.ioctl(s, 0x8914, struct.pack("16sH14x", b"lo", flags | 1))
    if mode == "open":
        os.write(go, b"1")
        os.close(go)
        if not select.select([ready], [], [], 30)[0] or os.read(ready, 1) != b"1":
            os.set_blocking(said, False)
            try:
                why = os.read(said, 2000).decode(errors="replace").strip().splitlines()
            except OSError:
                why = []
            fail("slirp4netns did not start" + (" (%s)" % why[-1] if why else ""), 0)
        os.close(ready)
        os.close(said)
        prohibit(networks)
        # The job's names: 127.0.0.1:53 (UDP), each query answered by the worker.
        listener = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        listener.bind(("127.0.0.1", 53))
    else:  # the job's proxy: 127.0.0.1:3128, each connection relayed to the worker's
        listener = socket.socket()
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", int(extra[0])))
        listener.listen(64)
except OSError as exc:
    fail(type(exc).__name__, exc.errno or 0)
slots = threading.BoundedSemaphore(64)  # at once; the worker caps them too
def spawn(target, *args):
    if not slots.acquire(blocking=False):
        return False
    def run():
        try:
            target(*args)
        finally:
            slots.release()
    try:
        threading.Thread(target=run, daemon=True).start()
    except RuntimeError:  # no thread to be had
        slots.release()
        return False
    return True
def pipe(a, b):
    try:
        while True:
            data = a.recv(65536)
            if not data:
                break
            b.sendall(data)
    except OSError:
        pass
    try:
        b.shutdown(socket.SHUT_WR)
    except OSError:
        pass
def connection(client):
    upstream = socket.socket(socket.AF_UNIX)
    try:
        upstream.connect(path)
        back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
        back.start()
        pipe(client, upstream)
        back.join()
    except (OSError, RuntimeError):
        pass
    finally:
        client.close()
        upstream.close()
def query(data, peer):
    try:
        listener.sendto(relay(data), peer)
    except (OSError, struct.error):
        pass
if child((listener.fileno(),)):
    while True:
        if mode == "open":
            data, peer = listener.recvfrom(4096)
            spawn(query, data, peer)
        else:
            client, _ = listener.accept()
            if not spawn(connection, client):
                client.close()
listener.close()
os.execvp(argv[0], argv)
"""


def _usable_by_all(path: Path) -> bool:
    """Whether every uid may run `path`: it and each directory above it open to others."""
    try:
        real = path.resolve(strict=True)
    except OSError:
        return False
    if not os.stat(real).st_mode & stat.S_IXOTH:
        return False
    return all(os.stat(parent).st_mode & stat.S_IXOTH for parent in real.parents)


def helper_python() -> str | None:
    """A Python the jobs' uids may run (this worker's may sit in a home only root can enter)."""
    for candidate in (sys.executable, "/usr/bin/python3", "/usr/local/bin/python3"):
        if candidate and _usable_by_all(Path(candidate)):
            return str(Path(candidate).resolve())
    return None


def proxy_jail(python: str, proxy_socket: Path) -> list[str]:
    """What goes before a `registries` job's prlimit and bubblewrap (ending in `--`)."""
    return [python, "-I", "-S", "-c", HELPER, "proxy", str(proxy_socket), str(PROXY_PORT), "--"]


def open_jail(
    python: str, names_socket: Path, slirp: str, refused: Sequence[IPv4Network]
) -> list[str]:
    """What goes before an `open` job's prlimit and bubblewrap (ending in `--`): its network
    behind `slirp`, with routes refusing `refused`, and its names from the worker's name
    server on `names_socket`."""
    networks = ",".join(str(network) for network in refused)
    return [python, "-I", "-S", "-c", HELPER, "open", str(names_socket), slirp, networks, "--"]


def host_networks() -> list[IPv4Network]:
    """This host's own IPv4 addresses (and local routes), from /proc/net/fib_trie: what an
    `open` job must not reach through slirp4netns, which connects from here."""
    found: set[IPv4Network] = set()
    last = None
    with open("/proc/net/fib_trie") as trie:
        for line in trie:
            line = line.strip()
            if line.startswith("|--"):
                last = line.split()[1]
            elif last and (local := LOCAL_ROUTE.match(line)):
                found.add(IPv4Network(f"{last}/{local[1]}", strict=False))
    return sorted(found)


def refused_networks(extra: Sequence[IPv4Network] = ()) -> list[IPv4Network]:
    """What an `open` job may not reach: REFUSED_RANGES, the operator's `extra`
    (REPORUN_NETWORK_OPEN_REFUSED) and this host's own addresses, as they are now."""
    return [*(IPv4Network(network) for network in REFUSED_RANGES), *extra, *host_networks()]


def tun_usable_by_all() -> bool:
    """Whether every uid may open /dev/net/tun (slirp4netns does, as the job's uid): Debian's
    udev makes it so; a host without udev leaves it to root."""
    try:
        mode = TUN.stat().st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) and mode & 0o006 == 0o006


# For a root worker on a host whose /dev/net/tun only root may open: the job's chain runs in a
# mount namespace of its own, with a /dev/net that holds a tun node every uid may open (the
# host's stays as it is; the job's sandbox makes its own /dev without one).
TUN_NAMESPACE = (
    "unshare",
    "--mount",
    "--propagation",
    "private",
    "--",
    "/bin/sh",
    "-c",
    "mount -t tmpfs -o size=16k,mode=755 reporun-tun /dev/net && "
    'mknod -m 666 /dev/net/tun c 10 200 && exec "$@"',
    "reporun",
)


def proxy_environment() -> dict[str, str]:
    """Where a job's tools find the proxy: curl, pip, npm and most HTTP clients."""
    return {
        "HTTP_PROXY": PROXY_URL,
        "HTTPS_PROXY": PROXY_URL,
        "http_proxy": PROXY_URL,
        "https_proxy": PROXY_URL,
        "PIP_PROXY": PROXY_URL,
        "npm_config_proxy": PROXY_URL,
        "npm_config_https_proxy": PROXY_URL,
    }
