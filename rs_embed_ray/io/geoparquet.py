"""GeoParquet: one row per place, its geometry, window, per-model status and pooled vectors.

Pure Python (pyarrow, numpy), no ray. :class:`GeoParquetWriter` appends row groups as the
combined writer streams places from the shards, so memory holds one row group at a time.
The file follows GeoParquet 1.1: a WKB ``geometry`` column (the place's point, or its box as
a polygon) in EPSG:4326 with lon/lat axis order, the ``geo`` key in the schema metadata and a
``bbox`` covering column. ``geopandas.read_parquet``, ``pyarrow.parquet.read_table``, DuckDB
and GDAL read it as is.

Columns: ``point_index``, ``name``, ``geometry``, ``bbox``, ``window_start`` /
``window_end`` (dates, the place's own half-open window), then per model (its array-key
suffix ``<key>``): ``status_<key>`` (``ok`` / ``failed``), ``error_<key>`` (null when ok) and
``embedding_<key>`` (``fixed_size_list<float32>[D]``, null when failed).
"""

from __future__ import annotations

import json
import logging
import math
import struct
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.io import quantize, storage
from rs_embed_ray.io.atomic import atomic_path

log = logging.getLogger(__name__)

GEO_VERSION = "1.1.0"
MANIFEST_KEY = "rs_embed_ray_manifest"
EMBEDDING_PREFIX = "embedding_"
STATUS_PREFIX = "status_"
ERROR_PREFIX = "error_"
FIXED_COLUMNS = (
    "point_index",
    "name",
    "geometry",
    "bbox",
    "window_start",
    "window_end",
)
# the manifest fields that grow with the number of places stay in the sidecar only: the
# parquet footer is read on every open (and pyarrow caps its size)
PER_PLACE_FIELDS = ("spatials", "names", "temporals")
PER_PLACE_MODEL_FIELDS = ("metas", "errors_by_index")  # failed_indices kept: summaries

# EPSG:4326 as PROJJSON (what pyproj writes; GeoParquet readers need the full definition)
EPSG_4326_PROJJSON: dict[str, Any] = {
    "$schema": "https://proj.org/schemas/v0.7/projjson.schema.json",
    "type": "GeographicCRS",
    "name": "WGS 84",
    "datum_ensemble": {
        "name": "World Geodetic System 1984 ensemble",
        "members": [
            {
                "name": "World Geodetic System 1984 (Transit)",
                "id": {"authority": "EPSG", "code": 1166},
            },
            {
                "name": "World Geodetic System 1984 (G730)",
                "id": {"authority": "EPSG", "code": 1152},
            },
            {
                "name": "World Geodetic System 1984 (G873)",
                "id": {"authority": "EPSG", "code": 1153},
            },
            {
                "name": "World Geodetic System 1984 (G1150)",
                "id": {"authority": "EPSG", "code": 1154},
            },
            {
                "name": "World Geodetic System 1984 (G1674)",
                "id": {"authority": "EPSG", "code": 1155},
            },
            {
                "name": "World Geodetic System 1984 (G1762)",
                "id": {"authority": "EPSG", "code": 1156},
            },
            {
                "name": "World Geodetic System 1984 (G2139)",
                "id": {"authority": "EPSG", "code": 1309},
            },
            {
                "name": "World Geodetic System 1984 (G2296)",
                "id": {"authority": "EPSG", "code": 1383},
            },
        ],
        "ellipsoid": {
            "name": "WGS 84",
            "semi_major_axis": 6378137,
            "inverse_flattening": 298.257223563,
        },
        "accuracy": "2.0",
        "id": {"authority": "EPSG", "code": 6326},
    },
    "coordinate_system": {
        "subtype": "ellipsoidal",
        "axis": [
            {
                "name": "Geodetic latitude",
                "abbreviation": "Lat",
                "direction": "north",
                "unit": "degree",
            },
            {
                "name": "Geodetic longitude",
                "abbreviation": "Lon",
                "direction": "east",
                "unit": "degree",
            },
        ],
    },
    "scope": "Horizontal component of 3D system.",
    "area": "World.",
    "bbox": {
        "south_latitude": -90,
        "west_longitude": -180,
        "north_latitude": 90,
        "east_longitude": 180,
    },
    "id": {"authority": "EPSG", "code": 4326},
}


def embedding_column(key: str) -> str:
    return f"{EMBEDDING_PREFIX}{key}"


def vector_column(key: str, single: bool) -> str:
    """The vector column of model ``key``: ``embedding`` in a one-model file (the column
    TorchGeo's embedding datasets read), else ``embedding_<key>``."""
    return "embedding" if single else embedding_column(key)


def model_view_path(path: str | Path, key: str) -> Any:
    """The one-model view of a multi-model file: ``out.parquet`` -> ``out.<key>.parquet``
    (a ``Path``, or a ``UPath`` beside a bucket file)."""
    p = storage.as_path(path)
    return p.with_name(f"{p.stem}.{key}{p.suffix}")


def status_column(key: str) -> str:
    return f"{STATUS_PREFIX}{key}"


def error_column(key: str) -> str:
    return f"{ERROR_PREFIX}{key}"


# -- geometry ------------------------------------------------------------------------------


def _wkb_point(x: float, y: float) -> bytes:
    return struct.pack("<BIdd", 1, 1, float(x), float(y))


def _wkb_box(minx: float, miny: float, maxx: float, maxy: float) -> bytes:
    # exterior ring counter-clockwise (GeoParquet's recommended orientation), closed
    ring = ((minx, miny), (maxx, miny), (maxx, maxy), (minx, maxy), (minx, miny))
    return struct.pack("<BIII", 1, 3, 1, len(ring)) + b"".join(
        struct.pack("<dd", float(x), float(y)) for x, y in ring
    )


def spatial_geometry(spatial: dict[str, Any]) -> tuple[bytes, str, tuple[float, ...]]:
    """``(wkb, geometry type, (xmin, ymin, xmax, ymax))`` of a place's manifest dict: the
    point of a PointBuffer, the box of a BBox."""
    if "lon" in spatial and "lat" in spatial:
        x, y = float(spatial["lon"]), float(spatial["lat"])
        return _wkb_point(x, y), "Point", (x, y, x, y)
    if all(k in spatial for k in ("minlon", "minlat", "maxlon", "maxlat")):
        b = tuple(float(spatial[k]) for k in ("minlon", "minlat", "maxlon", "maxlat"))
        return _wkb_box(*b), "Polygon", b
    raise ValueError(f"cannot make a geometry of place {spatial!r}")


def geometry_to_spatial(wkb: bytes | None) -> dict[str, Any]:
    """A place dict from WKB: ``{lon, lat}`` for a point, the bounds of anything else made of
    rings (``{minlon, minlat, maxlon, maxlat}``); ``{}`` when unreadable."""
    if not wkb:
        return {}
    try:
        order = "<" if wkb[0] == 1 else ">"
        gtype = struct.unpack_from(f"{order}I", wkb, 1)[0] & 0xFFFF  # drop EWKB flags
        base, dims = gtype % 1000, (3 if gtype // 1000 in (1, 2) else 4 if gtype >= 3000 else 2)
        if base == 1:
            x, y = struct.unpack_from(f"{order}dd", wkb, 5)
            return {"lon": x, "lat": y} if math.isfinite(x + y) else {}
        if base == 3:
            n_rings = struct.unpack_from(f"{order}I", wkb, 5)[0]
            off, xs, ys = 9, [], []
            for _ in range(n_rings):
                n_pts = struct.unpack_from(f"{order}I", wkb, off)[0]
                off += 4
                for _ in range(n_pts):
                    x, y = struct.unpack_from(f"{order}dd", wkb, off)
                    xs.append(x)
                    ys.append(y)
                    off += 8 * dims
            if xs:
                return {"minlon": min(xs), "minlat": min(ys), "maxlon": max(xs), "maxlat": max(ys)}
    except (struct.error, IndexError, TypeError):
        pass
    return {}


def geo_metadata(geometry_types: Sequence[str], bbox: Sequence[float] | None) -> dict[str, Any]:
    """The ``geo`` schema metadata (GeoParquet 1.1) of our single geometry column."""
    col: dict[str, Any] = {
        "encoding": "WKB",
        "geometry_types": sorted(set(geometry_types)),
        "crs": EPSG_4326_PROJJSON,
        "edges": "planar",
        "covering": {
            "bbox": {
                "xmin": ["bbox", "xmin"],
                "ymin": ["bbox", "ymin"],
                "xmax": ["bbox", "xmax"],
                "ymax": ["bbox", "ymax"],
            }
        },
    }
    if bbox is not None:
        col["bbox"] = [float(v) for v in bbox]
    return {"version": GEO_VERSION, "primary_column": "geometry", "columns": {"geometry": col}}


def compact_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """The manifest without its per-place lists (those are columns of the file)."""
    out = {k: v for k, v in manifest.items() if k not in PER_PLACE_FIELDS}
    out["models"] = [
        {k: v for k, v in e.items() if k not in PER_PLACE_MODEL_FIELDS}
        for e in manifest.get("models", [])
    ]
    out["per_place_fields_in_columns"] = True
    out["has_temporals"] = "temporals" in manifest  # then the window columns are per place
    return out


# -- writing -------------------------------------------------------------------------------


def rows_per_group(dims: Sequence[int | None], target_bytes: int = 16 << 20) -> int:
    """Rows per row group: about ``target_bytes`` of vectors, within [256, 65536]."""
    per_row = 4 * sum(int(d or 0) for d in dims) + 256
    return max(256, min(65536, target_bytes // per_row))


class GeoParquetWriter:
    """Append row groups to a GeoParquet file; ``commit`` makes it appear atomically."""

    def __init__(
        self,
        path: str | Path,
        *,
        models: Sequence[tuple[str, int | None]],
        geometry_types: Sequence[str],
        bbox: Sequence[float] | None,
        dtype: str = quantize.FLOAT32,
    ) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.pa = pa
        self.path = storage.as_path(path)
        self.dims = dict(models)
        self.dtype = dtype
        self.single = len(self.dims) == 1  # TorchGeo's shape: ``embedding``, ``datetime``
        fields = [
            pa.field("point_index", pa.int64(), nullable=False),
            pa.field("name", pa.string()),
            pa.field("geometry", pa.binary(), nullable=False),
            pa.field(
                "bbox",
                pa.struct([(k, pa.float64()) for k in ("xmin", "ymin", "xmax", "ymax")]),
            ),
            pa.field("window_start", pa.date32()),
            pa.field("window_end", pa.date32()),
        ]
        if self.single:
            fields.append(pa.field("datetime", pa.timestamp("ms", tz="UTC")))
        value = pa.from_numpy_dtype(np.dtype(dtype))
        for key, dim in models:
            vec = pa.list_(value, int(dim)) if dim else pa.list_(value)
            col = self.vector_column(key)
            fields += [
                pa.field(status_column(key), pa.string()),
                pa.field(error_column(key), pa.string()),
                pa.field(col, vec),
            ]
            if quantize.is_quantized(dtype):
                fields += [
                    pa.field(quantize.scale_key(col), pa.float32()),
                    pa.field(quantize.offset_key(col), pa.float32()),
                ]
        geo = geo_metadata(geometry_types, bbox)
        self.schema = pa.schema(fields, metadata={"geo": json.dumps(geo)})
        self.columns = list(self.schema.names)
        self._ctx = atomic_path(self.path)
        self._tmp = self._ctx.__enter__()
        try:
            self._writer = pq.ParquetWriter(self._tmp, self.schema, compression="zstd")
        except BaseException:
            self._exit_with_error()
            raise
        self.rows = 0
        # a multi-model file has ``embedding_<key>`` columns, which TorchGeo's readers do not
        # know: each model also gets a one-model view file in TorchGeo's shape beside it
        self.views: dict[str, GeoParquetWriter] = {}
        try:
            if not self.single:
                for key, dim in models:
                    self.views[key] = GeoParquetWriter(
                        model_view_path(self.path, key),
                        models=[(key, dim)],
                        geometry_types=geometry_types,
                        bbox=bbox,
                        dtype=dtype,
                    )
        except BaseException:
            self.abort()
            raise

    def vector_column(self, key: str) -> str:
        return vector_column(key, self.single)

    def _vectors(self, key: str, vecs: np.ndarray, valid: np.ndarray) -> Any:
        pa = self.pa
        typ = self.schema.field(self.vector_column(key)).type
        valid = np.asarray(valid, dtype=bool)
        if isinstance(typ, pa.FixedSizeListType):
            flat = pa.array(np.ascontiguousarray(vecs, dtype=np.dtype(self.dtype)).reshape(-1))
            return pa.FixedSizeListArray.from_arrays(flat, typ.list_size, mask=pa.array(~valid))
        rows = [v.tolist() if ok else None for v, ok in zip(vecs, valid, strict=True)]
        return pa.array(rows, type=typ)

    def write_rows(
        self,
        *,
        indices: Sequence[int],
        names: Sequence[str],
        geometries: Sequence[bytes],
        bboxes: Sequence[Sequence[float]],
        windows: Sequence[tuple[str, str]],
        models: dict[str, tuple[list[str], list[str | None], np.ndarray, np.ndarray]],
    ) -> None:
        """One row group. ``models[key] = (statuses, errors, vectors (rows, D), valid)``;
        float32 vectors, stored as the writer's ``dtype``."""
        pa = self.pa
        cols: dict[str, Any] = {
            "point_index": pa.array(list(indices), pa.int64()),
            "name": pa.array(list(names), pa.string()),
            "geometry": pa.array(list(geometries), pa.binary()),
            "bbox": pa.array(
                [dict(zip(("xmin", "ymin", "xmax", "ymax"), b, strict=True)) for b in bboxes],
                self.schema.field("bbox").type,
            ),
            "window_start": pa.array([date.fromisoformat(w[0]) for w in windows], pa.date32()),
            "window_end": pa.array([date.fromisoformat(w[1]) for w in windows], pa.date32()),
        }
        if self.single:
            starts = [datetime.fromisoformat(w[0]).replace(tzinfo=UTC) for w in windows]
            cols["datetime"] = pa.array(starts, self.schema.field("datetime").type)
        for key, (status, error, vecs, valid) in models.items():
            cols[status_column(key)] = pa.array(status, pa.string())
            cols[error_column(key)] = pa.array(error, pa.string())
            codes, scale, offset = quantize.encode(vecs, self.dtype)
            col = self.vector_column(key)
            cols[col] = self._vectors(key, codes, valid)
            if scale is not None and offset is not None:
                mask = ~np.asarray(valid, dtype=bool)
                cols[quantize.scale_key(col)] = pa.array(scale, pa.float32(), mask=mask)
                cols[quantize.offset_key(col)] = pa.array(offset, pa.float32(), mask=mask)
        table = pa.Table.from_arrays([cols[c] for c in self.columns], schema=self.schema)
        self._writer.write_table(table, row_group_size=max(1, table.num_rows))
        self.rows += table.num_rows
        for key, view in self.views.items():
            view.write_rows(
                indices=indices,
                names=names,
                geometries=geometries,
                bboxes=bboxes,
                windows=windows,
                models={key: models[key]},
            )

    def commit(self, manifest: dict[str, Any] | None = None) -> None:
        # the views first: the main file appearing is what marks the export complete
        for view in self.views.values():
            view.commit()
        if manifest is not None:
            self._writer.add_key_value_metadata(
                {MANIFEST_KEY: json.dumps(manifest, ensure_ascii=False)}
            )
        self._writer.close()
        self._ctx.__exit__(None, None, None)

    def _exit_with_error(self) -> None:
        try:
            raise RuntimeError("aborted")
        except RuntimeError as exc:
            self._ctx.__exit__(type(exc), exc, exc.__traceback__)

    def abort(self) -> None:
        for view in self.views.values():
            view.abort()
        if not hasattr(self, "_writer"):
            return
        try:
            self._writer.close()
        except Exception:  # a half-written file is removed below anyway
            pass
        finally:
            self._exit_with_error()


# -- reading -------------------------------------------------------------------------------


def vectors_to_numpy(column: Any) -> np.ndarray:
    """A list column (fixed-size or not) as float32 ``(n, D)``; NaN rows where null."""
    import pyarrow as pa

    arr = column.combine_chunks() if isinstance(column, pa.ChunkedArray) else column
    n = len(arr)
    valid = np.asarray(arr.is_valid().to_numpy(zero_copy_only=False), dtype=bool)
    ok = arr.filter(pa.array(valid))
    if isinstance(arr.type, pa.FixedSizeListType):
        dim = arr.type.list_size
    else:
        lengths = {len(v) for v in ok.to_pylist()}
        if len(lengths) > 1:
            raise ValueError(f"vectors differ in length: {sorted(lengths)}")
        dim = lengths.pop() if lengths else 0
    out = np.full((n, dim), np.nan, dtype=np.float32)
    if len(ok):
        out[valid] = np.asarray(ok.flatten().to_numpy(zero_copy_only=False), np.float32).reshape(
            -1, dim
        )
    return out


class GeoParquetFile:
    """Read side: schema metadata, per-place columns and embedding columns of one file."""

    def __init__(self, path: str | Path) -> None:
        import pyarrow.parquet as pq

        self.path = str(path)
        self.pf = pq.ParquetFile(self.path)
        schema = self.pf.schema_arrow
        # the file's key-value metadata: the schema's (geo) plus what commit() added
        raw = dict(schema.metadata or {})
        raw.update(self.pf.metadata.metadata or {})
        raw.pop(b"ARROW:schema", None)
        self.metadata = {
            k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in raw.items()
        }
        self.columns = list(schema.names)
        self.n_rows = int(self.pf.metadata.num_rows)
        # the models: one status column each (a one-model file's vectors are ``embedding``)
        self.model_keys = [
            c[len(STATUS_PREFIX) :] for c in self.columns if c.startswith(STATUS_PREFIX)
        ] or [c[len(EMBEDDING_PREFIX) :] for c in self.columns if c.startswith(EMBEDDING_PREFIX)]

    def vector_column(self, key: str) -> str:
        """Model ``key``'s vector column: ``embedding_<key>``, else a one-model ``embedding``."""
        col = embedding_column(key)
        return col if col in self.columns or "embedding" not in self.columns else "embedding"

    def scalars(self, name: str) -> np.ndarray:
        """A float column as float32, NaN where null (an int8 vector's scale or offset)."""
        col = self.column(name)
        return np.asarray(col.to_numpy(zero_copy_only=False), dtype=np.float32)

    def geo(self) -> dict[str, Any] | None:
        try:
            return json.loads(self.metadata["geo"])
        except (KeyError, ValueError, RecursionError):
            return None

    def manifest(self) -> dict[str, Any] | None:
        raw = self.metadata.get(MANIFEST_KEY)
        if raw is None:
            return None
        try:
            data = json.loads(raw)
        except (ValueError, RecursionError):  # a crafted, deeply nested manifest too
            log.warning("%s: embedded manifest is not valid JSON; ignored", self.path)
            return None
        return data if isinstance(data, dict) else None

    def column(self, name: str) -> Any:
        return self.pf.read(columns=[name]).column(0)

    def pylist(self, name: str) -> list[Any]:
        return self.column(name).to_pylist() if name in self.columns else [None] * self.n_rows

    def vectors(self, name: str) -> np.ndarray:
        return vectors_to_numpy(self.column(name))

    def spatials(self) -> list[dict[str, Any]]:
        return [geometry_to_spatial(g) for g in self.pylist("geometry")]

    def windows(self) -> list[dict[str, Any] | None]:
        starts, ends = self.pylist("window_start"), self.pylist("window_end")
        return [
            {"mode": "range", "year": None, "start": s.isoformat(), "end": e.isoformat()}
            if s is not None and e is not None
            else None
            for s, e in zip(starts, ends, strict=True)
        ]

    def close(self) -> None:
        self.pf.close()


def parquet_intact(path: str | Path, manifest: dict[str, Any]) -> bool:
    """The file opens, has the manifest's rows and columns, and every row group decodes."""
    try:
        f = GeoParquetFile(path)
    except Exception as exc:
        log.warning("existing output %s is unreadable (%s); it will be rewritten", path, exc)
        return False
    try:
        want = manifest.get("n_items")
        if want is not None and int(want) != f.n_rows:
            return False
        if any(c not in f.columns for c in manifest.get("parquet_columns", [])):
            return False
        if f.geo() is None:
            return False
        for i in range(f.pf.num_row_groups):
            f.pf.read_row_group(i)
        return True
    except Exception as exc:
        log.warning("existing output %s is unreadable (%s); it will be rewritten", path, exc)
        return False
    finally:
        f.close()
