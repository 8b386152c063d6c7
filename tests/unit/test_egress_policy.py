"""The egress proxy's rules, address by address (the proxy itself is tested for real in
tests/acceptance/test_egress.py)."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import ssl

import pytest

from reporun.worker.egress import EgressPolicy, Refused, _client_hello, _parse_target


def test_hosts_ports_and_suffixes() -> None:
    policy = EgressPolicy.of(
        ["pypi.org", "*.pythonhosted.org", "mirror.corp:8080"], ["mirror.corp"]
    )
    assert policy.allows("pypi.org", 443) and policy.allows("pypi.org", 80)
    assert not policy.allows("pypi.org", 22)  # a name alone is the web's ports
    assert policy.allows("files.pythonhosted.org", 443)
    assert not policy.allows("pythonhosted.org", 443) and not policy.allows(
        "evilpythonhosted.org", 443
    )
    assert policy.allows("mirror.corp", 8080) and not policy.allows("mirror.corp", 443)
    assert not policy.allows("pypi.org.evil.test", 443)


@pytest.mark.parametrize(
    ("address", "reason"),
    [
        ("127.0.0.1", "loopback"),
        ("::1", "loopback"),
        ("::ffff:127.0.0.1", "loopback"),
        ("169.254.169.254", "link-local"),
        ("fe80::1", "link-local"),
        ("10.1.2.3", "private"),
        ("fd00:ec2::254", "private"),
        ("100.100.100.200", "private"),
        ("224.0.0.1", "not an address a registry has"),
        ("0.0.0.0", "not an address a registry has"),
    ],
)
def test_addresses_no_job_reaches(address: str, reason: str) -> None:
    policy = EgressPolicy.of(["x.test"], ["x.test"] if reason != "private" else [])
    with pytest.raises(Refused, match=reason):
        policy.check_address("x.test", ipaddress.ip_address(address))


def test_a_private_address_only_for_a_host_the_operator_names() -> None:
    inside = ipaddress.ip_address("10.1.2.3")
    EgressPolicy.of(["mirror.corp"], ["mirror.corp"]).check_address("mirror.corp", inside)
    EgressPolicy.of([]).check_address("pypi.org", ipaddress.ip_address("151.101.0.223"))


def test_targets() -> None:
    assert _parse_target("pypi.org:443", 443) == ("pypi.org", 443)
    assert _parse_target("PyPI.org.", 80) == ("pypi.org", 80)
    assert _parse_target("[2001:db8::1]:8443", 443) == ("2001:db8::1", 8443)
    for bad in ("", ":443", "pypi.org:0", "pypi.org:99999", "pypi.org:x"):
        with pytest.raises(ValueError):
            _parse_target(bad, 443)


async def test_the_server_name_of_a_real_client_hello() -> None:
    for name in ("pypi.org", None):
        tls = ssl.create_default_context().wrap_bio(
            ssl.MemoryBIO(), out := ssl.MemoryBIO(), server_hostname=name
        )
        with contextlib.suppress(ssl.SSLWantReadError):
            tls.do_handshake()
        hello = out.read()
        reader = asyncio.StreamReader()
        reader.feed_data(hello + b"after")
        assert await _client_hello(reader) == (hello, name)
    reader = asyncio.StreamReader()
    reader.feed_data(b"GET / HTTP/1.1\r\n\r\n")
    assert await _client_hello(reader) == (b"GET /", None)  # no TLS: no name
