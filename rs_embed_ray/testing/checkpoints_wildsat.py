"""A random-valued WildSAT vitb16 checkpoint in the published file format, for tests.

WildSAT's ``train.py`` saves ``{"epoch", "satellite_state_dict", "opt", ...}``: the satellite
model under DataParallel's ``module.`` prefix (``module.backbone.*``: torchvision
``vit_b_16`` with its 1000-way head; ``module.decoder.backbone{1,2,3}.0.weight``: the
``threelinearnobias`` branches, 1000 -> 256) and ``opt``, an ``argparse.Namespace`` (the
anchor's ``make_ckpt.py`` writes the same layout). The values come from
:func:`wildsat_values`, a rule that needs only numpy and the key names and shapes, so that
``scripts/wildsat_golden.py`` fills rs-embed's model with the very same numbers.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

FILENAME = "vitb16-imagenet-bnfc.pth"
FILENAMES = {v: f"{v}-imagenet-bnfc.pth" for v in ("vitb16", "resnet50", "swint")}
# train.py's options of the published vitb16 file (the ones a loader reads)
OPT = {
    "satellite_encoder": "vitb16",
    "satellite_head": "threelinearnobias",
    "common_embed_dim": 256,
    "num_inp_channels": 3,
}


def wildsat_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every key but the integer buffers (``num_batches_tracked``,
    Swin's ``relative_position_index``: kept as built), in sorted key order: LayerNorm and
    BatchNorm weights and BatchNorm running variances ``1 + 0.02 N``, everything else
    ``0.02 N`` (numpy ``RandomState``)."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        if k.endswith(("num_batches_tracked", "relative_position_index")):
            continue
        v = (0.02 * rs.standard_normal(shapes[k])).astype(np.float32)
        parent = k.rsplit(".", 2)[-2] if k.count(".") else ""
        stem = k.rsplit(".", 1)[0]
        norm = parent.startswith(("ln", "norm")) or f"{stem}.running_var" in shapes
        if (norm and k.endswith(".weight")) or k.endswith("running_var"):
            v += np.float32(1.0)
        out[k] = v
    return out


def satellite_state(sd: dict[str, object], seed: int) -> dict[str, object]:
    """``module.<key>`` -> tensor of :func:`wildsat_values` for a satellite model's keys."""
    import torch

    vals = wildsat_values({k: tuple(v.shape) for k, v in sd.items()}, seed)  # type: ignore[attr-defined]
    return {f"module.{k}": torch.from_numpy(vals[k]) if k in vals else v for k, v in sd.items()}


def write_wildsat_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    extra: dict[str, object] | None = None,
    variant: str = "vitb16",
) -> Path:
    """Write ``<variant>-imagenet-bnfc.pth`` (the published format) into ``directory`` and
    return its path; ``extra`` adds ``satellite_state_dict`` entries as given."""
    import torch

    from rs_embed_ray.models.wildsat import build_wildsat

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = satellite_state(build_wildsat(None, variant).state_dict(), seed)
    state.update(extra or {})
    opt = argparse.Namespace(**{**OPT, "satellite_encoder": variant})
    obj = {"epoch": 0, "satellite_state_dict": state, "opt": opt}
    path = out / FILENAMES[variant]
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)
    return path


__all__ = [
    "FILENAME",
    "FILENAMES",
    "OPT",
    "satellite_state",
    "wildsat_values",
    "write_wildsat_checkpoint",
]
