"""Transformer layers shared by built-in encoders and fusions; all attention
runs through :func:`torch.nn.functional.scaled_dot_product_attention`."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from mmzoo.components import check_params
from mmzoo.errors import InputError

__all__ = ["MultiHeadAttention", "TransformerBlock", "transformer_blocks"]


class MultiHeadAttention(nn.Module):
    """Multi-head attention through :func:`F.scaled_dot_product_attention`
    with a boolean key mask (True = attend)."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0):
        super().__init__()
        if dim % heads:
            raise InputError(f"attention width {dim} is not divisible by heads={heads}")
        self.heads = heads
        self.dropout = dropout
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.out = nn.Linear(dim, dim)

    def forward(self, x: Tensor, ctx: Tensor, key_mask: Tensor) -> Tensor:
        b, tq, d = x.shape
        tk = ctx.shape[1]
        h = self.heads
        q = self.q(x).view(b, tq, h, d // h).transpose(1, 2)
        k, v = self.kv(ctx).view(b, tk, 2, h, d // h).permute(2, 0, 3, 1, 4)
        o = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask[:, None, None, :],
                                           dropout_p=self.dropout if self.training else 0.0)
        return self.out(o.transpose(1, 2).reshape(b, tq, d))


class TransformerBlock(nn.Module):
    """Pre-norm transformer block (Vaswani et al. 2017; Xiong et al. 2020):
    ``x += Attn(LN(x), LN(ctx)); x += FFN(LN(x))``. Self-attention when ``ctx``
    is None (then ``key_mask`` masks ``x`` itself), cross-attention otherwise."""

    def __init__(self, dim: int, heads: int, *, cross: bool = False, mlp_ratio: float = 2,
                 dropout: float = 0.0):
        super().__init__()
        hidden = int(mlp_ratio * dim)
        self.norm = nn.LayerNorm(dim)
        if cross:
            self.norm_ctx = nn.LayerNorm(dim)
        self.attn = MultiHeadAttention(dim, heads, dropout)
        self.norm_ff = nn.LayerNorm(dim)
        self.ff = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim), nn.Dropout(dropout))

    @staticmethod
    def num_params(dim: int, *, cross: bool = False, mlp_ratio: float = 2) -> int:
        """Parameters of one block, known before it is built."""
        hidden = int(mlp_ratio * dim)
        norms = (3 + cross) * 2 * dim
        return norms + 4 * dim * dim + 4 * dim + 2 * dim * hidden + hidden + dim

    def forward(self, x: Tensor, key_mask: Tensor, ctx: Tensor | None = None) -> Tensor:
        h = self.norm(x)
        c = h if ctx is None else self.norm_ctx(ctx)
        x = x + self.attn(h, c, key_mask)
        return x + self.ff(self.norm_ff(x))


def transformer_blocks(owner: str, depth: int, dim: int, heads: int, *, cross: bool = False,
                       mlp_ratio: float = 2, dropout: float = 0.0) -> nn.ModuleList:
    """``depth`` blocks, refused before the first is built if they would pass
    the parameter limit (``depth=100000`` fails at once, not after minutes)."""
    if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not int(mlp_ratio * dim) >= 1:
        raise InputError(f"{owner}: mlp_ratio={mlp_ratio!r} leaves the blocks' MLP without units "
                         f"(int(mlp_ratio * dim) must be >= 1 for dim={dim}); give e.g. mlp_ratio=2")
    check_params(f"{owner}: {depth} transformer blocks",
                 depth * TransformerBlock.num_params(dim, cross=cross, mlp_ratio=mlp_ratio))
    return nn.ModuleList(TransformerBlock(dim, heads, cross=cross, mlp_ratio=mlp_ratio, dropout=dropout)
                         for _ in range(depth))
