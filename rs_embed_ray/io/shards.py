"""Shard files of the run state: many places' arrays + JSON metas in one uncompressed npz.

A fetch or inference batch writes one shard; the log maps each (step, place) to its shard.
Keys are ``d<index>`` (array) and ``m<index>`` (meta, UTF-8 JSON as uint8).
"""

from __future__ import annotations

import io
import json
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.handover import Handover
from rs_embed_ray.io.npz import write_npz
from rs_embed_ray.io.zipread import NpzMembers


def write_shard(path: str | Path, items: Mapping[int, tuple[np.ndarray, dict[str, Any]]]) -> None:
    arrays: dict[str, np.ndarray] = {}
    for index, (arr, meta) in items.items():
        arrays[f"d{index}"] = np.ascontiguousarray(arr, dtype=np.float32)
        arrays[f"m{index}"] = np.frombuffer(
            json.dumps(meta, ensure_ascii=False, default=repr).encode("utf-8"), dtype=np.uint8
        )
    write_npz(path, arrays, compress=False)


class ShardReader:
    """Reads items from shards, keeping a few files open (places arrive mostly in order).
    Given a ``handover``, an item handed over there is taken from it instead of its shard."""

    def __init__(self, max_open: int = 8, handover: Handover | None = None) -> None:
        self._open: OrderedDict[str, NpzMembers] = OrderedDict()
        self.max_open = max_open
        self.handover = handover

    def _file(self, path: str) -> NpzMembers:
        fh = self._open.pop(path, None)
        if fh is None:
            if storage.is_remote(path):  # one GET of the whole shard (a few MB at most)
                fh = NpzMembers(io.BytesIO(storage.read_bytes(storage.as_path(path))))
            else:
                fh = NpzMembers(path)
            while len(self._open) >= self.max_open:
                _, old = self._open.popitem(last=False)
                old.close()
        self._open[path] = fh
        return fh

    def _handed_over(self, path: str | Path, index: int) -> tuple[np.ndarray, dict] | None:
        return None if self.handover is None else self.handover.take(str(path), index)

    def read(self, path: str | Path, index: int) -> tuple[np.ndarray, dict[str, Any]]:
        item = self._handed_over(path, index)
        if item is not None:
            return item
        fh = self._file(str(path))
        arr = fh.array(f"d{index}")
        meta = json.loads(fh.array(f"m{index}").tobytes().decode("utf-8"))
        return arr, meta

    def read_meta(self, path: str | Path, index: int) -> dict[str, Any]:
        """The item's meta only (its array is not read)."""
        item = self._handed_over(path, index)
        if item is not None:
            return item[1]
        return json.loads(self._file(str(path)).array(f"m{index}").tobytes().decode("utf-8"))

    def has(self, path: str | Path, index: int) -> bool:
        """True if the shard holds a readable copy of ``index`` (its CRC checked): a shard
        cut short or corrupted by a crash answers False, so resume redoes that step."""
        try:
            fh = self._file(str(path))
            if f"d{index}" not in fh:
                return False
            fh.raw(f"d{index}")  # reading the member checks its CRC
            fh.array(f"m{index}")
            return True
        except Exception:  # zipfile.BadZipFile, OSError, ValueError, EOFError, ...
            old = self._open.pop(str(path), None)
            if old is not None:
                old.close()
            return False

    def close(self) -> None:
        while self._open:
            _, fh = self._open.popitem()
            fh.close()
