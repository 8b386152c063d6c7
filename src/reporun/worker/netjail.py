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
import stat
import sys
from pathlib import Path

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# What an `open` job's /etc/resolv.conf says: slirp4netns' DNS, which asks the host's.
OPEN_RESOLV_CONF = b"nameserver 10.0.2.3\noptions edns0\n"
TUN = Path("/dev/net/tun")
# Refused to an `open` job, besides the host's own addresses: this network, private,
# shared (CGNAT), loopback, link-local (cloud metadata), IETF, benchmarking, multicast and
# reserved ranges, and slirp4netns' gateway (the host itself).
REFUSED_RANGES = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "10.0.2.2/32",
)

# Standalone (it runs in /usr/bin/python3 -I -S, with nothing of reporun importable).
HELPER = r"""
import ctypes, fcntl, os, resource, select, signal, socket, struct, sys, threading
# proxy SOCKET PORT -- ARGV..., or open SLIRP4NETNS RANGES -- ARGV...
mode, arg, third, argv = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[5:]
libc = ctypes.CDLL(None, use_errno=True)
def fail(what, errno=None):
    errno = ctypes.get_errno() if errno is None else errno
    sys.stderr.write("reporun: the job's network could not be made: %s%s\n"
                     % (what, ": " + os.strerror(errno) if errno else ""))
    sys.exit(125)
def quiet():  # never hold the job's output open
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):
        os.dup2(null, fd)
def own_addresses():  # the host's, read before leaving its network
    found, last = set(), None
    with open("/proc/net/fib_trie") as f:
        for line in f:
            line = line.strip()
            if line.startswith("|--"):
                last = line.split()[1]
            elif line == "/32 host LOCAL" and last:
                found.add(last + "/32")
    return sorted(found)
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
            if struct.unpack("H", reply[4:6])[0] == 2 and struct.unpack("i", reply[16:20])[0]:
                fail("route " + network, -struct.unpack("i", reply[16:20])[0])
uid, gid, parent = os.getuid(), os.getgid(), os.getpid()
if mode == "open":
    refused = third.split(",") + own_addresses()
    ready, ready_w = os.pipe()
    go_r, go = os.pipe()
    if os.fork() == 0:
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the job
        if os.getppid() != parent:
            os._exit(0)
        quiet()
        os.close(go)
        os.close(ready)
        if os.read(go_r, 1) != b"1":  # the namespace is made (or the helper gave up)
            os._exit(0)
        os.set_inheritable(ready_w, True)
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # outside the job's
        os.closerange(3, ready_w)
        os.closerange(ready_w + 1, 1 << 16)
        os.execv(arg, [arg, "--configure", "--mtu=65520", "--disable-host-loopback",
                       "--enable-seccomp", "--ready-fd=%d" % ready_w, str(parent), "tap0"])
    os.close(go_r)
    os.close(ready_w)
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
            fail("slirp4netns did not start", 0)
        os.close(ready)
        prohibit(refused)
        os.execvp(argv[0], argv)
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", int(third)))
    listener.listen(64)
except OSError as exc:
    fail(type(exc).__name__, exc.errno or 0)
slots = threading.BoundedSemaphore(64)  # connections at once; the proxy caps them too
if os.fork() == 0:
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the job
    if os.getppid() != parent:
        os._exit(0)
    quiet()
    os.closerange(3, listener.fileno())
    os.closerange(listener.fileno() + 1, 1 << 16)
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
    def relay(client):
        upstream = socket.socket(socket.AF_UNIX)
        try:
            upstream.connect(arg)
            back = threading.Thread(target=pipe, args=(upstream, client), daemon=True)
            back.start()
            pipe(client, upstream)
            back.join()
        except (OSError, RuntimeError):
            pass
        finally:
            client.close()
            upstream.close()
            slots.release()
    while True:
        client, _ = listener.accept()
        if not slots.acquire(blocking=False):
            client.close()
            continue
        try:
            threading.Thread(target=relay, args=(client,), daemon=True).start()
        except RuntimeError:  # no thread to be had: this connection goes
            client.close()
            slots.release()
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


def open_jail(python: str, slirp: str) -> list[str]:
    """What goes before an `open` job's prlimit and bubblewrap (ending in `--`)."""
    return [python, "-I", "-S", "-c", HELPER, "open", slirp, ",".join(REFUSED_RANGES), "--"]


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
