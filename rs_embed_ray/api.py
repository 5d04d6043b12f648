"""Public entry points: validate, plan, run. No heavy work happens here.

``export_batch`` keeps the signature of rs-embed's seed API page, plus a few keywords this
package needs (``ray_address``, ``source``, ``weights``, ...). Every error a user can cause
is raised by ``build_plan`` before Ray is started.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from rs_embed_ray.errors import ModelError
from rs_embed_ray.plan import ExportPlan, build_plan
from rs_embed_ray.specs import (
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)
from rs_embed_ray.validation import check_call, check_ray_address

log = logging.getLogger(__name__)


def plan_export(
    *,
    spatials: list[SpatialSpec],
    temporal: TemporalSpec | None,
    models: list[str],
    out: str | None = None,
    layout: str | None = None,
    out_dir: str | None = None,
    out_path: str | None = None,
    names: list[str] | None = None,
    backend: str = "gee",
    device: str = "auto",
    output: OutputSpec | None = None,
    sensor: SensorSpec | None = None,
    per_model_sensors: dict[str, SensorSpec] | None = None,
    format: str = "npz",
    save_inputs: bool = True,
    save_embeddings: bool = True,
    save_manifest: bool = True,
    fail_on_bad_input: bool = False,
    chunk_size: int = 16,
    num_workers: int = 8,
    continue_on_error: bool = False,
    max_retries: int = 0,
    retry_backoff_s: float = 0.0,
    async_write: bool = True,
    writer_workers: int = 2,
    resume: bool = False,
    show_progress: bool = True,
    input_prep: InputPrepSpec | str = "resize",
    ray_address: str | None = None,
    source: str | None = None,
    weights: dict[str, str] | None = None,
    model_configs: dict[str, dict[str, Any]] | None = None,
    precision: str = "auto",
    provider_options: dict[str, Any] | None = None,
    fetch_threads: int = 4,
    ee_max_concurrent: int = 40,
    ee_max_qps: float = 100.0,
    spatial_batching: bool = False,
    temporals: list[TemporalSpec | None] | None = None,
    ee_quota_actor: str | None = None,
) -> ExportPlan:
    """Validate an export request and resolve it into a plan, without starting Ray.

    ``temporals`` (one ``TemporalSpec`` or ``None`` per place, same length as ``spatials``)
    gives places their own time windows; ``None`` entries use ``temporal``.
    """
    check_call(locals())  # types and bounds of every argument, named in the message
    if precision not in ("auto", "float32"):
        raise ModelError(f"precision must be 'auto' or 'float32', got {precision!r}.")
    if int(ee_max_concurrent) < 1 or not float(ee_max_qps) > 0:
        raise ModelError(
            f"ee_max_concurrent ({ee_max_concurrent}) must be >= 1 and ee_max_qps "
            f"({ee_max_qps}) > 0: they are the Earth Engine project's quota."
        )
    plan = build_plan(
        spatials=spatials,
        temporal=temporal,
        temporals=temporals,
        models=models,
        out=out,
        layout=layout,
        out_dir=out_dir,
        out_path=out_path,
        names=names,
        backend=backend,
        device=device,
        output=output if output is not None else OutputSpec.pooled(),
        sensor=sensor,
        per_model_sensors=per_model_sensors,
        format=format,
        input_prep=input_prep,
        source=source,
        weights=weights,
        model_configs=model_configs,
        provider_options=provider_options,
        save_inputs=bool(save_inputs),
        save_embeddings=bool(save_embeddings),
        save_manifest=bool(save_manifest),
        fail_on_bad_input=bool(fail_on_bad_input),
        chunk_size=chunk_size,
        num_workers=num_workers,
        continue_on_error=bool(continue_on_error),
        max_retries=max_retries,
        retry_backoff_s=retry_backoff_s,
        writer_workers=writer_workers,
        resume=bool(resume),
        show_progress=bool(show_progress),
        precision=precision,
    )
    if not save_inputs and not save_embeddings:
        raise ModelError("Nothing to export: save_inputs and save_embeddings are both False.")
    check_ray_address(ray_address)
    plan.extra.update(
        ray_address=ray_address,
        async_write=bool(async_write),
        fetch_threads=max(1, int(fetch_threads)),
        ee_max_concurrent=int(ee_max_concurrent),
        ee_max_qps=float(ee_max_qps),
        spatial_batching=bool(spatial_batching),
        ee_quota_actor=_quota_actor_name(ee_quota_actor),
    )
    return plan


def _quota_actor_name(name: str | None) -> str | None:
    """A Ray actor name (letters, digits, ``_.-``), or None for the run's own quota split."""
    if name is None:
        return None
    name = str(name).strip()
    if not name or not all(c.isalnum() or c in "_.-" for c in name):
        raise ModelError(
            f"ee_quota_actor {name!r}: use a name of letters, digits, '_', '.' or '-' "
            "(the same name in every job that shares the quota)."
        )
    return name


def preflight(plan: ExportPlan) -> None:
    """Check the provider can start (credentials, project, source) before any item runs.

    A run whose models all read their own product (no fetch group) never starts the
    provider, so it needs no Earth Engine credentials."""
    if plan.backend == "gee" and plan.groups:
        from rs_embed_ray.providers.gee import GEEProvider

        opts = {k: v for k, v in plan.provider_options.items() if k != "faults"}
        provider = GEEProvider(**opts)
        try:
            provider.ensure_ready()
        finally:
            provider.close()


def export_batch(**kwargs: Any) -> list[dict[str, Any]] | dict[str, Any]:
    """Export inputs + embeddings + manifests for many places x models, on Ray.

    Takes the keywords of :func:`plan_export` (rs-embed's ``export_batch`` signature plus
    ``ray_address``, ``source``, ``weights``, ``model_configs``, ``precision``). Returns a list
    of per-item manifests (``layout="per_item"`` / ``out_dir``) or the combined manifest.
    """
    plan = plan_export(**kwargs)
    preflight(plan)
    from rs_embed_ray.pipeline.runner import run_plan  # ray is imported only to run

    return run_plan(plan)


def export_npz(
    *,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None,
    models: list[str],
    out_path: str,
    **kwargs: Any,
) -> dict[str, Any]:
    """One place, one combined ``.npz`` (appends the suffix, creates the parent folder)."""
    if "format" in kwargs and str(kwargs["format"]).lower() != "npz":
        raise ModelError("export_npz always writes npz; use export_batch(format=...) instead.")
    for bad in ("out", "layout", "out_dir", "names", "spatials"):
        if bad in kwargs:
            raise ModelError(f"export_npz does not take {bad!r}; use export_batch for that.")
    path = Path(out_path)
    if path.suffix.lower() != ".npz":
        path = path.with_name(path.name + ".npz")
    path.parent.mkdir(parents=True, exist_ok=True)
    result = export_batch(
        spatials=[spatial],
        temporal=temporal,
        models=models,
        out_path=str(path),
        format="npz",
        **kwargs,
    )
    assert isinstance(result, dict)
    return result
