"""Repository URL policy: what a job may name, table-driven."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from reporun.errors import InvalidInput
from reporun.urlpolicy import UrlPolicy, check_addresses, is_local, parse_repo_url
from reporun.worker.checkout import Mirrors

SERVER = UrlPolicy.of(["https"])
CONFIGURED = UrlPolicy.of(["https", "git", "ssh"], trusted_hosts=["gitlab.internal", "10.0.0.5"])
ALLOW_LISTED = UrlPolicy.of(["https"], allowed_hosts=["github.com"])
LOCAL = UrlPolicy.of(["https", "http", "git", "ssh"], allow_local=True)


@pytest.mark.parametrize(
    ("policy", "url", "scheme", "host"),
    [
        (SERVER, "https://github.com/octo/hello.git", "https", "github.com"),
        (SERVER, "https://GitHub.com:443/octo/hello", "https", "github.com"),
        (CONFIGURED, "git://example.org/x.git", "git", "example.org"),
        (CONFIGURED, "ssh://git@example.org/x.git", "ssh", "example.org"),
        (CONFIGURED, "git@example.org:octo/x.git", "ssh", "example.org"),
        (CONFIGURED, "https://gitlab.internal/team/x.git", "https", "gitlab.internal"),
        (CONFIGURED, "https://10.0.0.5/team/x.git", "https", "10.0.0.5"),
        (ALLOW_LISTED, "https://github.com/a/b", "https", "github.com"),
        (LOCAL, "/home/me/project", "file", None),
        (LOCAL, "file:///home/me/project", "file", None),
        (LOCAL, "git://127.0.0.1:9418/x.git", "git", "127.0.0.1"),
        (LOCAL, "http://localhost:3000/x.git", "http", "localhost"),
    ],
)
def test_accepted(policy: UrlPolicy, url: str, scheme: str, host: str | None) -> None:
    parsed = parse_repo_url(url, policy)
    assert (parsed.scheme, parsed.host) == (scheme, host)


@pytest.mark.parametrize(
    ("policy", "url"),
    [
        (SERVER, ""),
        (SERVER, "   "),
        (SERVER, "file:///etc/passwd"),
        (SERVER, "/etc"),
        (SERVER, "ext::sh -c id"),
        (SERVER, "fd::3"),
        (SERVER, "-uhttps://x.org/a"),
        (SERVER, "--upload-pack=id"),
        (SERVER, "http://example.org/x.git"),
        (SERVER, "git://example.org/x.git"),
        (SERVER, "git@example.org:x.git"),
        (SERVER, "ftp://example.org/x.git"),
        (SERVER, "https://"),
        (SERVER, "https://example.org"),
        (SERVER, "https://example.org/"),
        (SERVER, "https://user:pass@example.org/x.git"),
        (SERVER, "https://127.0.0.1/x.git"),
        (SERVER, "https://localhost/x.git"),
        (SERVER, "https://sub.localhost/x.git"),
        (SERVER, "https://[::1]/x.git"),
        (SERVER, "https://[::ffff:127.0.0.1]/x.git"),
        (SERVER, "https://169.254.169.254/x"),
        (SERVER, "https://10.0.0.1/x.git"),
        (SERVER, "https://192.168.1.1/x.git"),
        (SERVER, "https://0.0.0.0/x.git"),
        (SERVER, "https://exa mple.org/x.git"),
        (SERVER, "https://example.org/x.git\n"),
        (SERVER, "https://-bad.org/x.git"),
        (SERVER, "https://example.org:99999/x.git"),
        (SERVER, "https://" + "a" * 3000 + ".org/x"),
        (ALLOW_LISTED, "https://gitlab.com/a/b"),
        (LOCAL, "relative/path"),
        (LOCAL, "file://otherhost/x"),
        (LOCAL, "https://10.0.0.1/x.git"),
    ],
)
def test_refused(policy: UrlPolicy, url: str) -> None:
    with pytest.raises(InvalidInput) as caught:
        parse_repo_url(url, policy)
    assert caught.value.field == "repo"


@pytest.mark.parametrize(
    ("host", "addresses", "ok"),
    [
        ("example.org", ["93.184.215.14"], True),
        ("example.org", ["93.184.215.14", "10.0.0.1"], False),
        ("rebind.example", ["127.0.0.1"], False),
        ("rebind.example", ["::1"], False),
        ("meta.example", ["169.254.169.254"], False),
        ("v6.example", ["2606:4700::1111"], True),
        ("v6.example", ["fd00::1"], False),
        ("gitlab.internal", ["10.0.0.7"], True),  # trusted by the operator
    ],
)
def test_addresses_after_dns(host: str, addresses: list[str], ok: bool) -> None:
    if ok:
        check_addresses(host, addresses, CONFIGURED)
    else:
        with pytest.raises(InvalidInput):
            check_addresses(host, addresses, CONFIGURED)


def test_git_protocols_follow_the_policy() -> None:
    assert SERVER.git_protocols == {"https"}
    assert LOCAL.git_protocols == {"https", "http", "git", "ssh", "file"}


LOCAL_TRUSTING = UrlPolicy.of(["https", "git"], trusted_hosts=["127.0.0.1"], allow_local=True)


@pytest.mark.parametrize(
    ("policy", "url", "addresses", "local"),
    [
        (LOCAL, "/home/me/project", [], True),
        (LOCAL, "file:///etc", [], True),
        (LOCAL, "git://127.0.0.1:9418/x.git", ["127.0.0.1"], True),
        (LOCAL, "https://[::1]/x.git", [], True),
        (LOCAL, "http://localhost:3000/x.git", [], True),
        (LOCAL, "https://git.example.org/x.git", ["127.0.0.1"], True),  # resolves to loopback
        (LOCAL, "https://git.example.org/x.git", ["93.184.216.34"], False),
        (LOCAL, "https://git.example.org/x.git", [], False),  # does not resolve (yet)
        (LOCAL_TRUSTING, "git://127.0.0.1/x.git", ["127.0.0.1"], False),  # the operator's choice
    ],
)
def test_what_only_the_local_relaxation_admits(
    policy: UrlPolicy, url: str, addresses: list[str], local: bool
) -> None:
    assert is_local(parse_repo_url(url, policy), addresses, policy) is local


@pytest.mark.parametrize(
    ("url", "addresses"),
    [
        ("/home/me/project", []),
        ("file:///etc", []),
        ("git://127.0.0.1:9418/x.git", []),
        ("http://localhost:3000/x.git", []),
        ("https://git.example.org/x.git", ["127.0.0.1"]),  # resolves to loopback at clone time
        ("https://git.example.org/x.git", ["::1"]),
    ],
)
def test_the_worker_checks_a_job_without_local_sources_as_a_cluster_does(
    url: str, addresses: list[str]
) -> None:
    mirrors = Mirrors(Path("/nonexistent"), LOCAL, timeout=1)
    allowed = mirrors.policy_for(local_sources=True)
    assert allowed == LOCAL
    parsed = parse_repo_url(url, allowed)
    if parsed.host is not None:
        check_addresses(parsed.host, addresses, allowed)
    strict = mirrors.policy_for(local_sources=False)
    assert strict == dataclasses.replace(LOCAL, allow_local=False)
    assert "file" not in strict.git_protocols
    with pytest.raises(InvalidInput) as refused:
        parsed = parse_repo_url(url, strict)
        check_addresses(parsed.host or "", addresses, strict)
    assert refused.value.field == "repo"
    # A server that allows no local sources allows none to any job.
    assert Mirrors(Path("/nonexistent"), SERVER, timeout=1).policy_for(local_sources=True) == SERVER
