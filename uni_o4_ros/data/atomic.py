"""Whole-or-nothing file writes: readers, a crash and a power cut never see half a file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import secrets
from collections.abc import Callable
from pathlib import Path


def atomic_write(path: str | Path, write: Callable[[str], None], make_folder: bool = True,
                 replace: bool = True) -> Path:
    """`write(tmp)` fills a temporary file beside `path`, which then replaces `path` in one rename. make_folder
    False: a missing folder is a FileNotFoundError (a logger's folder gone, its disk unmounted: the episode is
    kept until it is back, not written into a new folder on whatever disk the path now leads to).

    replace False: a `path` that exists by the time the file is complete (a link to nothing included) is a
    FileExistsError and is left as it is. A check before writing is not enough: two dataset loggers sharing a
    folder both found the next episode's name free, and the second replaced the first's file. The file is
    put in place with a hard link, which the kernel refuses for a taken name; on a file system without hard links
    (FAT, exFAT: a USB stick) the name is checked just before the rename instead.

    The temporary file is created with the user's umask like any other file (tempfile.mkstemp makes
    it 0600, so datasets and policies were unreadable to the rest of a team sharing the folder).

    The data reaches the disk before the rename and the rename before we return: on ext4 a rename
    can be committed before the delayed data blocks, so a robot whose battery died seconds after an
    episode was written could reboot to a complete-looking episode file of zero bytes, and a
    learner to a checkpoint it cannot resume from."""
    path = Path(path)
    if make_folder:
        make_folders(path.parent)
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
        if replace:
            os.replace(tmp, path)
        else:
            _put_new(tmp, path)
        _fsync(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def _put_new(tmp: Path, path: Path) -> None:
    try:
        os.link(tmp, path, follow_symlinks=False)
        return
    except FileExistsError:
        # On NFS a link whose reply was lost is sent again and answered "exists": by this very file
        with contextlib.suppress(OSError):
            if os.path.samestat(os.stat(tmp), os.lstat(path)):
                return
    except OSError as exc:
        if exc.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.ENOTSUP, errno.ENOSYS, errno.EMLINK):
            raise
        if not os.path.lexists(path):  # no hard links here: the narrower check-then-rename
            os.replace(tmp, path)
            return
    raise FileExistsError(errno.EEXIST, "taken while this file was written: not replaced", str(path))
    # the temporary name goes in the finally of atomic_write (a crash first leaves a second name of a whole file,
    # which EpisodeWriter removes at start as any other temporary file)


def make_folders(folder: Path) -> None:
    """mkdir -p whose new folders are synced into their parents: after a power cut a file synced into a folder
    made just before could otherwise be in a folder the parent no longer lists."""
    missing = []
    for f in (folder, *folder.parents):
        if f.is_dir():
            break
        missing.append(f)
    folder.mkdir(parents=True, exist_ok=True)
    for f in reversed(missing):
        with contextlib.suppress(PermissionError):  # a parent we may write into but not list: made, not synced
            _fsync(f.parent)


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
