"""Final export files from the run's shards: per-item files and the streamed combined file.

Keys, refs and manifest fields follow rs-embed's contract (§2.16-§2.17) so rs-embed's own
``load_export`` reads our files. Pure Python (numpy, netCDF4, pyarrow), no ray: per-item files
are written by Ray tasks, the combined file by the driver, both through these functions.
The combined file is npz, netCDF or GeoParquet (pooled vectors, one row per place).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.inspection import INSPECTION_META
from rs_embed_ray.io.atomic import write_text
from rs_embed_ray.io.manifest import (
    array_sha1,
    error_text,
    jsonable,
    prefetch_error,
    summarize_status,
    utc_ts,
)
from rs_embed_ray.io.netcdf import NetcdfWriter
from rs_embed_ray.io.npz import NpzStreamWriter, write_npz
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.specs import temporal_from_dict, window_of

log = logging.getLogger(__name__)


class _Recorded(Exception):
    """An error a worker already recorded (its text is what the manifest keeps)."""


def _select(arr: np.ndarray, channels: list[int] | None) -> np.ndarray:
    if channels is None:
        return arr
    return np.ascontiguousarray(np.take(arr, channels, axis=-3))


def _ref(key: str, arr: np.ndarray) -> dict[str, Any]:
    return {"npz_key": key, "dtype": "float32", "shape": list(arr.shape), "sha1": array_sha1(arr)}


def sidecar_path(array_path: Path) -> Path:
    return array_path.with_suffix(".json")


def _write_sidecar(manifest: dict[str, Any], array_path: Path, save_manifest: bool) -> None:
    side = sidecar_path(array_path)
    if save_manifest:
        manifest["manifest_path"] = str(side)
        write_text(side, json.dumps(manifest, ensure_ascii=False, indent=2))
    elif side.exists():
        side.unlink()


# -- per item ------------------------------------------------------------------------------


def write_item(
    ctx: dict[str, Any], row: dict[str, Any], reader: ShardReader | None = None
) -> dict[str, Any]:
    """Write ``<name>.npz|.nc`` + ``<name>.json`` for one place; return its manifest."""
    reader = reader or ShardReader()
    index = int(row["index"])
    sources = row["sources"]
    arrays: dict[str, np.ndarray] = {}
    stored_inputs: dict[str, dict[str, Any]] = {}
    entries: list[dict[str, Any]] = []
    for m in ctx["models"]:
        entry: dict[str, Any] = {
            "model": m["name"],
            "status": "ok",
            "sensor": m["sensor"],
            "describe": m["describe"],
            "input": None,
            "embedding": None,
            "meta": None,
        }
        try:
            patch_src = sources["patch"].get(m["fetch_key"]) if m["fetch_key"] else None
            if patch_src is not None:
                if patch_src["status"] != "ok":
                    err = prefetch_error(m["name"], index, m["fetch_key"], patch_src.get("error"))
                    raise _Recorded(err)
                x, fmeta = reader.read(patch_src["shard"], index)
                inspection = fmeta.pop(INSPECTION_META, None)
                if fmeta:
                    entry["fetch_meta"] = fmeta
                if ctx["save_inputs"]:
                    if m["input_key"] in stored_inputs:
                        entry["input"] = {**stored_inputs[m["input_key"]], "dedup_reused": True}
                    else:
                        key = f"input_chw__{m['key']}"
                        arrays[key] = _select(x, m["channels"]).astype(np.float32)
                        entry["input"] = _ref(key, arrays[key])
                        if inspection is not None:  # input checks ran (fail_on_bad_input)
                            entry["input"]["inspection"] = inspection
                        stored_inputs[m["input_key"]] = entry["input"]
            if ctx["save_embeddings"]:
                src = sources["embed"].get(m["key"])
                if src is None or src["status"] != "ok":
                    raise _Recorded((src or {}).get("error") or "embedding missing")
                e, emeta = reader.read(src["shard"], index)
                key = f"embedding__{m['key']}"
                arrays[key] = np.asarray(e, dtype=np.float32)
                entry["embedding"] = _ref(key, arrays[key])
                entry["weights"] = emeta.pop("weights", None)
                entry["meta"] = emeta
        except Exception as exc:
            entry["status"] = "failed"
            # as rs-embed records it: repr of the model's exception (already text when a
            # worker recorded it)
            entry["error"] = str(exc) if isinstance(exc, _Recorded) else error_text(exc)
            entry["embedding"] = None
            entry["meta"] = None
        entries.append(entry)
    statuses = [e["status"] for e in entries]
    failed = sum(s == "failed" for s in statuses)
    temporal = row["temporal"] if "temporal" in row else ctx["temporal"]  # the place's own
    manifest: dict[str, Any] = {
        "created_at": utc_ts(),
        "point_index": index,
        "name": row["name"],
        "status": summarize_status(statuses),
        "backend": ctx["backend"],
        "device": ctx["device"],
        "models": entries,
        "spatial": row["spatial_manifest"],
        "temporal": temporal,
        "output": ctx["output"],
        "input_prep": ctx["input_prep"],
        "package": "rs-embed-ray",
        "package_version": ctx["package_version"],
        "summary": {
            "total_models": len(entries),
            "failed_models": failed,
            "ok_models": len(entries) - failed,
        },
        "request_fingerprint": row["fingerprint"],
    }
    path = Path(ctx["out_dir"]) / f"{row['name']}{ctx['ext']}"
    if ctx["format"] == "npz":
        manifest["npz_path"] = str(path)
        manifest["npz_keys"] = sorted(arrays)
        write_npz(path, arrays)
    else:
        manifest["nc_path"] = str(path)
        manifest["nc_variables"] = sorted(arrays)
        nc = NetcdfWriter(path, attrs={**_nc_attrs(ctx), "temporal": temporal})
        try:
            for key in arrays:  # rs-embed's order (per model: input, then embedding)
                nc.add(key, arrays[key])
            man = jsonable(manifest)
            nc.commit(man)
        except BaseException:
            nc.abort()
            raise
    _write_sidecar(manifest, path, ctx["save_manifest"])
    return manifest


def _nc_attrs(ctx: dict[str, Any], n_items: int | None = None) -> dict[str, Any]:
    return {
        "created_at": utc_ts(),
        "backend": ctx["backend"],
        "device": ctx["device"],
        "n_items": n_items,
        "temporal": ctx["temporal"],
        "output": ctx["output"],
    }


# -- combined ------------------------------------------------------------------------------


def _rows(
    reader: ShardReader,
    items: list[tuple[int, dict[str, Any]]],
    channels: list[int] | None,
    metas: dict[int, dict[str, Any]] | None = None,
) -> Iterator[tuple[int, np.ndarray]]:
    """Rows in item order; each row's meta is collected into ``metas`` on the same read."""
    for i, src in items:
        arr, meta = reader.read(src["shard"], i)
        if metas is not None:
            metas[i] = meta
        yield i, _select(np.asarray(arr, dtype=np.float32), channels)


def write_combined(
    ctx: dict[str, Any],
    path: Path,
    *,
    spatials: list[dict[str, Any]],
    names: list[str],
    centers: list[tuple[float, float]],
    patch_src: dict[str, dict[int, dict[str, Any]]],
    embed_src: dict[str, dict[int, dict[str, Any]]],
    fingerprint: str,
    temporals: list[dict[str, Any] | None] | None = None,
) -> dict[str, Any]:
    """Stream the combined file from shards in item order; return the final manifest.

    ``patch_src[fetch_key][i]`` / ``embed_src[model_key][i]`` are ``{"status", "shard",
    "error", "shape"}``; memory holds one row at a time (plus a few open shard files), one
    row group for GeoParquet. ``temporals``: each place's own window (manifest form), when
    places have windows of their own (recorded as the manifest's ``temporals``).
    """
    if ctx["format"] == "geoparquet":
        return _write_combined_geoparquet(
            ctx,
            path,
            spatials=spatials,
            names=names,
            patch_src=patch_src,
            embed_src=embed_src,
            fingerprint=fingerprint,
            temporals=temporals,
        )
    n = len(spatials)
    reader = ShardReader()
    is_nc = ctx["format"] == "netcdf"
    if is_nc:
        coords = {
            "lon": [c[0] for c in centers],
            "lat": [c[1] for c in centers],
            "name": names,
        }
        writer: Any = NetcdfWriter(path, n_items=n, coords=coords, attrs=_nc_attrs(ctx, n))
    else:
        writer = NpzStreamWriter(path)
    entries: list[dict[str, Any]] = []
    stored_inputs: dict[str, dict[str, Any]] = {}
    try:
        for m in ctx["models"]:
            entry: dict[str, Any] = {
                "model": m["name"],
                "sensor": m["sensor"],
                "status": "ok",
                "describe": m["describe"],
                "inputs": None,
                "embeddings": None,
                "metas": None,
            }
            errors: dict[int, str] = {}
            psrc = patch_src.get(m["fetch_key"], {}) if m["fetch_key"] else {}
            for i in range(n):
                p = psrc.get(i)
                if m["fetch_key"] and (p is None or p["status"] != "ok"):
                    errors[i] = prefetch_error(m["name"], i, m["fetch_key"], (p or {}).get("error"))
            if ctx["save_inputs"] and m["fetch_key"]:
                if m["input_key"] in stored_inputs:
                    entry["inputs"] = {**stored_inputs[m["input_key"]], "dedup_reused": True}
                else:
                    ok_items = [(i, psrc[i]) for i in range(n) if i not in errors]
                    entry["inputs"] = _write_stack(
                        writer,
                        reader,
                        f"inputs_bchw__{m['key']}",
                        f"input_chw__{m['key']}",
                        ok_items,
                        m["channels"],
                        n,
                        partial_stacked=True,
                    )
                    if entry["inputs"] is not None:
                        stored_inputs[m["input_key"]] = entry["inputs"]
            if ctx["save_embeddings"]:
                esrc = embed_src.get(m["key"], {})
                for i in range(n):
                    e = esrc.get(i)
                    if i not in errors and (e is None or e["status"] != "ok"):
                        errors[i] = (e or {}).get("error") or "embedding missing"
                ok_items = [(i, esrc[i]) for i in range(n) if i not in errors]
                read_metas: dict[int, dict[str, Any]] = {}
                entry["embeddings"] = _write_stack(
                    writer,
                    reader,
                    f"embeddings__{m['key']}",
                    f"embedding__{m['key']}",
                    ok_items,
                    None,
                    n,
                    metas=read_metas,
                )
                metas: list[Any] = [None] * n
                for i, _ in ok_items:
                    emeta = read_metas[i]
                    entry.setdefault("weights", emeta.pop("weights", None))
                    emeta.pop("weights", None)
                    metas[i] = emeta
                entry["metas"] = metas
            if errors:
                entry["failed_indices"] = sorted(errors)
                entry["errors_by_index"] = {str(i): errors[i] for i in sorted(errors)}
                entry["status"] = "failed" if len(errors) == n else "partial"
            entries.append(entry)
        manifest = _combined_manifest(ctx, entries, n, spatials, names, temporals, fingerprint)
        if is_nc:
            manifest["nc_path"] = str(path)
            manifest["nc_variables"] = sorted(writer.variables)
            writer.commit(jsonable(manifest))
        else:
            manifest["npz_path"] = str(path)
            manifest["npz_keys"] = sorted(writer.keys)
            writer.commit()
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    _write_sidecar(manifest, path, ctx["save_manifest"])
    return manifest


def _write_stack(
    writer: Any,
    reader: ShardReader,
    stacked_key: str,
    point_key: str,
    items: list[tuple[int, dict[str, Any]]],
    channels: list[int] | None,
    n: int,
    partial_stacked: bool = False,
    metas: dict[int, dict[str, Any]] | None = None,
) -> dict[str, Any] | None:
    """One model's inputs or embeddings: stacked when every row is ok and alike (contract
    §2.8.4; inputs also when some rows are missing, with ``indices``); otherwise per-point
    keys with ``indices``. The same in both formats, as rs-embed writes them."""
    if not items:
        return None
    shapes = {tuple(src["shape"]) for _, src in items}
    if channels is not None:
        shapes = {(*s[:-3], len(channels), *s[-2:]) for s in shapes}
    indices = [i for i, _ in items]
    if len(shapes) == 1 and (len(items) == n or partial_stacked):
        row_shape = next(iter(shapes))
        rows = (a for _, a in _rows(reader, items, channels, metas))
        writer.stream(stacked_key, row_shape, rows, len(items))
        ref = {"npz_key": stacked_key, "shape": [len(items), *row_shape], "dtype": "float32"}
        if len(items) < n:
            ref["indices"] = indices
        return ref
    keys = []
    for i, arr in _rows(reader, items, channels, metas):
        key = f"{point_key}__{i:05d}"
        writer.add(key, arr)
        keys.append(key)
    return {"npz_keys": keys, "indices": indices, "dtype": "float32"}


# -- combined GeoParquet ---------------------------------------------------------------------


def _model_errors(
    m: dict[str, Any],
    n: int,
    patch_src: dict[str, dict[int, dict[str, Any]]],
    embed_src: dict[str, dict[int, dict[str, Any]]],
) -> dict[int, str]:
    """Places without an embedding of model ``m``, with the reason (fetch first)."""
    errors: dict[int, str] = {}
    psrc = patch_src.get(m["fetch_key"], {}) if m["fetch_key"] else {}
    for i in range(n):
        p = psrc.get(i)
        if m["fetch_key"] and (p is None or p["status"] != "ok"):
            errors[i] = prefetch_error(m["name"], i, m["fetch_key"], (p or {}).get("error"))
    esrc = embed_src.get(m["key"], {})
    for i in range(n):
        e = esrc.get(i)
        if i not in errors and (e is None or e["status"] != "ok"):
            errors[i] = (e or {}).get("error") or "embedding missing"
    return errors


def _write_combined_geoparquet(
    ctx: dict[str, Any],
    path: Path,
    *,
    spatials: list[dict[str, Any]],
    names: list[str],
    patch_src: dict[str, dict[int, dict[str, Any]]],
    embed_src: dict[str, dict[int, dict[str, Any]]],
    fingerprint: str,
    temporals: list[dict[str, Any] | None] | None,
) -> dict[str, Any]:
    """One row per place, one row group at a time, in place order (see io.geoparquet)."""
    from rs_embed_ray.io.geoparquet import (
        GeoParquetWriter,
        compact_manifest,
        embedding_column,
        rows_per_group,
        spatial_geometry,
        status_column,
    )

    n = len(spatials)
    models = ctx["models"]
    errors = {m["key"]: _model_errors(m, n, patch_src, embed_src) for m in models}
    dims: dict[str, int | None] = {}
    for m in models:
        esrc = embed_src.get(m["key"], {})
        shapes = {
            tuple(esrc[i]["shape"] or ())
            for i in range(n)
            if i not in errors[m["key"]] and esrc[i].get("shape") is not None
        }
        if len(shapes) > 1 or any(len(s) != 1 for s in shapes):
            raise ValueError(
                f"format='geoparquet' needs one pooled vector size per model; model "
                f"{m['name']!r} has embeddings of shapes {sorted(shapes)}."
            )
        dims[m["key"]] = shapes.pop()[0] if shapes else m["describe"].get("dim_pooled")
    geoms = [spatial_geometry(s) for s in spatials]
    run_window = window_of(temporal_from_dict(ctx["temporal"]))
    windows = (
        [window_of(temporal_from_dict(t)) for t in temporals]
        if temporals is not None
        else [run_window] * n
    )
    bounds = [g[2] for g in geoms]
    bbox = (
        min(b[0] for b in bounds),
        min(b[1] for b in bounds),
        max(b[2] for b in bounds),
        max(b[3] for b in bounds),
    )
    reader = ShardReader()
    writer = GeoParquetWriter(
        path,
        models=[(m["key"], dims[m["key"]]) for m in models],
        geometry_types=[g[1] for g in geoms],
        bbox=bbox,
    )
    metas: dict[str, list[Any]] = {m["key"]: [None] * n for m in models}
    weights: dict[str, Any] = {}
    try:
        step = rows_per_group(list(dims.values()))
        for a in range(0, n, step):
            rows = range(a, min(n, a + step))
            cols: dict[str, Any] = {}
            for m in models:
                key, err = m["key"], errors[m["key"]]
                esrc = embed_src.get(key, {})
                vecs = np.zeros((len(rows), int(dims[key] or 0)), dtype=np.float32)
                valid = np.zeros(len(rows), dtype=bool)
                for j, i in enumerate(rows):
                    if i in err:
                        continue
                    arr, emeta = reader.read(esrc[i]["shard"], i)
                    vecs[j] = np.asarray(arr, dtype=np.float32).reshape(-1)
                    valid[j] = True
                    w = emeta.pop("weights", None)
                    if key not in weights:
                        weights[key] = w
                    metas[key][i] = emeta
                cols[key] = (
                    ["failed" if i in err else "ok" for i in rows],
                    [err.get(i) for i in rows],
                    vecs,
                    valid,
                )
            writer.write_rows(
                indices=list(rows),
                names=[names[i] for i in rows],
                geometries=[geoms[i][0] for i in rows],
                bboxes=[geoms[i][2] for i in rows],
                windows=[windows[i] for i in rows],
                models=cols,
            )
        entries: list[dict[str, Any]] = []
        for m in models:
            key, err = m["key"], errors[m["key"]]
            entry: dict[str, Any] = {
                "model": m["name"],
                "sensor": m["sensor"],
                "status": "ok",
                "describe": m["describe"],
                "inputs": None,
                "embeddings": None,
                "metas": metas[key],
            }
            if len(err) < n:
                entry["embeddings"] = {
                    "parquet_column": embedding_column(key),
                    "status_column": status_column(key),
                    "dtype": "float32",
                    "shape": [n, dims[key]],
                }
            if key in weights:
                entry["weights"] = weights[key]
            if err:
                entry["failed_indices"] = sorted(err)
                entry["errors_by_index"] = {str(i): err[i] for i in sorted(err)}
                entry["status"] = "failed" if len(err) == n else "partial"
            entries.append(entry)
        manifest = _combined_manifest(ctx, entries, n, spatials, names, temporals, fingerprint)
        manifest.update(
            parquet_path=str(path),
            parquet_columns=list(writer.columns),
            crs="EPSG:4326",
        )
        writer.commit(jsonable(compact_manifest(manifest)))
    except BaseException:
        writer.abort()
        raise
    finally:
        reader.close()
    _write_sidecar(manifest, path, ctx["save_manifest"])
    return manifest


def _combined_manifest(
    ctx: dict[str, Any],
    entries: list[dict[str, Any]],
    n: int,
    spatials: list[dict[str, Any]],
    names: list[str],
    temporals: list[Any] | None,
    fingerprint: str,
) -> dict[str, Any]:
    """The final combined manifest (contract §2.17.5), whatever the file format."""
    statuses = [e["status"] for e in entries]
    failed = sum(s == "failed" for s in statuses)
    partial = sum(s == "partial" for s in statuses)
    return {
        "created_at": utc_ts(),
        "status": summarize_status(statuses),
        "stage": "done",
        "resume_incomplete": False,
        "backend": ctx["backend"],
        "device": ctx["device"],
        "models": entries,
        "n_items": n,
        "temporal": ctx["temporal"],
        "output": ctx["output"],
        "input_prep": ctx["input_prep"],
        "spatials": spatials,
        "names": names,
        **({"temporals": temporals} if temporals is not None else {}),
        "package": "rs-embed-ray",
        "package_version": ctx["package_version"],
        "request_fingerprint": fingerprint,
        "summary": {
            "total_models": len(entries),
            "failed_models": failed,
            "partial_models": partial,
            "ok_models": len(entries) - failed - partial,
        },
        "completed_at": utc_ts(),
    }
