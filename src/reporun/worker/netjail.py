"""The network namespace of a `registries` job: loopback only, and on it 127.0.0.1:3128, a
forwarder to the job's egress proxy (worker/egress.py), reached through a Unix socket in the
host's filesystem (which no network namespace stops).

`netjail_argv` gives the command line that goes in front of a job's prlimit and bubblewrap: a
small program (run as the job's uid, with the host's Python, before the sandbox exists) that
makes a user and network namespace of its own, brings its loopback up, forks the forwarder
(which dies with it) and then becomes the rest of the command line. bubblewrap then keeps that
network namespace (`--share-net`) and makes every other namespace new, as for any job.
"""

from __future__ import annotations

import os
import stat
import sys
from pathlib import Path

PROXY_PORT = 3128
PROXY_URL = f"http://127.0.0.1:{PROXY_PORT}"

# Standalone (it runs in /usr/bin/python3 -I -S, with nothing of reporun importable).
HELPER = r"""
import ctypes, fcntl, os, signal, socket, struct, sys, threading
path, port, argv = sys.argv[1], int(sys.argv[2]), sys.argv[4:]
libc = ctypes.CDLL(None, use_errno=True)
def fail(what):
    sys.stderr.write("reporun: the job's network could not be made: %s: %s\n"
                     % (what, os.strerror(ctypes.get_errno())))
    sys.exit(125)
uid, gid = os.getuid(), os.getgid()
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
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", port))
    listener.listen(64)
except OSError as exc:
    ctypes.set_errno(exc.errno or 0)
    fail(type(exc).__name__)
slots = threading.BoundedSemaphore(64)  # connections at once; the proxy caps them too
parent = os.getpid()
if os.fork() == 0:
    libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG: gone with the job
    if os.getppid() != parent:
        os._exit(0)
    null = os.open(os.devnull, os.O_RDWR)
    for fd in (0, 1, 2):  # never hold the job's output open
        os.dup2(null, fd)
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


def netjail_argv(python: str, proxy_socket: Path) -> list[str]:
    """What goes before the job's prlimit and bubblewrap (ending in `--`)."""
    return [python, "-I", "-S", "-c", HELPER, str(proxy_socket), str(PROXY_PORT), "--"]


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
