"""Which repository URLs a job may name: pure checks, plus the address check after DNS, and
the one resolver the API and the worker both ask."""

from __future__ import annotations

import asyncio
import ipaddress
import re
import socket
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePosixPath
from urllib.parse import urlsplit

from reporun.errors import InvalidInput

MAX_URL_LENGTH = 2048
DNS_TIMEOUT = 5.0
KNOWN_SCHEMES = frozenset({"https", "http", "git", "ssh", "file"})
_SCP_LIKE = re.compile(r"^(?P<user>[A-Za-z0-9._-]+@)?(?P<host>[A-Za-z0-9.-]+):(?P<path>[^/].*)$")
_TRANSPORT_SYNTAX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_HOSTNAME = re.compile(
    r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}[A-Za-z0-9])?)*\.?$"
)


@dataclass(frozen=True, slots=True)
class UrlPolicy:
    allowed_schemes: frozenset[str]
    allowed_hosts: frozenset[str]
    trusted_hosts: frozenset[str]
    allow_local: bool

    @classmethod
    def of(
        cls,
        allowed_schemes: Iterable[str],
        allowed_hosts: Iterable[str] = (),
        trusted_hosts: Iterable[str] = (),
        allow_local: bool = False,
    ) -> UrlPolicy:
        return cls(
            frozenset(s.lower() for s in allowed_schemes),
            frozenset(h.lower() for h in allowed_hosts),
            frozenset(h.lower() for h in trusted_hosts),
            allow_local,
        )

    @property
    def git_protocols(self) -> frozenset[str]:
        """The git transports a clone may use (git's protocol.allow)."""
        return self.allowed_schemes | ({"file"} if self.allow_local else frozenset())


@dataclass(frozen=True, slots=True)
class RepoUrl:
    url: str
    scheme: str  # https, http, git, ssh or file
    host: str | None  # None for local paths


class Unresolvable(InvalidInput):
    """The repository's host does not resolve."""


def _bad(message: str) -> InvalidInput:
    return InvalidInput(message, field="repo")


def parse_repo_url(url: str, policy: UrlPolicy) -> RepoUrl:
    """Check a repository URL against the policy without touching the network."""
    if not url or not url.strip():
        raise _bad("repo must not be empty")
    if len(url) > MAX_URL_LENGTH:
        raise _bad(f"repo is longer than {MAX_URL_LENGTH} characters")
    if any(ord(c) < 0x21 or ord(c) == 0x7F or 0xD800 <= ord(c) <= 0xDFFF for c in url):
        raise _bad("repo must not contain spaces, control characters or lone surrogates")
    if url.startswith("-"):
        raise _bad("repo must not start with '-'")
    if _TRANSPORT_SYNTAX.match(url):
        raise _bad("repo uses git's <transport>:: syntax, which is never allowed")

    if url.startswith("/"):
        if not policy.allow_local:
            raise _bad("local paths are accepted only by `reporun serve`")
        return RepoUrl(_normalize_path(url), "file", None)

    if "://" not in url:
        scp = _SCP_LIKE.match(url)
        if scp is None:
            raise _bad("repo must be a URL such as https://host/owner/name.git")
        return _check_host("ssh", scp.group("host"), url, policy)

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in KNOWN_SCHEMES:
        raise _bad(f"repo scheme {scheme!r} is not supported")
    if scheme == "file":
        if not policy.allow_local:
            raise _bad("file:// URLs are accepted only by `reporun serve`")
        if parts.netloc not in ("", "localhost"):
            raise _bad("file:// URLs must name a local path")
        return RepoUrl("file://" + _normalize_path(parts.path), "file", None)
    if scheme not in policy.allowed_schemes:
        allowed = ", ".join(sorted(policy.allowed_schemes))
        raise _bad(f"repo scheme {scheme!r} is not allowed here (allowed: {allowed})")
    if parts.username and scheme in ("https", "http"):
        raise _bad("repo must not carry credentials")
    try:
        host = parts.hostname
        _ = parts.port
    except ValueError as exc:
        raise _bad(f"repo has an invalid host or port: {exc}") from None
    if not host:
        raise _bad("repo must name a host")
    if not parts.path or parts.path == "/":
        raise _bad("repo must name a repository path")
    return _check_host(scheme, host, url, policy)


def _normalize_path(path: str) -> str:
    if not path.startswith("/"):
        raise _bad("local repository paths must be absolute")
    if "\\" in path:
        raise _bad("repo path must not contain backslashes")
    return str(PurePosixPath(path))


def _check_host(scheme: str, host: str, url: str, policy: UrlPolicy) -> RepoUrl:
    host = host.lower().rstrip(".")
    if scheme not in policy.allowed_schemes:
        raise _bad(f"repo scheme {scheme!r} is not allowed here")
    if host.startswith("-"):
        raise _bad("repo host must not start with '-'")
    literal = _ip(host)
    if literal is None and not _HOSTNAME.match(host):
        raise _bad(f"repo host {host!r} is not a valid host name")
    if policy.allowed_hosts and host not in policy.allowed_hosts:
        raise _bad(f"repo host {host!r} is not on this server's allow-list")
    if host == "localhost" or host.endswith(".localhost"):
        check_addresses(host, ["127.0.0.1"], policy)
    elif literal is not None:
        check_addresses(host, [str(literal)], policy)
    return RepoUrl(url, scheme, host)


def check_addresses(host: str, addresses: Iterable[str], policy: UrlPolicy) -> None:
    """Refuse a host that resolves to a loopback, link-local or private address."""
    if host in policy.trusted_hosts:
        return
    for text in addresses:
        address = _ip(text)
        if address is None:
            continue
        if address.is_loopback and policy.allow_local:
            continue
        if not address.is_global:
            raise _bad(
                f"repo host {host!r} resolves to a non-public address ({address}); "
                "the operator must list it in REPORUN_TRUSTED_HOSTS"
            )


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        address = ipaddress.ip_address(text.strip("[]").split("%")[0])
    except ValueError:
        return None
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        return address.ipv4_mapped
    return address


async def resolve(host: str, *, timeout: float = DNS_TIMEOUT) -> list[str]:
    """The addresses `host` resolves to now; Unresolvable when it does not (in time)."""
    loop = asyncio.get_running_loop()
    try:
        infos = await asyncio.wait_for(
            loop.getaddrinfo(host, None, type=socket.SOCK_STREAM), timeout
        )
    except (OSError, TimeoutError) as exc:
        reason = str(exc) or f"no answer in {timeout:.0f} s"
        raise Unresolvable(f"cannot resolve host {host!r}: {reason}", field="repo") from None
    return [str(info[4][0]) for info in infos]


def is_local(url: RepoUrl, addresses: Iterable[str], policy: UrlPolicy) -> bool:
    """Whether only `allow_local` admits the URL: a local path or file://, or a host that is or
    resolves to a loopback address (unless the operator trusts it). Those are the operator's:
    `reporun serve` takes them from admin tokens only."""
    if url.host is None:
        return True
    if url.host in policy.trusted_hosts:
        return False
    candidates = ["127.0.0.1"] if url.host == "localhost" or url.host.endswith(".localhost") else []
    return any(
        address is not None and address.is_loopback
        for address in map(_ip, [url.host, *candidates, *addresses])
    )


async def check_resolved(url: RepoUrl, policy: UrlPolicy) -> None:
    """Refuse a host that resolves to a non-public address (unless trusted); Unresolvable when
    it does not resolve. Local paths have no host to check."""
    if url.host is not None and url.host not in policy.trusted_hosts:
        check_addresses(url.host, await resolve(url.host), policy)
