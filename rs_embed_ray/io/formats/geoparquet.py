"""The GeoParquet format: one combined file, one row per place with its geometry, window,
per-model status and pooled vector, written one row group at a time (see io.geoparquet)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.io import geoparquet as gpq
from rs_embed_ray.io import quantize
from rs_embed_ray.io.formats.base import (
    ArrayReader,
    Arrays,
    CombinedSink,
    Doc,
    Format,
    ModelColumns,
    Places,
    spatial_lonlat,
)
from rs_embed_ray.io.geoparquet import (
    GeoParquetFile,
    GeoParquetWriter,
    compact_manifest,
    parquet_intact,
    spatial_geometry,
    status_column,
)
from rs_embed_ray.io.keys import EMBEDDINGS, array_key
from rs_embed_ray.io.manifest import jsonable
from rs_embed_ray.specs import temporal_from_dict, window_of


class GeoParquetReader(ArrayReader):
    """Each model's vector column ``embedding_<key>`` shows as ``embeddings__<key>`` (and
    under its column name), NaN rows where the place has no vector; a model without any
    vector shows no array (like an npz without the key)."""

    def __init__(self, path: str) -> None:
        try:
            gp = GeoParquetFile(path)
        except Exception as exc:
            raise ValueError(f"{path!r} is not a readable Parquet file: {exc}") from exc
        self.path = path
        self._gp: GeoParquetFile | None = gp
        self._columns: dict[str, str] = {}  # array key or column -> column
        self._scalars: dict[str, str] = {}  # scale / offset names -> column
        self.coords = {}
        self.keys = []
        try:
            self.attrs = dict(gp.metadata)
            lonlat = [spatial_lonlat(s) for s in gp.spatials()]
            self.coords["lon"] = np.array([p[0] for p in lonlat], dtype=np.float64)
            self.coords["lat"] = np.array([p[1] for p in lonlat], dtype=np.float64)
            if "name" in gp.columns:
                names = gp.pylist("name")
                self.coords["name"] = np.array(["" if v is None else str(v) for v in names])
            for key in gp.model_keys:
                self._add_model(gp, key)
        except Exception:
            gp.close()
            raise
        self.names = set(self.keys) | set(self._columns) | set(self._scalars)

    def _add_model(self, gp: GeoParquetFile, key: str) -> None:
        col, st = gp.vector_column(key), status_column(key)
        has_rows = (
            any(v == "ok" for v in gp.pylist(st))
            if st in gp.columns
            else gp.column(col).null_count < gp.n_rows
        )
        if not has_rows:
            return
        alias = array_key(EMBEDDINGS, key)
        self.keys.append(alias)
        self._columns[alias] = col
        self._columns[col] = col
        for side in (quantize.scale_key, quantize.offset_key):  # int8: beside the codes
            if side(col) in gp.columns:
                self._scalars[side(alias)] = self._scalars[side(col)] = side(col)

    def read(self, key: str) -> np.ndarray:
        assert self._gp is not None
        if key in self._scalars:
            return self._gp.scalars(self._scalars[key])
        return self._gp.vectors(self._columns[key])

    def file_spatials(self) -> list[dict[str, Any]] | None:
        return self._gp.spatials() if self._gp is not None else None

    def file_temporals(self) -> list[dict[str, Any] | None] | None:
        return self._gp.windows() if self._gp is not None else None

    def close(self) -> None:
        if self._gp is not None:
            self._gp.close()
            self._gp = None


def _vector_size(m: ModelColumns) -> int | None:
    """The model's pooled vector size; one size per model (else ValueError)."""
    items = m.embeddings.items if m.embeddings is not None else []
    shapes = {tuple(src["shape"] or ()) for _, src in items if src.get("shape") is not None}
    if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
        raise ValueError(
            f"format='geoparquet' needs one pooled vector size per model; model "
            f"{m.spec['name']!r} has embeddings of shapes {sorted(shapes)}."
        )
    return shapes.pop()[0] if shapes else m.spec["describe"].get("dim_pooled")


class _GeoParquetSink(CombinedSink):
    """Row groups across all models, in place order; memory holds one row group."""

    def __init__(self, path: Path, dtype: str) -> None:
        self.path = path
        self.dtype = dtype
        self.writer: GeoParquetWriter | None = None

    def on_write_start(self, places: Places, models: list[ModelColumns]) -> None:
        self.places = places
        self.dims = {m.spec["key"]: _vector_size(m) for m in models}
        self.geoms = [spatial_geometry(s) for s in places.spatials]
        run_window = window_of(temporal_from_dict(places.temporal))
        self.windows = (
            [window_of(temporal_from_dict(t)) for t in places.temporals]
            if places.temporals is not None
            else [run_window] * len(places)
        )
        bounds = [g[2] for g in self.geoms]
        bbox = (
            min(b[0] for b in bounds),
            min(b[1] for b in bounds),
            max(b[2] for b in bounds),
            max(b[3] for b in bounds),
        )
        self.writer = GeoParquetWriter(
            self.path,
            models=[(m.spec["key"], self.dims[m.spec["key"]]) for m in models],
            geometry_types=[g[1] for g in self.geoms],
            bbox=bbox,
            dtype=self.dtype,
        )

    def _columns(self, m: ModelColumns, rows: range) -> tuple[Any, ...]:
        err, stack = m.errors, m.embeddings
        srcs = dict(stack.items) if stack is not None else {}
        vecs = np.zeros((len(rows), int(self.dims[m.spec["key"]] or 0)), dtype=np.float32)
        valid = np.zeros(len(rows), dtype=bool)
        for j, i in enumerate(rows):
            if i in err or i not in srcs:
                continue
            vecs[j] = stack.read(i, srcs[i]).reshape(-1)  # type: ignore[union-attr]
            valid[j] = True
        status = ["failed" if i in err else "ok" for i in rows]
        return status, [err.get(i) for i in rows], vecs, valid

    def write(self, models: list[ModelColumns]) -> list[dict[str, Any]]:
        assert self.writer is not None
        n = len(self.places)
        # looked up on each use, so a test can shrink the row groups
        step = gpq.rows_per_group(list(self.dims.values()))
        for a in range(0, n, step):
            rows = range(a, min(n, a + step))
            self.writer.write_rows(
                indices=list(rows),
                names=[self.places.names[i] for i in rows],
                geometries=[self.geoms[i][0] for i in rows],
                bboxes=[self.geoms[i][2] for i in rows],
                windows=[self.windows[i] for i in rows],
                models={m.spec["key"]: self._columns(m, rows) for m in models},
            )
        refs = []
        for m in models:
            key, ref = m.spec["key"], None
            if len(m.errors) < n:
                col = self.writer.vector_column(key)
                ref = {
                    "parquet_column": col,
                    "status_column": status_column(key),
                    "dtype": self.dtype,
                    "shape": [n, self.dims[key]],
                }
                quant = quantize.file_attribute(self.dtype)
                if quant is not None:
                    ref["quantization"] = dict(quant)
                if quantize.is_quantized(self.dtype):
                    ref["quantization"].update(
                        scale_key=quantize.scale_key(col), offset_key=quantize.offset_key(col)
                    )
            refs.append({"inputs": None, "embeddings": ref})
        return refs

    def on_write_complete(self, manifest: dict[str, Any]) -> None:
        assert self.writer is not None
        manifest.update(
            parquet_path=str(self.path),
            parquet_columns=list(self.writer.columns),
            crs="EPSG:4326",
        )
        self.writer.commit(jsonable(compact_manifest(manifest)))

    def on_write_failed(self, error: BaseException) -> None:
        if self.writer is not None:
            self.writer.abort()


class GeoParquetFormat(Format):
    name = "geoparquet"
    extensions = (".parquet",)
    aliases = (".geoparquet",)
    per_item = False
    embeds_manifest = True
    magic = (b"PAR1",)

    def check_request(self, layout: str, output_mode: str, save_inputs: bool) -> None:
        """GeoParquet holds one pooled vector per place and model, in one combined file."""
        if layout != "combined":
            raise ModelError(
                "format='geoparquet' writes one combined file (one row per place): use "
                "layout='combined' (CLI --layout combined), or format='npz' / 'netcdf' for "
                "per-item files."
            )
        if output_mode != "pooled":
            raise ModelError(
                "format='geoparquet' holds pooled vectors only; for output=grid use "
                "format='netcdf' or 'npz' (CLI --format netcdf)."
            )
        if save_inputs:
            raise ModelError(
                "format='geoparquet' does not store input patches: pass save_inputs=False "
                "(CLI --no-save-inputs), or use format='npz' / 'netcdf' to keep the inputs."
            )

    def write_item(self, path: Path, arrays: Arrays, manifest: Doc, attrs: Doc) -> None:
        raise ModelError("format='geoparquet' writes one combined file, not per-item files.")

    def combined_sink(self, path: Path, attrs: dict[str, Any]) -> CombinedSink:
        return _GeoParquetSink(path, attrs.get("dtype", quantize.FLOAT32))

    def open_reader(self, path: str) -> GeoParquetReader:
        return GeoParquetReader(path)

    def intact(self, path: Path, manifest: dict[str, Any]) -> bool:
        return parquet_intact(path, manifest)
