"""MultimodalModel: one encoder per input, a fusion, and a classification head."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Mapping

import torch
from torch import Tensor, nn

from mmzoo.components import Encoder, EncoderOutput, Fusion
from mmzoo.errors import InputError

__all__ = ["MultimodalModel"]


class MultimodalModel(nn.Module):
    """Encoders keyed by input name, a fusion and a head.

    ``model(image=..., text=..., present=None)`` returns (B, num_classes)
    logits, or the (B, num_features) fused embedding when ``num_classes=0``.
    An input is missing for the whole batch when omitted or ``None``, and
    per sample through ``present={"text": BoolTensor(B)}`` (or, for text,
    when a sample has no tokens). Missing inputs never reach the fusion's
    statistics. A sample with no input at all raises :class:`InputError` on
    the CPU; on an accelerator or under ``torch.compile`` the model does not
    check (that would need a host sync) and such a sample gets the fusion's
    all-missing output.

    ``modality_dropout=p`` drops each present input of each sample with
    probability p during training (never every input of a sample).
    """

    def __init__(self, encoders: Mapping[str, Encoder], fusion: Fusion, num_classes: int = 0, *,
                 drop_rate: float = 0.0, modality_dropout: float = 0.0, name: str = "",
                 config: Mapping[str, Any] | None = None, labels: list[str] | None = None):
        super().__init__()
        if not encoders:
            raise InputError("a model needs at least one encoder")
        if not 0.0 <= modality_dropout < 1.0:
            raise InputError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        if num_classes < 0:
            raise InputError(f"num_classes must be >= 0, got {num_classes}")
        if labels is not None and len(labels) != num_classes:
            raise InputError(f"{len(labels)} labels given for num_classes={num_classes}")
        self.encoders = nn.ModuleDict(dict(encoders))
        self.fusion = fusion
        self.num_classes = num_classes
        self.drop_rate = drop_rate
        self.modality_dropout = modality_dropout
        self.name = name
        self.labels = list(labels) if labels is not None else None
        self.config: dict[str, Any] = dict(config or {})
        self._processor = None
        if fusion.decision_level and num_classes > 0:
            self.head: nn.Module = nn.Identity()
        elif num_classes > 0:
            self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(fusion.num_features, num_classes))
        else:
            self.head = nn.Identity()

    # ---------------------------------------------------------------- info
    @property
    def inputs(self) -> tuple[str, ...]:
        """Input names, in the order of the model name (e.g. ``("image", "text")``)."""
        return tuple(self.encoders.keys())

    @property
    def num_features(self) -> int:
        """Width of the fused embedding (the output when ``num_classes=0``)."""
        return self.fusion.num_features

    @property
    def processor(self):
        """Turns raw inputs into tensors: ``model(**model.processor(image=[...], text=[...]))``."""
        if self._processor is None:
            from mmzoo.processing import MultimodalProcessor

            self._processor = MultimodalProcessor.for_model(self)
        return self._processor

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write ``config.json``, ``model.safetensors`` and processor files atomically."""
        from mmzoo.weights import save_pretrained

        return save_pretrained(self, directory)

    def extra_repr(self) -> str:
        return f"name={self.name!r}, num_classes={self.num_classes}"

    # ---------------------------------------------------------------- forward
    def forward(self, *args: Any, present: Mapping[str, Any] | None = None, **inputs: Any) -> Tensor:
        if args:
            raise InputError(
                f"pass inputs by name, e.g. model({', '.join(f'{s}=...' for s in self.inputs)}); "
                f"got {len(args)} positional argument(s)"
            )
        feats, present_masks = self.encode(present=present, **inputs)
        return self.head(self.fusion(feats, present_masks))

    def predict(self, batch: Mapping[str, Any], present: Mapping[str, Any] | None = None
                ) -> tuple[list[str], Tensor]:
        """Label names and (B, num_classes) probabilities; ``batch`` holds tensors
        or raw values (lists) for the processor."""
        from mmzoo.predict import predict_batch

        return predict_batch(self, batch, present)

    def forward_features(self, *, present: Mapping[str, Any] | None = None, **inputs: Any) -> Tensor:
        """The fused (B, num_features) embedding, before the head."""
        if self.fusion.decision_level and self.num_classes > 0:
            raise InputError("a decision-level fusion with num_classes > 0 has no shared embedding")
        feats, present_masks = self.encode(present=present, **inputs)
        return self.fusion(feats, present_masks)

    def encode(self, *, present: Mapping[str, Any] | None = None, **inputs: Any
               ) -> tuple[dict[str, EncoderOutput], dict[str, Tensor]]:
        """Run the encoders; return per-input features and (B,) presence masks."""
        prepared, masks, batch, device = self._prepare(present, inputs)
        if self.training and self.modality_dropout > 0:
            masks = _drop_inputs(masks, self.modality_dropout)
        if device.type == "cpu" and not torch.compiler.is_compiling():
            # on an accelerator this check would stall the pipeline (a host sync) and it
            # would break a compiled graph: there a sample with no input gets the
            # fusion's all-missing output instead
            any_present = torch.stack(list(masks.values())).any(0)
            if not bool(any_present.all()):
                empty = (~any_present).nonzero().flatten().tolist()
                raise InputError(
                    f"sample(s) {empty[:10]} of the batch have no input present; every sample needs "
                    f"at least one of {', '.join(self.inputs)} (check present= and empty texts)"
                )
        feats: dict[str, EncoderOutput] = {}
        for slot, encoder in self.encoders.items():
            if slot in prepared:
                feats[slot] = encoder(prepared[slot])
            else:
                feats[slot] = _placeholder(encoder, batch, device)
        return feats, masks

    def presence(self, *, present: Mapping[str, Any] | None = None, **inputs: Any) -> dict[str, Tensor]:
        """(B,) bool per input: the samples that carry it (given, not switched off
        by ``present=``, with content: an empty text or a table row with every
        cell blank is missing). Checks the inputs as :meth:`forward` does and
        runs no encoder; a sample with no input at all is not an error here."""
        return self._prepare(present, inputs)[1]

    def _prepare(self, present: Mapping[str, Any] | None, inputs: Mapping[str, Any]
                 ) -> tuple[dict[str, Any], dict[str, Tensor], int, torch.device]:
        """The inputs checked and normalised by their encoders, the presence masks, batch size, device."""
        unknown = sorted(set(inputs) - set(self.encoders))
        if unknown:
            raise InputError(
                f"unknown input(s) {', '.join(map(repr, unknown))}; this model "
                f"({self.name or 'unnamed'}) takes {', '.join(map(repr, self.inputs))}"
            )
        prepared: dict[str, Any] = {}
        content: dict[str, Tensor | None] = {}
        for slot, x in inputs.items():
            if x is None:
                continue
            prepared[slot], content[slot] = self.encoders[slot].prepare_input(x, slot)
        if not prepared:
            raise InputError(f"no input given; pass at least one of {', '.join(self.inputs)}")
        sizes = {slot: self.encoders[slot].batch_size(x) for slot, x in prepared.items()}
        batch = next(iter(sizes.values()))
        if len(set(sizes.values())) > 1:
            raise InputError(f"inputs disagree on the batch size: {sizes}")
        if batch == 0:
            raise InputError(f"the batch is empty (0 samples in {', '.join(sizes)}); "
                             "pass at least one sample")
        device = self._device()
        return prepared, self._presence(present, prepared, content, batch, device), batch, device

    def _device(self) -> torch.device:
        for parameter in self.parameters():
            return parameter.device
        return torch.device("cpu")

    def _presence(self, present: Mapping[str, Any] | None, prepared: Mapping[str, Any],
                  content: Mapping[str, Tensor | None], batch: int, device: torch.device
                  ) -> dict[str, Tensor]:
        present = dict(present or {})
        unknown = sorted(set(present) - set(self.encoders))
        if unknown:
            raise InputError(f"present= names unknown input(s) {unknown}; inputs are {list(self.inputs)}")
        masks: dict[str, Tensor] = {}
        for slot in self.encoders:
            if slot not in prepared:
                masks[slot] = torch.zeros(batch, dtype=torch.bool, device=device)
                continue
            mask = torch.ones(batch, dtype=torch.bool, device=device)
            if slot in present and present[slot] is not None:
                try:
                    given = torch.as_tensor(present[slot], device=device)
                except (TypeError, ValueError, RuntimeError):
                    raise InputError(f"present[{slot!r}] must be a bool tensor of shape ({batch},), "
                                     f"got {type(present[slot]).__name__} {present[slot]!r:.40}") from None
                if given.shape != (batch,) or given.dtype not in (torch.bool, torch.uint8, torch.int64, torch.int32):
                    raise InputError(
                        f"present[{slot!r}] must be a bool tensor of shape ({batch},), "
                        f"got {given.dtype} of shape {tuple(given.shape)}"
                    )
                mask = mask & given.bool()
            if content.get(slot) is not None:
                mask = mask & content[slot].to(device)
            masks[slot] = mask
        return masks


def _placeholder(encoder: Encoder, batch: int, device: torch.device) -> EncoderOutput:
    """Features for an input missing from the whole batch: zeros, all masked."""
    pooled = torch.zeros(batch, encoder.num_features, device=device)
    if encoder.token_features is None:
        return EncoderOutput(pooled)
    tokens = torch.zeros(batch, 1, encoder.token_features, device=device)
    return EncoderOutput(pooled, tokens, torch.zeros(batch, 1, dtype=torch.bool, device=device))


def _drop_inputs(masks: dict[str, Tensor], p: float) -> dict[str, Tensor]:
    """Drop each present input per sample with probability ``p``, keeping at
    least one present input for every sample that had one."""
    stacked = torch.stack(list(masks.values()), dim=1)  # (B, N)
    keep = torch.rand(stacked.shape, device=stacked.device) >= p
    dropped = stacked & keep
    lost_all = stacked.any(1) & ~dropped.any(1)
    # give back one randomly chosen input among those the sample had (computed for
    # every sample and selected, so that no branch reads a tensor value: no host sync)
    scores = torch.rand(stacked.shape, device=stacked.device).masked_fill(~stacked, -1.0)
    chosen = torch.nn.functional.one_hot(scores.argmax(1), stacked.shape[1]).bool()
    dropped = torch.where(lost_all[:, None], chosen, dropped)
    return {slot: dropped[:, i] for i, slot in enumerate(masks)}
