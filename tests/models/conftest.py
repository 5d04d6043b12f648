"""Fixtures for model tests: one random-valued RemoteCLIP checkpoint per session, no network.

The checkpoint is written in the published HF format (``model.`` prefix, config.json) by
``rs_embed_ray.testing.checkpoints`` and loaded through the real strict loader. Every test
runs with the hub offline, an empty private HF cache and no weights dir, so nothing can
reach the network or pick up a developer's real cache.
"""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def _isolated_weights_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR", raising=False)
    monkeypatch.delenv("HF_HOME", raising=False)
    monkeypatch.delenv("HUGGINGFACE_HUB_CACHE", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def remoteclip_ckpt(module_scratch) -> Path:
    """Path of a seeded random RemoteCLIP ``model.safetensors`` (HF layout), built once."""
    pytest.importorskip("open_clip")
    pytest.importorskip("safetensors")
    from rs_embed_ray.testing.checkpoints import write_remoteclip_checkpoint

    return write_remoteclip_checkpoint(module_scratch("remoteclip_hf"), seed=0)


@pytest.fixture(scope="module")
def remoteclip(remoteclip_ckpt: Path):
    """A RemoteCLIP embedder on CPU loaded from the session checkpoint (loaded once)."""
    from rs_embed_ray.models.remoteclip import RemoteCLIP

    return RemoteCLIP(device="cpu", weights=str(remoteclip_ckpt), precision="float32")


@pytest.fixture(scope="module")
def dofa_ckpt(module_scratch) -> Path:
    """Path of a seeded random DOFA-base ``DOFA_ViT_base_e100.pth``, built once."""
    pytest.importorskip("timm")
    from rs_embed_ray.testing.checkpoints import write_dofa_checkpoint

    return write_dofa_checkpoint(module_scratch("dofa"), seed=0)


@pytest.fixture(scope="module")
def dofa(dofa_ckpt: Path):
    """A DOFA-base embedder on CPU loaded from the session checkpoint."""
    from rs_embed_ray.models.dofa import DOFA

    return DOFA(device="cpu", weights=str(dofa_ckpt), precision="float32")


@pytest.fixture(scope="module")
def prithvi_ckpt(module_scratch) -> Path:
    """Path of a seeded random ``Prithvi_EO_V2_100M_TL.pt`` (full MAE layout), built once."""
    pytest.importorskip("timm")
    from rs_embed_ray.testing.checkpoints import write_prithvi_checkpoint

    return write_prithvi_checkpoint(module_scratch("prithvi"), seed=0)


@pytest.fixture(scope="module")
def prithvi(prithvi_ckpt: Path):
    """A Prithvi-EO-2.0-100M-TL embedder on CPU loaded from the session checkpoint."""
    from rs_embed_ray.models.prithvi import Prithvi

    return Prithvi(device="cpu", weights=str(prithvi_ckpt), precision="float32")


@pytest.fixture(scope="module")
def satmae_ckpt(module_scratch) -> Path:
    """Seeded random SatMAE ViT-L ``model.safetensors`` (full MAE layout, ~1.3 GB), once."""
    pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    from rs_embed_ray.testing.checkpoints import write_satmae_checkpoint

    return write_satmae_checkpoint(module_scratch("satmae"), seed=0)


@pytest.fixture(scope="module")
def satmae(satmae_ckpt: Path):
    from rs_embed_ray.models.satmae import SatMAE

    return SatMAE(device="cpu", weights=str(satmae_ckpt), precision="float32")


@pytest.fixture(scope="module")
def satmaepp_ckpt(module_scratch) -> Path:
    """Seeded random SatMAE++ ViT-L ``model.safetensors`` (MAE + upsampling head), once."""
    pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    from rs_embed_ray.testing.checkpoints import write_satmaepp_checkpoint

    return write_satmaepp_checkpoint(module_scratch("satmaepp"), seed=0)


@pytest.fixture(scope="module")
def satmaepp(satmaepp_ckpt: Path):
    from rs_embed_ray.models.satmaepp import SatMAEPP

    cfg = {"channel_order": "rgb"}  # explicit: a developer's RS_EMBED_SATMAEPP_* env is ignored
    return SatMAEPP(device="cpu", weights=str(satmaepp_ckpt), model_config=cfg, precision="float32")


@pytest.fixture(scope="module")
def scalemae_ckpt(module_scratch) -> Path:
    """Seeded random Scale-MAE ViT-L ``model.safetensors`` (rshf ``model.`` layout), once."""
    pytest.importorskip("timm")
    pytest.importorskip("safetensors")
    from rs_embed_ray.testing.checkpoints import write_scalemae_checkpoint

    return write_scalemae_checkpoint(module_scratch("scalemae"), seed=0)


@pytest.fixture(scope="module")
def scalemae(scalemae_ckpt: Path):
    from rs_embed_ray.models.scalemae import ScaleMAE

    return ScaleMAE(device="cpu", weights=str(scalemae_ckpt), precision="float32")


@pytest.fixture(scope="module")
def terrafm_ckpt(module_scratch) -> Path:
    """Seeded random ``TerraFM-B.pth`` (published key layout, ~450 MB), built once."""
    pytest.importorskip("timm")
    from rs_embed_ray.testing.checkpoints import write_terrafm_checkpoint

    return write_terrafm_checkpoint(module_scratch("terrafm"), seed=0)


@pytest.fixture(scope="module")
def terrafm(terrafm_ckpt: Path):
    from rs_embed_ray.models.terrafm import TerraFM

    return TerraFM(device="cpu", weights=str(terrafm_ckpt), precision="float32")
