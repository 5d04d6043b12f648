"""A Clay v1.5 checkpoint in the published Lightning layout, filled with seeded values.

``made-with-clay/Clay`` ``v1.5/clay-v1.5.ckpt`` is a Lightning checkpoint: ``state_dict``
holds the whole ``ClayMAEModule`` under ``model.`` (``encoder.*``, ``decoder.*``, the frozen
DINOv2 ``teacher.*`` and ``proj.*``), beside primitive-only bookkeeping (epoch, step,
hyper-parameters), so it loads with ``weights_only=True``. The file written here has every
encoder tensor with its real name and shape (the large encoder: 311 M values, 1.25 GB), and
a few decoder, teacher and projection tensors under their real names (the loader drops those
by prefix; the whole 1.3 GB teacher would only slow the tests down).
"""

from __future__ import annotations

from pathlib import Path

CLAY_FILE = "clay-v1.5.ckpt"


def clay_encoder_state_dict(*, size: str = "large", seed: int = 0) -> dict[str, object]:
    """The encoder's state dict with seeded uniform values: matrices U(+-1/sqrt(fan_in)) (the
    scale of torch's default init), LayerNorm weights 1 + U(+-0.05), every other tensor
    U(+-0.05), so no norm is exactly (1, 0) and no bias 0 (a dropped bias or norm shows).
    Uniform values straight into each tensor (no init pass) keep the 311 M values cheap."""
    import torch

    from rs_embed_ray.models.clay import build_clay_encoder

    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in build_clay_encoder(size).state_dict().items()}
    g = torch.Generator().manual_seed(int(seed))
    sd: dict[str, object] = {}
    for k, shape in shapes.items():
        t = torch.empty(shape)
        if len(shape) == 2 and "token" not in k:
            bound = 1.0 / float(shape[1]) ** 0.5
            t.uniform_(-bound, bound, generator=g)
        else:
            t.uniform_(-0.05, 0.05, generator=g)
            if len(shape) == 1 and k.endswith(".weight"):  # LayerNorm weights
                t += 1.0
        sd[k] = t
    return sd


def write_clay_checkpoint(
    directory: str | Path,
    *,
    size: str = "large",
    seed: int = 0,
    bare: bool = False,
    reuse: bool = False,
) -> Path:
    """Write ``clay-v1.5.ckpt`` into ``directory`` (Lightning layout; ``bare=True`` writes
    the encoder state dict alone); return the file. ``reuse=True`` returns a file already
    there (test modules share one 1.25 GB file through a common directory)."""
    import torch

    out = Path(directory)
    path = out / CLAY_FILE
    if reuse and path.is_file():
        return path
    out.mkdir(parents=True, exist_ok=True)
    enc = clay_encoder_state_dict(size=size, seed=seed)
    tmp = path.with_suffix(".ckpt.tmp")
    if bare:
        torch.save(enc, tmp)
        tmp.replace(path)
        return path
    dim = int(enc["cls_token"].shape[-1])  # type: ignore[attr-defined]
    g = torch.Generator().manual_seed(int(seed) + 1)
    extra = {
        "model.proj.weight": (1024, dim),
        "model.proj.bias": (1024,),
        "model.decoder.enc_to_dec.weight": (512, dim),
        "model.decoder.mask_patch": (512,),
        "model.teacher.cls_token": (1, 1, 1024),
        "model.teacher.norm.weight": (1024,),
    }
    state = {f"model.encoder.{k}": v for k, v in enc.items()}
    state.update({k: torch.randn(s, generator=g) * 0.02 for k, s in extra.items()})
    payload = {
        "epoch": 0,
        "global_step": 0,
        "pytorch-lightning_version": "2.1.0",
        "state_dict": state,
        "hyper_parameters": {"model_size": size, "mask_ratio": 0.75, "patch_size": 8},
    }
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


__all__ = ["CLAY_FILE", "clay_encoder_state_dict", "write_clay_checkpoint"]
