"""A random-valued AgriFM checkpoint in the published file format, for tests.

``AgriFM.pth`` is a ``torch.save`` of ``{"state_dict": ...}`` holding the S2 stem as
``S2_patch_emd.*`` and the Video-Swin ``backbone.*`` (88M parameters, about 350 MB in
float32; the reference renames ``S2_patch_emd`` to ``patch_emd`` on load). The published file
is unreachable offline; the reference's loader also renames ``HLSL30_patch_emd`` /
``Modis_patch_emd`` for 6- and 7-channel stems, so with ``other_stems=True`` those stems
(``Conv3d(6|7, 128, (4, 2, 2))``) are written too, as the multi-sensor file would hold them.

The values come from :func:`agrifm_values`, a rule that needs only numpy and the key names
and shapes, so that ``scripts/agrifm_golden.py`` can fill the official model (rs-embed's
vendored copy) with the very same numbers. The architecture is the published one (the strict
load checks every shape; no smaller stand-in).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

STD = 0.02
INDEX_KEY = "relative_position_index"
OTHER_STEM_CHANNELS = {"HLSL30_patch_emd": 6, "Modis_patch_emd": 7}


def agrifm_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every key except the ``relative_position_index`` buffers,
    in sorted key order (numpy ``RandomState``): 1-D ``.weight`` tensors (the norms)
    ``1 + 0.02 N``, everything else ``0.02 N``."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        if k.endswith(INDEX_KEY):
            continue
        shape = tuple(shapes[k])
        v = rs.standard_normal(shape).astype(np.float32) * np.float32(STD)
        if k.endswith(".weight") and len(shape) == 1:
            v = v + np.float32(1.0)
        out[k] = np.asarray(v, dtype=np.float32)
    return out


def other_stem_shapes(embed_dim: int = 128) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the other sensors' stems (the reference's revise_keys names)."""
    out: dict[str, tuple[int, ...]] = {}
    for name, c in OTHER_STEM_CHANNELS.items():
        out[f"{name}.proj.weight"] = (embed_dim, c, 4, 2, 2)
        out[f"{name}.proj.bias"] = (embed_dim,)
    return out


def agrifm_state(seed: int = 0, *, other_stems: bool = True) -> dict[str, Any]:
    """The published-layout state dict (torch tensors): ``S2_patch_emd.*``, ``backbone.*``
    (index buffers as the model builds them) and, optionally, the other stems."""
    import torch

    from rs_embed_ray.models.agrifm import build_agrifm

    own = build_agrifm().state_dict()
    shapes = {k: tuple(v.shape) for k, v in own.items()}
    if other_stems:
        shapes.update(other_stem_shapes())
    vals = agrifm_values(shapes, seed)
    state: dict[str, Any] = {}
    for k in sorted(shapes):
        v = own[k].clone() if k.endswith(INDEX_KEY) else torch.from_numpy(vals[k])
        name = "S2_patch_emd." + k[len("patch_emd.") :] if k.startswith("patch_emd.") else k
        state[name] = v
    return state


def write_agrifm_checkpoint(path: str | Path, *, seed: int = 0, other_stems: bool = True) -> Path:
    """Write ``{"state_dict": ...}`` (the published ``AgriFM.pth`` layout) to ``path``."""
    import torch

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    torch.save({"state_dict": agrifm_state(seed, other_stems=other_stems)}, tmp)
    tmp.replace(out)
    return out


__all__ = ["agrifm_state", "agrifm_values", "other_stem_shapes", "write_agrifm_checkpoint"]
