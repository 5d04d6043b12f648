"""ModelWorker: the callable class of the INFER stage (a Ray Data actor, or the driver with the
in-process executor) that embeds cached patches, one forward per batch.

Weights are loaded once, in ``__init__``. A batch whose forward raises is re-run one place
at a time so that only the bad places fail; every place comes back as a row with its status.
"""

from __future__ import annotations

import json
import logging
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.inspection import INSPECTION_META
from rs_embed_ray.io.handover import HANDOVER
from rs_embed_ray.io.manifest import error_text, prefetch_error
from rs_embed_ray.io.npz import array_to_bytes
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.models.registry import load_embedder
from rs_embed_ray.models.runtime import default_matmul_precision
from rs_embed_ray.models.tiling import embed_with_prep
from rs_embed_ray.options import InferOptions, RetryOptions
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.pipeline.fetch import current_node, with_retries
from rs_embed_ray.pipeline.sizing import node_threads
from rs_embed_ray.pipeline.write import embed_shard_rows, write_due_items
from rs_embed_ray.specs import (
    InputPrepSpec,
    OutputSpec,
    TemporalSpec,
    spatial_from_dict,
    temporal_from_dict,
)

log = logging.getLogger(__name__)


def resolve_torch_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        log.warning("device=%s asked for but CUDA is not available here; using cpu", device)
        return "cpu"
    return device


class ModelWorker:
    def __init__(
        self,
        *,
        model_id: str,
        weights: str | None,
        model_config: dict[str, Any] | None,
        device: str,
        options: InferOptions,
        retry: RetryOptions,
        output: dict[str, Any],
        temporal: dict[str, Any] | None,
        input_prep: dict[str, Any],
        channels: list[int] | None,
        torch_threads: int = 1,
        name: str | None = None,
        fetch_key: str | None = None,
        target: str | None = None,
        shard_dir: str | None = None,
        hand_over_inputs: bool = False,
        hand_over_embeddings: bool = False,
        item_ctx: dict[str, Any] | None = None,
        model_key: str | None = None,
    ) -> None:
        import torch

        # Ray pins OMP threads to the actor's num_cpus; a CPU-only actor uses its node's cores
        self.threads = node_threads(torch_threads)
        torch.set_num_threads(self.threads)
        self.device = resolve_torch_device(device)
        # built from the target the driver resolved: a model registered there is unknown here
        self.embedder = load_embedder(
            model_id,
            device=self.device,
            weights=weights,
            model_config=dict(model_config or {}) or None,
            precision=options.precision,
            target=target,
        )
        self.output = OutputSpec(**output)
        self.temporal = temporal_from_dict(temporal)
        self.prep = InputPrepSpec(**input_prep)
        self.channels = list(channels) if channels is not None else None
        self.batch_size = options.batch_size
        self.retries = retry.max_retries
        self.backoff = retry.backoff_s
        self.reader = ShardReader()
        # for error texts: the user's spelling of the model and its fetch group
        self.model_name = name or model_id
        self.fetch_key = fetch_key
        self.shard_dir = shard_dir  # set: write the embedding shard here (write_embed_shard)
        # the in-process executor's per-item writer takes these from io.handover (no re-read)
        self.hand_over_inputs = hand_over_inputs
        self.hand_over_embeddings = hand_over_embeddings
        # set (Ray, the last model's CPU actor, per_item): write the files this stage
        # finishes here (``write.write_due_items``), handing over only theirs
        self.item_ctx = item_ctx
        self.model_key = model_key or model_id
        self.item_pool = (
            ThreadPoolExecutor(max(1, int(item_ctx["writers"])), thread_name_prefix="item-writer")
            if item_ctx is not None
            else None
        )

    def _embed(
        self,
        inputs: list[np.ndarray],
        spatials: list[Any],
        metas: list[dict],
        temporal: TemporalSpec | None,
    ) -> list:
        # any model, the catalog's or a registered one (which may not use
        # runtime.inference), at torch's default matmul precision
        with default_matmul_precision():
            return with_retries(
                lambda: embed_with_prep(
                    self.embedder,
                    inputs,
                    prep=self.prep,
                    output=self.output,
                    spatials=spatials,
                    temporal=temporal,
                    fetch_metas=metas,
                    batch_size=self.batch_size,
                ),
                self.retries,
                self.backoff,
            )

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        b = _Rows(batch)
        self._settle_upstream(batch, b)
        self._read_inputs(batch, b)
        good = self._checked(self._forward(b), b)
        out = {
            col.INDEX: np.asarray(b.indices, dtype=np.int64),
            col.STATUS: np.asarray(b.status, dtype=object),
            col.ERROR: np.asarray(b.error, dtype=object),
            col.NODE: np.asarray([current_node()] * b.n, dtype=object),
        }
        if b.chained:
            for k in (*col.RESULT, col.NODE):
                out[col.fetched(k)] = np.asarray(batch[k], dtype=object)
        if self.shard_dir is not None:  # the arrays as they are, no bytes round trip
            ok = {b.indices[j]: v for j, v in good.items()}
            hand = {b.indices[j] for j in good if b.due[j]} if self.hand_over_embeddings else ()
            rows = embed_shard_rows(out, ok, self.shard_dir, hand)
            if self.item_ctx is not None and self.item_pool is not None and col.ITEM in batch:
                write_due_items(
                    rows,
                    batch,
                    self.item_ctx,
                    self.model_key,
                    self.fetch_key,
                    b.spatials,
                    self.item_pool,
                )
                if (rows[col.WRITTEN] == col.STATUS_OUTPUT_ERROR).any():
                    # the output took no more writes and the run stops: the batches still
                    # queued here write no files while it does
                    self.item_ctx = None
            return rows
        emb, meta = [b""] * b.n, [""] * b.n
        for j, (data, m) in good.items():
            emb[j] = array_to_bytes(data)
            meta[j] = json.dumps(m, ensure_ascii=False, default=repr)
        out[col.EMB] = np.asarray(emb, dtype=object)
        out[col.META] = np.asarray(meta, dtype=object)
        return out

    def _settle_upstream(self, batch: dict[str, np.ndarray], b: _Rows) -> None:
        """Places whose fetch failed (chained) fail; places embedded earlier are skipped."""
        for j in range(b.n):
            if b.chained and batch[col.STATUS][j] != col.STATUS_OK:
                b.status[j] = col.STATUS_FAILED
                b.error[j] = prefetch_error(
                    self.model_name, b.indices[j], self.fetch_key, batch[col.ERROR][j]
                )
            elif col.EMBED in batch and not bool(batch[col.EMBED][j]):
                # already embedded in an earlier run; fetched for inputs
                b.status[j] = col.STATUS_SKIP

    def _read_inputs(self, batch: dict[str, np.ndarray], b: _Rows) -> None:
        """Each ok place's patch from its shard, this model's channels only."""
        for j, (idx, shard) in enumerate(zip(b.indices, batch[col.SHARD], strict=True)):
            if b.status[j] != col.STATUS_OK:
                continue
            if not str(shard):
                # a model with no sensor (a precomputed product it reads itself from the
                # place's spatial): nothing was fetched, the input is an empty placeholder
                b.inputs[j] = np.zeros((0,), dtype=np.float32)
                continue
            try:
                arr, fmeta = self.reader.read(str(shard), idx)
                model_arr = arr
                if self.channels is not None:
                    model_arr = np.take(arr, self.channels, axis=-3)
                model_arr = np.ascontiguousarray(model_arr, dtype=np.float32)
                if self.hand_over_inputs and b.due[j]:
                    # as read: the model may change its own copy in place
                    kept = arr.copy() if model_arr is arr else arr
                    HANDOVER.put(str(shard), idx, kept, fmeta)
                b.inputs[j] = model_arr
                b.fmetas[j] = {k: v for k, v in fmeta.items() if k != INSPECTION_META}
            except Exception as exc:  # a torn or missing shard fails only this place
                b.status[j], b.error[j] = col.STATUS_FAILED, error_text(exc)

    def _forward(self, b: _Rows) -> dict[int, Any]:
        """One forward per window; a failing batch is re-run place by place."""
        by_window: dict[str | None, list[int]] = {}
        for j in range(b.n):
            if b.status[j] == col.STATUS_OK:
                by_window.setdefault(b.tkeys[j], []).append(j)
        results: dict[int, Any] = {}
        for tkey, todo in by_window.items():
            temporal = self.temporal if tkey is None else temporal_from_dict(json.loads(tkey))
            try:
                out = self._embed(
                    [b.inputs[j] for j in todo],  # type: ignore[misc]
                    [b.spatials[j] for j in todo],
                    [b.fmetas[j] for j in todo],
                    temporal,
                )
                results.update(zip(todo, out, strict=True))
            except Exception as exc:
                log.warning("batch forward failed (%s); retrying place by place", exc)
                for j in todo:
                    try:
                        results[j] = self._embed(
                            [b.inputs[j]],  # type: ignore[list-item]
                            [b.spatials[j]],
                            [b.fmetas[j]],
                            temporal,
                        )[0]
                    except Exception as one_exc:
                        b.status[j], b.error[j] = col.STATUS_FAILED, error_text(one_exc)
        return results

    def _checked(
        self, results: dict[int, Any], b: _Rows
    ) -> dict[int, tuple[np.ndarray, dict[str, Any]]]:
        """Each ok place's (embedding, meta) by batch position; a NaN/Inf embedding fails
        its place."""
        good: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        for j, e in results.items():
            data = np.asarray(e.data, dtype=np.float32)
            # precomputed products mark nodata pixels NaN on purpose (gse grids)
            nodata_ok = self.embedder.info.kind == "precomputed"
            bad = np.isinf(data).any() if nodata_ok else not np.isfinite(data).all()
            if bad:
                bad_out = ModelError(f"Model {self.model_name} returned NaN or Inf values.")
                b.status[j], b.error[j] = col.STATUS_FAILED, error_text(bad_out)
                continue
            m = dict(e.meta or {})
            m.setdefault("weights", self.embedder.weights_record)
            m.setdefault("device", self.device)
            good[j] = (data, m)
        return good


class _Rows:
    """One batch's places as the model stage works through them."""

    def __init__(self, batch: dict[str, np.ndarray]) -> None:
        self.indices = [int(i) for i in batch[col.INDEX]]
        n = self.n = len(self.indices)
        self.status = [col.STATUS_OK] * n
        self.error = [""] * n
        self.inputs: list[np.ndarray | None] = [None] * n
        self.fmetas: list[dict[str, Any]] = [{}] * n
        self.spatials = [spatial_from_dict(json.loads(s)) for s in batch[col.SPATIAL]]
        # per-place windows (schema.TEMPORAL): places embed with their own window
        tcol = batch.get(col.TEMPORAL)
        self.tkeys: list[str | None] = [str(t) for t in tcol] if tcol is not None else [None] * n
        # chained after the fetch stage: the batch carries the fetch's own result columns
        self.chained = col.SHA1 in batch
        # places whose file the per-item writer will want next (all, unless the rows say)
        items = batch.get(col.ITEM)
        self.due = [bool(t) for t in items] if items is not None else [True] * n
