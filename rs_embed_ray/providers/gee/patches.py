"""From moved pixels to the Patch ``fetch`` returns: band order, fill/NaN cleaning, the S2
clip of time series, and the meta (collection, window, frames, request counts). Pure numpy."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np

from rs_embed_ray.providers.base import Patch
from rs_embed_ray.providers.gee.job import Job, Place
from rs_embed_ray.sensors import GSE_FILL, S1_DB, S1_FLOAT, S2_DN_MAX, is_s2

log = logging.getLogger(__name__)


def _s1_meta(job: Job, k: int) -> tuple[str, dict[str, Any]]:
    """The S1 collection used and what the IW / orbit filters did."""
    sensor = job.sensor
    cid = S1_FLOAT if sensor.use_float_linear else S1_DB
    relaxed = job.variants[k] == "relaxed"
    if relaxed:
        log.info("S1: no IW scenes in the window, relaxed the IW filter")
    return cid, {
        "s1_iw_requested": sensor.s1_require_iw,
        "s1_iw_applied": sensor.s1_require_iw and not relaxed,
        "s1_iw_relaxed_on_empty": relaxed,
        "s1_relax_iw_on_empty": sensor.s1_relax_iw_on_empty,
        "s1_orbit_requested": sensor.orbit,
        "s1_orbit_applied": (sensor.orbit or "").upper() or None,
        "s1_collection_used": cid,
    }


def _clean(job: Job, data: np.ndarray, collection: str, meta: dict[str, Any]) -> None:
    """GSE fill -> NaN; else non-finite -> fill value (and S2 series clipped), in place."""
    if job.kind == "gse":
        data[data == GSE_FILL] = np.nan
        meta["nodata_fraction"] = float(np.isnan(data).mean()) if data.size else 0.0
        return
    bad = ~np.isfinite(data)
    if bad.any():
        data[bad] = np.float32(job.sensor.fill_value)
    if job.bins and is_s2(collection):
        np.clip(data, 0.0, S2_DN_MAX, out=data)


def _series_meta(job: Job, bin_counts: list[int]) -> dict[str, Any]:
    n_back = sum(1 for n in bin_counts if n == 0)
    if n_back:
        log.info("%d of %d frames back-filled with the window composite", n_back, len(job.bins))
    return {
        "n_frames_requested": int(job.n_frames or 0),
        "n_backfilled_frames": n_back,
        "n_distinct_frames": len(job.bins) - n_back + (1 if n_back else 0),
        "frames": [
            {"start": s, "end": e, "empty": n == 0}
            for (s, e), n in zip(job.bins, bin_counts, strict=True)
        ],
    }


def finish(
    job: Job,
    place: Place,
    data: np.ndarray,
    k: int,
    total: int,
    bin_counts: list[int],
    *,
    requests: int,
    pixel_requests: int,
    retries: int,
) -> Patch:
    """(T, Cu, H, W) on the place's grid -> the Patch ``fetch`` returns."""
    meta: dict[str, Any] = {"provider": "gee", "grid": place.grid.to_meta()}
    if place.win != (0.0, 1.0, 0.0, 1.0):
        meta["roi_window_geo"] = list(place.win)
    collection = job.sensor.collection
    if job.kind == "s1":
        collection, s1 = _s1_meta(job, k)
        meta.update(s1)
    meta.update(
        {
            "collection": collection,
            "window": [job.start, job.end],
            "n_images": total,
            "bands": list(job.uniq),
        }
    )
    # (T, Cu, H, W) -> sensor band order (fancy indexing copies: never a view of a union)
    data = data[:, [job.uniq.index(b) for b in job.resolved]]
    counts = {"requests": requests, "pixel_requests": pixel_requests, "retries": retries}
    if job.binned:
        return finish_binned(job, data, bin_counts, meta, collection, counts)
    _clean(job, data, collection, meta)
    if job.bins:
        meta.update(_series_meta(job, bin_counts))
    else:
        data = data[0]
    meta.update(counts)
    return Patch(data=np.ascontiguousarray(data, dtype=np.float32), meta=meta)


def finish_binned(
    job: Job,
    data: np.ndarray,
    bin_counts: list[int],
    meta: dict[str, Any],
    collection: str,
    counts: dict[str, int],
) -> Patch:
    """Explicit bins: empty bins become all-NaN frames, the rest are cleaned like a series."""
    sensor = job.sensor
    empty = [n == 0 for n in bin_counts]
    for t, is_empty in enumerate(empty):
        frame = data[t]
        if is_empty:
            frame[...] = np.nan
            continue
        if job.kind == "gse":
            frame[frame == GSE_FILL] = np.nan
            continue
        bad = ~np.isfinite(frame)
        if bad.any():
            frame[bad] = np.float32(sensor.fill_value)
        if is_s2(collection):
            np.clip(frame, 0.0, S2_DN_MAX, out=frame)
    n_empty = sum(empty)
    meta.update(
        {
            "frame_bins": job.frame_bins,
            "n_frames_max": job.n_frames,
            "n_frames": len(job.bins),
            "n_empty": n_empty,
            "temporal_sampling": "equal_divided" if job.stretched else "fixed_stride",
            "frames": [
                {"start": s, "end": e, "empty": n == 0, "n_images": int(n)}
                for (s, e), n in zip(job.bins, bin_counts, strict=True)
            ],
            **counts,
        }
    )
    if n_empty:
        log.info("%d of %d bins have no image: NaN frames", n_empty, len(job.bins))
    return Patch(data=np.ascontiguousarray(data, dtype=np.float32), meta=meta)
