"""``late``: decision-level fusion, predictions averaged over present inputs."""

from __future__ import annotations

from typing import ClassVar, Mapping

import torch
from torch import Tensor, nn

from mmzoo.builtin.fusions._common import check_batch, check_int, masked_mean, select
from mmzoo.components import EncoderOutput, Fusion, InputSpec


class LateFusion(Fusion):
    r"""Decision-level ("late", model-level) fusion: a classifier per input,
    its logits averaged over the inputs present for each sample.

    .. math:: y = \frac{1}{|P|} \sum_{i \in P} (W_i z_i + b_i)

    With ``num_classes > 0`` (passed by the model, not part of the name) each
    ``W_i`` maps to class logits and the output is the model's output: the
    model adds no head of its own. With ``num_classes = 0`` each ``W_i`` maps
    to ``dim`` and the output is the averaged embedding (identical to
    ``mean``). Averaging logits is a product of experts over the present
    inputs' softmax distributions; a missing input simply drops out.

    Parameters: :math:`\sum_i (D_i + 1)\,C` with ``C = num_classes or dim``.

    Reference: late fusion in Snoek, Worring & Smeulders, "Early versus Late
    Fusion in Semantic Video Analysis", ACM MM 2005; Baltrušaitis et al.,
    "Multimodal Machine Learning: A Survey and Taxonomy", TPAMI 2019.
    """

    decision_level: ClassVar[bool] = True

    def __init__(
        self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256, num_classes: int = 0
    ):
        super().__init__(inputs)
        dim = check_int("late", "dim", dim)
        num_classes = check_int("late", "num_classes", num_classes, minimum=0)
        self.num_classes = num_classes
        width = num_classes or dim
        self.heads = nn.ModuleList(nn.Linear(s.num_features, width) for s in self.inputs.values())
        self.num_features = width

    def forward(self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]) -> Tensor:
        check_batch(self, feats, present)
        y = torch.stack(
            [head(select(present[s], feats[s].pooled)) for s, head in zip(self.inputs, self.heads)],
            1,
        )
        mask = torch.stack([present[s] for s in self.inputs], 1)
        return masked_mean(y, mask)
