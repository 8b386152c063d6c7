"""Which proxy the CLI's requests go through (reporun.cli.proxy), as Go's tools decide."""

from __future__ import annotations

from urllib.parse import urlsplit

import pytest

from reporun.cli.proxy import proxy_for
from reporun.errors import ConfigError

PROXY = "http://proxy.corp:3128"


@pytest.mark.parametrize(
    ("url", "no_proxy", "through"),
    [
        ("http://reporun.corp:8000", "", True),
        ("http://127.0.0.1:8000", "", False),
        ("http://localhost:8000", "", False),
        ("http://[::1]:8000", "", False),
        ("http://[0:0:0:0:0:0:0:1]:8000", "", False),
        ("http://127.8.9.10:8000", "", False),
        ("http://reporun.corp", "*", False),
        ("http://reporun.corp", "corp", False),
        ("http://reporun.corp", ".corp", False),
        ("http://reporun.corp", "other.corp, reporun.corp:8000", False),
        ("http://notcorp", "corp", True),
        ("http://10.1.2.3", "10.0.0.0/8", False),
        ("http://10.1.2.3", "10.1.2.3", False),
        ("http://11.1.2.3", "10.0.0.0/8", True),
        ("http://3com.example", "3com.example", False),
    ],
)
def test_no_proxy(url: str, no_proxy: str, through: bool) -> None:
    env = {"HTTP_PROXY": PROXY, "NO_PROXY": no_proxy}
    assert (proxy_for(urlsplit(url), env) is not None) is through


def test_the_proxy_for_the_scheme_upper_case_first() -> None:
    https = urlsplit("https://reporun.corp")
    assert proxy_for(https, {"HTTP_PROXY": PROXY}) is None
    found = proxy_for(https, {"HTTPS_PROXY": "proxy.corp:3128", "https_proxy": "http://x:1"})
    assert found is not None and (found.hostname, found.port) == ("proxy.corp", 3128)
    lower = proxy_for(https, {"https_proxy": "http://x:1"})
    assert lower is not None and lower.hostname == "x"


def test_a_proxy_password_never_shows_in_an_error() -> None:
    target = urlsplit("https://reporun.corp")
    with pytest.raises(ConfigError) as refused:
        proxy_for(target, {"HTTPS_PROXY": "socks5://ann:hunter2@proxy.corp:1080"})
    assert "hunter2" not in refused.value.message and "ann" not in refused.value.message
    assert "proxy.corp:1080" in refused.value.message
    with pytest.raises(ConfigError) as bad_port:
        proxy_for(target, {"HTTPS_PROXY": "http://ann:hunter2@proxy.corp:99999"})
    assert "hunter2" not in bad_port.value.message
