"""NetCDF files named as rs-embed names them, plus coordinates and CF attributes.

Variables are named exactly like the npz keys, and dimensions follow rs-embed's rules
(contract §2.16.3), so xarray code written against rs-embed's netCDF files runs unchanged:
``(point, dim)`` pooled, ``(point, band, y, x)`` grids and input stacks, ``(band, y, x)`` /
``(dim,)`` per place, ``d0..dN`` otherwise, and a dim already used with another size is
renamed ``<dim>__<key>`` (then ``_2``, ...). Failed places are represented as rs-embed does:
by absence (per-point variables, or a stack of fewer rows with ``indices`` in the
manifest). Ours, in addition: ``point`` / ``lon`` / ``lat`` / ``name`` coordinates, CF
attributes and the manifest as a JSON attribute. The combined file is created with its final
shape and filled row by row (netCDF4), so memory does not grow with the number of places.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import atomic_path

POINT_DIM = "point"

CF_ATTRS = {
    "Conventions": "CF-1.8",
    "title": "Remote-sensing foundation-model embeddings",
    "source": "rs-embed-ray export_batch",
    "history": "Created by rs-embed-ray export_batch (format=netcdf)",
}


def dims_for(key: str, ndim: int) -> list[str]:
    """rs-embed's dim names for an array key and rank (substring rules, in its order)."""
    kind, sep, rest = key.partition("__")
    if sep and kind.endswith(("_scale", "_offset")):  # an int8 vector's: its codes' dims
        codes = dims_for(kind.rsplit("_", 1)[0] + sep + rest, ndim + 1)  # less the vector's
        return [d for d in codes if d not in ("dim", "band")][:ndim]
    if "bchw" in key and ndim == 4:
        return [POINT_DIM, "band", "y", "x"]
    if "chw" in key and ndim == 3:
        return ["band", "y", "x"]
    if "embeddings" in key and ndim == 2:
        return [POINT_DIM, "dim"]
    if "embeddings" in key and ndim == 4:
        return [POINT_DIM, "band", "y", "x"]
    if "embedding" in key and ndim == 1:
        return ["dim"]
    if "embedding" in key and ndim == 3:
        return ["band", "y", "x"]
    return [f"d{i}" for i in range(ndim)]


def unique_dim(name: str, size: int, key: str, sizes: Mapping[str, int]) -> str:
    """rs-embed's rule: a name already used with another size becomes ``<dim>__<key>``,
    then ``<dim>__<key>_2``, ... (``sizes``: the dims so far; the Zarr store shares it)."""
    cand = name
    if cand in sizes and sizes[cand] != size:
        base = f"{name}__{re.sub(r'[^0-9A-Za-z]', '_', key)}"
        cand, k = base, 1
        while cand in sizes and sizes[cand] != size:
            k += 1
            cand = f"{base}_{k}"
    return cand


# what the d0..dN of an input with frames hold (a variable attribute, ours)
FRAME_DIMS = {4: "time band y x", 5: "point time band y x"}


def global_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(CF_ATTRS)
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (str, int, float)):
            out[k] = v
        else:
            out[k] = json.dumps(v, ensure_ascii=False)
    return out


# netCDF-C is not thread-safe and netCDF4-python releases the GIL around its calls: writers in
# threads of one process (the in-process executor's per-item writers) take turns, each
# holding this from its file's creation to its close
LIBRARY_LOCK = threading.Lock()


class NetcdfWriter:
    """Create variables with fixed shapes, then fill them (whole or by rows); atomic commit.

    Same interface as ``npz.NpzStreamWriter`` (``add``, ``stream``, ``commit``, ``abort``),
    so the layout code does not branch on the format.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        n_items: int | None = None,
        coords: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        import netCDF4

        self.path = storage.as_path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        LIBRARY_LOCK.acquire()
        self._locked = True
        try:
            self.ds = netCDF4.Dataset(self._tmp, "w", format="NETCDF4")
        except BaseException:
            self._unlock()
            raise
        self.ds.setncatts(global_attrs(attrs or {}))
        self._dim_sizes: dict[str, int] = {}
        self.variables: list[str] = []
        self.keys = self.variables  # as NpzStreamWriter names them
        if n_items is not None:
            self._dim_sizes[POINT_DIM] = n_items
            self.ds.createDimension(POINT_DIM, n_items)
            point = self.ds.createVariable(POINT_DIM, "i8", (POINT_DIM,))
            point[:] = np.arange(n_items)
            point.long_name = "place index (point_index)"
            for name, values in (coords or {}).items():
                self._coord(name, values)
            if coords:  # coordinates even when no variable is stacked on ``point``
                self.ds.setncattr("coordinates", " ".join(coords))

    def _dim(self, name: str, size: int, key: str) -> str:
        cand = unique_dim(name, size, key, self._dim_sizes)
        if cand not in self._dim_sizes:
            self.ds.createDimension(cand, size)
            self._dim_sizes[cand] = size
        return cand

    def _coord(self, name: str, values: Any) -> None:
        arr = np.asarray(values)
        if arr.dtype.kind in ("U", "O", "S"):
            var = self.ds.createVariable(name, str, (POINT_DIM,))
            for i, v in enumerate(arr.tolist()):
                var[i] = "" if v is None else str(v)
        else:
            var = self.ds.createVariable(name, "f8", (POINT_DIM,), fill_value=np.nan)
            var[:] = arr.astype("f8")
        if name == "lon":
            var.standard_name, var.units = "longitude", "degrees_east"
        elif name == "lat":
            var.standard_name, var.units = "latitude", "degrees_north"

    def create(self, key: str, shape: tuple[int, ...], dtype: Any = "f4") -> Any:
        names = dims_for(key, len(shape))
        dims = tuple(self._dim(n, s, key) for n, s in zip(names, shape, strict=True))
        stacked = bool(dims) and dims[0] == POINT_DIM
        chunks = [1 if (stacked and i == 0) else max(1, s) for i, s in enumerate(shape)] or None
        code = np.dtype(dtype).str[1:]  # f4, or i1 for int8 codes (-128 unused: the fill)
        fill = -128 if code == "i1" else np.nan
        var = self.ds.createVariable(
            key, code, dims, zlib=True, complevel=4, chunksizes=chunks, fill_value=fill
        )
        if stacked and "lon" in self.ds.variables:
            var.coordinates = "lon lat name" if "name" in self.ds.variables else "lon lat"
        if names and names[0] == "d0" and ("chw" in key) and len(shape) in FRAME_DIMS:
            var.dims_meaning = FRAME_DIMS[len(shape)]
        self.variables.append(key)
        return var

    def add(self, key: str, arr: np.ndarray) -> None:
        dt = "i1" if np.asarray(arr).dtype == np.int8 else "f4"
        var = self.create(key, tuple(np.shape(arr)), dt)
        var[...] = np.asarray(arr, dtype=dt)

    def stream(
        self,
        key: str,
        row_shape: tuple[int, ...],
        rows: Iterable[np.ndarray],
        n_rows: int,
        dtype: Any = "f4",
    ) -> None:
        """Fill a stacked ``(n_rows, *row_shape)`` variable row by row."""
        var = self.create(key, (n_rows, *row_shape), dtype)
        written = 0
        for row in rows:
            var[written, ...] = np.asarray(row, dtype=dtype)
            written += 1
        if written != n_rows:
            raise ValueError(f"{key}: wrote {written} rows, expected {n_rows}")

    def commit(self, manifest: Mapping[str, Any] | None = None) -> None:
        if manifest is not None:
            self.ds.setncattr("rs_embed_ray_manifest", json.dumps(manifest, ensure_ascii=False))
        self.ds.close()
        self._unlock()
        self._ctx.__exit__(None, None, None)

    def _unlock(self) -> None:
        if self._locked:
            self._locked = False
            LIBRARY_LOCK.release()

    def abort(self) -> None:
        try:
            self.ds.close()
        finally:
            self._unlock()
            try:
                raise RuntimeError("aborted")
            except RuntimeError as exc:
                self._ctx.__exit__(type(exc), exc, exc.__traceback__)
