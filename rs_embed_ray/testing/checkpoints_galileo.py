"""A random-valued Galileo nano checkpoint in the published folder format, for tests.

``nasaharvest/galileo`` ``models/nano/`` holds ``config.json`` (a ``model`` section with the
encoder and decoder hyper-parameters) and ``encoder.pt`` (a plain ``torch.save`` of the
encoder state dict). The values come from :func:`galileo_values`, a rule that needs only
numpy and the key names and shapes, so that ``scripts/galileo_golden.py`` can fill the
official encoder (rs-embed's vendored copy) with the very same numbers.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

# the "model" section of the published models/nano/config.json
GALILEO_NANO_CONFIG: dict[str, Any] = {
    "model": {
        "encoder": {
            "embedding_size": 128,
            "depth": 4,
            "num_heads": 8,
            "mlp_ratio": 4,
            "max_sequence_length": 24,
            "freeze_projections": False,
            "drop_path": 0.1,
            "max_patch_size": 8,
        },
        "decoder": {
            "depth": 2,
            "num_heads": 8,
            "mlp_ratio": 4,
            "max_sequence_length": 24,
            "learnable_channel_embeddings": True,
            "max_patch_size": 8,
            "encoder_embedding_size": 128,
            "decoder_embedding_size": 128,
        },
    }
}
# fixed tables the file carries as built (the official frozen sin-cos / month tables)
FROZEN = ("pos_embed", "month_embed.weight")


def galileo_values(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, np.ndarray]:
    """Seeded float32 values for every non-frozen key, in sorted key order: LayerNorm
    weights ``1 + 0.05 N``, everything else ``0.05 N`` (numpy ``RandomState``)."""
    rs = np.random.RandomState(int(seed))
    out: dict[str, np.ndarray] = {}
    for k in sorted(shapes):
        if k in FROZEN:
            continue
        v = 0.05 * rs.standard_normal(shapes[k])
        if "norm" in k.rsplit(".", 2)[-2:][0] and k.endswith(".weight"):
            v = v + 1.0
        out[k] = v.astype(np.float32)
    return out


def write_galileo_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """Write ``config.json`` + ``encoder.pt`` (the published nano folder) into ``directory``;
    return the ``encoder.pt`` path. Built with this package's encoder, values from
    :func:`galileo_values`, frozen tables as built."""
    import torch

    from rs_embed_ray.models.galileo import build_galileo_encoder

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(GALILEO_NANO_CONFIG, indent=2))
    model = build_galileo_encoder()
    sd = model.state_dict()
    vals = galileo_values({k: tuple(v.shape) for k, v in sd.items()}, seed)
    state = {k: (torch.from_numpy(vals[k]) if k in vals else v.clone()) for k, v in sd.items()}
    path = out / "encoder.pt"
    torch.save(state, path)
    return path


__all__ = ["GALILEO_NANO_CONFIG", "galileo_values", "write_galileo_checkpoint"]
