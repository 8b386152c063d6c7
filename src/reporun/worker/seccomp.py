"""The seccomp filter every job runs under (bubblewrap's `--seccomp`): sockets of the families
a job's work needs only, Unix, IPv4, IPv6 and netlink. Any other family (vsock, which reaches
a virtual machine's host past every network namespace; the kernel's crypto sockets; Bluetooth,
XDP ...) fails with EAFNOSUPPORT, as if the kernel had none. 32-bit calls are checked too, and
their `socketcall`, whose family the filter cannot read, is refused.

A classic BPF program, written here instruction by instruction (no libseccomp).
"""

from __future__ import annotations

import errno
import platform
import socket
import struct

ALLOWED_FAMILIES = (socket.AF_UNIX, socket.AF_INET, socket.AF_INET6, socket.AF_NETLINK)

_LD_ABS, _JEQ, _RET = 0x20, 0x15, 0x06  # BPF_LD|BPF_W|BPF_ABS, BPF_JMP|BPF_JEQ|BPF_K, BPF_RET
_ALLOW = 0x7FFF0000  # SECCOMP_RET_ALLOW
_REFUSE = 0x00050000 | errno.EAFNOSUPPORT  # SECCOMP_RET_ERRNO
_ARCH, _NR, _ARG0 = 4, 0, 16  # offsets in struct seccomp_data (args[0]'s low half)

# Per machine: (its audit arch, the socket syscalls), and its 32-bit compat ABI's
# (audit arch, socket syscalls, socketcall or None).
_MACHINES = {
    "x86_64": ((0xC000003E, (41, 0x40000000 | 41)), (0x40000003, (359,), 102)),
    "aarch64": ((0xC00000B7, (198,)), (0x40000028, (281,), None)),
}


def _assemble(program: list[tuple[int, str | None, str | None, int] | str]) -> bytes:
    """Instructions (code, label if true, label if false, k) and labels, as struct
    sock_filter."""
    at: dict[str, int] = {}
    steps: list[tuple[int, str | None, str | None, int]] = []
    for item in program:
        if isinstance(item, str):
            at[item] = len(steps)
        else:
            steps.append(item)
    out = b""
    for i, (code, true, false, k) in enumerate(steps):
        jt = at[true] - i - 1 if true else 0
        jf = at[false] - i - 1 if false else 0
        out += struct.pack("=HBBI", code, jt, jf, k)
    return out


def socket_filter(machine: str | None = None) -> bytes | None:
    """The filter for this machine (None: one reporun does not know, no filter)."""
    known = _MACHINES.get(machine or platform.machine())
    if known is None:
        return None
    (arch, calls), (compat, compat_calls, socketcall) = known
    program: list[tuple[int, str | None, str | None, int] | str] = [
        (_LD_ABS, None, None, _ARCH),
        (_JEQ, None, "compat", arch),
        (_LD_ABS, None, None, _NR),
        *((_JEQ, "family", None, call) for call in calls),
        (_RET, None, None, _ALLOW),
        "compat",
        (_JEQ, None, "allow", compat),
        (_LD_ABS, None, None, _NR),
        *((_JEQ, "family", None, call) for call in compat_calls),
        *([(_JEQ, "refuse", None, socketcall)] if socketcall is not None else []),
        (_RET, None, None, _ALLOW),
        "family",
        (_LD_ABS, None, None, _ARG0),
        *((_JEQ, "allow", None, family) for family in ALLOWED_FAMILIES),
        "refuse",
        (_RET, None, None, _REFUSE),
        "allow",
        (_RET, None, None, _ALLOW),
    ]
    return _assemble(program)
