"""Portable pseudo-random tensors for golden tests against code that cannot be installed.

A golden file records what an official implementation computed on a checkpoint and an input;
the test rebuilds the same checkpoint and input here and runs ours. Values come from a
closed formula (a sine of the element index, per-key phase) instead of a random generator,
so they are the same on every platform and numpy/torch version, and the golden file only
needs the key names and shapes, not the 100+ M values.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

# keys whose tensor is a LayerNorm gain: 1 + small values, as a trained model has
_GAIN_SUFFIXES = ("norm1.weight", "norm2.weight", "norm.weight", "norm_input.weight")


def formula_values(shape: Sequence[int], index: int, scale: float, offset: float = 0.0) -> Any:
    """``offset + scale * sin(0.7071 * n + 1.618 * index + 0.1 * n**2 mod 2pi)`` over the
    flat element index ``n``, float32 of ``shape`` (values in ``offset +- scale``)."""
    n = np.arange(int(np.prod(shape, dtype=np.int64)), dtype=np.float64)
    phase = np.mod(0.1 * n * n, 2.0 * np.pi)
    v = offset + scale * np.sin(0.70710678 * n + 1.6180339 * index + phase)
    return v.astype(np.float32).reshape(tuple(int(s) for s in shape))


def golden_state_dict(layout: Sequence[tuple[str, Sequence[int]]], scale: float = 0.02) -> Any:
    """``{key: tensor}`` for a ``[(key, shape), ...]`` layout: LayerNorm gains
    ``1 +- 0.1``, everything else ``+- scale``; key ``i`` gets phase ``i``."""
    import torch

    sd: dict[str, Any] = {}
    for i, (key, shape) in enumerate(layout):
        gain = key.endswith(_GAIN_SUFFIXES)
        arr = formula_values(shape, i, 0.1 if gain else scale, 1.0 if gain else 0.0)
        sd[key] = torch.from_numpy(arr)
    return sd


def golden_image(channels: int, size: int, index: int) -> np.ndarray:
    """A (channels, size, size) float32 image in [0, 1] with spatial structure and noise."""
    yy, xx = np.meshgrid(np.linspace(0, 1, size), np.linspace(0, 1, size), indexing="ij")
    out = np.empty((channels, size, size), dtype=np.float32)
    for c in range(channels):
        smooth = 0.5 + 0.3 * np.sin(2.0 * np.pi * ((c + 1) * xx + (index + 1) * yy))
        noise = 0.15 * formula_values((size, size), 1000 * index + c, 1.0)
        out[c] = np.clip(smooth + noise, 0.0, 1.0)
    return out


__all__ = ["formula_values", "golden_image", "golden_state_dict"]
