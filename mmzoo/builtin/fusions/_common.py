"""Masking and attention helpers shared by the built-in fusions.

Conventions used throughout:

* ``present[slot]`` is a (B,) bool tensor; a sample whose input is missing
  holds arbitrary feature values that must not reach the output. Values are
  therefore *selected* with :func:`torch.where` (never multiplied by a 0/1
  mask), so a masked input cannot leak (not even ``inf``/``nan``) and its
  gradient is zero rather than ``None``.
* Tokens of a missing input and padding tokens are zeroed and excluded from
  every attention as keys; every query is given at least one valid key (a
  learned summary or null token), so softmax never sees an all-masked row.
* Encoders without tokens contribute their pooled vector as a single token.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import torch
from torch import Tensor, nn

from mmzoo.builtin.layers import MultiHeadAttention, TransformerBlock, transformer_blocks
from mmzoo.components import EncoderOutput, InputSpec, check_int
from mmzoo.errors import InputError

__all__ = [
    "check_int",
    "check_batch",
    "select",
    "masked_mean",
    "masked_max",
    "masked_softmax",
    "token_width",
    "input_tokens",
    "signed_sqrt",
    "missing_embedding",
    "missing_embeddings",
    "fills",
    "MultiHeadAttention",
    "TransformerBlock",
    "transformer_blocks",
    "TokenProjection",
    "concat_tokens",
]


# --------------------------------------------------------------------- checks


def check_batch(
    fusion: nn.Module, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
) -> int:
    """Check that ``feats`` and ``present`` cover every slot; return B."""
    name = type(fusion).__name__
    slots = list(fusion.inputs)  # type: ignore[attr-defined]
    for what, given in (("feats", feats), ("present", present)):
        missing = [s for s in slots if s not in given]
        if missing:
            raise InputError(
                f"{name}.forward: {what} lacks slot(s) {missing}; it was built for {slots}. "
                "Pass every slot (the model passes a placeholder for a missing input)"
            )
    b = feats[slots[0]].pooled.shape[0]
    for s in slots:
        if feats[s].pooled.shape[0] != b or present[s].shape != (b,):
            raise InputError(
                f"{name}.forward: slot {s!r} has batch size {feats[s].pooled.shape[0]} and "
                f"present shape {tuple(present[s].shape)}, expected {b} and ({b},)"
            )
    return b


def token_width(spec: InputSpec) -> int:
    """Width of the tokens an input contributes (its pooled width if it has none)."""
    return spec.token_features if spec.token_features is not None else spec.num_features


# ------------------------------------------------------------------- masking


def select(present: Tensor, x: Tensor, fill: Tensor | float = 0.0) -> Tensor:
    """``x`` for present samples, ``fill`` (broadcast, e.g. a learned (D,)
    missing embedding; default 0) for missing ones. ``present`` is (B,), ``x`` (B, ...)."""
    cond = present.reshape(present.shape + (1,) * (x.dim() - 1))
    if isinstance(fill, Tensor):
        fill = fill.to(x.dtype)
    return torch.where(cond, x, fill)


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of ``x`` (B, N, D) over the N entries where ``mask`` (B, N) is True;
    zeros for a row with no True entry (never NaN)."""
    total = torch.where(mask.unsqueeze(-1), x, 0.0).sum(1)
    count = mask.sum(1, keepdim=True).clamp_min(1).to(x.dtype)
    return total / count


def masked_max(x: Tensor, mask: Tensor) -> Tensor:
    """Elementwise max of ``x`` (B, N, D) over the True entries of ``mask`` (B, N);
    zeros for a row with no True entry."""
    low = torch.finfo(x.dtype).min
    best = torch.where(mask.unsqueeze(-1), x, low).amax(1)
    return torch.where(mask.any(1, keepdim=True), best, 0.0)


def masked_softmax(logits: Tensor, mask: Tensor, dim: int = 1) -> Tensor:
    """Softmax over ``dim`` restricted to entries where ``mask`` (broadcastable)
    is True; masked entries get exactly 0, an all-masked row all zeros."""
    low = torch.finfo(logits.dtype).min
    weights = torch.softmax(torch.where(mask, logits, low), dim=dim)
    return torch.where(mask, weights, 0.0)


def signed_sqrt(x: Tensor, eps: float = 1e-6) -> Tensor:
    """Power normalisation ``sign(x) (sqrt(|x| + eps) - sqrt(eps))``: continuous
    at 0 with a finite slope ``1 / (2 sqrt(eps))`` there (plain signed sqrt has an
    infinite one, which turns gradients into NaN)."""
    return torch.sign(x) * (torch.sqrt(x.abs() + eps) - eps**0.5)


def missing_embedding(width: int, init: float | None = None) -> nn.Parameter:
    """A learned stand-in (width,) for an input that is missing."""
    if init is None:
        return nn.Parameter(torch.randn(width) * 0.02)
    return nn.Parameter(torch.full((width,), float(init)))


def missing_embeddings(widths: Sequence[int], init: float | None = None) -> nn.ParameterList:
    """One learned missing-input embedding per input, or none for a single
    input: the model refuses a sample without any input, so they could never
    be used (nor trained)."""
    if len(widths) < 2:
        return nn.ParameterList()
    return nn.ParameterList(missing_embedding(w, init) for w in widths)


def fills(missing: nn.ParameterList, n: int, default: float = 0.0) -> list[Tensor | float]:
    """The per-input values for missing samples: the embeddings, or ``default``."""
    return list(missing) if len(missing) else [default] * n


def input_tokens(
    slot: str, spec: InputSpec, out: EncoderOutput, present: Tensor
) -> tuple[Tensor, Tensor]:
    """(tokens (B, T, W), valid (B, T)) of one input, W = :func:`token_width`.

    Padding and the tokens of a missing sample are zeroed and marked invalid;
    an encoder without tokens contributes its pooled vector as one token.
    """
    if spec.token_features is not None:
        if out.tokens is None:
            raise InputError(
                f"input {slot!r} was declared with tokens of width {spec.token_features} "
                "but its encoder output has tokens=None; the fusion needs tokens from it"
            )
        tokens = out.tokens
        mask = out.token_mask
        if mask is None:
            mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    else:
        tokens = out.pooled.unsqueeze(1)
        mask = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    if tokens.dim() != 3 or tokens.shape[-1] != token_width(spec):
        raise InputError(
            f"input {slot!r}: expected tokens of shape (B, T, {token_width(spec)}), "
            f"got {tuple(tokens.shape)}"
        )
    valid = mask.bool() & present.unsqueeze(1)
    return torch.where(valid.unsqueeze(-1), tokens, 0.0), valid


# ----------------------------------------------------------------- attention


class TokenProjection(nn.Module):
    """Projects every input's tokens to a common width; ``forward`` returns the
    per-input (tokens (B, T_i, dim), valid (B, T_i)) pairs. Each input has its
    own linear map, whose bias doubles as a learned modality embedding."""

    def __init__(self, inputs: Mapping[str, InputSpec], dim: int):
        super().__init__()
        self.slots = list(inputs)
        self.specs = dict(inputs)
        self.proj = nn.ModuleList(nn.Linear(token_width(s), dim) for s in inputs.values())

    def forward(
        self, feats: Mapping[str, EncoderOutput], present: Mapping[str, Tensor]
    ) -> list[tuple[Tensor, Tensor]]:
        result = []
        for slot, proj in zip(self.slots, self.proj):
            tokens, valid = input_tokens(slot, self.specs[slot], feats[slot], present[slot])
            result.append((proj(tokens), valid))
        return result


def concat_tokens(parts: Sequence[tuple[Tensor, Tensor]]) -> tuple[Tensor, Tensor]:
    """Concatenate (tokens, valid) pairs along the token axis."""
    return torch.cat([t for t, _ in parts], 1), torch.cat([m for _, m in parts], 1)
