"""Every option of an export, typed and defaulted once, and rs-embed 0.3's request objects.

``ExportOptions`` is the one home of the defaults: ``export_batch``'s visible signature takes
them from here (``default(name)``), and the function hands one ``ExportOptions`` to the plan.
rs-embed 0.3.1 moved from flat keywords to ``target=ExportTarget(...)``,
``config=ExportConfig(...)``, ``ExportModelRequest`` entries and global ``fetch`` /
``modality``; ``ExportOptions.flat()`` maps those onto the seed's keywords, so the rest of the
package knows one spelling. Giving the same setting in both styles is an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from enum import Enum, StrEnum
from types import SimpleNamespace
from typing import Any

from rs_embed_ray.errors import ModelError
from rs_embed_ray.specs import (
    FetchSpec,
    InputPrepSpec,
    OutputSpec,
    SensorSpec,
    SpatialSpec,
    TemporalSpec,
)

# -- rs-embed 0.3.1's request objects (contract §1.7) ----------------------------------------


class ExportLayout(StrEnum):
    """Where the arrays go: one combined file, or one file per place."""

    COMBINED = "combined"
    PER_ITEM = "per_item"


@dataclass(frozen=True)
class ExportTarget:
    """rs-embed 0.3's output target: ``combined(out_file)`` or ``per_item(out_dir, names=)``."""

    layout: ExportLayout
    out_file: str | None = None
    out_dir: str | None = None
    names: list[str] | None = None

    @staticmethod
    def combined(out_file: str) -> ExportTarget:
        return ExportTarget(layout=ExportLayout.COMBINED, out_file=out_file)

    @staticmethod
    def per_item(out_dir: str, *, names: list[str] | None = None) -> ExportTarget:
        return ExportTarget(layout=ExportLayout.PER_ITEM, out_dir=out_dir, names=names)


@dataclass(frozen=True)
class ExportModelRequest:
    """One model with its own sensor / fetch override / modality / model options."""

    name: str
    sensor: SensorSpec | None = None
    fetch: FetchSpec | None = None
    modality: str | None = None
    model_config: dict[str, Any] | None = None

    @staticmethod
    def configure(
        name: str,
        *,
        sensor: SensorSpec | None = None,
        fetch: FetchSpec | None = None,
        modality: str | None = None,
        **model_kwargs: Any,
    ) -> ExportModelRequest:
        return ExportModelRequest(
            name=name,
            sensor=sensor,
            fetch=fetch,
            modality=modality,
            model_config=dict(model_kwargs) or None,
        )


# -- the options of one export ----------------------------------------------------------------


@dataclass(frozen=True)
class ExportOptions:
    """The arguments of ``export_batch``: the seed's, in the seed's order, then ours."""

    spatials: list[SpatialSpec]
    temporal: TemporalSpec | None
    models: list[str | ExportModelRequest]
    out: str | None = None
    layout: str | None = None
    out_dir: str | None = None
    out_path: str | None = None
    names: list[str] | None = None
    backend: str = "gee"
    device: str = "auto"
    output: OutputSpec = OutputSpec.pooled()  # noqa: RUF009 (frozen, so one shared value is safe)
    sensor: SensorSpec | None = None
    per_model_sensors: dict[str, SensorSpec] | None = None
    format: str = "npz"
    save_inputs: bool = True
    save_embeddings: bool = True
    save_manifest: bool = True
    fail_on_bad_input: bool = False
    chunk_size: int = 16
    num_workers: int = 8
    continue_on_error: bool = False
    max_retries: int = 0
    retry_backoff_s: float = 0.0
    async_write: bool = True
    writer_workers: int = 2
    resume: bool = False
    show_progress: bool = True
    input_prep: InputPrepSpec | str = "resize"
    # ours
    ray_address: str | None = None
    # where the stages run: "ray", "local" (threads of this process) or "auto" (local for a
    # small job on one machine, pipeline.executor)
    executor: str = "auto"
    source: str | None = None
    weights: dict[str, str] | None = None
    model_configs: dict[str, dict[str, Any]] | None = None
    precision: str = "auto"
    provider_options: dict[str, Any] | None = None
    fetch_threads: int = 8  # the default num_workers in one fetch process: fewer to start
    ee_max_concurrent: int = 40
    ee_max_qps: float = 100.0
    spatial_batching: bool = False
    temporals: list[TemporalSpec | None] | None = None
    ee_quota_actor: str | None = None
    dtype: str = "float32"  # how vectors are stored: float32 | float16 | int8 (io.quantize)
    # rs-embed 0.3.1's spelling of the same request
    target: ExportTarget | None = None
    config: ExportConfig | None = None
    fetch: FetchSpec | None = None
    modality: str | None = None
    # filled by flat(): per-model overrides that came from ExportModelRequest entries
    per_model_fetches: dict[str, FetchSpec] | None = field(default=None, repr=False)
    per_model_modalities: dict[str, str] | None = field(default=None, repr=False)

    def as_mapping(self) -> dict[str, Any]:
        """Every option by name (what the plan-time type and bound checks read)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    def flat(self) -> ExportOptions:
        """The same request in the seed's flat keywords (target/config/requests mapped)."""
        changes: dict[str, Any] = {}
        changes.update(_from_target(self))
        changes.update(_from_config(self))
        changes.update(_from_model_requests(self))
        if self.sensor is not None and self.fetch is not None:
            raise ModelError("Use either sensor=... or fetch=..., not both.")
        return dataclasses.replace(self, target=None, config=None, **changes)


@dataclass(frozen=True)
class ExportConfig:
    """rs-embed 0.3's run settings; each field maps onto the seed keyword of the same name
    (``infer_batch_size`` onto ``chunk_size``, our inference batch size)."""

    # the same defaults as the keywords they map onto (stated once, in ExportOptions)
    format: str = ExportOptions.format
    save_inputs: bool = ExportOptions.save_inputs
    save_embeddings: bool = ExportOptions.save_embeddings
    save_manifest: bool = ExportOptions.save_manifest
    fail_on_bad_input: bool = ExportOptions.fail_on_bad_input
    chunk_size: int = ExportOptions.chunk_size
    infer_batch_size: int | None = None
    num_workers: int = ExportOptions.num_workers
    continue_on_error: bool = ExportOptions.continue_on_error
    max_retries: int = ExportOptions.max_retries
    retry_backoff_s: float = ExportOptions.retry_backoff_s
    async_write: bool = ExportOptions.async_write
    writer_workers: int = ExportOptions.writer_workers
    resume: bool = ExportOptions.resume
    show_progress: bool = ExportOptions.show_progress
    input_prep: InputPrepSpec | str | None = None
    dtype: str = ExportOptions.dtype


_FIELDS = {f.name: f for f in dataclasses.fields(ExportOptions)}
PUBLIC_OPTIONS = tuple(n for n in _FIELDS if n not in ("per_model_fetches", "per_model_modalities"))


def default(name: str) -> Any:
    """The default of option ``name`` (the one place defaults are stated)."""
    f = _FIELDS[name]
    if f.default is dataclasses.MISSING:
        raise KeyError(f"option {name!r} has no default")
    return f.default


# the defaults as attributes, for signatures that show them (``export_batch``)
DEFAULTS = SimpleNamespace(
    **{n: f.default for n, f in _FIELDS.items() if f.default is not dataclasses.MISSING}
)


# -- how to run it: the run options, typed and grouped by concern -----------------------------
#
# The plan carries one RunOptions to the runner and the workers; no option travels as a string
# key. They have no defaults of their own: ``RunOptions.of`` fills them from an ExportOptions,
# whose fields are the one home of every default.


@dataclass(frozen=True)
class RetryOptions:
    """Every fetch, forward and output write is tried ``max_retries + 1`` times, sleeping
    ``backoff_s * 2**k`` between tries."""

    max_retries: int
    backoff_s: float


@dataclass(frozen=True)
class FetchOptions:
    """The FETCH stage: how many requests are in flight and how places are grouped."""

    in_flight: int  # num_workers: fetches in flight, actors x threads
    threads_per_actor: int  # fetch_threads: the most threads one fetch actor runs
    max_batch: int  # chunk_size: the fewest places one fetch call takes (sizing.call_places)
    spatial_batching: bool  # nearby places of a call share one request
    fail_on_bad_input: bool  # inspect each patch; a bad one fails its place


@dataclass(frozen=True)
class QuotaOptions:
    """The Earth Engine project's quota, cluster-wide (gee only)."""

    max_concurrent: int
    max_qps: float
    shared_actor: str | None  # a named detached actor several jobs share, or the run's own split


@dataclass(frozen=True)
class InferOptions:
    """The INFER stage: places per forward pass and the numeric precision."""

    batch_size: int  # chunk_size
    precision: str


@dataclass(frozen=True)
class WriteOptions:
    """The writer tasks: how many run, and how many places one of them takes."""

    # writer_workers: per-item writers (tasks, or the model actor's threads) and Zarr region
    # tasks in flight
    writers: int
    max_batch: int  # chunk_size: the fewest places one per-item writer call takes
    async_write: bool  # accepted for rs-embed; writes are always Ray tasks


@dataclass(frozen=True)
class RunOptions:
    """How to run an export (not what to export): one frozen object the plan carries to the
    runner and the runner hands, group by group, to the workers."""

    block_rows: int  # chunk_size: the fewest rows per Ray Data block of the places
    fetch: FetchOptions
    quota: QuotaOptions
    infer: InferOptions
    write: WriteOptions
    retry: RetryOptions
    resume: bool
    continue_on_error: bool
    show_progress: bool
    ray_address: str | None
    executor: str  # "auto" | "ray" | "local" (pipeline.executor.choose)

    @staticmethod
    def of(o: ExportOptions) -> RunOptions:
        """The run options of a flat, checked ExportOptions (``validation.check_call``).

        The public ``chunk_size`` ("process places in chunks; the inference batch size")
        sets the four sizes it has always set: blocks, fetch calls, forward passes and
        per-item writer calls; each has its own name here."""
        chunk = int(o.chunk_size)
        shared = str(o.ee_quota_actor).strip() if o.ee_quota_actor is not None else None
        return RunOptions(
            block_rows=chunk,
            fetch=FetchOptions(
                in_flight=int(o.num_workers),
                threads_per_actor=max(1, int(o.fetch_threads)),
                max_batch=chunk,
                spatial_batching=bool(o.spatial_batching),
                fail_on_bad_input=bool(o.fail_on_bad_input),
            ),
            quota=QuotaOptions(int(o.ee_max_concurrent), float(o.ee_max_qps), shared),
            infer=InferOptions(batch_size=chunk, precision=str(o.precision)),
            write=WriteOptions(
                writers=int(o.writer_workers), max_batch=chunk, async_write=bool(o.async_write)
            ),
            retry=RetryOptions(int(o.max_retries), float(o.retry_backoff_s)),
            resume=bool(o.resume),
            continue_on_error=bool(o.continue_on_error),
            show_progress=bool(o.show_progress),
            ray_address=o.ray_address,
            executor=str(o.executor),
        )


def _is_set(opts: ExportOptions, name: str) -> bool:
    return getattr(opts, name) != default(name)


def _from_target(opts: ExportOptions) -> dict[str, Any]:
    t = opts.target
    if t is None:
        return {}
    if not all(hasattr(t, a) for a in ("layout", "out_file", "out_dir", "names")):
        raise ModelError("target must be an ExportTarget instance.")
    clash = [n for n in ("out", "layout", "out_dir", "out_path", "names") if _is_set(opts, n)]
    if clash:
        raise ModelError(
            f"target=ExportTarget(...) and {', '.join(clash)}= both set the output: pass "
            "the output once, either as target= or as out/layout (out_dir/out_path/names)."
        )
    layout = t.layout.value if isinstance(t.layout, Enum) else str(t.layout)
    layout = layout.strip().lower()
    if layout == "combined":
        if not t.out_file:
            raise ModelError("ExportTarget.COMBINED requires out_file.")
        return {"out_path": str(t.out_file)}
    if layout == "per_item":
        if not t.out_dir:
            raise ModelError("ExportTarget.PER_ITEM requires out_dir.")
        names = list(t.names) if t.names is not None else None
        return {"out_dir": str(t.out_dir), "names": names}
    raise ModelError(f"Unknown target layout {t.layout!r}: use 'per_item' or 'combined'.")


_CONFIG_FIELDS = (
    "format",
    "save_inputs",
    "save_embeddings",
    "save_manifest",
    "fail_on_bad_input",
    "chunk_size",
    "num_workers",
    "continue_on_error",
    "max_retries",
    "retry_backoff_s",
    "async_write",
    "writer_workers",
    "resume",
    "show_progress",
    "dtype",
)


def _from_config(opts: ExportOptions) -> dict[str, Any]:
    c = opts.config
    if c is None:
        return {}
    if not all(hasattr(c, a) for a in _CONFIG_FIELDS):
        raise ModelError("config must be an ExportConfig instance.")
    clash = [n for n in _CONFIG_FIELDS if _is_set(opts, n)]
    if clash:
        raise ModelError(
            f"config=ExportConfig(...) and {', '.join(f'{n}=' for n in clash)} both given: "
            "pass each setting once, either in the config or as a keyword."
        )
    out = {n: getattr(c, n) for n in _CONFIG_FIELDS}
    batch = getattr(c, "infer_batch_size", None)
    if batch is not None:
        out["chunk_size"] = batch  # our chunk_size is the inference batch size
    prep = getattr(c, "input_prep", None)
    if prep is not None:
        if _is_set(opts, "input_prep"):
            raise ModelError(
                "input_prep is given both as input_prep= and in config=ExportConfig(...): "
                "pass it once."
            )
        out["input_prep"] = prep
    return out


def _from_model_requests(opts: ExportOptions) -> dict[str, Any]:
    models = opts.models
    if not isinstance(models, (list, tuple)) or not any(
        isinstance(m, ExportModelRequest) or _looks_like_request(m) for m in models
    ):
        return {}
    names: list[Any] = []
    sensors = dict(opts.per_model_sensors or {})
    configs = dict(opts.model_configs or {})
    fetches: dict[str, FetchSpec] = {}
    modalities: dict[str, str] = {}
    for m in models:
        if isinstance(m, str):
            names.append(m)
            continue
        if not (isinstance(m, ExportModelRequest) or _looks_like_request(m)):
            raise ModelError("models entries must be strings or ExportModelRequest instances.")
        name = str(m.name)
        names.append(name)
        if m.sensor is not None and m.fetch is not None:
            raise ModelError(
                f"ExportModelRequest({name!r}): use either sensor=... or fetch=..., not both."
            )
        for what, table, value in (
            ("per_model_sensors", sensors, m.sensor),
            ("model_configs", configs, m.model_config),
        ):
            if value is None:
                continue
            if name in table:
                raise ModelError(
                    f"Model {name!r}: its ExportModelRequest and {what}= both set it; pass it once."
                )
            table[name] = value
        if m.fetch is not None:
            fetches[name] = m.fetch
        if m.modality is not None:
            modalities[name] = str(m.modality)
    return {
        "models": names,
        "per_model_sensors": sensors or None,
        "model_configs": configs or None,
        "per_model_fetches": fetches or None,
        "per_model_modalities": modalities or None,
    }


def _looks_like_request(m: Any) -> bool:
    """rs-embed's own ExportModelRequest (same fields), so its objects work unchanged."""
    return not isinstance(m, str) and all(
        hasattr(m, a) for a in ("name", "sensor", "fetch", "modality", "model_config")
    )


__all__ = [
    "DEFAULTS",
    "PUBLIC_OPTIONS",
    "ExportConfig",
    "ExportLayout",
    "ExportModelRequest",
    "ExportOptions",
    "ExportTarget",
    "FetchOptions",
    "InferOptions",
    "QuotaOptions",
    "RetryOptions",
    "RunOptions",
    "WriteOptions",
    "default",
]
