"""A random-valued TerraMind v1 checkpoint in the published layout (for tests and benches).

Kept apart from ``checkpoints.py`` so that other models' writers and this one do not collide.
"""

from __future__ import annotations

import logging
from pathlib import Path

log = logging.getLogger(__name__)

# the other raw modalities' patch embeddings the published encoder carries (name, channels)
OTHER_RAW_MODALITIES = (
    ("untok_sen2l1c@224", 13),
    ("untok_sen1grd@224", 2),
    ("untok_sen1rtc@224", 2),
    ("untok_dem@224", 1),
)


def write_terramind_checkpoint(
    directory: str | Path, *, variant: str = "small", seed: int = 0
) -> Path:
    """Write ``TerraMind_v1_<variant>.pt`` (bare ``torch.save`` state dict); return its path.

    Mirrors the file terratorch loads for ``terramind_v1_<variant>``: the encoder's keys at
    the top level -- ``encoder_embeddings.untok_sen2l2a@224.{proj.weight, mod_emb, pos_emb}``,
    ``encoder.<i>.*`` (LayerNorm biases stored as the zero buffers), ``encoder_norm.*`` -- plus
    the patch embeddings of the other raw modalities (S2L1C, S1GRD, S1RTC, DEM), as the
    anchor's ``make_ckpt.py`` writes it through terratorch. Whether the real file also holds
    the decoder and tokenised-modality embeddings could not be checked offline; the loader
    drops those by name. Seeded N(0, 0.02) values (norm scales around 1); about 87 MB (small).
    """
    import torch

    from rs_embed_ray.models.terramind import MODEL_KEYS, VARIANTS, build_terramind, sincos_pos_emb

    dim = VARIANTS[variant][0]
    gen = torch.Generator().manual_seed(int(seed))
    with torch.device("meta"):
        model = build_terramind(variant)
    own = dict(model.state_dict())
    params = {n for n, _ in model.named_parameters()}
    real = sincos_pos_emb(14, dim)
    sd: dict[str, torch.Tensor] = {}
    for k, v in own.items():
        shape = tuple(v.shape)
        if k.endswith("pos_emb"):
            sd[k] = real.clone()
        elif k not in params:  # the zero LayerNorm biases
            sd[k] = torch.zeros(shape)
        elif k.endswith(("norm1.weight", "norm2.weight", "encoder_norm.weight")):
            sd[k] = 1.0 + 0.02 * torch.randn(shape, generator=gen)
        else:
            sd[k] = 0.02 * torch.randn(shape, generator=gen)
    for name, ch in OTHER_RAW_MODALITIES:
        pre = f"encoder_embeddings.{name}."
        sd[pre + "mod_emb"] = 0.02 * torch.randn((1, 1, dim), generator=gen)
        sd[pre + "pos_emb"] = real.clone()
        sd[pre + "proj.weight"] = 0.02 * torch.randn((dim, ch * 256), generator=gen)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / MODEL_KEYS[f"terramind_v1_{variant}"][1]
    torch.save(sd, path)
    log.info("wrote random-valued terramind checkpoint %s (seed=%s)", path, seed)
    return path


__all__ = ["OTHER_RAW_MODALITIES", "write_terramind_checkpoint"]
