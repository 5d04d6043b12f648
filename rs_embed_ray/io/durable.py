"""A batch of places' per-item files made durable together, then renamed place by place.

``io.atomic.atomic_path`` fsyncs each file as it is written. The per-item writers
(``pipeline.write``) write a batch of places at a time; inside ``DurableBatch.place`` each
of their atomic writes stops at its temp file, and ``commit`` starts the writeback of all of
them at once, fsyncs each and renames them. The guarantee is ``atomic_path``'s.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from rs_embed_ray.io.atomic import (
    DEFERRED_WRITES,
    OutputWriteError,
    checked_fsync,
    storage_errors,
)


def _load_start_writeback() -> Callable[[int, int, int, int], int] | None:
    """libc's ``sync_file_range`` (Linux), or None where there is none."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        fn = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_START_WRITEBACK = _load_start_writeback()
_SYNC_FILE_RANGE_WRITE = 2  # <fcntl.h>: start writing the dirty pages, do not wait
_FDS_AT_ONCE = 64


def _sync_all(tmps: list[Path]) -> None:
    """fsync each of ``tmps``, as ``atomic_path`` does one file; on Linux the writeback of
    all of them is started first (``sync_file_range``), so the disk takes their data as one
    batch and each fsync finds its own already on the way. Each file still gets its own
    fsync, with its own error report, and no other file on the disk is waited for."""
    for start in range(0, len(tmps), _FDS_AT_ONCE):
        part = tmps[start : start + _FDS_AT_ONCE]
        fds: list[int] = []
        try:
            for tmp in part:
                fds.append(os.open(tmp, os.O_RDONLY))
            if _START_WRITEBACK is not None:
                for fd in fds:
                    _START_WRITEBACK(fd, 0, 0, _SYNC_FILE_RANGE_WRITE)  # a hint: errors wait
            for fd in fds:
                checked_fsync(fd)
        finally:
            for fd in fds:
                os.close(fd)


class DurableBatch:
    """The per-item files of a batch of places, made durable together.

    Inside ``place(key)`` (in any thread) each local ``atomic_path`` write stops at its temp
    file; ``commit()`` then makes them durable together (``_sync_all``) and renames them,
    place by place. The guarantee is ``atomic_path``'s: a final name only ever names a whole
    file that reached the disk. What it saves: a file fsync'ed alone as it is written cost
    about 400 us of the machine's CPU on the benchmark machine, one fsync'ed in a batch whose
    writeback was started together about 260 (docs/benchmarks.md, session 20); a place
    writes two. A place's files land only if all of them were written; a place that fails
    leaves no temp file."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._places: dict[Any, list[tuple[Path, Path]]] = {}
        self.landed: list[Any] = []  # keys whose files are in place (so far, if commit fails)
        self.failed: dict[Any, OSError] = {}  # keys whose names were refused, and why

    @contextlib.contextmanager
    def place(self, key: Any) -> Iterator[None]:
        """Collect the block's atomic writes for ``key`` (its earlier ones are dropped: a
        retry replaces a failed try); on an exception they are removed."""
        pending: list[tuple[Path, Path]] = []
        token = DEFERRED_WRITES.set(pending)
        try:
            yield
        except BaseException:
            _remove(t for t, _ in pending)
            raise
        finally:
            DEFERRED_WRITES.reset(token)
        with self._lock:
            _remove(t for t, _ in self._places.pop(key, ()))
            self._places[key] = pending

    def keys(self) -> list[Any]:
        with self._lock:
            return list(self._places)

    def discard(self) -> list[Any]:
        """Land nothing: remove every temp file; return the keys dropped."""
        with self._lock:
            places, self._places = self._places, {}
        _remove(t for pairs in places.values() for t, _ in pairs)
        return list(places)

    def commit(self) -> list[Any]:
        """Make the temp files durable, then rename each place's; return the keys that
        landed (``landed``). A place whose name is refused for itself (a folder in the way)
        is in ``failed`` and the others go on; a storage error (``OutputWriteError``: disk
        full, read-only...) stops the commit. Either way a place is whole or absent: one
        whose first file had landed loses its files, an earlier run's pair with them; the
        places not landed leave no temp file."""
        with self._lock:
            places, self._places = self._places, {}
        try:
            tmps = [t for pairs in places.values() for t, _ in pairs]
            if tmps:
                with storage_errors(tmps[0].parent):
                    _sync_all(tmps)
            for key, pairs in places.items():
                done = 0
                try:
                    for tmp, final in pairs:
                        with storage_errors(final):
                            os.replace(tmp, final)
                        done += 1
                except OSError as exc:
                    if done:  # half a place: none of it (and not a stale half of the old)
                        _remove(f for _, f in pairs)
                    if isinstance(exc, OutputWriteError):
                        raise
                    self.failed[key] = exc
                    continue
                self.landed.append(key)
        finally:
            gone = set(self.landed)
            _remove(t for key, pairs in places.items() if key not in gone for t, _ in pairs)
        return self.landed


def _remove(paths: Iterable[Path]) -> None:
    for p in paths:
        with contextlib.suppress(OSError):
            p.unlink()
