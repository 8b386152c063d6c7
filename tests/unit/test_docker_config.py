"""What a new worker container copies from its template (as `docker inspect` shows it)."""

from __future__ import annotations

import pytest

from reporun.errors import ConfigError
from reporun.observer.docker import _endpoints, _host_config, docker_transport

NEEDED = ("systempaths=unconfined", "seccomp=unconfined")


def test_the_template_keeps_its_isolation_and_gets_only_missing_options() -> None:
    template = {
        "SecurityOpt": ["seccomp=/etc/reporun/bwrap.json", "no-new-privileges"],
        "Runtime": "runsc",
        "UsernsMode": "keep-id",
        "PortBindings": {"8000/tcp": [{"HostPort": "8000"}]},
        "Ulimits": [{"Name": "RLIMIT_NOFILE", "Soft": 1024, "Hard": 4096}],
        "RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 0},
        "Privileged": False,
        "ContainerIDFile": "",
    }
    config = _host_config(template, NEEDED)
    assert config["SecurityOpt"] == [
        "seccomp=/etc/reporun/bwrap.json",  # its own profile stays
        "no-new-privileges",
        "systempaths=unconfined",  # inspect does not show it: added
    ]
    assert config["Runtime"] == "runsc" and config["UsernsMode"] == "keep-id"
    assert "PortBindings" not in config  # a published port belongs to one replica
    assert config["Ulimits"] == [{"Name": "nofile", "Soft": 1024, "Hard": 4096}]
    assert config["RestartPolicy"]["Name"] == "on-failure"
    assert "Privileged" not in config and "ContainerIDFile" not in config


def test_a_template_without_options_gets_them_all() -> None:
    assert _host_config({}, NEEDED)["SecurityOpt"] == list(NEEDED)


def test_replicas_join_the_template_networks_under_the_service_name() -> None:
    template = {"NetworkSettings": {"Networks": {"proj_default": {"Aliases": ["x"]}}}}
    assert _endpoints(template, "worker") == {"proj_default": {"Aliases": ["worker"]}}


@pytest.mark.parametrize(
    ("host", "base"),
    [
        ("unix:///run/podman/podman.sock", "http://docker"),
        ("tcp://10.0.0.5:2375", "http://10.0.0.5:2375"),
    ],
)
def test_docker_host_forms(host: str, base: str) -> None:
    assert docker_transport(host)[1] == base


def test_a_docker_host_of_another_kind_is_one_line() -> None:
    with pytest.raises(ConfigError, match="DOCKER_HOST must be"):
        docker_transport("ssh://somewhere")
