"""The per-item return value of ``export_batch``: one manifest per place, in place order
(contract §2.16), read on demand. A run appends each manifest as one JSON line to a local
spool file as its writer reports it; memory keeps only each line's offset and length and the
status of its place, so the driver stays flat however many places there are, while ``len()``,
indexing, slicing and iteration work as on a list. ``list(manifests)`` makes a plain list.
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import weakref
from collections.abc import Iterator, Sequence
from typing import Any, overload

import numpy as np

_MISSING = -1


def _close_and_remove(fh: Any, path: str) -> None:
    try:
        fh.close()
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


class ManifestList(Sequence[dict[str, Any]]):
    """``n`` manifests, place ``i``'s at position ``i``; filled with :meth:`put`."""

    def __init__(self, n: int, spool_dir: str | None = None) -> None:
        fd, path = tempfile.mkstemp(
            prefix="rs_embed_ray_manifests_", suffix=".jsonl", dir=spool_dir
        )
        self._fh = os.fdopen(fd, "w+b")
        self._path = path
        self._lock = threading.Lock()
        self._end = 0
        self._offset = np.full(n, _MISSING, dtype=np.int64)
        self._length = np.zeros(n, dtype=np.int32)
        self._status = np.full(n, _MISSING, dtype=np.int16)
        self._status_names: list[str] = []
        # the spool goes when the list does (or at interpreter exit)
        self._finalizer = weakref.finalize(self, _close_and_remove, self._fh, path)

    def put(self, index: int, manifest: dict[str, Any]) -> None:
        """Store place ``index``'s manifest (a later put replaces an earlier one)."""
        data = (json.dumps(manifest, ensure_ascii=False) + "\n").encode("utf-8")
        status = str(manifest.get("status"))
        if status not in self._status_names:
            self._status_names.append(status)
        with self._lock:
            self._fh.seek(self._end)
            self._fh.write(data)
            self._offset[index] = self._end
            self._length[index] = len(data)
            self._end += len(data)
        self._status[index] = self._status_names.index(status)

    def missing(self) -> list[int]:
        """Places that have no manifest yet."""
        return [int(i) for i in np.flatnonzero(self._offset == _MISSING)]

    def statuses(self) -> list[str]:
        """Every place's ``status``, without reading the manifests."""
        names = self._status_names
        return ["" if c == _MISSING else names[c] for c in self._status.tolist()]

    def __len__(self) -> int:
        return len(self._offset)

    def _read(self, i: int) -> dict[str, Any]:
        off = int(self._offset[i])
        if off == _MISSING:
            raise LookupError(f"the manifest of place {i} was never recorded")
        with self._lock:
            self._fh.flush()
            self._fh.seek(off)
            data = self._fh.read(int(self._length[i]))
        return json.loads(data)

    @overload
    def __getitem__(self, index: int) -> dict[str, Any]: ...

    @overload
    def __getitem__(self, index: slice) -> list[dict[str, Any]]: ...

    def __getitem__(self, index: int | slice) -> dict[str, Any] | list[dict[str, Any]]:
        if isinstance(index, slice):
            return [self._read(i) for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("manifest index out of range")
        return self._read(i)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for i in range(len(self)):
            yield self._read(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, ManifestList | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # mutable, like a list

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.statuses():
            counts[s] = counts.get(s, 0) + 1
        return f"ManifestList({len(self)} manifests, statuses={counts})"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled (a Ray job's return value, multiprocessing): a plain list of manifests
        return (list, (list(self),))


__all__ = ["ManifestList"]
