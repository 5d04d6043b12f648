"""The one way files are written: a temp file in the same folder, then ``os.replace``.

A crash leaves either the previous file or the new one, never a partial file; a temp file
left by a killed process is removed by ``clean_stale_temps``. A write that fails because the
storage refuses it (disk full, quota, read-only, permissions) raises ``OutputWriteError``:
an ``OSError`` (same errno) and an ``RSEmbedRayError`` whose message says what to do.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import tempfile
from collections.abc import Iterator
from contextvars import ContextVar
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import RSEmbedRayError
from rs_embed_ray.io import storage
from rs_embed_ray.io.lazy import LazySequence

log = logging.getLogger(__name__)

TMP_MARK = ".tmp-"

# errors that say "this storage cannot take the write", not "this place is bad"
STORAGE_ERRNOS = frozenset(
    e
    for e in (
        errno.ENOSPC,
        getattr(errno, "EDQUOT", None),
        errno.EROFS,
        errno.EACCES,
        errno.EPERM,
        errno.EFBIG,
        errno.EIO,
    )
    if e is not None
)
_HINTS = {
    errno.ENOSPC: "free some space (or choose another output location)",
    getattr(errno, "EDQUOT", -1): "free some quota (or choose another output location)",
    errno.EFBIG: "the file system does not take files this large; choose another output location",
    errno.EROFS: "the file system is read-only; choose another output location",
    errno.EACCES: "make the output location writable",
    errno.EPERM: "make the output location writable",
    errno.EIO: "check the storage device",
}


class OutputWriteError(RSEmbedRayError, OSError):
    """The output location cannot take a write (disk full, quota, read-only, permissions).

    The run stops (it is not a per-place failure, so ``continue_on_error`` does not apply);
    what was written stays valid, and a rerun with ``resume=True`` continues from the log.
    """

    def __str__(self) -> str:
        return str(self.strerror) if self.strerror else OSError.__str__(self)


def is_storage_error(exc: BaseException) -> bool:
    return isinstance(exc, OSError) and exc.errno in STORAGE_ERRNOS


def output_write_error(exc: OSError, path: str | os.PathLike[str]) -> OutputWriteError:
    """A clear ``OutputWriteError`` for a storage ``OSError`` raised while writing ``path``."""
    if isinstance(exc, OutputWriteError):
        return exc
    code = exc.errno or errno.EIO
    reason = os.strerror(code)
    name = errno.errorcode.get(code, str(code))
    hint = _HINTS.get(code, "check the output location")
    msg = (
        f"Cannot write {path}: {reason} [{name}]. The run stopped; files already "
        f"written are complete and kept. {hint[0].upper()}{hint[1:]}, then rerun with "
        "resume=True (CLI --resume) to continue where it stopped."
    )
    return OutputWriteError(code, msg, str(path))


@contextlib.contextmanager
def storage_errors(path: str | os.PathLike[str]) -> Iterator[None]:
    """Turn storage ``OSError``s raised inside the block into ``OutputWriteError``."""
    try:
        yield
    except OutputWriteError:
        raise
    except OSError as exc:
        if exc.errno in STORAGE_ERRNOS:
            raise output_write_error(exc, path) from exc
        raise


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; on success it replaces ``path`` atomically.

    For an object-store ``path`` (``io.storage``) the temp file is local and is uploaded
    whole, in one put, once the block succeeds: the object appears complete or not at all.
    """
    if storage.is_remote(path):
        with _remote_atomic_path(path) as tmp:
            yield tmp
        return
    final = Path(path)
    # a random tail (not uuid4: the same 4 bytes of os.urandom, without the UUID object)
    tmp = final.with_name(f"{final.name}{TMP_MARK}{os.getpid()}-{os.urandom(4).hex()}")
    handed_on = False
    try:
        with storage_errors(final):
            # a stat for a folder that is there (per-item files: every place); mkdir, which
            # fails with EEXIST and then stats anyway, only for a new one
            if not os.path.isdir(final.parent):
                final.parent.mkdir(parents=True, exist_ok=True)
            yield tmp
            pending = DEFERRED_WRITES.get()
            if pending is not None:  # in a DurableBatch's place: its commit syncs and renames
                pending.append((tmp, final))
                handed_on = True
                return
            _fsync_path(tmp)
            os.replace(tmp, final)
            handed_on = True
    finally:
        if not handed_on:  # the block or the fsync failed: no temp file is left behind
            with contextlib.suppress(OSError):
                tmp.unlink()


def _fsync_path(tmp: Path) -> None:
    """fsync a written file by name (``checked_fsync``)."""
    fd = os.open(tmp, os.O_RDONLY)
    try:
        checked_fsync(fd)
    finally:
        os.close(fd)


def checked_fsync(fd: int) -> None:
    """fsync ``fd``; only a full disk or an I/O error is an error here (a network file
    system may report a full disk only at this point; a file system without fsync answers
    otherwise, and that is not the write's fault)."""
    try:
        os.fsync(fd)
    except OSError as exc:
        if exc.errno in _SYNC_ERRNOS:
            raise


# what an fsync may answer that is an error of the write (any other answer is ignored)
_SYNC_ERRNOS = frozenset({errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC), errno.EIO})

# the writes of the place being written in this thread (``io.durable.DurableBatch.place``):
# atomic_path hands its (temp, final) pair over here instead of syncing and renaming it
DEFERRED_WRITES: ContextVar[list[tuple[Path, Path]] | None] = ContextVar(
    "rs_embed_ray_deferred_writes", default=None
)


@contextlib.contextmanager
def _remote_atomic_path(path: Any) -> Iterator[Path]:
    final = storage.as_path(str(path))
    fd, name = tempfile.mkstemp(prefix="rs_embed_ray_put-", suffix=final.suffix)
    os.close(fd)
    tmp = Path(name)
    try:
        with storage_errors(tmp):
            yield tmp
        storage.put_file(tmp, final)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def write_text(path: str | os.PathLike[str], text: str) -> None:
    write_bytes(path, text.encode("utf-8"))


class _Streamed(list):  # type: ignore[type-arg]
    """A lazy sequence as ``json.dump`` sees it: a list it iterates item by item.

    ``json.dump`` (unlike ``json.dumps``) always runs the pure-Python encoder, which reads a
    list only through ``len()`` and iteration; this empty list subclass answers both from
    the lazy sequence, so its items are read, encoded and dropped one at a time."""

    def __init__(self, seq: LazySequence) -> None:
        super().__init__()
        self.seq = seq

    def __len__(self) -> int:
        return len(self.seq)

    def __iter__(self) -> Iterator[Any]:
        return iter(self.seq)


def _stream_lazy(obj: Any) -> Any:
    if isinstance(obj, LazySequence):
        return _Streamed(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def write_json(
    path: str | os.PathLike[str], obj: Any, indent: int | None = 2, stream: bool = True
) -> None:
    """``obj`` as UTF-8 JSON, encoded straight into the temp file: a combined manifest of a
    million places is never held as one string (and again as its bytes) in memory, and its
    lazy per-place lists (``io.lazy``) are read one item at a time.

    ``stream=False``, for a small ``obj`` with no lazy lists (a place's sidecar): encoded
    whole, then written in one go, which skips the file object's text layer and its write
    per token (about 15 us of a sidecar's 100)."""
    if not stream:
        write_bytes(path, json.dumps(obj, ensure_ascii=False, indent=indent).encode("utf-8"))
        return
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=indent, default=_stream_lazy)


def clean_stale_temps(
    folder: str | os.PathLike[str], recursive: bool = False, prefix: str = ""
) -> int:
    """Remove temp files left by killed writers; returns how many were removed.

    ``prefix`` narrows the match to temps of files whose name starts with it (e.g. "*.npz"
    or "g.json"), for folders this run shares with other files.
    """
    if storage.is_remote(folder):
        return 0  # objects are put whole: an object store holds no temp files of ours
    root = Path(folder)
    if not root.is_dir():
        return 0
    pattern = f"{prefix or '*'}{TMP_MARK}*"
    if recursive:
        pattern = f"**/{pattern}"
    n = 0
    for p in root.glob(pattern):
        if p.is_file():
            with contextlib.suppress(OSError):
                p.unlink()
                n += 1
    if n:
        log.info("removed %d stale temp file(s) under %s", n, root)
    return n
