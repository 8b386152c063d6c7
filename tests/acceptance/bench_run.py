"""Running `bench/run.py` as `make bench` does, bounded: on a timeout its whole process group
(the servers and workers it started) is killed, so nothing outlives the test."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

from tests.acceptance.conftest import ROOT
from tests.harness.processes import require_tool

# The smallest sizes that still take every path of each measurement once; the CLI's start-up
# has a smoke test of its own (test_bench_cli.py, with --only cli).
SMOKE = (
    "--quick",
    "--no-cli",
    # The runtimes section has its own smoke test (test_bench_runtimes.py, --only runtimes).
    "--no-runtimes",
    *("--jobs", "4", "--latency-jobs", "3", "--posts", "16"),
    *("--pg-jobs", "6", "--pg-load-jobs", "30", "--pg-rows", "2000", "--pg-requests", "20"),
)


# Below the tests' own timeout (240 s), so the bench's is the one that fires.
def quick_bench(output: Path, *args: str, timeout: float = 200) -> str:
    require_tool("bwrap", "the job sandbox")
    process = subprocess.Popen(
        [sys.executable, str(ROOT / "bench" / "run.py"), *SMOKE, "--output", str(output), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        out, err = process.communicate()
        message = f"the bench took over {timeout} s:\n{out[-2000:]}{err[-2000:]}"
        raise AssertionError(message) from None
    finally:
        # However the test ends (pytest's own timeout too), nothing the bench started stays.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    assert process.returncode == 0, out[-2000:] + err[-2000:]
    assert json.loads(output.read_text())
    return out
