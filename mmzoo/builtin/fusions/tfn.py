"""``tfn``: tensor fusion network (outer product of [z; 1])."""

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
from mmzoo.errors import InputError


class TFNFusion(Fusion):
    r"""Tensor fusion: project each input to ``hidden`` features, append a 1,
    take the outer product over all inputs (which holds every unimodal,
    bimodal, ... n-modal interaction term), flatten, then a linear layer + ReLU.

    .. math:: u_i = \begin{cases} W_i z_i + b_i & i \text{ present} \\ m_i & \text{missing} \end{cases},
              \quad h = \mathrm{ReLU}\Big(V \operatorname{vec}\big(\textstyle\bigotimes_{i=1}^{n} [u_i; 1]\big) + c\Big)

    The fused tensor has :math:`(hidden + 1)^n` entries per sample; building
    the fusion raises :class:`~mmzoo.errors.InputError` if that exceeds
    ``max_size`` (raise it, or lower ``hidden``, or use ``lmf``, its low-rank
    version). ``m_i`` is a learned missing-input embedding.

    Parameters: :math:`\sum_i (D_i + 2)\,hidden + ((hidden + 1)^n + 1)\,dim`.

    Reference: Zadeh, Chen, Poria, Cambria & Morency, "Tensor Fusion Network for
    Multimodal Sentiment Analysis", EMNLP 2017 (arXiv:1707.07250).
    """

    def __init__(
        self,
        inputs: Mapping[str, InputSpec | int],
        *,
        dim: int = 128,
        hidden: int = 16,
        max_size: int = 65536,
    ):
        super().__init__(inputs)
        dim = check_int("tfn", "dim", dim)
        hidden = check_int("tfn", "hidden", hidden)
        max_size = check_int("tfn", "max_size", max_size)
        n = len(self.inputs)
        size = (hidden + 1) ** n
        if size > max_size:
            fits = round(max_size ** (1.0 / n)) - 1  # largest hidden that fits
            while fits >= 1 and (fits + 1) ** n > max_size:
                fits -= 1
            while (fits + 2) ** n <= max_size:
                fits += 1
            hint = f"tfn(hidden={fits})" if fits >= 1 else "'lmf' (linear in the number of inputs)"
            raise InputError(
                f"fusion 'tfn' with {n} inputs and hidden={hidden} builds a fused tensor of "
                f"(hidden+1)^{n} = {size:,} entries per sample (and {size * dim:,} weights), over "
                f"max_size={max_size:,}; use {hint}, raise tfn(max_size=...), or use 'lmf'"
            )
        widths = [s.num_features for s in self.inputs.values()]
        self.proj = nn.ModuleList(nn.Linear(w, hidden) for w in widths)
        self.missing = missing_embeddings([hidden] * len(widths))
        self.out = nn.Linear(size, dim)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        t = None
        for s, proj, m in zip(self.inputs, self.proj, fills(self.missing, len(self.inputs))):
            u = select(present[s], proj(select(present[s], feats[s].pooled)), m)
            u1 = torch.cat([u, u.new_ones(b, 1)], -1)
            t = u1 if t is None else (t.unsqueeze(-1) * u1.unsqueeze(1)).flatten(1)
        assert t is not None
        return torch.relu(self.out(t))
