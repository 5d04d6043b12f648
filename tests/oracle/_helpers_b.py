"""Shared helpers of the oracle tests (part B): seeded perturbation of an independent
implementation's freshly built network, our embedder's two outputs, and the tolerance.

An oracle test builds the checkpoint with the *independent* package's own classes (random
init under a fixed seed), shifts every constant-initialised tensor by seeded noise (a fresh
init leaves every LayerNorm at weight 1 / bias 0 and many biases at 0, which would hide a
swapped or dropped norm), saves it in the published file format, loads that file with our
code through the normal weights path, and compares the embeddings of the same input.
"""

from __future__ import annotations

from typing import Any

import numpy as np

ATOL = 1e-4  # issue 13: max abs difference allowed in float32, pooled and grid


def perturb_(module: Any, seed: int, scale: float = 0.02, skip: tuple[str, ...] = ()) -> Any:
    """Add seeded N(0, scale) noise, in place, to every float parameter and buffer of
    ``module`` that a fresh init left constant (LayerNorm weights of 1, zero biases, constant
    scales) and whose name contains none of ``skip`` (fixed tables the published code
    regenerates). Randomly initialised matrices are left as they are (cheap on a ViT-L).
    ``torch.manual_seed`` is not touched: a private generator draws. Returns ``module``."""
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        for name, t in [*module.named_parameters(), *module.named_buffers()]:
            if not t.is_floating_point() or any(s in name for s in skip):
                continue
            if bool((t == t.flatten()[0]).all()):
                t.add_(scale * torch.randn(t.shape, generator=gen, dtype=t.dtype))
    return module


def seeded_build(build: Any, seed: int) -> Any:
    """``build()`` with torch's global RNG seeded inside a fork (the caller's RNG is kept)."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        return build()


def embed_both(
    model: Any,
    inputs: list[np.ndarray],
    *,
    spatials: list[Any] | None = None,
    temporal: Any = None,
    metas: list[dict[str, Any]] | None = None,
) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Our model's pooled (mean) and grid outputs for ``inputs`` (two ``embed_batch`` calls)."""
    from rs_embed_ray.specs import OutputSpec

    kw = {
        "spatials": spatials or [None] * len(inputs),
        "temporal": temporal,
        "fetch_metas": metas or [{}] * len(inputs),
    }
    pooled = [e.data for e in model.embed_batch(inputs, output=OutputSpec.pooled(), **kw)]
    grid = [e.data for e in model.embed_batch(inputs, output=OutputSpec.grid(), **kw)]
    return pooled, grid


def max_abs(a: Any, b: Any) -> float:
    """Max abs difference of two same-shaped arrays (shapes asserted equal first)."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    assert a.shape == b.shape, f"shape {a.shape} != {b.shape}"
    return float(np.max(np.abs(a - b)))


def assert_close(ours: Any, theirs: Any, what: str, atol: float = ATOL) -> float:
    """Assert max abs <= ``atol`` (and that the oracle output is not trivially zero)."""
    theirs_a = np.asarray(theirs)
    assert np.isfinite(theirs_a).all(), f"{what}: oracle output has non-finite values"
    assert float(np.abs(theirs_a).max()) > 1e-3, f"{what}: oracle output is ~0 (degenerate)"
    d = max_abs(ours, theirs)
    print(f"ORACLE {what}: max abs difference {d:.3g}")  # the figure docs quote (pytest -s)
    assert d <= atol, f"{what}: max abs difference {d:.3g} > {atol:g}"
    return d


def tokens_to_grid_np(tokens: Any, side_h: int, side_w: int) -> np.ndarray:
    """(N, D) row-major patch tokens (torch or numpy) -> (D, side_h, side_w) float32."""
    t = np.asarray(tokens.detach().float().cpu().numpy() if hasattr(tokens, "detach") else tokens)
    return t.reshape(side_h, side_w, -1).transpose(2, 0, 1).astype(np.float32)
