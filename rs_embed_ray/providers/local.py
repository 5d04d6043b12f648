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
"""

from __future__ import annotations

import csv
import json
import logging
import math
import re
import threading
import warnings
from collections import OrderedDict
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from numbers import Integral
from pathlib import Path
from typing import Any

import numpy as np

try:
    import rasterio
    from affine import Affine
    from rasterio.enums import Resampling
    from rasterio.errors import NotGeoreferencedWarning
    from rasterio.vrt import WarpedVRT
    from rasterio.warp import transform as rio_transform
    from rasterio.warp import transform_bounds
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        f"the local backend needs rasterio ({exc}); pip install 'rs-embed-ray[local]'"
    ) from exc

from rs_embed_ray import geo
from rs_embed_ray.errors import ProviderError
from rs_embed_ray.providers.base import Patch
from rs_embed_ray.specs import (
    BBox,
    PointBuffer,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
    fixed_day_bins,
    parse_frame_bins,
    window_of,
)

log = logging.getLogger(__name__)

INDEX_NAMES = ("source.json", "scenes.csv")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc", ".nc4", ".h5", ".hdf")
DEFAULT_RESAMPLING = "bilinear"
_EXACT = 1e-9  # WarpedVRT tolerance: exact transforms (0 itself makes rasterio fail)
KNOWN_OPTIONS = ("bands", "date", "nodata", "resampling", "variable", "max_open_files")

# band aliases of the Earth Engine provider (spec §1.4), alias -> canonical name
_S2_ALIASES = {
    "COASTAL": "B1",
    "BLUE": "B2",
    "GREEN": "B3",
    "RED": "B4",
    "RE1": "B5",
    "RE2": "B6",
    "RE3": "B7",
    "NIR": "B8",
    "NIR_BROAD": "B8",
    "NIR_WIDE": "B8",
    "NIR_NARROW": "B8A",
    "NIRN": "B8A",
    "NIR_N": "B8A",
    "RE4": "B8A",
    "RED_EDGE_4": "B8A",
    "CIRRUS": "B10",
    "SWIR1": "B11",
    "SWIR_1": "B11",
    "SWIR2": "B12",
    "SWIR_2": "B12",
}
_L89_ALIASES = {
    "BLUE": "SR_B2",
    "GREEN": "SR_B3",
    "RED": "SR_B4",
    "NIR": "SR_B5",
    "SWIR1": "SR_B6",
    "SWIR_1": "SR_B6",
    "SWIR2": "SR_B7",
    "SWIR_2": "SR_B7",
}

_DATE_RE = r"(?P<date>\d{4}-\d{2}-\d{2}|\d{8})"
_NAME_RE = re.compile(rf"^{_DATE_RE}(?:[_-](?P<band>[A-Za-z0-9]+))?$")
_DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2}|\d{8})(?!\d)")


# ------------------------------------------------------------------------------------------
# source index


@dataclass(frozen=True)
class BandRef:
    """Where one band of one scene lives: a GDAL dataset name and a 1-based band number."""

    path: str
    band: int = 1


@dataclass
class Scene:
    """One acquisition: a date (``None`` = undated, matches every window) and its bands."""

    id: str
    date: date | None
    bands: dict[str, BandRef]  # band name as the user wrote it -> location
    cloud_pct: float | None = None
    order: int = 0  # position in the index, breaks ties between equal dates

    def band_keys(self) -> dict[str, str]:
        return {band_key(name): name for name in self.bands}


def band_key(name: str) -> str:
    """Normalise a band name so that ``b02``, ``B02`` and ``B2`` are the same band."""
    s = str(name).strip().upper()
    m = re.fullmatch(r"B0*(\d+)(A?)", s)
    return f"B{int(m.group(1))}{m.group(2)}" if m else s


def _natural_key(name: str) -> list[Any]:
    """Sort B2 before B10."""
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", band_key(name))]


_CF_UNITS = re.compile(
    r"^\s*(days|hours|minutes|seconds)\s+since\s+(\d{4})-(\d{1,2})-(\d{1,2})"
    r"(?:[ T](\d{1,2}):(\d{1,2})(?::(\d{1,2}))?)?"
)


def _cf_date(value: str, units: str) -> date | None:
    """A CF time value (``days since 2022-01-01`` etc.) as a date; None if not a time."""
    m = _CF_UNITS.match(units or "")
    if not m:
        return None
    try:
        base = datetime(*(int(g) for g in m.groups()[1:4]), *(int(g or 0) for g in m.groups()[4:]))
        return (base + timedelta(**{m.group(1): float(value)})).date()
    except (ValueError, OverflowError):
        return None


def _layer_dates(ds: Any) -> list[date | None]:
    """Per-band dates of a netCDF/Zarr variable, from GDAL's dimension metadata."""
    gtags = ds.tags()
    out: list[date | None] = []
    for i in range(1, ds.count + 1):
        d = None
        btags = ds.tags(i)
        for k, v in btags.items():
            # netCDF: NETCDF_DIM_time=10 (+ time#units on the dataset);
            # Zarr: DIM_time_VALUE=10, DIM_time_UNIT=days since ...
            m = re.fullmatch(r"NETCDF_DIM_(\w+)", k) or re.fullmatch(r"DIM_(\w+)_VALUE", k)
            if m and not k.endswith("_DEF"):
                dim = m.group(1)
                units = btags.get(f"DIM_{dim}_UNIT") or gtags.get(f"{dim}#units", "")
                d = _cf_date(v, units)
                if d is not None:
                    break
        out.append(d)
    return out


def _aliases_for(collection: str) -> dict[str, str]:
    c = collection.upper()
    if "S2" in c or "SENTINEL2" in c or "SENTINEL-2" in c:
        return _S2_ALIASES
    if "LANDSAT/LC08" in c or "LANDSAT/LC09" in c:
        return _L89_ALIASES
    return {}


def _find_band(scene: Scene, want: str, collection: str) -> BandRef | None:
    """The scene's band for a requested name: exact after normalising, then via aliases."""
    keys = scene.band_keys()
    k = band_key(want)
    if k in keys:
        return scene.bands[keys[k]]
    table = _aliases_for(collection)
    canon = table.get(k, k)
    for key, name in keys.items():
        if table.get(key, key) == canon:
            return scene.bands[name]
    return None


def parse_date(value: Any, where: str) -> date | None:
    """ISO date (``YYYY-MM-DD``, ``YYYYMMDD`` or an ISO datetime); empty means undated."""
    if value is None:
        return None
    s = str(value).strip()
    if not s:
        return None
    m = re.match(r"^(\d{4})-?(\d{2})-?(\d{2})(?:$|[T ])", s)
    try:
        if m is None:
            raise ValueError
        return date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
    except ValueError:
        raise ProviderError(
            f"{where}: date {value!r} is not an ISO date (YYYY-MM-DD or YYYYMMDD)."
        ) from None


def _gdal_name(base: Path, file: str, variable: str | None) -> str:
    """GDAL dataset name for a file (relative to the index) and an optional variable."""
    if re.match(r"^[A-Z0-9_]+:", file) and not re.match(r"^[A-Za-z]:[\\/]", file):
        return file  # already a GDAL name such as NETCDF:"x.nc":var or /vsicurl/...
    p = Path(file).expanduser()
    if not p.is_absolute():
        p = base / p
    p = p.resolve()
    if variable:
        if p.suffix.lower() == ".zarr" or p.is_dir():
            return f'ZARR:"{p}":/{variable}'
        return f'NETCDF:"{p}":{variable}'
    return str(p)


def _band_entry(base: Path, entry: Any, default_file: str | None, where: str) -> BandRef:
    if isinstance(entry, str):
        return BandRef(_gdal_name(base, entry, None), 1)
    if isinstance(entry, bool):
        raise ProviderError(f"{where}: a band entry must be a file, a band number or an object.")
    if isinstance(entry, int):
        if default_file is None:
            raise ProviderError(f"{where}: band number {entry} given but the scene has no 'file'.")
        return BandRef(_gdal_name(base, default_file, None), int(entry))
    if isinstance(entry, dict):
        file = entry.get("file", default_file)
        if not file:
            raise ProviderError(f"{where}: band entry {entry!r} has no 'file'.")
        band = entry.get("band", 1)
        if isinstance(band, bool) or not isinstance(band, int) or band < 1:
            raise ProviderError(f"{where}: 'band' must be a 1-based integer, got {band!r}.")
        return BandRef(_gdal_name(base, str(file), entry.get("variable")), band)
    raise ProviderError(f"{where}: a band entry must be a file, a band number or an object.")


def _unique_id(wanted: str, seen: set[str]) -> str:
    out, n = wanted, 1
    while out in seen:
        n += 1
        out = f"{wanted}#{n}"
    seen.add(out)
    return out


def parse_json_index(path: Path) -> tuple[list[Scene], dict[str, Any]]:
    """Scenes and source-wide settings (``nodata``, ``resampling``) of a ``source.json``."""
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ProviderError(f"cannot read local source index {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("scenes"), list) or not doc["scenes"]:
        raise ProviderError(f"{path}: expected an object with a non-empty 'scenes' list.")
    base = path.parent
    scenes: list[Scene] = []
    seen: set[str] = set()
    for i, sc in enumerate(doc["scenes"]):
        where = f"{path} scenes[{i}]"
        if not isinstance(sc, dict):
            raise ProviderError(f"{where}: each scene must be an object.")
        d = parse_date(sc.get("date"), where)
        default_file = sc.get("file")
        raw = sc.get("bands")
        bands: dict[str, BandRef] = {}
        if isinstance(raw, list):  # names in band order of the scene's 'file'
            if not default_file:
                raise ProviderError(f"{where}: 'bands' is a list, so the scene needs a 'file'.")
            for j, name in enumerate(raw, start=1):
                bands[str(name)] = BandRef(_gdal_name(base, default_file, sc.get("variable")), j)
        elif isinstance(raw, dict) and raw:
            for name, entry in raw.items():
                bands[str(name)] = _band_entry(base, entry, default_file, f"{where} band {name!r}")
        else:
            raise ProviderError(f"{where}: 'bands' must be a non-empty object or list.")
        cloud = sc.get("cloudy_pct", sc.get("cloud_cover"))
        sid = str(sc.get("id") or (d.isoformat() if d else f"scene{i}"))
        scenes.append(
            Scene(
                id=_unique_id(sid, seen),
                date=d,
                bands=bands,
                cloud_pct=None if cloud is None else float(cloud),
                order=i,
            )
        )
    settings = {k: doc[k] for k in ("nodata", "resampling") if k in doc}
    return scenes, settings


def parse_csv_index(path: Path) -> list[Scene]:
    """Scenes of a ``scenes.csv``: one row per band, columns date,band,file[,band_index][,scene]."""
    try:
        with path.open(newline="") as fh:
            rows = list(csv.DictReader(fh))
    except OSError as exc:
        raise ProviderError(f"cannot read local source index {path}: {exc}") from None
    if not rows or not {"band", "file"} <= set(rows[0]):
        raise ProviderError(
            f"{path}: expected a header with at least 'date,band,file' "
            "(optional: band_index, scene, variable, cloudy_pct)."
        )
    by_id: dict[str, Scene] = {}
    for i, row in enumerate(rows, start=2):
        where = f"{path} line {i}"
        d = parse_date(row.get("date"), where)
        sid = (row.get("scene") or "").strip() or (d.isoformat() if d else "scene")
        idx = (row.get("band_index") or "").strip() or "1"
        try:
            bnum = int(idx)
            if bnum < 1:
                raise ValueError
        except ValueError:
            raise ProviderError(
                f"{where}: band_index must be a 1-based integer, got {idx!r}."
            ) from None
        ref = BandRef(
            _gdal_name(path.parent, row["file"].strip(), row.get("variable") or None), bnum
        )
        sc = by_id.get(sid)
        if sc is None:
            cloud = (row.get("cloudy_pct") or "").strip()
            sc = by_id[sid] = Scene(
                sid, d, {}, cloud_pct=float(cloud) if cloud else None, order=len(by_id)
            )
        elif sc.date != d:
            raise ProviderError(f"{where}: scene {sid!r} has two dates ({sc.date} and {d}).")
        sc.bands[row["band"].strip()] = ref
    return list(by_id.values())


# ------------------------------------------------------------------------------------------
# open files


@dataclass
class _Handle:
    """A file's metadata (kept for good) and a pool of its open datasets.

    A rasterio dataset must not be used by two threads at once, so each fetch borrows a
    dataset from the pool (opening another one when all are busy) and gives it back.
    """

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


def _rio_open(path: str) -> Any:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            return rasterio.open(path)
    except Exception as exc:
        raise ProviderError(f"cannot open raster {path}: {exc}") from None


@dataclass
class _State:
    scenes: list[Scene] = field(default_factory=list)
    nodata: float | None = None
    resampling: Any = DEFAULT_RESAMPLING
    kind: str = ""


def _resampling(name: str) -> Resampling:
    try:
        return Resampling[str(name).strip().lower()]
    except KeyError:
        raise ProviderError(
            f"unknown resampling {name!r}; use one of nearest, bilinear, cubic, average, mode..."
        ) from None


def _fmt_bounds(b: tuple[float, float, float, float]) -> str:
    return f"lon {b[0]:.5f}..{b[2]:.5f}, lat {b[1]:.5f}..{b[3]:.5f}"


def _describe_place(spatial: SpatialSpec) -> str:
    if isinstance(spatial, PointBuffer):
        return f"PointBuffer(lon={spatial.lon}, lat={spatial.lat}, buffer_m={spatial.buffer_m})"
    if isinstance(spatial, BBox):
        return (
            f"BBox(minlon={spatial.minlon}, minlat={spatial.minlat}, "
            f"maxlon={spatial.maxlon}, maxlat={spatial.maxlat})"
        )
    return repr(spatial)


def _intersects(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _union(bounds: list[tuple[float, float, float, float]]) -> tuple[float, float, float, float]:
    return (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )


def split_days(start: date, end: date, n: int) -> list[tuple[date, date]]:
    """``n`` equal whole-day bins of [start, end): bounds start + (days*i)//n, last = end."""
    total = (end - start).days
    edges = [start + timedelta(days=(total * i) // n) for i in range(n)] + [end]
    return [(edges[i], edges[i + 1]) for i in range(n)]


class LocalProvider:
    """Pixels from local rasters; one instance per fetch actor, ``fetch`` is thread-safe.

    Options (all optional): ``bands`` (names of a single raster's bands in file order, or
    a ``{name: band_number}`` map, when its band descriptions are missing or wrong), ``date``
    (ISO date of a single raster or of undated files), ``nodata`` (a value to treat as missing
    in every file, on top of each file's own nodata/mask), ``resampling`` (a rasterio name or
    a ``{band: name}`` map; default bilinear), ``variable`` (netCDF/Zarr variable of a
    single-file source), ``max_open_files`` (datasets kept open at once, default 256; the
    least recently used are closed and reopened on demand).
    """

    name = "local"

    def __init__(self, source: str, **options: Any) -> None:
        self.source = str(source)
        unknown = sorted(set(options) - set(KNOWN_OPTIONS))
        if unknown:
            log.warning(
                "LocalProvider ignores unknown option(s) %s (known: %s)", unknown, KNOWN_OPTIONS
            )
        self.options = {k: v for k, v in options.items() if k in KNOWN_OPTIONS}
        self._lock = threading.RLock()  # re-entered: parsing a folder opens files
        self._handles: dict[str, _Handle] = {}
        self._lru: OrderedDict[str, _Handle] = OrderedDict()
        try:
            self._max_open = max(1, int(self.options.get("max_open_files", 256)))
        except (TypeError, ValueError):
            raise ProviderError(
                f"max_open_files must be an integer, got {self.options['max_open_files']!r}."
            ) from None
        self._state: _State | None = None

    # -- pickling: a provider travels as its source and options, never its open files
    def __getstate__(self) -> dict[str, Any]:
        return {"source": self.source, "options": self.options}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(state["source"], **state["options"])  # type: ignore[misc]

    def __repr__(self) -> str:
        return f"LocalProvider(source={self.source!r})"

    # ---------------------------------------------------------------------- index loading
    def _load(self) -> _State:
        """Parse the source once (lazily, so that a bad source fails inside ``fetch``)."""
        st = self._state
        if st is not None:
            return st
        with self._lock:
            if self._state is None:
                self._state = self._build_state()
            return self._state

    def _build_state(self) -> _State:
        src = Path(self.source).expanduser()
        opts = self.options
        st = _State(nodata=opts.get("nodata"), resampling=opts.get("resampling"))
        settings: dict[str, Any] = {}
        gdal_name = re.match(r"^[A-Z0-9_]+:", self.source) is not None
        if not src.exists() and not gdal_name:
            raise ProviderError(f"local source {self.source!r} does not exist.")
        if src.is_dir() and src.suffix.lower() != ".zarr":
            for name in INDEX_NAMES:
                if (src / name).is_file():
                    src = src / name
                    break
        if src.is_file() and src.suffix.lower() == ".json":
            st.scenes, settings = parse_json_index(src)
            st.kind = "index:json"
        elif src.is_file() and src.suffix.lower() == ".csv":
            st.scenes = parse_csv_index(src)
            st.kind = "index:csv"
        elif src.is_dir() and src.suffix.lower() != ".zarr":
            st.scenes = self._scan_folder(src)
            st.kind = "folder"
        else:
            st.scenes = self._raster_scenes(src)
            st.kind = "raster"
        if st.nodata is None:
            st.nodata = settings.get("nodata")
        if st.nodata is not None:
            try:
                st.nodata = float(st.nodata)
            except (TypeError, ValueError):
                raise ProviderError(f"nodata must be a number, got {st.nodata!r}.") from None
        if st.resampling is None:
            st.resampling = settings.get("resampling", DEFAULT_RESAMPLING)
        # validate resampling names now, not per place
        rs = st.resampling
        for name in rs.values() if isinstance(rs, dict) else [rs]:
            _resampling(name)
        if opts.get("date") is not None:
            d = parse_date(opts["date"], "option date")
            for sc in st.scenes:
                if sc.date is None:
                    sc.date = d
        log.info(
            "local source %s: %d scene(s) (%s), dates %s",
            self.source,
            len(st.scenes),
            st.kind,
            sorted({s.date.isoformat() for s in st.scenes if s.date}) or "none",
        )
        return st

    def _raster_scenes(self, path: Path) -> list[Scene]:
        """Scenes of one raster: a GeoTIFF-like file (one scene, bands named by ``bands=`` or
        the band descriptions) or a netCDF/Zarr cube (one band per variable, one scene per
        time step)."""
        opts = self.options
        name = str(path) if path.exists() else self.source
        if opts.get("variable"):
            var = str(opts["variable"])
            return self._cube_scenes({var: _gdal_name(Path.cwd(), name, var)})
        with _rio_open(name) as ds:
            driver, count, subs = ds.driver, ds.count, list(ds.subdatasets)
            varname = ds.tags(1).get("NETCDF_VARNAME") if count else None
        cube = driver in ("netCDF", "Zarr", "HDF5")
        if subs and (count == 0 or cube):  # a container of variables
            variables = {}
            for sub in subs:
                var = re.split(r"[:/]", sub)[-1]
                variables[var] = sub
            return self._cube_scenes(variables)
        if cube:
            return self._cube_scenes({varname or path.stem: name})
        return [self._single_raster(path, name)]

    def _single_raster(self, path: Path, name: str) -> Scene:
        opts = self.options
        h = self._open(name)
        count = h.count
        names = opts.get("bands")
        bands: dict[str, BandRef] = {}
        if isinstance(names, dict):
            for k, v in names.items():
                bands[str(k)] = BandRef(name, int(v))
        elif names is not None:
            names = [names] if isinstance(names, str) else list(names)
            if len(names) != count:
                raise ProviderError(
                    f"{name} has {count} band(s) but bands= gives {len(names)} name(s): {names}."
                )
            bands = {str(n): BandRef(name, i) for i, n in enumerate(names, start=1)}
        else:
            desc = list(h.descriptions)
            m = _NAME_RE.match(path.stem)
            if count == 1 and not desc[0] and m and m.group("band"):
                desc = [m.group("band")]
            if not all(desc) or len({band_key(d) for d in desc}) != count:
                raise ProviderError(
                    f"band names of {name} are unknown (band descriptions: {desc}); pass "
                    "bands=[...] in file order, set the descriptions, or write a source.json."
                )
            bands = {str(d): BandRef(name, i) for i, d in enumerate(desc, start=1)}
        m = _DATE_IN_NAME.search(path.name)
        d = parse_date(m.group(1), name) if m else None
        return Scene(id=(d.isoformat() if d else path.stem) or "scene", date=d, bands=bands)

    def _cube_scenes(self, variables: dict[str, str]) -> list[Scene]:
        """One scene per time step of netCDF/Zarr variables (each variable is a band)."""
        scenes: dict[str, Scene] = {}
        for var, gname in variables.items():
            try:
                h = self._open(gname)
            except ProviderError:
                if len(variables) > 1:  # e.g. a non-spatial variable beside the bands
                    log.debug("local source %s: skipping variable %s", self.source, var)
                    continue
                raise
            with self._use(h) as ds:
                dates = _layer_dates(ds)
            if h.count > 1 and any(d is None for d in dates):
                raise ProviderError(
                    f"{gname} has {h.count} layers but no CF time coordinate for each; "
                    "list its layers in a source.json (file, variable, band)."
                )
            for i, d in enumerate(dates, start=1):
                key = d.isoformat() if d else "undated"
                sc = scenes.setdefault(key, Scene(key, d, {}, order=len(scenes)))
                sc.bands[var] = BandRef(gname, i)
        if not scenes:
            raise ProviderError(f"local source {self.source!r} has no georeferenced variable.")
        return list(scenes.values())

    def _scan_folder(self, folder: Path) -> list[Scene]:
        """Files named ``<date>_<band>.<ext>`` (one band each) or ``<date>.<ext>`` (described)."""
        by_date: dict[date, Scene] = {}
        skipped = []
        for p in sorted(folder.iterdir()):
            if not p.is_file() or p.suffix.lower() not in RASTER_SUFFIXES:
                continue
            m = _NAME_RE.match(p.stem)
            if not m:
                skipped.append(p.name)
                continue
            d = parse_date(m.group("date"), str(p))
            assert d is not None
            sc = by_date.setdefault(d, Scene(d.isoformat(), d, {}, order=len(by_date)))
            if m.group("band"):
                sc.bands[m.group("band")] = BandRef(str(p.resolve()), 1)
            else:
                sub = self._raster_scenes(p)
                if len(sub) != 1:
                    raise ProviderError(f"{p} holds {len(sub)} time steps; name it without a date.")
                sc.bands.update(sub[0].bands)
        if skipped:
            log.debug("local source %s: ignored files %s", folder, skipped)
        if not by_date:
            raise ProviderError(
                f"local source folder {folder} has no index ({' or '.join(INDEX_NAMES)}) and no "
                "rasters named <date>_<band>.tif or <date>.tif (date YYYY-MM-DD or YYYYMMDD)."
            )
        return list(by_date.values())

    # ---------------------------------------------------------------------- files
    def _open(self, path: str) -> _Handle:
        """The file's handle: opened once for its metadata, the dataset kept in the pool."""
        h = self._handles.get(path)
        if h is not None:
            return h
        with self._lock:
            h = self._handles.get(path)
            if h is not None:
                return h
            ds = _rio_open(path)
            try:
                if ds.crs is None or ds.transform.is_identity:
                    raise ProviderError(
                        f"raster {path} has no CRS/geotransform, so it cannot be placed on a map."
                    )
                ll = self._lonlat_bounds(ds)
            except Exception:
                ds.close()
                raise
            x0, y0 = geo.lonlat_to_3857(ll[0], ll[1])
            x1, y1 = geo.lonlat_to_3857(ll[2], ll[3])
            h = _Handle(
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
            self._handles[path] = h
            self._lru[path] = h
            victims = self._trim()
        self._close_all(victims)
        return h

    def _trim(self) -> list[Any]:
        """Idle datasets beyond ``max_open_files``, least recently used files first.

        Call with ``_lock`` held; close what it returns after releasing the lock. Datasets
        in use are never closed, so up to one per fetching thread may be open beyond the cap.
        """
        n_idle = sum(len(h.free) for h in self._lru.values())
        victims: list[Any] = []
        for h in list(self._lru.values()):
            if n_idle <= self._max_open:
                break
            while h.free and n_idle > self._max_open:
                victims.append(h.free.pop(0))
                n_idle -= 1
            if not h.free:
                del self._lru[h.path]
        return victims

    @staticmethod
    def _close_all(datasets: list[Any]) -> None:
        for ds in datasets:
            try:
                ds.close()
            except Exception:  # closing must never fail a fetch
                log.debug("closing %s failed", ds.name, exc_info=True)

    @contextmanager
    def _use(self, h: _Handle) -> Iterator[Any]:
        """Borrow an open dataset of ``h`` for this thread alone, and give it back."""
        with self._lock:
            ds = h.free.pop() if h.free else None
        if ds is None or ds.closed:
            ds = _rio_open(h.path)
        try:
            yield ds
        finally:
            with self._lock:
                if self._handles.get(h.path) is h:
                    h.free.append(ds)
                    self._lru[h.path] = h
                    self._lru.move_to_end(h.path)
                    victims = self._trim()
                else:  # the provider was closed meanwhile
                    victims = [ds]
            self._close_all(victims)

    @staticmethod
    def _kernel_scale(h: _Handle, scale: float) -> tuple[float, float]:
        """GDAL's XSCALE/YSCALE (grid pixels per source pixel, at most 1) for this file.

        GDAL derives them per request from the source window, so when a grid pixel spans
        several source pixels the kernel width, and the values, would depend on the extent
        of the request. Fixing them per file and scale (measured at the file's centre) keeps
        a place's pixels identical whatever else is fetched with it.
        """
        got = h.kernel.get(scale)
        if got is not None:
            return got
        b = h.bounds_lonlat
        cx, cy = geo.lonlat_to_3857((b[0] + b[2]) / 2, (b[1] + b[3]) / 2)
        half = scale / 2.0
        xs, ys = rio_transform(
            "EPSG:3857",
            h.crs,
            [cx - half, cx + half, cx, cx],
            [cy, cy, cy - half, cy + half],
        )
        inv = ~h.transform
        cols = [inv.a * x + inv.b * y + inv.c for x, y in zip(xs, ys, strict=True)]
        rows = [inv.d * x + inv.e * y + inv.f for x, y in zip(xs, ys, strict=True)]
        per_x = math.hypot(cols[1] - cols[0], rows[1] - rows[0])  # source px per grid px
        per_y = math.hypot(cols[3] - cols[2], rows[3] - rows[2])
        got = (
            min(1.0, 1.0 / per_x) if per_x > 0 and math.isfinite(per_x) else 1.0,
            min(1.0, 1.0 / per_y) if per_y > 0 and math.isfinite(per_y) else 1.0,
        )
        h.kernel[scale] = got
        return got

    @staticmethod
    def _lonlat_bounds(ds: Any) -> tuple[float, float, float, float]:
        try:
            b = transform_bounds(ds.crs, "EPSG:4326", *ds.bounds, densify_pts=21)
        except Exception as exc:
            raise ProviderError(f"cannot compute the footprint of {ds.name}: {exc}") from None
        minlon, minlat, maxlon, maxlat = b
        if not all(math.isfinite(v) for v in b) or minlon > maxlon:  # antimeridian or bad
            minlon, maxlon = -180.0, 180.0
        return (minlon, max(minlat, -90.0), maxlon, min(maxlat, 90.0))

    def _warp(
        self, path: str, bands: list[int], grid: geo.Grid, resampling: Resampling
    ) -> np.ndarray:
        """Bands of one file on the grid: (len(bands), H, W) float32, NaN where no data.

        A WarpedVRT onto the grid makes GDAL read only the source blocks under the grid. Its
        transformer is exact (tolerance ~0) and its kernel scale fixed per file: with GDAL's
        defaults (a 0.125-pixel approximation, a kernel scale from the request's source
        window) a pixel's value depends on the extent of the request, so a point's patch
        would not equal the same pixels cut from a larger box.
        """
        h = self._open(path)
        out = np.full((len(bands), grid.height, grid.width), np.nan, dtype=np.float32)
        bad = [b for b in bands if not 1 <= b <= h.count]
        if bad:
            raise ProviderError(f"{path} has {h.count} band(s); band(s) {bad} were asked for.")
        if not _intersects(grid.bounds(), h.bounds_3857):
            return out
        nodata = self._state.nodata if self._state else None
        if nodata is None and h.nodata is None and np.dtype(h.dtype).kind == "f":
            nodata = float("nan")  # NaN in a float file without nodata means missing
        kw: dict[str, Any] = {} if nodata is None else {"src_nodata": nodata}
        xscale, yscale = self._kernel_scale(h, grid.scale)
        try:
            with (
                self._use(h) as ds,
                WarpedVRT(
                    ds,
                    crs=grid.crs,
                    transform=Affine(grid.scale, 0.0, grid.x0, 0.0, -grid.scale, grid.y0),
                    width=grid.width,
                    height=grid.height,
                    resampling=resampling,
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

    # ---------------------------------------------------------------------- fetch
    def describe(self) -> dict[str, Any]:
        """What the source holds (scenes, dates, bands, lon/lat bounds), for checks and logs."""
        st = self._load()
        bounds = [self._open(r.path).bounds_lonlat for s in st.scenes for r in s.bands.values()]
        return {
            "source": self.source,
            "kind": st.kind,
            "n_scenes": len(st.scenes),
            "scenes": [
                {"id": s.id, "date": s.date.isoformat() if s.date else None, "bands": list(s.bands)}
                for s in st.scenes
            ],
            "bands": self._all_bands(st),
            "bounds_lonlat": list(_union(bounds)),
        }

    @staticmethod
    def _all_bands(st: _State) -> list[str]:
        seen: dict[str, str] = {}
        for s in st.scenes:
            for name in s.bands:
                seen.setdefault(band_key(name), name)
        return sorted(seen.values(), key=_natural_key)

    def _resampling_for(self, st: _State, band: str) -> Resampling:
        rs = st.resampling
        if isinstance(rs, dict):
            keyed = {band_key(k): v for k, v in rs.items()}
            return _resampling(keyed.get(band_key(band), DEFAULT_RESAMPLING))
        return _resampling(rs)

    def _select_scenes(
        self, st: _State, sensor: SensorSpec, start: date, end: date
    ) -> tuple[list[Scene], list[list[BandRef]]]:
        """Scenes dated in [start, end) that have every band (raises the clear errors)."""
        bands = list(sensor.bands)
        if not bands:
            raise ProviderError("the sensor asks for no bands.")
        missing = [
            b for b in bands if all(_find_band(s, b, sensor.collection) is None for s in st.scenes)
        ]
        if missing:
            raise ProviderError(
                f"local source {self.source!r} lacks band(s) {missing} needed for "
                f"{sensor.collection}; available bands: {self._all_bands(st)}. Name them in the "
                "source index (or pass bands=[...] for a single raster)."
            )
        in_window = [s for s in st.scenes if s.date is None or start <= s.date < end]
        if not in_window:
            dates = sorted({s.date.isoformat() for s in st.scenes if s.date})
            raise ProviderError(
                f"no scene of local source {self.source!r} in the time window "
                f"[{start}, {end}); scene dates available: {dates}."
            )
        if sensor.cloudy_pct is not None:
            kept = [s for s in in_window if s.cloud_pct is None or s.cloud_pct <= sensor.cloudy_pct]
            if not kept:
                raise ProviderError(
                    f"all {len(in_window)} scene(s) of local source {self.source!r} in "
                    f"[{start}, {end}) are cloudier than cloudy_pct={sensor.cloudy_pct}."
                )
            in_window = kept
        chosen, refs = [], []
        for s in in_window:
            r = [_find_band(s, b, sensor.collection) for b in bands]
            if all(x is not None for x in r):
                chosen.append(s)
                refs.append(r)  # type: ignore[arg-type]
        if not chosen:
            raise ProviderError(
                f"no scene of local source {self.source!r} in [{start}, {end}) has all of the "
                f"bands {bands}; scenes there: {[(s.id, list(s.bands)) for s in in_window]}."
            )
        return chosen, refs  # type: ignore[return-value]

    def fetch(
        self,
        spatial: SpatialSpec,
        temporal: TemporalSpec | None,
        sensor: SensorSpec,
        *,
        n_frames: int | None = None,
        frame_bins: str | None = None,
    ) -> Patch:
        """Cut ``geo.grid_for`` of the place (its fetch square for a BBox) from the scenes.

        Returns (C,H,W) float32 in ``sensor.bands`` order, or (T,C,H,W) with ``n_frames``
        (equal bins) or ``frame_bins`` (explicit bins, an empty one all-NaN; see
        ``providers.base.Provider.fetch``). Missing data becomes ``sensor.fill_value``.
        Every failure is a ProviderError.
        """
        st = self._load()
        if sensor.composite not in ("median", "mosaic"):
            raise ProviderError(f"unknown composite {sensor.composite!r}; use median or mosaic.")
        if n_frames is not None and (
            isinstance(n_frames, bool) or not isinstance(n_frames, Integral) or n_frames < 1
        ):
            raise ProviderError(f"n_frames must be a positive integer, got {n_frames!r}.")
        try:
            days = parse_frame_bins(frame_bins) if frame_bins is not None else None
        except Exception as exc:
            raise ProviderError(str(exc)) from exc
        square, win = geo.fetch_square(spatial)
        grid = geo.grid_for(square, sensor.scale_m)
        s_iso, e_iso = window_of(temporal)
        start, end = date.fromisoformat(s_iso), date.fromisoformat(e_iso)
        scenes, refs = self._select_scenes(st, sensor, start, end)

        gb = grid.bounds()
        cover = [
            i
            for i, r in enumerate(refs)
            if any(_intersects(gb, self._open(x.path).bounds_3857) for x in r)
        ]
        if not cover:
            self._raise_outside(spatial, st, scenes, start, end)
        scenes = [scenes[i] for i in cover]
        refs = [refs[i] for i in cover]
        # oldest first, so a mosaic can paint later scenes on top
        order = sorted(
            range(len(scenes)),
            key=lambda i: (scenes[i].date or date.min, scenes[i].order),
        )
        scenes = [scenes[i] for i in order]
        refs = [refs[i] for i in order]
        resamplings = [self._resampling_for(st, b) for b in sensor.bands]
        stack = np.empty((len(scenes), len(resamplings), grid.height, grid.width), np.float32)
        for i, r in enumerate(refs):  # (S, C, H, W), NaN = no data
            groups: dict[tuple[str, Resampling], list[int]] = {}
            for c, (ref, rs) in enumerate(zip(r, resamplings, strict=True)):
                groups.setdefault((ref.path, rs), []).append(c)
            for (path, rs), chans in groups.items():  # one warp per file
                stack[i, chans] = self._warp(path, [r[c].band for c in chans], grid, rs)

        meta: dict[str, Any] = {
            "provider": "local",
            "source": self.source,
            "collection": sensor.collection,
            "bands": list(sensor.bands),
            "grid": grid.to_meta(),
            "window": [s_iso, e_iso],
            "composite": sensor.composite,
            "resampling": [rs.name for rs in resamplings],
            "scenes": [s.id for s in scenes],
            "scene_dates": [s.date.isoformat() if s.date else None for s in scenes],
        }
        if win != (0.0, 1.0, 0.0, 1.0):
            meta["roi_window_geo"] = list(win)

        if days is not None:
            return self._binned(spatial, scenes, stack, sensor, meta, s_iso, e_iso, days, n_frames)
        whole = self._composite(stack, sensor.composite)
        meta["valid_fraction"] = float(np.isfinite(whole).mean())
        if n_frames is None:
            data = self._finish(whole, sensor)
            return Patch(data=data, meta=meta)

        n = int(n_frames)
        frames, info = [], []
        for b0, b1 in split_days(start, end, n):
            idx = [i for i, s in enumerate(scenes) if s.date is None or b0 <= s.date < b1]
            empty = not idx
            frames.append(whole if empty else self._composite(stack[idx], sensor.composite))
            info.append(
                {
                    "start": b0.isoformat(),
                    "end": b1.isoformat(),
                    "scenes": [scenes[i].id for i in idx],
                    "backfilled": empty,
                }
            )
        data = self._finish(np.stack(frames), sensor)
        if "COPERNICUS/S2" in sensor.collection.upper():
            np.clip(data, 0.0, 10000.0, out=data)  # as the EE provider's multi-frame path
        n_back = sum(f["backfilled"] for f in info)
        distinct: list[np.ndarray] = []
        for f in data:
            if not any(np.array_equal(f, g) for g in distinct):
                distinct.append(f)
        meta.update(
            frames=info,
            n_frames_requested=n,
            n_backfilled_frames=n_back,
            n_distinct_frames=len(distinct),
        )
        if n_back:
            log.debug(
                "%s: %d of %d frames had no scene and repeat the whole-window composite",
                _describe_place(spatial),
                n_back,
                n,
            )
        return Patch(data=data, meta=meta)

    def _binned(
        self,
        spatial: SpatialSpec,
        scenes: list[Scene],
        stack: np.ndarray,
        sensor: SensorSpec,
        meta: dict[str, Any],
        s_iso: str,
        e_iso: str,
        days: int,
        n_frames: int | None,
    ) -> Patch:
        """Explicit bins: each an independent composite of its scenes, an empty one all-NaN."""
        bins, stretched = fixed_day_bins(s_iso, e_iso, days, int(n_frames) if n_frames else None)
        frames, info = [], []
        for b0, b1 in bins:
            d0, d1 = date.fromisoformat(b0), date.fromisoformat(b1)
            idx = [i for i, s in enumerate(scenes) if s.date is None or d0 <= s.date < d1]
            if idx:
                frame = self._finish(self._composite(stack[idx], sensor.composite), sensor)
                if "COPERNICUS/S2" in sensor.collection.upper():
                    np.clip(frame, 0.0, 10000.0, out=frame)
            else:
                frame = np.full(stack.shape[1:], np.nan, dtype=np.float32)
            frames.append(frame)
            info.append(
                {
                    "start": b0,
                    "end": b1,
                    "empty": not idx,
                    "n_images": len(idx),
                    "scenes": [scenes[i].id for i in idx],
                }
            )
        n_empty = sum(f["empty"] for f in info)
        if n_empty == len(info):  # unreachable while scenes are window-filtered; kept as a guard
            raise ProviderError(
                f"No images found for {_describe_place(spatial)} in any {days}-day bin of "
                f"[{s_iso}, {e_iso}) of local source {self.source!r}."
            )
        meta.update(
            frames=info,
            frame_bins=f"{days}d",
            n_frames_max=int(n_frames) if n_frames else None,
            n_frames=len(bins),
            n_empty=n_empty,
            temporal_sampling="equal_divided" if stretched else "fixed_stride",
        )
        if n_empty:
            log.debug(
                "%s: %d of %d bins had no scene (NaN frames)",
                _describe_place(spatial),
                n_empty,
                len(bins),
            )
        return Patch(data=np.ascontiguousarray(np.stack(frames), dtype=np.float32), meta=meta)

    @staticmethod
    def _composite(stack: np.ndarray, method: str) -> np.ndarray:
        """Median (NaN-aware) or mosaic (latest valid pixel wins) over the scene axis."""
        if stack.shape[0] == 1:
            return stack[0].copy()
        if method == "mosaic":
            out = stack[0].copy()
            for s in stack[1:]:
                ok = np.isfinite(s)
                out[ok] = s[ok]
            return out
        if method != "median":
            raise ProviderError(f"unknown composite {method!r}; use 'median' or 'mosaic'.")
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
            return np.nanmedian(stack, axis=0).astype(np.float32)

    @staticmethod
    def _finish(arr: np.ndarray, sensor: SensorSpec) -> np.ndarray:
        out = np.where(np.isfinite(arr), arr, np.float32(sensor.fill_value))
        return np.ascontiguousarray(out, dtype=np.float32)

    def _raise_outside(
        self, spatial: SpatialSpec, st: _State, scenes: list[Scene], start: date, end: date
    ) -> None:
        def bounds_of(scs: list[Scene]) -> tuple[float, float, float, float] | None:
            bs = []
            for s in scs:
                for r in s.bands.values():
                    try:
                        bs.append(self._open(r.path).bounds_lonlat)
                    except ProviderError:
                        continue
            return _union(bs) if bs else None

        here = bounds_of(scenes)
        whole = bounds_of(st.scenes)
        msg = (
            f"place {_describe_place(spatial)} is outside the footprint of every scene of local "
            f"source {self.source!r}"
        )
        if len(scenes) != len(st.scenes) and here is not None:
            msg += f" dated in [{start}, {end}) ({_fmt_bounds(here)})"
        if whole is not None:
            msg += f"; the source covers {_fmt_bounds(whole)}"
        raise ProviderError(msg + ".")

    def close(self) -> None:
        """Close every open file; a later ``fetch`` reopens what it needs."""
        with self._lock:
            handles, self._handles = self._handles, {}
            self._lru.clear()
            idle = [ds for h in handles.values() for ds in h.free]
            for h in handles.values():
                h.free.clear()
        self._close_all(idle)  # datasets still in use are closed when given back


__all__ = ["LocalProvider", "BandRef", "Scene", "band_key", "split_days"]
