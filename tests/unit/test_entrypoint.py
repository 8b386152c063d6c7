"""Which command runs, first match wins; the workspace's files are looked at without links."""

from __future__ import annotations

from pathlib import Path

import pytest

from reporun.errors import NotOffered
from reporun.jobs import Limits
from reporun.worker.entrypoint import BadRepoConfig, NoEntryPoint, limits_with, pick_entry


def workspace(tmp_path: Path, files: dict[str, str], executable: tuple[str, ...] = ()) -> Path:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        if name in executable:
            (tmp_path / name).chmod(0o755)
    return tmp_path


@pytest.mark.parametrize(
    ("files", "executable", "requested", "command"),
    [
        ({"run.sh": "", "Makefile": "", "main.py": ""}, ("run.sh",), "pytest -q", "pytest -q"),
        ({"reporun.toml": 'command = "tox"', "run.sh": ""}, ("run.sh",), None, "tox"),
        ({"run.sh": "", "Makefile": "", "main.py": ""}, ("run.sh",), None, "./run.sh"),
        ({"run.sh": "", "Makefile": ""}, (), None, "make"),
        ({"main.py": ""}, (), None, "python3 main.py"),
        ({"reporun.toml": "timeout = 5", "main.py": ""}, (), None, "python3 main.py"),
    ],
)
def test_first_match_wins(
    tmp_path: Path,
    files: dict[str, str],
    executable: tuple[str, ...],
    requested: str | None,
    command: str,
) -> None:
    assert pick_entry(workspace(tmp_path, files, executable), requested).command == command


def test_run_sh_not_executable_says_so(tmp_path: Path) -> None:
    with pytest.raises(NoEntryPoint) as caught:
        pick_entry(workspace(tmp_path, {"run.sh": "#!/bin/sh\necho hi\n"}), None)
    assert caught.value.message == (
        "no entry point: run.sh exists but is not executable (chmod +x run.sh, then commit it)"
    )


def test_toml_timeout_and_network(tmp_path: Path) -> None:
    toml = 'timeout = 9\nnetwork = "registries"\n'
    entry = pick_entry(workspace(tmp_path, {"reporun.toml": toml, "main.py": ""}), None)
    assert (entry.timeout, entry.network) == (9, "registries")
    limits = Limits(timeout=600, memory=1 << 30, processes=64, log=1 << 20, disk=1 << 30)
    chosen = limits_with(limits, entry, timeout_max=3600, may_open=False)
    assert (chosen.timeout, chosen.network) == (9, "registries")
    # What the request set stays.
    asked = limits.model_copy(update={"network": "none", "network_set": True})
    assert limits_with(asked, entry, timeout_max=3600, may_open=False).network == "none"
    other = tmp_path / "other"
    other.mkdir()
    wants_open = pick_entry(
        workspace(other, {"reporun.toml": 'network = "open"\n', "main.py": ""}), None
    )
    # `open` only for a job whose owner the server allowed it at submission.
    with pytest.raises(NotOffered, match=r"^reporun\.toml: network 'open' is not allowed to"):
        limits_with(limits, wants_open, timeout_max=3600, may_open=False)
    assert limits_with(limits, wants_open, timeout_max=3600, may_open=True).network == "open"
    # A request's own `open` (checked at submission) is checked again where it runs.
    opened = limits.model_copy(update={"network": "open", "network_set": True})
    with pytest.raises(NotOffered, match=r"^network 'open' is not allowed to"):
        limits_with(opened, entry, timeout_max=3600, may_open=False)


def test_nothing_to_run(tmp_path: Path) -> None:
    with pytest.raises(NoEntryPoint, match="no entry point"):
        pick_entry(workspace(tmp_path, {"README.md": "hi"}), None)


@pytest.mark.parametrize(
    "toml",
    [
        "command = 3",
        'command = ""',
        "timeout = -1",
        "timeout = true",
        'network = "yes"',
        "network = true",
        "not toml [",
    ],
)
def test_bad_toml_is_the_jobs_fault(tmp_path: Path, toml: str) -> None:
    with pytest.raises(BadRepoConfig, match=r"reporun\.toml"):
        pick_entry(workspace(tmp_path, {"reporun.toml": toml, "main.py": ""}), None)


def test_links_are_not_followed(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.toml").write_text('command = "leak"')
    (outside / "script").write_text("#!/bin/sh\n")
    (outside / "script").chmod(0o755)
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "reporun.toml").symlink_to(outside / "secret.toml")
    (ws / "run.sh").symlink_to(outside / "script")
    (ws / "main.py").write_text("")
    assert pick_entry(ws, None).command == "python3 main.py"


def test_huge_toml_is_refused(tmp_path: Path) -> None:
    with pytest.raises(BadRepoConfig, match="larger"):
        pick_entry(workspace(tmp_path, {"reporun.toml": "# " + "x" * 70_000}), None)


def test_deeply_nested_toml_is_the_jobs_fault(tmp_path: Path) -> None:
    with pytest.raises(BadRepoConfig, match="nested"):
        pick_entry(workspace(tmp_path, {"reporun.toml": "a = " + "[" * 20_000}), None)
