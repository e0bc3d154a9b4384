"""``attention``: a transformer over all inputs' tokens with a summary token."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    TokenProjection,
    check_batch,
    check_int,
    concat_tokens,
    transformer_blocks,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class AttentionFusion(Fusion):
    r"""Joint self-attention over the tokens of every input, read out through a
    learned summary token (a multimodal [CLS]).

    .. math:: X^{(0)} = [s;\ W_1 T_1 + b_1;\ \dots;\ W_n T_n + b_n], \quad
              X^{(l)} = \mathrm{Block}_l(X^{(l-1)}), \quad h = \mathrm{LN}(X^{(L)}_0)

    ``T_i`` are input i's tokens (its pooled vector as one token when the
    encoder has none). Padding tokens and all tokens of a missing input are
    masked out as keys; the summary token ``s`` is always a valid key, so no
    query ever has an empty key set. Each input's bias ``b_i`` acts as its
    modality embedding.

    Parameters: :math:`\sum_i (D^{tok}_i + 1)\,dim + dim` +
    ``layers`` × :math:`(8\,dim^2 + 11\,dim)` + :math:`2\,dim`.

    Reference: Vaswani et al., "Attention Is All You Need", NeurIPS 2017; joint
    single-stream fusion as in VisualBERT (Li et al. 2019, arXiv:1908.03557) and
    the [CLS] read-out of BERT (Devlin et al. 2019).
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
        dim = check_int("attention", "dim", dim)
        heads = check_int("attention", "heads", heads)
        layers = check_int("attention", "layers", layers)
        self.tokens = TokenProjection(self.inputs, dim)
        self.summary = nn.Parameter(torch.randn(dim) * 0.02)
        self.blocks = transformer_blocks("attention", layers, dim, heads)
        self.norm = nn.LayerNorm(dim)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        x, valid = concat_tokens(self.tokens(feats, present))
        s = self.summary.to(x.dtype).expand(b, 1, -1)
        x = torch.cat([s, x], 1)
        valid = torch.cat([torch.ones(b, 1, dtype=torch.bool, device=valid.device), valid], 1)
        for block in self.blocks:
            x = block(x, valid)
        return self.norm(x[:, 0])
