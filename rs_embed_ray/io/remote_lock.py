"""The run's lock on an object store, safe without trusting clocks across machines.

The lock is one object. It is created only if absent, renewed by a heartbeat that rewrites it
only if it is still the version this run last wrote (S3 ``If-Match`` on the ETag, GCS
``ifGenerationMatch`` on the generation, ``io.versioned``), so a run whose lock was taken over
notices and never clobbers the new holder's. A second run refuses a lock whose heartbeat looks
recent; one that looks old (the holder's clock says so, only a hint) is watched on this
process's own monotonic clock, and taken over only if the object stayed at the same version for
longer than the lease, by a write conditional on that version: of two runs racing for it,
exactly one wins. A dead run of this same host (its pid gone) is taken over at once, still
conditionally.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from typing import Any

from rs_embed_ray.errors import OutputLockedError
from rs_embed_ray.io import storage
from rs_embed_ray.io import versioned as ver

log = logging.getLogger(__name__)
LEASE_S = 120.0  # a lock not rewritten for this long (on the watcher's clock) is a dead run's


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` of this host exists (one we may not signal counts)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RemoteLock:
    """One run's hold on the lock object at ``path``."""

    def __init__(self, path: Any, lease_s: float | None = None) -> None:
        self.path = path
        self.lease_s = LEASE_S if lease_s is None else float(lease_s)
        self.token = uuid.uuid4().hex  # this holder, whatever the clocks say
        self.since = time.time()
        self.version = ver.ABSENT  # what this run last wrote; ABSENT: not held
        self.lost = False
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    def _doc(self) -> bytes:
        me = {"pid": os.getpid(), "host": socket.gethostname(), "token": self.token}
        return json.dumps({**me, "since": self.since, "beat": time.time()}).encode()

    def _read(self) -> tuple[str, dict[str, Any]]:
        """The object's version and content (``ABSENT``, {} when there is none)."""
        seen = ver.version(self.path)
        if seen == ver.ABSENT:
            return seen, {}
        try:
            doc = json.loads(storage.read_bytes(self.path).decode("utf-8") or "{}")
        except FileNotFoundError:
            return ver.ABSENT, {}
        except ValueError:
            doc = {}
        return seen, doc if isinstance(doc, dict) else {}

    def _dead_here(self, other: dict[str, Any]) -> bool:
        pid = int(other.get("pid", 0) or 0)
        same_host = other.get("host") == socket.gethostname()
        return same_host and pid > 0 and pid != os.getpid() and not pid_alive(pid)

    def _looks_fresh(self, other: dict[str, Any]) -> bool:
        """The holder's own clock says it beat lately (a hint to refuse at once, never the
        reason to take over)."""
        beat = other.get("beat")
        return isinstance(beat, (int, float)) and time.time() - beat <= self.lease_s

    def busy(self, other: dict[str, Any]) -> OutputLockedError:
        return OutputLockedError(
            f"{self.path} is locked by another run (pid {other.get('pid', '?')} on "
            f"{other.get('host', '?')}); wait for it to finish, or choose another output. "
            f"A lock not renewed for {self.lease_s:.0f} s is taken over."
        )

    def _unchanged_for_lease(self, seen: str) -> bool:
        """Watch the object on this process's monotonic clock: True when it stayed at
        version ``seen`` for longer than the lease."""
        log.info("the lock %s looks abandoned; watching it for %.0f s", self.path, self.lease_s)
        start = time.monotonic()
        step = max(0.05, self.lease_s / 8)
        while time.monotonic() - start <= self.lease_s:
            time.sleep(step)
            if ver.version(self.path) != seen:
                return False
        return True

    def acquire(self) -> None:
        """Create the lock, or take over a dead run's; OutputLockedError otherwise."""
        for _ in range(3):
            try:
                self.version = ver.put(self.path, self._doc(), ver.ABSENT)
                return
            except ver.ObjectChanged:
                pass
            seen, other = self._read()
            if seen == ver.ABSENT:
                continue  # released meanwhile: try again
            if not self._dead_here(other):
                if self._looks_fresh(other) or not self._unchanged_for_lease(seen):
                    raise self.busy(other)
            try:
                self.version = ver.put(self.path, self._doc(), seen)
            except ver.ObjectChanged:
                msg = f"Could not lock {self.path}: another run took it first."
                raise OutputLockedError(msg) from None
            log.info("took over the lock of a dead run (pid %s)", other.get("pid"))
            return
        raise OutputLockedError(f"Could not lock {self.path}: another run took it first.")

    def renew(self) -> bool:
        """One heartbeat: rewrite the lock only if it is still ours. False once it is not."""
        if self.lost or self.version == ver.ABSENT:
            return False
        try:
            self.version = ver.put(self.path, self._doc(), self.version)
            return True
        except ver.ObjectChanged:
            self.lost = True
            log.error(
                "the lock %s was taken over by another run; this run no longer renews it",
                self.path,
            )
            return False

    def start_heartbeat(self) -> None:
        self._stop.clear()
        self._beat = threading.Thread(target=self._run_beat, name="lock-heartbeat", daemon=True)
        self._beat.start()

    def _run_beat(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                if not self.renew():
                    return
            except Exception as exc:  # a missed beat is retried; the lease allows three
                log.warning("could not renew the lock: %s", storage.redact(str(exc)))

    def release(self) -> None:
        """Stop beating and delete the lock if it is still ours."""
        self._stop.set()
        if self._beat is not None:
            self._beat.join(timeout=5)
            self._beat = None
        if self.version != ver.ABSENT and not self.lost:
            ver.delete(self.path, self.version)
        self.version = ver.ABSENT
