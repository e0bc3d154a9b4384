"""``bilinear``: low-rank (factorised) bilinear pooling, n inputs."""

from __future__ import annotations

from typing import Mapping

import torch.nn.functional as F
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    check_batch,
    check_int,
    fills,
    missing_embeddings,
    select,
    signed_sqrt,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class BilinearFusion(Fusion):
    r"""Multi-modal factorised bilinear pooling (MFB), extended to n inputs by the
    element-wise product of per-input projections, with power and L2 normalisation.

    .. math:: u_i = \begin{cases} W_i z_i + b_i & i \text{ present} \\ m_i & \text{missing} \end{cases}
              \in \mathbb{R}^{k\,dim}, \quad
              p = \mathrm{SumPool}_k\Big(\prod_i u_i\Big) \in \mathbb{R}^{dim}, \quad
              h = \frac{\operatorname{ssqrt}(p)}{\lVert \operatorname{ssqrt}(p) \rVert_2}

    with ``ssqrt(x) = sign(x)(sqrt(|x| + eps) - sqrt(eps))`` (an epsilon keeps
    the slope finite at 0). ``k = factor`` is the rank of the bilinear form per
    output feature (k = 1 is MLB's Hadamard product). A missing input
    contributes a learned vector ``m_i`` initialised to 1, the identity of the
    product, so at initialisation the product runs over present inputs only.

    Parameters: :math:`\sum_i (D_i + 2)\,k\,dim`.

    References: Yu, Yu, Fan & Tao, "Multi-modal Factorized Bilinear Pooling with
    Co-Attention Learning for Visual Question Answering", ICCV 2017
    (arXiv:1708.01471); Kim et al., "Hadamard Product for Low-rank Bilinear
    Pooling" (MLB), ICLR 2017 (arXiv:1610.04325).
    """

    def __init__(self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256, factor: int = 4):
        super().__init__(inputs)
        dim = check_int("bilinear", "dim", dim)
        factor = check_int("bilinear", "factor", factor)
        self.factor = factor
        widths = [s.num_features for s in self.inputs.values()]
        self.proj = nn.ModuleList(nn.Linear(w, factor * dim) for w in widths)
        self.missing = missing_embeddings([factor * dim] * len(widths), init=1.0)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        prod = None
        for s, proj, m in zip(self.inputs, self.proj, fills(self.missing, len(self.inputs), 1.0)):
            u = select(present[s], proj(select(present[s], feats[s].pooled)), m)
            prod = u if prod is None else prod * u
        assert prod is not None
        p = prod.view(b, -1, self.factor).sum(-1)
        return F.normalize(signed_sqrt(p), dim=-1, eps=1e-12)
