"""Runs one export: joins the cluster, decides what is left to do (``rs_embed_ray.resume``),
runs the Ray stages (``dataflow``) group by group and model by model, keeps the run's log
(``runlog``), and writes the final files.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterator
from typing import Any

import numpy as np

from rs_embed_ray.errors import ExportStopped, ModelError, RSEmbedRayError
from rs_embed_ray.io.assemble import write_combined
from rs_embed_ray.io.atomic import (
    OutputWriteError,
    is_storage_error,
    output_write_error,
    write_json,
)
from rs_embed_ray.io.formats import Places
from rs_embed_ray.io.handover import HANDOVER
from rs_embed_ray.io.lazy import PerPlace
from rs_embed_ray.io.manifest import jsonable, package_version, utc_ts
from rs_embed_ray.io.manifest_list import ManifestList
from rs_embed_ray.io.stac import write_stac
from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.io.stream import CombinedStream
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.pipeline.executor import choose, flow_of
from rs_embed_ray.pipeline.fetch import with_retries
from rs_embed_ray.pipeline.heap import release_free_heap
from rs_embed_ray.pipeline.regions import RegionWriters
from rs_embed_ray.pipeline.runlog import EMBED, PATCH, RunLog
from rs_embed_ray.pipeline.sizing import FetchSizing, infer_sizing, item_writer_batch, morton
from rs_embed_ray.pipeline.stac_run import stac_run
from rs_embed_ray.pipeline.write import finalize_items
from rs_embed_ray.plan import ExportPlan, FetchGroup, ModelRequest
from rs_embed_ray.providers import provider_capability
from rs_embed_ray.resume import EarlierRun, item_records, place_record

log = logging.getLogger(__name__)

StageFailed = ExportStopped  # the name this module used before the error was exported

# places per per-item write dataset: bounds the payload rows the driver holds at once
FINAL_SLICE = 10_000


# A local cluster the export starts for itself leaves out what nothing reads then: the
# dashboard, Ray's metrics export and its event-loop statistics. The last two cost about
# 7 ms of CPU a second on an idle 2-core machine, 0.2 ms a place at 40 places a second
# (docs/benchmarks.md, session 19). A cluster the user started keeps its settings.
LOCAL_CLUSTER: dict[str, Any] = {
    "include_dashboard": False,
    "_system_config": {"enable_metrics_collection": False, "event_stats": False},
}


def local_cluster_kwargs() -> dict[str, Any]:
    """``ray.init`` keywords for a local cluster started here (a fresh copy: Ray adds to it)."""
    return {**LOCAL_CLUSTER, "_system_config": dict(LOCAL_CLUSTER["_system_config"])}


# With workers' output off the terminal (the default) nothing reads what Ray's log monitor
# publishes, yet it globs the session's log folder for new files every 0.1 s. Ray's own
# settings for many log files (ray/_private/log_monitor.py) make that every 5 s: 3.5 of its
# 6.5 ms of CPU a second on an idle 2-core machine (docs/benchmarks.md, session 20). The
# log monitor reads them from its environment: they are set while ray.init starts the
# cluster's processes, then taken back; a value the user set is kept.
QUIET_LOG_MONITOR_ENV: dict[str, str] = {
    "RAY_LOG_MONITOR_MANY_FILES_THRESHOLD": "0",
    "LOG_NAME_UPDATE_INTERVAL_S": "5",
}


def init_local_cluster(**kwargs: Any) -> None:
    """``ray.init`` of a cluster started here: ``LOCAL_CLUSTER`` plus ``kwargs``; with
    ``log_to_driver=False`` its log monitor also gets ``QUIET_LOG_MONITOR_ENV``."""
    import ray

    kw = {**local_cluster_kwargs(), **kwargs}
    with _environ(QUIET_LOG_MONITOR_ENV if kw.get("log_to_driver") is False else {}):
        ray.init(**kw)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """``values`` in ``os.environ`` for the block (a variable already set is left as it
    is), then removed again."""
    added = {k: v for k, v in values.items() if k not in os.environ}
    os.environ.update(added)
    try:
        yield
    finally:
        for k in added:
            os.environ.pop(k, None)


def ensure_ray(address: str | None) -> None:
    """Join the cluster named by ``address`` / RAY_ADDRESS, or start a local one in-process
    (``LOCAL_CLUSTER``).

    Ray's own output stays off the terminal unless asked for (``pipeline.quiet``)."""
    import ray

    from rs_embed_ray.pipeline.quiet import (
        init_kwargs,
        quiet_ray_data,
        ray_log_level,
        spend_actor_arg_warning,
    )

    level = ray_log_level()
    if not ray.is_initialized():
        local = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
        start = init_local_cluster if local else ray.init
        start(address=address, ignore_reinit_error=True, **init_kwargs(level))
    quiet_ray_data(level)
    if level > logging.INFO:
        spend_actor_arg_warning()


class Runner:
    """One export run over a plan: what is left, the stages, the final files. ``flow``: the
    executor's stage module (``dataflow``, Ray; ``inprocess``, threads); default Ray."""

    def __init__(self, plan: ExportPlan, state: RunState | None = None, flow: Any = None) -> None:
        self.plan = plan
        self.flow = flow if flow is not None else flow_of("ray")
        self.state = state if state is not None else RunState(plan.state_dir)
        self.cpus, self.gpus = self.flow.cluster_resources(plan.device)
        self.device = self._resolve_device()
        self.log = RunLog(plan, self.state, self.device)
        self.earlier = EarlierRun(plan, self.state, self.device)
        self._quota: tuple[str, Any] | None = None
        self.stage_s: dict[str, float] = {}  # model key -> seconds of the stages that ran it
        self.regions: RegionWriters | None = None  # combined regions written as batches finish
        # per_item: the files of places whose every step is done, written while the run goes on
        self.items: ManifestList | None = None
        self._item_writers: Any = None  # the executor's TaskWindow
        self._item_ctx: dict[str, Any] = {}

    # -- setup ---------------------------------------------------------------------------
    def _resolve_device(self) -> str:
        dev = self.plan.device
        if dev == "auto":
            return "cuda" if self.gpus > 0 else "cpu"
        if dev.startswith("cuda") and self.gpus <= 0:
            where = "the Ray cluster" if self.flow.NAME == "ray" else "this machine"
            raise ModelError(f"device={dev!r} but {where} has no GPU; use device='auto'.")
        return dev

    def _ctx(self) -> dict[str, Any]:
        """What the file writers (``io.assemble``) need to know of the run."""
        p = self.plan
        return {
            "format": p.format,
            "ext": p.ext,
            "out_dir": str(p.out_path),
            "save_inputs": p.save_inputs,
            "save_embeddings": p.save_embeddings,
            "save_manifest": p.save_manifest,
            "max_retries": p.run.retry.max_retries,
            "retry_backoff_s": p.run.retry.backoff_s,
            "backend": p.backend,
            "device": self.device,
            "temporal": jsonable(p.temporal),
            "output": jsonable(p.output),
            "input_prep": jsonable(p.input_prep),
            "package_version": package_version(),
            "dtype": p.dtype,
            "stop_marker": str(marker) if (marker := self.state.stop_marker) else None,
            "writers": p.run.write.writers,
            "models": [
                {
                    "name": m.name,
                    "key": m.key,
                    "sensor": jsonable(m.sensor),
                    "describe": m.info.describe(),
                    "input_key": m.input_key,
                    "fetch_key": m.fetch_key,
                    "channels": list(m.channels) if m.channels is not None else None,
                }
                for m in p.models
            ],
        }

    def _quota_kwargs(self, size: int, threads: int) -> dict[str, Any]:
        """How the fetch actors keep the run under the Earth Engine quota.

        By default the run's quota is split among its own fetch actors: each may have
        ``threads`` requests in flight (actors x threads never exceeds ``ee_max_concurrent``,
        see ``sizing.fetch_sizing``) and ``ee_max_qps / size`` requests per second, so the
        whole run stays under both limits with no round trip per request. With
        ``ee_quota_actor``, every request takes a lease from that named, detached actor
        instead, so several jobs on one cluster share one project's quota.
        """
        p = self.plan
        if not provider_capability(p.backend, "uses_request_quota", target=p.provider_target):
            return {}
        quota = p.run.quota
        shared = quota.shared_actor
        if not shared:
            qps = quota.max_qps / size
            return {"quota_share": {"max_concurrent": threads, "qps": qps}}
        from rs_embed_ray.pipeline.ee_quota import SHARED_NAMESPACE, get_or_create_quota_actor

        if self._quota is None:
            mc, qps = quota.max_concurrent, quota.max_qps
            # limits apply when the actor is created: the first job to ask sets them
            actor = get_or_create_quota_actor(
                shared, mc, qps, detached=True, namespace=SHARED_NAMESPACE
            )
            self._quota = (shared, actor)
        return {"limiter_name": self._quota[0]}

    # -- stages --------------------------------------------------------------------------
    def _fetch_size(self, n: int, chained: bool) -> FetchSizing:
        """The FETCH actor pool's sizing (``sizing.FetchSizing``) for ``n`` places."""
        p = self.plan
        uses_quota = provider_capability(p.backend, "uses_request_quota", target=p.provider_target)
        quota = p.run.quota if uses_quota else None
        return self.flow.fetch_sizing(p.run.fetch, quota, n, self.cpus, chained, p.place_bytes)

    def _fetch_op(self, ds: Any, group: FetchGroup, size: FetchSizing) -> Any:
        """FETCH: an actor pool, ``num_workers`` fetches in flight (actors x threads)."""
        p = self.plan
        shard_dir = str(self.state.shard_dir("patches", group.key))
        quota_kw = self._quota_kwargs(size.actors, size.threads)
        return self.flow.fetch_stage(ds, p, group, shard_dir, size, quota_kw)

    def _infer_op(self, ds: Any, model: ModelRequest, n: int) -> Any:
        """INFER then the embedding-shard writer, for one model."""
        size = infer_sizing(self.device, self.cpus, self.gpus)
        shard_dir = str(self.state.shard_dir("embeds", model.key))
        ctx = self._ctx() if self._model_writes_items(model) else None
        return self.flow.infer_stage(ds, self.plan, model, self.device, size, shard_dir, n, ctx)

    def _model_writes_items(self, model: ModelRequest) -> bool:
        """Whether ``model``'s stage writes the per-item files of the places it finishes
        itself (the last model's CPU actor on Ray, ``flow.model_writes_items``)."""
        p = self.plan
        return (
            p.layout == "per_item"
            and p.last_model_key() == model.key
            and self.flow.model_writes_items(infer_sizing(self.device, self.cpus, self.gpus))
        )

    def _due_items(self, model: ModelRequest, group: FetchGroup | None = None) -> dict[str, Any]:
        """The ITEM column of ``model``'s stage (chained after ``group``'s fetch, or alone)
        when it writes the files it finishes: each place's payload less what the stage
        makes, or "" when another step of the place is not ok."""
        if not self._model_writes_items(model):
            return {}
        p = self.plan
        made = {(EMBED, model.key)} | ({(PATCH, group.key)} if group is not None else set())
        assume = frozenset(made)

        def item(i: int) -> str:
            if not self.log.finished([i], assume):
                return ""
            due = {"name": p.names[i], "fingerprint": p.item_fingerprint(i)}
            return json.dumps({**due, "sources": self._sources(i)})

        return {col.ITEM: item}

    def _consume_patches(
        self, group: FetchGroup, batch: dict[str, Any], prefix: str = ""
    ) -> list[Record]:
        """Log a batch's patches; the caller stops the run on a failed one (``fail_fast``)."""
        p = self.plan
        rows = {k: batch[prefix + k] for k in col.RESULT}
        rows[col.INDEX] = batch[col.INDEX]
        rows[col.NODE] = batch.get(prefix + col.NODE)
        recs = self.log.record(PATCH, group.key, rows, lambda i: p.patch_fingerprint(i, group))
        self._offer(PATCH, group.key, recs)
        self.log.count(PATCH, recs)
        return recs

    def _consume_embeds(self, model: ModelRequest, batch: dict[str, Any]) -> list[Record]:
        """Log a batch's embeddings (less the skipped); the caller stops the run on a failed
        one (``fail_fast``)."""
        p = self.plan
        keep = np.asarray([s != col.STATUS_SKIP for s in batch[col.STATUS]], dtype=bool)
        if not keep.any():
            return []
        rows = {k: np.asarray(batch[k])[keep] for k in (col.INDEX, *col.RESULT, col.NODE)}
        if col.DONE_AT in batch:
            rows[col.DONE_AT] = np.asarray(batch[col.DONE_AT])[keep]
        recs = self.log.record(EMBED, model.key, rows, lambda i: p.pair_fingerprint(i, model))
        self._offer(EMBED, model.key, recs)
        self.log.settled[model.key][[r.index for r in recs]] = True
        self.log.count(EMBED, recs)
        return recs

    def _start_regions(self) -> None:
        """A combined file made of regions (Zarr) gets them written as batches finish."""
        p = self.plan
        if p.layout != "combined":
            return
        places = Places(
            p.spatial_forms(), p.names, p.centers(), jsonable(p.temporal), self._temporals()
        )
        stream = CombinedStream(self._ctx(), p.out_path, places)
        if stream.enabled:
            writers = p.run.write.writers
            self.regions = RegionWriters(stream, writers, self.state, self.flow.TaskWindow)
            self.regions.offer(self.log.patch_src, self.log.embed_src)  # resumed steps

    def _offer(self, kind: str, key: str, recs: list[Record]) -> None:
        if self.regions is not None:
            idx = [r.index for r in recs]
            self.regions.offer(self.log.patch_src, self.log.embed_src, kind, key, idx)

    def _temporals(self) -> PerPlace | None:
        """Each place's window (manifest form), when places have windows of their own."""
        p = self.plan
        return p.temporal_forms() if p.temporals is not None else None

    def _fetch(self, group: FetchGroup, todo: list[int], first: ModelRequest | None) -> None:
        """Fetch the pending places of a group; when ``first`` is given, its model runs in
        the same streaming dataset, so fetching and inference overlap."""
        p = self.plan
        if p.run.fetch.spatial_batching:
            todo = sorted(todo, key=lambda i: morton(p.spatials[i].center()))
        desc = f"fetch[{group.sensor.collection}]"
        size = self._fetch_size(len(todo), chained=first is not None)
        if first is None:
            ds = self._fetch_op(self.flow.place_rows(p, todo, size.batch), group, size)
            with self.flow.progress(len(todo), desc, p.run.show_progress) as bar:
                for batch in self.flow.batches(ds):
                    self.log.fail_fast(self._consume_patches(group, batch), desc)
                    self._write_finished(batch[col.INDEX])
                    bar.update(len(batch[col.INDEX]))
            return
        embed = {col.EMBED: lambda i: not self.log.ok(EMBED, first.key, i)}
        rows = self.flow.place_rows(p, todo, size.batch, **embed, **self._due_items(first, group))
        ds = self._fetch_op(rows, group, size)
        ds = self._infer_op(ds, first, len(todo))
        with self.flow.progress(
            len(todo), f"{desc}+infer[{first.name}]", p.run.show_progress
        ) as bar:
            for batch in self.flow.batches(ds):
                patches = self._consume_patches(group, batch, prefix=col.FETCH_PREFIX)
                embeds = self._consume_embeds(first, batch)
                left = self._take_written(batch)  # before a stop, which keeps them
                self.log.fail_fast(patches, desc)
                self.log.fail_fast(embeds, f"infer[{first.name}]")
                self._write_finished(left)
                bar.update(len(batch[col.INDEX]))

    def _infer(self, model: ModelRequest, todo: list[int]) -> None:
        """Embed places whose patches are cached (later models of a group, resumed runs)."""
        p = self.plan
        # a place the chained fetch+infer stage settled in this run is not settled twice
        settled = self.log.settled[model.key]
        todo = [i for i in todo if not settled[i]]
        key = model.fetch_key
        # places whose patch failed are settled without any cluster work
        failed = [i for i in todo if key and not self.log.ok(PATCH, key, i)]
        if failed:
            recs = self.log.record_prefetch_failures(model, failed)
            self.log.fail_fast(recs, f"infer[{model.name}]")
        run = [i for i in todo if i not in set(failed)]
        if not run:
            return
        src = self.log.patch_src[key] if key else {}
        shard = {col.SHARD: lambda i: src[i]["shard"] if key else ""}
        rows = self.flow.place_rows(p, run, **shard, **self._due_items(model))
        ds = self._infer_op(rows, model, len(run))
        with self.flow.progress(len(run), f"infer[{model.name}]", p.run.show_progress) as bar:
            for batch in self.flow.batches(ds):
                embeds = self._consume_embeds(model, batch)
                left = self._take_written(batch)  # before a stop, which keeps them
                self.log.fail_fast(embeds, f"infer[{model.name}]")
                bar.update(len(embeds))
                self._write_finished(left)

    def _stages(self, todo_items: list[int]) -> None:
        """Fetch every group, then embed with every model (one dataset per model)."""
        p = self.plan
        for g in p.groups:
            members = [p.model(k) for k in g.members]
            need = [i for i in todo_items if not self.log.ok(PATCH, g.key, i)]
            if not p.save_inputs:
                need = [
                    i
                    for i in need
                    if p.save_embeddings and any(not self.log.ok(EMBED, m.key, i) for m in members)
                ]
            if need:
                t0 = time.perf_counter()
                first = members[0] if p.save_embeddings else None
                self._fetch(g, need, first)
                took = time.perf_counter() - t0
                if first is not None:  # its inference ran in this stage, overlapping the fetch
                    self.stage_s[first.key] = self.stage_s.get(first.key, 0.0) + took
                log.info("fetch[%s]: %d items in %.1fs", g.key, len(need), took)
        if not p.save_embeddings:
            return
        for m in p.models:
            need = [i for i in todo_items if not self.log.ok(EMBED, m.key, i)]
            if need:
                t0 = time.perf_counter()
                self._infer(m, need)
                took = time.perf_counter() - t0
                self.stage_s[m.key] = self.stage_s.get(m.key, 0.0) + took
                log.info("infer[%s]: %d items in %.1fs", m.name, len(need), took)

    def _run_stages(self, todo_items: list[int]) -> None:
        """The stages, with a combined file's regions written as their batches finish."""
        try:
            self._start_regions()
            self._stages(todo_items)
        except BaseException:
            if self.regions is not None:  # their markers let a resume adopt what they wrote
                with contextlib.suppress(Exception):
                    self.regions.abandon()
            raise

    # -- final files -----------------------------------------------------------------------
    def _sources(self, i: int) -> dict[str, Any]:
        """Place ``i``'s steps so far: their shards, by fetch group and by model."""
        lg = self.log
        return {
            "patch": {g: t[i] for g, t in lg.patch_src.items() if t.get(i) is not None},
            "embed": {m: t[i] for m, t in lg.embed_src.items() if t.get(i) is not None},
        }

    def _item_payload(self, i: int) -> dict[str, Any]:
        """What place ``i``'s file is made of: its steps' shards (``io.assemble.write_item``)."""
        p = self.plan
        payload = {
            "index": i,
            "name": p.names[i],
            "spatial_manifest": jsonable(p.spatials[i]),
            "temporal": jsonable(p.temporal_of(i)),
            "fingerprint": p.item_fingerprint(i),
            "sources": self._sources(i),
        }
        return {col.INDEX: i, col.PAYLOAD: json.dumps(payload)}

    def _write_failed(self, i: int, error: str) -> dict[str, Any]:
        """The manifest of a place whose file could not be written (continue_on_error)."""
        p = self.plan
        return {
            "created_at": utc_ts(),
            "point_index": i,
            "status": "failed",
            "stage": "write",
            "error": error,
            **place_record(p, i, self.device),
        }

    def _take_written(self, batch: dict[str, Any]) -> Any:
        """Record the files the model stage wrote itself (``schema.WRITTEN``); return the
        batch's other places, whose files are the writers' (``_write_finished``)."""
        indices = np.asarray(batch[col.INDEX])
        if self.items is None or col.WRITTEN not in batch:
            return indices
        status = np.asarray(batch[col.WRITTEN])
        stop = status == col.STATUS_OUTPUT_ERROR
        here = np.asarray([bool(w) for w in status], dtype=bool) & ~stop
        if here.any():
            written = {
                col.INDEX: indices[here],
                col.STATUS: status[here],
                col.MANIFEST: np.asarray(batch[col.MANIFEST])[here],
            }
            self._record_written(written, self.items)
        if stop.any():  # the output location is full or read-only: the run stops
            err = json.loads(np.asarray(batch[col.MANIFEST])[stop][0])
            raise OutputWriteError(err["errno"], err["error"], err["path"])
        return indices[~here]

    def _write_finished(self, indices: Any) -> None:
        """per_item: start writing the files of the places in ``indices`` whose every step is
        now done (one writer task per ``chunk_size`` places, at most ``writer_workers`` in
        flight), so the files are written while the model works on later places instead of
        in a pass after the last one."""
        out = self.items
        if out is None:
            return
        done = self.log.finished([int(i) for i in indices])
        if not done:
            return
        if self._item_writers is None:
            w = self.plan.run.write
            self._item_writers = self.flow.TaskWindow(finalize_items, w.writers)
            self._item_ctx = self._ctx()
        step = item_writer_batch(self.plan.run.write, self.plan.n_items, self.plan.place_bytes)
        for lo in range(0, len(done), step):
            rows = [self._item_payload(i) for i in done[lo : lo + step]]
            batch = {
                col.INDEX: np.asarray([r[col.INDEX] for r in rows], dtype=np.int64),
                col.PAYLOAD: np.asarray([r[col.PAYLOAD] for r in rows], dtype=object),
            }
            for result in self._item_writers.submit(batch, self._item_ctx):
                self._record_written(result, out)

    def _drain_item_writers(self) -> None:
        """Wait for the per-item files still being written; record their manifests."""
        if self._item_writers is not None and self.items is not None:
            for result in self._item_writers.drain():
                self._record_written(result, self.items)

    def _finalize_per_item(self, todo: list[int], out: ManifestList) -> None:
        """Write the per-item files of ``todo`` and put their manifests in ``out``.

        Payload rows go to the writers in slices of ``FINAL_SLICE`` places, so the driver
        never holds every place's payload at once."""
        p, ctx = self.plan, self._ctx()
        self._drain_item_writers()
        written = set(todo) - set(out.missing())
        todo = [i for i in todo if i not in written]  # written while the run went on
        with self.flow.progress(len(todo), "write", p.run.show_progress) as bar:
            for lo in range(0, len(todo), FINAL_SLICE):
                rows = [self._item_payload(i) for i in todo[lo : lo + FINAL_SLICE]]
                ds = self.flow.finalize_stage(rows, p, ctx)
                del rows  # the dataset holds them now
                for batch in self.flow.batches(ds):
                    self._record_written(batch, out)
                    bar.update(len(batch[col.INDEX]))

    def _record_written(self, batch: dict[str, Any], out: ManifestList) -> None:
        """One writer batch's manifests: into ``out`` and, for ok files, the run's log."""
        p = self.plan
        indices, statuses = batch[col.INDEX], batch[col.STATUS]
        mans: dict[int, dict[str, Any]] = {}
        for idx, status, man in zip(indices, statuses, batch[col.MANIFEST], strict=True):
            i = int(idx)
            m = json.loads(man)
            if status == col.STATUS_WRITE_FAILED:
                if not p.run.continue_on_error:
                    raise self.log.stopped(i, "write", str(m["error"]))
                m = self._write_failed(i, m["error"])
            mans[i] = m
            out.put(i, m)
        self.state.append(item_records(p, indices, statuses, mans))

    def _write_combined(self) -> dict[str, Any]:
        p, lg = self.plan, self.log
        ctx = self._ctx()
        retry = p.run.retry
        done = self.regions.finish() if self.regions is not None else frozenset()
        result = with_retries(
            lambda: write_combined(
                ctx,
                p.out_path,
                spatials=p.spatial_forms(),
                names=p.names,
                centers=p.centers(),
                patch_src=lg.patch_src,
                embed_src=lg.embed_src,
                fingerprint=p.run_fingerprint(),
                temporals=self._temporals(),
                parallel_map=self.flow.task_map(p.run.write.writers),
                done_jobs=done,
            ),
            retry.max_retries,
            retry.backoff_s,
        )
        write_json(self.state.folder / "final.json", result)
        return result

    # -- main ----------------------------------------------------------------------------
    def run(self) -> ManifestList | dict[str, Any]:
        p = self.plan
        if not self.state.locked:
            self.state.acquire()
        try:
            if not p.run.resume:
                self.state.reset()
            elif p.layout == "combined":
                done = self.earlier.combined_complete()
                if done is not None:
                    log.info("resume: %s is complete for this request; nothing to do", p.out_path)
                    return done
            return self._run()
        except BaseException:  # run.json must not keep saying "running"
            self.state.mark_stopping()
            with contextlib.suppress(Exception):
                self.log.write_run("failed", 0)
            raise
        finally:
            # what the model handed over and no writer took (failed places) is not kept
            stats = HANDOVER.clear()
            if stats["taken"] or stats["dropped"]:
                log.info("handover: %s", stats)
            self.state.release()

    def _run(self) -> ManifestList | dict[str, Any]:
        p = self.plan
        skipped: dict[int, dict[str, Any]] = {}
        if p.run.resume:
            self.earlier.adopt(self.log.patch_src, self.log.embed_src)
        manifests = ManifestList(p.n_items) if p.layout == "per_item" else None
        skipped = 0
        if manifests is not None and p.run.resume:
            for i, man in self.earlier.complete_items():
                manifests.put(i, man)
                skipped += 1
        todo_items = manifests.missing() if manifests is not None else list(range(p.n_items))
        self.items = manifests
        self.log.write_run("running", skipped)
        log.info(
            "export: %d items (%d already complete), %d model(s), %d fetch group(s)",
            p.n_items,
            skipped,
            len(p.models),
            len(p.groups),
        )
        try:
            self._run_stages(todo_items)
        except ExportStopped:
            self.state.mark_stopping()  # the model actors write no more files
            if manifests is not None:  # keep what finished (contract §2.14)
                done = self.log.finished(todo_items)
                if done:
                    self._finalize_per_item(done, manifests)
                    log.info("stopped: wrote the %d places that had finished", len(done))
            self.log.write_run("stopped", skipped)
            raise
        t0 = time.perf_counter()
        release_free_heap()  # what the stages freed, before the final write allocates its own
        if manifests is not None:
            self._finalize_per_item(todo_items, manifests)
            result: Any = manifests
            statuses = manifests.statuses()
        else:
            result = self._write_combined()
            statuses = [result["status"]]
        log.info("write: %d items in %.1fs", len(todo_items), time.perf_counter() - t0)
        write_stac(stac_run(p, self.device, result, self.stage_s))
        all_ok = all(s == "ok" for s in statuses)
        if all_ok:
            self.state.drop_cache()
        self.log.write_run("ok" if all_ok else "partial", skipped)
        return result


def run_plan(plan: ExportPlan) -> ManifestList | dict[str, Any]:
    state = RunState(plan.state_dir)
    state.acquire()  # a second run on this output is refused at once, before Ray starts
    try:
        flow = flow_of(choose(plan))
        if flow.NAME == "ray":
            ensure_ray(plan.run.ray_address)
        flow.configure_data_context()
        runner = Runner(plan, state, flow)
    except BaseException:
        state.release()
        raise
    try:
        return runner.run()
    except Exception as exc:
        cause = _task_cause(exc)
        if cause is not None:
            raise cause from None
        # the driver's own writes: the combined file, final.json
        if isinstance(exc, OSError) and is_storage_error(exc):
            raise output_write_error(exc, plan.out_path) from exc
        raise


def _task_cause(exc: BaseException) -> RSEmbedRayError | None:
    """A Ray task's own error (OutputWriteError, ProviderError, ModelError), with its own
    message, out of the RayTaskError that carried it to the driver."""
    ray = sys.modules.get("ray")
    if ray is None or not isinstance(exc, ray.exceptions.RayTaskError):
        return None
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, RSEmbedRayError) else None


__all__ = [
    "run_plan",
    "ensure_ray",
    "init_local_cluster",
    "local_cluster_kwargs",
    "StageFailed",
]
