"""The combined sink shared by the array formats (npz, netCDF): one variable per stack.

Each model's inputs and embeddings are written in model order, stacked when every row is
present and alike (contract §2.8.4; inputs also when some rows are missing, with
``indices``), else as per-place keys with ``indices``: the same in both formats, as rs-embed
writes them. A format supplies only its streaming writer (``add`` / ``stream`` / ``keys`` /
``abort``) and how the manifest is committed into it.
"""

from __future__ import annotations

import logging
from abc import abstractmethod
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.io import quantize as q
from rs_embed_ray.io.formats.base import (
    CombinedSink,
    Format,
    ModelColumns,
    Places,
    Stack,
    sha1_refs,
)
from rs_embed_ray.io.manifest import array_sha1

log = logging.getLogger(__name__)


def write_stack(writer: Any, stack: Stack | None, n: int) -> dict[str, Any] | None:
    """Write one stack through ``writer``; return its manifest reference (None: no rows)."""
    if stack is None or not stack.items:
        return None
    shapes = stack.row_shapes()
    indices = stack.indices
    if stack.dtype != q.FLOAT32:
        return write_coded_stack(writer, stack, n)
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


def quant_ref(key: str, dtype: str, keys: tuple[str, str] | None) -> dict[str, Any]:
    """What a reference says of stored codes: their dtype and, for int8, where the scales
    and offsets are."""
    desc = dict(q.file_attribute(dtype) or {})
    if keys is not None:
        desc.update(scale_key=keys[0], offset_key=keys[1])
    return {"dtype": dtype, "quantization": desc}


def write_coded_stack(writer: Any, stack: Stack, n: int) -> dict[str, Any]:
    """A stack stored as ``stack.dtype`` codes: stacked (with its scales and offsets, int8)
    when every row is present and alike, else per-place keys, as float32 stacks are."""
    shapes, indices, dtype = stack.row_shapes(), stack.indices, stack.dtype
    quant = q.is_quantized(dtype)
    if len(shapes) == 1 and len(indices) == n:
        row_shape = next(iter(shapes))
        scales: list[np.ndarray] = []
        offsets: list[np.ndarray] = []

        def codes() -> Any:
            for _, row in stack.rows():
                c, s, o = q.encode(row, dtype)
                if quant:
                    scales.append(s)  # type: ignore[arg-type]
                    offsets.append(o)  # type: ignore[arg-type]
                yield c

        writer.stream(stack.key, row_shape, codes(), n, dtype=dtype)
        ref = {"npz_key": stack.key, "shape": [n, *row_shape]}
        keys = None
        if quant:
            keys = (q.scale_key(stack.key), q.offset_key(stack.key))
            writer.add(keys[0], np.stack(scales).astype(np.float32))  # small: no vector axis
            writer.add(keys[1], np.stack(offsets).astype(np.float32))
        return {**ref, **quant_ref(stack.key, dtype, keys)}
    names = []
    for i, arr in stack.rows():
        key = f"{stack.point_key}__{i:05d}"
        c, s, o = q.encode(arr, dtype)
        writer.add(key, c)
        if quant:
            writer.add(q.scale_key(key), np.asarray(s))
            writer.add(q.offset_key(key), np.asarray(o))
        names.append(key)
    first = (q.scale_key(stack.point_key), q.offset_key(stack.point_key)) if quant else None
    return {"npz_keys": names, "indices": indices, **quant_ref(stack.point_key, dtype, first)}


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


@dataclass
class CheckView:
    """An open array file as the integrity checks see it."""

    names: set[str]  # every variable (coordinates included)
    data_keys: list[str]  # the data arrays
    read: Callable[[str], np.ndarray]  # float32


class ArrayFileFormat(Format):
    """A format holding named arrays (npz, netCDF): the resume checks are the same for
    all of them, given a way to open the file (``check_view``)."""

    keys_field: ClassVar[str]  # the manifest field listing the file's arrays
    decode_all: ClassVar[bool] = False  # a combined file's check reads every array

    @abstractmethod
    def check_view(self, path: Path) -> AbstractContextManager[CheckView]: ...

    def intact(self, path: Path, manifest: dict[str, Any]) -> bool:
        refs = sha1_refs(manifest)
        try:
            with self.check_view(path) as v:
                if any(k not in v.names for k in manifest.get(self.keys_field, [])):
                    return False
                if any(array_sha1(v.read(r["npz_key"])) != r["sha1"] for r in refs):
                    return False
                if not refs and self.decode_all:  # combined: every array decodes
                    for k in v.data_keys:
                        v.read(k)
            return True
        except Exception as exc:
            log.warning("existing output %s is unreadable (%s); it will be rewritten", path, exc)
            return False

    def matches(self, path: Path, arrays: dict[str, Any]) -> bool:
        try:
            with self.check_view(path) as v:
                if set(v.data_keys) != set(arrays):
                    return False
                got = {k: v.read(k) for k in arrays}
        except Exception as exc:
            log.warning("existing output %s is unreadable (%s); it will be rewritten", path, exc)
            return False
        return all(
            list(got[k].shape) == list(r["shape"]) and array_sha1(got[k]) == r["sha1"]
            for k, r in arrays.items()
        )
