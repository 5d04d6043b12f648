"""Open rasters: each file's metadata (read once, kept for good) and an LRU of its open
datasets (``max_open_files`` idle ones at most, least recently used closed first, reopened on
demand). A rasterio dataset must not be used by two threads at once, so a fetch borrows one
(``FileCache.use``), opening another when all are busy, and gives it back."""

from __future__ import annotations

import logging
import math
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from rs_embed_ray import geo
from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.local.rio import (
    NotGeoreferencedWarning,
    rasterio,
    rio_transform,
    transform_bounds,
)

log = logging.getLogger(__name__)

DEFAULT_MAX_OPEN = 256


@dataclass
class Handle:
    """A file's metadata (kept for good) and a pool of its open datasets."""

    path: str
    crs: Any
    transform: Any
    width: int
    height: int
    count: int
    dtype: str
    nodata: float | None
    descriptions: tuple[str | None, ...]
    bounds_lonlat: tuple[float, float, float, float]
    bounds_3857: tuple[float, float, float, float]
    free: list[Any] = field(default_factory=list)
    kernel: dict[float, tuple[float, float]] = field(default_factory=dict)  # scale -> XY

    def kernel_scale(self, scale: float) -> tuple[float, float]:
        """GDAL's XSCALE/YSCALE (grid pixels per source pixel, at most 1) for this file.

        GDAL derives them per request from the source window, so when a grid pixel spans
        several source pixels the kernel width, and the values, would depend on the extent
        of the request. Fixing them per file and scale (measured at the file's centre) keeps
        a place's pixels identical whatever else is fetched with it.
        """
        got = self.kernel.get(scale)
        if got is not None:
            return got
        b = self.bounds_lonlat
        cx, cy = geo.lonlat_to_3857((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        half = scale / 2.0
        xs, ys = rio_transform(
            "EPSG:3857",
            self.crs,
            [cx - half, cx + half, cx, cx],
            [cy, cy, cy - half, cy + half],
        )
        inv = ~self.transform
        cols = [inv.a * x + inv.b * y + inv.c for x, y in zip(xs, ys, strict=True)]
        rows = [inv.d * x + inv.e * y + inv.f for x, y in zip(xs, ys, strict=True)]
        per_x = math.hypot(cols[1] - cols[0], rows[1] - rows[0])  # source px per grid px
        per_y = math.hypot(cols[3] - cols[2], rows[3] - rows[2])
        got = (
            min(1.0, 1.0 / per_x) if per_x > 0 and math.isfinite(per_x) else 1.0,
            min(1.0, 1.0 / per_y) if per_y > 0 and math.isfinite(per_y) else 1.0,
        )
        self.kernel[scale] = got
        return got


def rio_open(path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as exc:
        raise ProviderError(f"cannot open raster {path}: {exc}") from None


def lonlat_bounds(ds: Any) -> tuple[float, float, float, float]:
    try:
        b = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
    except Exception as exc:
        raise ProviderError(f"cannot compute the footprint of {ds.name}: {exc}") from None
    minlon, minlat, maxlon, maxlat = b
    if not all(math.isfinite(v) for v in b) or minlon > maxlon:  # antimeridian or bad
        minlon, maxlon = -180.0, 180.0
    return (minlon, max(minlat, -90.0), maxlon, min(maxlat, 90.0))


def _handle_of(path: str, ds: Any) -> Handle:
    """The metadata of an open dataset (closed again if it cannot be placed on a map)."""
    try:
        if ds.crs is None or ds.transform.is_identity:
            raise ProviderError(
                f"raster {path} has no CRS/geotransform, so it cannot be placed on a map."
            )
        ll = lonlat_bounds(ds)
    except Exception:
        ds.close()
        raise
    x0, y0 = geo.lonlat_to_3857(ll[0], ll[1])
    x1, y1 = geo.lonlat_to_3857(ll[2], ll[3])
    return Handle(
        path=path,
        crs=ds.crs,
        transform=ds.transform,
        width=ds.width,
        height=ds.height,
        count=ds.count,
        dtype=ds.dtypes[0],
        nodata=ds.nodata,
        descriptions=tuple(ds.descriptions),
        bounds_lonlat=ll,
        bounds_3857=(x0, y0, x1, y1),
        free=[ds],
    )


def close_all(datasets: list[Any]) -> None:
    for ds in datasets:
        try:
            ds.close()
        except Exception:  # closing must never fail a fetch
            log.debug("closing %s failed", ds.name, exc_info=True)


class FileCache:
    """Handles by path, and at most ``max_open`` idle open datasets (LRU). Thread-safe."""

    def __init__(self, max_open: int = DEFAULT_MAX_OPEN, lock: Any = None) -> None:
        self.max_open = max(1, int(max_open))
        self._lock = lock if lock is not None else threading.RLock()
        self._handles: dict[str, Handle] = {}
        self._lru: OrderedDict[str, Handle] = OrderedDict()

    def open(self, path: str) -> Handle:
        """The file's handle: opened once for its metadata, the dataset kept in the pool."""
        h = self._handles.get(path)
        if h is not None:
            return h
        with self._lock:
            h = self._handles.get(path)
            if h is not None:
                return h
            h = _handle_of(path, rio_open(path))
            self._handles[path] = h
            self._lru[path] = h
            victims = self._trim()
        close_all(victims)
        return h

    def _trim(self) -> list[Any]:
        """Idle datasets beyond ``max_open``, least recently used files first.

        Call with ``_lock`` held; close what it returns after releasing the lock. Datasets
        in use are never closed, so up to one per fetching thread may be open beyond the cap.
        """
        n_idle = sum(len(h.free) for h in self._lru.values())
        victims: list[Any] = []
        for h in list(self._lru.values()):
            if n_idle <= self.max_open:
                break
            while h.free and n_idle > self.max_open:
                victims.append(h.free.pop(0))
                n_idle -= 1
            if not h.free:
                del self._lru[h.path]
        return victims

    @contextmanager
    def use(self, h: Handle) -> Iterator[Any]:
        """Borrow an open dataset of ``h`` for this thread alone, and give it back."""
        with self._lock:
            ds = h.free.pop() if h.free else None
        if ds is None or ds.closed:
            ds = rio_open(h.path)
        try:
            yield ds
        finally:
            with self._lock:
                if self._handles.get(h.path) is h:
                    h.free.append(ds)
                    self._lru[h.path] = h
                    self._lru.move_to_end(h.path)
                    victims = self._trim()
                else:  # the cache was closed meanwhile
                    victims = [ds]
            close_all(victims)

    def close(self) -> None:
        """Close every idle dataset; a later ``open`` reopens what it needs."""
        with self._lock:
            handles, self._handles = self._handles, {}
            self._lru.clear()
            idle = [ds for h in handles.values() for ds in h.free]
            for h in handles.values():
                h.free.clear()
        close_all(idle)  # datasets still in use are closed when given back
