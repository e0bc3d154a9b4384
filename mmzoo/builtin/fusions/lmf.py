"""``lmf``: low-rank multimodal fusion."""

from __future__ import annotations

import math
from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    check_batch,
    check_int,
    fills,
    missing_embeddings,
    select,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class LMFFusion(Fusion):
    r"""Low-rank multimodal fusion: the tensor-fusion weight
    :math:`\mathcal{W}` applied to :math:`\bigotimes_i [z_i; 1]`, factorised
    into rank-``r`` modality-specific factors, so the cost is linear in the
    number of inputs instead of exponential.

    .. math:: h = \sum_{k=1}^{r} \lambda_k \prod_{i=1}^{n} \big(W_i^{(k)} [\tilde z_i; 1]\big) + b,
              \qquad W_i^{(k)} \in \mathbb{R}^{dim \times (D_i + 1)}

    ``\tilde z_i`` is ``z_i`` when present, else a learned missing-input
    embedding ``m_i``. The factors are registered parameters (one
    :class:`nn.Parameter` per input in an :class:`nn.ParameterList`), so they
    are saved and trained (the reference implementation of a peer library
    keeps them in a Python list, where they never train).

    Parameters: :math:`\sum_i \big(r (D_i + 1)\,dim + D_i\big) + r + dim`.

    Reference: Liu, Shen, Lakshminarasimhan, Liang, Zadeh & Morency, "Efficient
    Low-rank Multimodal Fusion with Modality-Specific Factors", ACL 2018
    (arXiv:1806.00064).
    """

    def __init__(self, inputs: Mapping[str, InputSpec | int], *, dim: int = 128, rank: int = 4):
        super().__init__(inputs)
        dim = check_int("lmf", "dim", dim)
        rank = check_int("lmf", "rank", rank)
        widths = [s.num_features for s in self.inputs.values()]
        self.factors = nn.ParameterList()
        for w in widths:
            factor = torch.empty(rank, w + 1, dim)
            # xavier-normal scale for a (w + 1) x dim matrix, applied to each rank slice
            nn.init.normal_(factor, std=math.sqrt(2.0 / (w + 1 + dim)))
            self.factors.append(nn.Parameter(factor))
        self.missing = missing_embeddings(widths)
        self.rank_weights = nn.Parameter(torch.full((rank,), 1.0 / rank))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        check_batch(self, feats, present)
        prod = None
        for s, factor, m in zip(self.inputs, self.factors, fills(self.missing, len(self.inputs))):
            z = select(present[s], feats[s].pooled, m)
            z1 = torch.cat([z, z.new_ones(z.shape[0], 1)], -1)  # [z; 1]
            f = torch.einsum("bd,rdo->bro", z1, factor.to(z.dtype))  # (B, r, dim)
            prod = f if prod is None else prod * f
        assert prod is not None
        return torch.einsum("bro,r->bo", prod, self.rank_weights.to(prod.dtype)) + self.bias
