"""The source index: scenes (a date and where each band lives) parsed from a ``source.json``
or ``scenes.csv``, band-name matching (case, zero padding, the sensor's aliases) and dates
(ISO names, CF time coordinates). Pure: opens no raster."""

from __future__ import annotations

import csv
import json
import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ProviderError
from rs_embed_ray.sensors import LOCAL_S2_EXTRA_ALIASES, band_aliases, is_s2

INDEX_NAMES = ("source.json", "scenes.csv")
RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img", ".nc", ".nc4", ".h5", ".hdf")

DATE_RE = r"(?P<date>\d{4}-\d{2}-\d{2}|\d{8})"
NAME_RE = re.compile(rf"^{DATE_RE}(?:[_-](?P<band>[A-Za-z0-9]+))?$")
DATE_IN_NAME = re.compile(r"(?<!\d)(\d{4}-\d{2}-\d{2}|\d{8})(?!\d)")


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


def natural_key(name: str) -> list[Any]:
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


def layer_dates(ds: Any) -> list[date | None]:
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


def aliases_for(collection: str) -> dict[str, str]:
    """Alias -> band id the files of this collection may use (``sensors``; S2 files may
    also carry COASTAL / CIRRUS)."""
    table = band_aliases(collection)
    return {**table, **LOCAL_S2_EXTRA_ALIASES} if is_s2(collection) else table


def find_band(scene: Scene, want: str, collection: str) -> BandRef | None:
    """The scene's band for a requested name: exact after normalising, then via aliases."""
    keys = scene.band_keys()
    k = band_key(want)
    if k in keys:
        return scene.bands[keys[k]]
    table = aliases_for(collection)
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


def gdal_name(base: Path, file: str, variable: str | None) -> str:
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
        return BandRef(gdal_name(base, entry, None), 1)
    if isinstance(entry, bool):
        raise ProviderError(f"{where}: a band entry must be a file, a band number or an object.")
    if isinstance(entry, int):
        if default_file is None:
            raise ProviderError(f"{where}: band number {entry} given but the scene has no 'file'.")
        return BandRef(gdal_name(base, default_file, None), int(entry))
    if isinstance(entry, dict):
        file = entry.get("file", default_file)
        if not file:
            raise ProviderError(f"{where}: band entry {entry!r} has no 'file'.")
        band = entry.get("band", 1)
        if isinstance(band, bool) or not isinstance(band, int) or band < 1:
            raise ProviderError(f"{where}: 'band' must be a 1-based integer, got {band!r}.")
        return BandRef(gdal_name(base, str(file), entry.get("variable")), band)
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
                bands[str(name)] = BandRef(gdal_name(base, default_file, sc.get("variable")), j)
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
            gdal_name(path.parent, row["file"].strip(), row.get("variable") or None), bnum
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
