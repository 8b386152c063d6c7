"""Image runtimes for real: an OCI image built locally, fetched by skopeo and unpacked by umoci
once, bound read-only as a job's `/` in bubblewrap, chosen by the request or reporun.toml."""

from __future__ import annotations

import logging
import secrets
from pathlib import Path

import pytest

from reporun.config import Settings
from reporun.runtimes import Catalog
from tests.harness.git import GitServer
from tests.harness.ports import free_port
from tests.harness.server import cli_env, reporun
from tests.integration.conftest import Api, WorkerFactory
from tests.oci_image import Member, add_layer, layout_of
from tests.runtime_image import ROOTS, RUNTIME_MARK

PROBE = (
    "cat /etc/reporun-runtime 2>/dev/null || echo no-runtime-mark\n"
    'echo "marker=${IMAGE_MARKER:-none}"\n'
    "command -v hello >/dev/null && hello\n"
    "test -e /usr/bin/bwrap && echo host-system || echo no-host-bwrap\n"
    "python3 -c 'print(6 * 7)'\n"
    "pwd\n"
)


@pytest.fixture
def settings(settings: Settings, runtime_image: str) -> Settings:
    return settings.model_copy(
        update={"runtimes": {"debian-py": runtime_image}, "runtimes_path": ROOTS}
    )


async def run(api: Api, git: GitServer, files: dict[str, str], **body: object) -> tuple[dict, str]:
    repo = git.make_repo(files, name=f"rt-{secrets.token_hex(4)}")
    job = await api.wait((await api.submit(repo=repo, **body))["id"], timeout=180)
    return job, (await api.log(job["id"])).decode(errors="replace")


async def test_a_job_runs_in_the_image_it_names(
    api: Api,
    git_server: GitServer,
    start_worker: WorkerFactory,
    caplog: pytest.LogCaptureFixture,
    fresh_roots: Path,
) -> None:
    caplog.set_level(logging.INFO, logger="reporun.worker")
    roots = fresh_roots  # a host that never prepared it
    start_worker(runtimes_path=roots)
    job, log = await run(api, git_server, {"run.sh": "#!/bin/sh\n" + PROBE}, runtime="debian-py")
    assert job["status"] == "succeeded", (job, log)
    assert RUNTIME_MARK in log and "marker=from-image" in log and "hello from the image" in log
    assert "no-host-bwrap" in log and "42" in log
    assert "/work" in log  # the job runs in its checkout
    assert job["runtime"] == job["runtime_requested"] == "debian-py"
    assert job["runtime_digest"].startswith("sha256:")

    # The second job reuses the root: prepared once, for its digest.
    again, log = await run(api, git_server, {"run.sh": "#!/bin/sh\n" + PROBE}, runtime="debian-py")
    assert again["status"] == "succeeded" and RUNTIME_MARK in log
    assert again["runtime_digest"] == job["runtime_digest"]
    prepared = [r for r in caplog.records if getattr(r, "action", "") == "runtime_prepared"]
    assert len(prepared) == 1
    assert (roots / job["runtime_digest"].replace(":", "-") / "ready").is_file()


async def test_reporun_toml_chooses_and_the_default_is_the_host(
    api: Api, git_server: GitServer, start_worker: WorkerFactory
) -> None:
    start_worker()
    chosen, log = await run(
        api,
        git_server,
        {"run.sh": "#!/bin/sh\n" + PROBE, "reporun.toml": 'runtime = "debian-py"\n'},
    )
    assert chosen["status"] == "succeeded" and RUNTIME_MARK in log, (chosen, log)
    assert (chosen["runtime_requested"], chosen["runtime"]) == (None, "debian-py")
    plain, log = await run(api, git_server, {"run.sh": "#!/bin/sh\n" + PROBE})
    assert plain["status"] == "succeeded" and "host-system" in log, (plain, log)
    assert "no-runtime-mark" in log and "marker=none" in log
    assert (plain["runtime"], plain["runtime_digest"]) == ("host", None)

    # A reporun.toml naming a runtime this server lacks: failed, saying where it came from.
    unknown, _ = await run(
        api,
        git_server,
        {"run.sh": "#!/bin/sh\necho ran\n", "reporun.toml": 'runtime = "cobol-85"\n'},
    )
    assert unknown["status"] == "failed"
    assert unknown["reason"].startswith("reporun.toml: runtime 'cobol-85' is not one of")


async def test_the_runtimes_are_listed_and_an_unknown_one_is_refused(api: Api) -> None:
    listed = await api.client.get("/v1/runtimes", headers=api.headers())
    assert listed.status_code == 200
    items = listed.json()["items"]
    assert [(i["name"], i["default"]) for i in items] == [("host", True), ("debian-py", False)]
    assert items[0]["image"] is None and items[1]["image"].startswith("oci-archive:")
    document = (await api.client.get("/openapi.json")).json()
    runtime = document["components"]["schemas"]["JobCreate"]["properties"]["runtime"]
    assert {"type": "string"} | {"enum": ["host", "debian-py"]} in [
        {k: v for k, v in b.items() if k in ("type", "enum")} for b in runtime["anyOf"]
    ]
    refused = await api.client.post(
        "/v1/jobs",
        json={"repo": "https://example.org/a.git", "runtime": "cobol-85"},
        headers=api.headers(),
    )
    assert refused.status_code == 422, refused.text
    body = refused.json()
    assert body["field"] == "runtime" and "host, debian-py" in body["detail"]
    malformed = await api.client.post(
        "/v1/jobs",
        json={"repo": "https://example.org/a.git", "runtime": "../etc"},
        headers=api.headers(),
    )
    assert malformed.status_code == 422
    assert [e["field"] for e in malformed.json()["errors"]] == ["runtime"]


def test_the_catalog_refuses_what_it_cannot_run() -> None:
    from reporun.errors import ConfigError
    from reporun.runtimes import parse_runtimes

    assert parse_runtimes("py=docker://python:3.12-slim, node=oci-archive:/srv/n.tar") == {
        "py": "docker://python:3.12-slim",
        "node": "oci-archive:/srv/n.tar",
    }
    for bad, message in (
        ("py", "is not name=image"),
        ("Py=docker://x", "not a runtime name"),
        ("host=docker://x", "the worker's own system"),
        ("py=/srv/image.tar", "must be an image reference"),
        ("py=docker://a,py=docker://b", "named twice"),
    ):
        with pytest.raises(ConfigError, match=message):
            parse_runtimes(bad)
    with pytest.raises(ConfigError, match="REPORUN_RUNTIME_DEFAULT"):
        Catalog({}, "py")
    with pytest.raises(ValueError, match="not a runtime name"):
        Settings(runtimes="Bad=docker://x")


def test_settings_take_runtimes_from_the_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("REPORUN_RUNTIMES", "py=docker://python:3.12-slim")
    monkeypatch.setenv("REPORUN_RUNTIME_DEFAULT", "py")
    settings = Settings(data_dir=tmp_path)
    assert settings.catalog.names() == ["host", "py"]
    assert settings.catalog.get(None).image == "docker://python:3.12-slim"


def test_doctor_reports_each_runtime(runtime_image: str, tmp_path: Path) -> None:
    """`reporun doctor` looks each image up and says whether its root is prepared here, and
    fails for an image that cannot be had; it prepares nothing."""
    env = cli_env(
        tmp_path / "data",
        free_port(),
        REPORUN_RUNTIMES=f"debian-py={runtime_image},gone=oci-archive:{tmp_path}/none.tar",
        REPORUN_RUNTIMES_DIR=str(tmp_path / "roots"),
    )
    result = reporun("doctor", env=env)
    assert "-     runtimes: host, debian-py, gone (default host)" in result.stdout, result.stdout
    assert "ok    runtime debian-py (sha256:" in result.stdout
    assert "not prepared yet" in result.stdout
    assert "FAIL  runtime gone: skopeo inspect failed" in result.stdout
    assert result.returncode == 1
    assert not (tmp_path / "roots").exists()


async def test_an_images_env_is_under_reporuns_and_the_jobs(
    api: Api,
    git_server: GitServer,
    start_worker: WorkerFactory,
    runtime_image: str,
    tmp_path: Path,
    fresh_roots: Path,
) -> None:
    """An image's Env reaches the job, except what no job may be given (the loader's and
    reporun's variables, HOME); the job's own variables win."""
    layout = tmp_path / "layout"
    layout_of(runtime_image, layout)
    add_layer(
        layout,
        [Member("etc/hosts", data=b"10.9.9.9 image-says\n")],  # the image's, not the host's
        env=["LD_PRELOAD=/opt/evil.so", "REPORUN_X=1", "HOME=/root", "GREETING=image", "WHO=image"],
    )
    start_worker(
        runtimes={"env-rt": f"oci:{layout}:image"},
        runtimes_path=fresh_roots,
    )
    script = (
        "#!/bin/sh\n"
        'echo "preload=${LD_PRELOAD:-unset} x=${REPORUN_X:-unset} home=$HOME"\n'
        'echo "greeting=$GREETING who=$WHO"\n'
        "grep -c image-says /etc/hosts || true\n"
    )
    job, log = await run(
        api,
        git_server,
        # Asked for in reporun.toml: the worker alone knows this runtime.
        {"run.sh": script, "reporun.toml": 'runtime = "env-rt"\n'},
        env={"WHO": "job"},
    )
    assert job["status"] == "succeeded", (job, log)
    assert "preload=unset x=unset home=/work" in log
    assert "greeting=image who=job" in log
    assert log.splitlines()[-1] == "1", log
