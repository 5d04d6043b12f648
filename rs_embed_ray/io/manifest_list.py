"""The per-item return value of ``export_batch``: one manifest per place, in place order
(contract §2.16), read on demand. A run appends each manifest as one JSON line to a local
spool file as its writer reports it (``io.lazy.JsonSpool``); memory keeps only each line's
offset and length and the status of its place, so the driver stays flat however many places
there are, while ``len()``, indexing, slicing and iteration work as on a list.
``list(manifests)`` makes a plain list.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from rs_embed_ray.io.lazy import JsonSpool

_MISSING = -1


class ManifestList(JsonSpool):
    """``n`` manifests, place ``i``'s at position ``i``; filled with :meth:`put`."""

    def __init__(self, n: int, spool_dir: str | None = None) -> None:
        super().__init__(n, spool_dir)
        self._status = np.full(n, _MISSING, dtype=np.int16)
        self._status_names: list[str] = []

    def put(self, index: int, manifest: dict[str, Any]) -> None:
        """Store place ``index``'s manifest (a later put replaces an earlier one)."""
        super().put(index, manifest)
        status = str(manifest.get("status"))
        if status not in self._status_names:
            self._status_names.append(status)
        self._status[index] = self._status_names.index(status)

    __setitem__ = put

    def statuses(self) -> list[str]:
        """Every place's ``status``, without reading the manifests."""
        names = self._status_names
        return ["" if c == _MISSING else names[c] for c in self._status.tolist()]

    def _absent(self, i: int) -> Any:
        raise LookupError(f"the manifest of place {i} was never recorded")

    def __repr__(self) -> str:
        counts: dict[str, int] = {}
        for s in self.statuses():
            counts[s] = counts.get(s, 0) + 1
        return f"ManifestList({len(self)} manifests, statuses={counts})"


__all__ = ["ManifestList"]
