"""A random-valued AnySat base checkpoint in the published file format, for tests.

``g-astruc/AnySat`` ``models/AnySat.pth`` is a ``torch.save`` of ``{"state_dict": ...}``
holding the whole ``AnyModule`` (every modality's projector, the spatial encoder and the
blocks; 126M parameters, about 500 MB in float32). The values come from
:func:`anysat_values`, a rule that needs only numpy and the key names and shapes, so that
``scripts/anysat_golden.py`` can fill the official model (rs-embed's vendored copy) with the
very same numbers. The architecture is the published base one (no smaller stand-in exists:
the strict load checks every shape).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

STD = 0.02


def anysat_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every key, in sorted key order (numpy ``RandomState``):
    1-D ``.weight`` tensors (the norms) ``1 + 0.02 N``, everything else ``0.02 N``."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        shape = tuple(shapes[k])
        v = rs.standard_normal(shape).astype(np.float32) * np.float32(STD)
        if k.endswith(".weight") and len(shape) == 1:
            v = v + np.float32(1.0)
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def anysat_shapes() -> dict[str, tuple[int, ...]]:
    """Key -> shape of the published checkpoint: this package's S2 path plus the other
    modalities' projectors."""
    from rs_embed_ray.models.anysat import build_anysat_encoder, other_projector_shapes

    sd = build_anysat_encoder().state_dict()
    return {**{k: tuple(v.shape) for k, v in sd.items()}, **other_projector_shapes()}


def write_anysat_checkpoint(path: str | Path, *, seed: int = 0) -> Path:
    """Write ``{"state_dict": ...}`` (the published ``AnySat.pth`` layout) to ``path``."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    vals = anysat_values(anysat_shapes(), seed)
    state = {k: torch.from_numpy(v) for k, v in vals.items()}
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"state_dict": state}, tmp)
    tmp.replace(out)
    return out


__all__ = ["anysat_shapes", "anysat_values", "write_anysat_checkpoint"]
