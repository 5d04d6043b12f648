"""Builds and runs the Ray Data plans of one export: fetch per sensor group, one dataset per
model, then the writer; keeps the log (skip list) that makes the run resumable.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray.data import ActorPoolStrategy, DataContext, TaskPoolStrategy

from rs_embed_ray.errors import ExportStopped, ModelError, RSEmbedRayError
from rs_embed_ray.io.assemble import sidecar_path, write_combined
from rs_embed_ray.io.atomic import is_storage_error, output_write_error
from rs_embed_ray.io.formats import get_format
from rs_embed_ray.io.manifest import (
    array_sha1,
    jsonable,
    package_version,
    prefetch_error,
    utc_ts,
)
from rs_embed_ray.io.shards import ShardReader
from rs_embed_ray.io.state import Record, RunState
from rs_embed_ray.pipeline.fetch import (
    CALLS_PER_ACTOR,
    TEMPORAL_COLUMN,
    FetchWorker,
    with_retries,
)
from rs_embed_ray.pipeline.infer import ModelWorker
from rs_embed_ray.pipeline.quiet import (
    init_kwargs,
    quiet_ray_data,
    ray_log_level,
    spend_actor_arg_warning,
)
from rs_embed_ray.pipeline.write import finalize_items, write_embed_shard
from rs_embed_ray.plan import ExportPlan, FetchGroup, ModelRequest
from rs_embed_ray.providers import provider_class
from rs_embed_ray.specs import spatial_to_dict

log = logging.getLogger(__name__)

Src = dict[str, Any]  # {"status", "shard" (absolute), "error", "shape"}


StageFailed = ExportStopped  # the name this module used before the error was exported


def ensure_ray(address: str | None) -> None:
    """Join the cluster named by ``address`` / RAY_ADDRESS, or start a local one in-process.

    Ray's own output stays off the terminal unless asked for (``pipeline.quiet``)."""
    level = ray_log_level()
    if not ray.is_initialized():
        local = address == "local" or (address is None and not os.environ.get("RAY_ADDRESS"))
        extra = {"include_dashboard": False} if local else {}
        ray.init(address=address, ignore_reinit_error=True, **init_kwargs(level), **extra)
    quiet_ray_data(level)
    if level > logging.INFO:
        spend_actor_arg_warning()


def _configure_data_context() -> None:
    ctx = DataContext.get_current()
    ctx.enable_progress_bars = False  # the driver shows its own bars per stage
    ctx.print_on_execution_start = False
    ctx.execution_options.preserve_order = False
    ctx.execution_options.verbose_progress = False
    # a UDF's own error (OutputWriteError, ...) reaches the driver as itself: by default it is
    # wrapped in a UserCodeException whose __cause__ is lost on the way (Ray Data 2.60)
    ctx.raise_original_map_exception = True


@contextlib.contextmanager
def _progress(total: int, desc: str, enabled: bool) -> Iterator[Any]:
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc=desc, unit="item", disable=not enabled or total <= 0, leave=True)
    try:
        yield bar
    finally:
        bar.close()


def _n_blocks(n_rows: int, parallelism: int, rows_per_block: int = 64) -> int:
    """Small blocks stream sooner (and make the log finer-grained); a cap bounds overhead."""
    want = max(2 * parallelism, math.ceil(n_rows / max(1, rows_per_block)))
    return max(1, min(n_rows, want, 2000))


def _writers(writer_workers: int, n_rows: int, batch: int) -> int:
    """Writer tasks for ``n_rows`` rows in batches of ``batch``: never more than batches."""
    return max(1, min(writer_workers, math.ceil(n_rows / max(1, batch))))


def _morton(lonlat: tuple[float, float]) -> int:
    """Z-order key of a lon/lat: sorting by it puts nearby places in the same batches."""
    x = int((lonlat[0] + 180.0) / 360.0 * 65535)
    y = int((lonlat[1] + 90.0) / 180.0 * 65535)
    key = 0
    for b in range(16):
        key |= ((x >> b) & 1) << (2 * b) | ((y >> b) & 1) << (2 * b + 1)
    return key


def _cluster_resources() -> tuple[float, float]:
    res = ray.cluster_resources()
    return float(res.get("CPU", 1.0)), float(res.get("GPU", 0.0))


class Runner:
    def __init__(self, plan: ExportPlan, state: RunState | None = None) -> None:
        self.plan = plan
        self.state = state if state is not None else RunState(plan.state_dir)
        self.patch_src: dict[str, dict[int, Src]] = {g.key: {} for g in plan.groups}
        self.embed_src: dict[str, dict[int, Src]] = {m.key: {} for m in plan.models}
        self.cpus, self.gpus = _cluster_resources()
        self.device = self._resolve_device()
        self.counts = {"fetched": 0, "fetch_failed": 0, "embedded": 0, "embed_failed": 0}
        self._quota: tuple[str, Any] | None = None
        # places whose embedding step already ran in this run (chained fetch+infer)
        self._settled: dict[str, set[int]] = {m.key: set() for m in plan.models}
        self._log: dict[tuple[str, str, int], dict[str, Any]] = {}  # earlier runs' records

    # -- setup ---------------------------------------------------------------------------
    def _resolve_device(self) -> str:
        dev = self.plan.device
        if dev == "auto":
            return "cuda" if self.gpus > 0 else "cpu"
        if dev.startswith("cuda") and self.gpus <= 0:
            raise ModelError(f"device={dev!r} but the Ray cluster has no GPU; use device='auto'.")
        return dev

    def _ctx(self) -> dict[str, Any]:
        p = self.plan
        return {
            "format": p.format,
            "ext": p.ext,
            "out_dir": str(p.out_path),
            "save_inputs": p.save_inputs,
            "save_embeddings": p.save_embeddings,
            "save_manifest": p.save_manifest,
            "max_retries": p.max_retries,
            "retry_backoff_s": p.retry_backoff_s,
            "backend": p.backend,
            "device": self.device,
            "temporal": jsonable(p.temporal),
            "output": jsonable(p.output),
            "input_prep": jsonable(p.input_prep),
            "package_version": package_version(),
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

    # -- resume --------------------------------------------------------------------------
    def _load_log(self) -> None:
        """Adopt finished steps from earlier runs whose fingerprint matches and file is intact."""
        p = self.plan
        reader = ShardReader()
        self._log = self.state.latest()
        try:
            for (kind, key, index), rec in self._log.items():
                if index >= p.n_items or rec.get("status") != "ok" or not rec.get("shard"):
                    continue
                shard = str(self.state.folder / rec["shard"])
                if kind == "patch" and key in self.patch_src:
                    if rec.get("fp") != p.patch_fingerprint(index, p.group(key)):
                        continue
                    if reader.has(shard, index):
                        self.patch_src[key][index] = {**rec, "shard": shard}
                elif kind == "embed" and key in self.embed_src:
                    if rec.get("fp") != p.pair_fingerprint(index, p.model(key)):
                        continue
                    try:
                        arr, _ = reader.read(shard, index)
                    except Exception:
                        continue
                    if rec.get("sha1") and array_sha1(arr) != rec["sha1"]:
                        log.warning("embedding shard of item %d is corrupt; redoing it", index)
                        continue
                    self.embed_src[key][index] = {**rec, "shard": shard}
        finally:
            reader.close()

    def _item_complete(self, index: int) -> dict[str, Any] | None:
        """A per-item file from an earlier run that is ok, intact and for this request.

        With its sidecar, the sidecar says what the file holds; without one
        (``save_manifest=False``), the ``item`` record of the log does (contract §2.7: the
        file itself is verified, keys, shapes and digests, before it is skipped)."""
        p = self.plan
        path = p.item_path(index)
        side = sidecar_path(path)
        if not path.exists():
            return None
        if not side.exists():
            return self._item_complete_from_log(index, path)
        try:
            man = json.loads(side.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(man, dict) or man.get("status") != "ok":
            return None
        if man.get("request_fingerprint") != p.item_fingerprint(index):
            return None
        if not get_format(p.format).intact(path, man):
            return None
        return {**man, "resume_skipped": True, "resume_output_path": str(path)}

    def _item_complete_from_log(self, index: int, path: Path) -> dict[str, Any] | None:
        p = self.plan
        rec = self._log.get(("item", ITEM_KEY, index))
        if (
            rec is None
            or rec.get("status") != "ok"
            or rec.get("fp") != p.item_fingerprint(index)
            or not isinstance(rec.get("arrays"), dict)
            or not get_format(p.format).matches(path, rec["arrays"])
        ):
            return None
        # contract §2.17.3 (no sidecar), with the status the log recorded for the file
        return {
            "created_at": utc_ts(),
            "point_index": index,
            "name": p.names[index],
            "status": "ok",
            "stage": "resume",
            "reason": "output_exists",
            "backend": p.backend,
            "device": self.device,
            "models": [],
            "spatial": jsonable(p.spatials[index]),
            "temporal": jsonable(p.temporal_of(index)),
            "output": jsonable(p.output),
            "request_fingerprint": rec["fp"],
            "resume_skipped": True,
            "resume_output_path": str(path),
        }

    def _combined_complete(self) -> dict[str, Any] | None:
        p = self.plan
        side = sidecar_path(p.out_path)
        final = self.state.folder / "final.json"
        for cand in (side, final):
            if not p.out_path.exists() or not cand.exists():
                continue
            try:
                man = json.loads(cand.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if (
                isinstance(man, dict)
                and not man.get("resume_incomplete", True)
                and man.get("status") == "ok"
                and man.get("request_fingerprint") == p.run_fingerprint()
                and get_format(p.format).intact(p.out_path, man)
            ):
                return {**man, "resume_skipped": True, "resume_output_path": str(p.out_path)}
        return None

    # -- stages --------------------------------------------------------------------------
    def _record(self, kind: str, key: str, rows: dict[str, Any], fp: Any) -> list[Record]:
        recs = []
        nodes = rows.get("node")
        nodes = nodes if nodes is not None else [""] * len(rows["index"])
        for idx, status, error, shard, shape, sha, node in zip(
            rows["index"],
            rows["status"],
            rows["error"],
            rows["shard"],
            rows["shape"],
            rows["sha1"],
            nodes,
            strict=True,
        ):
            i = int(idx)
            rel = os.path.relpath(str(shard), self.state.folder) if shard else None
            rec = Record(
                kind=kind,
                key=key,
                index=i,
                status=str(status),
                fp=fp(i),
                shard=rel,
                error=str(error) or None,
                shape=json.loads(shape) if shape else None,
                sha1=str(sha) or None,
                node=str(node) or None,
            )
            recs.append(rec)
            src = {
                "status": rec.status,
                "shard": str(shard),
                "error": rec.error,
                "shape": rec.shape,
            }
            (self.patch_src if kind == "patch" else self.embed_src)[key][i] = src
        self.state.append(recs)
        return recs

    def _fail_fast(self, recs: list[Record], what: str) -> None:
        bad = [r for r in recs if r.status != "ok"]
        if bad and not self.plan.continue_on_error:
            r = bad[0]
            raise self._stopped(r.index, what, str(r.error))

    def _stopped(self, index: int, stage: str, reason: str) -> ExportStopped:
        name = self.plan.names[index]
        kept = (
            "places that had finished are written"
            if self.plan.layout == "per_item"
            else "finished steps are kept in the run's log"
        )
        return ExportStopped(
            f"{stage} failed for place {index} ({name}): {reason}. The run stopped "
            f"(continue_on_error=False); {kept}. Rerun with resume=True (CLI --resume) to "
            "continue where it stopped, or with continue_on_error=True (CLI "
            "--continue-on-error) to record failures and go on.",
            index=index,
            name=name,
            stage=stage,
            reason=reason,
        )

    def _finished(self, todo: list[int]) -> list[int]:
        """Places whose every step (fetch for saved inputs, each model) is ok."""
        p = self.plan
        done = []
        for i in todo:
            ok = True
            for m in p.models:
                if p.save_inputs and m.fetch_key:
                    ok &= self.patch_src[m.fetch_key].get(i, {}).get("status") == "ok"
                if p.save_embeddings:
                    ok &= self.embed_src[m.key].get(i, {}).get("status") == "ok"
            if ok:
                done.append(i)
        return done

    def _quota_kwargs(self, size: int, threads: int) -> dict[str, Any]:
        """How the fetch actors keep the run under the Earth Engine quota.

        By default the run's quota is split among its own fetch actors: each may have
        ``threads`` requests in flight (actors x threads never exceeds ``ee_max_concurrent``,
        see ``_fetch_op``) and ``ee_max_qps / size`` requests per second, so the whole run
        stays under both limits with no round trip per request. With ``ee_quota_actor``,
        every request takes a lease from that named, detached actor instead, so several
        jobs on one cluster share one project's quota.
        """
        p = self.plan
        if not provider_class(p.backend, target=p.provider_target).uses_request_quota:
            return {}
        shared = p.extra.get("ee_quota_actor")
        if not shared:
            qps = float(p.extra["ee_max_qps"]) / size
            return {"quota_share": {"max_concurrent": threads, "qps": qps}}
        from rs_embed_ray.pipeline.ee_quota import SHARED_NAMESPACE, get_or_create_quota_actor

        if self._quota is None:
            mc, qps = int(p.extra["ee_max_concurrent"]), float(p.extra["ee_max_qps"])
            # limits apply when the actor is created: the first job to ask sets them
            actor = get_or_create_quota_actor(
                shared, mc, qps, detached=True, namespace=SHARED_NAMESPACE
            )
            self._quota = (shared, actor)
        return {"limiter_name": self._quota[0]}

    def _fetch_op(self, ds: Any, group: FetchGroup, n: int, chained: bool) -> Any:
        """FETCH: an actor pool, ``num_workers`` fetches in flight (actors x threads)."""
        p = self.plan
        # an actor is a process: a few threaded actors cost far less memory and start-up
        # than one actor per fetch
        conc = max(1, min(p.num_workers, n))
        if provider_class(p.backend, target=p.provider_target).uses_request_quota:
            # more fetches in flight than the project's concurrency quota would only queue
            conc = min(conc, int(p.extra["ee_max_concurrent"]))
        threads = max(1, min(int(p.extra.get("fetch_threads", 4)), conc))
        # at most two fetch processes per CPU of the cluster: past that, more actors only
        # add memory and context switches; their threads carry the extra requests instead
        size = min(math.ceil(conc / threads), max(2, 2 * int(self.cpus)))
        # actors x threads never exceeds conc: the quota split relies on it
        threads = max(1, conc // size)
        # IO-bound: small CPU shares, leaving room for the model actor when chained
        share = 0.25 if chained else 0.5
        fetch_cpus = min(1.0, max(0.05, share * self.cpus / size))
        return ds.map_batches(
            FetchWorker,
            fn_constructor_kwargs={
                "backend": p.backend,
                "provider_target": p.provider_target,
                "provider_options": p.provider_options,
                "sensor": jsonable(group.sensor),
                "n_frames": group.n_frames,
                "temporal": jsonable(p.temporal),
                "shard_dir": str(self.state.shard_dir("patches", group.key)),
                "max_retries": p.max_retries,
                "retry_backoff_s": p.retry_backoff_s,
                "fail_on_bad_input": p.fail_on_bad_input,
                "threads": threads,
                **self._quota_kwargs(size, threads),
                "spatial_batching": bool(p.extra.get("spatial_batching", False)),
                "frame_bins": group.frame_bins,
            },
            compute=ActorPoolStrategy(
                size=size,
                max_tasks_in_flight_per_actor=CALLS_PER_ACTOR,
                max_concurrent_calls_per_actor=CALLS_PER_ACTOR,
                enable_true_multi_threading=True,
            ),
            num_cpus=fetch_cpus,
            batch_size=self._fetch_batch(n, size),
            batch_format="numpy",
        )

    def _fetch_batch(self, n: int, size: int) -> int:
        """Places per fetch call: whole chunks when nearby places share requests; else small
        enough that a short run still spreads over every fetch actor."""
        p = self.plan
        if p.extra.get("spatial_batching"):
            return max(1, min(p.chunk_size, 64))
        return max(1, min(p.chunk_size, 64, math.ceil(n / (2 * size))))

    def _infer_op(self, ds: Any, model: ModelRequest, n: int) -> Any:
        """INFER (one actor per GPU, or one CPU actor) then WRITE (tasks) for one model."""
        p = self.plan
        use_gpu = self.device.startswith("cuda")
        n_actors = max(1, int(self.gpus)) if use_gpu else 1
        torch_threads = max(1, int(self.cpus) - 1) if not use_gpu else 1
        ds = ds.map_batches(
            ModelWorker,
            fn_constructor_kwargs={
                "model_id": model.model_id,
                "weights": model.weights,
                "model_config": model.model_config,
                "device": self.device,
                "precision": p.precision,
                "output": jsonable(p.output),
                "temporal": jsonable(p.temporal),
                "input_prep": jsonable(p.input_prep),
                "channels": list(model.channels) if model.channels is not None else None,
                "batch_size": p.chunk_size,
                "max_retries": p.max_retries,
                "retry_backoff_s": p.retry_backoff_s,
                "torch_threads": torch_threads,
                "name": model.name,
                "fetch_key": model.fetch_key,
                "target": model.target,
            },
            compute=ActorPoolStrategy(size=n_actors, max_tasks_in_flight_per_actor=2),
            num_gpus=1 if use_gpu else 0,
            num_cpus=1,
            batch_size=p.chunk_size,
            batch_format="numpy",
        )
        return ds.map_batches(
            write_embed_shard,
            fn_kwargs={"shard_dir": str(self.state.shard_dir("embeds", model.key))},
            # one task per inference batch: more writers than batches would only idle (and
            # Ray Data warns about them)
            compute=TaskPoolStrategy(size=_writers(p.writer_workers, n, p.chunk_size)),
            num_cpus=0.1,
            batch_size=None,
            batch_format="numpy",
        )

    def _rows(self, todo: list[int], **cols: Any) -> Any:
        p = self.plan
        rows = [
            {
                "index": i,
                "spatial": json.dumps(spatial_to_dict(p.spatials[i])),
                TEMPORAL_COLUMN: json.dumps(jsonable(p.temporal_of(i))),
                **{k: f(i) for k, f in cols.items()},
            }
            for i in todo
        ]
        return ray.data.from_items(rows, override_num_blocks=_n_blocks(len(rows), 4, p.chunk_size))

    def _consume_patches(self, group: FetchGroup, batch: dict[str, Any], prefix: str = "") -> None:
        p = self.plan
        rows = {k: batch[prefix + k] for k in ("status", "error", "shard", "shape", "sha1")}
        rows["index"] = batch["index"]
        rows["node"] = batch.get(prefix + "node")
        recs = self._record("patch", group.key, rows, lambda i: p.patch_fingerprint(i, group))
        ok = sum(r.status == "ok" for r in recs)
        self.counts["fetched"] += ok
        self.counts["fetch_failed"] += len(recs) - ok
        self._fail_fast(recs, f"fetch[{group.sensor.collection}]")

    def _consume_embeds(self, model: ModelRequest, batch: dict[str, Any]) -> int:
        p = self.plan
        keep = np.asarray([s != "skip" for s in batch["status"]], dtype=bool)
        if not keep.any():
            return 0
        rows = {
            k: np.asarray(batch[k])[keep]
            for k in ("index", "status", "error", "shard", "shape", "sha1", "node")
        }
        recs = self._record("embed", model.key, rows, lambda i: p.pair_fingerprint(i, model))
        self._settled[model.key].update(r.index for r in recs)
        ok = sum(r.status == "ok" for r in recs)
        self.counts["embedded"] += ok
        self.counts["embed_failed"] += len(recs) - ok
        self._fail_fast(recs, f"infer[{model.name}]")
        return len(recs)

    def _fetch(self, group: FetchGroup, todo: list[int], first: ModelRequest | None) -> None:
        """Fetch the pending places of a group; when ``first`` is given, its model runs in
        the same streaming dataset, so fetching and inference overlap."""
        p = self.plan
        if p.extra.get("spatial_batching"):
            todo = sorted(todo, key=lambda i: _morton(p.spatials[i].center()))
        desc = f"fetch[{group.sensor.collection}]"
        if first is None:
            ds = self._fetch_op(self._rows(todo), group, len(todo), chained=False)
            with _progress(len(todo), desc, p.show_progress) as bar:
                for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                    self._consume_patches(group, batch)
                    bar.update(len(batch["index"]))
            return
        done = self.embed_src[first.key]
        embed = lambda i: done.get(i, {}).get("status") != "ok"  # noqa: E731
        ds = self._fetch_op(self._rows(todo, embed=embed), group, len(todo), chained=True)
        ds = self._infer_op(ds, first, len(todo))
        with _progress(len(todo), f"{desc}+infer[{first.name}]", p.show_progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                self._consume_patches(group, batch, prefix="fetch_")
                self._consume_embeds(first, batch)
                bar.update(len(batch["index"]))

    def _infer(self, model: ModelRequest, todo: list[int]) -> None:
        """Embed places whose patches are cached (later models of a group, resumed runs)."""
        p = self.plan
        # a place the chained fetch+infer stage settled in this run is not settled twice
        todo = [i for i in todo if i not in self._settled[model.key]]
        src = self.patch_src[model.fetch_key] if model.fetch_key else {}
        # places whose patch failed are settled without any cluster work
        failed = [i for i in todo if model.fetch_key and src.get(i, {}).get("status") != "ok"]
        if failed:
            recs = [
                Record(
                    "embed",
                    model.key,
                    i,
                    "failed",
                    p.pair_fingerprint(i, model),
                    error=prefetch_error(
                        model.name, i, model.fetch_key, src.get(i, {}).get("error")
                    ),
                )
                for i in failed
            ]
            self.state.append(recs)
            for r in recs:
                self.embed_src[model.key][r.index] = {
                    "status": "failed",
                    "shard": "",
                    "error": r.error,
                    "shape": None,
                }
            self.counts["embed_failed"] += len(recs)
            self._fail_fast(recs, f"infer[{model.name}]")
        run = [i for i in todo if i not in set(failed)]
        if not run:
            return
        shard = lambda i: src[i]["shard"] if model.fetch_key else ""  # noqa: E731
        ds = self._infer_op(self._rows(run, shard=shard), model, len(run))
        with _progress(len(run), f"infer[{model.name}]", p.show_progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                bar.update(self._consume_embeds(model, batch))

    def _finalize_per_item(self, todo: list[int]) -> dict[int, dict[str, Any]]:
        p = self.plan
        ctx = self._ctx()
        rows = []
        for i in todo:
            sources = {
                "patch": {
                    g: self.patch_src[g].get(i)
                    for g in self.patch_src
                    if self.patch_src[g].get(i) is not None
                },
                "embed": {
                    m: self.embed_src[m].get(i)
                    for m in self.embed_src
                    if self.embed_src[m].get(i) is not None
                },
            }
            payload = {
                "index": i,
                "name": p.names[i],
                "spatial_manifest": jsonable(p.spatials[i]),
                "temporal": jsonable(p.temporal_of(i)),
                "fingerprint": p.item_fingerprint(i),
                "sources": sources,
            }
            rows.append({"index": i, "payload": json.dumps(payload)})
        out: dict[int, dict[str, Any]] = {}
        if not rows:
            return out
        ds = ray.data.from_items(rows, override_num_blocks=_n_blocks(len(rows), p.writer_workers))
        batch = max(1, min(64, p.chunk_size))
        ds = ds.map_batches(
            finalize_items,
            fn_kwargs={"ctx": ctx},
            compute=TaskPoolStrategy(size=_writers(p.writer_workers, len(rows), batch)),
            num_cpus=0.5,
            batch_size=batch,
            batch_format="numpy",
        )
        with _progress(len(rows), "write", p.show_progress) as bar:
            for batch in ds.iter_batches(batch_size=None, batch_format="numpy"):
                for idx, status, man in zip(
                    batch["index"], batch["status"], batch["manifest"], strict=True
                ):
                    i = int(idx)
                    m = json.loads(man)
                    if status == "write_failed":
                        if not p.continue_on_error:
                            raise self._stopped(i, "write", str(m["error"]))
                        m = {
                            "created_at": utc_ts(),
                            "point_index": i,
                            "status": "failed",
                            "stage": "write",
                            "error": m["error"],
                            "backend": p.backend,
                            "device": self.device,
                            "models": [],
                            "spatial": jsonable(p.spatials[i]),
                            "temporal": jsonable(p.temporal_of(i)),
                            "output": jsonable(p.output),
                        }
                    out[i] = m
                self.state.append(item_records(p, batch["index"], batch["status"], out))
                bar.update(len(batch["index"]))
        return out

    # -- main ----------------------------------------------------------------------------
    def run(self) -> list[dict[str, Any]] | dict[str, Any]:
        p = self.plan
        if not self.state.locked:
            self.state.acquire()
        try:
            if not p.resume:
                self.state.reset()
            if p.layout == "combined" and p.resume:
                done = self._combined_complete()
                if done is not None:
                    log.info("resume: %s is complete for this request; nothing to do", p.out_path)
                    return done
            self._load_log() if p.resume else None
            skipped: dict[int, dict[str, Any]] = {}
            if p.layout == "per_item" and p.resume:
                for i in range(p.n_items):
                    man = self._item_complete(i)
                    if man is not None:
                        skipped[i] = man
            todo_items = [i for i in range(p.n_items) if i not in skipped]
            self.state.write_run(self._run_info("running", len(skipped)))
            log.info(
                "export: %d items (%d already complete), %d model(s), %d fetch group(s)",
                p.n_items,
                len(skipped),
                len(p.models),
                len(p.groups),
            )
            try:
                self._stages(todo_items)
            except ExportStopped:
                if p.layout == "per_item":  # keep what finished (contract §2.14)
                    done = self._finished(todo_items)
                    if done:
                        self._finalize_per_item(done)
                        log.info("stopped: wrote the %d places that had finished", len(done))
                self.state.write_run(self._run_info("stopped", len(skipped)))
                raise
            t0 = time.perf_counter()
            if p.layout == "per_item":
                written = self._finalize_per_item(todo_items)
                result: Any = [skipped.get(i) or written[i] for i in range(p.n_items)]
                statuses = [r.get("status") for r in result]
            else:
                ctx = self._ctx()
                result = with_retries(
                    lambda: write_combined(
                        ctx,
                        p.out_path,
                        spatials=[jsonable(s) for s in p.spatials],
                        names=p.names,
                        centers=[s.center() for s in p.spatials],
                        patch_src=self.patch_src,
                        embed_src=self.embed_src,
                        fingerprint=p.run_fingerprint(),
                        temporals=[jsonable(p.temporal_of(i)) for i in range(p.n_items)]
                        if p.temporals is not None
                        else None,
                    ),
                    p.max_retries,
                    p.retry_backoff_s,
                )
                from rs_embed_ray.io.atomic import write_text

                write_text(self.state.folder / "final.json", json.dumps(result, indent=2))
                statuses = [result["status"]]
            log.info("write: %d items in %.1fs", len(todo_items), time.perf_counter() - t0)
            all_ok = all(s == "ok" for s in statuses)
            if all_ok:
                self.state.drop_cache()
            self.state.write_run(self._run_info("ok" if all_ok else "partial", len(skipped)))
            return result
        except BaseException:  # run.json must not keep saying "running"
            with contextlib.suppress(Exception):
                self.state.write_run(self._run_info("failed", 0))
            raise
        finally:
            self.state.release()

    def _stages(self, todo_items: list[int]) -> None:
        """Fetch every group, then embed with every model (one dataset per model)."""
        p = self.plan
        for g in p.groups:
            members = [p.model(k) for k in g.members]
            need = [
                i
                for i in todo_items
                if i not in self.patch_src[g.key] or self.patch_src[g.key][i]["status"] != "ok"
            ]
            if not p.save_inputs:
                need = [
                    i
                    for i in need
                    if p.save_embeddings
                    and any(self.embed_src[m.key].get(i, {}).get("status") != "ok" for m in members)
                ]
            if need:
                t0 = time.perf_counter()
                first = members[0] if p.save_embeddings else None
                self._fetch(g, need, first)
                log.info("fetch[%s]: %d items in %.1fs", g.key, len(need), time.perf_counter() - t0)
        if p.save_embeddings:
            for m in p.models:
                need = [
                    i for i in todo_items if self.embed_src[m.key].get(i, {}).get("status") != "ok"
                ]
                if need:
                    t0 = time.perf_counter()
                    self._infer(m, need)
                    log.info(
                        "infer[%s]: %d items in %.1fs",
                        m.name,
                        len(need),
                        time.perf_counter() - t0,
                    )

    def _run_info(self, status: str, skipped: int) -> dict[str, Any]:
        p = self.plan
        return {
            "status": status,
            "updated_at": utc_ts(),
            "layout": p.layout,
            "format": p.format,
            "out": str(p.out_path),
            "n_items": p.n_items,
            "resumed_complete_items": skipped,
            "models": [m.name for m in p.models],
            "backend": p.backend,
            "device": self.device,
            "counts": dict(self.counts),
            "spatial_batching": bool(p.extra.get("spatial_batching", False)),
            "package_version": package_version(),
        }


ITEM_KEY = "file"


def item_records(
    plan: ExportPlan, indices: Any, statuses: Any, manifests: dict[int, dict[str, Any]]
) -> list[Record]:
    """Log records of written ok per-item files: what resume checks when there is no sidecar."""
    recs = []
    for idx, status in zip(indices, statuses, strict=True):
        i = int(idx)
        man = manifests[i]
        if status == "write_failed" or man.get("status") != "ok":
            continue  # only a complete, ok file may be skipped on resume
        arrays: dict[str, Any] = {}
        for e in man.get("models", []):
            for k in ("input", "embedding"):
                ref = e.get(k)
                if isinstance(ref, dict) and "sha1" in ref and not ref.get("dedup_reused"):
                    arrays[ref["npz_key"]] = {"shape": ref["shape"], "sha1": ref["sha1"]}
        recs.append(
            Record(
                kind="item",
                key=ITEM_KEY,
                index=i,
                status="ok",
                fp=plan.item_fingerprint(i),
                arrays=arrays,
            )
        )
    return recs


def run_plan(plan: ExportPlan) -> list[dict[str, Any]] | dict[str, Any]:
    state = RunState(plan.state_dir)
    state.acquire()  # a second run on this output is refused at once, before Ray starts
    try:
        ensure_ray(plan.extra.get("ray_address"))
        _configure_data_context()
        runner = Runner(plan, state)
    except BaseException:
        state.release()
        raise
    try:
        return runner.run()
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)  # the original exception, with its own message
        if isinstance(cause, RSEmbedRayError):  # OutputWriteError, ProviderError, ModelError
            raise cause from None
        raise
    except OSError as exc:  # the driver's own writes: the combined file, final.json
        if is_storage_error(exc):
            raise output_write_error(exc, plan.out_path) from exc
        raise


__all__ = ["run_plan", "ensure_ray", "StageFailed"]
