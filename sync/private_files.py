"""The device's files are its user's alone: the local database (households' names, addresses, health)
and the photo copies (pictures inside their homes) are made readable by their owner only, whatever the
umask. On a tablet the app's sandbox does this; the reference client also runs on shared machines.

SQLite gives the database's `-wal` and `-shm` files the database file's own permissions, so making the
database file first, owner-only, covers them too.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path
from typing import BinaryIO

_FILE, _FOLDER = 0o600, 0o700


def owner_only(path: Path) -> None:
    """Create ``path`` empty and owner-only if it does not exist; take group and others' access away from
    one an older client made (when it is ours to change)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT, _FILE)
    os.close(descriptor)
    _tighten(path, _FILE)


def owner_only_folder(folder: Path) -> None:
    folder.mkdir(mode=_FOLDER, parents=True, exist_ok=True)
    _tighten(folder, _FOLDER)


def open_owner_only(path: Path) -> BinaryIO:
    """``path`` opened for writing from its start, created owner-only."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, _FILE)
    os.chmod(descriptor, _FILE)  # a leftover partial copy keeps the mode it was made with
    return os.fdopen(descriptor, "wb")


def _tighten(path: Path, mode: int) -> None:
    if stat.S_IMODE(path.stat().st_mode) & 0o077:
        with contextlib.suppress(PermissionError):  # another account's file: theirs to change
            path.chmod(mode)
