"""ModelWorker: a Ray Data callable class that embeds cached patches, one forward per batch.

Weights are loaded once, in ``__init__``. A batch whose forward raises is re-run one place
at a time so that only the bad places fail; every place comes back as a row with its status.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError
from rs_embed_ray.inspection import INSPECTION_META
from rs_embed_ray.io.manifest import error_text, prefetch_error
from rs_embed_ray.io.npz import array_to_bytes
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.models.registry import load_embedder
from rs_embed_ray.models.tiling import embed_with_prep
from rs_embed_ray.pipeline.fetch import TEMPORAL_COLUMN, current_node, with_retries
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
        precision: str,
        output: dict[str, Any],
        temporal: dict[str, Any] | None,
        input_prep: dict[str, Any],
        channels: list[int] | None,
        batch_size: int,
        max_retries: int,
        retry_backoff_s: float,
        torch_threads: int = 1,
        name: str | None = None,
        fetch_key: str | None = None,
        target: str | None = None,
    ) -> None:
        import torch

        # Ray pins OMP threads to the actor's num_cpus; a CPU-only actor may use the machine
        torch.set_num_threads(max(1, torch_threads))
        self.device = resolve_torch_device(device)
        # built from the target the driver resolved: a model registered there is unknown here
        self.embedder = load_embedder(
            model_id,
            device=self.device,
            weights=weights,
            model_config=dict(model_config or {}) or None,
            precision=precision,
            target=target,
        )
        self.output = OutputSpec(**output)
        self.temporal = temporal_from_dict(temporal)
        self.prep = InputPrepSpec(**input_prep)
        self.channels = list(channels) if channels is not None else None
        self.batch_size = batch_size
        self.retries = max_retries
        self.backoff = retry_backoff_s
        self.reader = ShardReader()
        # for error texts: the user's spelling of the model and its fetch group
        self.model_name = name or model_id
        self.fetch_key = fetch_key

    def _embed(
        self,
        inputs: list[np.ndarray],
        spatials: list[Any],
        metas: list[dict],
        temporal: TemporalSpec | None,
    ) -> list:
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
        indices = [int(i) for i in batch["index"]]
        n = len(indices)
        status = ["ok"] * n
        error = [""] * n
        emb: list[bytes] = [b""] * n
        meta = [""] * n
        inputs: list[np.ndarray | None] = [None] * n
        fmetas: list[dict[str, Any]] = [{}] * n
        spatials = [spatial_from_dict(json.loads(s)) for s in batch["spatial"]]
        # per-place windows (see fetch.TEMPORAL_COLUMN): places embed with their own window
        tcol = batch.get(TEMPORAL_COLUMN)
        tkeys: list[str | None] = [str(t) for t in tcol] if tcol is not None else [None] * n
        # chained after the fetch stage: the batch carries the fetch's own result columns
        chained = "sha1" in batch
        for j in range(n):
            if chained and batch["status"][j] != "ok":
                status[j] = "failed"
                error[j] = prefetch_error(
                    self.model_name, indices[j], self.fetch_key, batch["error"][j]
                )
            elif "embed" in batch and not bool(batch["embed"][j]):
                status[j] = "skip"  # already embedded in an earlier run; fetched for inputs
        for j, (idx, shard) in enumerate(zip(indices, batch["shard"], strict=True)):
            if status[j] != "ok":
                continue
            if not str(shard):
                # a model with no sensor (a precomputed product it reads itself from the
                # place's spatial): nothing was fetched, the input is an empty placeholder
                inputs[j] = np.zeros((0,), dtype=np.float32)
                continue
            try:
                arr, fmeta = self.reader.read(str(shard), idx)
                if self.channels is not None:
                    arr = np.take(arr, self.channels, axis=-3)
                inputs[j] = np.ascontiguousarray(arr, dtype=np.float32)
                fmetas[j] = {k: v for k, v in fmeta.items() if k != INSPECTION_META}
            except Exception as exc:  # a torn or missing shard fails only this place
                status[j], error[j] = "failed", error_text(exc)
        by_window: dict[str | None, list[int]] = {}
        for j in range(n):
            if status[j] == "ok":
                by_window.setdefault(tkeys[j], []).append(j)
        results: dict[int, Any] = {}
        for tkey, todo in by_window.items():
            temporal = self.temporal if tkey is None else temporal_from_dict(json.loads(tkey))
            try:
                out = self._embed(
                    [inputs[j] for j in todo],  # type: ignore[misc]
                    [spatials[j] for j in todo],
                    [fmetas[j] for j in todo],
                    temporal,
                )
                results.update(zip(todo, out, strict=True))
            except Exception as exc:
                log.warning("batch forward failed (%s); retrying place by place", exc)
                for j in todo:
                    try:
                        results[j] = self._embed(
                            [inputs[j]],  # type: ignore[list-item]
                            [spatials[j]],
                            [fmetas[j]],
                            temporal,
                        )[0]
                    except Exception as one_exc:
                        status[j], error[j] = "failed", error_text(one_exc)
        for j, e in results.items():
            data = np.asarray(e.data, dtype=np.float32)
            # precomputed products mark nodata pixels NaN on purpose (gse grids)
            nodata_ok = self.embedder.info.kind == "precomputed"
            bad = np.isinf(data).any() if nodata_ok else not np.isfinite(data).all()
            if bad:
                bad_out = ModelError(f"Model {self.model_name} returned NaN or Inf values.")
                status[j], error[j] = "failed", error_text(bad_out)
                continue
            emb[j] = array_to_bytes(data)
            m = dict(e.meta or {})
            m.setdefault("weights", self.embedder.weights_record)
            m.setdefault("device", self.device)
            meta[j] = json.dumps(m, ensure_ascii=False, default=repr)
        out = {
            "index": np.asarray(indices, dtype=np.int64),
            "status": np.asarray(status, dtype=object),
            "error": np.asarray(error, dtype=object),
            "emb": np.asarray(emb, dtype=object),
            "meta": np.asarray(meta, dtype=object),
            "node": np.asarray([current_node()] * n, dtype=object),
        }
        if chained:
            for k in ("status", "error", "shard", "shape", "sha1", "node"):
                out[f"fetch_{k}"] = np.asarray(batch[k], dtype=object)
        return out
