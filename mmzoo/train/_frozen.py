"""Frozen encoders' outputs computed once per run instead of once per epoch.

A frozen encoder (``freeze=True``: no gradients, always in eval mode) whose
input reaches the model the same way every epoch (not augmented, no word
dropout: :meth:`mmzoo.data.Batches.fixed_inputs`) gives the same output for a
sample at every epoch. :func:`frozen_output_cache` runs it once over each
split, serves its rows as that input for the rest of ``fit`` and puts the
model back as it was: no parameter, buffer or config changes, so what
``save_pretrained`` writes during or after the run is the same model.

:class:`PreparedInputs` does the same, and more, for scoring one split many
times with some inputs changed (corruption curves, shuffled pairs, a missing
input): on entry every input of the split is processed into tensors and the
frozen encoders run over it once, and a later ``predict`` or ``evaluate``
given ``prepared=`` takes every input that is the very same object as in that
split from there.

The cache holds the pooled features, plus the tokens when the fusion reads
them (checked on a batch: the fusion's output with the tokens replaced must
equal its output with the real ones). It is skipped, with a log line, when it
would exceed :data:`FROZEN_CACHE_BYTES`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Any, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor

from mmzoo.components import EncoderOutput
from mmzoo.train._amp import autocast

__all__ = ["frozen_output_cache", "PreparedInputs", "FROZEN_CACHE_BYTES", "CACHED"]

logger = logging.getLogger("mmzoo.train")

#: the most memory the cached outputs of one run may take (all splits, all encoders)
FROZEN_CACHE_BYTES = 1024 * 2**20
#: keys of a cached input (one row per sample); a batch of them replaces the raw input
CACHED = ("frozen_pooled", "frozen_tokens", "frozen_token_mask", "frozen_present")


def _is_cached(x: Any) -> bool:
    return isinstance(x, Mapping) and CACHED[0] in x


@torch.no_grad()
def _outputs(encoder, slot: str, batches, device, precision: str) -> Iterator[dict[str, Tensor]]:
    """The encoder over each batch: pooled (B, D), per-sample presence (B,), tokens and their mask."""
    from mmzoo.data import to_device

    for x in batches:
        prepared, content = encoder.prepare_input(to_device(x, device), slot)
        with autocast(device, precision):
            out = encoder(prepared)
        present = content if content is not None else torch.ones(len(out.pooled), dtype=torch.bool)
        row = {"frozen_pooled": out.pooled, "frozen_present": present.to(out.pooled.device)}
        if out.tokens is not None:
            row.update(frozen_tokens=out.tokens, frozen_token_mask=out.token_mask)
        yield row


def _join(parts: list[dict[str, Tensor]], tokens: bool) -> dict[str, Tensor]:
    """One table from per-batch outputs (tokens padded to the longest batch, or left out)."""
    keys = [k for k in CACHED if k in parts[0] and (tokens or "token" not in k)]
    if "frozen_tokens" in keys:
        length = max(p["frozen_tokens"].shape[1] for p in parts)
        parts = [{**p, "frozen_tokens": F.pad(p["frozen_tokens"], (0, 0, 0, length - p["frozen_tokens"].shape[1])),
                  "frozen_token_mask": F.pad(p["frozen_token_mask"], (0, length - p["frozen_token_mask"].shape[1]))}
                 for p in parts]
    return {k: torch.cat([p[k] for p in parts]) for k in keys}


def _served(table: Mapping[str, Tensor]) -> EncoderOutput:
    """What the model gets for a cached batch: its tokens only when cached (when
    the fusion was found to read them)."""
    pooled = table["frozen_pooled"]
    if "frozen_tokens" in table:
        return EncoderOutput(pooled, table["frozen_tokens"], table["frozen_token_mask"])
    return EncoderOutput(pooled)


@torch.no_grad()
def _fusion_reads_tokens(model, slot: str, table: Mapping[str, Tensor]) -> bool:
    """Whether the fusion's output on a batch changes when ``slot``'s tokens are
    left out; the other inputs are given as missing."""
    if "frozen_tokens" not in table:
        return False
    rows = {k: v[:8] for k, v in table.items()}
    n, device = len(rows["frozen_pooled"]), rows["frozen_pooled"].device
    feats, present = {}, {}
    for other, encoder in model.encoders.items():
        if other == slot:
            continue
        feats[other] = EncoderOutput(torch.zeros(n, encoder.num_features, device=device),
                                     None if encoder.token_features is None
                                     else torch.zeros(n, 1, encoder.token_features, device=device))
        present[other] = torch.zeros(n, dtype=torch.bool, device=device)
    present[slot] = torch.ones(n, dtype=torch.bool, device=device)
    was_training = model.fusion.training
    model.fusion.eval()  # no dropout: the run's random stream stays untouched
    pooled_only = {k: v for k, v in rows.items() if "token" not in k}
    try:
        full = model.fusion({**feats, slot: _served(rows)}, present)
        without = model.fusion({**feats, slot: _served(pooled_only)}, present)
    except Exception:  # the fusion needs the tokens (or this probe): keep them
        return True
    finally:
        model.fusion.train(was_training)
    return not torch.equal(full, without)


@contextlib.contextmanager
def _serving(encoder) -> Iterator[None]:
    """Let ``encoder`` take a batch of cached rows as its input (and anything else as before)."""
    prepare, batch_size, forward = encoder.prepare_input, encoder.batch_size, encoder.forward
    names = ("prepare_input", "batch_size", "forward")
    outer = {name: vars(encoder)[name] for name in names if name in vars(encoder)}

    def prepare_input(x, slot):
        return (x, x["frozen_present"]) if _is_cached(x) else prepare(x, slot)

    encoder.prepare_input = prepare_input
    encoder.batch_size = lambda x: len(x["frozen_pooled"]) if _is_cached(x) else batch_size(x)
    encoder.forward = lambda x: _served(x) if _is_cached(x) else forward(x)
    try:
        yield
    finally:
        for name in names:
            delattr(encoder, name)
        vars(encoder).update(outer)  # an enclosing block (served within served) keeps its own


def _nbytes(table: Mapping[str, Tensor], tokens: bool = True) -> int:
    return sum(t.numel() * t.element_size() for k, t in table.items() if tokens or "token" not in k)


def _table(model, slot: str, batches, device, *, batch_size: int, precision: str,
           bound: float, samples: int | None = None) -> dict[str, Tensor] | None:
    """The frozen encoder of ``slot`` over every sample of ``batches`` (a
    :class:`mmzoo.data.Batches`), as one table; None, with a log line, when
    ``samples`` rows (default: these) would take more than ``bound`` bytes,
    estimated on the first batch before the rest is computed."""
    encoder = model.encoders[slot]
    rows = _outputs(encoder, slot, batches.input_batches(slot, batch_size), device, precision)
    first = next(rows)
    tokens = _fusion_reads_tokens(model, slot, first)
    samples = batches.num_rows if samples is None else samples
    estimate = _nbytes(first, tokens) / len(first["frozen_pooled"]) * samples
    if estimate > bound:
        logger.info("not caching the frozen %s encoder's outputs: %d samples would take ~%.1f MB, "
                    "over the %.0f MB bound; computing them every time",
                    encoder.modality or slot, samples, estimate / 1e6, max(bound, 0) / 1e6)
        return None
    return {k: v.cpu() for k, v in _join([first, *rows], tokens).items()}


class PreparedInputs(contextlib.AbstractContextManager):
    """Within the block, ``data``'s inputs (a :class:`~mmzoo.tasks.Split` or
    :class:`mmzoo.data.Encoded`) prepared once for ``model`` on entry: each
    processed into tensors (when the split fits the in-memory cache,
    :data:`mmzoo.data.MEMORY_CACHE_BYTES`) and, for a frozen encoder, run
    through that encoder.

    ``predict`` / ``evaluate(..., prepared=...)`` take from here every input
    that is the same object (``is``) as in ``data``: a split with one input
    corrupted, shuffled or dropped shares the others, so only the changed
    input is processed and encoded again. The predictions are the same as
    without it. ``batch_size`` must be the one the later batches use, so that
    every encoder output is computed on the same batch as without it."""

    def __init__(self, model, data, *, batch_size: int = 256, device=None, precision: str = "fp32"):
        from mmzoo.train._evaluate import unwrap

        self.model = unwrap(model)
        self.data = data
        self.batch_size = batch_size
        self.device = torch.device(device) if device is not None else self.model._device()
        self.precision = precision
        #: frozen encoders' outputs per input; processed tensors per input
        self.tables: dict[str, dict[str, Tensor]] = {}
        self.tensors: dict[str, Any] = {}
        self._stack = contextlib.ExitStack()

    def __enter__(self) -> "PreparedInputs":
        from mmzoo.data import make_loader

        if getattr(self.data, "inputs", None) is None:
            return self
        batches = make_loader(self.model, self.data, batch_size=self.batch_size)
        if batches.encoded is not None:
            self.tensors = dict(batches.encoded.inputs)
        total = 0
        for slot, encoder in self.model.encoders.items():
            if not getattr(encoder, "frozen", False) or slot not in batches.fixed_inputs():
                continue
            table = _table(self.model, slot, batches, self.device, batch_size=self.batch_size,
                           precision=self.precision, bound=FROZEN_CACHE_BYTES - total)
            if table is None:
                continue
            total += _nbytes(table)
            self.tables[slot] = table
            self._stack.enter_context(_serving(encoder))
        return self

    def __exit__(self, *exc) -> None:
        self.tables, self.tensors = {}, {}
        self._stack.close()

    def shared(self, data) -> list[str]:
        """The inputs of ``data`` that are the very objects of the split given on entry."""
        inputs, own = getattr(data, "inputs", None) or {}, self.data.inputs
        return [slot for slot, values in inputs.items() if slot in own and values is own[slot]
                and (slot in self.tables or slot in self.tensors)]

    def inputs_for(self, data):
        """``data`` with every shared input replaced by its prepared form (a
        frozen encoder's outputs, or else its processed tensors)."""
        shared = self.shared(data)
        if not shared:
            return data
        inputs = {**data.inputs, **{slot: self.tables.get(slot, self.tensors.get(slot)) for slot in shared}}
        return dataclasses.replace(data, inputs=inputs)


@contextlib.contextmanager
def frozen_output_cache(model, splits: Sequence[Any], device, *, batch_size: int, precision: str = "fp32",
                        enabled: bool = True) -> Iterator[list[str]]:
    """Serve the outputs of ``model``'s frozen encoders on fixed inputs from a
    cache for the duration of the block; yields the inputs cached. ``splits``
    are :class:`mmzoo.data.Batches` (None entries are skipped)."""
    splits = [b for b in splits if b is not None]
    slots = [slot for slot, encoder in model.encoders.items() if getattr(encoder, "frozen", False)]
    if not enabled or not slots or not splits:
        yield []
        return
    cached = []
    total = 0
    with contextlib.ExitStack() as stack:
        for slot in slots:
            encoder = model.encoders[slot]
            modality = encoder.modality or slot
            if any(slot not in b.fixed_inputs() for b in splits):
                logger.info("not caching the frozen %s encoder's outputs: its input %r is augmented, "
                            "word-dropped or streamed", modality, slot)
                continue
            first = _table(model, slot, splits[0], device, batch_size=batch_size, precision=precision,
                           bound=FROZEN_CACHE_BYTES - total, samples=sum(b.num_rows for b in splits))
            if first is None:
                continue
            tables = [first] + [_table(model, slot, b, device, batch_size=batch_size, precision=precision,
                                       bound=float("inf")) for b in splits[1:]]
            total += sum(_nbytes(t) for t in tables)
            for batches, table in zip(splits, tables):
                batches.replace_input(slot, table)
            stack.enter_context(_serving(encoder))
            cached.append(slot)
            logger.info("caching the frozen %s encoder's outputs: %d samples, %.1f MB", modality,
                        sum(b.num_rows for b in splits), sum(_nbytes(t) for t in tables) / 1e6)
        yield cached
