"""What a file format is to the rest of the package: the interface every plug-in implements.

Layout code (per-item and combined assembly, plan, loader, resume) asks a :class:`Format`
for what differs between file types and never branches on a format's name. The idea is
xarray's ``BackendEntrypoint`` (a named backend with ``guess_can_open`` and a reader) plus,
for the combined file, Ray Data's ``Datasink`` (``on_write_start`` / ``write`` /
``on_write_complete`` / ``on_write_failed``) so a combined file appears whole or not at all.
Pure Python, no ray.
"""

from __future__ import annotations

import math
import os
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from rs_embed_ray.io.lazy import JsonSpool
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.steptable import StepRows

Arrays = dict[str, np.ndarray]  # array key -> array
Doc = dict[str, Any]  # a manifest, or a file's attributes

# -- what the combined writer hands a sink -------------------------------------------------


def spatial_lonlat(spatial: Any) -> tuple[float, float]:
    """``(lon, lat)`` of a serialised PointBuffer, the centre of a BBox, else NaNs."""
    if isinstance(spatial, dict):
        try:
            if "lon" in spatial and "lat" in spatial:
                return float(spatial["lon"]), float(spatial["lat"])
            if all(k in spatial for k in ("minlon", "minlat", "maxlon", "maxlat")):
                return (
                    (float(spatial["minlon"]) + float(spatial["maxlon"])) / 2.0,
                    (float(spatial["minlat"]) + float(spatial["maxlat"])) / 2.0,
                )
        except (TypeError, ValueError):
            pass
    return math.nan, math.nan


def select_channels(arr: np.ndarray, channels: list[int] | None) -> np.ndarray:
    """The model's own channels of a band-union patch (all of them when ``None``)."""
    if channels is None:
        return arr
    return np.ascontiguousarray(np.take(arr, channels, axis=-3))


@dataclass
class Stack:
    """One model's inputs or embeddings over the places, read lazily from the shards.

    ``items`` are the places that have a row, in place order, with their shard records
    (``{"shard", "shape", ...}``). Every read records the row's meta in ``metas``.
    """

    key: str  # the stacked array key (``inputs_bchw__<k>`` / ``embeddings__<k>``)
    point_key: str  # per-place keys are ``<point_key>__<index:05d>``
    items: StepRows  # the places that have a row, with their step records
    reader: ShardReader
    channels: list[int] | None = None
    partial_stacked: bool = False  # stacked with ``indices`` even when rows are missing
    dtype: str = "float32"  # how the rows are stored (io.quantize)
    # place -> its row's meta, as read, on disk until the manifest is written; None: not
    # kept (inputs: the manifest has no metas for them)
    metas: JsonSpool | None = None
    weights: Any = None  # the weights record, popped from the first place's meta
    weights_from: int | None = None  # the place it came from (None: no meta read yet)

    @property
    def indices(self) -> list[int]:
        return self.items.index_array.tolist()

    def record_meta(self, index: int, meta: Any) -> None:
        """Keep place ``index``'s meta for the manifest. Its ``weights`` record (the same
        for every place) is kept once, from the first place, as the manifest lists it."""
        if self.metas is None:
            return
        if isinstance(meta, dict):
            w = meta.pop("weights", None)
            if self.weights_from is None or index < self.weights_from:
                self.weights, self.weights_from = w, index
        self.metas[index] = meta

    def row_shapes(self) -> set[tuple[int, ...]]:
        """The recorded row shapes (after channel selection), without reading any data."""
        shapes = {tuple(src["shape"] or ()) for _, src in self.items}
        if self.channels is not None:
            shapes = {(*s[:-3], len(self.channels), *s[-2:]) for s in shapes}
        return shapes

    def read(self, index: int, src: dict[str, Any]) -> np.ndarray:
        arr, meta = self.reader.read(src["shard"], index)
        self.record_meta(index, meta)
        return select_channels(np.asarray(arr, dtype=np.float32), self.channels)

    def rows(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(place, row)`` in place order; memory holds one row at a time."""
        for i, src in self.items:
            yield i, self.read(i, src)


@dataclass
class ModelColumns:
    """One model's share of the combined file: what failed where, and what to store."""

    spec: dict[str, Any]  # the model's entry of the writer context (name, key, sensor, ...)
    errors: dict[int, str]  # places without an embedding, with the reason
    inputs: Stack | None  # None: not saved here (not requested, or another model's)
    embeddings: Stack | None  # None: embeddings not saved
    chip_size: tuple[int, int] | None = None  # the fetched patch (y, x) when all are alike


@dataclass
class Places:
    """The places of a combined file, in order (manifest forms)."""

    spatials: Sequence[dict[str, Any]]
    names: list[str]
    centers: Sequence[tuple[float, float]]
    temporal: dict[str, Any]  # the run's window
    temporals: Sequence[dict[str, Any] | None] | None  # each place's own window, when any

    def __len__(self) -> int:
        return len(self.spatials)


def serial_map(fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
    """``[fn(j) for j in jobs]``: how a sink runs independent jobs when no pipeline is given."""
    return [fn(j) for j in jobs]


class CombinedSink(ABC):
    """Writes one combined file; the file appears at its path only on completion.

    ``parallel_map(fn, jobs)`` runs independent, picklable jobs and returns their results in
    order: the pipeline sets it to Ray tasks, so a sink whose file takes disjoint regions
    (Zarr) is written by many tasks; a single-stream file (npz, netCDF) ignores it.
    """

    parallel_map: Callable[[Callable[[Any], Any], list[Any]], list[Any]] = staticmethod(serial_map)
    # A sink whose file is made of disjoint regions sets ``region_fn`` (what a task runs on one
    # region job): then ``io.assemble.CombinedStream`` has its regions written while batches
    # finish. ``done_jobs`` are the jobs those tasks finished; ``write`` skips them.
    region_fn: Callable[[Any], Any] | None = None
    done_jobs: frozenset[Any] = frozenset()

    def region_places(self) -> list[tuple[str, tuple[int, ...]]]:
        """After ``on_write_start``: each region's stack key and places, in job order."""
        return []

    def region_job(self, k: int, shards: Sequence[str]) -> Any:
        """Region ``k``'s job, its rows read from ``shards`` (one per place, in order)."""
        raise NotImplementedError(f"{type(self).__name__} writes no regions")

    @abstractmethod
    def on_write_start(self, places: Places, models: list[ModelColumns]) -> None:
        """Check what will be written (raise before anything exists) and open the file."""

    @abstractmethod
    def write(self, models: list[ModelColumns]) -> list[dict[str, Any]]:
        """Write every model's rows; return per model its ``{"inputs", "embeddings"}`` refs
        (manifest form, ``None`` where nothing was stored)."""

    @abstractmethod
    def on_write_complete(self, manifest: dict[str, Any]) -> None:
        """Add the format's fields to ``manifest``, embed what the format keeps, commit."""

    @abstractmethod
    def on_write_failed(self, error: BaseException) -> None:
        """Remove whatever was written (safe to call before ``on_write_start``)."""


# -- reading --------------------------------------------------------------------------------


class ArrayReader(ABC):
    """One open file's arrays, by array key; what the loader's ``_ArrayFile`` wraps."""

    path: str
    keys: list[str]  # array keys, in file order
    names: set[str]  # every name ``read`` accepts (keys and any aliases)
    coords: dict[str, np.ndarray]
    attrs: dict[str, Any]

    @abstractmethod
    def read(self, key: str) -> np.ndarray: ...

    def shape(self, key: str) -> tuple[int, ...] | None:
        """Shape without reading the data, or ``None`` where the format cannot tell."""
        return None

    def file_spatials(self) -> list[dict[str, Any]] | None:
        """Places stored in the file itself (not only in its manifest), else ``None``."""
        return None

    def file_temporals(self) -> list[dict[str, Any] | None] | None:
        return None

    @abstractmethod
    def close(self) -> None: ...


# -- the plug-in ----------------------------------------------------------------------------


class Format(ABC):
    """A file format: its name, extensions, writers, reader and integrity checks."""

    name: ClassVar[str]
    extensions: ClassVar[tuple[str, ...]]  # the first is what the writers use
    aliases: ClassVar[tuple[str, ...]] = ()  # other suffixes a user may mean it by (not read)
    per_item: ClassVar[bool] = True  # can hold one place's file (layout per_item)
    embeds_manifest: ClassVar[bool] = False  # the manifest is inside the file too
    magic: ClassVar[tuple[bytes, ...]] = ()  # what the file starts with
    directory_store: ClassVar[bool] = False  # one export is a directory (a Zarr store)
    dtypes: ClassVar[tuple[str, ...]] = ("float32", "float16", "int8")  # vector storage

    @property
    def ext(self) -> str:
        return self.extensions[0]

    def guess_can_open(self, path: str | os.PathLike[str]) -> bool:
        """Whether ``path`` is named like one of ours (contents are checked on open)."""
        return os.path.splitext(os.fspath(path))[1].lower() in self.extensions

    def check_request(self, layout: str, output_mode: str, save_inputs: bool) -> None:
        """Refuse (``ModelError``) a request this format cannot hold; planning calls it.
        Every layout, output and input choice is fine by default."""
        return

    # writing
    @abstractmethod
    def write_item(self, path: Path, arrays: Arrays, manifest: Doc, attrs: Doc) -> None:
        """Write one place's file atomically; record its path and keys in ``manifest``."""

    @abstractmethod
    def combined_sink(self, path: Path, attrs: dict[str, Any]) -> CombinedSink: ...

    # reading
    @abstractmethod
    def open_reader(self, path: str) -> ArrayReader: ...

    def header_problem(self, path: str, keys: list[str]) -> str | None:
        """Why the file's headers do not back a manifest listing ``keys`` (None: they do).
        Reads headers only; the default checks the magic bytes."""
        try:
            with open(path, "rb") as fh:
                head = fh.read(8)
        except FileNotFoundError:
            return "the array file is missing"
        except OSError as exc:
            return f"it cannot be read ({exc})"
        if not any(head.startswith(m) for m in self.magic):
            return f"it does not start like a {self.name} file"
        return None

    # integrity (resume)
    @abstractmethod
    def intact(self, path: Path, manifest: dict[str, Any]) -> bool:
        """The file holds what its manifest says (resume skips it only then)."""

    def matches(self, path: Path, arrays: dict[str, Any]) -> bool:
        """The file holds exactly ``arrays`` (``{key: {"shape", "sha1"}}``, from the run log,
        when there is no sidecar). Formats without per-item files never match."""
        return False


def sha1_refs(manifest: dict[str, Any]) -> list[dict[str, Any]]:
    """The array references of a per-item manifest that carry a digest to verify."""
    refs: list[dict[str, Any]] = []
    for e in manifest.get("models", []):
        for k in ("input", "embedding"):
            if isinstance(e.get(k), dict) and "sha1" in e[k] and not e[k].get("dedup_reused"):
                refs.append(e[k])
    return refs
