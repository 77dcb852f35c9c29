"""Tests marked ``serial`` run alone, also when the suite runs in several processes."""

from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

RECORDING = """
import os
import time

import pytest


def _spend(kind):
    started = time.monotonic()
    time.sleep(0.3)
    with open(os.environ["SERIAL_LOG"], "a") as log:
        log.write(f"{kind} {os.getpid()} {started} {time.monotonic()}\\n")


# Serial tests among the others, so that either worker meets them mid-run.
KINDS = ["ordinary", "ordinary", "serial", "ordinary", "ordinary", "serial"] * 3


@pytest.mark.parametrize(
    "kind",
    [pytest.param(k, marks=[pytest.mark.serial] if k == "serial" else []) for k in KINDS],
)
def test_spend(kind):
    _spend(kind)
"""


def test_a_serial_test_overlaps_no_other(tmp_path: Path) -> None:
    (tmp_path / "test_recording.py").write_text(RECORDING)
    log = tmp_path / "log"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "tests.serial", "-p", "no:cacheprovider",
         "-n", "2", "-c", "/dev/null", "--rootdir", str(tmp_path), str(tmp_path)],
        cwd=REPO, capture_output=True, text=True, timeout=120,
        env={"PATH": "/usr/bin:/bin", "SERIAL_LOG": str(log)},
    )  # fmt: skip
    assert done.returncode == 0, done.stdout
    spans = [line.split() for line in log.read_text().splitlines()]
    runs = [(kind, pid, float(start), float(end)) for kind, pid, start, end in spans]
    assert sorted(kind for kind, *_ in runs) == ["ordinary"] * 12 + ["serial"] * 6
    # Two processes ran tests, and ordinary tests did overlap: the run was parallel.
    assert len({pid for _, pid, _, _ in runs}) == 2
    overlapping = [
        (a, b) for a, b in itertools.combinations(runs, 2) if a[2] < b[3] and b[2] < a[3]
    ]
    assert overlapping
    assert all(a[0] == b[0] == "ordinary" for a, b in overlapping), overlapping
