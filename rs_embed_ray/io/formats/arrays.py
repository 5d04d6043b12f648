"""The combined sink shared by the array formats (npz, netCDF): one variable per stack.

Each model's inputs and embeddings are written in model order, stacked when every row is
present and alike (contract §2.8.4; inputs also when some rows are missing, with
``indices``), else as per-place keys with ``indices``: the same in both formats, as rs-embed
writes them. A format supplies only its streaming writer (``add`` / ``stream`` / ``keys`` /
``abort``) and how the manifest is committed into it.
"""

from __future__ import annotations

from abc import abstractmethod
from pathlib import Path
from typing import Any

from rs_embed_ray.io.formats.base import CombinedSink, ModelColumns, Places, Stack


def write_stack(writer: Any, stack: Stack | None, n: int) -> dict[str, Any] | None:
    """Write one stack through ``writer``; return its manifest reference (None: no rows)."""
    if stack is None or not stack.items:
        return None
    shapes = stack.row_shapes()
    indices = stack.indices
    if len(shapes) == 1 and (len(indices) == n or stack.partial_stacked):
        row_shape = next(iter(shapes))
        rows = (a for _, a in stack.rows())
        writer.stream(stack.key, row_shape, rows, len(indices))
        ref = {"npz_key": stack.key, "shape": [len(indices), *row_shape], "dtype": "float32"}
        if len(indices) < n:
            ref["indices"] = indices
        return ref
    keys = []
    for i, arr in stack.rows():
        key = f"{stack.point_key}__{i:05d}"
        writer.add(key, arr)
        keys.append(key)
    return {"npz_keys": keys, "indices": indices, "dtype": "float32"}


class ArraySink(CombinedSink):
    """Stacks of one model after another into a streaming array writer."""

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path = path
        self.attrs = attrs
        self.writer: Any = None
        self.n = 0

    @abstractmethod
    def open_writer(self, places: Places) -> Any: ...

    def on_write_start(self, places: Places, models: list[ModelColumns]) -> None:
        self.n = len(places)
        self.writer = self.open_writer(places)

    def write(self, models: list[ModelColumns]) -> list[dict[str, Any]]:
        out = []
        for m in models:
            inputs = write_stack(self.writer, m.inputs, self.n)  # inputs first (rs-embed's order)
            embeddings = write_stack(self.writer, m.embeddings, self.n)
            out.append({"inputs": inputs, "embeddings": embeddings})
        return out

    def on_write_failed(self, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.abort()
