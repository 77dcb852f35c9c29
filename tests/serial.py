"""A pytest plugin: tests marked ``serial`` run while no other test does.

With pytest-xdist the suite runs in several processes at once. A test that
asserts a deadline with a margin (``-t`` honoured within 0.05 s, say)
measures the plugin on a machine whose other worker may be starting
servers and plugins on every core: the margin would then measure the
neighbour. Such a test takes the run to itself; the others wait between
two tests, and none is left out.

Two lock files shared by the workers of one run (``flock``): every test
holds the "room" shared while it runs; a serial test holds it exclusively.
To get in, every test first passes the "gate", which a serial test keeps
closed while it waits for the room and runs, so that a stream of ordinary
tests cannot keep it waiting for ever. Without xdist there is one process
and nothing to do.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import tempfile
from collections.abc import Generator
from contextlib import ExitStack
from pathlib import Path
from typing import IO, Any

import pytest

_KEY = "check_pg_tls_serial_dir"
_DIR = pytest.StashKey[Path]()


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "serial: runs while no other test of the run does (it asserts a deadline with a margin)",
    )
    if not hasattr(config, "workerinput") and config.pluginmanager.hasplugin("xdist"):
        # The controller (or a run without -n): the workers get the directory.
        config.stash[_DIR] = Path(tempfile.mkdtemp(prefix="check_pg_tls-serial-"))


@pytest.hookimpl(optionalhook=True)
def pytest_configure_node(node: Any) -> None:
    """xdist's controller, for each worker it starts."""
    node.workerinput[_KEY] = str(node.config.stash[_DIR])


def pytest_unconfigure(config: pytest.Config) -> None:
    path = config.stash.get(_DIR, None)
    if path is not None:
        shutil.rmtree(path, ignore_errors=True)


def _open(directory: str, name: str, stack: ExitStack) -> IO[bytes]:
    return stack.enter_context(open(os.path.join(directory, name), "ab"))


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(
    item: pytest.Item, nextitem: pytest.Item | None
) -> Generator[None, None, None]:
    directory = getattr(item.config, "workerinput", {}).get(_KEY)
    if directory is None:
        yield
        return
    serial = item.get_closest_marker("serial") is not None
    with ExitStack() as stack:
        gate = _open(directory, "gate", stack)
        room = _open(directory, "room", stack)
        fcntl.flock(gate, fcntl.LOCK_EX)
        try:
            fcntl.flock(room, fcntl.LOCK_EX if serial else fcntl.LOCK_SH)
        finally:
            if not serial:
                fcntl.flock(gate, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(room, fcntl.LOCK_UN)
            if serial:
                fcntl.flock(gate, fcntl.LOCK_UN)
