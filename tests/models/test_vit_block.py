"""Our ViT block (models/vit_block.py) against timm's ``vision_transformer.Block``, the block
the official DOFA code builds: the same parameter names and shapes, the same seeded random
init, and the same outputs with the same weights."""

from __future__ import annotations

from functools import partial

import pytest

torch = pytest.importorskip("torch")
timm_vit = pytest.importorskip("timm.models.vision_transformer")

from rs_embed_ray.models.vit_block import vit_block  # noqa: E402


def _timm_block(dim, heads):
    norm = partial(torch.nn.LayerNorm, eps=1e-6)
    return timm_vit.Block(dim, heads, 4.0, qkv_bias=True, norm_layer=norm)


@pytest.mark.parametrize(("dim", "heads"), [(768, 12), (64, 4)])
def test_same_names_init_and_outputs_as_timm(dim, heads):
    torch.manual_seed(3)
    theirs = _timm_block(dim, heads).eval()
    torch.manual_seed(3)
    ours = vit_block(dim, heads).eval()
    a, b = ours.state_dict(), theirs.state_dict()
    assert list(a) == list(b)
    for k in a:
        assert a[k].shape == b[k].shape and torch.equal(a[k], b[k]), k
    # other weights than the init (the biases are zero-free), and a batch of token sequences
    torch.manual_seed(4)
    sd = {k: torch.randn_like(v) * 0.05 for k, v in b.items()}
    theirs.load_state_dict(sd)
    ours.load_state_dict(sd)
    x = torch.randn(3, 197, dim)
    with torch.inference_mode():
        torch.testing.assert_close(ours(x), theirs(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("kind", ["additive", "boolean"])
def test_attention_mask_as_timm_passes_it(kind):
    """THOR passes an additive ALiBi bias; a boolean mask goes through SDPA the same way."""
    torch.manual_seed(5)
    theirs = _timm_block(64, 4).eval()
    ours = vit_block(64, 4).eval()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(2, 10, 64)
    if kind == "additive":
        mask = -torch.rand(1, 4, 10, 10) * 3.0
    else:
        mask = torch.rand(10, 10) > 0.3
        mask.fill_diagonal_(True)
    with torch.inference_mode():
        torch.testing.assert_close(
            ours(x, attn_mask=mask), theirs(x, attn_mask=mask), rtol=1e-5, atol=1e-5
        )
