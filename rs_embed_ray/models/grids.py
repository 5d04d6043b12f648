"""Grids -> Embeddings: the ROI crop-back, pooling and output meta every model repeats.

Why a module: each model ends with the same steps on a (D, h, w) grid (patch tokens or
product pixels): crop it back to the fetch-square ROI window (rounded outward), pool it to
a vector or keep it as a grid, and record what was done in the meta. Numpy only (no
torch), so the precomputed products share it with the networks.
"""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from rs_embed_ray.models.base import Embedding
from rs_embed_ray.models.preprocess import (
    RoiWindow,
    compose_window,
    roi_is_full,
    roi_token_box,
    roi_window_from_meta,
)


def hw_list(x: Any) -> list[int]:
    """``[H, W]`` of the last two axes of an input or grid, as JSON-able ints."""
    a = np.asarray(x)
    return [int(a.shape[-2]), int(a.shape[-1])]


def crop_to_roi(
    g: np.ndarray, win: RoiWindow | None, meta: dict[str, Any], *, box_key: str | None = None
) -> np.ndarray:
    """Crop the last two axes of ``g`` to the fetch-square window ``win`` (rounded outward)
    and record it in ``meta`` (``roi_cropped``, ``roi_window_geo``, and the index box under
    ``box_key`` when given); ``g`` is returned as is when ``win`` is None."""
    if win is None:
        return g
    y0, y1, x0, x1 = roi_token_box(win, grid_h=g.shape[-2], grid_w=g.shape[-1])
    meta["roi_cropped"] = True
    meta["roi_window_geo"] = list(win)
    if box_key is not None:
        meta[box_key] = [y0, y1, x0, x1]
    return g[..., y0:y1, x0:x1]


def crop_padded(
    g: np.ndarray, pad_win: RoiWindow, fetch_meta: dict[str, Any] | None
) -> tuple[np.ndarray, RoiWindow | None]:
    """Crop the grid of a square-padded input back to its real area, and further to the
    fetch meta's ROI window; returns (grid, window in model-input fractions or None when
    nothing was cut)."""
    win = compose_window(pad_win, roi_window_from_meta(fetch_meta))
    if roi_is_full(win):
        return g, None
    y0, y1, x0, x1 = roi_token_box(win, grid_h=g.shape[-2], grid_w=g.shape[-1])
    return g[..., y0:y1, x0:x1], win


def pool(g: np.ndarray, pooling: str, axis: tuple[int, ...] = (1, 2)) -> np.ndarray:
    """Max over ``axis`` for ``pooling="max"``, else the mean."""
    return g.max(axis=axis) if pooling == "max" else g.mean(axis=axis)


def nan_pool(a: np.ndarray, pooling: str) -> np.ndarray:
    """(C, h, w) -> (C,): ``nanmax`` for ``pooling="max"``, else a float64 ``nanmean``;
    an all-NaN band gives NaN without a warning."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        if pooling == "max":
            return np.nanmax(a, axis=(1, 2))
        return np.nanmean(a, axis=(1, 2), dtype=np.float64)


def pooled_embedding(vec: np.ndarray, meta: dict[str, Any]) -> Embedding:
    """A pooled (D,) vector as a contiguous float32 Embedding."""
    return Embedding(data=np.ascontiguousarray(vec, dtype=np.float32), meta=meta)


def grid_embedding(g: np.ndarray, meta: dict[str, Any], grid_type: str) -> Embedding:
    """A (D, h, w) grid as a contiguous float32 Embedding; records ``pooling="none"``,
    ``grid_type`` and ``grid_hw``."""
    meta["pooling"] = "none"
    meta["grid_type"] = grid_type
    meta["grid_hw"] = [int(g.shape[-2]), int(g.shape[-1])]
    return Embedding(data=np.ascontiguousarray(g, dtype=np.float32), meta=meta)


__all__ = [
    "crop_padded",
    "crop_to_roi",
    "grid_embedding",
    "hw_list",
    "nan_pool",
    "pool",
    "pooled_embedding",
]
