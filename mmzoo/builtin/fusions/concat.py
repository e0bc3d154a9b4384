"""``concat``: early fusion by concatenation."""

from __future__ import annotations

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


class ConcatFusion(Fusion):
    r"""Concatenate the pooled features, then project.

    .. math:: \tilde z_i = \begin{cases} z_i & i \text{ present} \\ m_i & \text{missing} \end{cases},
              \qquad h = W [\tilde z_1; \dots; \tilde z_n] + b

    ``m_i`` is a learned missing-input embedding. With ``dim=0`` there is no
    projection and ``h`` is the concatenation (width :math:`\sum_i D_i`).

    Parameters: :math:`\sum_i D_i` (missing embeddings) +
    :math:`(\sum_i D_i + 1)\,dim`.

    Reference: the early-fusion baseline of Baltrušaitis, Ahuja & Morency,
    "Multimodal Machine Learning: A Survey and Taxonomy", TPAMI 2019
    (arXiv:1705.09406).
    """

    def __init__(self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256):
        super().__init__(inputs)
        dim = check_int("concat", "dim", dim, minimum=0)
        widths = [s.num_features for s in self.inputs.values()]
        self.missing = missing_embeddings(widths)
        if dim:
            self.proj = nn.Linear(sum(widths), dim)
        self.num_features = dim or sum(widths)

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        check_batch(self, feats, present)
        missing = fills(self.missing, len(self.inputs))
        parts = [select(present[s], feats[s].pooled, m) for s, m in zip(self.inputs, missing)]
        h = torch.cat(parts, -1)
        return self.proj(h) if hasattr(self, "proj") else h
