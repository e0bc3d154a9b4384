"""``film``: feature-wise linear modulation by one conditioning input."""

from __future__ import annotations

from typing import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import check_batch, check_int, missing_embedding, select
from mmzoo.components import EncoderOutput, Fusion, InputSpec
from mmzoo.errors import InputError


class FiLMFusion(Fusion):
    r"""Feature-wise linear modulation: one input (``condition``) produces a
    per-feature scale and shift applied to the projection of each other input.

    .. math:: \gamma = 1 + W_\gamma \tilde z_c + b_\gamma, \quad
              \beta = W_\beta \tilde z_c + b_\beta, \quad
              h = \frac{1}{n-1} \sum_{j \ne c} \mathrm{GELU}\big(\gamma \odot (W_j \tilde z_j + b_j) + \beta\big)

    ``condition`` is a slot name or an index into the inputs (default ``-1``,
    the last input; e.g. the question in VQA). ``\tilde z_i`` is ``z_i`` when
    present, else a learned missing-input embedding ``m_i`` (so a sample
    without its conditioning input is modulated by a learned default).
    Needs at least two inputs.

    Parameters: :math:`2 (D_c + 1)\,dim + \sum_{j \ne c} (D_j + 1)\,dim + \sum_i D_i`.

    Reference: Perez, Strub, de Vries, Dumoulin & Courville, "FiLM: Visual
    Reasoning with a General Conditioning Layer", AAAI 2018 (arXiv:1709.07871).
    """

    def __init__(
        self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256, condition: int | str = -1
    ):
        super().__init__(inputs)
        dim = check_int("film", "dim", dim)
        slots = list(self.inputs)
        if len(slots) < 2:
            raise InputError(
                f"fusion 'film' needs at least two inputs (one conditions the others), got {slots}; "
                "use a single-input fusion such as 'mean' instead"
            )
        n = len(slots)
        if isinstance(condition, str) and condition in self.inputs:
            index = slots.index(condition)
        elif isinstance(condition, int) and not isinstance(condition, bool) and -n <= condition < n:
            index = condition % n
        else:
            raise InputError(
                f"fusion 'film': condition={condition!r} names no input; give a slot name "
                f"from {slots} or an index in [-{len(slots)}, {len(slots) - 1}]"
            )
        self.condition_slot = slots[index]
        self.modulated = [s for s in slots if s != self.condition_slot]
        cond_width = self.inputs[self.condition_slot].num_features
        self.cond_missing = missing_embedding(cond_width)
        self.film = nn.Linear(cond_width, 2 * dim)
        self.proj = nn.ModuleList(nn.Linear(self.inputs[s].num_features, dim) for s in self.modulated)
        self.missing = nn.ParameterList(
            missing_embedding(self.inputs[s].num_features) for s in self.modulated
        )
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        check_batch(self, feats, present)
        c = self.condition_slot
        gamma, beta = self.film(select(present[c], feats[c].pooled, self.cond_missing)).chunk(2, -1)
        gamma = gamma + 1.0
        h = [
            F.gelu(gamma * proj(select(present[s], feats[s].pooled, m)) + beta)
            for s, proj, m in zip(self.modulated, self.proj, self.missing)
        ]
        return torch.stack(h, 1).mean(1)
