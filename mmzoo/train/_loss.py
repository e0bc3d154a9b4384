"""Per-class weights of the cross-entropy (:func:`class_weights`)."""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo.errors import InputError

__all__ = ["class_weights"]


def class_weights(class_weight: str | Mapping[Any, float] | None, labels: Any, num_classes: int,
                  label_names: Sequence[str] = ()) -> Tensor | None:
    """The (num_classes,) weights for ``F.cross_entropy(weight=...)``, or None.

    ``"balanced"``: ``w_c = n / (k * count_c)`` over the training ``labels``
    (class indices), with n samples and k classes present, as in
    scikit-learn's ``compute_class_weight("balanced")``: every present class
    then carries the same total weight n / k. A class with no training
    sample gets 0 (it is never a target). A mapping ``{label: weight}`` names
    classes by label (``label_names``) or index; unnamed classes get 1.
    """
    if class_weight is None:
        return None
    if class_weight == "balanced":
        if labels is None:
            raise InputError("class_weight='balanced' needs the training split's labels, and this split "
                             "gives none up front (a stream); pass class_weight={label: weight} instead")
        labels = torch.as_tensor(labels, dtype=torch.long).flatten()
        if labels.numel() == 0:
            raise InputError("class_weight='balanced': the training split has no labels")
        counts = torch.bincount(labels, minlength=num_classes)[:num_classes].double()
        present = int((counts > 0).sum())
        weights = torch.where(counts > 0, labels.numel() / (present * counts.clamp(min=1)), 0.0)
        return weights.float()
    if not isinstance(class_weight, Mapping):
        raise InputError(f"class_weight must be None, 'balanced' or a mapping {{label: weight}}, "
                         f"got {class_weight!r}")
    index = {str(name): i for i, name in enumerate(label_names)}
    weights = torch.ones(num_classes)
    for key, value in class_weight.items():
        if str(key) in index:
            i = index[str(key)]
        elif isinstance(key, int) and not isinstance(key, bool) and 0 <= key < num_classes:
            i = key
        else:
            raise InputError(f"class_weight names class {key!r}, which the model does not have "
                             f"(labels: {list(label_names)[:20] or f'indices 0..{num_classes - 1}'})")
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= 0 \
                or value == float("inf"):
            raise InputError(f"class_weight[{key!r}] must be a finite number >= 0, got {value!r}")
        weights[i] = float(value)
    if not bool((weights > 0).any()):
        raise InputError("class_weight gives every class weight 0: nothing would be learned")
    return weights
