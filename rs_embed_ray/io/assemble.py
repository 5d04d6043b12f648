"""Final export files from the run's shards: per-item files and the streamed combined file.

Keys, refs and manifest fields follow rs-embed's contract (§2.16-§2.17) so rs-embed's own
``load_export`` reads our files. Pure Python (numpy, netCDF4, pyarrow), no ray: per-item files
are written by Ray tasks, the combined file by the driver, both through these functions.
What differs between file types (npz, netCDF, GeoParquet...) is the format plug-in's
(io.formats): this module builds the arrays, references and manifests, and never asks which
format it writes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from rs_embed_ray.inspection import INSPECTION_META
from rs_embed_ray.io import quantize as q
from rs_embed_ray.io import storage
from rs_embed_ray.io.atomic import write_json
from rs_embed_ray.io.formats import ModelColumns, Places, Stack, get_format
from rs_embed_ray.io.formats.base import select_channels
from rs_embed_ray.io.lazy import JsonSpool
from rs_embed_ray.io.manifest import (
    array_sha1,
    error_text,
    prefetch_error,
    summarize_status,
    utc_ts,
)
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.steptable import StepRows

log = logging.getLogger(__name__)


class _Recorded(Exception):
    """An error a worker already recorded (its text is what the manifest keeps)."""


def _ref(key: str, arr: np.ndarray) -> dict[str, Any]:
    return {"npz_key": key, "dtype": "float32", "shape": list(arr.shape), "sha1": array_sha1(arr)}


def _store_embedding(arrays: dict[str, np.ndarray], key: str, e: Any, dtype: str) -> dict:
    """Put a place's embedding in ``arrays`` as ``dtype`` (int8: with its scale and offset
    beside it); return its reference. The digest is of the codes as float32, what the
    resume check reads back."""
    codes, scale, offset = q.encode(np.asarray(e, dtype=np.float32), dtype)
    arrays[key] = codes
    if dtype == q.FLOAT32:
        return _ref(key, codes)
    ref = {**_ref(key, codes.astype(np.float32)), "dtype": dtype}
    desc = dict(q.file_attribute(dtype) or {})
    if scale is not None and offset is not None:
        arrays[q.scale_key(key)] = np.asarray(scale)
        arrays[q.offset_key(key)] = np.asarray(offset)
        desc.update(scale_key=q.scale_key(key), offset_key=q.offset_key(key))
    return {**ref, "quantization": desc}


def sidecar_path(array_path: Path) -> Path:
    return array_path.with_suffix(".json")


def _write_sidecar(
    manifest: dict[str, Any], array_path: Path, save_manifest: bool, stream: bool = True
) -> None:
    """``stream=False``: a place's own sidecar (small, no lazy lists; ``write_json``)."""
    side = sidecar_path(array_path)
    if save_manifest:
        manifest["manifest_path"] = str(side)
        write_json(side, manifest, stream=stream)
    elif side.exists():
        side.unlink()


# -- per item ------------------------------------------------------------------------------


def _item_entry(
    ctx: dict[str, Any],
    m: dict[str, Any],
    row: dict[str, Any],
    reader: ShardReader,
    arrays: dict[str, np.ndarray],
    stored_inputs: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Model ``m``'s entry of a place's manifest; its arrays are added to ``arrays``."""
    index, sources = int(row["index"]), row["sources"]
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
            # the patch's array is read only for the input it stores (once per input)
            new_input = ctx["save_inputs"] and m["input_key"] not in stored_inputs
            if new_input:
                x, fmeta = reader.read(patch_src["shard"], index)
            else:
                fmeta = reader.read_meta(patch_src["shard"], index)
            inspection = fmeta.pop(INSPECTION_META, None)
            if fmeta:
                entry["fetch_meta"] = fmeta
            if ctx["save_inputs"]:
                if not new_input:
                    entry["input"] = {**stored_inputs[m["input_key"]], "dedup_reused": True}
                else:
                    key = f"input_chw__{m['key']}"
                    arrays[key] = select_channels(x, m["channels"]).astype(np.float32, copy=False)
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
            entry["embedding"] = _store_embedding(arrays, key, e, ctx.get("dtype", q.FLOAT32))
            entry["weights"] = emeta.pop("weights", None)
            entry["meta"] = emeta
    except Exception as exc:
        entry["status"] = "failed"
        # as rs-embed records it: repr of the model's exception (already text when a
        # worker recorded it)
        entry["error"] = str(exc) if isinstance(exc, _Recorded) else error_text(exc)
        entry["embedding"] = None
        entry["meta"] = None
    return entry


def write_item(
    ctx: dict[str, Any], row: dict[str, Any], reader: ShardReader | None = None
) -> dict[str, Any]:
    """Write ``<name><ext>`` + ``<name>.json`` for one place; return its manifest."""
    reader = reader or ShardReader()
    index = int(row["index"])
    arrays: dict[str, np.ndarray] = {}  # in rs-embed's order: per model, input then embedding
    stored_inputs: dict[str, dict[str, Any]] = {}
    entries = [_item_entry(ctx, m, row, reader, arrays, stored_inputs) for m in ctx["models"]]
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
    path = storage.as_path(ctx["out_dir"]) / f"{row['name']}{ctx['ext']}"
    attrs = {**file_attrs(ctx), "temporal": temporal}
    get_format(ctx["format"]).write_item(path, arrays, manifest, attrs)
    _write_sidecar(manifest, path, ctx["save_manifest"], stream=False)
    return manifest


def file_attrs(ctx: dict[str, Any], n_items: int | None = None) -> dict[str, Any]:
    """What a format that keeps global attributes (netCDF) records about the run (and how
    vectors are quantized, when they are)."""
    dtype = ctx.get("dtype", q.FLOAT32)
    quant = q.file_attribute(dtype)
    return {
        **({"dtype": dtype, "quantization": quant} if quant else {}),
        "created_at": utc_ts(),
        "backend": ctx["backend"],
        "device": ctx["device"],
        "n_items": n_items,
        "temporal": ctx["temporal"],
        "output": ctx["output"],
    }


# -- combined ------------------------------------------------------------------------------


def model_columns(
    m: dict[str, Any],
    ctx: dict[str, Any],
    n: int,
    patch_src: dict[str, dict[int, dict[str, Any]]],
    embed_src: dict[str, dict[int, dict[str, Any]]],
    reader: ShardReader,
) -> ModelColumns:
    """Model ``m``'s places without an embedding (fetch errors first) and its stacks."""
    errors: dict[int, str] = {}
    psrc = patch_src.get(m["fetch_key"], {}) if m["fetch_key"] else {}
    for i in range(n):
        p = psrc.get(i)
        if m["fetch_key"] and (p is None or p["status"] != "ok"):
            errors[i] = prefetch_error(m["name"], i, m["fetch_key"], (p or {}).get("error"))
    inputs = None
    if ctx["save_inputs"] and m["fetch_key"]:
        fetched = StepRows(psrc, _without(n, errors))
        key = m["key"]
        inputs = Stack(f"inputs_bchw__{key}", f"input_chw__{key}", fetched, reader)
        inputs.channels, inputs.partial_stacked = m["channels"], True
    embeddings = None
    if ctx["save_embeddings"]:
        esrc = embed_src.get(m["key"], {})
        for i in range(n):
            e = esrc.get(i)
            if i not in errors and (e is None or e["status"] != "ok"):
                errors[i] = (e or {}).get("error") or "embedding missing"
        ok = StepRows(esrc, _without(n, errors))
        embeddings = Stack(f"embeddings__{m['key']}", f"embedding__{m['key']}", ok, reader)
        embeddings.dtype = ctx.get("dtype", q.FLOAT32)
        embeddings.metas = JsonSpool(n)  # the manifest's metas, on disk until written
    chips = {
        tuple(r["shape"][-2:]) for r in psrc.values() if r["status"] == "ok" and r.get("shape")
    }
    chip = next(iter(chips)) if len(chips) == 1 else None
    return ModelColumns(m, errors, inputs, embeddings, chip)


def _without(n: int, skip: dict[int, str]) -> np.ndarray:
    """The places ``0..n-1`` that are not in ``skip``, as an index array."""
    keep = np.ones(n, dtype=bool)
    keep[list(skip)] = False
    return np.flatnonzero(keep)


def _entry(cols: ModelColumns, refs: dict[str, Any], n: int) -> dict[str, Any]:
    """A model's entry of the combined manifest (contract §2.17.5)."""
    m = cols.spec
    entry: dict[str, Any] = {
        "model": m["name"],
        "sensor": m["sensor"],
        "status": "ok",
        "describe": m["describe"],
        "inputs": refs["inputs"],
        "embeddings": refs["embeddings"],
        "metas": None,
    }
    stack = cols.embeddings
    if stack is not None:
        if stack.weights_from is not None:
            entry["weights"] = stack.weights
        entry["metas"] = stack.metas
    if cols.errors:
        entry["failed_indices"] = sorted(cols.errors)
        entry["errors_by_index"] = {str(i): cols.errors[i] for i in sorted(cols.errors)}
        entry["status"] = "failed" if len(cols.errors) == n else "partial"
    return entry


def share_inputs(models: list[ModelColumns]) -> dict[int, int]:
    """Models whose inputs another model already stores (same input): ``{j: first}``; their
    stacks are dropped so the file holds each input once."""
    first: dict[str, int] = {}
    shared: dict[int, int] = {}
    for j, cols in enumerate(models):
        if cols.inputs is None:
            continue
        key = cols.spec["input_key"]
        if key in first:
            shared[j] = first[key]
            cols.inputs = None
        else:
            first[key] = j
    return shared


def write_combined(
    ctx: dict[str, Any],
    path: Path,
    *,
    spatials: Sequence[dict[str, Any]],
    names: list[str],
    centers: Sequence[tuple[float, float]],
    patch_src: dict[str, dict[int, dict[str, Any]]],
    embed_src: dict[str, dict[int, dict[str, Any]]],
    fingerprint: str,
    temporals: Sequence[dict[str, Any] | None] | None = None,
    parallel_map: Callable[[Callable[[Any], Any], list[Any]], list[Any]] | None = None,
    done_jobs: frozenset[Any] = frozenset(),
) -> dict[str, Any]:
    """Stream the combined file from shards in item order; return the final manifest.

    ``patch_src[fetch_key][i]`` / ``embed_src[model_key][i]`` are ``{"status", "shard",
    "error", "shape"}``; memory holds one row at a time (plus a few open shard files), or
    one row group for a row-wise format. ``temporals``: each place's own window (manifest
    form), when places have windows of their own (recorded as the manifest's
    ``temporals``). The format's sink writes; this function never asks which format it is.
    ``done_jobs``: region jobs this run already wrote while batches finished (``io.stream``).
    """
    n = len(spatials)
    places = Places(spatials, names, centers, ctx["temporal"], temporals)
    reader = ShardReader()
    sink = get_format(ctx["format"]).combined_sink(path, file_attrs(ctx, n))
    if parallel_map is not None:  # the pipeline's tasks (a sink with regions uses them)
        sink.parallel_map = parallel_map
    sink.done_jobs = frozenset(done_jobs)
    try:
        models = [model_columns(m, ctx, n, patch_src, embed_src, reader) for m in ctx["models"]]
        shared = share_inputs(models)
        sink.on_write_start(places, models)
        refs = sink.write(models)
        for j, first in shared.items():
            if refs[first]["inputs"] is not None:
                refs[j]["inputs"] = {**refs[first]["inputs"], "dedup_reused": True}
        entries = [_entry(cols, r, n) for cols, r in zip(models, refs, strict=True)]
        manifest = _combined_manifest(ctx, entries, n, spatials, names, temporals, fingerprint)
        sink.on_write_complete(manifest)
    except BaseException as exc:
        sink.on_write_failed(exc)
        raise
    finally:
        reader.close()
    _write_sidecar(manifest, path, ctx["save_manifest"])
    return manifest


def _combined_manifest(
    ctx: dict[str, Any],
    entries: list[dict[str, Any]],
    n: int,
    spatials: Sequence[dict[str, Any]],
    names: list[str],
    temporals: Sequence[Any] | None,
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
