"""Oracle: spectral_stats against a plain numpy reading of its documented definition.

The definition (module docstring): reflectance = clip(DN, 0, 10000) / 10000 (a time series
is first averaged over frames, NaN-aware); pooled = per band mean, std, and the 10/50/90th
percentiles (linear interpolation), concatenated feature-major (5 x 4 = 20-D); grid = per
band means over a 4 x 4 split of the rows and columns, the first ``n % 4`` parts one pixel
larger. Written here pixel by pixel from that text, in float64, with Python's ``statistics``
for the percentiles, not by calling the model's helpers.
"""

from __future__ import annotations

import itertools
import math
import statistics

import numpy as np
import pytest

from tests.oracle._helpers_b import assert_close, embed_both

pytestmark = pytest.mark.oracle


def split_bounds(n: int, parts: int = 4) -> list[tuple[int, int]]:
    sizes = [n // parts + (1 if i < n % parts else 0) for i in range(parts)]
    edges = [0]
    for s in sizes:
        edges.append(edges[-1] + s)
    return list(itertools.pairwise(edges))


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), from the sorted values."""
    v = sorted(values)
    pos = (len(v) - 1) * q / 100.0
    lo, hi = math.floor(pos), math.ceil(pos)
    return v[lo] + (v[hi] - v[lo]) * (pos - lo)


def oracle(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = x.astype(np.float64)
    if a.ndim == 4:
        a = np.nanmean(a, axis=0)
    refl = np.clip(a, 0, 10000) / 10000.0
    c, h, w = refl.shape
    feats: list[list[float]] = [[], [], [], [], []]
    for b in range(c):
        vals = [float(v) for v in refl[b].ravel() if not math.isnan(v)]
        feats[0].append(statistics.fmean(vals))
        feats[1].append(statistics.pstdev(vals))
        for k, q in enumerate((10, 50, 90)):
            feats[2 + k].append(percentile(vals, q))
    pooled = np.array([v for f in feats for v in f])
    grid = np.zeros((c, 4, 4))
    for i, (r0, r1) in enumerate(split_bounds(h)):
        for j, (c0, c1) in enumerate(split_bounds(w)):
            for b in range(c):
                block = [float(v) for v in refl[b, r0:r1, c0:c1].ravel() if not math.isnan(v)]
                grid[b, i, j] = statistics.fmean(block)
    return pooled, grid


@pytest.fixture(scope="module")
def model():
    from rs_embed_ray.models.registry import load_embedder

    return load_embedder("spectral_stats")


@pytest.mark.filterwarnings("ignore:Mean of empty slice")  # the all-NaN pixel of a series
@pytest.mark.parametrize("shape", [(4, 23, 30), (3, 4, 17, 9)])
def test_matches_numpy_definition(model, shape):
    rng = np.random.default_rng(sum(shape))
    x = rng.uniform(-500, 12000, size=shape).astype(np.float32)
    x[..., 2, 3] = np.nan  # one missing pixel (every band, every frame)
    pooled, grid = embed_both(model, [x])
    want_pooled, want_grid = oracle(x)
    assert pooled[0].shape == (20,) and grid[0].shape == (4, 4, 4)
    assert_close(pooled[0], want_pooled, f"spectral_stats pooled {shape}", atol=1e-6)
    assert_close(grid[0], want_grid, f"spectral_stats grid {shape}", atol=1e-6)
