"""The Ray Data plan of one export: the place rows, then FETCH (an actor pool), INFER (one
actor per GPU) with the embedding-shard writer, and the per-item writer. Each function adds
one stage to a dataset; the runner decides which stages run, in which order, on which places.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import ray
from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.pipeline.fetch import FetchWorker
from rs_embed_ray.pipeline.heap import HeapTrimmer
from rs_embed_ray.pipeline.infer import ModelWorker
from rs_embed_ray.pipeline.progress import progress
from rs_embed_ray.pipeline.sizing import (
    CALLS_PER_ACTOR,
    FetchSizing,
    InferSizing,
    call_places,
    fetch_sizing,
    item_writer_batch,
    n_blocks,
    writers,
)
from rs_embed_ray.pipeline.worker_args import (
    fetch_worker_kwargs,
    model_worker_kwargs,
    place_columns,
)
from rs_embed_ray.pipeline.write import finalize_items, write_embed_shard
from rs_embed_ray.plan import ExportPlan, FetchGroup, ModelRequest

NAME = "ray"


def configure_data_context() -> None:
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own bars per stage
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    ctx.execution_options.verbose_progress = False
    # a UDF's own error (OutputWriteError, ...) reaches the driver as itself: by default it is
    # wrapped in a UserCodeException whose __cause__ is lost on the way (Ray Data 2.60)
    ctx.raise_original_map_exception = True


def cluster_resources(device: str = "auto") -> tuple[float, float]:
    """The cluster's CPUs and GPUs (``device``: as ``inprocess.cluster_resources`` takes it)."""
    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


def place_rows(
    plan: ExportPlan, todo: list[int], block: int | None = None, **cols: Callable[[int], Any]
) -> Any:
    """One row per place (INDEX, SPATIAL; TEMPORAL only when places have windows of their own,
    else the stages use the run's), plus ``cols``: name -> value of place i. Blocks of about
    ``block`` places (the fetch call's, so a call is one block), else ``call_places``.

    The rows are built column by column into Arrow blocks, one block's places at a time: a
    row dict per place peaked at about 870 bytes of Python objects a place (17 MB at 20,000
    places, near a gigabyte at a million) while Ray Data copied the rows into its own
    blocks; this peaks at about 100 (tests/test_place_rows.py)."""
    per_block = block or call_places(plan.run.block_rows, len(todo), plan.place_bytes)
    n = n_blocks(len(todo), 4, per_block)
    tables = []
    for part in np.array_split(np.asarray(todo, dtype=np.int64), n):
        columns: dict[str, Any] = {col.INDEX: pa.array(part)}
        for name, values in place_columns(plan, part.tolist(), cols).items():
            columns[name] = pa.array(values, pa.string() if name == col.TEMPORAL else None)
        tables.append(pa.table(columns))
    # from_blocks: the blocks as they are, their metadata made here (from_arrow would start
    # one Ray task per block to read it)
    return ray.data.from_blocks(tables)


def fetch_stage(
    ds: Any,
    plan: ExportPlan,
    group: FetchGroup,
    shard_dir: str,
    size: FetchSizing,
    quota: dict[str, Any],
) -> Any:
    """FETCH: an actor pool, ``size.actors`` x ``size.threads`` fetches in flight; ``quota``:
    the actors' share of the Earth Engine quota (``Runner._quota_kwargs``)."""
    return ds.map_batches(
        FetchWorker,
        fn_constructor_kwargs=fetch_worker_kwargs(plan, group, shard_dir, size.threads, quota),
        compute=ActorPoolStrategy(
            size=size.actors,
            max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
            max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
            enable_true_multi_threading=True,
        ),
        num_cpus=size.cpus_per_actor,
        batch_size=size.batch,
        batch_format="numpy",
    )


def infer_stage(
    ds: Any,
    plan: ExportPlan,
    model: ModelRequest,
    device: str,
    size: InferSizing,
    shard_dir: str,
    n: int,
    item_ctx: dict[str, Any] | None = None,
) -> Any:
    """INFER (one actor per GPU, or one CPU actor) then WRITE (tasks) for one model; a CPU
    actor writes its embedding shards itself and, given ``item_ctx`` (the last model of a
    per_item run, ``model_writes_items``), the files of the places it finishes."""
    infer = plan.run.infer
    # a CPU actor writes its own shards: a writer task per batch would start more worker
    # processes on the same cores the forward needs
    own_shards = model_writes_items(size)
    ds = ds.map_batches(
        ModelWorker,
        fn_constructor_kwargs=model_worker_kwargs(
            plan,
            model,
            device,
            size.torch_threads,
            shard_dir if own_shards else None,
            item_ctx=item_ctx if own_shards else None,
        ),
        compute=ActorPoolStrategy(size=size.actors, max_tasks_in_flight_per_actor=2),
        num_gpus=size.gpus_per_actor,
        num_cpus=1,
        batch_size=infer.batch_size,
        batch_format="numpy",
    )
    if own_shards:
        return ds
    return ds.map_batches(
        write_embed_shard,
        fn_kwargs={"shard_dir": shard_dir},
        # one task per inference batch: more writers than batches would only idle (and
        # Ray Data warns about them)
        compute=TaskPoolStrategy(size=writers(plan.run.write.writers, n, infer.batch_size)),
        num_cpus=0.1,
        batch_size=None,
        batch_format="numpy",
    )


def model_writes_items(size: InferSizing) -> bool:
    """Whether the model actor writes its own shards, and so can write the per-item files of
    the places it finishes: a CPU actor. A GPU actor hands them to writer tasks, which keep
    the writes off the GPU's time."""
    return size.gpus_per_actor == 0


def finalize_stage(rows: list[dict[str, Any]], plan: ExportPlan, ctx: dict[str, Any]) -> Any:
    """The per-item writer: rows of (INDEX, PAYLOAD) -> (INDEX, STATUS, MANIFEST)."""
    w = plan.run.write
    ds = ray.data.from_items(rows, override_num_blocks=n_blocks(len(rows), w.writers))
    batch = item_writer_batch(w, plan.n_items, plan.place_bytes)
    return ds.map_batches(
        finalize_items,
        fn_kwargs={"ctx": ctx},
        compute=TaskPoolStrategy(size=writers(w.writers, len(rows), batch)),
        num_cpus=0.5,
        batch_size=batch,
        batch_format="numpy",
    )


def batches(ds: Any) -> Iterator[dict[str, Any]]:
    """The dataset's result rows as they stream in, one numpy batch at a time; between
    batches the driver gives the heap pages it freed back to the OS (``heap.HeapTrimmer``)."""
    trimmer = HeapTrimmer()
    for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
        yield batch
        trimmer.maybe()


class TaskWindow:
    """Ray tasks of one function, at most ``limit`` in flight, their results collected as
    they finish: the per-item files of places that are complete, written while later places
    are still being fetched and embedded."""

    def __init__(self, fn: Callable[..., Any], limit: int, num_cpus: float = 0.5) -> None:
        self.task = ray.remote(num_cpus=num_cpus, max_retries=0)(fn)
        self.limit = max(1, limit)
        self.pending: list[Any] = []

    def has_room(self) -> bool:
        return len(self.pending) < self.limit

    def submit(self, *args: Any) -> list[Any]:
        """Start one task (waiting while the window is full); the results that finished."""
        done = []
        while not self.has_room():
            ready, self.pending = ray.wait(self.pending, num_returns=1)
            done += ray.get(ready)
        self.pending.append(self.task.remote(*args))
        return done + self.poll()

    def poll(self) -> list[Any]:
        if not self.pending:
            return []
        ready, self.pending = ray.wait(self.pending, num_returns=len(self.pending), timeout=0)
        return ray.get(ready)

    def drain(self) -> list[Any]:
        """Wait for every task; a task's error is raised here."""
        pending, self.pending = self.pending, []
        return ray.get(pending)


def _at(fn: Callable[[Any], Any], pos: int, job: Any) -> tuple[int, Any]:
    return pos, fn(job)


def task_map(concurrency: int) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """``parallel_map`` for a combined sink: each job one Ray task, at most ``concurrency``
    in flight (``writer_workers``), results in job order."""

    def run(fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        window = TaskWindow(_at, concurrency)
        results: dict[int, Any] = {}
        for pos, job in enumerate(jobs):
            results.update(window.submit(fn, pos, job))
        results.update(window.drain())
        return [results[i] for i in range(len(jobs))]

    return run


__all__ = [
    "NAME",
    "TaskWindow",
    "batches",
    "cluster_resources",
    "configure_data_context",
    "fetch_sizing",
    "fetch_stage",
    "finalize_stage",
    "infer_stage",
    "model_writes_items",
    "place_rows",
    "progress",
    "task_map",
]
