"""Writer stages: embedding shards after inference, and the per-item export files.

Both run as Ray tasks next to the data (threads with the in-process executor), so writes never
stall the inference and the driver's disk is never assumed; files go through the atomic-write
helper.
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
import time
import uuid
from collections.abc import Container
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rs_embed_ray.io import storage
from rs_embed_ray.io.assemble import sidecar_path, write_item
from rs_embed_ray.io.atomic import OutputWriteError, is_storage_error, output_write_error
from rs_embed_ray.io.durable import DurableBatch
from rs_embed_ray.io.handover import HANDOVER
from rs_embed_ray.io.manifest import array_sha1, jsonable
from rs_embed_ray.io.npz import array_from_bytes
from rs_embed_ray.io.shards import ShardReader, write_shard
from rs_embed_ray.io.steptable import step_src
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
    hand_over: Container[int] = (),
) -> dict[str, np.ndarray]:
    """Write the ok places' ``(embedding, meta)`` to one shard; return small status rows.
    A CPU model actor calls this itself, with its arrays as they are; the places in
    ``hand_over`` are also given to this process's per-item writer (``io.handover``)."""
    shape = [
        json.dumps(list(ok[int(i)][0].shape)) if int(i) in ok else "" for i in batch[col.INDEX]
    ]
    sha = [array_sha1(ok[int(i)][0]) if int(i) in ok else "" for i in batch[col.INDEX]]
    shard = ""
    if ok:
        path = storage.as_path(shard_dir) / f"{min(ok):09d}-{uuid.uuid4().hex[:12]}.npz"
        write_shard(path, ok)
        shard = str(path)
        for i, (arr, meta) in ok.items():
            if i in hand_over:
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


def write_one(
    ctx: dict[str, Any],
    row: dict[str, Any],
    reader: ShardReader,
    durable: DurableBatch | None = None,
    key: Any = None,
) -> tuple[str, str]:
    """Write one place's final file + sidecar from its payload ``row``; return its status and
    manifest as JSON. A place whose file cannot be written is reported
    (``STATUS_WRITE_FAILED``), except a full or read-only disk, which stops the run.
    ``durable``: the files wait there, as ``key``, for the batch's commit (the caller's)."""

    def attempt() -> dict[str, Any]:
        if durable is None:
            return write_item(ctx, row, reader)
        with durable.place(key):
            return write_item(ctx, row, reader)

    try:
        # max_retries covers writes too (seed: "provider fetch/write operations"); a failed
        # try leaves nothing behind (atomic writes), so a retry starts clean
        man = with_retries(
            attempt, int(ctx.get("max_retries", 0)), float(ctx.get("retry_backoff_s", 0.0))
        )
        return man["status"], json.dumps(man, ensure_ascii=False)
    except Exception as exc:  # the file is not written; the place is reported
        if isinstance(exc, OutputWriteError) or is_storage_error(exc):
            # disk full / read-only: stop the run, whatever continue_on_error says, and
            # leave the place whole or absent (not an array without its sidecar; a deferred
            # place landed nothing, and an earlier run's pair stays whole)
            if durable is None:
                _discard_item(ctx, row["name"])
            if isinstance(exc, OutputWriteError):
                raise
            raise output_write_error(exc, ctx["out_dir"]) from exc
        return _write_failed(exc)


def _write_failed(exc: Exception) -> tuple[str, str]:
    """A place whose file could not be written: its status and what the log keeps."""
    return col.STATUS_WRITE_FAILED, json.dumps({"error": f"{type(exc).__name__}: {exc}"})


def finalize_items(batch: dict[str, np.ndarray], ctx: dict[str, Any]) -> dict[str, np.ndarray]:
    """Write each place's final file + sidecar; return its manifest as JSON."""
    reader = ShardReader(handover=HANDOVER)  # what this process's model handed over
    durable = DurableBatch()  # the batch's files are made durable together, then land
    out_status, out_manifest = [], []
    try:
        for j, payload in enumerate(batch[col.PAYLOAD]):
            status, man = write_one(ctx, json.loads(payload), reader, durable, j)
            out_status.append(status)
            out_manifest.append(man)
        durable.commit()  # a storage error stops the run, as a failed write does
        for j, exc in durable.failed.items():
            out_status[j], out_manifest[j] = _write_failed(exc)
    finally:
        durable.discard()  # nothing, unless a write or the commit failed
        reader.close()
    return {
        col.INDEX: np.asarray(batch[col.INDEX], dtype=np.int64),
        col.STATUS: np.asarray(out_status, dtype=object),
        col.MANIFEST: np.asarray(out_manifest, dtype=object),
    }


def write_due_items(
    rows: dict[str, np.ndarray],
    batch: dict[str, np.ndarray],
    ctx: dict[str, Any],
    model_key: str,
    fetch_key: str | None,
    spatials: list[Any],
    pool: ThreadPoolExecutor,
) -> None:
    """The last model's CPU actor on Ray: write the files of the places this batch finished
    (``batch[ITEM]`` set, embedding ok), in the actor's own process, so the patch and the
    embedding come from ``io.handover`` and not from their shards again (issue 17, item 3),
    with no writer task to start. ``rows``: the stage's result rows (``embed_shard_rows``);
    WRITTEN and MANIFEST are added to them.

    ``spatials``: the batch's places as the model parsed them. The files are written on
    ``pool`` (``writer_workers`` threads, the actor's): a place's two files wait on the disk
    more than they compute, and the forward of the next batch waits for these. They land
    together (``io.durable.DurableBatch``: their writeback started at once, then an fsync
    each); a run that is stopping by then lands none of them (nor reports them)."""
    n = len(rows[col.INDEX])
    written, manifests = [""] * n, [""] * n
    chained = col.fetched(col.STATUS) in rows
    due = []
    for j, item in enumerate(batch[col.ITEM]):
        if not item or rows[col.STATUS][j] != col.STATUS_OK:
            continue
        row = json.loads(item)
        row["index"] = int(rows[col.INDEX][j])
        row["spatial_manifest"] = jsonable(spatials[j])
        if col.TEMPORAL in batch:  # else the run's window (ctx), as the payload would say
            row["temporal"] = json.loads(batch[col.TEMPORAL][j])
        row["sources"]["embed"][model_key] = _src(rows, j)
        if chained and fetch_key:
            row["sources"]["patch"][fetch_key] = _src(rows, j, col.FETCH_PREFIX)
        due.append((j, row))
    stop_marker = ctx.get("stop_marker")
    stopped = threading.Event()  # stopping, or the output took no more writes

    def write(job: tuple[int, dict[str, Any]]) -> None:
        j, row = job
        if stopped.is_set() or (stop_marker and os.path.exists(stop_marker)):
            stopped.set()  # the run is stopping: no file lands after it said what it wrote
            return
        reader = ShardReader(handover=HANDOVER)
        try:
            written[j], manifests[j] = write_one(ctx, row, reader, durable, j)
        except OutputWriteError as exc:
            # the batch's steps and files so far reach the driver's log, which then stops
            # the run: nothing written is left unlogged
            stopped.set()
            written[j], manifests[j] = col.STATUS_OUTPUT_ERROR, _output_error(exc)
        finally:
            reader.close()

    durable = DurableBatch()
    try:
        list(pool.map(write, due))
        if stop_marker and os.path.exists(stop_marker):
            for j in durable.discard():  # the run said what it wrote: these land nowhere
                written[j] = manifests[j] = ""
        _commit(durable, written, manifests)
    finally:
        durable.discard()  # nothing, unless the writes or the commit failed
        for j, item in enumerate(batch[col.ITEM]):  # what no file took is not kept
            if item:
                HANDOVER.take(str(batch[col.SHARD][j]), int(rows[col.INDEX][j]))
                HANDOVER.take(str(rows[col.SHARD][j]), int(rows[col.INDEX][j]))
    rows[col.WRITTEN] = np.asarray(written, dtype=object)
    rows[col.MANIFEST] = np.asarray(manifests, dtype=object)


def _commit(durable: DurableBatch, written: list[str], manifests: list[str]) -> None:
    """Land the batch's files. A place whose name was refused is ``STATUS_WRITE_FAILED``;
    when the output refused the batch (a storage error), the places not landed are
    ``STATUS_OUTPUT_ERROR``, which stops the run once its log has the rest."""
    pending = durable.keys()
    try:
        durable.commit()
    except OSError as exc:
        err = (
            exc
            if isinstance(exc, OutputWriteError)
            else output_write_error(exc, exc.filename or "the output folder")
        )
        for j in set(pending) - set(durable.landed) - set(durable.failed):
            written[j], manifests[j] = col.STATUS_OUTPUT_ERROR, _output_error(err)
    for j, failed in durable.failed.items():
        written[j], manifests[j] = _write_failed(failed)


def _output_error(exc: OutputWriteError) -> str:
    return json.dumps({"errno": exc.errno, "error": exc.strerror, "path": exc.filename})


def _src(rows: dict[str, np.ndarray], j: int, prefix: str = "") -> dict[str, Any]:
    """Row ``j``'s step result as the run's log records it."""
    return step_src(*(rows[prefix + k][j] for k in (col.STATUS, col.SHARD, col.ERROR, col.SHAPE)))
