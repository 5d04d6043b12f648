"""NetCDF files with named dims, per-item lon/lat/name coordinates and CF attributes.

Variables are named exactly like the npz keys so one loader reads both formats. The
combined file is created with its final shape and filled row by row (netCDF4), so memory
does not grow with the number of places. The manifest is embedded as a JSON attribute.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io.atomic import atomic_path

CF_ATTRS = {
    "Conventions": "CF-1.8",
    "title": "Remote-sensing foundation-model embeddings",
    "source": "rs-embed-ray export_batch",
    "history": "Created by rs-embed-ray export_batch (format=netcdf)",
}


def dims_for(key: str, ndim: int, *, stacked: bool) -> list[str]:
    """Named dims for an array key (contract §2.16.3, made deterministic).

    Embedding grids use grid_y/grid_x so they never clash with the input's y/x.
    """
    lead = ["item"] if stacked else []
    core = ndim - len(lead)
    if key.startswith(("input_chw", "inputs_bchw", "__prefetch")):
        names = {3: ["band", "y", "x"], 4: ["time", "band", "y", "x"]}.get(core)
    elif key.startswith("embedding"):
        names = {1: ["dim"], 3: ["dim", "grid_y", "grid_x"]}.get(core)
    else:
        names = None
    if names is None:
        names = [f"d{i}" for i in range(core)]
    return lead + names


def _global_attrs(attrs: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = dict(CF_ATTRS)
    for k, v in attrs.items():
        if v is None:
            continue
        if isinstance(v, (str, int, float)):
            out[k] = v
        else:
            out[k] = json.dumps(v, ensure_ascii=False)
    return out


class NetcdfWriter:
    """Create variables with fixed shapes, then fill them (whole or by rows); atomic commit."""

    def __init__(
        self,
        path: str | Path,
        *,
        n_items: int | None = None,
        coords: Mapping[str, Any] | None = None,
        attrs: Mapping[str, Any] | None = None,
    ) -> None:
        import netCDF4

        self.path = Path(path)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        self.ds = netCDF4.Dataset(self._tmp, "w", format="NETCDF4")
        self.ds.setncatts(_global_attrs(attrs or {}))
        self._dim_sizes: dict[str, int] = {}
        self.variables: list[str] = []
        if n_items is not None:
            self._dim("item", n_items)
            item = self.ds.createVariable("item", "i8", ("item",))
            item[:] = np.arange(n_items)
            item.long_name = "item index (point_index)"
            for name, values in (coords or {}).items():
                self._coord(name, values)

    def _dim(self, name: str, size: int) -> str:
        """Create a dim; a name already used with another size gets a ``__<n>`` suffix."""
        cand, k = name, 1
        while cand in self._dim_sizes and self._dim_sizes[cand] != size:
            k += 1
            cand = f"{name}__{k}"
        if cand not in self._dim_sizes:
            self.ds.createDimension(cand, size)
            self._dim_sizes[cand] = size
        return cand

    def _coord(self, name: str, values: Any) -> None:
        arr = np.asarray(values)
        if arr.dtype.kind in ("U", "O", "S"):
            var = self.ds.createVariable(name, str, ("item",))
            for i, v in enumerate(arr.tolist()):
                var[i] = "" if v is None else str(v)
        else:
            var = self.ds.createVariable(name, "f8", ("item",), fill_value=np.nan)
            var[:] = arr.astype("f8")
        if name == "lon":
            var.standard_name, var.units = "longitude", "degrees_east"
        elif name == "lat":
            var.standard_name, var.units = "latitude", "degrees_north"

    def create(
        self,
        key: str,
        shape: tuple[int, ...],
        *,
        stacked: bool,
        attrs: Mapping[str, Any] | None = None,
        band_names: list[str] | None = None,
    ) -> Any:
        names = dims_for(key, len(shape), stacked=stacked)
        dims = tuple(self._dim(n, s) for n, s in zip(names, shape, strict=True))
        chunks = [1 if (stacked and i == 0) else s for i, s in enumerate(shape)]
        var = self.ds.createVariable(
            key, "f4", dims, zlib=True, complevel=4, chunksizes=chunks, fill_value=np.nan
        )
        var.coordinates = "lon lat name" if stacked and "lon" in self.ds.variables else ""
        for k, v in (attrs or {}).items():
            setattr(var, k, v if isinstance(v, (str, int, float)) else json.dumps(v))
        if band_names and "band" in names:
            var.band_names = ",".join(band_names)
        self.variables.append(key)
        return var

    def add(self, key: str, arr: np.ndarray, **kw: Any) -> None:
        var = self.create(key, tuple(arr.shape), stacked=False, **kw)
        var[...] = np.asarray(arr, dtype="f4")

    def stream(
        self,
        key: str,
        row_shape: tuple[int, ...],
        rows: Iterable[tuple[int, np.ndarray]],
        n_items: int,
        **kw: Any,
    ) -> None:
        """Fill a stacked (item, ...) variable from (index, row) pairs; missing rows stay NaN."""
        var = self.create(key, (n_items, *row_shape), stacked=True, **kw)
        for i, row in rows:
            var[i, ...] = np.asarray(row, dtype="f4")

    def commit(self, manifest: Mapping[str, Any] | None = None) -> None:
        if manifest is not None:
            self.ds.setncattr("rs_embed_ray_manifest", json.dumps(manifest, ensure_ascii=False))
        self.ds.close()
        self._ctx.__exit__(None, None, None)

    def abort(self) -> None:
        try:
            self.ds.close()
        finally:
            try:
                raise RuntimeError("aborted")
            except RuntimeError as exc:
                self._ctx.__exit__(type(exc), exc, exc.__traceback__)
