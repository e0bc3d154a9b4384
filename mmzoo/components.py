"""Base classes plugin authors subclass: :class:`Encoder`, :class:`Fusion`,
:class:`InputProcessor`, and the :class:`EncoderOutput` encoders return.

Components know no registry: they are plain ``nn.Module`` subclasses that
the builder instantiates with keyword arguments from a name.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Mapping, Sequence

import torch
from torch import Tensor, nn

from mmzoo._limits import check_params
from mmzoo.errors import InputError

__all__ = ["EncoderOutput", "InputSpec", "Encoder", "TextEncoder", "Fusion", "InputProcessor",
           "check_int", "check_params"]


def check_int(part: str, name: str, value: object, minimum: int = 1) -> int:
    """Validate an integer kwarg of a component (from a model name)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InputError(
            f"{part}: {name}={value!r} is invalid; "
            f"give an integer >= {minimum}, e.g. {part}({name}={max(minimum, 1) * 8})"
        )
    return value


@dataclass
class EncoderOutput:
    """What an encoder returns for a batch of B samples.

    ``pooled`` is (B, D). Encoders with a sequence or spatial grid also give
    ``tokens`` (B, T, D_tok) and ``token_mask`` (B, T), True where a token is
    real (not padding).
    """

    pooled: Tensor
    tokens: Tensor | None = None
    token_mask: Tensor | None = None

    def __post_init__(self) -> None:
        if self.tokens is not None and self.token_mask is None:
            b, t = self.tokens.shape[:2]
            self.token_mask = torch.ones(b, t, dtype=torch.bool, device=self.tokens.device)


@dataclass(frozen=True)
class InputSpec:
    """What a fusion knows about one input slot before it sees data.

    ``num_features`` is the pooled width; ``token_features`` the width of the
    tokens (may differ from the pooled width, e.g. timm's mobilenetv3), or
    None when the encoder gives no tokens.
    """

    num_features: int
    token_features: int | None = None
    modality: str = ""


class Encoder(nn.Module):
    """Turns one input into features.

    Subclasses set ``modality`` (class attribute) and ``num_features`` /
    ``token_features`` (after building), and implement :meth:`forward`.
    Override :meth:`prepare_input` to accept other input forms, and
    :meth:`build_processor` to turn raw data (files, strings) into tensors.
    """

    modality: ClassVar[str] = ""
    #: kwargs that only say where initial weights come from; they stay out of
    #: the canonical name and are not needed to rebuild the architecture.
    weight_kwargs: ClassVar[tuple[str, ...]] = ()
    num_features: int
    token_features: int | None = None
    #: set by :meth:`freeze`: no parameter trains and the encoder stays in eval mode
    frozen: bool = False

    def freeze(self) -> "Encoder":
        """Stop training this encoder: ``requires_grad=False`` for its parameters,
        and eval mode even under ``model.train()`` (BatchNorm statistics and
        dropout stay fixed). The name part ``freeze=True`` calls this."""
        self.requires_grad_(False)
        self.frozen = True
        return self.train(self.training)

    def train(self, mode: bool = True) -> "Encoder":
        super().train(mode and not self.frozen)
        return self

    def forward(self, x: Any) -> EncoderOutput:  # pragma: no cover - abstract
        raise NotImplementedError

    def prepare_input(self, x: Any, slot: str) -> tuple[Any, Tensor | None]:
        """Check ``x`` and normalise it to what :meth:`forward` takes.

        Returns ``(x, present)``; ``present`` is a (B,) bool tensor for
        samples that carry no content (an empty text, say), else None.
        The default takes a floating-point tensor with a batch dimension and
        casts it to :meth:`input_dtype`.
        """
        if not isinstance(x, Tensor):
            raise InputError(
                f"input {slot!r} ({self.modality or type(self).__name__}) must be a torch.Tensor, "
                f"got {type(x).__name__}; use model.processor({slot}=...) to convert raw data"
            )
        if not x.is_floating_point():
            raise InputError(
                f"input {slot!r} must be a floating-point tensor, got dtype {x.dtype}; "
                "convert it with .float() or use model.processor"
            )
        if x.dim() < 2:
            raise InputError(
                f"input {slot!r} must have a batch dimension first, got shape {tuple(x.shape)}"
            )
        return x.to(self.input_dtype()), None

    def input_dtype(self) -> torch.dtype:
        """The floating dtype inputs are cast to: that of the encoder's weights
        (a float64 or bfloat16 image then runs in a float32 model)."""
        for tensor in (*self.parameters(), *self.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype
        return torch.get_default_dtype()

    def batch_size(self, x: Any) -> int:
        """The batch size of a prepared input."""
        return x.shape[0]

    def spec(self) -> InputSpec:
        return InputSpec(self.num_features, self.token_features, self.modality)

    def build_processor(self) -> "InputProcessor | None":
        """A processor that turns raw data into this encoder's input, or None."""
        return None

    def reload_kwargs(self) -> dict[str, Any]:
        """Extra kwargs stored in ``config.json`` so that the architecture can be
        rebuilt offline before the weights are loaded (e.g. a Hugging Face
        config instead of a hub id). Must be JSON-serialisable."""
        return {}


class Fusion(nn.Module):
    """Combines the encoders' features into one (B, num_features) tensor.

    ``inputs`` maps each slot name to an :class:`InputSpec` (or a plain int,
    the pooled width). ``forward`` receives features for every slot and a
    (B,) bool ``present`` mask per slot; features of a sample whose input is
    missing hold arbitrary values and must not influence the output.

    A decision-level fusion sets ``decision_level = True``: it receives
    ``num_classes`` and its output is the model's output (no shared head).
    """

    decision_level: ClassVar[bool] = False
    num_features: int

    def __init__(self, inputs: Mapping[str, InputSpec | int]):
        super().__init__()
        if not inputs:
            raise InputError("a fusion needs at least one input")
        self.inputs: dict[str, InputSpec] = {
            slot: spec if isinstance(spec, InputSpec) else InputSpec(int(spec))
            for slot, spec in inputs.items()
        }

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(self.inputs)

    def forward(
        self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError


class InputProcessor:
    """Turns raw values for one input (a list of images, strings, ...) into
    what the encoder takes. Saved into and restored from a folder next to the
    model's weights, using data files only (JSON, tokenizer files)."""

    def __call__(self, values: Sequence[Any]) -> Any:  # pragma: no cover - abstract
        raise NotImplementedError

    def save(self, directory: Path) -> None:
        """Write what is needed to rebuild this processor into ``directory``."""

    def load(self, directory: Path) -> None:
        """Restore state written by :meth:`save` (called on a freshly built processor)."""

    def source_columns(self) -> list[str] | None:
        """The columns of a data file (CSV, JSONL) this input is gathered from
        when the file has no column named after the input (a table's fitted
        columns); None: the input is one column, named after it."""
        return None

    def example(self, batch: int) -> Any | None:
        """Raw values for ``batch`` samples to trace the encoder with (``mmzoo
        export``); None: the exporter makes tensors of the processor's input
        size (``data_config['input_size']`` or ``num_samples``)."""
        return None


class TextEncoder(Encoder):
    """Base for encoders of token ids.

    Accepts a (B, T) LongTensor of ids, padded with ``pad_token_id`` on the
    right, or a mapping with ``input_ids`` and ``attention_mask``. A text with
    no tokens counts as a missing input for that sample.
    """

    modality: ClassVar[str] = "text"
    pad_token_id: int = 0

    def prepare_input(self, x: Any, slot: str) -> tuple[dict[str, Tensor], Tensor]:
        if isinstance(x, Mapping):
            if "input_ids" not in x:
                raise InputError(f"input {slot!r}: a mapping must hold 'input_ids' (and 'attention_mask')")
            ids = x["input_ids"]
            mask = x.get("attention_mask")
        else:
            ids, mask = x, None
        if not isinstance(ids, Tensor) or ids.dtype not in (torch.int64, torch.int32) or ids.dim() != 2:
            got = f"{ids.dtype} tensor of shape {tuple(ids.shape)}" if isinstance(ids, Tensor) else type(ids).__name__
            raise InputError(
                f"input {slot!r} (text) must be a (batch, length) integer tensor of token ids, "
                f"got {got}; use model.processor({slot}=[...strings]) to tokenize"
            )
        if mask is None:
            mask = ids != self.pad_token_id
        elif not isinstance(mask, Tensor) or mask.shape != ids.shape:
            raise InputError(
                f"input {slot!r}: attention_mask must be a tensor of the same shape as input_ids "
                f"{tuple(ids.shape)}"
            )
        mask = mask.bool()
        if ids.shape[1] == 0:  # every text of the batch is empty: one pad column, all missing
            ids = ids.new_full((ids.shape[0], 1), self.pad_token_id)
            mask = mask.new_zeros((ids.shape[0], 1))
        return {"input_ids": ids.long(), "attention_mask": mask}, mask.any(1)

    def batch_size(self, x: Any) -> int:
        return x["input_ids"].shape[0]
