"""``sum``: project each input to a common width, pool over the present ones."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor

from mmzoo.builtin.fusions._pooling import PoolingFusion
from mmzoo.components import EncoderOutput


class SumFusion(PoolingFusion):
    r"""Sum of projected features over the present inputs.

    .. math:: h = \sum_{i \in P} (W_i z_i + b_i)

    Parameters: :math:`\sum_i (D_i + 1)\,dim`.

    Reference: additive (element-wise sum) fusion, the early-fusion baseline of
    Baltrušaitis et al., "Multimodal Machine Learning: A Survey and Taxonomy",
    TPAMI 2019 (arXiv:1705.09406).
    """

    _kind = "sum"

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        p, mask = self._projected(feats, present)
        return torch.where(mask.unsqueeze(-1), p, 0.0).sum(1)
