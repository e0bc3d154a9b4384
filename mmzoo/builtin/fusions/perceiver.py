"""``perceiver``: learned latents cross-attend to all tokens of all inputs."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    TokenProjection,
    TransformerBlock,
    check_batch,
    check_int,
    concat_tokens,
    transformer_blocks,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class PerceiverFusion(Fusion):
    r"""Perceiver-style bottleneck: a small array of learned latents
    cross-attends to the tokens of every input, then self-attends.

    .. math:: X = [\nu;\ W_1 T_1 + b_1;\ \dots;\ W_n T_n + b_n], \quad
              L^{(0)} = \mathrm{CrossBlock}(L, X), \quad
              L^{(l)} = \mathrm{Block}_l(L^{(l-1)}), \quad
              h = \mathrm{LN}\big(\operatorname{mean}_k L^{(L)}_k\big)

    ``L`` holds ``latents`` learned vectors; the cost is
    :math:`O(latents \cdot \sum_i T_i)`, linear in the total number of tokens.
    Padding and missing inputs are masked out as keys; the learned null token
    ``\nu`` is always a valid key. Encoders without tokens contribute their
    pooled vector as one token.

    Parameters: :math:`\sum_i (D^{tok}_i + 1)\,dim + (latents + 1)\,dim` +
    :math:`(8\,dim^2 + 13\,dim)` + ``layers`` × :math:`(8\,dim^2 + 11\,dim)` + :math:`2\,dim`.

    Reference: Jaegle et al., "Perceiver: General Perception with Iterative
    Attention", ICML 2021 (arXiv:2103.03206).
    """

    def __init__(
        self,
        inputs: Mapping[str, InputSpec | int],
        *,
        dim: int = 128,
        latents: int = 8,
        heads: int = 4,
        layers: int = 1,
    ):
        super().__init__(inputs)
        dim = check_int("perceiver", "dim", dim)
        latents = check_int("perceiver", "latents", latents)
        heads = check_int("perceiver", "heads", heads)
        layers = check_int("perceiver", "layers", layers, minimum=0)
        self.tokens = TokenProjection(self.inputs, dim)
        self.latents = nn.Parameter(torch.randn(latents, dim) * 0.02)
        self.null = nn.Parameter(torch.randn(dim) * 0.02)
        self.cross = TransformerBlock(dim, heads, cross=True)
        self.blocks = transformer_blocks("perceiver", layers, dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        x, valid = concat_tokens(self.tokens(feats, present))
        x = torch.cat([self.null.to(x.dtype).expand(b, 1, -1), x], 1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=valid.device), valid], 1)
        lat = self.latents.to(x.dtype).expand(b, -1, -1)
        lat = self.cross(lat, valid, x)
        all_valid = torch.ones(lat.shape[:2], dtype=torch.bool, device=lat.device)
        for block in self.blocks:
            lat = block(lat, all_valid)
        return self.norm(lat.mean(1))
