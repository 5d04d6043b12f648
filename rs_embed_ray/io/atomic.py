"""The one way files are written: a temp file in the same folder, then ``os.replace``.

A crash leaves either the previous file or the new one, never a partial file; a temp file
left by a killed process is removed by ``clean_stale_temps``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically."""
    final = Path(path)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{uuid.uuid4().hex[:8]}")
    try:
        yield tmp
        with contextlib.suppress(OSError):
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


def clean_stale_temps(folder: str | os.PathLike[str], recursive: bool = False) -> int:
    """Remove temp files left by killed writers; returns how many were removed."""
    root = Path(folder)
    if not root.is_dir():
        return 0
    pattern = f"**/*{TMP_MARK}*" if recursive else f"*{TMP_MARK}*"
    n = 0
    for p in root.glob(pattern):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    if n:
        log.info("removed %d stale temp file(s) under %s", n, root)
    return n
