"""Whole-or-nothing file writes: readers, a crash and a power cut never see half a file."""

from __future__ import annotations

import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], make_folder: bool = True) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one rename. make_folder
    False: a missing folder is a FileNotFoundError (a logger's folder gone, its disk unmounted: the episode is
    kept until it is back, not written into a new folder on whatever disk the path now leads to).

    The temporary file is created with the user's umask like any other file (tempfile.mkstemp makes
    it 0600, so datasets and policies were unreadable to the rest of a team sharing the folder).

    The data reaches the disk before the rename and the rename before we return: on ext4 a rename
    can be committed before the delayed data blocks, so a robot whose battery died seconds after an
    episode was written could reboot to a complete-looking episode file of zero bytes, and a
    learner to a checkpoint it cannot resume from."""
    path = Path(path)
    if make_folder:
        path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
            break
        except FileExistsError:
            continue
    try:
        write(str(tmp))
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_text(path: str | Path, text: str) -> Path:
    """`path.write_text(text)`, atomically: a process polling for the file (the field pipeline waits
    for the learner's summary.json) or resuming from it never reads it empty or cut short."""
    return atomic_write(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | Path, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2))


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some file systems cannot sync a directory (EINVAL); the file itself was synced.
        if not (exc.errno == errno.EINVAL and path.is_dir()):
            raise
    finally:
        os.close(fd)
