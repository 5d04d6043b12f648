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


@pytest.fixture(scope="session")
def remoteclip_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a seeded random RemoteCLIP ``model.safetensors`` (HF layout), built once."""
    pytest.importorskip("open_clip")
    pytest.importorskip("safetensors")
    from rs_embed_ray.testing.checkpoints import write_remoteclip_checkpoint

    return write_remoteclip_checkpoint(tmp_path_factory.mktemp("remoteclip_hf"), seed=0)


@pytest.fixture(scope="session")
def remoteclip(remoteclip_ckpt: Path):
    """A RemoteCLIP embedder on CPU loaded from the session checkpoint (loaded once)."""
    from rs_embed_ray.models.remoteclip import RemoteCLIP

    return RemoteCLIP(device="cpu", weights=str(remoteclip_ckpt), precision="float32")


@pytest.fixture(scope="session")
def dofa_ckpt(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Path of a seeded random DOFA-base ``DOFA_ViT_base_e100.pth``, built once."""
    pytest.importorskip("timm")
    from rs_embed_ray.testing.checkpoints import write_dofa_checkpoint

    return write_dofa_checkpoint(tmp_path_factory.mktemp("dofa"), seed=0)


@pytest.fixture(scope="session")
def dofa(dofa_ckpt: Path):
    """A DOFA-base embedder on CPU loaded from the session checkpoint."""
    from rs_embed_ray.models.dofa import DOFA

    return DOFA(device="cpu", weights=str(dofa_ckpt), precision="float32")
