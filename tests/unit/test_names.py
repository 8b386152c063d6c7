"""The name server of network mode `open`: queries parsed strictly, names answered with what
this host resolves, less what the job may not reach."""

from __future__ import annotations

import struct
from ipaddress import IPv4Network
from pathlib import Path

import pytest

from reporun.worker.names import NOTIMP, NXDOMAIN, A, BadQuery, NameServer, parse_query
from reporun.worker.netjail import REFUSED_RANGES


def query(name: str, kind: int = A, ident: int = 0x1234) -> bytes:
    labels = b"".join(bytes([len(part)]) + part.encode() for part in name.split("."))
    return (
        struct.pack(">HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack(">HH", kind, 1)
    )


def parsed(response: bytes) -> tuple[int, int, list[str]]:
    """The response's id, code and addresses."""
    ident, flags, _, count = struct.unpack(">HHHH", response[:8])
    at = 12
    while response[at]:
        at += 1 + response[at]
    at += 5
    addresses = []
    for _ in range(count):
        assert response[at : at + 2] == b"\xc0\x0c"
        addresses.append(".".join(str(b) for b in response[at + 12 : at + 16]))
        at += 16
    return ident, flags & 0xF, addresses


def server(said: list[bytes]) -> NameServer:
    async def say(line: bytes) -> None:
        said.append(line)

    refused = [IPv4Network(network) for network in REFUSED_RANGES]
    return NameServer(refused, Path("/nonexistent"), say)


async def test_a_public_address_is_given_and_a_refused_one_is_not() -> None:
    said: list[bytes] = []
    names = server(said)
    response = await names.respond(query("198.51.100.10"))
    assert response is not None and parsed(response) == (0x1234, 0, ["198.51.100.10"])
    # localhost is 127.0.0.1 here: a name of the host's that the job may not reach is as
    # good as none, and the log does not say where it points.
    response = await names.respond(query("localhost", ident=7))
    assert response is not None and parsed(response) == (7, NXDOMAIN, [])
    assert said == [
        b"reporun: name localhost refused: it resolves only to addresses this job may not reach\n"
    ]


async def test_an_answer_fits_in_512_bytes() -> None:
    from reporun.worker.names import answer

    question = query("a" * 60 + "." + "b" * 60 + "." + "c" * 60 + "." + "d" * 60)[12:]
    full = answer(1, 0x0100, question, 0, [f"198.51.100.{i}" for i in range(40)])
    assert len(full) <= 512 and parsed(full)[2] == [f"198.51.100.{i}" for i in range(15)]


async def test_no_ipv6_no_other_types_and_unknown_names() -> None:
    names = server([])
    aaaa = await names.respond(query("localhost", 28))
    assert aaaa is not None and parsed(aaaa)[1:] == (0, [])
    txt = await names.respond(query("localhost", 16))  # none served: no record, no error
    assert txt is not None and parsed(txt)[1:] == (0, [])
    # Another opcode (here NOTIFY) is not done; a response is not answered.
    notify = query("localhost")
    notify = notify[:2] + bytes([notify[2] | 0x20]) + notify[3:]
    refused = await names.respond(notify)
    assert refused is not None and refused[3] & 0xF == NOTIMP and refused[2] & 0x78 == 0x20
    assert await names.respond(notify[:2] + b"\x81\x80" + notify[4:]) is None
    gone = await names.respond(query("no-such-host.invalid"))
    assert gone is not None and parsed(gone)[1] == NXDOMAIN


@pytest.mark.parametrize(
    "bad",
    [
        b"",
        b"\x00" * 11,
        query("a.b")[:-2],  # no class
        query("a.b").replace(b"\x01a", b"\x50a"),  # a label past the end
        query("a.b").replace(b"\x01a", b"\xc0\x0c"),  # compression in a question
        query("a\x00b.c"),  # a NUL inside a label (getaddrinfo would stop at it)
        query("a.b").replace(b"\x01a", b"\x03a.b"),  # a dot inside a label
        struct.pack(">HHHHHH", 1, 0x0100, 2, 0, 0, 0) + b"\x01a\x00\x00\x01\x00\x01",  # two
        struct.pack(">HHHHHH", 1, 0x0100, 1, 0, 0, 0) + b"\x01\xe9\x00\x00\x01\x00\x01",
    ],
)
def test_anything_but_one_plain_question_is_refused(bad: bytes) -> None:
    with pytest.raises(BadQuery):
        parse_query(bad)


async def test_a_bad_query_gets_formerr_or_nothing() -> None:
    names = server([])
    assert await names.respond(b"\x00\x01") is None
    response = await names.respond(struct.pack(">HHHHHH", 9, 0x0100, 2, 0, 0, 0))
    assert response is not None and struct.unpack(">HH", response[:4]) == (9, 0x8081)
