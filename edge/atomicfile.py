"""Replace a file whole: a reader sees the old content or the new, never half, and a crash
leaves the old file (and no stray temporary) behind.

The new content goes to a temporary file in the same directory (same filesystem), is
flushed to disk, and is renamed over the target; with ``sync_dir`` the directory entry is
flushed too, so the rename itself survives a power cut.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def replacing(path: Path, *, mode: int | None = None, sync_dir: bool = False,
              make_parents: bool = False) -> Iterator[str]:
    """Yield a temporary path beside ``path`` to write; when the block ends without an
    error it is synced, given ``mode`` (default: the mode ``path`` has, else 0o644) and
    renamed over ``path``; on an error it is removed and ``path`` is left as it was.
    ``make_parents``: create missing directories first (else a missing one is an error)."""
    if make_parents:
        path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        if mode is None:
            try:
                mode = path.stat().st_mode & 0o7777
            except FileNotFoundError:
                mode = 0o644
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    if sync_dir:
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def write_text(path: Path, text: str, *, mode: int | None = None, sync_dir: bool = False,
               make_parents: bool = False) -> None:
    """Replace ``path`` whole with ``text`` (UTF-8); see :func:`replacing`."""
    with replacing(path, mode=mode, sync_dir=sync_dir, make_parents=make_parents) as tmp:
        Path(tmp).write_text(text, encoding="utf-8")
