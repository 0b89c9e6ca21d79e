"""File permissions: what Flow Lab keeps (guest emails, response bodies, client keys) is its user's alone.

Folders are created 0700 and files 0600 *as they are created* (``mkdir(mode=0o700)``, ``os.open(…,
0o600)``): a chmod afterwards would leave a window in which another user could open the file and keep
reading it. SQLite gives a store's ``-wal`` and ``-shm`` files the mode of the store, so a 0600 store has
0600 side files. A data folder left looser by an older version is tightened when Flow Lab writes to it,
unless it is not Flow Lab's to change: another user's folder, a shared sticky folder such as ``/tmp``, or
the home folder itself.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
from pathlib import Path
from typing import BinaryIO

__all__ = ["PRIVATE_DIR", "PRIVATE_FILE", "create_private", "open_private", "private_dir"]

logger = logging.getLogger(__name__)

PRIVATE_DIR = 0o700
PRIVATE_FILE = 0o600


def private_dir(path: str | Path, *, tighten: bool = True) -> Path:
    """Make ``path`` and its missing parents as 0700 folders; ``tighten`` an existing looser ``path`` too.

    Pass ``tighten=False`` for folders the user chose (``--out reports/run.csv``): missing ones are still
    created private, existing ones are left as they are.
    """
    path = Path(path)
    missing: list[Path] = []
    here = path
    while not here.exists() and here != here.parent:
        missing.append(here)
        here = here.parent
    for folder in reversed(missing):
        folder.mkdir(mode=PRIVATE_DIR, exist_ok=True)
    if tighten and not missing:
        _tighten(path)
    return path


def _tighten(folder: Path) -> None:
    if sys.platform == "win32":
        return
    try:
        info = folder.stat()
        is_home = folder.resolve() in (Path.home().resolve(), Path("/"))
    except OSError:
        return
    mode = stat.S_IMODE(info.st_mode)
    ours = info.st_uid == os.getuid() and stat.S_ISDIR(info.st_mode)
    if not ours or is_home or info.st_mode & stat.S_ISVTX or not mode & 0o077:
        return
    os.chmod(folder, mode & PRIVATE_DIR)
    logger.info("made %s private (mode %o → %o)", folder, mode, mode & PRIVATE_DIR)


def create_private(path: str | Path) -> Path:
    """Create ``path`` empty with mode 0600 (or empty an existing file and make it 0600).

    For writers that insist on opening a path themselves (pyarrow, SQLite): they truncate or reuse the
    file, and its mode stays 0600.
    """
    os.close(_open(Path(path)))
    return Path(path)


def open_private(path: str | Path) -> BinaryIO:
    """``open(path, "wb")``, except that a new file is 0600 from its first byte."""
    return os.fdopen(_open(Path(path)), "wb")


def _open(path: Path) -> int:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, PRIVATE_FILE)
    if sys.platform != "win32":
        try:
            os.fchmod(fd, PRIVATE_FILE)  # a file that existed before keeps its mode through O_CREAT
        except BaseException:
            os.close(fd)
            raise
    return fd
