"""Read a place list (CSV, Parquet, GeoJSON) into specs, names and per-place time windows,
with row-numbered errors."""

from __future__ import annotations

import datetime as dt
import json
import math
from pathlib import Path
from typing import Any, NamedTuple

from rs_embed_ray.errors import SpecError
from rs_embed_ray.specs import BBox, PointBuffer, SpatialSpec, TemporalSpec

POINT_COLS = ("lon", "lat")
BOX_COLS = ("minlon", "minlat", "maxlon", "maxlat")
WINDOW_COLS = ("start", "end", "year")


class Places(NamedTuple):
    """What a points file says: places, names (or None) and windows (or None).

    ``temporals`` has one entry per place, ``None`` where the row gives no window of its own
    (the run's window applies); it is ``None`` when the file has no window columns at all.
    """

    spatials: list[SpatialSpec]
    names: list[str] | None
    temporals: list[TemporalSpec | None] | None


def _records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return _geojson_records(path)
    import pandas as pd

    try:
        if suffix in (".parquet", ".pq"):
            df = pd.read_parquet(path)
        elif suffix in (".csv", ".txt", ".tsv"):
            df = pd.read_csv(path, sep="\t" if suffix == ".tsv" else ",")
        else:
            raise SpecError(
                f"Points file {path}: unknown extension {suffix!r}; use .csv, .parquet or .geojson."
            )
    except SpecError:
        raise
    except Exception as exc:
        raise SpecError(f"Points file {path} cannot be read: {exc}") from None
    df.columns = [str(c).strip().lower() for c in df.columns]
    return df.to_dict(orient="records")


def _positions(coords: Any) -> list[list[float]]:
    """Every [x, y, ...] position in a GeoJSON coordinates array, at any nesting depth."""
    if isinstance(coords, list) and coords and isinstance(coords[0], (int, float)):
        return [coords]
    out: list[list[float]] = []
    if isinstance(coords, list):
        for c in coords:
            out.extend(_positions(c))
    return out


def _geojson_records(path: Path) -> list[dict[str, Any]]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except Exception as exc:
        raise SpecError(f"Points file {path} is not valid GeoJSON: {exc}") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise SpecError(f"Points file {path}: expected a GeoJSON FeatureCollection.")
    out = []
    for i, f in enumerate(feats):
        geom = (f or {}).get("geometry") or {}
        props = {str(k).lower(): v for k, v in ((f or {}).get("properties") or {}).items()}
        gtype = geom.get("type")
        coords = geom.get("coordinates")
        if gtype == "Point" and isinstance(coords, list) and len(coords) >= 2:
            out.append({**props, "lon": coords[0], "lat": coords[1]})
        elif gtype in ("Polygon", "MultiPolygon") and coords:
            flat = _positions(coords)
            xs = [c[0] for c in flat]
            ys = [c[1] for c in flat]
            out.append(
                {
                    **props,
                    "minlon": min(xs),
                    "minlat": min(ys),
                    "maxlon": max(xs),
                    "maxlat": max(ys),
                }
            )
        else:
            raise SpecError(f"Points file {path}: feature {i} has unsupported geometry {gtype!r}.")
    return out


def _num(row: dict[str, Any], col: str, where: str) -> float:
    v = row.get(col)
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise SpecError(f"{where}: column {col!r} must be a number, got {v!r}.") from None
    if not math.isfinite(f):
        raise SpecError(f"{where}: column {col!r} is empty or not finite ({v!r}).")
    return f


def _missing(v: Any) -> bool:
    """An empty cell: None, NaN, NaT or a blank string."""
    if v is None:
        return True
    if isinstance(v, str):
        return not v.strip()
    if isinstance(v, (list, tuple, dict)):
        return False
    import pandas as pd

    try:
        return bool(pd.isna(v))
    except (TypeError, ValueError):
        return False


def _iso(v: Any) -> Any:
    """Dates of any usual type (pandas Timestamp, datetime, date, numpy) as ISO strings."""
    if isinstance(v, dt.datetime) or hasattr(v, "to_pydatetime"):
        return v.date().isoformat()
    if isinstance(v, dt.date):
        return v.isoformat()
    if type(v).__name__ == "datetime64":
        return str(v)[:10]
    if isinstance(v, str):
        return v.strip()
    return v  # left as is: validation says what is wrong with it


def _window(row: dict[str, Any], cols: set[str], where: str) -> TemporalSpec | None:
    """The row's own window (``start,end`` or ``year``), validated; None when it has none."""
    start = row.get("start") if "start" in cols else None
    end = row.get("end") if "end" in cols else None
    year = row.get("year") if "year" in cols else None
    has_range = not (_missing(start) and _missing(end))
    if not _missing(year):
        if has_range:
            raise SpecError(f"{where}: give either year or start,end, not both.")
        y = year
        if isinstance(y, str):
            y = y.strip()
            y = int(y) if y.lstrip("-").isdigit() else y
        elif isinstance(y, float) and y.is_integer():
            y = int(y)
        elif hasattr(y, "item") and not isinstance(y, (int, str)):
            y = y.item()
            y = int(y) if isinstance(y, float) and y.is_integer() else y
        spec = TemporalSpec(mode="year", year=y)
    elif has_range:
        spec = TemporalSpec.range(
            None if _missing(start) else _iso(start),  # type: ignore[arg-type]
            None if _missing(end) else _iso(end),  # type: ignore[arg-type]
        )
    else:
        return None
    try:
        spec.validate()
    except SpecError as exc:
        raise SpecError(f"{where}: {exc}") from None
    return spec


def read_points(
    path: str | Path, *, buffer_m: float | None = None
) -> tuple[list[SpatialSpec], list[str] | None]:
    """Places and (optional) names from a file; ``buffer_m`` fills a missing buffer column.

    A file with per-place windows (``start,end`` or ``year`` columns) is refused here, so
    that its windows are never dropped silently: read it with :func:`read_places`.
    """
    places = read_places(path, buffer_m=buffer_m)
    if places.temporals is not None:
        raise SpecError(
            f"Points file {path} has per-place windows (start,end or year columns); read it "
            "with rs_embed_ray.io.points.read_places and pass temporals= to export_batch."
        )
    return places.spatials, places.names


def read_places(path: str | Path, *, buffer_m: float | None = None) -> Places:
    """Places, names and per-place windows from a file (see :class:`Places`).

    Columns: ``lon,lat[,buffer_m]`` or ``minlon,minlat,maxlon,maxlat``, then optionally
    ``name`` and a window per row: ``start,end`` (ISO dates, end exclusive) or ``year``.
    Empty window cells mean the run's window. Errors name the row (1-based, header excluded).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"Points file {p} does not exist or is not a file.")
    rows = _records(p)
    if not rows:
        raise SpecError(f"Points file {p} has no rows.")
    cols = set(rows[0])
    is_box = all(c in cols for c in BOX_COLS)
    is_point = all(c in cols for c in POINT_COLS)
    if not (is_box or is_point):
        raise SpecError(
            f"Points file {p} needs columns lon,lat[,buffer_m][,name] or "
            f"minlon,minlat,maxlon,maxlat[,name]; found {sorted(cols)}."
        )
    spatials: list[SpatialSpec] = []
    names: list[str] = []
    temporals: list[TemporalSpec | None] = []
    has_names = "name" in cols
    # GeoJSON features may differ in properties: a window column anywhere counts
    wcols = {c for r in rows for c in r if c in WINDOW_COLS}
    has_windows = bool(wcols)
    for i, row in enumerate(rows):
        where = f"{p.name} row {i + 1}"
        if is_box:
            spec: SpatialSpec = BBox(*(_num(row, c, where) for c in BOX_COLS))
        else:
            if (
                "buffer_m" in cols
                and row.get("buffer_m") is not None
                and not (isinstance(row.get("buffer_m"), float) and math.isnan(row["buffer_m"]))
            ):
                buf = _num(row, "buffer_m", where)
            elif buffer_m is not None:
                buf = float(buffer_m)
            else:
                raise SpecError(f"{where}: no buffer_m column or value; pass --buffer-m M.")
            spec = PointBuffer(_num(row, "lon", where), _num(row, "lat", where), buf)
        try:
            spec.validate()
        except SpecError as exc:
            raise SpecError(f"{where}: {exc}") from None
        spatials.append(spec)
        if has_names:
            v = row.get("name")
            names.append("" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v))
        if has_windows:
            temporals.append(_window(row, wcols, where))
    windows = temporals if any(t is not None for t in temporals) else None
    return Places(spatials, names if has_names else None, windows)
