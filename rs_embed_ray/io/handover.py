"""Items a step has just read or written, handed to the per-item writer of the same process,
so that each patch is read from its shard once after the fetch (by the model) and not again
by the writer (issue 17, item 3).

The last model's stage puts each place's patch (as read, before its forward) and embedding
(as written) here, keyed by shard path and place index, and the writer of the same process
takes them: the writer threads with the in-process executor, the model actor itself on Ray
(``pipeline.write.write_due_items``). Holding them is bounded (``MAX_BYTES``, oldest dropped
first); an item not here, because it was dropped, never put (a writer task in another
process) or taken already, is read from its shard as before. So dropping is always safe, and
the runner clears what is left when a run ends.
"""

from __future__ import annotations

import json
import threading
from collections import OrderedDict
from typing import Any

import numpy as np

# what the model may have handed over and the writers not yet taken: about 100 places of a
# 12x224x224 float32 patch, more than the writers lag behind the model in practice
MAX_BYTES = 256 * 1024 * 1024


class Handover:
    """``(shard path, index) -> (array, meta as JSON)``, taken once; thread-safe."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, int], tuple[np.ndarray, str]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        # for the run's log: items the writers got from here, items dropped past the bound,
        # and the most bytes held at once
        self.taken = 0
        self.dropped = 0
        self.peak_bytes = 0

    def put(self, path: str, index: int, arr: np.ndarray, meta: dict[str, Any]) -> None:
        """Hold ``arr`` (not copied: the caller gives up writing to it) and the meta as the
        shard stores it (JSON; the writer gets the same dict a read would give)."""
        text = json.dumps(meta, ensure_ascii=False, default=repr)
        key = (str(path), int(index))
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self._bytes -= old[0].nbytes
            self._items[key] = (arr, text)
            self._bytes += arr.nbytes
            while self._bytes > self.max_bytes and self._items:
                _, (dropped, _) = self._items.popitem(last=False)
                self._bytes -= dropped.nbytes
                self.dropped += 1
            self.peak_bytes = max(self.peak_bytes, self._bytes)

    def take(self, path: str, index: int) -> tuple[np.ndarray, dict[str, Any]] | None:
        """The item, removed from here; None when it is not here (read its shard)."""
        with self._lock:
            item = self._items.pop((str(path), int(index)), None)
            if item is None:
                return None
            self._bytes -= item[0].nbytes
            self.taken += 1
        return item[0], json.loads(item[1])

    def held_bytes(self) -> int:
        return self._bytes

    def clear(self) -> dict[str, int]:
        """Drop what is held; return the counts since the last clear, and reset them."""
        with self._lock:
            stats = {
                "taken": self.taken,
                "dropped": self.dropped,
                "left": len(self._items),
                "peak_mb": self.peak_bytes // 2**20,
            }
            self._items.clear()
            self._bytes = 0
            self.taken = self.dropped = self.peak_bytes = 0
        return stats


HANDOVER = Handover()  # the process's one: shard paths are unique to their run

__all__ = ["HANDOVER", "MAX_BYTES", "Handover"]
