"""Run state beside the outputs: a lock, an append-only log (the skip list) and run.json.

The log is the resume truth. Each line records one finished step: a fetched patch
(``kind="patch"``) or an embedding (``kind="embed"``), ok or failed, with the fingerprint of
what was asked and the shard file holding the result. Only the driver appends to it, one
``write`` per line, so a crash can at worst leave a torn last line, which is skipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io.atomic import clean_stale_temps, write_text
from rs_embed_ray.io.manifest import utc_ts

log = logging.getLogger(__name__)

LOG_NAME = "log.jsonl"
RUN_NAME = "run.json"
LOCK_NAME = "lock"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


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

    def to_json(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if v is not None}
        d["t"] = utc_ts()
        d["ts"] = round(time.time(), 3)  # for throughput figures
        return d


class RunState:
    """Owns the state folder of one output location for the duration of a run."""

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._log_fh: Any = None
        self._locked = False

    # -- lock ----------------------------------------------------------------------------
    def acquire(self) -> None:
        """Refuse a second concurrent run on the same output; take over a dead run's lock."""
        self.folder.mkdir(parents=True, exist_ok=True)
        lock = self.folder / LOCK_NAME
        me = {"pid": os.getpid(), "host": socket.gethostname(), "since": utc_ts()}
        for _ in range(2):
            try:
                fd = os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                try:
                    other = json.loads(lock.read_text() or "{}")
                except (OSError, ValueError):
                    other = {}
                same_host = other.get("host") == socket.gethostname()
                pid = int(other.get("pid", 0) or 0)
                if same_host and pid and pid != os.getpid() and _pid_alive(pid):
                    raise OutputLockedError(
                        f"Another export (pid {pid}, since {other.get('since')}) is writing to "
                        f"{self.folder.parent}; wait for it to finish or choose another output."
                    ) from None
                if not same_host and other:
                    raise OutputLockedError(
                        f"Output is locked by host {other.get('host')} (pid {pid}); if that run "
                        f"is dead, delete {lock} and retry."
                    ) from None
                with contextlib.suppress(OSError):
                    lock.unlink()
                continue
            with os.fdopen(fd, "w") as fh:
                json.dump(me, fh)
            self._locked = True
            clean_stale_temps(self.folder, recursive=True)
            return
        raise OutputLockedError(f"Could not lock {lock}.")

    def release(self) -> None:
        if self._log_fh is not None:
            self._log_fh.flush()
            os.fsync(self._log_fh.fileno())
            self._log_fh.close()
            self._log_fh = None
        if self._locked:
            with contextlib.suppress(OSError):
                (self.folder / LOCK_NAME).unlink()
            self._locked = False

    # -- log -----------------------------------------------------------------------------
    def read_log(self) -> Iterator[dict[str, Any]]:
        path = self.folder / LOG_NAME
        if not path.exists():
            return
        with open(path, encoding="utf-8") as fh:
            for line in fh:
                line = line.strip()
                if not line:
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    log.warning("skipping a torn line in %s", path)
                    continue
                if isinstance(rec, dict) and {"kind", "key", "index", "status"} <= rec.keys():
                    yield rec

    def latest(self) -> dict[tuple[str, str, int], dict[str, Any]]:
        """Latest record per (kind, key, index)."""
        out: dict[tuple[str, str, int], dict[str, Any]] = {}
        for rec in self.read_log():
            out[(rec["kind"], rec["key"], int(rec["index"]))] = rec
        return out

    def append(self, records: Iterable[Record]) -> None:
        if self._log_fh is None:
            self._log_fh = open(self.folder / LOG_NAME, "a", encoding="utf-8")  # noqa: SIM115
        for r in records:
            self._log_fh.write(json.dumps(r.to_json(), ensure_ascii=False) + "\n")
        self._log_fh.flush()

    # -- run manifest ----------------------------------------------------------------------
    def write_run(self, info: dict[str, Any]) -> None:
        write_text(self.folder / RUN_NAME, json.dumps(info, ensure_ascii=False, indent=2))

    def shard_dir(self, kind: str, key: str) -> Path:
        d = self.folder / kind / key
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
