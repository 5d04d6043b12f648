"""The ``local`` backend: the user's own rasters, cut onto the common EPSG:3857 grid.

A source is a single raster (GeoTIFF/COG, or a netCDF/Zarr variable through GDAL), a folder
of rasters named ``<date>_<band>.tif`` / ``<date>.tif``, or an index file (``source.json`` or
``scenes.csv``) that says once which file and band number hold each band name and which date
each scene has. See docs/local_backend.md for the formats.

For each place the provider builds ``geo.grid_for`` of the (fetch-square) place, reads only the
window of each file that covers it (a GDAL WarpedVRT onto the grid) and composites the
scenes of the time window per ``sensor.composite``. The result has the same shape and lattice as
the Earth Engine provider's, so an export does not depend on the backend that served it.

Time series: ``n_frames`` splits the window into equal bins and back-fills an empty bin with
the whole-window composite; ``frame_bins="30d"`` cuts explicit bins anchored at the window
start (``specs.fixed_day_bins``, at most ``n_frames``) and leaves an empty bin all-NaN.

Modules: ``index`` (scenes of an index file, band names, dates), ``sources`` (a source read
into scenes), ``files`` (open rasters, an LRU of datasets), ``warp`` (one file onto the grid),
``composite`` (scenes into a patch or a time series), ``provider`` (the thin LocalProvider).
"""

from __future__ import annotations

from datetime import date

from rs_embed_ray.providers.local.index import (
    INDEX_NAMES,
    RASTER_SUFFIXES,
    BandRef,
    Scene,
    band_key,
)
from rs_embed_ray.providers.local.provider import KNOWN_OPTIONS, LocalProvider
from rs_embed_ray.sensors import equal_day_bins


def split_days(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """``n`` equal whole-day bins of [start, end): bounds start + (days*i)//n, last = end."""
    return equal_day_bins(start, end, n)


__all__ = [
    "INDEX_NAMES",
    "KNOWN_OPTIONS",
    "RASTER_SUFFIXES",
    "BandRef",
    "LocalProvider",
    "Scene",
    "band_key",
    "split_days",
]
