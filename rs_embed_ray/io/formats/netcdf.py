"""The netCDF format: variables named like the npz keys, rs-embed's dims, CF attributes and
the manifest as a global attribute (see io.netcdf for the writer). Read with xarray."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io.formats.arrays import ArrayFileFormat, ArraySink, CheckView
from rs_embed_ray.io.formats.base import ArrayReader, Arrays, Doc, Places
from rs_embed_ray.io.manifest import jsonable
from rs_embed_ray.io.netcdf import NetcdfWriter

NC_COORDS = ("lon", "lat", "name")
# a variable may declare far more bytes than its (compressed) file holds; past this many
# bytes and this ratio to the file size it is refused rather than allocated
MAX_DECLARED_BYTES = 2 << 30
MAX_DECLARED_RATIO = 100


def _xarray() -> Any:
    try:
        import xarray as xr
    except ImportError as exc:  # pragma: no cover - xarray is a dependency
        raise ImportError(
            "xarray is required to read NetCDF exports (pip install xarray)."
        ) from exc
    return xr


class NetcdfReader(ArrayReader):
    def __init__(self, path: str) -> None:
        self.path = path
        self.coords = {}
        self._ds: Any = _xarray().open_dataset(path, decode_times=False, decode_timedelta=False)
        try:
            self.attrs = dict(self._ds.attrs)
            for name in NC_COORDS:
                if name in self._ds.variables and self._ds[name].ndim <= 1:
                    self.coords[name] = np.asarray(self._ds[name].values)
            self.keys = [str(k) for k in self._ds.data_vars if k not in self.coords]
        except Exception:
            self._ds.close()
            raise
        self.names = set(self.keys)

    def read(self, key: str) -> np.ndarray:
        var = self._ds[key]
        if var.dtype.hasobject or var.dtype.kind in "SUO":
            raise ValueError(
                f"{self.path!r}: variable {key!r} holds {var.dtype} values, not numbers."
            )
        want = math.prod(int(n) for n in var.shape) * var.dtype.itemsize
        size = os.path.getsize(self.path)
        if want > MAX_DECLARED_BYTES and want > MAX_DECLARED_RATIO * size:
            raise ValueError(
                f"{self.path!r}: variable {key!r} declares shape {tuple(var.shape)} "
                f"({want} bytes) in a {size}-byte file: refusing to allocate it."
            )
        return np.asarray(var.values)

    def shape(self, key: str) -> tuple[int, ...] | None:
        return tuple(int(n) for n in self._ds[key].shape)

    def close(self) -> None:
        if self._ds is not None:
            self._ds.close()
            self._ds = None


class _NetcdfSink(ArraySink):
    def open_writer(self, places: Places) -> Any:
        n = len(places)
        coords = {
            "lon": [c[0] for c in places.centers],
            "lat": [c[1] for c in places.centers],
            "name": places.names,
        }
        return NetcdfWriter(self.path, n_items=n, coords=coords, attrs=self.attrs)

    def on_write_complete(self, manifest: dict[str, Any]) -> None:
        manifest["nc_path"] = str(self.path)
        manifest["nc_variables"] = sorted(self.writer.variables)
        self.writer.commit(jsonable(manifest))


class NetcdfFormat(ArrayFileFormat):
    name = "netcdf"
    extensions = (".nc", ".netcdf")
    keys_field = "nc_variables"
    embeds_manifest = True
    magic = (b"CDF\x01", b"CDF\x02", b"CDF\x05", b"\x89HDF\r\n\x1a\n")
    dtypes = ("float32", "int8")  # netCDF has no 16-bit float type

    def write_item(self, path: Path, arrays: Arrays, manifest: Doc, attrs: Doc) -> None:
        manifest["nc_path"] = str(path)
        manifest["nc_variables"] = sorted(arrays)
        nc = NetcdfWriter(path, attrs=attrs)
        try:
            for key in arrays:  # rs-embed's order (per model: input, then embedding)
                nc.add(key, arrays[key])
            nc.commit(jsonable(manifest))
        except BaseException:
            nc.abort()
            raise

    def combined_sink(self, path: Path, attrs: dict[str, Any]) -> ArraySink:
        return _NetcdfSink(path, attrs)

    def open_reader(self, path: str) -> NetcdfReader:
        return NetcdfReader(path)

    @contextmanager
    def check_view(self, path: Path) -> Iterator[CheckView]:
        with _xarray().open_dataset(path) as ds:
            data = [str(k) for k in ds.data_vars]
            yield CheckView(set(ds.variables), data, lambda k: np.asarray(ds[k].values, np.float32))
