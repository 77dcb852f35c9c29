"""The test run fails when any test skips: a skip in CI is a failure nobody reads."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SKIPPING = """
import pytest

def test_skips_at_run_time():
    pytest.skip("no such tool")

@pytest.mark.skipif(True, reason="not here")
def test_skips_by_marker():
    pass

def test_passes():
    pass
"""


# In one process, and in two as scripts/test runs the suite (pytest-xdist).
@pytest.mark.parametrize("workers", [[], ["-n", "2"]], ids=["one-process", "xdist"])
def test_a_skip_fails_the_run(tmp_path: Path, workers: list[str]) -> None:
    (tmp_path / "test_skipping.py").write_text(SKIPPING)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.no_skips", "-p", "no:cacheprovider",
         *workers, "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout
    assert "no such tool" in done.stdout and "not here" in done.stdout, done.stdout
    assert "1 passed" in done.stdout and "skipped" not in done.stdout.splitlines()[-1]
