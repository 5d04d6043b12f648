"""The Zarr v3 format (combined layout only): the combined netCDF file's variables, dims,
coordinates and attributes in a store chunked along places, written region by region by
parallel tasks (``io.zarrstore``), with the ``geoemb:`` convention at the root
(``io.geoemb``). Read with ``xarray.open_zarr``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.io import quantize as q
from rs_embed_ray.io import zarrstore as zs
from rs_embed_ray.io.formats.arrays import quant_ref
from rs_embed_ray.io.formats.base import (
    ArrayReader,
    Arrays,
    CombinedSink,
    Doc,
    Format,
    ModelColumns,
    Places,
    Stack,
)
from rs_embed_ray.io.geoemb import geoemb_attrs
from rs_embed_ray.io.manifest import jsonable, package_version

log = logging.getLogger(__name__)
COORDS = ("lon", "lat", "name")


class ZarrReader(ArrayReader):
    """A complete store, opened with xarray (an unfinished store, without the manifest its
    last step writes, is refused: it may be missing regions)."""

    def __init__(self, path: str) -> None:
        import xarray as xr

        self.path = path
        self._ds: Any = xr.open_zarr(path, decode_times=False, decode_timedelta=False)
        try:
            self.attrs = dict(self._ds.attrs)
            if zs.MANIFEST_ATTR not in self.attrs:
                raise ValueError(
                    f"{path!r} is an unfinished Zarr store (no manifest yet): an export still "
                    "running or interrupted; run it again with resume=True to finish it."
                )
            self.coords = {
                n: _plain(np.asarray(self._ds[n].values))
                for n in COORDS
                if n in self._ds.variables and self._ds[n].ndim <= 1
            }
            self.keys = [str(k) for k in self._ds.data_vars if k not in self.coords]
        except Exception:
            self._ds.close()
            raise
        self.names = set(self.keys)

    def read(self, key: str) -> np.ndarray:
        var = self._ds[key]
        if var.dtype.kind not in "fi":
            raise ValueError(f"{self.path!r}: variable {key!r} holds {var.dtype}, not numbers.")
        return np.asarray(var.values)

    def shape(self, key: str) -> tuple[int, ...] | None:
        return tuple(int(n) for n in self._ds[key].shape)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


def _plain(arr: np.ndarray) -> np.ndarray:
    """Zarr's variable-length strings come back as numpy's StringDType: as objects, the
    loader treats them as it treats netCDF's."""
    return arr.astype(object) if arr.dtype.kind == "T" else arr


def _stacked(stack: Stack, n: int) -> bool:
    """netCDF's rule (``arrays.write_stack`` / ``write_coded_stack``): one array when rows
    are alike and all there (float32 inputs: or stacked with ``indices``)."""
    partial = stack.partial_stacked and stack.dtype == q.FLOAT32
    return len(stack.row_shapes()) == 1 and (len(stack.indices) == n or partial)


class _ZarrSink(CombinedSink):
    region_fn = staticmethod(zs.run_job)

    def __init__(self, path: Path, attrs: dict[str, Any]) -> None:
        self.path = path
        self.location = str(path)
        self.attrs = attrs
        self.n = 0
        self.jobs: list[zs.RegionJob] = []
        self.refs: dict[str, dict[str, Any]] = {}
        self.geoemb: dict[str, Any] = {}
        self.variables: list[str] = []  # every array of the layout (int8: scales, offsets)
        self.kept = False

    def _plan_stack(self, layout: zs.StoreLayout, stack: Stack | None) -> None:
        if stack is None or not stack.items:
            return
        channels = tuple(stack.channels) if stack.channels is not None else None
        items = [(i, str(src["shard"])) for i, src in stack.items]
        dtype, quant = stack.dtype, q.is_quantized(stack.dtype)
        if _stacked(stack, self.n):
            row_shape = next(iter(stack.row_shapes()))
            rows = layout.add_stacked(stack.key, len(items), row_shape, dtype)
            ref: dict[str, Any] = {"npz_key": stack.key, "shape": [len(items), *row_shape]}
            if len(items) < self.n:
                ref["indices"] = stack.indices
            sides = (q.scale_key(stack.key), q.offset_key(stack.key)) if quant else None
            point_key = None
        else:
            for i, shape in ((i, tuple(s["shape"])) for i, s in stack.items):
                if channels is not None:
                    shape = (*shape[:-3], len(channels), *shape[-2:])
                layout.add_place(f"{stack.point_key}__{i:05d}", shape, dtype)
            rows = zs.region_rows(max(stack.row_shapes()), len(items))
            layout.add_marks(stack.key, -(-len(items) // rows))
            keys = [f"{stack.point_key}__{i:05d}" for i, _ in items]
            ref = {"npz_keys": keys, "indices": stack.indices}
            pk = stack.point_key
            sides = (q.scale_key(pk), q.offset_key(pk)) if quant else None
            point_key = stack.point_key
        # the references the netCDF writer makes (float32: just the dtype)
        ref.update(quant_ref(ref.get("npz_key", stack.point_key), dtype, sides))
        if dtype == q.FLOAT32:
            ref = {k: v for k, v in ref.items() if k != "quantization"}
        self.refs[stack.key] = ref
        for r, start in enumerate(range(0, len(items), rows)):
            part = tuple(items[start : start + rows])
            job = zs.RegionJob(self.location, stack.key, r, start, part, channels, point_key, dtype)
            self.jobs.append(job)

    def on_write_start(self, places: Places, models: list[ModelColumns]) -> None:
        self.n = len(places)
        coords = {
            "lon": [c[0] for c in places.centers],
            "lat": [c[1] for c in places.centers],
            "name": places.names,
        }
        layout = zs.StoreLayout(self.n, coords)
        for m in models:
            self._plan_stack(layout, m.inputs)
            self._plan_stack(layout, m.embeddings)
        self.geoemb = self._geoemb(models)
        self.variables = sorted(a.key for a in layout.arrays)
        attrs = zs.root_attributes(self.attrs)
        attrs["coordinates"] = " ".join(coords)
        kept = zs.create_store(self.location, layout, coords, attrs)
        self.kept = kept  # a store created afresh holds none of the regions streamed before
        log.info(
            "zarr: %s store %s, %d regions", "kept" if kept else "new", self.path, len(self.jobs)
        )

    def _geoemb(self, models: list[ModelColumns]) -> dict[str, Any]:
        for m in models:
            if m.embeddings is not None and m.embeddings.items:
                shape = max(m.embeddings.row_shapes())
                backend = str(self.attrs.get("backend"))
                return geoemb_attrs(
                    m.spec, shape, backend, package_version(), m.chip_size, m.embeddings.dtype
                )
        return {}

    def region_places(self) -> list[tuple[str, tuple[int, ...]]]:
        return [(job.marks, tuple(i for i, _ in job.rows)) for job in self.jobs]

    def region_job(self, k: int, shards: Sequence[str]) -> zs.RegionJob:
        job = self.jobs[k]
        rows = tuple((i, str(s)) for (i, _), s in zip(job.rows, shards, strict=True))
        return dataclasses.replace(job, rows=rows)

    def write(self, models: list[ModelColumns]) -> list[dict[str, Any]]:
        # regions this run's tasks wrote while batches finished are the same jobs: not redone
        done = self.done_jobs if self.kept else frozenset()
        todo = [job for job in self.jobs if job not in done]
        results = self.parallel_map(zs.run_job, todo)
        adopted = sum(bool(r["adopted"]) for r in results)
        log.info(
            "zarr: %d regions written at the end, %d while batches finished, %d adopted from "
            "an earlier run",
            len(results) - adopted,
            len(self.jobs) - len(todo),
            adopted,
        )
        out = []
        for m in models:
            refs: dict[str, Any] = {"inputs": None, "embeddings": None}
            for field, stack in (("inputs", m.inputs), ("embeddings", m.embeddings)):
                if stack is None or not stack.items:
                    continue
                refs[field] = self.refs[stack.key]
                if field == "embeddings":  # the manifest's metas (the arrays are not read)
                    for i, src in stack.items:
                        stack.record_meta(i, stack.reader.read_meta(src["shard"], i))
            out.append(refs)
        return out

    def on_write_complete(self, manifest: dict[str, Any]) -> None:
        manifest["zarr_path"] = self.location
        manifest["zarr_variables"] = list(self.variables)  # as nc_variables lists them
        root = zs.open_root(self.location, "r+")
        attrs = dict(self.geoemb)
        attrs[zs.MANIFEST_ATTR] = json.dumps(jsonable(manifest), ensure_ascii=False)
        root.attrs.update(attrs)  # the manifest last: from here on the store is complete
        zs.consolidate(self.location)

    def on_write_failed(self, error: BaseException) -> None:
        # the regions already written stay: a resume adopts those whose markers match
        log.warning("zarr: writing %s failed (%s); finished regions are kept", self.path, error)


class ZarrFormat(Format):
    name = "zarr"
    extensions = (".zarr",)
    per_item = False
    embeds_manifest = True
    directory_store = True
    dtypes = ("float32", "float16", "int8")  # int8: scales and offsets beside the codes

    def check_request(self, layout: str, output_mode: str, save_inputs: bool) -> None:
        try:
            import zarr  # noqa: F401
        except ImportError:
            raise ModelError(
                "format='zarr' needs the zarr package (>= 3.1): pip install 'rs-embed-ray[zarr]'."
            ) from None
        if layout != "combined":
            raise ModelError(
                "format='zarr' writes one store for all places: use layout='combined' "
                "(--layout combined), or another format (npz, netcdf) for per_item files."
            )

    def write_item(self, path: Path, arrays: Arrays, manifest: Doc, attrs: Doc) -> None:
        raise ModelError("format='zarr' has no per-item files; use layout='combined'.")

    def combined_sink(self, path: Path, attrs: dict[str, Any]) -> CombinedSink:
        return _ZarrSink(path, attrs)

    def open_reader(self, path: str) -> ZarrReader:
        return ZarrReader(path)

    def header_problem(self, path: str, keys: list[str]) -> str | None:
        if not os.path.isfile(os.path.join(path, "zarr.json")):
            return "it is not a Zarr store (no zarr.json)"
        try:
            root = zs.open_root(path, "r")
            missing = [k for k in keys if k not in root]
        except Exception as exc:
            return f"it cannot be read ({exc})"
        return f"it lacks {missing[:3]}" if missing else None

    def intact(self, path: Path, manifest: dict[str, Any]) -> bool:
        """The manifest was committed, every region has its marker and every array decodes."""
        try:
            root = zs.open_root(path, "r")
            if zs.MANIFEST_ATTR not in root.attrs or not zs.regions_intact(path):
                return False
            for key in manifest.get("zarr_variables", []):
                np.asarray(root[key][...])
            return True
        except Exception as exc:
            log.warning("existing output %s is unreadable (%s); it will be rewritten", path, exc)
            return False
