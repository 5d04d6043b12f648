"""RemoteCLIP against open_clip itself (the implementation RemoteCLIP ships for).

The checkpoint is built with open_clip's own ``create_model("ViT-B-32")`` (seeded random
init; its constant-initialised parameters -- LayerNorms, biases set to 0 -- get random
offsets so that a swapped or dropped key shows) and saved in both published formats:
``MVRL/remote-clip-vit-base-patch32`` ``model.safetensors`` (the open_clip state dict under
``model.``) and ``chendelong/RemoteCLIP`` ``RemoteCLIP-ViT-B-32.pt`` (the bare state dict).
Our ``RemoteCLIP`` loads each through the normal weights path. Both get the same preprocessed
tensor; pooled is open_clip's ``encode_image``, grid the last residual block's patch tokens
(a forward hook; before ``ln_post``). Float32 on CPU, max abs difference <= 1e-4.

Preprocessing: open_clip's own eval transform for ``ViT-B-32`` (Resize 224 bicubic, centre
crop, ToTensor, the OpenAI CLIP mean/std) on the 8-bit RGB image, against our tensor path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from rs_embed_ray.specs import OutputSpec

pytestmark = pytest.mark.oracle

torch = pytest.importorskip("torch")
open_clip = pytest.importorskip("open_clip")

log = logging.getLogger(__name__)
TOL = 1e-4


@pytest.fixture(autouse=True)
def _remoteclip_oracle_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No weights dir, an empty private hub cache, hub offline: only the explicit file loads."""
    monkeypatch.delenv("RS_EMBED_RAY_WEIGHTS_DIR", raising=False)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty_hf_cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="module")
def remoteclip_reference(module_scratch):
    """(open_clip ViT-B-32, {format: checkpoint path}) with open_clip's random weights."""
    from safetensors.torch import save_file

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(20230411)
        ref = open_clip.create_model("ViT-B-32", pretrained=None)
        with torch.no_grad():
            for p in ref.parameters():
                if p.numel() > 1 and float(p.std()) == 0.0:
                    p.add_(0.05 * torch.randn_like(p))
    ref.eval()
    sd = {k: v.detach().clone().contiguous() for k, v in ref.state_dict().items()}
    folder = module_scratch("remoteclip_oracle")
    hf = folder / "hf" / "model.safetensors"
    hf.parent.mkdir()
    save_file({f"model.{k}": v for k, v in sd.items()}, str(hf), metadata={"format": "pt"})
    original = folder / "RemoteCLIP-ViT-B-32.pt"
    torch.save(sd, original)
    return ref, {"hf": hf, "original": original}


def _reference(ref, x):
    """open_clip's encode_image and the last block's patch tokens as (B, 768, 7, 7)."""
    got = {}
    hook = ref.visual.transformer.resblocks[-1].register_forward_hook(
        lambda m, i, o: got.update(tok=o)
    )
    try:
        with torch.no_grad():
            pooled = ref.encode_image(x)
    finally:
        hook.remove()
    tok = got["tok"]
    if tok.shape[0] != x.shape[0]:  # a sequence-first transformer
        tok = tok.permute(1, 0, 2)
    grid = tok[:, 1:, :].reshape(x.shape[0], 7, 7, -1).permute(0, 3, 1, 2)
    return pooled.numpy(), grid.numpy()


@pytest.mark.parametrize("fmt", ["hf", "original"])
def test_remoteclip_matches_open_clip_pooled_and_grid(remoteclip_reference, fmt):
    from rs_embed_ray.models.remoteclip import RemoteCLIP

    ref, paths = remoteclip_reference
    ours = RemoteCLIP(device="cpu", weights=str(paths[fmt]), precision="float32")
    rng = np.random.default_rng(11)
    raw = [
        rng.uniform(0, 4000, size=(3, 224, 224)).astype(np.float32),
        rng.uniform(0, 3000, size=(3, 90, 120)).astype(np.float32),  # resized and cropped
    ]
    x, _ = ours.preprocess(raw)
    want_pooled, want_grid = _reference(ref, x)
    kw = dict(spatials=[None, None], temporal=None, fetch_metas=[{}, {}])
    pooled = np.stack([e.data for e in ours.embed_batch(raw, output=OutputSpec.pooled(), **kw)])
    grid = np.stack([e.data for e in ours.embed_batch(raw, output=OutputSpec.grid(), **kw)])
    d_pooled = float(np.abs(pooled - want_pooled).max())
    d_grid = float(np.abs(grid - want_grid).max())
    log.info("remoteclip (%s) vs open_clip: max abs pooled %.2e, grid %.2e", fmt, d_pooled, d_grid)
    assert pooled.shape == (2, 512) and grid.shape == (2, 768, 7, 7)
    assert d_pooled <= TOL and d_grid <= TOL, (d_pooled, d_grid)
    assert float(np.abs(want_grid).mean()) > 0.1 and float(want_pooled.std()) > 0.01


@pytest.mark.parametrize("hw", [(224, 224), (90, 120), (300, 260)])
def test_remoteclip_preprocessing_matches_open_clip_transform(hw):
    """Our tensor path == open_clip's eval transform (PIL) on the same 8-bit RGB image.

    The DN -> 8-bit step (``floor(clip(DN / 10000, 0, 1) * 255)``) is rs-embed's mapping of
    Sentinel-2 reflectance onto the 8-bit images CLIP was trained on; open_clip takes over
    from the 8-bit image."""
    from PIL import Image

    from rs_embed_ray.models.preprocess import CLIP_MEAN, CLIP_STD, clip_style_batch

    with torch.random.fork_rng(devices=[]):
        _, _, transform = open_clip.create_model_and_transforms("ViT-B-32", pretrained=None)
    raw = np.random.default_rng(hw[0]).uniform(-10, 11000, size=(3, *hw)).astype(np.float32)
    ours, _ = clip_style_batch([raw], size=224, mean=CLIP_MEAN, std=CLIP_STD)
    u8 = np.floor(np.clip(raw / 10000.0, 0, 1) * 255).astype(np.uint8)
    want = transform(Image.fromarray(u8.transpose(1, 2, 0), mode="RGB"))
    assert tuple(want.shape) == (3, 224, 224)
    np.testing.assert_allclose(ours[0].numpy(), want.numpy(), atol=1e-5, rtol=0)
