"""Read a place list (CSV, Parquet, GeoJSON) into specs and names, with row-numbered errors."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import SpecError
from rs_embed_ray.specs import BBox, PointBuffer, SpatialSpec

POINT_COLS = ("lon", "lat")
BOX_COLS = ("minlon", "minlat", "maxlon", "maxlat")


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


def read_points(
    path: str | Path, *, buffer_m: float | None = None
) -> tuple[list[SpatialSpec], list[str] | None]:
    """Places and (optional) names from a file; ``buffer_m`` fills a missing buffer column."""
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
    has_names = "name" in cols
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
    return spatials, (names if has_names else None)
