"""What the FETCH and INFER workers are built with, and the place rows they read, for a plan:
one place for both executors (``dataflow`` hands them to Ray's actors, ``inprocess`` to its
threads). No ray."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from rs_embed_ray.io.manifest import jsonable
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.plan import ExportPlan, FetchGroup, ModelRequest
from rs_embed_ray.specs import spatial_to_dict


def place_columns(
    plan: ExportPlan, places: list[int], cols: dict[str, Callable[[int], Any]]
) -> dict[str, list[Any]]:
    """The row columns of ``places`` besides INDEX: SPATIAL (JSON), TEMPORAL (JSON, only when
    places have windows of their own; else the stages use the run's), and ``cols``: name ->
    value of place i."""
    out: dict[str, list[Any]] = {
        col.SPATIAL: [json.dumps(spatial_to_dict(plan.spatials[i])) for i in places]
    }
    if plan.temporals is not None:
        out[col.TEMPORAL] = [json.dumps(jsonable(plan.temporal_of(i))) for i in places]
    for name, value_of in cols.items():
        out[name] = [value_of(i) for i in places]
    return out


def fetch_worker_kwargs(
    plan: ExportPlan, group: FetchGroup, shard_dir: str, threads: int, quota: dict[str, Any]
) -> dict[str, Any]:
    """``FetchWorker``'s keywords: one sensor group's fetch, ``threads`` requests in flight,
    ``quota`` its share of the Earth Engine quota (``Runner._quota_kwargs``)."""
    return {
        "backend": plan.backend,
        "provider_target": plan.provider_target,
        "provider_options": plan.provider_options,
        "sensor": jsonable(group.sensor),
        "n_frames": group.n_frames,
        "temporal": jsonable(plan.temporal),
        "shard_dir": shard_dir,
        "options": plan.run.fetch,
        "retry": plan.run.retry,
        "threads": threads,
        **quota,
        "frame_bins": group.frame_bins,
    }


def model_worker_kwargs(
    plan: ExportPlan,
    model: ModelRequest,
    device: str,
    torch_threads: int,
    shard_dir: str | None,
    hand_over: bool = False,
    item_ctx: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``ModelWorker``'s keywords for one model; ``shard_dir`` set: it writes its own
    embedding shards there; ``hand_over``: it hands its patches and embeddings to a per-item
    writer in its process (``io.handover``); ``item_ctx`` set: it is that writer too, for
    the places it finishes (``write.write_due_items``)."""
    kwargs = {
        "model_id": model.model_id,
        "weights": model.weights,
        "model_config": model.model_config,
        "device": device,
        "options": plan.run.infer,
        "retry": plan.run.retry,
        "output": jsonable(plan.output),
        "temporal": jsonable(plan.temporal),
        "input_prep": jsonable(plan.input_prep),
        "channels": list(model.channels) if model.channels is not None else None,
        "torch_threads": torch_threads,
        "name": model.name,
        "fetch_key": model.fetch_key,
        "target": model.target,
        "shard_dir": shard_dir,
    }
    if hand_over or item_ctx is not None:
        kwargs.update(hand_over_inputs=plan.save_inputs, hand_over_embeddings=True)
    if item_ctx is not None:
        kwargs.update(item_ctx=item_ctx, model_key=model.key)
    return kwargs
