"""``cross_attn``: MulT-style cross-modal transformer over unaligned sequences."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    TokenProjection,
    check_batch,
    check_int,
    masked_mean,
    transformer_blocks,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec
from mmzoo.errors import InputError


class CrossAttentionFusion(Fusion):
    r"""Cross-modal transformer: each input's token sequence attends to the
    tokens of all the other inputs, then the streams are pooled.

    .. math:: X_i^{(0)} = W_i T_i + b_i, \quad
              C_i = [\nu_i;\ X_j^{(0)}\ \forall j \ne i], \quad
              X_i^{(l)} = \mathrm{CrossBlock}_{i,l}(X_i^{(l-1)}, C_i), \quad
              h = \mathrm{LN}\Big(\frac{1}{|P|} \sum_{i \in P} \operatorname{mean}_t X_{i,t}^{(L)}\Big)

    Sequences may have any, different lengths and need no alignment (MulT's
    "unaligned" setting): attention is over the concatenated key sequence
    ``C_i`` with padding and missing inputs masked out. A learned null token
    ``\nu_i`` is always a valid key, so a query whose other inputs are all
    missing stays finite. Each target input has its own blocks (MulT's
    directional crossmodal transformers, with the n-1 sources of a target
    merged into one key sequence so the cost stays linear in n); the mean of
    each stream over its valid tokens is averaged over the present inputs.
    Encoders without tokens contribute their pooled vector as one token.
    Needs at least two inputs.

    Parameters: :math:`\sum_i (D^{tok}_i + 1)\,dim` + ``n × layers`` ×
    :math:`(8\,dim^2 + 13\,dim)` + :math:`n\,dim + 2\,dim`.

    Reference: Tsai, Bai, Liang, Kolter, Morency & Salakhutdinov, "Multimodal
    Transformer for Unaligned Multimodal Language Sequences", ACL 2019
    (arXiv:1906.00295).
    """

    def __init__(
        self,
        inputs: Mapping[str, InputSpec | int],
        *,
        dim: int = 128,
        heads: int = 4,
        layers: int = 1,
    ):
        super().__init__(inputs)
        dim = check_int("cross_attn", "dim", dim)
        heads = check_int("cross_attn", "heads", heads)
        layers = check_int("cross_attn", "layers", layers)
        n = len(self.inputs)
        if n < 2:
            raise InputError(
                f"fusion 'cross_attn' needs at least two inputs (each attends to the others), "
                f"got {list(self.inputs)}; use 'attention' or 'perceiver' for a single input"
            )
        self.tokens = TokenProjection(self.inputs, dim)
        self.null = nn.Parameter(torch.randn(n, dim) * 0.02)
        self.blocks = nn.ModuleList(
            transformer_blocks(f"cross_attn, input {slot!r}", layers, dim, heads, cross=True)
            for slot in self.inputs
        )
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        parts = self.tokens(feats, present)
        ones = torch.ones(b, 1, dtype=torch.bool, device=parts[0][1].device)
        pooled = []
        for i, (x, valid) in enumerate(parts):
            null = self.null[i].to(x.dtype).expand(b, 1, -1)
            ctx = torch.cat([null] + [t for j, (t, _) in enumerate(parts) if j != i], 1)
            key_mask = torch.cat([ones] + [m for j, (_, m) in enumerate(parts) if j != i], 1)
            for block in self.blocks[i]:
                x = block(x, key_mask, ctx)
            pooled.append(masked_mean(x, valid))
        present_any = torch.stack([valid.any(1) for _, valid in parts], 1)  # (B, n)
        return self.norm(masked_mean(torch.stack(pooled, 1), present_any))
