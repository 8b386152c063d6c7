"""The network namespace of a job that has a network: `registries` and `open`.

`registries`: loopback only, and on it 127.0.0.1:3128, a forwarder to the job's egress proxy
(worker/egress.py), reached through a Unix socket in the host's filesystem (which no network
namespace stops).

`open`: besides loopback a tap device, behind which slirp4netns (running outside, as the job's
uid, with no way to the host's loopback and its DNS off) makes the job's connections from the
worker host as its own. Set before the job starts and out of its reach (it runs in a user
namespace below the one that owns the network): routes of type prohibit, which fail a
connection to a refused address at once, and netfilter rules (by iptables-restore, given
CAP_NET_ADMIN for that alone), which hold whatever a socket asks (a device of its own, an
interface for multicast): only unicast to an address not refused leaves, and no IPv6. Refused
are every private, shared, link-local, loopback, multicast and reserved range, the operator's
additions and each of the host's own addresses. On 127.0.0.1:53 a relay passes the job's DNS
queries to the worker's name server (worker/names.py).

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
import shutil
import socket
import stat
import struct
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network
from pathlib import Path

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"
# What an `open` job's /etc/resolv.conf says: the helper's relay to the worker's name server
# (worker/names.py), never the host's resolver.
OPEN_RESOLV_CONF = b"nameserver 127.0.0.1\n"
TUN = Path("/dev/net/tun")
# A local route (an address of the host's), or the route to a network it is on.
HOST_ROUTE = re.compile(r"^/(\d+) (?:host LOCAL|link UNICAST)$")
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
import ctypes, fcntl, os, resource, select, signal, socket, struct, subprocess, sys, threading
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
class Caps(ctypes.Structure):  # one half of capget/capset's data (version 3)
    _fields_ = [("effective", ctypes.c_uint32), ("permitted", ctypes.c_uint32),
                ("inheritable", ctypes.c_uint32)]
def capabilities(inheritable=0, clear=False):  # of this process, in its user namespace
    head, data = struct.pack("Ii", 0x20080522, 0), (Caps * 2)()
    if libc.capget(head, data) != 0:
        fail("capget")
    data[0].inheritable, data[1].inheritable = inheritable, 0
    if clear:
        for half in data:
            half.effective = half.permitted = 0
    if libc.capset(head, data) != 0:
        fail("capset")
def harden():  # nothing gained by exec: no bounding set, no new privileges
    for cap in range(64):
        libc.prctl(24, cap, 0, 0, 0)  # PR_CAPBSET_DROP (past the last one: EINVAL)
    if libc.prctl(38, 1, 0, 0, 0) != 0:  # PR_SET_NO_NEW_PRIVS
        fail("no_new_privs")
def netfilter(tool, rules):  # the rules, by iptables-restore given CAP_NET_ADMIN (12) only
    capabilities(inheritable=1 << 12)
    if libc.prctl(47, 2, 12, 0, 0) != 0:  # PR_CAP_AMBIENT_RAISE
        fail("prctl")
    try:
        done = subprocess.run([tool], input=rules.encode(), env={},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        fail(tool + ": " + type(exc).__name__, 0)
    finally:
        libc.prctl(47, 4, 0, 0, 0)  # PR_CAP_AMBIENT_CLEAR_ALL
        capabilities()
    if done.returncode != 0:
        fail("%s: %s" % (tool, done.stderr.decode(errors="replace").strip()[-300:]), 0)
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
    slirp, networks, restore, restore6 = extra[0], extra[1].split(","), extra[2], extra[3]
    # What leaves by the tap, whatever the socket asks (a device, an interface for multicast):
    # unicast to an address not refused; no IPv6 at all.
    rules = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
             "-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -m addrtype ! --dst-type UNICAST -j DROP\n"
             + "".join("-A OUTPUT -d %s -j REJECT --reject-with icmp-admin-prohibited\n" % n
                       for n in networks)
             + "COMMIT\n")
    rules6 = ("*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\n"
              "-A OUTPUT -o lo -j ACCEPT\n-A OUTPUT -j DROP\nCOMMIT\n")
    ready, ready_w = os.pipe()
    said, said_w = os.pipe()  # what slirp4netns says, should it fail
    go_r, go = os.pipe()
    if child((ready_w, said_w, go_r)):
        os.dup2(said_w, 2)
        os.close(said_w)
        if os.read(go_r, 1) != b"1":  # the namespace is made (or the helper gave up)
            os._exit(0)
        os.close(go_r)
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))  # outside the job's
        hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
        files = 4096 if hard == resource.RLIM_INFINITY else min(4096, hard)
        resource.setrlimit(resource.RLIMIT_NOFILE, (files, files))
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
        prohibit(networks)  # a refused address fails at once, with EACCES
        netfilter(restore, rules)
        netfilter(restore6, rules6)
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
    if len(data) < 12:
        return
    if data[2] & 0x80:  # a response: none is answered
        return
    try:
        answer = relay(data)
        if not answer:  # the worker gives none
            return
    except (OSError, struct.error):  # no answer from the worker: SERVFAIL, not silence
        answer = data[:2] + b"\x81\x82" + data[4:6] + b"\0" * 6 + data[12:]
    try:
        listener.sendto(answer, peer)
    except OSError:
        pass
if child((listener.fileno(),)):
    # It only relays bytes: none of the network's capabilities, nothing to trace it by.
    harden()
    libc.prctl(4, 0, 0, 0, 0)  # PR_SET_DUMPABLE
    capabilities(clear=True)
    while True:
        if mode == "open":
            data, peer = listener.recvfrom(4096)
            spawn(query, data, peer)
        else:
            client, _ = listener.accept()
            if not spawn(connection, client):
                client.close()
listener.close()
harden()
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


@dataclass(frozen=True, slots=True)
class OpenTools:
    """The programs an `open` job's network is made with (absolute paths)."""

    slirp: str
    restore: str  # iptables-restore
    restore6: str  # ip6tables-restore

    @classmethod
    def find(cls) -> OpenTools | None:
        # The nf_tables ones: iptables-legacy cannot work in a user namespace of the job's.
        names = ("slirp4netns", "iptables-nft-restore", "ip6tables-nft-restore")
        slirp, restore, restore6 = (shutil.which(name) for name in names)
        if slirp is None or restore is None or restore6 is None:
            return None
        return cls(slirp, restore, restore6)


def open_jail(
    python: str, names_socket: Path, tools: OpenTools, refused: Sequence[IPv4Network]
) -> list[str]:
    """What goes before an `open` job's prlimit and bubblewrap (ending in `--`): its network
    behind slirp4netns, with routes and netfilter rules refusing `refused` (and every packet
    that is not unicast, and IPv6), and its names from the worker's name server on
    `names_socket`."""
    networks = ",".join(str(network) for network in refused)
    return [
        *(python, "-I", "-S", "-c", HELPER, "open", str(names_socket), tools.slirp, networks),
        *(tools.restore, tools.restore6, "--"),
    ]


def host_networks() -> list[IPv4Network]:
    """This host's own IPv4 addresses and local routes, the networks it is on and its
    gateways (/proc/net/fib_trie, /proc/net/route): what an `open` job must not reach
    through slirp4netns, which connects from here."""
    found: set[IPv4Network] = set()
    last = None
    with open("/proc/net/fib_trie") as trie:
        for line in trie:
            line = line.strip()
            if line.startswith("|--"):
                last = line.split()[1]
            elif last and (route := HOST_ROUTE.match(line)):
                found.add(IPv4Network(f"{last}/{route[1]}", strict=False))
    with open("/proc/net/route") as routes:
        for line in list(routes)[1:]:
            fields = line.split()
            if len(fields) > 2 and fields[2] != "00000000":
                gateway = socket.inet_ntoa(struct.pack("<I", int(fields[2], 16)))
                found.add(IPv4Network(f"{gateway}/32"))
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
