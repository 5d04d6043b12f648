"""One step's result for every place of a run (a fetch group's patches, a model's
embeddings), kept compact: the driver holds one of these per group and per model for the
whole run, so at a million places a dict of dicts per place (about 1 KB each) would not fit a
head node, while a few numpy columns plus interned shard paths and shapes take about 10 bytes
per place. It reads and writes like ``dict[int, {"status", "shard", "error", "shape"}]``.
"""

from __future__ import annotations

import json
from collections.abc import Hashable, Iterator, Mapping, MutableMapping
from typing import Any

import numpy as np

from rs_embed_ray.io.lazy import LazySequence

Src = dict[str, Any]  # one step's result: {"status", "shard" (absolute), "error", "shape"}

_ABSENT = -1


def step_src(status: Any, shard: Any, error: Any, shape: Any) -> Src:
    """A step's result as a stage returns it (``schema.RESULT``: status, error text, shard
    path, shape as JSON; "" when absent) in the form the tables and writers read."""
    return {
        "status": str(status),
        "shard": str(shard),
        "error": str(error) or None,
        "shape": json.loads(shape) if shape else None,
    }


class _Interned:
    """Values seen so far, each stored once; a column holds their numbers."""

    def __init__(self) -> None:
        self.values: list[Any] = []
        self._ids: dict[Hashable, int] = {}

    def id_of(self, value: Any) -> int:
        key: Hashable = tuple(value) if isinstance(value, list) else value
        got = self._ids.get(key)
        if got is None:
            got = self._ids[key] = len(self.values)
            self.values.append(value)
        return got


class StepTable(MutableMapping[int, Src]):
    """Place index (0 <= i < n) -> that place's step result; absent until set."""

    def __init__(self, n: int) -> None:
        self._status = np.full(n, _ABSENT, dtype=np.int16)
        self._shard = np.full(n, _ABSENT, dtype=np.int32)
        self._shape = np.full(n, _ABSENT, dtype=np.int32)
        self._errors: dict[int, str] = {}  # only failed steps have one
        self._statuses = _Interned()
        self._shards = _Interned()
        self._shapes = _Interned()

    def __len__(self) -> int:
        return int(np.count_nonzero(self._status != _ABSENT))

    def __iter__(self) -> Iterator[int]:
        return (int(i) for i in np.flatnonzero(self._status != _ABSENT))

    def _check(self, index: object) -> int:
        if not isinstance(index, int | np.integer) or not 0 <= int(index) < len(self._status):
            raise KeyError(index)
        return int(index)

    def __contains__(self, index: object) -> bool:
        try:
            return bool(self._status[self._check(index)] != _ABSENT)
        except KeyError:
            return False

    def __getitem__(self, index: int) -> Src:
        i = self._check(index)
        code = int(self._status[i])
        if code == _ABSENT:
            raise KeyError(index)
        shape = self._shapes.values[self._shape[i]] if self._shape[i] != _ABSENT else None
        return {
            "status": self._statuses.values[code],
            "shard": self._shards.values[self._shard[i]] if self._shard[i] != _ABSENT else None,
            "error": self._errors.get(i),
            "shape": list(shape) if shape is not None else None,
        }

    def __setitem__(self, index: int, src: Mapping[str, Any]) -> None:
        i = self._check(index)
        self._status[i] = self._statuses.id_of(str(src["status"]))
        shard, shape, error = src.get("shard"), src.get("shape"), src.get("error")
        self._shard[i] = _ABSENT if shard is None else self._shards.id_of(str(shard))
        self._shape[i] = _ABSENT if shape is None else self._shapes.id_of(list(shape))
        if error:
            self._errors[i] = str(error)
        else:
            self._errors.pop(i, None)

    def __delitem__(self, index: int) -> None:
        i = self._check(index)
        if self._status[i] == _ABSENT:
            raise KeyError(index)
        self._status[i] = self._shard[i] = self._shape[i] = _ABSENT
        self._errors.pop(i, None)

    @classmethod
    def uniform(cls, n: int, src: Mapping[str, Any]) -> StepTable:
        """Every place of ``n`` with the same result ``src`` (one numpy fill, no loop)."""
        table = cls(n)
        if n:
            table[0] = src
            table._status[:] = table._status[0]
            table._shard[:] = table._shard[0]
            table._shape[:] = table._shape[0]
            if src.get("error"):
                table._errors = dict.fromkeys(range(n), str(src["error"]))
        return table

    def status_is(self, index: int, status: str) -> bool:
        """``self[index]["status"] == status`` without building the record (hot path)."""
        code = int(self._status[index])
        return code != _ABSENT and self._statuses.values[code] == status

    def nbytes(self) -> int:
        """About what the table holds in memory (columns and interned values)."""
        cols = self._status.nbytes + self._shard.nbytes + self._shape.nbytes
        return cols + sum(len(str(s)) + 50 for s in self._shards.values) + 100 * len(self._errors)


class StepRows(LazySequence):
    """``(i, table[i])`` for the places ``indices`` of a step table, made when read: what a
    combined file's stack iterates, without a record per place held for the whole write."""

    def __init__(self, table: Mapping[int, Src], indices: Any) -> None:
        self.table = table
        self.index_array = np.asarray(indices, dtype=np.int64).reshape(-1)

    def __len__(self) -> int:
        return len(self.index_array)

    def _item(self, k: int) -> tuple[int, Src]:
        i = int(self.index_array[k])
        return i, self.table[i]


__all__ = ["Src", "StepRows", "StepTable", "step_src"]
