"""A random-valued FoMo-Net_1 checkpoint in the published file format, for tests.

FoMo-Bench publishes ``fomo_single_embedding_layer_weights.pt``: ``torch.save`` of the plain
``state_dict`` of ``MultiSpectralViT`` (64 px, patch 16, dim 768, depth 12, 12 heads, mlp
2048, 37 modality channels, 1000-class ``mlp_head``), which the official example loads with
``load_state_dict(torch.load(path))``. The values come from :func:`fomo_values`, a rule that
needs only numpy and the key names and shapes, so that ``scripts/fomo_golden.py`` fills the
official model (rs-embed's vendored copy) with the very same numbers.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

# LayerNorm weights in the published names (patch-embedding norms, attention and
# feed-forward pre-norms, the final norm): 1 + noise, so that the network stays well-scaled
_LN_WEIGHT = re.compile(
    r"^(to_patch_embedding\.[13]|transformer\.layers\.\d+\.0\.norm|"
    r"transformer\.layers\.\d+\.1\.net\.0|transformer\.norm)\.weight$"
)
# the learned tables the official init draws from randn: unit scale
_TABLES = ("pos_embedding", "spectral_embedding", "cls_token")
HEAD_SHAPES = {"mlp_head.weight": (1000, 768), "mlp_head.bias": (1000,)}


def fomo_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every key, in sorted key order (numpy ``RandomState``):
    LayerNorm weights ``1 + 0.02 N``, the position/spectral/CLS tables ``N``, everything
    else ``0.02 N``."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        scale = 1.0 if k in _TABLES else 0.02
        v = (scale * rs.standard_normal(shapes[k])).astype(np.float32)
        if _LN_WEIGHT.match(k):
            v += np.float32(1.0)
        out[k] = v
    return out


def write_fomo_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    extra: dict[str, object] | None = None,
    filename: str | None = None,
) -> Path:
    """Write ``fomo_single_embedding_layer_weights.pt`` (the published format, with the
    classifier ``mlp_head``) into ``directory`` and return its path; ``extra`` adds entries
    as given (e.g. a stray key the strict loader must name)."""
    import torch

    from rs_embed_ray.models.fomo import WEIGHTS_FILENAME, build_fomo

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    shapes = {k: tuple(v.shape) for k, v in build_fomo().state_dict().items()}
    shapes.update(HEAD_SHAPES)
    state = {k: torch.from_numpy(v) for k, v in fomo_values(shapes, seed).items()}
    state.update(extra or {})  # type: ignore[arg-type]
    path = out / (filename or WEIGHTS_FILENAME)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)
    return path


__all__ = ["HEAD_SHAPES", "fomo_values", "write_fomo_checkpoint"]
