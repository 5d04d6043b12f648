"""The in-process executor: the stages of ``dataflow`` (FETCH, INFER with its shard writer,
the per-item and region writers), run by threads of the calling process instead of Ray
actors and tasks, with the same worker classes and writer functions.

For small jobs on one machine: there Ray's own start-up (``ray.init``, Ray Data's helper
actors, a worker process per actor; about 9 s and 1.1 GB on a 2-core machine,
docs/benchmarks.md) is most of the run. The fetch threads wait on the network and the
forward and the compressors release the GIL, so one process keeps the model busy. The
runner picks this module or ``dataflow`` (``executor.choose``); it has the same names.
"""

from __future__ import annotations

import glob
import math
import os
import queue
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from rs_embed_ray.options import FetchOptions, QuotaOptions
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
    item_writer_batch,
)
from rs_embed_ray.pipeline.sizing import fetch_sizing as ray_fetch_sizing
from rs_embed_ray.pipeline.worker_args import (
    fetch_worker_kwargs,
    model_worker_kwargs,
    place_columns,
)
from rs_embed_ray.pipeline.write import finalize_items
from rs_embed_ray.plan import ExportPlan, FetchGroup, ModelRequest

NAME = "local"
_END = object()  # the end of a stage's results


def cluster_resources(device: str = "auto") -> tuple[float, float]:
    """This process's cores, and the GPUs torch sees (0 without CUDA). With ``device="cpu"``
    torch is not asked: importing it here (about 1.2 s) would hold back the first fetch,
    while the model's thread imports it anyway."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        cpus = os.cpu_count() or 1
    gpus = 0 if device == "cpu" else visible_gpus()
    return float(max(1, cpus)), float(gpus)


def visible_gpus() -> int:
    """The GPUs torch sees; torch is imported only where a GPU's device node exists (NVIDIA,
    or ROCm's /dev/kfd), so a CPU-only machine does not pay for it before the first fetch."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return 0
    if not (glob.glob("/dev/nvidia[0-9]*") or os.path.exists("/dev/kfd")):
        return 0
    import torch

    return int(torch.cuda.device_count()) if torch.cuda.is_available() else 0


def configure_data_context() -> None:
    """Nothing to configure: no Ray Data here."""


@dataclass(frozen=True)
class Stage:
    """One ``map_batches``: a function, or a class built once (in the background, so a
    model loads while the first places are fetched), ``batch_size`` rows a call and
    ``calls`` calls at once (1: in the consuming thread)."""

    fn: Callable[..., Any] | type
    kwargs: dict[str, Any]
    batch_size: int
    calls: int = 1
    construct: bool = False


@dataclass(frozen=True)
class LocalDataset:
    """Rows (numpy column batches) and the stages to run over them, run by ``batches``."""

    source: tuple[dict[str, np.ndarray], ...]
    stages: tuple[Stage, ...] = ()

    def then(self, stage: Stage) -> LocalDataset:
        return replace(self, stages=(*self.stages, stage))


def _column(values: list[Any]) -> np.ndarray:
    arr = np.asarray(values)
    return arr.astype(object) if arr.dtype.kind in "US" else arr


def place_rows(
    plan: ExportPlan, todo: list[int], block: int | None = None, **cols: Callable[[int], Any]
) -> LocalDataset:
    """The rows ``dataflow.place_rows`` makes, as numpy batches of ``block`` places (else
    ``call_places``)."""
    step = block or call_places(plan.run.block_rows, len(todo), plan.place_bytes)
    blocks = []
    for lo in range(0, len(todo), step):
        places = todo[lo : lo + step]
        block = {col.INDEX: np.asarray(places, dtype=np.int64)}
        for name, values in place_columns(plan, places, cols).items():
            block[name] = _column(values)
        blocks.append(block)
    return LocalDataset(tuple(blocks))


def fetch_sizing(
    opts: FetchOptions,
    quota: QuotaOptions | None,
    n: int,
    cpus: float,
    chained: bool,
    place_bytes: int,
) -> FetchSizing:
    """One fetch worker holding every fetch in flight (``num_workers``, capped by the quota),
    its calls as large as the Ray plan's, so the first places reach the model as soon."""
    size = ray_fetch_sizing(opts, quota, n, cpus, chained, place_bytes)
    return FetchSizing(1, size.actors * size.threads, 0.0, size.batch)


def fetch_stage(
    ds: LocalDataset,
    plan: ExportPlan,
    group: FetchGroup,
    shard_dir: str,
    size: FetchSizing,
    quota: dict[str, Any],
) -> LocalDataset:
    """FETCH: one ``FetchWorker`` with ``size.threads`` threads; enough calls at once to keep
    them all busy while a call waits on its slowest place."""
    kwargs = fetch_worker_kwargs(plan, group, shard_dir, size.threads, quota)
    calls = max(CALLS_PER_ACTOR, math.ceil(2 * size.threads / max(1, size.batch)))
    return ds.then(Stage(FetchWorker, kwargs, size.batch, calls, construct=True))


def infer_stage(
    ds: LocalDataset,
    plan: ExportPlan,
    model: ModelRequest,
    device: str,
    size: InferSizing,
    shard_dir: str,
    n: int,
    item_ctx: dict[str, Any] | None = None,
) -> LocalDataset:
    """INFER: one ``ModelWorker`` in this process; it writes its own embedding shards. The
    last model's stage also hands its patches and embeddings to the per-item writer threads
    (``io.handover``): a place's file is written right after that stage, while an earlier
    model's items would wait, held, for the later models. ``item_ctx`` set: the model writes
    the files of the places it finishes itself, as Ray's CPU actor does (not by default here,
    ``model_writes_items``)."""
    hand = plan.layout == "per_item" and plan.last_model_key() == model.key
    kwargs = model_worker_kwargs(
        plan, model, device, size.torch_threads, shard_dir, hand_over=hand, item_ctx=item_ctx
    )
    return ds.then(Stage(ModelWorker, kwargs, plan.run.infer.batch_size, 1, construct=True))


def model_writes_items(size: InferSizing) -> bool:
    """Never here: the writer threads share the model's process, so its hand-over already
    spares them the reads, and they write while the model runs (``infer_stage``)."""
    return False


def finalize_stage(rows: list[dict[str, Any]], plan: ExportPlan, ctx: dict[str, Any]) -> Any:
    """The per-item writer: rows of (INDEX, PAYLOAD) -> (INDEX, STATUS, MANIFEST)."""
    w = plan.run.write
    block = {
        col.INDEX: np.asarray([r[col.INDEX] for r in rows], dtype=np.int64),
        col.PAYLOAD: np.asarray([r[col.PAYLOAD] for r in rows], dtype=object),
    }
    stage = Stage(
        finalize_items,
        {"ctx": ctx},
        item_writer_batch(w, plan.n_items, plan.place_bytes),
        max(1, w.writers),
    )
    return LocalDataset((block,), (stage,))


# -- running a dataset ---------------------------------------------------------------------------


def _rows(block: dict[str, np.ndarray]) -> int:
    return len(block[col.INDEX])


def _rebatch(blocks: Iterator[dict[str, np.ndarray]], size: int) -> Iterator[dict[str, Any]]:
    """The rows of ``blocks`` in batches of exactly ``size`` (the last one smaller), as Ray
    Data's ``map_batches(batch_size=...)`` hands them to a function."""
    held: list[dict[str, np.ndarray]] = []
    count = 0
    for block in blocks:
        n = _rows(block)
        if n == 0:
            continue
        held.append(block)
        count += n
        while count >= size:
            merged = _concat(held)
            yield {k: v[:size] for k, v in merged.items()}
            rest = {k: v[size:] for k, v in merged.items()}
            count -= size
            held = [rest] if count else []
    if count:
        yield _concat(held)


def _concat(blocks: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    if len(blocks) == 1:
        return blocks[0]
    return {k: np.concatenate([b[k] for b in blocks]) for k in blocks[0]}


class _Running:
    """A started stage: its worker (built in the background) and, for ``calls > 1``, the
    threads that run its calls and the queue their results arrive on."""

    def __init__(self, stage: Stage) -> None:
        self.stage = stage
        self.pool = ThreadPoolExecutor(max(1, stage.calls), thread_name_prefix="stage")
        if stage.construct:
            self.worker: Future[Any] | None = self.pool.submit(stage.fn, **stage.kwargs)
        else:
            self.worker = None
        self.stop = threading.Event()

    def fn(self) -> Callable[[dict[str, Any]], Any]:
        if self.worker is not None:
            return self.worker.result()  # the worker's constructor error is raised here
        fn, kw = self.stage.fn, self.stage.kwargs
        return lambda batch: fn(batch, **kw)

    def run(self, upstream: Iterator[dict[str, np.ndarray]]) -> Iterator[dict[str, np.ndarray]]:
        batches = _rebatch(upstream, self.stage.batch_size)
        if self.stage.calls <= 1:
            call = None
            for batch in batches:
                # the first batch is asked for before waiting on the worker: pulling it
                # starts the upstream stage, so the fetch runs while the model loads
                if call is None:
                    call = self.fn()
                yield call(batch)
            return
        yield from self._parallel(batches)

    def _parallel(self, batches: Iterator[dict[str, Any]]) -> Iterator[dict[str, np.ndarray]]:
        """``calls`` calls at once; results as they finish (Ray Data's unordered output)."""
        results: queue.Queue[Any] = queue.Queue()
        room = threading.Semaphore(self.stage.calls)

        def done(fut: Future[Any]) -> None:
            room.release()
            results.put(fut)

        def submit(call: Callable[[dict[str, Any]], Any], batch: dict[str, Any]) -> bool:
            """Start one call once a slot is free; False when the stage is stopping. The
            call's end gives its slot back; a call that never starts gives it back here."""
            while not room.acquire(timeout=0.1):
                if self.stop.is_set():
                    return False
            started = False
            try:
                if not self.stop.is_set():
                    self.pool.submit(call, batch).add_done_callback(done)
                    started = True
            finally:
                if not started:
                    room.release()
            return started

        def feed() -> None:
            try:
                call = self.fn()
                for batch in batches:
                    if not submit(call, batch):
                        return
            except BaseException as exc:  # the upstream's or the constructor's error
                results.put(exc)
            finally:
                # every submitted call has released its slot once all slots are back
                for _ in range(self.stage.calls):
                    room.acquire()
                results.put(_END)

        feeder = threading.Thread(target=feed, name="stage-feed", daemon=True)
        feeder.start()
        while True:
            item = results.get()
            if item is _END:
                return
            if isinstance(item, BaseException):
                raise item
            yield item.result()

    def close(self) -> None:
        self.stop.set()
        self.pool.shutdown(wait=True, cancel_futures=True)


def batches(ds: LocalDataset) -> Iterator[dict[str, Any]]:
    """The dataset's result batches as they finish; every stage's threads are stopped when
    the consumer stops early (an error, a stopped run)."""
    running = [_Running(stage) for stage in ds.stages]  # workers start building now
    stream: Iterator[dict[str, Any]] = iter(ds.source)
    for r in running:
        stream = r.run(stream)
    trimmer = HeapTrimmer()
    try:
        for batch in stream:
            yield batch
            trimmer.maybe()
    finally:
        for r in running:
            r.stop.set()
        close = getattr(stream, "close", None)
        if close is not None:
            close()
        for r in reversed(running):
            r.close()


# -- writer windows --------------------------------------------------------------------------------


class TaskWindow:
    """``dataflow.TaskWindow`` on threads: calls of one function, at most ``limit`` at once,
    their results collected as they finish."""

    def __init__(self, fn: Callable[..., Any], limit: int, num_cpus: float = 0.5) -> None:
        self.fn = fn
        self.limit = max(1, limit)
        self.pool = ThreadPoolExecutor(self.limit, thread_name_prefix="writer")
        self.pending: list[Future[Any]] = []

    def has_room(self) -> bool:
        return len(self.pending) < self.limit

    def submit(self, *args: Any) -> list[Any]:
        """Start one call (waiting while the window is full); the results that finished."""
        done: list[Any] = []
        while not self.has_room():
            finished, rest = wait(self.pending, return_when=FIRST_COMPLETED)
            self.pending = [f for f in self.pending if f in rest]
            done += [f.result() for f in finished]
        self.pending.append(self.pool.submit(self.fn, *args))
        return done + self.poll()

    def poll(self) -> list[Any]:
        ready = [f for f in self.pending if f.done()]
        taken = set(ready)
        self.pending = [f for f in self.pending if f not in taken]
        return [f.result() for f in ready]

    def drain(self) -> list[Any]:
        """Wait for every call; a call's error is raised here."""
        pending, self.pending = self.pending, []
        return [f.result() for f in pending]


def task_map(concurrency: int) -> Callable[[Callable[[Any], Any], list[Any]], list[Any]]:
    """``parallel_map`` for a combined sink: ``concurrency`` threads, results in job order."""

    def run(fn: Callable[[Any], Any], jobs: list[Any]) -> list[Any]:
        with ThreadPoolExecutor(max(1, concurrency), thread_name_prefix="writer") as pool:
            return list(pool.map(fn, jobs))

    return run


__all__ = [
    "NAME",
    "LocalDataset",
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
