"""Which proxy a request of the CLI goes through: HTTPS_PROXY / HTTP_PROXY and NO_PROXY, read
as Go's tools (gh, kubectl) read them. Loopback never goes through a proxy."""

from __future__ import annotations

import base64
from collections.abc import Mapping
from urllib.parse import SplitResult, unquote, urlsplit

from reporun.errors import ConfigError
from reporun.paths import is_loopback_host


def parse_origin(url: str, what: str) -> SplitResult:
    """An http:// or https:// URL, or ConfigError naming `what` (never its password)."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  # raises on a bad port
    except ValueError as exc:
        raise ConfigError(f"{what} is not a URL: {redact(url)!r} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(f"{what} must be an http:// or https:// URL, not {redact(url)!r}")
    return parts


def redact(url: str) -> str:
    """`url` without the user and password it may carry (a proxy's)."""
    scheme, sep, rest = url.rpartition("://")
    authority, slash, path = rest.partition("/")
    if "@" in authority:
        authority = "***@" + authority.rpartition("@")[2]
    return f"{scheme}{sep}{authority}{slash}{path}"


def _bypass(host: str, no_proxy: str) -> bool:
    """NO_PROXY as Go reads it: `*`, host names (a suffix match: `example.com` covers
    `a.example.com`, a port ignored), IP addresses and CIDR ranges; loopback always."""
    if is_loopback_host(host):
        return True
    for entry in (e.strip().lower() for e in no_proxy.split(",")):
        if entry == "*" or (entry and _in_range(host, entry)):
            return True
        name = entry.rpartition(":")[0] if entry.count(":") == 1 else entry
        name = name.removeprefix("*").removeprefix(".")
        if name and (host == name or host.endswith("." + name)):
            return True
    return False


def _in_range(host: str, entry: str) -> bool:
    import ipaddress

    try:
        return ipaddress.ip_address(host) in ipaddress.ip_network(entry.strip("[]"), strict=False)
    except ValueError:
        return False


def proxy_for(parts: SplitResult, environ: Mapping[str, str]) -> SplitResult | None:
    """The proxy a request to `parts` goes through, from HTTPS_PROXY or HTTP_PROXY (upper
    case first, then lower), or None."""

    def env(name: str) -> str:
        return environ.get(name) or environ.get(name.lower()) or ""

    proxy = env("HTTPS_PROXY" if parts.scheme == "https" else "HTTP_PROXY")
    if not proxy or _bypass((parts.hostname or "").lower(), env("NO_PROXY")):
        return None
    if "://" not in proxy:
        proxy = "http://" + proxy
    if not proxy.startswith("http://"):
        raise ConfigError(f"only http:// proxies are supported, not {redact(proxy)!r}")
    return parse_origin(proxy, "the proxy setting")


def basic_auth(proxy: SplitResult) -> str:
    user = f"{unquote(proxy.username or '')}:{unquote(proxy.password or '')}"
    return "Basic " + base64.b64encode(user.encode()).decode()
