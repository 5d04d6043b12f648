"""Cutting one file onto the common grid: a GDAL WarpedVRT onto ``geo.grid_for``'s lattice
with an exact transformer and a fixed kernel scale, so a pixel's value never depends on the
extent of the request (a point's patch equals the same pixels cut from a larger box)."""

from __future__ import annotations

from typing import Any

import numpy as np

from rs_embed_ray import geo
from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.local.files import FileCache
from rs_embed_ray.providers.local.rio import Affine, Resampling, WarpedVRT

DEFAULT_RESAMPLING = "bilinear"
_EXACT = 1e-9  # WarpedVRT tolerance: exact transforms (0 itself makes rasterio fail)


def resampling(name: str) -> Resampling:
    try:
        return Resampling[str(name).strip().lower()]
    except KeyError:
        raise ProviderError(
            f"unknown resampling {name!r}; use one of nearest, bilinear, cubic, average, mode..."
        ) from None


def intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def warp(
    files: FileCache,
    path: str,
    bands: list[int],
    grid: geo.Grid,
    how: Resampling,
    nodata: float | None,
) -> np.ndarray:
    """Bands of one file on the grid: (len(bands), H, W) float32, NaN where no data.

    ``nodata``: a value to treat as missing on top of the file's own nodata/mask. A WarpedVRT
    onto the grid makes GDAL read only the source blocks under the grid. Its transformer is
    exact (tolerance ~0) and its kernel scale fixed per file: with GDAL's defaults (a
    0.125-pixel approximation, a kernel scale from the request's source window) a pixel's
    value would depend on the extent of the request.
    """
    h = files.open(path)
    out = np.full((len(bands), grid.height, grid.width), np.nan, dtype=np.float32)
    bad = [b for b in bands if not 1 <= b <= h.count]
    if bad:
        raise ProviderError(f"{path} has {h.count} band(s); band(s) {bad} were asked for.")
    if not intersects(grid.bounds(), h.bounds_3857):
        return out
    if nodata is None and h.nodata is None and np.dtype(h.dtype).kind == "f":
        nodata = float("nan")  # NaN in a float file without nodata means missing
    kw: dict[str, Any] = {} if nodata is None else {"src_nodata": nodata}
    xscale, yscale = h.kernel_scale(grid.scale)
    try:
        with (
            files.use(h) as ds,
            WarpedVRT(
                ds,
                crs=grid.crs,
                transform=Affine(grid.scale, 0.0, grid.x0, 0.0, -grid.scale, grid.y0),
                width=grid.width,
                height=grid.height,
                resampling=how,
                tolerance=_EXACT,
                nodata=np.nan,
                dtype="float32",
                XSCALE=repr(xscale),
                YSCALE=repr(yscale),
                **kw,
            ) as vrt,
        ):
            vrt.read(bands, out=out)
    except ProviderError:
        raise
    except Exception as exc:
        raise ProviderError(f"cannot read {path} band(s) {bands}: {exc}") from None
    return out
