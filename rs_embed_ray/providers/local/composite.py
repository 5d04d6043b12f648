"""Compositing a stack of scenes (S, C, H, W; NaN = no data): median or mosaic, missing data
to the sensor's fill value, the equal-bin time series (empty bins back-filled with the window
composite) and explicit bins (an empty bin all-NaN). Pure numpy."""

from __future__ import annotations

import logging
import warnings
from datetime import date
from typing import Any

import numpy as np

from rs_embed_ray.errors import NoImageryError, ProviderError
from rs_embed_ray.providers.base import Patch
from rs_embed_ray.providers.local.index import Scene
from rs_embed_ray.sensors import S2_DN_MAX, equal_day_bins, is_s2
from rs_embed_ray.specs import SensorSpec, fixed_day_bins

log = logging.getLogger(__name__)


def composite(stack: np.ndarray, method: str) -> np.ndarray:
    """Median (NaN-aware) or mosaic (latest valid pixel wins) over the scene axis."""
    if stack.shape[0] == 1:
        return stack[0].copy()
    if method == "mosaic":
        out = stack[0].copy()
        for s in stack[1:]:
            ok = np.isfinite(s)
            out[ok] = s[ok]
        return out
    if method != "median":
        raise ProviderError(f"unknown composite {method!r}; use 'median' or 'mosaic'.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels stay NaN
        return np.nanmedian(stack, axis=0).astype(np.float32)


def fill_missing(arr: np.ndarray, sensor: SensorSpec) -> np.ndarray:
    out = np.where(np.isfinite(arr), arr, np.float32(sensor.fill_value))
    return np.ascontiguousarray(out, dtype=np.float32)


def _in_bin(scenes: list[Scene], b0: date, b1: date) -> list[int]:
    return [i for i, s in enumerate(scenes) if s.date is None or b0 <= s.date < b1]


def equal_bins(
    place: str,
    scenes: list[Scene],
    stack: np.ndarray,
    whole: np.ndarray,
    sensor: SensorSpec,
    meta: dict[str, Any],
    window: tuple[date, date],
    n: int,
) -> Patch:
    """``n`` equal bins of the window; an empty bin repeats the whole-window composite."""
    frames, info = [], []
    for b0, b1 in equal_day_bins(window[0], window[1], n):
        idx = _in_bin(scenes, b0, b1)
        empty = not idx
        frames.append(whole if empty else composite(stack[idx], sensor.composite))
        info.append(
            {
                "start": b0.isoformat(),
                "end": b1.isoformat(),
                "scenes": [scenes[i].id for i in idx],
                "backfilled": empty,
            }
        )
    data = fill_missing(np.stack(frames), sensor)
    if is_s2(sensor.collection):
        np.clip(data, 0.0, S2_DN_MAX, out=data)  # as the EE provider's multi-frame path
    n_back = sum(f["backfilled"] for f in info)
    distinct: list[np.ndarray] = []
    for f in data:
        if not any(np.array_equal(f, g) for g in distinct):
            distinct.append(f)
    meta.update(
        frames=info,
        n_frames_requested=n,
        n_backfilled_frames=n_back,
        n_distinct_frames=len(distinct),
    )
    if n_back:
        log.debug(
            "%s: %d of %d frames had no scene and repeat the whole-window composite",
            place,
            n_back,
            n,
        )
    return Patch(data=data, meta=meta)


def explicit_bins(
    place: str,
    source: str,
    scenes: list[Scene],
    stack: np.ndarray,
    sensor: SensorSpec,
    meta: dict[str, Any],
    window: tuple[str, str],
    days: int,
    n_frames: int | None,
) -> Patch:
    """Explicit bins: each an independent composite of its scenes, an empty one all-NaN."""
    s_iso, e_iso = window
    bins, stretched = fixed_day_bins(s_iso, e_iso, days, int(n_frames) if n_frames else None)
    frames, info = [], []
    for b0, b1 in bins:
        idx = _in_bin(scenes, date.fromisoformat(b0), date.fromisoformat(b1))
        if idx:
            frame = fill_missing(composite(stack[idx], sensor.composite), sensor)
            if is_s2(sensor.collection):
                np.clip(frame, 0.0, S2_DN_MAX, out=frame)
        else:
            frame = np.full(stack.shape[1:], np.nan, dtype=np.float32)
        frames.append(frame)
        info.append(
            {
                "start": b0,
                "end": b1,
                "empty": not idx,
                "n_images": len(idx),
                "scenes": [scenes[i].id for i in idx],
            }
        )
    n_empty = sum(f["empty"] for f in info)
    if n_empty == len(info):  # unreachable while scenes are window-filtered; kept as a guard
        raise NoImageryError(
            f"No images found for {place} in any {days}-day bin of "
            f"[{s_iso}, {e_iso}) of local source {source!r}."
        )
    meta.update(
        frames=info,
        frame_bins=f"{days}d",
        n_frames_max=int(n_frames) if n_frames else None,
        n_frames=len(bins),
        n_empty=n_empty,
        temporal_sampling="equal_divided" if stretched else "fixed_stride",
    )
    if n_empty:
        log.debug("%s: %d of %d bins had no scene (NaN frames)", place, n_empty, len(bins))
    return Patch(data=np.ascontiguousarray(np.stack(frames), dtype=np.float32), meta=meta)
