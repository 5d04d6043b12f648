"""Writer stages: embedding shards after inference, and the per-item export files.

Both run as Ray tasks next to the data (threads with the in-process executor), so writes never
stall the inference and the driver's disk is never assumed; files go through the atomic-write
helper.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.assemble import sidecar_path, write_item
from rs_embed_ray.io.atomic import OutputWriteError, is_storage_error, output_write_error
from rs_embed_ray.io.handover import HANDOVER
from rs_embed_ray.io.manifest import array_sha1
from rs_embed_ray.io.npz import array_from_bytes
from rs_embed_ray.io.shards import ShardReader, write_shard
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.pipeline.fetch import with_retries


def write_embed_shard(batch: dict[str, np.ndarray], shard_dir: str) -> dict[str, np.ndarray]:
    """The writer task after a GPU actor: decode the batch's ok embeddings, then
    ``embed_shard_rows``."""
    ok: dict[int, tuple[np.ndarray, dict[str, Any]]] = {
        int(idx): (array_from_bytes(bytes(emb)), json.loads(meta) if meta else {})
        for idx, status, emb, meta in zip(
            batch[col.INDEX], batch[col.STATUS], batch[col.EMB], batch[col.META], strict=True
        )
        if status == col.STATUS_OK
    }
    return embed_shard_rows(batch, ok, shard_dir)


def embed_shard_rows(
    batch: dict[str, np.ndarray],
    ok: dict[int, tuple[np.ndarray, dict[str, Any]]],
    shard_dir: str,
    hand_over: bool = False,
) -> dict[str, np.ndarray]:
    """Write the ok places' ``(embedding, meta)`` to one shard; return small status rows.
    A CPU model actor calls this itself, with its arrays as they are; ``hand_over``: also
    give them to this process's per-item writer (``io.handover``)."""
    shape = [
        json.dumps(list(ok[int(i)][0].shape)) if int(i) in ok else "" for i in batch[col.INDEX]
    ]
    sha = [array_sha1(ok[int(i)][0]) if int(i) in ok else "" for i in batch[col.INDEX]]
    shard = ""
    if ok:
        path = storage.as_path(shard_dir) / f"{min(ok):09d}-{uuid.uuid4().hex[:12]}.npz"
        write_shard(path, ok)
        shard = str(path)
        if hand_over:
            for i, (arr, meta) in ok.items():
                HANDOVER.put(shard, i, np.ascontiguousarray(arr, dtype=np.float32), meta)
    return {
        col.INDEX: np.asarray(batch[col.INDEX], dtype=np.int64),
        col.STATUS: np.asarray(batch[col.STATUS], dtype=object),
        col.ERROR: np.asarray(batch[col.ERROR], dtype=object),
        col.SHARD: np.asarray(
            [shard if s == col.STATUS_OK else "" for s in batch[col.STATUS]], dtype=object
        ),
        col.SHAPE: np.asarray(shape, dtype=object),
        col.SHA1: np.asarray(sha, dtype=object),
        col.NODE: np.asarray(batch[col.NODE], dtype=object),
        col.DONE_AT: np.full(len(batch[col.INDEX]), time.time(), dtype=np.float64),
        **{k: v for k, v in batch.items() if k.startswith(col.FETCH_PREFIX)},
    }


def _discard_item(ctx: dict[str, Any], name: str) -> None:
    """Remove a place's half-written pair (its array file landed, its sidecar did not)."""
    path = storage.as_path(ctx["out_dir"]) / f"{name}{ctx['ext']}"
    for p in (path, sidecar_path(path)):
        with contextlib.suppress(OSError):
            p.unlink()


def finalize_items(batch: dict[str, np.ndarray], ctx: dict[str, Any]) -> dict[str, np.ndarray]:
    """Write each place's final file + sidecar; return its manifest as JSON."""
    reader = ShardReader(handover=HANDOVER)  # what this process's model handed over
    out_index, out_status, out_manifest = [], [], []
    try:
        for idx, payload in zip(batch[col.INDEX], batch[col.PAYLOAD], strict=True):
            row = json.loads(payload)
            try:
                # max_retries covers writes too (seed: "provider fetch/write operations"); a
                # failed try leaves nothing behind (atomic writes), so a retry starts clean
                man = with_retries(
                    lambda row=row: write_item(ctx, row, reader),
                    int(ctx.get("max_retries", 0)),
                    float(ctx.get("retry_backoff_s", 0.0)),
                )
                out_status.append(man["status"])
                out_manifest.append(json.dumps(man, ensure_ascii=False))
            except Exception as exc:  # the file is not written; the place is reported
                if isinstance(exc, OutputWriteError) or is_storage_error(exc):
                    # disk full / read-only: stop the run, whatever continue_on_error says,
                    # and leave the place whole or absent (not an array without its sidecar)
                    _discard_item(ctx, row["name"])
                    if isinstance(exc, OutputWriteError):
                        raise
                    raise output_write_error(exc, ctx["out_dir"]) from exc
                out_status.append(col.STATUS_WRITE_FAILED)
                out_manifest.append(json.dumps({"error": f"{type(exc).__name__}: {exc}"}))
            out_index.append(int(idx))
    finally:
        reader.close()
    return {
        col.INDEX: np.asarray(out_index, dtype=np.int64),
        col.STATUS: np.asarray(out_status, dtype=object),
        col.MANIFEST: np.asarray(out_manifest, dtype=object),
    }
