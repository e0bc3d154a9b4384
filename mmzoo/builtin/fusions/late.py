"""``late``: decision-level fusion, predictions averaged over present inputs."""

from __future__ import annotations

from typing import ClassVar, Mapping

from torch import nn

from mmzoo.builtin.fusions._common import check_int
from mmzoo.builtin.fusions.mean import MeanFusion
from mmzoo.components import InputSpec


class LateFusion(MeanFusion):
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
    _kind = "late"

    def __init__(
        self, inputs: Mapping[str, InputSpec | int], *, dim: int = 256, num_classes: int = 0
    ):
        dim = check_int("late", "dim", dim)
        num_classes = check_int("late", "num_classes", num_classes, minimum=0)
        # the body is mean's: per-input projections (here classifiers), averaged over present inputs
        super().__init__(inputs, dim=num_classes or dim)
        self.num_classes = num_classes

    @property
    def heads(self) -> nn.ModuleList:
        """The per-input classifiers ``W_i``."""
        return self.proj
