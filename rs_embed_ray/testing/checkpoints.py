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


def write_prithvi_checkpoint(
    directory: str | Path,
    *,
    variant: str = "prithvi_eo_v2_100_tl",
    seed: int = 0,
    with_config: bool = True,
) -> Path:
    """Write a Prithvi-EO-2.0 TL MAE checkpoint (e.g. ``Prithvi_EO_V2_100M_TL.pt``).

    Mirrors ``ibm-nasa-geospatial/Prithvi-EO-2.0-*-TL``: a bare ``torch.save`` state dict of
    the whole ``PrithviMAE``, encoder keys under ``encoder.`` (``pos_embed`` for the 4
    pretraining frames, ``temporal_embed_enc.scale`` / ``location_embed_enc.scale``) and the
    MAE decoder under ``decoder.`` (``decoder_embed``, ``mask_token``, ``decoder_pos_embed``,
    8 timm blocks of width 512, ``decoder_norm``, ``decoder_pred`` to ``p*p*6`` values,
    ``temporal_embed_dec.scale``, ``location_embed_dec.scale``), with the published shapes
    and seeded random values. ``with_config`` also writes the repo's ``config.json``
    (``pretrained_cfg``). About 445 MB for 100M (111 M float32 values).
    """
    import torch
    from timm.models.vision_transformer import Block
    from torch import nn

    from rs_embed_ray.models.prithvi import (
        DECODER,
        IMAGE_SIZE,
        PRETRAIN_FRAMES,
        VARIANTS,
        build_prithvi_encoder,
        normalize_variant,
        pos_embed_3d,
    )

    variant = normalize_variant(variant)
    cfg = VARIANTS[variant]
    dim, patch = int(cfg["embed_dim"]), int(cfg["patch"])
    ddim = int(DECODER["decoder_embed_dim"])
    side = IMAGE_SIZE // patch

    def build_decoder() -> Any:
        dec = nn.Module()
        dec.decoder_embed = nn.Linear(dim, ddim)
        dec.mask_token = nn.Parameter(torch.randn(1, 1, ddim) * 0.02)
        table = torch.from_numpy(pos_embed_3d(ddim, PRETRAIN_FRAMES, side, side))
        dec.register_buffer("decoder_pos_embed", table.unsqueeze(0))
        dec.decoder_blocks = nn.ModuleList(
            [
                Block(ddim, int(DECODER["decoder_num_heads"]), 4.0, qkv_bias=True)
                for _ in range(int(DECODER["decoder_depth"]))
            ]
        )
        dec.decoder_norm = nn.LayerNorm(ddim)
        dec.decoder_pred = nn.Linear(ddim, patch * patch * 6)
        for name in ("temporal_embed_dec", "location_embed_dec"):
            m = nn.Module()
            m.scale = nn.Parameter(torch.full((1,), 0.1))
            setattr(dec, name, m)
        return dec

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    enc = _seeded_state_dict(lambda: build_prithvi_encoder(variant), seed)
    dec = _seeded_state_dict(build_decoder, seed + 1)
    with torch.no_grad():  # trained scales are not 0.1; make them distinguishable
        enc["temporal_embed_enc.scale"].fill_(0.37)
        enc["location_embed_enc.scale"].fill_(0.21)
    sd = {f"encoder.{k}": v for k, v in enc.items()}
    sd.update({f"decoder.{k}": v for k, v in dec.items()})
    path = out / str(cfg["file"])
    torch.save(sd, path)
    if with_config:
        pretrained_cfg = {
            "img_size": IMAGE_SIZE,
            "num_frames": PRETRAIN_FRAMES,
            "patch_size": [1, patch, patch],
            "in_chans": 6,
            "embed_dim": dim,
            "depth": int(cfg["depth"]),
            "num_heads": int(cfg["num_heads"]),
            **DECODER,
            "mlp_ratio": 4,
            "coords_encoding": ["time", "location"],
            "coords_scale_learn": True,
            "mask_ratio": 0.75,
            "norm_pix_loss": False,
            "bands": ["B02", "B03", "B04", "B05", "B06", "B07"],
            "mean": [1087.0, 1342.0, 1433.0, 2734.0, 1958.0, 1363.0],
            "std": [2248.0, 2179.0, 2178.0, 1850.0, 1242.0, 1049.0],
        }
        (out / "config.json").write_text(
            json.dumps(
                {"architecture": variant, "num_features": dim, "pretrained_cfg": pretrained_cfg},
                indent=2,
            )
            + "\n"
        )
    log.info("wrote random-valued prithvi checkpoint %s (seed=%s)", path, seed)
    return path


def _random_fill(shapes: dict[str, tuple[int, ...]], seed: int) -> dict[str, Any]:
    """Seeded random tensors for a key -> shape table, fast (no module init).

    Norm weights ~ 1 + N(0, 0.02), biases and everything else ~ N(0, 0.02): real shapes and
    names, values that keep a deep ViT numerically tame.
    """
    import torch

    gen = torch.Generator().manual_seed(int(seed))
    out: dict[str, Any] = {}
    for k, shape in shapes.items():
        t = torch.randn(shape, generator=gen, dtype=torch.float32) * 0.02
        parts = k.split(".")
        if len(parts) > 1 and "norm" in parts[-2] and parts[-1] == "weight":
            t += 1.0
        out[k] = t
    return out


def _mae_sincos_2d(dim: int, side: int) -> Any:
    """MAE's fixed (1, 1 + side*side, dim) table: [sincos(col) | sincos(row)], CLS row 0."""
    import numpy as np
    import torch

    def code(d: int, pos: Any) -> Any:
        omega = 1.0 / 10000.0 ** (np.arange(d // 2, dtype=np.float64) / (d / 2.0))
        ang = np.asarray(pos, dtype=np.float64).reshape(-1, 1) * omega
        return np.concatenate([np.sin(ang), np.cos(ang)], axis=1)

    rows, cols = np.meshgrid(np.arange(side), np.arange(side), indexing="ij")
    table = np.concatenate([code(dim // 2, cols), code(dim // 2, rows)], axis=1)
    table = np.concatenate([np.zeros((1, dim)), table], axis=0)
    return torch.from_numpy(table).float().unsqueeze(0)


def _mae_decoder_shapes(enc_dim: int, patch: int, side: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the MAE decoder (width 512, 8 blocks of 16 heads, RGB pixels)."""
    import torch
    from timm.models.vision_transformer import Block

    with torch.device("meta"):
        block = Block(512, 16, 4.0, qkv_bias=True)
    shapes: dict[str, tuple[int, ...]] = {
        "decoder_embed.weight": (512, enc_dim),
        "decoder_embed.bias": (512,),
        "mask_token": (1, 1, 512),
        "decoder_pos_embed": (1, 1 + side * side, 512),
    }
    for i in range(8):
        for k, v in block.state_dict().items():
            shapes[f"decoder_blocks.{i}.{k}"] = tuple(v.shape)
    shapes.update(
        {
            "decoder_norm.weight": (512,),
            "decoder_norm.bias": (512,),
            "decoder_pred.weight": (patch * patch * 3, 512),
            "decoder_pred.bias": (patch * patch * 3,),
        }
    )
    return shapes


def _write_mae_vit_large(
    directory: str | Path,
    *,
    seed: int,
    extra_shapes: dict[str, tuple[int, ...]] | None = None,
    extra_config: dict[str, Any] | None = None,
) -> Path:
    """rshf's MAE ViT-L/16 layout (timm encoder at the top level + MAE decoder, fixed sin-cos
    position tables) as ``model.safetensors`` + its ``config.json``; ``extra_*`` add a
    variant's own keys (SatMAE++'s upsampling head)."""
    from safetensors.torch import save_file

    from rs_embed_ray.models.satmae import EMBED_DIM, IMAGE_SIZE, PATCH, build_vit_large

    side = IMAGE_SIZE // PATCH
    enc = build_vit_large(eps=1e-5, meta=True)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    shapes.update(_mae_decoder_shapes(EMBED_DIM, PATCH, side))
    shapes.update(extra_shapes or {})
    sd = _random_fill(shapes, seed)
    sd["pos_embed"] = _mae_sincos_2d(EMBED_DIM, side)
    sd["decoder_pos_embed"] = _mae_sincos_2d(512, side)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    save_file(sd, str(path), metadata={"format": "pt"})
    config = {
        "img_size": IMAGE_SIZE,
        "patch_size": PATCH,
        "in_chans": 3,
        "embed_dim": EMBED_DIM,
        "depth": 24,
        "num_heads": 16,
        "decoder_embed_dim": 512,
        "decoder_depth": 8,
        "decoder_num_heads": 16,
        "mlp_ratio": 4.0,
        "norm_pix_loss": False,
        **(extra_config or {}),
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    return path


def write_satmae_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a SatMAE ViT-L/16 checkpoint as ``model.safetensors`` + ``config.json``.

    Mirrors ``MVRL/satmae-vitlarge-fmow-pretrain-800`` (rshf ``MaskedAutoencoderViT``
    saved with PyTorchModelHubMixin, no wrapper prefix): encoder keys at the top level under
    timm names (``cls_token``, ``pos_embed`` (1, 197, 1024), ``patch_embed.proj``,
    ``blocks.0..23``, ``norm``) and the MAE decoder (``decoder_embed``, ``mask_token``,
    ``decoder_pos_embed``, ``decoder_blocks.0..7``, ``decoder_norm``, ``decoder_pred``).
    Names and shapes come from a meta-device timm ViT-L (no init cost); values are seeded
    N(0, 0.02) draws, the position tables are the real fixed sin-cos. About 1.3 GB
    (329 M float32 values).
    """
    path = _write_mae_vit_large(directory, seed=seed)
    log.info("wrote random-valued satmae checkpoint %s (seed=%s)", path, seed)
    return path


def _satmaepp_multiscale_head_shapes(in_chans: int, proj_ratio: int) -> dict[str, tuple[int, ...]]:
    """Key -> shape of SatMAE++'s upsampling head (``proj_up_*`` and ``up_block.*``).

    ``proj_up_conv`` is a 1x1 conv in_chans -> in_chans*proj_ratio; ``up_block`` holds a 4x4
    stride-2 transposed conv, two channels-first LayerNorms (weight/bias only), a residual
    block of two 3x3 convs and a 3x3 ``proj_out`` back to in_chans.
    """
    import torch
    from torch import nn

    ms = in_chans * proj_ratio
    with torch.device("meta"):
        layers = {
            "proj_up_conv": nn.Conv2d(in_chans, ms, kernel_size=1),
            "up_block.up_conv": nn.ConvTranspose2d(ms, ms, kernel_size=4, stride=2, padding=1),
            "up_block.res_block.conv1": nn.Conv2d(ms, ms, kernel_size=3, padding=1),
            "up_block.res_block.conv2": nn.Conv2d(ms, ms, kernel_size=3, padding=1),
            "up_block.proj_out": nn.Conv2d(ms, in_chans, kernel_size=3, padding=1),
        }
    shapes: dict[str, tuple[int, ...]] = {}
    for name, layer in layers.items():
        for k, v in layer.state_dict().items():
            shapes[f"{name}.{k}"] = tuple(v.shape)
    for norm in ("proj_up_norm", "up_block.up_norm", "up_block.res_norm"):
        shapes[f"{norm}.weight"] = (ms,)
        shapes[f"{norm}.bias"] = (ms,)
    return shapes


def write_satmaepp_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a SatMAE++ ViT-L/16 (fMoW RGB) checkpoint as ``model.safetensors`` + ``config.json``.

    Mirrors ``MVRL/satmaepp_ViT-L_pretrain_fmow_rgb`` (rshf ``SatMAEPP`` =
    SatMAE++'s ``MaskedAutoencoderViT`` saved with PyTorchModelHubMixin, no wrapper prefix):
    SatMAE's layout (timm encoder keys at the top level plus the MAE decoder, see
    :func:`write_satmae_checkpoint`) plus the multi-scale upsampling head
    ``proj_up_conv`` (12, 3, 1, 1), ``proj_up_norm`` (12,), ``up_block.up_conv`` (12, 12, 4,
    4), ``up_block.up_norm``, ``up_block.res_block.conv1/conv2`` (12, 12, 3, 3),
    ``up_block.res_norm`` and ``up_block.proj_out`` (3, 12, 3, 3); 414 tensors. The config
    holds the constructor's JSON-able kwargs. Key names come from rshf's ``satmaepp/model.py``
    (not checked against the hosted file, which is unreachable offline). About 1.3 GB.
    """
    path = _write_mae_vit_large(
        directory,
        seed=seed,
        extra_shapes=_satmaepp_multiscale_head_shapes(3, 4),
        extra_config={"proj_ratio": 4},
    )
    log.info("wrote random-valued satmaepp checkpoint %s (seed=%s)", path, seed)
    return path


def write_scalemae_checkpoint(
    directory: str | Path, *, seed: int = 0, final_norm_key: str = "norm"
) -> Path:
    """Write a Scale-MAE ViT-L/16 checkpoint as ``model.safetensors`` + ``config.json``.

    Mirrors ``MVRL/scalemae-vitlarge-800`` (rshf ``ScaleMAE_baseline`` saved with
    PyTorchModelHubMixin): the timm backbone sits under the wrapper attribute ``model.``:
    ``model.cls_token``, ``model.patch_embed.proj``, ``model.blocks.0..23`` and
    ``model.norm`` (rshf's default ``global_pool=False``; ``final_norm_key="fc_norm"``
    writes the global-pool layout instead). No ``pos_embed`` (computed from the ground
    resolution) and no head. Seeded N(0, 0.02) values, meta-device shapes. About 1.2 GB.
    """
    from safetensors.torch import save_file

    from rs_embed_ray.models.satmae import build_vit_large

    if final_norm_key not in ("norm", "fc_norm"):
        raise ValueError(f"final_norm_key must be 'norm' or 'fc_norm', got {final_norm_key!r}")
    enc = build_vit_large(eps=1e-6, pos_embed=False, meta=True)
    shapes = {k: tuple(v.shape) for k, v in enc.state_dict().items()}
    sd = _random_fill(shapes, seed)
    if final_norm_key == "fc_norm":
        for s in ("weight", "bias"):
            sd[f"fc_norm.{s}"] = sd.pop(f"norm.{s}")
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "model.safetensors"
    save_file({f"model.{k}": v for k, v in sd.items()}, str(path), metadata={"format": "pt"})
    config = {"global_pool": final_norm_key == "fc_norm", "cls_token_flag": True}
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    log.info("wrote random-valued scalemae checkpoint %s (seed=%s)", path, seed)
    return path


def write_terrafm_checkpoint(directory: str | Path, *, seed: int = 0) -> Path:
    """Write a TerraFM-B checkpoint as ``TerraFM-B.pth`` (bare ``torch.save`` state dict).

    Mirrors ``MBZUAI/TerraFM`` ``TerraFM-B.pth`` as its ``terrafm.py`` loads it: the
    encoder's keys at the top level -- ``patch_embed.conv2d_s2_l2a`` / ``conv2d_s2_l1c``
    (2304 x 12 x 16 x 16), ``conv2d_s1`` (2304 x 2 x 16 x 16), ``patch_embed.projection``
    (``proj1`` without bias, ``norm_input``, ``proj2``, ``proj3`` to 768), the three
    modality vectors (1, 2304), ``cls_token``, ``pos_embed`` (1, 197, 768), ``blocks.0..11``
    and ``norm``. Shapes from a meta-device build, seeded N(0, 0.02) values (norm weights
    around 1). About 450 MB (113 M float32 values).
    """
    import torch

    from rs_embed_ray.models.terrafm import HF_FILENAME, build_terrafm_base

    with torch.device("meta"):
        model = build_terrafm_base()
    shapes = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    sd = _random_fill(shapes, seed)
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / HF_FILENAME
    torch.save(sd, path)
    log.info("wrote random-valued terrafm checkpoint %s (seed=%s)", path, seed)
    return path


COPERNICUS_GLOBAL_HW = (721, 1440)
COPERNICUS_RES_DEG = 0.25
COPERNICUS_ORIGIN = (-180.0, 90.125)  # (left, top) of the global grid (spec §1.10)


def copernicus_cell_values(rows: Any, cols: Any, bands: int = 768) -> Any:
    """The values ``write_copernicus_product`` stores at global cells (rows x cols):
    ``(row % 64) * 64 + (col % 64) + band / 1024`` (exact in float32), so a test can tell
    which cell, band and orientation a reader returned without reading the file itself."""
    import numpy as np

    r = np.asarray(rows, dtype=np.float64)[None, :, None] % 64
    c = np.asarray(cols, dtype=np.float64)[None, None, :] % 64
    b = np.arange(bands, dtype=np.float64)[:, None, None] / 1024.0
    return (r * 64.0 + c + b).astype(np.float32)


def write_copernicus_product(
    directory: str | Path,
    *,
    region: tuple[int, int, int, int] = (176, 776, 20, 30),
    full_extent: bool = False,
    georef: bool = True,
    nan_cells: tuple[tuple[int, int], ...] = (),
    empty_cells: tuple[tuple[int, int], ...] = (),
    bands: int = 768,
    filename: str = "embed_map_310k.tif",
) -> Path:
    """Write a Copernicus-Embed GeoTIFF in the published layout, filled only over ``region``.

    The published ``embed_map_310k.tif`` is a global EPSG:4326 grid of 721 x 1440 cells at
    0.25 deg, 768 float32 bands, georeferenced by ModelPixelScale/ModelTiepoint. Here
    ``region = (row0, col0, height, width)`` are global cell indices: by default the file
    covers just that region (its tiepoint placed where the region sits on the global grid,
    ``COPERNICUS_ORIGIN``), 20 x 30 cells (lon 14..21.5, lat 41.125..46.125).
    ``full_extent=True`` writes the whole 721 x 1440 grid as a sparse tiled file (unwritten
    tiles read as 0, the product's "empty"), a few tens of kB. ``georef=False`` leaves the
    geo tags out (the reader's fallback path). Values: :func:`copernicus_cell_values`;
    ``nan_cells`` / ``empty_cells`` (global (row, col)) hold NaN / 0 in every band. Tiled
    16 x 16, pixel-interleaved, deflate (the tile layout of the real file is not needed).
    """
    import warnings

    import numpy as np
    import rasterio
    from rasterio.transform import Affine
    from rasterio.windows import Window

    row0, col0, height, width = (int(v) for v in region)
    rows = np.arange(row0, row0 + height)
    cols = np.arange(col0, col0 + width)
    data = copernicus_cell_values(rows, cols, bands)
    for r, c in nan_cells:
        data[:, r - row0, c - col0] = np.nan
    for r, c in empty_cells:
        data[:, r - row0, c - col0] = 0.0
    left0, top0 = COPERNICUS_ORIGIN
    res = COPERNICUS_RES_DEG
    if full_extent:
        (fh, fw), (off_r, off_c) = COPERNICUS_GLOBAL_HW, (row0, col0)
        left, top = left0, top0
    else:
        (fh, fw), (off_r, off_c) = (height, width), (0, 0)
        left, top = left0 + col0 * res, top0 - row0 * res
    profile: dict[str, Any] = {
        "driver": "GTiff",
        "width": fw,
        "height": fh,
        "count": bands,
        "dtype": "float32",
        "tiled": True,
        "blockxsize": 16,
        "blockysize": 16,
        "compress": "deflate",
        "interleave": "pixel",
        "sparse_ok": True,
    }
    if georef:
        profile.update(crs="EPSG:4326", transform=Affine(res, 0.0, left, 0.0, -res, top))
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    path = out / filename
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NotGeoreferencedWarning for georef=False
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(data, window=Window(off_c, off_r, width, height))
    log.info("wrote copernicus product %s (%d x %d cells, region %s)", path, fh, fw, region)
    return path


def write_olmoearth_checkpoint(
    directory: str | Path, *, variant: str = "base_v1_2", seed: int = 0
) -> Path:
    """Write an OlmoEarth v1.2 HF repo's two files into ``directory``; return ``weights.pth``.

    Mirrors ``allenai/OlmoEarth-v1_2-<Size>`` as olmoearth-pretrain-minimal's
    ``model_loader`` reads it: ``config.json`` (the published training config's ``model``
    and masking sections, ``olmoearth.published_v12_config``) and ``weights.pth``, a
    ``torch.save`` of the whole ``LatentMIM`` state dict (``encoder.*``, ``decoder.*``,
    ``target_encoder.*``: Base 595 tensors, about 0.9 GB; Nano 323, about 10 MB) built by the
    package from that config, every float tensor then shifted by seeded N(0, 0.02) noise so
    that no value equals a fresh initialisation.
    """
    import torch

    from rs_embed_ray.models.olmoearth import (
        CONFIG_FILENAME,
        WEIGHTS_FILENAME,
        build_latent_mim,
        published_v12_config,
    )

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    config = published_v12_config(variant)
    (out / CONFIG_FILENAME).write_text(json.dumps(config, indent=2, sort_keys=True))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = build_latent_mim(config)
        gen = torch.Generator().manual_seed(int(seed) + 1)
        sd = {}
        for k, v in model.state_dict().items():
            v = v.detach().clone().contiguous()
            if v.is_floating_point():
                v += 0.02 * torch.randn(v.shape, generator=gen, dtype=v.dtype)
            sd[k] = v
    path = out / WEIGHTS_FILENAME
    torch.save(sd, path)
    log.info("wrote random-valued olmoearth %s checkpoint %s (seed=%s)", variant, path, seed)
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
    repo_type: Literal["model", "dataset"] = "model",
) -> Path:
    """Place ``source`` in a Hugging Face hub cache layout so ``try_to_load_from_cache`` finds it.

    Layout: ``<cache>/models--<org>--<name>/{refs/<revision>, snapshots/<commit>/<filename>}``
    (``datasets--`` for ``repo_type="dataset"``). With ``link=True`` the snapshot entry is a
    symlink to ``source`` (no 600 MB copy).
    """
    import shutil

    root = Path(cache_dir) / (f"{repo_type}s--" + repo_id.replace("/", "--"))
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
    "COPERNICUS_ORIGIN",
    "REMOTECLIP_CONFIG",
    "copernicus_cell_values",
    "write_copernicus_product",
    "write_dofa_checkpoint",
    "write_hf_cache_entry",
    "write_olmoearth_checkpoint",
    "write_prithvi_checkpoint",
    "write_remoteclip_checkpoint",
    "write_satmae_checkpoint",
    "write_satmaepp_checkpoint",
    "write_scalemae_checkpoint",
    "write_terrafm_checkpoint",
]
