"""``mean``: project each input to a common width, pool over the present ones."""

from __future__ import annotations

from typing import Mapping

from torch import Tensor

from mmzoo.builtin.fusions._common import masked_mean
from mmzoo.builtin.fusions._pooling import PoolingFusion
from mmzoo.components import EncoderOutput


class MeanFusion(PoolingFusion):
    r"""Mean of projected features over the present inputs.

    .. math:: h = \frac{1}{|P|} \sum_{i \in P} (W_i z_i + b_i)

    Invariant in scale to how many inputs a sample has. Parameters:
    :math:`\sum_i (D_i + 1)\,dim`.

    Reference: average fusion, e.g. Neverova et al., "ModDrop: Adaptive
    Multi-modal Gesture Recognition", TPAMI 2016 (arXiv:1501.00102);
    Baltrušaitis et al., TPAMI 2019.
    """

    _kind = "mean"

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        p, mask = self._projected(feats, present)
        return masked_mean(p, mask)
