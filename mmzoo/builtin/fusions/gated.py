"""``gated``: gated multimodal unit for n inputs."""

from __future__ import annotations

from typing import Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import (
    check_batch,
    check_int,
    fills,
    masked_softmax,
    missing_embeddings,
    select,
)
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class GatedFusion(Fusion):
    r"""Gated multimodal unit (GMU), generalised to n inputs.

    .. math:: h_i = \tanh(W_i z_i + b_i), \quad
              g = \operatorname{softmax}_{i \in P}\big(W_g [\tilde z_1; \dots; \tilde z_n] + b_g\big),
              \quad h = \sum_{i \in P} g_i \odot h_i

    The gate ``g`` is per feature (shape n × dim) and normalised over the set
    ``P`` of inputs present for each sample (for two inputs it is the GMU's
    ``z`` / ``1 - z``). A missing input's ``h_i`` gets gate exactly 0. The gate
    reads every input; with three or more inputs a learned embedding ``m_i``
    stands in (``\tilde z_i``) for a missing one. With two inputs a sample
    missing one has a single present input whose gate is 1 whatever the
    logits, so no such embedding is built (it could never train) and the
    missing input's slot of the gate input is zero. With one input there is
    no gate: ``h = tanh(W_1 z_1 + b_1)``.

    For three or more inputs this is a *softmax* variant: the gates compete
    (they sum to 1 over present inputs per feature), whereas the paper
    defines only the two-input unit with one sigmoid gate. It is not an
    n-way GMU with independent sigmoid gates.

    Parameters: :math:`\sum_i (D_i + 1)\,dim` + :math:`(\sum_i D_i + 1)\,n\,dim` for
    ``n >= 2`` (+ :math:`\sum_i D_i` for ``n >= 3``).

    Reference: Arevalo, Solorio, Montes-y-Gómez & González, "Gated Multimodal
    Units for Information Fusion", ICLR workshop 2017 (arXiv:1702.01992).
    """

    def __init__(self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256):
        super().__init__(inputs)
        dim = check_int("gated", "dim", dim)
        widths = [s.num_features for s in self.inputs.values()]
        self.proj = nn.ModuleList(nn.Linear(w, dim) for w in widths)
        # with two inputs a sample missing one has a single gate of 1: no stand-in needed
        self.missing = missing_embeddings(widths) if len(widths) >= 3 else nn.ParameterList()
        if len(widths) >= 2:  # with one input the gate is always 1
            self.gate = nn.Linear(sum(widths), len(widths) * dim)
        self.num_features = dim

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        b = check_batch(self, feats, present)
        slots = list(self.inputs)
        mask = torch.stack([present[s] for s in slots], 1)  # (B, n)
        if hasattr(self, "gate"):
            missing = fills(self.missing, len(slots))
            gate_in = torch.cat(
                [select(present[s], feats[s].pooled, m) for s, m in zip(slots, missing)], -1
            )
            gate = masked_softmax(self.gate(gate_in).view(b, len(slots), -1), mask.unsqueeze(-1))
        else:
            gate = mask.unsqueeze(-1).float()
        # a missing input's h_i is computed from zeros (gate 0), so nothing leaks
        h = torch.stack(
            [torch.tanh(p(select(present[s], feats[s].pooled))) for s, p in zip(slots, self.proj)],
            1,
        )
        return (gate * h).sum(1)
