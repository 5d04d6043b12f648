"""Golden outputs of rs-embed 0.3.1's WildSAT adapter for tests/oracle/test_oracle_wildsat.py.

No package ships WildSAT (github.com/cvl-umass/wildsat); its backbone IS torchvision's
``vit_b_16`` and its image head a bias-free ``Linear(1000, 256)`` (``threelinearnobias``).
Run with the rs-embed 0.3.1 venv and this repo on ``PYTHONPATH`` only for the numpy-only value
rule of ``testing/checkpoints_wildsat.py``:

    PYTHONPATH=. /tmp/anchor-venv312/bin/python scripts/wildsat_golden.py \\
        tests/oracle/data/wildsat_golden.npz

The published-format file (``satellite_state_dict`` with ``module.backbone.*`` of a
torchvision ``vit_b_16`` built in that venv and the three ``module.decoder.backbone{1,2,3}.0.
weight`` branches, ``opt`` an ``argparse.Namespace``) is filled with ``wildsat_values(seed=0)``
and loaded through rs-embed's own loader (``RS_EMBED_WILDSAT_CKPT``). What it stores:

* ``<case>_vec`` / ``<case>_grid``: ``WildSATEmbedder.get_embedding`` (``input_chw``) pooled
  and grid on raw inputs the test rebuilds from seeds: ``a`` (40 px), ``nan`` (24 x 30, NaN,
  negative and > 10000 values), ``full`` (224 px: no resize), ``unit`` (``RS_EMBED_WILDSAT_
  NORM=unit_scale``), ``backbone`` (``RS_EMBED_WILDSAT_FEATURE=backbone``, 1000-D), ``roi``
  (``fetch_meta`` ROI window: the ROI-token mean and the cropped grid); ``resnet50`` (the
  published resnet50 file, with the ROI window) and ``swint`` (the swint file): rs-embed's
  ``model_config={"variant": ...}``, seed-7 48 px input, their 1 x 1 grids;
* ``<case>_u8``: rs-embed's preprocessed uint8 224 x 224 RGB (``_raw_chw_to_rgb_u8``) of
  ``a``, ``nan``, ``full`` and ``unit``.
Grids of ``a``, ``roi``, ``resnet50`` and ``swint`` only.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import torch

from rs_embed_ray.testing.checkpoints_wildsat import OPT, wildsat_values

warnings.simplefilter("ignore")
SEED = 0
ROI = (0.0, 1.0, 0.25, 0.75)


def raw_input(case: str) -> np.ndarray:
    """The raw adapter inputs (the test rebuilds them from the same seeds)."""
    if case == "nan":
        rs = np.random.RandomState(3)
        x = rs.uniform(-500, 12000, size=(3, 24, 30)).astype(np.float32)
        x[0, 2, 3] = np.nan
        x[2, 5, :4] = np.inf
        return x
    seed, side = {"a": (2, 40), "full": (4, 224), "unit": (5, 32), "backbone": (6, 32)}.get(
        case, (7, 48)
    )
    return np.random.RandomState(seed).randint(0, 6000, size=(3, side, side)).astype(np.float32)


BUILD = {"vitb16": "vit_b_16", "resnet50": "resnet50", "swint": "swin_t"}


def write_ckpt(path: Path, variant: str = "vitb16") -> None:
    import torchvision

    net = getattr(torchvision.models, BUILD[variant])(weights=None)
    sd = {f"backbone.{k}": v for k, v in net.state_dict().items()}
    for i in (1, 2, 3):
        sd[f"decoder.backbone{i}.0.weight"] = torch.nn.Linear(1000, 256, bias=False).weight
    vals = wildsat_values({k: tuple(v.shape) for k, v in sd.items()}, SEED)
    state = {f"module.{k}": torch.from_numpy(vals[k]) if k in vals else v for k, v in sd.items()}
    opt = argparse.Namespace(**{**OPT, "satellite_encoder": variant})
    torch.save({"epoch": 0, "satellite_state_dict": state, "opt": opt}, path)


def adapter_case(
    case: str, out: dict, *, env: dict[str, str] | None = None, variant: str | None = None
) -> None:
    from rs_embed.core.specs import OutputSpec, PointBuffer, TemporalSpec
    from rs_embed.embedders.onthefly_wildsat import WildSATEmbedder, _raw_chw_to_rgb_u8

    for k in ("RS_EMBED_WILDSAT_NORM", "RS_EMBED_WILDSAT_FEATURE"):
        os.environ.pop(k, None)
    os.environ.update(env or {})
    raw = raw_input(case)
    emb = WildSATEmbedder()
    kw = dict(
        spatial=PointBuffer(lon=10.0, lat=45.0, buffer_m=200),
        temporal=TemporalSpec.range("2022-06-01", "2022-09-01"),
        backend="auto",
        device="cpu",
        input_chw=raw,
        sensor=None,
        fetch_meta={"roi_window_geo": ROI} if case in ("roi", "resnet50") else None,
        model_config={"variant": variant} if variant else None,
    )
    pooled = emb.get_embedding(output=OutputSpec.pooled(), **kw)
    out[f"{case}_vec"] = np.asarray(pooled.data, np.float32)
    norm = os.environ.get("RS_EMBED_WILDSAT_NORM", "minmax")
    if case in ("a", "nan", "full", "unit"):
        out[f"{case}_u8"] = _raw_chw_to_rgb_u8(
            np.clip(np.nan_to_num(raw, nan=0.0, posinf=0.0, neginf=0.0), 0, 10000),
            image_size=224,
            norm_mode=norm,
        )
    if case in ("a", "roi", "resnet50", "swint"):
        grid = emb.get_embedding(output=OutputSpec.grid(), **kw)
        out[f"{case}_grid"] = np.asarray(getattr(grid.data, "values", grid.data), np.float32)
    print(
        case,
        pooled.meta.get("feature_source"),
        pooled.meta.get("pooling"),
        out[f"{case}_vec"].shape,
    )


def main(dest: str) -> None:
    torch.manual_seed(0)
    out: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = Path(tmp) / "vitb16-imagenet-bnfc.pth"
        write_ckpt(ckpt)
        os.environ["RS_EMBED_WILDSAT_CKPT"] = str(ckpt)
        os.environ["RS_EMBED_WILDSAT_AUTO_DOWNLOAD"] = "0"
        adapter_case("a", out)
        adapter_case("nan", out)
        adapter_case("full", out)
        adapter_case("unit", out, env={"RS_EMBED_WILDSAT_NORM": "unit_scale"})
        adapter_case("backbone", out, env={"RS_EMBED_WILDSAT_FEATURE": "backbone"})
        adapter_case("roi", out)
        for variant in ("resnet50", "swint"):
            path = Path(tmp) / f"{variant}-imagenet-bnfc.pth"
            write_ckpt(path, variant)
            os.environ["RS_EMBED_WILDSAT_CKPT"] = str(path)
            adapter_case(variant, out, variant=variant)
    tmp_dest = dest + ".tmp.npz"
    np.savez_compressed(tmp_dest, **out)
    os.replace(tmp_dest, dest)
    print(f"wrote {dest}: {sorted(out)}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "tests/oracle/data/wildsat_golden.npz")
