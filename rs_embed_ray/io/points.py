"""Read a place list (CSV, Parquet, GeoJSON) into specs, names and per-place time windows,
with row-numbered errors."""

from __future__ import annotations

import csv
import datetime as dt
import io
import json
import math
import re
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


_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_NUMBER_COLS = frozenset(POINT_COLS + BOX_COLS + ("buffer_m",))
_MAX_GEOJSON_BYTES = 512 * 1024 * 1024


def _columns(raw: list[Any], path: Path) -> list[str]:
    """Header names, stripped and lower-cased; two that mean the same column are refused."""
    out: list[str] = []
    seen: dict[str, str] = {}
    for c in raw:
        name = str(c).strip()
        key = name.lower()
        if key in seen:
            raise SpecError(
                f"Points file {path}: columns {seen[key]!r} and {name!r} both mean {key!r}; "
                "keep one of them."
            )
        seen[key] = name
        out.append(key)
    return out


def _records(path: Path) -> list[dict[str, Any]]:
    suffix = path.suffix.lower()
    if suffix in (".geojson", ".json"):
        return _geojson_records(path)
    if suffix in (".parquet", ".pq"):
        return _parquet_records(path)
    if suffix in (".csv", ".txt", ".tsv"):
        return _csv_records(path, "\t" if suffix == ".tsv" else ",")
    raise SpecError(
        f"Points file {path}: unknown extension {suffix!r}; use .csv, .parquet or .geojson."
    )


def _csv_records(path: Path, sep: str) -> list[dict[str, Any]]:
    """Every cell as the text written (no type guessing: ``007`` and ``NA`` stay names)."""
    try:
        text = path.read_bytes().decode("utf-8-sig")  # no newline translation: exact cells
    except UnicodeDecodeError as exc:
        raise SpecError(f"Points file {path} cannot be read: not UTF-8 text ({exc}).") from None
    except OSError as exc:
        raise SpecError(f"Points file {path} cannot be read: {exc}") from None
    try:
        rows = [r for r in csv.reader(io.StringIO(text, newline=""), delimiter=sep, strict=True)]
    except csv.Error as exc:
        raise SpecError(f"Points file {path} cannot be read as CSV: {exc}.") from None
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows:
        raise SpecError(f"Points file {path} is empty (no header).")
    cols = _columns(rows[0], path)
    out = []
    for i, r in enumerate(rows[1:]):
        if len(r) != len(cols):
            raise SpecError(
                f"{path.name} row {i + 1}: {len(r)} fields, but the header has {len(cols)}."
            )
        out.append(dict(zip(cols, r, strict=True)))
    return out


def _parquet_records(path: Path) -> list[dict[str, Any]]:
    """Columns with their stored types; a coordinate column must hold numbers."""
    try:
        import pyarrow.parquet as pq

        table = pq.read_table(path)
    except Exception as exc:
        raise SpecError(f"Points file {path} cannot be read: {exc}") from None
    import pyarrow as pa

    cols = _columns(table.column_names, path)
    for key, field in zip(cols, table.schema, strict=True):
        t = field.type
        if key in _NUMBER_COLS and not (pa.types.is_integer(t) or pa.types.is_floating(t)):
            raise SpecError(
                f"Points file {path}: column {field.name!r} has type {t}; it must be a number "
                "column (integer or float)."
            )
        if key == "name" and not (
            pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_integer(t)
        ):
            raise SpecError(
                f"Points file {path}: column {field.name!r} has type {t}; names must be text."
            )
    data = table.rename_columns(cols).to_pylist()
    for row in data:
        if row.get("name") is not None and not isinstance(row["name"], str):
            row["name"] = str(row["name"])
    return data


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _position(coords: Any, where: str) -> tuple[float, float]:
    if not isinstance(coords, list) or len(coords) < 2 or not all(_is_number(c) for c in coords):
        raise SpecError(
            f"{where}: a position must be [lon, lat] finite numbers, got {coords!r:.80}."
        )
    lon, lat = float(coords[0]), float(coords[1])
    if not (math.isfinite(lon) and math.isfinite(lat)):
        raise SpecError(
            f"{where}: a position must be [lon, lat] finite numbers, got {coords!r:.80}."
        )
    return lon, lat


def _positions(coords: Any, depth: int, where: str) -> list[tuple[float, float]]:
    """Every position of a Polygon (depth 2) or MultiPolygon (depth 3) coordinates array."""
    if depth == 0:
        return [_position(coords, where)]
    if not isinstance(coords, list) or not coords:
        raise SpecError(f"{where}: coordinates must be a non-empty nested list of positions.")
    out: list[tuple[float, float]] = []
    for c in coords:
        out.extend(_positions(c, depth - 1, where))
    return out


def _geojson_records(path: Path) -> list[dict[str, Any]]:
    """Features as rows: a Point gives lon,lat; a (Multi)Polygon its bounding box."""
    try:
        if path.stat().st_size > _MAX_GEOJSON_BYTES:
            raise SpecError(f"Points file {path} is larger than 512 MiB; use Parquet.")
        doc = json.loads(path.read_text(encoding="utf-8"))
    except SpecError:
        raise
    except RecursionError:
        raise SpecError(f"Points file {path} is not valid GeoJSON: nested too deeply.") from None
    except Exception as exc:
        raise SpecError(f"Points file {path} is not valid GeoJSON: {exc}") from None
    feats = doc.get("features") if isinstance(doc, dict) else None
    if not isinstance(feats, list):
        raise SpecError(
            f"Points file {path} is not a GeoJSON FeatureCollection (an object with a "
            '"features" list).'
        )
    out = []
    kinds: dict[str, int] = {}
    for i, f in enumerate(feats):
        where = f"{path.name} feature {i + 1}"
        if not isinstance(f, dict):
            raise SpecError(f"{where}: a feature must be an object, got {type(f).__name__}.")
        props = f.get("properties")
        if props is None:
            props = {}
        if not isinstance(props, dict):
            raise SpecError(f"{where}: properties must be an object, got {type(props).__name__}.")
        geom = f.get("geometry")
        if not isinstance(geom, dict):
            raise SpecError(f"{where}: geometry must be an object, got {type(geom).__name__}.")
        gtype = geom.get("type")
        coords = geom.get("coordinates")
        row: dict[str, Any]
        if gtype == "Point":
            lon, lat = _position(coords, where)
            row = {"lon": lon, "lat": lat}
        elif gtype in ("Polygon", "MultiPolygon"):
            pos = _positions(coords, 2 if gtype == "Polygon" else 3, where)
            xs, ys = [p[0] for p in pos], [p[1] for p in pos]
            row = {"minlon": min(xs), "minlat": min(ys), "maxlon": max(xs), "maxlat": max(ys)}
        else:
            raise SpecError(
                f"{where}: unsupported geometry type {gtype!r:.40}; use Point, Polygon or "
                "MultiPolygon."
            )
        kind = "Point" if gtype == "Point" else "Polygon"
        kinds.setdefault(kind, i)
        if len(kinds) > 1:
            first = min(kinds.values())
            raise SpecError(
                f"{where}: mixed geometry types (feature {first + 1} is a "
                f"{'Point' if kinds.get('Point') == first else 'Polygon'}, this one a {gtype}); "
                "a file holds either points or boxes."
            )
        keys = _columns(list(props), path)
        for key, (k, v) in zip(keys, props.items(), strict=True):
            if key in row or key in _NUMBER_COLS - {"buffer_m"}:
                raise SpecError(
                    f"{where}: property {k!r} clashes with the geometry's {key}; rename it."
                )
            if key == "name":
                if v is not None and (not isinstance(v, (str, int)) or isinstance(v, bool)):
                    raise SpecError(f"{where}: property {k!r} must be text, got {v!r:.40}.")
                v = None if v is None else str(v)
            row[key] = v
        out.append(row)
    return out


def _num(row: dict[str, Any], col: str, where: str) -> float:
    v = row.get(col)
    if isinstance(v, str):
        text = v.strip()
        if not text:
            raise SpecError(f"{where}: column {col!r} is empty.")
        if text.lower().lstrip("+-") in ("nan", "inf", "infinity"):
            raise SpecError(f"{where}: column {col!r} is not finite ({v!r}).")
        if not _NUMBER.match(text):
            raise SpecError(f"{where}: column {col!r} must be a number, got {v!r:.40}.")
        f = float(text)
    elif _is_number(v) or (hasattr(v, "dtype") and getattr(v.dtype, "kind", "") in "iuf"):
        f = float(v)  # type: ignore[arg-type]
    elif v is None:
        raise SpecError(f"{where}: column {col!r} is empty.")
    else:
        raise SpecError(f"{where}: column {col!r} must be a number, got {v!r:.40}.")
    if not math.isfinite(f):
        raise SpecError(f"{where}: column {col!r} is empty or not finite ({v!r}).")
    return f


def _finite_option(value: Any, what: str) -> float:
    try:
        f = float(value)
    except (TypeError, ValueError):
        raise SpecError(f"{what} must be a number, got {value!r}.") from None
    if not math.isfinite(f):
        raise SpecError(f"{what} must be a finite number, got {value!r}.")
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
    cols = {c for r in rows for c in r}
    is_box = all(c in cols for c in BOX_COLS)
    is_point = all(c in cols for c in POINT_COLS)
    if is_box and is_point:
        raise SpecError(
            f"Points file {p} has both lon,lat and minlon,minlat,maxlon,maxlat columns; "
            "keep one set."
        )
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
    wcols = {c for c in cols if c in WINDOW_COLS}
    has_windows = bool(wcols)
    default_buf = None if buffer_m is None else _finite_option(buffer_m, "--buffer-m")
    unit = "feature" if p.suffix.lower() in (".geojson", ".json") else "row"
    for i, row in enumerate(rows):
        where = f"{p.name} {unit} {i + 1}"
        if is_box:
            spec: SpatialSpec = BBox(*(_num(row, c, where) for c in BOX_COLS))
        else:
            if "buffer_m" in cols and not _missing(row.get("buffer_m")):
                buf = _num(row, "buffer_m", where)
            elif default_buf is not None:
                buf = default_buf
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
            # a text cell is kept exactly as written; only a null (Parquet, JSON) is empty
            names.append(v if isinstance(v, str) else "" if _missing(v) else str(v))
        if has_windows:
            temporals.append(_window(row, wcols, where))
    windows = temporals if any(t is not None for t in temporals) else None
    return Places(spatials, names if has_names else None, windows)
