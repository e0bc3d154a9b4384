"""``max``: project each input to a common width, pool over the present ones."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from mmzoo.builtin.fusions._common import masked_max
from mmzoo.builtin.fusions._pooling import PoolingFusion
from mmzoo.components import EncoderOutput


class MaxFusion(PoolingFusion):
    r"""Element-wise max of projected features over the present inputs.

    .. math:: h_k = \max_{i \in P} (W_i z_i + b_i)_k

    Parameters: :math:`\sum_i (D_i + 1)\,dim`.

    Reference: max-pooling fusion, e.g. Su et al., "Multi-view Convolutional
    Neural Networks for 3D Shape Recognition" (view pooling), ICCV 2015.
    """

    _kind = "max"

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        p, mask = self._projected(feats, present)
        return masked_max(p, mask)
