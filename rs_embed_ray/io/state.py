"""Run state beside the outputs: a lock, an append-only log (the skip list) and run.json.

The log is the resume truth. Each line records one finished step: a fetched patch
(``kind="patch"``), an embedding (``kind="embed"``) or a written per-item file
(``kind="item"``, with its arrays' keys, shapes and digests), ok or failed, with the fingerprint of
what was asked and the shard file holding the result. Only the driver appends to it, one
``write`` per line, so a crash can at worst leave a torn last line, which is skipped.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import logging
import os
import shutil
import socket
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import clean_stale_temps, storage_errors, write_text
from rs_embed_ray.io.manifest import utc_ts
from rs_embed_ray.io.remote_lock import RemoteLock, pid_alive

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
RUN_NAME = "run.json"
LOCK_NAME = "lock"
# present while a stopping run writes what finished: a model actor writing per-item files
# (``pipeline.write.write_due_items``) starts no more once it is here
STOPPING_NAME = "stopping"
# same values as rs_embed_ray.plan (not imported: plan imports the model registry)
STATE_DIR_PER_ITEM = "_rs_embed_ray"
STATE_SUFFIX_COMBINED = ".rs_embed_ray"
FINAL_EXTS = (".npz", ".nc", ".json")

_HELD: set[str] = set()  # lock files held by runs of this process
_HELD_GUARD = threading.Lock()


def _read_lock_fd(fd: int) -> dict[str, Any]:
    try:
        raw = os.pread(fd, 4096, 0)
        other = json.loads(raw.decode("utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return other if isinstance(other, dict) else {}


def _read_lock(lock: Path) -> dict[str, Any]:
    try:
        other = json.loads(lock.read_text(encoding="utf-8") or "{}")
    except (OSError, ValueError):
        return {}
    return other if isinstance(other, dict) else {}


def log_records(lines: Iterable[str], where: object) -> Iterator[dict[str, Any]]:
    """The log's records in ``lines``; a torn line (a crash mid-append) is skipped."""
    for line in lines:
        line = line.strip()
        if not line:
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            log.warning("skipping a torn line in %s", where)
            continue
        if isinstance(rec, dict) and {"kind", "key", "index", "status"} <= rec.keys():
            yield rec


@dataclass
class Record:
    kind: str  # "patch" | "embed"
    key: str  # fetch group key or model key
    index: int
    status: str  # "ok" | "failed"
    fp: str
    shard: str | None = None  # path relative to the state dir
    error: str | None = None
    shape: list[int] | None = None
    sha1: str | None = None
    node: str | None = None  # the Ray node that did the step
    # kind="item": the final file's arrays {key: {"shape", "sha1"}}, so resume can verify
    # the file without its JSON sidecar (save_manifest=False)
    arrays: dict[str, Any] | None = None
    # when the step's result was final, on the worker's clock (epoch s): an embedding's shard
    # written, a region of the combined file written (kind="region")
    done_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["t"] = utc_ts()
        d["ts"] = round(time.time(), 3)  # for throughput figures
        return d


class RunState:
    """Owns the state folder of one output location for the duration of a run."""

    def __new__(cls, folder: Any) -> RunState:
        # a bucket prefix gets the object-store state (io.storage); the callers need not ask
        if cls is RunState and storage.is_remote(folder):
            return super().__new__(RemoteRunState)
        return super().__new__(cls)

    def __init__(self, folder: Path) -> None:
        self.folder = storage.as_path(folder)
        self._log_fd: int | None = None
        self._lock_fd: int | None = None
        self._lock_key: str | None = None
        self._locked = False

    @property
    def locked(self) -> bool:
        return self._locked

    # -- lock ----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Refuse a second concurrent run on the same output; take over a dead run's lock.

        The lock is an ``flock`` on ``lock`` held for the whole run, so the kernel frees it
        when the process dies however it dies (no stale locks, no pid guessing); the file also
        says who holds it, for the error message. A second run in the same process (another
        thread) is refused too. Where ``flock`` is not available the file's pid is checked.
        """
        with storage_errors(self.folder):
            self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / LOCK_NAME
        key = os.path.realpath(lock)
        with _HELD_GUARD:
            if key in _HELD:
                raise OutputLockedError(self._busy_message(_read_lock(lock), same_process=True))
            with storage_errors(lock):
                fd = self._flock(lock)
                if fd is None:
                    self._pid_lock(lock)
            _HELD.add(key)
        self._lock_fd = fd
        self._lock_key = key
        self._locked = True
        with contextlib.suppress(FileNotFoundError):
            self.stop_marker.unlink()  # an earlier run's
        self._clean_temps()

    @property
    def stop_marker(self) -> Path:
        return self.folder / STOPPING_NAME

    def mark_stopping(self) -> None:
        """Tell this run's workers it is stopping (``stop_marker``); never raises."""
        with contextlib.suppress(OSError):
            self.stop_marker.touch()

    def _busy_message(self, other: dict[str, Any], same_process: bool = False) -> str:
        who = "this process" if same_process else f"pid {other.get('pid', '?')}"
        host = other.get("host")
        where = f" on host {host}" if host and host != socket.gethostname() else ""
        since = f", since {other['since']}" if other.get("since") else ""
        return (
            f"Another export ({who}{where}{since}) is writing to {self.folder.parent} "
            f"(lock {self.folder / LOCK_NAME}); wait for it to finish or choose another output."
        )

    def _me(self) -> bytes:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_ts()}
        return json.dumps(me).encode()

    def _flock(self, lock: Path) -> int | None:
        """Hold an exclusive flock on ``lock``; None where flock is not supported."""
        try:
            import fcntl
        except ImportError:  # not POSIX
            return None
        for _ in range(20):
            fd = os.open(lock, os.O_CREAT | os.O_RDWR, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise OutputLockedError(self._busy_message(_read_lock(lock))) from None
            except OSError as exc:
                os.close(fd)
                if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                    log.warning("flock not supported on %s (%s); using the pid lock", lock, exc)
                    return None
                raise
            # a run that just released may have unlinked the file we opened: retry on the new one
            try:
                st, cur = os.fstat(fd), os.stat(lock)
                current = (st.st_dev, st.st_ino) == (cur.st_dev, cur.st_ino)
            except FileNotFoundError:
                current = False
            if not current:
                os.close(fd)
                continue
            other = _read_lock_fd(fd)
            if other.get("host") and other.get("host") != socket.gethostname():
                # flock may not reach across hosts on this file system: trust the file
                os.close(fd)
                raise OutputLockedError(
                    self._busy_message(other) + f" If that run is dead, delete {lock} and retry."
                )
            if other:
                log.info("taking over the lock of a dead run (pid %s)", other.get("pid"))
            os.ftruncate(fd, 0)
            os.pwrite(fd, self._me(), 0)
            return fd
        raise OutputLockedError(f"Could not lock {lock}: it keeps being replaced.")

    def _pid_lock(self, lock: Path) -> None:
        """Fallback without flock: an O_EXCL lock file; a dead run's pid is taken over."""
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                other = _read_lock(lock)
                same_host = other.get("host") == socket.gethostname()
                pid = int(other.get("pid", 0) or 0)
                if same_host and pid and pid != os.getpid() and pid_alive(pid):
                    raise OutputLockedError(self._busy_message(other)) from None
                if not same_host and other:
                    raise OutputLockedError(
                        self._busy_message(other)
                        + f" If that run is dead, delete {lock} and retry."
                    ) from None
                with contextlib.suppress(OSError):
                    lock.unlink()
                continue
            try:
                os.write(fd, self._me())
            finally:
                os.close(fd)
            return
        raise OutputLockedError(f"Could not lock {lock}.")

    def _clean_temps(self) -> None:
        """Temp files of killed writers: the state folder, and this export's final files."""
        try:
            clean_stale_temps(self.folder, recursive=True)
            parent, name = self.folder.parent, self.folder.name
            if name == STATE_DIR_PER_ITEM:  # the output folder belongs to this export
                prefixes = [f"*{ext}" for ext in FINAL_EXTS]
            elif name.endswith(STATE_SUFFIX_COMBINED):  # a shared folder: only our file's temps
                stem = glob.escape(name[: -len(STATE_SUFFIX_COMBINED)])
                prefixes = [f"{stem}{ext}" for ext in FINAL_EXTS]
            else:
                prefixes = []
            for prefix in prefixes:
                clean_stale_temps(parent, prefix=prefix)
        except OSError as exc:  # never fail a run over a leftover
            log.warning("could not remove stale temp files: %s", exc)

    def release(self) -> None:
        """Close the log and drop the lock; never raises (it runs while an error propagates)."""
        if self._log_fd is not None:
            with contextlib.suppress(OSError):
                os.fsync(self._log_fd)
            with contextlib.suppress(OSError):
                os.close(self._log_fd)
            self._log_fd = None
        if self._locked:
            with contextlib.suppress(OSError):
                (self.folder / LOCK_NAME).unlink()
            if self._lock_fd is not None:
                with contextlib.suppress(OSError):
                    os.close(self._lock_fd)  # frees the flock
                self._lock_fd = None
            with _HELD_GUARD:
                _HELD.discard(self._lock_key or "")
            self._locked = False

    # -- log -----------------------------------------------------------------------------
    def read_log(self) -> Iterator[dict[str, Any]]:
        path = self.folder / LOG_NAME
        if not path.exists():
            return
        with open(path, encoding="utf-8") as fh:
            yield from log_records(fh, path)

    def latest(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Latest record per (kind, key, index)."""
        out: dict[tuple[str, str, int], dict[str, Any]] = {}
        for rec in self.read_log():
            out[(rec["kind"], rec["key"], int(rec["index"]))] = rec
        return out

    def append(self, records: Iterable[Record]) -> None:
        """Append records, one line each, in one ``write``; a full disk raises OutputWriteError.

        A line torn by a crash (or by a full disk) is ended before new lines go after it, so
        it costs only itself, never the record that follows.
        """
        data = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        if not data:
            return
        path = self.folder / LOG_NAME
        with storage_errors(path):
            if self._log_fd is None:
                self._log_fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)
            fd = self._log_fd
            size = os.fstat(fd).st_size
            buf = data.encode("utf-8")
            if size and hasattr(os, "pread") and os.pread(fd, 1, size - 1) != b"\n":
                buf = b"\n" + buf
            view = memoryview(buf)
            while view:
                view = view[os.write(fd, view) :]

    # -- run manifest ----------------------------------------------------------------------
    def write_run(self, info: dict[str, Any]) -> None:
        write_text(self.folder / RUN_NAME, json.dumps(info, ensure_ascii=False, indent=2))

    def shard_dir(self, kind: str, key: str) -> Path:
        d = self.folder / kind / key
        with storage_errors(d):
            d.mkdir(parents=True, exist_ok=True)
        return d

    def reset(self) -> None:
        """Start afresh (resume=False): forget the log and the shards of earlier runs."""
        for name in (LOG_NAME, RUN_NAME, "final.json"):
            with contextlib.suppress(FileNotFoundError):
                (self.folder / name).unlink()
        self.drop_cache()

    def drop_cache(self) -> None:
        """Remove the bulky shards once every item is ok; the log and run.json stay."""
        for sub in ("patches", "embeds"):
            shutil.rmtree(self.folder / sub, ignore_errors=True)


LOG_PARTS = "log.d"  # on an object store: one object per append, read back in name order


class RemoteRunState(RunState):
    """The run state on an object store (``s3://`` / ``gs://``), where nothing is appended
    or locked in place: the lock is an object created only if absent (S3 ``If-None-Match``,
    GCS ``ifGenerationMatch=0``) and renewed by a heartbeat; each ``append`` puts a new log
    object. A run on another machine resumes from these objects alone.
    """

    def __init__(self, folder: Any) -> None:
        super().__init__(folder)
        self._lock: RemoteLock | None = None

    def acquire(self) -> None:
        """Create the lock object only if absent; take over a dead run's (``io.remote_lock``:
        conditional writes on the object's version, no trust in other machines' clocks)."""
        lock = self.folder / LOCK_NAME
        key = str(lock)
        with _HELD_GUARD:
            if key in _HELD:
                raise OutputLockedError(self._busy_message({}, same_process=True))
            _HELD.add(key)  # this process's other runs wait no lease to be refused
        try:
            held = RemoteLock(lock)
            with storage_errors(lock):
                held.acquire()
        except BaseException:
            with _HELD_GUARD:
                _HELD.discard(key)
            raise
        self._lock = held
        self._lock_key = key
        self._locked = True
        held.start_heartbeat()

    @property
    def stop_marker(self) -> Any:
        return None  # workers on other machines would not see a marker here

    def mark_stopping(self) -> None:
        pass

    def release(self) -> None:
        if self._locked:
            if self._lock is not None:
                with contextlib.suppress(Exception):
                    self._lock.release()
                self._lock = None
            with _HELD_GUARD:
                _HELD.discard(self._lock_key or "")
            self._locked = False

    def read_log(self) -> Iterator[dict[str, Any]]:
        urls = storage.list_files(self.folder / LOG_PARTS)
        if not urls:
            return
        fs = self.folder.fs
        keys = [u.split("://", 1)[1] for u in urls]
        blobs = fs.cat(keys)  # concurrent GETs
        for k in keys:
            yield from log_records(bytes(blobs[k]).decode("utf-8").splitlines(), k)

    def append(self, records: Iterable[Record]) -> None:
        data = "".join(json.dumps(r.to_json(), ensure_ascii=False) + "\n" for r in records)
        if not data:
            return
        name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:8]}.jsonl"
        write_text(self.folder / LOG_PARTS / name, data)

    def shard_dir(self, kind: str, key: str) -> Any:
        return self.folder / kind / key  # no folders on an object store

    def reset(self) -> None:
        for name in (RUN_NAME, "final.json"):
            storage.delete(self.folder / name)
        storage.delete_tree(self.folder / LOG_PARTS)
        self.drop_cache()

    def drop_cache(self) -> None:
        for sub in ("patches", "embeds"):
            storage.delete_tree(self.folder / sub)
