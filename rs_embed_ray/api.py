"""Public entry points: validate, plan, run. No heavy work happens here.

``export_batch`` shows the signature of rs-embed's seed API page (keyword-only, the seed's
order), then the keywords this package adds (``ray_address``, ``source``, ``weights``, ...)
and rs-embed 0.3.1's ``target`` / ``config`` / ``fetch`` / ``modality``. Defaults live once,
in :class:`rs_embed_ray.options.ExportOptions`; the call collects its arguments into one and
hands it to the plan, where every error a user can cause is raised before Ray is started.
"""

from __future__ import annotations

import logging
from typing import Any

from rs_embed_ray.errors import ModelError
from rs_embed_ray.io import storage
from rs_embed_ray.options import DEFAULTS as D
from rs_embed_ray.options import (
    PUBLIC_OPTIONS,
    ExportConfig,
    ExportModelRequest,
    ExportOptions,
    ExportTarget,
)
from rs_embed_ray.plan import ExportPlan, build_plan
from rs_embed_ray.providers import create_provider, provider_capability
from rs_embed_ray.specs import (
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)
from rs_embed_ray.validation import check_call, check_ray_address

log = logging.getLogger(__name__)


def plan_export(options: ExportOptions | None = None, /, **kwargs: Any) -> ExportPlan:
    """Validate an export request and resolve it into a plan, without starting Ray.

    Takes an :class:`ExportOptions`, or the keywords of :func:`export_batch`.
    """
    if options is None:
        options = ExportOptions(**kwargs)
    elif kwargs:
        raise TypeError("plan_export takes an ExportOptions or keywords, not both.")
    o = options.flat()
    check_call(o.as_mapping())  # types and bounds of every argument, named in the message
    plan = build_plan(o)
    if not o.save_inputs and not o.save_embeddings:
        raise ModelError("Nothing to export: save_inputs and save_embeddings are both False.")
    if o.executor != "local":  # local runs without Ray: no cluster to reach
        check_ray_address(o.ray_address)
    return plan


def preflight(plan: ExportPlan) -> None:
    """Check the provider can start (credentials, project, source) before any item runs.

    A run whose models all read their own product (no fetch group) never starts the
    provider, so it needs no Earth Engine credentials."""
    if plan.groups and provider_capability(
        plan.backend, "checks_before_run", target=plan.provider_target
    ):
        provider = create_provider(
            plan.backend, target=plan.provider_target, **plan.provider_options
        )
        try:
            provider.ensure_ready()
        finally:
            provider.close()


def export_batch(
    *,
    spatials: list[SpatialSpec],
    temporal: TemporalSpec | None,
    models: list[str | ExportModelRequest],
    out: str | None = D.out,
    layout: str | None = D.layout,
    out_dir: str | None = D.out_dir,
    out_path: str | None = D.out_path,
    names: list[str] | None = D.names,
    backend: str = D.backend,
    device: str = D.device,
    output: OutputSpec = D.output,
    sensor: SensorSpec | None = D.sensor,
    per_model_sensors: dict[str, SensorSpec] | None = D.per_model_sensors,
    format: str = D.format,
    save_inputs: bool = D.save_inputs,
    save_embeddings: bool = D.save_embeddings,
    save_manifest: bool = D.save_manifest,
    fail_on_bad_input: bool = D.fail_on_bad_input,
    chunk_size: int = D.chunk_size,
    num_workers: int = D.num_workers,
    continue_on_error: bool = D.continue_on_error,
    max_retries: int = D.max_retries,
    retry_backoff_s: float = D.retry_backoff_s,
    async_write: bool = D.async_write,
    writer_workers: int = D.writer_workers,
    resume: bool = D.resume,
    show_progress: bool = D.show_progress,
    input_prep: InputPrepSpec | str = D.input_prep,
    ray_address: str | None = D.ray_address,
    executor: str = D.executor,
    source: str | None = D.source,
    weights: dict[str, str] | None = D.weights,
    model_configs: dict[str, dict[str, Any]] | None = D.model_configs,
    precision: str = D.precision,
    provider_options: dict[str, Any] | None = D.provider_options,
    fetch_threads: int = D.fetch_threads,
    ee_max_concurrent: int = D.ee_max_concurrent,
    ee_max_qps: float = D.ee_max_qps,
    spatial_batching: bool = D.spatial_batching,
    temporals: list[TemporalSpec | None] | None = D.temporals,
    ee_quota_actor: str | None = D.ee_quota_actor,
    dtype: str = D.dtype,
    target: ExportTarget | None = D.target,
    config: ExportConfig | None = D.config,
    fetch: FetchSpec | None = D.fetch,
    modality: str | None = D.modality,
) -> list[dict[str, Any]] | dict[str, Any]:
    """Export inputs + embeddings + manifests for many places x models, on Ray.

    The seed's parameters come first, in its order and with its defaults (see the seed API
    page). Returns the per-item manifests (``layout="per_item"`` / ``out_dir``) or the
    combined manifest (``layout="combined"`` / ``out_path``).

    Differences from rs-embed worth knowing:

    - ``num_workers``: fetches in flight (Ray actors x threads); ``chunk_size``: the
      inference batch size.
    - ``max_retries`` / ``retry_backoff_s``: every fetch and every output-file write is
      tried up to ``max_retries + 1`` times, sleeping ``retry_backoff_s * 2**k`` between
      tries.
    - ``async_write``: accepted, and changes nothing. Files are always written by Ray tasks
      beside the inference, each one atomically and fsync'ed before it replaces the old one
      (a batch of places' files synced together, ``io.durable.DurableBatch``), and resume
      works from the run's log rather than from chunk barriers, so there is no synchronous
      mode to fall back to. ``writer_workers`` sets how many writer tasks run.
    - ``continue_on_error=False``: the first failed place stops the run with
      :class:`~rs_embed_ray.errors.ExportStopped`; places that had finished are written
      first, and ``resume=True`` continues from there.

    Ours, after the seed's: ``ray_address`` (cluster; default local), ``executor``
    ("auto": threads of this process for up to 1,000 places when no Ray cluster is given or
    running, else Ray; "ray"; "local"), ``source`` (raster
    file/folder for ``backend="local"``), ``weights`` ({model: path | "random"}),
    ``model_configs`` ({model: {option: value}}), ``precision`` ("auto" | "float32"),
    ``provider_options``, ``fetch_threads`` (threads per fetch actor), ``ee_max_concurrent``
    / ``ee_max_qps`` (the Earth Engine project's quota), ``spatial_batching`` (nearby places
    share a request), ``temporals`` (one window per place), ``ee_quota_actor`` (share one
    quota between jobs), ``dtype`` (how vectors are stored: "float32", "float16" or "int8",
    linear per-vector quantization; ``load_export`` decodes to float32).

    rs-embed 0.3.1's spelling works too: ``target=ExportTarget.per_item(...)`` /
    ``ExportTarget.combined(...)`` instead of ``out``/``layout``/``out_dir``/``out_path``/
    ``names``; ``config=ExportConfig(...)`` instead of the run settings; ``models`` entries
    ``ExportModelRequest.configure(name, sensor=, fetch=, modality=, **model_config)``;
    ``fetch=FetchSpec(...)`` (overrides on each model's default sensor) and ``modality=``.
    Setting one thing in both styles is a ``ModelError``.
    """
    options = ExportOptions(**{n: v for n, v in locals().items() if n in PUBLIC_OPTIONS})
    return run_export(options)


def run_export(options: ExportOptions) -> list[dict[str, Any]] | dict[str, Any]:
    """Plan (every input error raised here, before Ray starts), check the provider, run."""
    return run_planned(plan_export(options))


def run_planned(plan: ExportPlan) -> list[dict[str, Any]] | dict[str, Any]:
    """Check the provider, then run a plan (the CLI plans once, checks more, then calls this)."""
    preflight(plan)
    from rs_embed_ray.pipeline.runner import run_plan  # ray is imported only to run

    return run_plan(plan)


def export_npz(
    *,
    spatial: SpatialSpec,
    temporal: TemporalSpec | None,
    models: list[str | ExportModelRequest],
    out_path: str,
    backend: str = D.backend,
    device: str = D.device,
    output: OutputSpec = D.output,
    sensor: SensorSpec | None = D.sensor,
    per_model_sensors: dict[str, SensorSpec] | None = D.per_model_sensors,
    save_inputs: bool = D.save_inputs,
    save_embeddings: bool = D.save_embeddings,
    save_manifest: bool = D.save_manifest,
    fail_on_bad_input: bool = D.fail_on_bad_input,
    continue_on_error: bool = D.continue_on_error,
    max_retries: int = D.max_retries,
    retry_backoff_s: float = D.retry_backoff_s,
    input_prep: InputPrepSpec | str = D.input_prep,
    show_progress: bool = D.show_progress,
    resume: bool = D.resume,
    ray_address: str | None = D.ray_address,
    executor: str = D.executor,
    source: str | None = D.source,
    weights: dict[str, str] | None = D.weights,
    model_configs: dict[str, dict[str, Any]] | None = D.model_configs,
    precision: str = D.precision,
    provider_options: dict[str, Any] | None = D.provider_options,
    fetch_threads: int = D.fetch_threads,
    ee_max_concurrent: int = D.ee_max_concurrent,
    ee_max_qps: float = D.ee_max_qps,
    ee_quota_actor: str | None = D.ee_quota_actor,
    dtype: str = D.dtype,
    config: ExportConfig | None = D.config,
    fetch: FetchSpec | None = D.fetch,
    modality: str | None = D.modality,
) -> dict[str, Any]:
    """One place, one combined ``.npz``: appends the suffix and delegates to
    :func:`export_batch` (``out_path=..., format="npz"``); returns its manifest.
    The seed's parameters first, then ours (see :func:`export_batch`)."""
    kw = {n: v for n, v in locals().items() if n in PUBLIC_OPTIONS}
    if config is not None and str(getattr(config, "format", "npz")).strip().lower() != "npz":
        raise ModelError("export_npz always writes npz; use export_batch(format=...) instead.")
    path = storage.as_path(out_path)  # a Path, or a UPath for s3:// / gs://
    if path.suffix.lower() != ".npz":
        path = path.with_name(path.name + ".npz")
    # no mkdir here: a refused call creates nothing; the run's state and atomic writes make
    # the parent folder once the plan has been accepted
    kw.update(spatials=[spatial], out_path=str(path))
    if config is None:
        kw["format"] = "npz"
    result = run_export(ExportOptions(**kw))
    assert isinstance(result, dict)
    return result
