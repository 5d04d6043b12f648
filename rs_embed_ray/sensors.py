"""Sensor facts every backend must agree on: collection ids, band aliases, value ranges, bins.

The Earth Engine and local providers both read these, so the same ``SensorSpec`` means the
same bands, clipping and time bins whatever backend serves it (spec
providers_and_models.md §1.4-1.5). Pure Python, no third-party imports.
"""

from __future__ import annotations

import re
from datetime import date, timedelta

# -- collections ------------------------------------------------------------------------------

S2_PREFIX = "COPERNICUS/S2"
S1_FLOAT = "COPERNICUS/S1_GRD_FLOAT"
S1_DB = "COPERNICUS/S1_GRD"
LANDSAT_PREFIX = "LANDSAT/"
GSE_COLLECTION = "GOOGLE/SATELLITE_EMBEDDING/V1/ANNUAL"
GSE_BANDS = tuple(f"A{i:02d}" for i in range(64))
GSE_FILL = -9999.0  # GSE pixels without data; turned into NaN after the fetch
S2_DN_MAX = 10000.0  # multi-frame S2 values are clipped to [0, S2_DN_MAX] (spec §1.5)
MODIS_SR = "MODIS/061/MOD09GA"
MODIS_LST = "MODIS/061/MOD21A1D"

# bands a sensor of one collection takes from a companion collection of the same days: the
# SatVision MODIS proxy (spec §1.8) is MOD09GA reflectance plus MOD21A1D's LST_1KM. Earth
# Engine composites each collection over the same region and window and stacks the bands
# (one request); a local source names both bands in the same scene (each in its own file).
COMPANION_BANDS: dict[str, dict[str, str]] = {MODIS_SR: {"LST_1KM": MODIS_LST}}


def companion_collection(collection: str, band: str) -> str | None:
    """The collection band ``band`` of a ``collection`` sensor comes from, when not its own."""
    return COMPANION_BANDS.get(collection, {}).get(band)


def is_s2(collection: str) -> bool:
    """A Sentinel-2 collection (``COPERNICUS/S2*``, any case)."""
    return S2_PREFIX in collection.upper()


def is_landsat(collection: str) -> bool:
    return collection.upper().startswith(LANDSAT_PREFIX)


# -- band aliases (spec §1.4) -----------------------------------------------------------------

S2_ALIASES: dict[str, str] = {
    "BLUE": "B2",
    "GREEN": "B3",
    "RED": "B4",
    "NIR": "B8",
    "NIR_BROAD": "B8",
    "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A",
    "NIRN": "B8A",
    "NIR_N": "B8A",
    "RE4": "B8A",
    "RED_EDGE_4": "B8A",
    "RE1": "B5",
    "RE2": "B6",
    "RE3": "B7",
    "SWIR1": "B11",
    "SWIR_1": "B11",
    "SWIR2": "B12",
    "SWIR_2": "B12",
}
# names a user's own files may carry (docs/local_backend.md); not Earth Engine aliases, whose
# table is the spec's (a request for COASTAL there still fails as an unknown band)
LOCAL_S2_EXTRA_ALIASES: dict[str, str] = {"COASTAL": "B1", "CIRRUS": "B10"}

_LANDSAT_KEYS = ("BLUE", "GREEN", "RED", "NIR", "SWIR1", "SWIR2")


def _landsat_table(bands: tuple[str, ...]) -> dict[str, str]:
    table = dict(zip(_LANDSAT_KEYS, bands, strict=True))
    table.update({"SWIR_1": table["SWIR1"], "SWIR_2": table["SWIR2"]})
    return table


LANDSAT_89_ALIASES = _landsat_table(("SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B6", "SR_B7"))
LANDSAT_457_ALIASES = _landsat_table(("SR_B1", "SR_B2", "SR_B3", "SR_B4", "SR_B5", "SR_B7"))


def band_aliases(collection: str) -> dict[str, str]:
    """Alias -> band id for a collection (empty when it has none)."""
    if is_s2(collection):
        return S2_ALIASES
    if is_landsat(collection):
        l89 = re.search(r"LC0[89]", collection, re.I)
        return LANDSAT_89_ALIASES if l89 else LANDSAT_457_ALIASES
    return {}


def resolve_band(collection: str, band: str) -> str:
    """Map a friendly band alias (RED, NIR, ...) to the collection's band id."""
    return band_aliases(collection).get(band.upper(), band)


# -- time bins --------------------------------------------------------------------------------


def equal_day_bins(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """``n`` equal whole-day bins of [start, end): bounds start + (days*i)//n, last = end."""
    total = (end - start).days
    edges = [start + timedelta(days=(total * i) // n) for i in range(n)] + [end]
    return [(edges[i], edges[i + 1]) for i in range(n)]


def equal_iso_bins(start: str, end: str, n: int) -> list[tuple[str, str]]:
    """``equal_day_bins`` of ISO dates, as ISO dates."""
    bins = equal_day_bins(date.fromisoformat(start), date.fromisoformat(end), n)
    return [(a.isoformat(), b.isoformat()) for a, b in bins]


__all__ = [
    "COMPANION_BANDS",
    "GSE_BANDS",
    "GSE_COLLECTION",
    "GSE_FILL",
    "LANDSAT_457_ALIASES",
    "LANDSAT_89_ALIASES",
    "LOCAL_S2_EXTRA_ALIASES",
    "MODIS_LST",
    "MODIS_SR",
    "S1_DB",
    "S1_FLOAT",
    "S2_ALIASES",
    "S2_DN_MAX",
    "S2_PREFIX",
    "band_aliases",
    "companion_collection",
    "equal_day_bins",
    "equal_iso_bins",
    "is_landsat",
    "is_s2",
    "resolve_band",
]
