"""The combined Zarr v3 store: created whole by the driver, filled region by region by tasks.

The driver creates every array up front (shapes are known once the stages have run) with
the same variables, dimensions, coordinates and attributes as the combined netCDF file
(``io.netcdf``: rs-embed's dim names, ``point`` / ``lon`` / ``lat`` / ``name``, CF
attributes). Each stacked array is chunked along ``point``; a *region* is one chunk of places
(or one shard, for image rows: grids and inputs are sharded, one place per inner chunk). Writer
tasks each fill whole regions, so no two tasks touch the same chunk object, and then write a
*marker*: 40 bytes in a small array of the hidden ``_rs_embed_ray`` group (``sha1`` of what the
region is made of, the source shard records, then ``sha1`` of the region's bytes). A region is
adopted on resume only when its marker matches both, so a region whose task died before its
marker, or whose chunk is torn, is written again. Nothing here renames files: every chunk and
marker object is written whole by zarr (atomic on object stores; on a local disk zarr 3 writes
a ``.partial`` temp file and renames it, so a crash leaves a stray temp file, never a torn
chunk). The store is opened in one function, :func:`open_root`, from a path or an fsspec URL.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import quantize as q
from rs_embed_ray.io.netcdf import FRAME_DIMS, POINT_DIM, dims_for, global_attrs, unique_dim
from rs_embed_ray.io.shards import ShardReader

MARKS = "_rs_embed_ray"  # the hidden group of region markers (xarray reads the root only)
LAYOUT_ATTR = "layout"  # (of the marker group) what the store was created for: resume compares it
MANIFEST_ATTR = "rs_embed_ray_manifest"  # written last: the store is complete
REGION_BYTES = 8 << 20  # about this many bytes of one array per region
MAX_REGION_ROWS = 4096
DIGEST = 20  # bytes of one sha1


def open_root(
    location: str | Path, mode: str, storage_options: dict[str, Any] | None = None
) -> Any:
    """The store's root group: the one place a store is opened (a path or an fsspec URL)."""
    import zarr

    kw: dict[str, Any] = {"storage_options": storage_options} if storage_options else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # consolidated metadata is not in v3 spec
        return zarr.open_group(store=str(location), mode=mode, zarr_format=3, **kw)


def consolidate(location: str | Path, storage_options: dict[str, Any] | None = None) -> None:
    import zarr

    kw: dict[str, Any] = {"storage_options": storage_options} if storage_options else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        zarr.consolidate_metadata(str(location), zarr_format=3, **kw)


def compressor() -> Any:
    """Blosc + Zstd with byte shuffle (the geoemb convention's recommendation)."""
    from zarr.codecs import BloscCodec

    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle")


def region_rows(row_shape: tuple[int, ...], n_rows: int) -> int:
    """Places per region: about ``REGION_BYTES`` of float32 rows, at least one."""
    row_bytes = 4 * max(1, math.prod(row_shape))
    return max(1, min(n_rows, MAX_REGION_ROWS, REGION_BYTES // row_bytes))


@dataclass
class ArraySpec:
    """One array of the store: a stacked variable (``per_place`` False) or one place's."""

    key: str
    shape: tuple[int, ...]
    dims: list[str]
    chunks: tuple[int, ...]
    shards: tuple[int, ...] | None
    attrs: dict[str, Any]
    dtype: str = q.FLOAT32  # int8 / float16 codes of embeddings (io.quantize)

    def doc(self) -> dict[str, Any]:
        doc = {
            "key": self.key,
            "shape": list(self.shape),
            "dims": self.dims,
            "chunks": list(self.chunks),
            "shards": list(self.shards) if self.shards else None,
        }
        if self.dtype != q.FLOAT32:  # float32 stores keep the layout they were created with
            doc["dtype"] = self.dtype
        return doc


class StoreLayout:
    """The arrays of a store, their dims (netCDF's naming rules) and their regions."""

    def __init__(self, n_places: int, coord_names: Iterable[str]) -> None:
        self.n = n_places
        self.coord_names = list(coord_names)
        self.sizes: dict[str, int] = {POINT_DIM: n_places}
        self.arrays: list[ArraySpec] = []
        self.regions: dict[str, int] = {}  # marker array -> number of regions

    def _dims(self, key: str, shape: tuple[int, ...]) -> list[str]:
        dims = []
        for name, size in zip(dims_for(key, len(shape)), shape, strict=True):
            cand = unique_dim(name, size, key, self.sizes)
            self.sizes.setdefault(cand, size)
            dims.append(cand)
        return dims

    def _attrs(self, key: str, shape: tuple[int, ...], dims: list[str]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        if dims[0] == POINT_DIM and "lon" in self.coord_names:
            attrs["coordinates"] = " ".join(
                c for c in ("lon", "lat", "name") if c in self.coord_names
            )
        if dims[0] == "d0" and "chw" in key and len(shape) in FRAME_DIMS:
            attrs["dims_meaning"] = FRAME_DIMS[len(shape)]
        return attrs

    def add_stacked(
        self, key: str, n_rows: int, row_shape: tuple[int, ...], dtype: str = q.FLOAT32
    ) -> int:
        """A ``(n_rows, *row_shape)`` array chunked along places (with int8's scales and
        offsets, chunked alike, so a region's task writes all three); returns rows per region."""
        rows = region_rows(row_shape, n_rows)
        self._add_stacked(key, n_rows, row_shape, rows, dtype)
        if q.is_quantized(dtype):
            side = side_shape(row_shape)
            self._add_stacked(q.scale_key(key), n_rows, side, rows, q.FLOAT32)
            self._add_stacked(q.offset_key(key), n_rows, side, rows, q.FLOAT32)
        self.regions[key] = max(1, math.ceil(n_rows / rows))
        return rows

    def _add_stacked(
        self, key: str, n_rows: int, row_shape: tuple[int, ...], rows: int, dtype: str
    ) -> None:
        shape = (n_rows, *row_shape)
        dims = self._dims(key, shape)
        image = len(row_shape) >= 3  # grids and inputs: shard, one place per inner chunk
        chunks = (1, *row_shape) if image else (rows, *row_shape)
        shards = (rows, *row_shape) if image else None
        attrs = self._attrs(key, shape, dims)
        self.arrays.append(ArraySpec(key, shape, dims, chunks, shards, attrs, dtype))

    def add_place(self, key: str, shape: tuple[int, ...], dtype: str = q.FLOAT32) -> None:
        """One place's array (and int8's scale and offset arrays beside it)."""
        whole = [(key, shape, dtype)]
        if q.is_quantized(dtype):
            side = side_shape(shape)
            whole += [(q.scale_key(key), side, q.FLOAT32), (q.offset_key(key), side, q.FLOAT32)]
        for name, shp, dt in whole:
            dims = self._dims(name, shp)
            chunks = tuple(max(1, s) for s in shp)
            self.arrays.append(ArraySpec(name, shp, dims, chunks, None, {}, dt))

    def add_marks(self, name: str, n_regions: int) -> None:
        self.regions[name] = max(1, n_regions)

    def doc(self) -> dict[str, Any]:
        return {
            "n": self.n,
            "arrays": [a.doc() for a in self.arrays],
            "regions": self.regions,
        }


def side_shape(row_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of one row's int8 scales (and offsets): the row without its vector axis."""
    axis = len(row_shape) + q.vector_axis(len(row_shape)) if row_shape else 0
    return tuple(s for k, s in enumerate(row_shape) if k != axis)


def _json_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    """Root attributes as the netCDF file has them (JSON strings for structured values)."""
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in attrs.items()}


def create_store(
    location: str | Path,
    layout: StoreLayout,
    coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> bool:
    """Create the store's arrays (no data yet); keep an existing store created for the same
    layout, so its finished regions can be adopted. Returns True when one was kept."""
    doc = json.dumps(layout.doc(), sort_keys=True)
    try:
        root = open_root(location, "r+")
        if root[MARKS].attrs.get(LAYOUT_ATTR) == doc:
            root.attrs.pop(MANIFEST_ATTR, None)  # incomplete again until the end
            _drop_partials(location)
            return True
    except (FileNotFoundError, ValueError, KeyError, TypeError, json.JSONDecodeError):
        pass
    except Exception as exc:
        if type(exc).__name__ not in ("GroupNotFoundError", "NodeTypeValidationError"):
            raise
    root = open_root(location, "w")
    _create_coords(root, layout.n, coords)
    for a in layout.arrays:
        root.create_array(
            a.key,
            shape=a.shape,
            dtype=a.dtype,
            chunks=a.chunks,
            shards=a.shards,
            compressors=compressor(),
            fill_value=-128 if a.dtype == q.INT8 else np.nan,  # netCDF's fills (-128 unused)
            dimension_names=a.dims,
            attributes=a.attrs,
        )
    marks = root.create_group(MARKS, attributes={LAYOUT_ATTR: doc})
    for name, n_regions in layout.regions.items():
        marks.create_array(
            name,
            shape=(n_regions, 2 * DIGEST),
            dtype="uint8",
            chunks=(1, 2 * DIGEST),
            compressors=None,
            fill_value=0,
        )
    root.attrs.update(_json_attrs(attrs))
    return False


def _drop_partials(location: str | Path) -> None:
    """Remove the temp files a crash left in a local store (zarr writes ``<chunk>.<uuid>
    .partial`` and renames it; object stores have none)."""
    if "://" in str(location):
        return
    for tmp in Path(location).rglob("*.partial"):
        tmp.unlink(missing_ok=True)


def _create_coords(root: Any, n: int, coords: Mapping[str, Any]) -> None:
    """``point`` (the place index) and the per-place coordinates, as in the netCDF file."""
    point = root.create_array(
        POINT_DIM,
        shape=(n,),
        dtype="int64",
        chunks=(max(1, n),),
        dimension_names=[POINT_DIM],
        attributes={"long_name": "place index (point_index)"},
    )
    point[:] = np.arange(n, dtype="int64")
    for name, values in coords.items():
        arr = np.asarray(values)
        if arr.dtype.kind in ("U", "O", "S"):
            var = root.create_array(
                name, shape=(n,), dtype=str, chunks=(max(1, n),), dimension_names=[POINT_DIM]
            )
            var[:] = np.asarray(["" if v is None else str(v) for v in arr.tolist()], dtype=object)
            continue
        attrs = {}
        if name == "lon":
            attrs = {"standard_name": "longitude", "units": "degrees_east"}
        elif name == "lat":
            attrs = {"standard_name": "latitude", "units": "degrees_north"}
        var = root.create_array(
            name,
            shape=(n,),
            dtype="float64",
            chunks=(max(1, n),),
            fill_value=np.nan,
            dimension_names=[POINT_DIM],
            attributes=attrs,
        )
        var[:] = arr.astype("f8")


def root_attributes(attrs: Mapping[str, Any], fmt: str = "zarr") -> dict[str, Any]:
    """The netCDF file's global attributes, with this format's ``history``."""
    out = global_attrs(attrs)
    out["history"] = f"Created by rs-embed-ray export_batch (format={fmt})"
    return out


# -- regions (run in writer tasks) -----------------------------------------------------------


def source_digest(records: Iterable[Any]) -> bytes:
    """What a region is made of (shard paths, places, channels): changes when any row does."""
    return hashlib.sha1(json.dumps(list(records), sort_keys=True).encode()).digest()


def data_digest(blocks: Iterable[np.ndarray]) -> bytes:
    """sha1 of the blocks as float32 (lossless for int8 / float16 codes too)."""
    h = hashlib.sha1()
    for b in blocks:
        h.update(np.ascontiguousarray(b, dtype=np.float32).tobytes())
    return h.digest()


@dataclass(frozen=True)
class RegionJob:
    """One writer task's work: fill one region of one stack and mark it done.

    ``rows`` are ``(place index, shard path)`` in place order. A stacked array gets rows
    ``start..start+len(rows)``; with ``point_key`` each row is its own array
    ``<point_key>__<index:05d>`` (rows of different shapes, as netCDF writes them).
    """

    location: str
    marks: str  # the marker array (the stack's key)
    region: int
    start: int
    rows: tuple[tuple[int, str], ...]
    channels: tuple[int, ...] | None = None
    point_key: str | None = None
    dtype: str = q.FLOAT32  # the rows are stored as these codes (io.quantize)

    def _source(self) -> bytes:
        parts: list[Any] = [self.marks, self.start, self.rows, self.channels, self.point_key]
        if self.dtype != q.FLOAT32:  # float32 regions keep the digests they were marked with
            parts.append(self.dtype)
        return source_digest(parts)

    def _keys(self) -> list[str]:
        return [f"{self.point_key}__{i:05d}" for i, _ in self.rows] if self.point_key else []

    def _arrays(self, key: str) -> list[str]:
        """``key`` and, for int8 codes, its scales and offsets: what a region fills."""
        if not q.is_quantized(self.dtype):
            return [key]
        return [key, q.scale_key(key), q.offset_key(key)]

    def stored(self, root: Any) -> list[np.ndarray]:
        """The region as the store holds it now (codes, then int8's scales and offsets)."""
        if self.point_key:
            return [np.asarray(root[a][...]) for k in self._keys() for a in self._arrays(k)]
        end = self.start + len(self.rows)
        return [np.asarray(root[a][self.start : end]) for a in self._arrays(self.marks)]

    def adoptable(self, root: Any) -> bool:
        """The marker says this region was written from these sources, and the bytes the
        store holds now are the ones it was written with."""
        mark = np.asarray(root[MARKS][self.marks][self.region])
        if not mark.any() or mark[:DIGEST].tobytes() != self._source():
            return False
        try:
            return data_digest(self.stored(root)) == mark[DIGEST:].tobytes()
        except Exception:
            return False

    def _read(self) -> list[np.ndarray]:
        reader = ShardReader()
        try:
            out = []
            for index, shard in self.rows:
                arr = np.asarray(reader.read(shard, index)[0], dtype=np.float32)
                if self.channels is not None:
                    arr = np.ascontiguousarray(np.take(arr, list(self.channels), axis=-3))
                out.append(arr)
            return out
        finally:
            reader.close()

    def run(self) -> dict[str, Any]:
        """Write the region (unless an earlier run's copy is intact), then its marker."""
        root = open_root(self.location, "r+")
        if self.adoptable(root):
            return {"marks": self.marks, "region": self.region, "adopted": True, "at": time.time()}
        coded = [_coded(row, self.dtype) for row in self._read()]
        blocks: list[np.ndarray] = []
        if self.point_key:
            for key, parts in zip(self._keys(), coded, strict=True):
                for name, part in zip(self._arrays(key), parts, strict=True):
                    _drop_chunk(root[name], 0)
                    root[name][...] = part
                    blocks.append(part)
        else:
            for k, name in enumerate(self._arrays(self.marks)):
                block = np.stack([parts[k] for parts in coded]) if coded else np.zeros((0,))
                arr = root[name]
                _drop_chunk(arr, self.region)  # a region is one chunk (or shard) along places
                arr[self.start : self.start + len(coded)] = block
                blocks.append(block)
        mark = np.frombuffer(self._source() + data_digest(blocks), dtype=np.uint8)
        root[MARKS][self.marks][self.region] = mark
        # ``at``: when the region was done, on this task's clock (the run's log records it)
        return {"marks": self.marks, "region": self.region, "adopted": False, "at": time.time()}


def _coded(row: np.ndarray, dtype: str) -> list[np.ndarray]:
    """A float32 row as stored: ``[row]``, ``[float16 row]`` or int8's ``[codes, scale,
    offset]`` (encoded row by row, as the netCDF writer does)."""
    codes, scale, offset = q.encode(row, dtype)
    if scale is None or offset is None:
        return [codes]
    return [codes, np.asarray(scale, np.float32), np.asarray(offset, np.float32)]


def _drop_chunk(arr: Any, index: int) -> None:
    """Delete chunk (or shard) ``index`` along places before it is written again: zarr reads
    an existing shard to update it, and a damaged one would make the rewrite fail."""
    from zarr.core.sync import sync

    coords = (index,) + (0,) * (arr.ndim - 1) if arr.ndim else ()  # a 0-d array: one chunk
    key = arr.metadata.encode_chunk_key(coords)
    sync((arr.store_path / key).delete())


def run_job(job: RegionJob) -> dict[str, Any]:
    """A module-level entry point the pipeline's tasks call."""
    return job.run()


def regions_intact(location: str | Path, layout_doc: Mapping[str, Any] | None = None) -> bool:
    """Every region has a marker and its bytes match it (the complete store's check)."""
    root = open_root(location, "r")
    marks = root[MARKS]
    doc = json.loads(marks.attrs[LAYOUT_ATTR]) if layout_doc is None else layout_doc
    for name in doc["regions"]:
        got = np.asarray(marks[name][...])
        if not got.any(axis=1).all():
            return False
    return True
