"""FetchWorker: the callable class of the FETCH stage (a Ray Data actor, or threads of the
driver with the in-process executor) that fetches patches and writes them to shards.

One provider per actor (initialised once). Patches go straight to a shard file on the
output's storage, so only small status rows travel through the object store. A failing
place becomes a row with ``status="failed"`` and its error; it never fails the block.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from rs_embed_ray.errors import ModelError, NoImageryError
from rs_embed_ray.inspection import INSPECTION_META, inspect_input, inspection_record
from rs_embed_ray.io import shards, storage
from rs_embed_ray.io.atomic import storage_errors
from rs_embed_ray.io.manifest import array_sha1, error_text
from rs_embed_ray.options import FetchOptions, RetryOptions
from rs_embed_ray.pipeline import schema as col
from rs_embed_ray.providers import create_provider
from rs_embed_ray.specs import SensorSpec, spatial_from_dict, temporal_from_dict

log = logging.getLogger(__name__)


def current_node() -> str:
    """The Ray node this worker runs on (recorded in the log: where each step ran); "" in
    process (``inprocess``), where asking Ray would start it."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return ""
    try:
        return str(ray.get_runtime_context().get_node_id())
    except Exception:
        return ""


def with_retries(fn: Any, retries: int, backoff_s: float) -> Any:
    """Run ``fn`` up to ``retries + 1`` times, sleeping ``backoff_s * 2**k`` between tries."""
    attempt = 0
    while True:
        try:
            return fn()
        except Exception:
            if attempt >= retries:
                raise
            if backoff_s > 0:
                time.sleep(backoff_s * (2**attempt))
            attempt += 1


class FetchWorker:
    def __init__(
        self,
        *,
        backend: str,
        provider_options: dict[str, Any],
        sensor: dict[str, Any],
        n_frames: int | None,
        temporal: dict[str, Any] | None,
        shard_dir: str,
        options: FetchOptions,
        retry: RetryOptions,
        threads: int = 1,
        limiter_name: str | None = None,
        quota_share: dict[str, Any] | None = None,
        frame_bins: str | None = None,
        provider_target: str | None = None,
    ) -> None:
        opts = dict(provider_options)
        # explicit bins (plan.FetchGroup.frame_bins); passed only when set, so a provider
        # wrapper that predates the keyword still serves every other model
        self.bins_kw: dict[str, Any] = {"frame_bins": frame_bins} if frame_bins else {}
        # the runner passes these only to providers that use a request quota
        if limiter_name:
            from rs_embed_ray.pipeline.ee_quota import SHARED_NAMESPACE, limiter_for

            opts["limiter"] = limiter_for(limiter_name, namespace=SHARED_NAMESPACE)
        elif quota_share:
            # this actor's fixed share of the run's quota (runner._quota_kwargs)
            from rs_embed_ray.providers.ratelimit import LocalLimiter

            opts["limiter"] = LocalLimiter(quota_share["max_concurrent"], quota_share["qps"])
        # the target the driver resolved: a provider registered there is unknown here
        self.provider = create_provider(backend, target=provider_target, **opts)
        self.sensor = SensorSpec(**sensor)
        self.n_frames = n_frames
        self.temporal = temporal_from_dict(temporal)
        self.shard_dir = storage.as_path(shard_dir)
        self.retries = retry.max_retries
        self.backoff = retry.backoff_s
        self.fail_on_bad_input = options.fail_on_bad_input
        # one pool per actor, shared by the sizing.CALLS_PER_ACTOR batches that run at once: while
        # one batch waits on its last places, the next one's places keep every thread busy,
        # and the pool size stays the actor's cap on requests in flight
        self.threads = max(1, threads)
        self.pool = ThreadPoolExecutor(self.threads, thread_name_prefix="fetch")
        # opt-in: nearby places of a batch share one request (providers that batch places)
        self.batched = options.spatial_batching and self.provider.batches_places

    def _temporal(self, temporal_json: str | None) -> Any:
        """A row's own window (``schema.TEMPORAL``), else the run's."""
        if temporal_json is None:
            return self.temporal
        return temporal_from_dict(json.loads(temporal_json))

    def _one(self, spatial_json: str, temporal_json: str | None = None) -> Any:
        spatial = spatial_from_dict(json.loads(spatial_json))
        temporal = self._temporal(temporal_json)

        def call() -> Any:
            return self.provider.fetch(
                spatial, temporal, self.sensor, n_frames=self.n_frames, **self.bins_kw
            )

        return self._check(with_retries(call, self.retries, self.backoff))

    def _check(self, patch: Any) -> Any:
        """Shape and (optional) input checks of one fetched patch."""
        data = np.asarray(patch.data, dtype=np.float32)
        nb = len(self.sensor.bands)
        if data.ndim not in (3, 4) or data.shape[-3] != nb:
            raise ValueError(
                f"provider returned shape {data.shape}; expected (C,H,W) or (T,C,H,W) with C={nb}"
            )
        meta = dict(patch.meta or {})
        if self.fail_on_bad_input:
            report = inspect_input(data, self.sensor)
            if not report["ok"]:
                raise ModelError(f"Input inspection failed: {report['issues']}")
            # recorded as the stored input's ``inspection`` (contract §2.12, §2.17.2)
            meta[INSPECTION_META] = inspection_record(report, data, self.sensor)
        return data, meta

    def _many(self, spatials: list[str], temporal_json: str | None, safe: Any) -> list[Any]:
        """One ``fetch_many`` call for places of one window; places it could not serve are
        retried alone (a deterministic "no images" answer is not retried)."""
        specs = [spatial_from_dict(json.loads(sj)) for sj in spatials]
        try:
            got = self.provider.fetch_many(
                specs,
                self._temporal(temporal_json),
                self.sensor,
                n_frames=self.n_frames,
                threads=self.threads,
                **self.bins_kw,
            )
        except Exception as exc:  # the whole call failed: every place tries alone
            got = [exc] * len(specs)
        out: list[Any] = []
        for sj, res in zip(spatials, got, strict=True):
            if isinstance(res, Exception):
                if isinstance(res, NoImageryError):
                    out.append(res)
                else:
                    out.append(safe(sj, temporal_json))
                continue
            try:
                out.append(self._check(res))
            except Exception as exc:
                out.append(exc)
        return out

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        indices = [int(i) for i in batch[col.INDEX]]
        spatials = [str(s) for s in batch[col.SPATIAL]]
        tcol = batch.get(col.TEMPORAL)
        temporals = [str(t) for t in tcol] if tcol is not None else [None] * len(spatials)

        def safe(sj: str, tj: str | None) -> Any:
            try:
                return self._one(sj, tj)
            except Exception as exc:
                return exc

        if self.batched:
            results: list[Any] = [None] * len(spatials)
            for tj in dict.fromkeys(temporals):  # one fetch_many per window
                ks = [k for k, t in enumerate(temporals) if t == tj]
                got = self._many([spatials[k] for k in ks], tj, safe)
                for k, res in zip(ks, got, strict=True):
                    results[k] = res
        else:
            results = list(self.pool.map(safe, spatials, temporals))
        ok: dict[int, tuple[np.ndarray, dict[str, Any]]] = {}
        status, error, shape, sha = [], [], [], []
        for idx, res in zip(indices, results, strict=True):
            if isinstance(res, Exception):
                status.append(col.STATUS_FAILED)
                error.append(error_text(res))
                shape.append("")
                sha.append("")
                log.warning("fetch failed for item %d: %s", idx, error[-1])
            else:
                ok[idx] = res
                status.append(col.STATUS_OK)
                error.append("")
                shape.append(json.dumps(list(res[0].shape)))
                sha.append(array_sha1(res[0]))
        shard = ""
        if ok:
            path = self.shard_dir / f"{min(ok):09d}-{uuid.uuid4().hex[:12]}.npz"
            # a full or read-only disk stops the run (OutputWriteError): it is not the place's
            # fault, and every later place would fail the same way
            with storage_errors(path):
                # looked up at call time: a test provider may wrap it in its own process
                # (testing.faults' disk_full_after_shards)
                shards.write_shard(path, ok)
            shard = str(path)
        out = {
            col.INDEX: np.asarray(indices, dtype=np.int64),
            col.STATUS: np.asarray(status, dtype=object),
            col.ERROR: np.asarray(error, dtype=object),
            col.SHARD: np.asarray(
                [shard if s == col.STATUS_OK else "" for s in status], dtype=object
            ),
            col.SHAPE: np.asarray(shape, dtype=object),
            col.SHA1: np.asarray(sha, dtype=object),
            col.NODE: np.asarray([current_node()] * len(indices), dtype=object),
        }
        # other columns (the place, what to embed next) flow on to a chained model stage
        for k, v in batch.items():
            out.setdefault(k, v)
        return out
