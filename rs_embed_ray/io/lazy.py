"""Per-place sequences that are read on demand, so a run of a million places never holds a
million manifests, metas or spatial dicts in the driver at once.

:class:`LazySequence` reads like a read-only list (``len()``, indexing, slicing, iteration,
``==`` with a list); ``list(x)`` makes a plain list, and pickling (a Ray job's return value)
sends one. ``io.atomic.write_json`` and ``io.manifest.jsonable`` stream them item by item;
``json.dumps`` of a value holding one needs ``default=list``.

- :class:`PerPlace`: a value computed from the place's index when read (the plan's spatials
  in their manifest form).
- :class:`JsonSpool`: JSON values kept in a local temp file, one line each; memory holds only
  each line's offset and length (the metas of a combined manifest, the per-item manifests).
"""

from __future__ import annotations

import json
import os
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Sequence
from typing import Any, overload

import numpy as np

_MISSING = -1


class LazySequence(Sequence[Any]):
    """A read-only list whose items are made when read (subclasses say how: ``_item``)."""

    def _item(self, i: int) -> Any:
        raise NotImplementedError

    @overload
    def __getitem__(self, index: int) -> Any: ...

    @overload
    def __getitem__(self, index: slice) -> list[Any]: ...

    def __getitem__(self, index: int | slice) -> Any:
        if isinstance(index, slice):
            return [self._item(i) for i in range(*index.indices(len(self)))]
        i = int(index)
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError(f"{type(self).__name__} index out of range")
        return self._item(i)

    def __iter__(self) -> Iterator[Any]:
        for i in range(len(self)):
            yield self._item(i)

    def __eq__(self, other: object) -> bool:
        if isinstance(other, LazySequence | list | tuple):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other, strict=True))
        return NotImplemented

    __hash__ = None  # type: ignore[assignment]  # compares like a list

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self)} items)"

    def __reduce__(self) -> tuple[Any, tuple[Any, ...]]:
        # pickled (a Ray job's return value, multiprocessing): a plain list
        return (list, (list(self),))


class PerPlace(LazySequence):
    """``n`` values, the ``i``-th being ``value(i)``, computed each time it is read."""

    def __init__(self, n: int, value: Callable[[int], Any]) -> None:
        self._n, self._value = n, value

    def __len__(self) -> int:
        return self._n

    def _item(self, i: int) -> Any:
        return self._value(i)


def _close_and_remove(fh: Any, path: str) -> None:
    try:
        fh.close()
    finally:
        try:
            os.remove(path)
        except OSError:
            pass


class JsonSpool(LazySequence):
    """``n`` JSON values, place ``i``'s at position ``i``, ``None`` until :meth:`put`.

    The values live in a temp file (in ``spool_dir``, else the system's) that goes when the
    spool does; a later put replaces an earlier one. Safe to put from several threads."""

    def __init__(self, n: int, spool_dir: str | None = None) -> None:
        fd, path = tempfile.mkstemp(prefix="rs_embed_ray_spool_", suffix=".jsonl", dir=spool_dir)
        self._fh = os.fdopen(fd, "w+b")
        self._path = path
        self._lock = threading.Lock()
        self._end = 0
        self._offset = np.full(n, _MISSING, dtype=np.int64)
        self._length = np.zeros(n, dtype=np.int32)
        # the spool file goes when the sequence does (or at interpreter exit)
        self._finalizer = weakref.finalize(self, _close_and_remove, self._fh, path)

    def put(self, index: int, value: Any) -> None:
        """Store place ``index``'s value."""
        data = (json.dumps(value, ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            self._fh.seek(self._end)
            self._fh.write(data)
            self._offset[index] = self._end
            self._length[index] = len(data)
            self._end += len(data)

    __setitem__ = put

    def missing(self) -> list[int]:
        """Places that have no value yet."""
        return [int(i) for i in np.flatnonzero(self._offset == _MISSING)]

    def __len__(self) -> int:
        return len(self._offset)

    def _absent(self, i: int) -> Any:
        return None

    def _item(self, i: int) -> Any:
        off = int(self._offset[i])
        if off == _MISSING:
            return self._absent(i)
        with self._lock:
            self._fh.flush()
            self._fh.seek(off)
            data = self._fh.read(int(self._length[i]))
        return json.loads(data)


__all__ = ["JsonSpool", "LazySequence", "PerPlace"]
