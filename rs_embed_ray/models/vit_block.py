"""The pre-norm ViT block (attention, then MLP, each with a residual), with timm's
``vision_transformer.Block`` parameter names and arithmetic, written here so a model that
needs only this block does not import timm.

Why: importing timm loads every model definition it has, about 1.4 s of CPU at the start of
a run, before the first forward. ``tests/models/test_vit_block.py`` checks the block against
timm's with the same weights. Torch is imported when a block is made.
"""

from __future__ import annotations

from functools import cache
from typing import Any


def vit_block(dim: int, num_heads: int, mlp_ratio: float = 4.0, eps: float = 1e-6) -> Any:
    """timm's ``Block(dim, num_heads, mlp_ratio, qkv_bias=True,
    norm_layer=partial(nn.LayerNorm, eps=eps))``: no layer scale, no drop path, GELU."""
    return _block_class()(dim, num_heads, mlp_ratio, eps)


@cache
def _block_class() -> type:
    import torch
    from torch import nn
    from torch.nn import functional as F

    class Attention(nn.Module):
        def __init__(self, dim: int, num_heads: int) -> None:
            super().__init__()
            self.num_heads = num_heads
            self.qkv = nn.Linear(dim, dim * 3, bias=True)
            self.proj = nn.Linear(dim, dim)

        def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None) -> torch.Tensor:
            b, n, c = x.shape
            qkv = self.qkv(x).reshape(b, n, 3, self.num_heads, c // self.num_heads)
            q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
            x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
            return self.proj(x.transpose(1, 2).reshape(b, n, c))

    class Mlp(nn.Module):
        def __init__(self, dim: int, hidden: int) -> None:
            super().__init__()
            self.fc1 = nn.Linear(dim, hidden)
            self.act = nn.GELU()
            self.fc2 = nn.Linear(hidden, dim)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc2(self.act(self.fc1(x)))

    class Block(nn.Module):
        def __init__(self, dim: int, num_heads: int, mlp_ratio: float, eps: float) -> None:
            super().__init__()
            self.norm1 = nn.LayerNorm(dim, eps=eps)
            self.attn = Attention(dim, num_heads)
            self.norm2 = nn.LayerNorm(dim, eps=eps)
            self.mlp = Mlp(dim, int(dim * mlp_ratio))

        def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
            """``attn_mask``: a boolean mask or an additive bias, as timm passes it to SDPA."""
            x = x + self.attn(self.norm1(x), attn_mask)
            return x + self.mlp(self.norm2(x))

    return Block
