"""Base of ``sum``, ``mean``, ``max``: project to a common width, pool over present inputs."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import check_batch, check_int, select
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class PoolingFusion(Fusion):
    """Shared body: ``p_i = W_i z_i + b_i`` for each input, pooled over the
    inputs present for each sample. Parameters: :math:`\\sum_i (D_i + 1)\\,dim`."""

    _kind = ""

    def __init__(self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256):
        super().__init__(inputs)
        dim = check_int(self._kind, "dim", dim)
        self.proj = nn.ModuleList(nn.Linear(s.num_features, dim) for s in self.inputs.values())
        self.num_features = dim

    def _projected(
        self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> tuple[Tensor, Tensor]:
        check_batch(self, feats, present)
        # missing inputs are zeroed before the projection so that not even their
        # gradient (0 * inf) can leak; their projections are then masked out
        p = torch.stack(
            [proj(select(present[s], feats[s].pooled)) for s, proj in zip(self.inputs, self.proj)],
            1,
        )
        mask = torch.stack([present[s] for s in self.inputs], 1)
        return p, mask
