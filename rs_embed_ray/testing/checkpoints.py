"""Build checkpoint files in the PUBLISHED formats, filled with seeded random values.

Model hubs are unreachable on CI and dev machines, and no wheel ships the weights, so tests
(and the end-to-end runs) write files with the real key names, shapes, dtypes and container
format, then load them through the real loaders (strict). The numbers are random, so the
embeddings mean nothing; everything else (file layout, prefix handling, shapes, sha256
recording) is exercised for real.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

REMOTECLIP_CONFIG: dict[str, Any] = {"model_name": "ViT-B-32"}


def _seeded_state_dict(build: Any, seed: int) -> dict[str, Any]:
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build()
    return {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}


def write_remoteclip_checkpoint(
    directory: str | Path,
    *,
    seed: int = 0,
    fmt: Literal["hf", "original"] = "hf",
) -> Path:
    """Write a RemoteCLIP ViT-B/32 checkpoint into ``directory``; return the weights file.

    ``fmt="hf"`` mirrors ``MVRL/remote-clip-vit-base-patch32``: ``model.safetensors`` whose
    keys are the open_clip state dict prefixed by ``model.`` (PyTorchModelHubMixin saved the
    wrapper whose ``.model`` is the open_clip CLIP) plus ``config.json``
    (``{"model_name": "ViT-B-32"}``, the wrapper's init kwargs). ``fmt="original"`` mirrors
    ``chendelong/RemoteCLIP``'s ``RemoteCLIP-ViT-B-32.pt``: a bare ``torch.save`` state dict.
    About 600 MB either way (151 M float32 values, text tower included).
    """
    import torch

    from rs_embed_ray.models.remoteclip import OPEN_CLIP_ARCH, build_open_clip

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sd = _seeded_state_dict(lambda: build_open_clip(OPEN_CLIP_ARCH), seed)
    if fmt == "original":
        path = out / "RemoteCLIP-ViT-B-32.pt"
        torch.save(sd, path)
    elif fmt == "hf":
        from safetensors.torch import save_file

        path = out / "model.safetensors"
        save_file({f"model.{k}": v for k, v in sd.items()}, str(path), metadata={"format": "pt"})
        (out / "config.json").write_text(json.dumps(REMOTECLIP_CONFIG, indent=2) + "\n")
    else:
        raise ValueError(f"fmt must be 'hf' or 'original', got {fmt!r}")
    log.info("wrote random-valued remoteclip checkpoint %s (seed=%s)", path, seed)
    return path


def write_dofa_checkpoint(directory: str | Path, *, variant: str = "base", seed: int = 0) -> Path:
    """Write a DOFA encoder checkpoint as ``DOFA_ViT_<variant>_e100.pth``; return its path.

    Mirrors ``earthflow/DOFA``: a bare ``torch.save`` state dict of the encoder whose final
    LayerNorm is named ``norm`` (pretraining checkpoints have no ``fc_norm``; rs-embed and
    torchgeo both fill ``fc_norm`` from it). Whether the real file also carries MAE decoder
    or head keys could not be checked offline; the loader ignores those by name. About
    445 MB for base (111 M float32 values, 25 M of them in the kernel generator).
    """
    import torch

    from rs_embed_ray.models.dofa import VARIANTS, build_dofa

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    sd = _seeded_state_dict(lambda: build_dofa(variant), seed)
    for suffix in ("weight", "bias"):
        sd[f"norm.{suffix}"] = sd.pop(f"fc_norm.{suffix}")
    path = out / str(VARIANTS[variant]["file"])
    torch.save(sd, path)
    log.info("wrote random-valued dofa checkpoint %s (seed=%s)", path, seed)
    return path


def write_hf_cache_entry(
    cache_dir: str | Path,
    repo_id: str,
    filename: str,
    source: str | Path,
    *,
    revision: str = "main",
    commit: str = "0" * 40,
    link: bool = True,
) -> Path:
    """Place ``source`` in a Hugging Face hub cache layout so ``try_to_load_from_cache`` finds it.

    Layout: ``<cache>/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/<filename>}``.
    With ``link=True`` the snapshot entry is a symlink to ``source`` (no 600 MB copy).
    """
    import shutil

    root = Path(cache_dir) / ("models--" + repo_id.replace("/", "--"))
    (root / "refs").mkdir(parents=True, exist_ok=True)
    (root / "refs" / revision).write_text(commit)
    target = root / "snapshots" / commit / filename
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.exists() or target.is_symlink():
        target.unlink()
    if link:
        target.symlink_to(Path(source).resolve())
    else:
        shutil.copyfile(source, target)
    return target


__all__ = [
    "REMOTECLIP_CONFIG",
    "write_dofa_checkpoint",
    "write_hf_cache_entry",
    "write_remoteclip_checkpoint",
]
