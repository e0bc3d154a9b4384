"""The encoder contract: :func:`check_encoder`."""

from __future__ import annotations

import contextlib
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mmzoo.errors import InputError
from mmzoo.testing._common import builder, check, close, gradient_problems, jittered_copy, max_diff, \
    rebuilt_from_state, resolve_registry, take, unregistered

__all__ = ["check_encoder"]


def _vocab_size(encoder) -> int:
    for source in (encoder, getattr(getattr(encoder, "model", None), "config", None)):
        value = getattr(source, "vocab_size", None)
        if isinstance(value, int) and value > 2:
            return value
    return 100


def _default_input(encoder, batch: int, generator) -> Any:
    import torch

    example = getattr(encoder, "example_input", None)
    if callable(example):
        return example(batch, generator=generator)
    if encoder.modality == "image":
        channels = int(getattr(encoder, "in_chans", 3))
        size = 32
        with contextlib.suppress(Exception):
            height, width = encoder.data_config()["input_size"][1:]
            if max(height, width) <= 64:
                size = (height, width)
        size = size if isinstance(size, tuple) else (size, size)
        return torch.randn(batch, channels, *size, generator=generator)
    if encoder.modality == "text":
        pad = int(getattr(encoder, "pad_token_id", 0))
        vocab = min(_vocab_size(encoder), 1000)
        length = 6
        ids = torch.randint(0, vocab - 1, (batch, length), generator=generator)
        ids = ids + (ids >= pad).long()  # never the padding id
        lengths = torch.tensor([length, 3, 1, 5, 2, 4][:batch] + [length] * max(0, batch - 6))
        mask = torch.arange(length)[None, :] < lengths[:, None]
        return {"input_ids": torch.where(mask, ids, pad), "attention_mask": mask}
    raise AssertionError(
        f"the kit cannot make example inputs for modality {encoder.modality!r}: pass inputs=... "
        "(a callable batch_size -> input) or implement example_input(batch_size, generator) on the encoder"
    )


def _default_raw(encoder, batch: int) -> list[Any] | None:
    import numpy as np

    example = getattr(encoder, "example_raw", None)
    if callable(example):
        return list(example(batch))
    rng = np.random.default_rng(0)
    if encoder.modality == "image":
        channels = int(getattr(encoder, "in_chans", 3))
        shape = (20, 24, 3) if channels == 3 else (20, 24)
        return [rng.integers(0, 256, shape, dtype=np.uint8) for _ in range(batch)]
    if encoder.modality == "text":
        return ["a small test sentence", "hi"] * (batch // 2) + ["x"] * (batch % 2)
    return None


def _run(encoder, x):
    from mmzoo.components import EncoderOutput

    out = encoder(x)
    if not isinstance(out, EncoderOutput):
        raise AssertionError(f"forward returned {type(out).__name__}, not mmzoo.EncoderOutput")
    return out


def check_encoder(encoder: Any, *, kwargs: Mapping[str, Any] | None = None, inputs: Any = None,
                  raw: list[Any] | None = None, batch_size: int = 3, registry=None,
                  fusion: str | None = "concat", atol: float = 1e-4) -> None:
    """Run the encoder contract checks on ``encoder``.

    ``encoder`` is a registered name part (``"lstm(hidden_size=16)"``), a
    class or factory called with ``kwargs``, or an instance (then the
    save/load check uses a perturbed copy). ``inputs`` is a callable
    ``batch_size -> input`` or one batch; ``raw`` a list of raw values for the
    processor. ``fusion`` names the fusion used for the ``model round trip``
    check (registered names only; ``None`` skips it). Raises
    :class:`ConformanceError` on the first failed check.
    """
    import torch

    from mmzoo.components import Encoder, InputProcessor
    from mmzoo.weights import PICKLE_SUFFIXES

    if batch_size < 2:
        raise ValueError("check_encoder needs batch_size >= 2 (BatchNorm in train mode)")
    label, make, resolved = builder("encoder", encoder, kwargs, registry, set(), {})
    generator = torch.Generator().manual_seed(0)

    with check(label, "build"):
        enc = make(0)
        assert isinstance(enc, Encoder), f"built a {type(enc).__name__}, not a subclass of mmzoo.Encoder"
        assert isinstance(enc.modality, str) and enc.modality, "class attribute 'modality' is not set"
        if resolved is not None and resolved.modality:
            assert enc.modality == resolved.modality, (
                f"modality {enc.modality!r} differs from the registered {resolved.modality!r}")
        nf = getattr(enc, "num_features", None)
        assert isinstance(nf, int) and not isinstance(nf, bool) and nf > 0, \
            f"num_features must be a positive int, got {nf!r}"
        tf = enc.token_features
        assert tf is None or (isinstance(tf, int) and tf > 0), \
            f"token_features must be None or a positive int, got {tf!r}"
    with check(label, "registered parameters"):
        problems = unregistered(enc)
        assert not problems, "; ".join(problems)

    with check(label, "prepare_input"):
        x_raw = (inputs(batch_size) if callable(inputs) else inputs) if inputs is not None \
            else _default_input(enc, batch_size, generator)
        x, present = enc.prepare_input(x_raw, "input")
        batch = enc.batch_size(x)
        assert isinstance(batch, int) and batch >= 2, f"batch_size() returned {batch!r} for a batch of inputs"
        if present is not None:
            assert isinstance(present, torch.Tensor) and present.dtype == torch.bool and \
                present.shape == (batch,), f"present must be None or a ({batch},) bool tensor, got {present!r}"
        present = torch.ones(batch, dtype=torch.bool) if present is None else present
    with check(label, "rejects bad input"):
        for bad in (object(), [[0.5, 0.25]]):
            try:
                enc.prepare_input(bad, "input")
            except InputError:
                continue
            except Exception as exc:
                raise AssertionError(f"prepare_input({bad!r}) raised {type(exc).__name__}, not "
                                     "mmzoo.errors.InputError") from exc
            raise AssertionError(f"prepare_input accepted a {type(bad).__name__}; it must raise "
                                 "mmzoo.errors.InputError saying what input it takes")

    enc.eval()
    with check(label, "output"), torch.no_grad():
        out = _run(enc, x)
        pooled = out.pooled
        assert isinstance(pooled, torch.Tensor) and pooled.is_floating_point(), "pooled must be a float tensor"
        assert pooled.dim() == 2 and pooled.shape[0] == batch, \
            f"pooled must be (batch={batch}, D), got {tuple(pooled.shape)}"
        assert bool(torch.isfinite(pooled).all()), "pooled holds NaN or infinity"
    with check(label, "num_features honest"):
        assert pooled.shape[1] == enc.num_features, \
            f"pooled width {pooled.shape[1]} != num_features {enc.num_features}"
        if enc.token_features is None:
            assert out.tokens is None, "tokens returned but token_features is None (set token_features)"
        else:
            assert out.tokens is not None, f"token_features={enc.token_features} but no tokens returned"
            assert out.tokens.dim() == 3 and out.tokens.shape[0] == batch and \
                out.tokens.shape[2] == enc.token_features, (
                    f"tokens must be (batch={batch}, T, token_features={enc.token_features}), "
                    f"got {tuple(out.tokens.shape)}")
            assert bool(torch.isfinite(out.tokens).all()), "tokens hold NaN or infinity"
    with check(label, "token mask"):
        if out.tokens is not None:
            mask = out.token_mask
            assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and \
                mask.shape == out.tokens.shape[:2], (
                    f"token_mask must be a bool tensor of shape {tuple(out.tokens.shape[:2])}, got "
                    f"{getattr(mask, 'dtype', None)} {tuple(getattr(mask, 'shape', ()))}")
            empty = (present & ~mask.any(1)).nonzero().flatten().tolist()
            assert not empty, f"samples {empty} are present but have no valid token"
    with check(label, "padding ignored"), torch.no_grad():
        if isinstance(x, Mapping) and isinstance(x.get("attention_mask"), torch.Tensor) and \
                isinstance(x.get("input_ids"), torch.Tensor) and not bool(x["attention_mask"].all()):
            ids, amask = x["input_ids"], x["attention_mask"].bool()
            noise = torch.randint(1, max(2, min(_vocab_size(enc), 1000)), ids.shape, generator=generator)
            out2 = _run(enc, {**x, "input_ids": torch.where(amask, ids, noise)})
            assert close(out2.pooled[present], pooled[present], atol), (
                f"pooled output changes when padding ids change (max diff {max_diff(out2.pooled, pooled):.3g})")
            if out.tokens is not None:
                valid = out.token_mask & present[:, None]
                assert close(out2.tokens[valid], out.tokens[valid], atol), \
                    "valid tokens change when padding ids change"
    with check(label, "deterministic in eval"), torch.no_grad():
        again = _run(enc, x)
        assert torch.equal(again.pooled, pooled), "two eval forward passes on the same input differ"
    with check(label, "samples independent"), torch.no_grad():
        for i in range(batch):
            if not bool(present[i]):
                continue
            single = _run(enc, take(x, [i]))
            assert close(single.pooled[0], pooled[i], atol), (
                f"sample {i} encoded alone differs from the same sample in a batch "
                f"(max diff {max_diff(single.pooled[0], pooled[i]):.3g}); samples must not influence "
                "each other in eval mode")

    with check(label, "gradient"):
        enc = jittered_copy(original := enc).train()  # leaves the checked encoder untouched
        out = _run(enc, x)
        g = torch.Generator().manual_seed(1)
        loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
        if out.tokens is not None:
            weight = torch.randn(out.tokens.shape, generator=g) * out.token_mask[..., None]
            loss = loss + (out.tokens * weight).sum()
        loss.backward()
        problems = gradient_problems(enc)
        enc = original
        assert not problems, "; ".join(problems)

    with check(label, "state_dict round trip"), torch.no_grad():
        reloaded = _run(rebuilt_from_state(make, enc), x)
        assert torch.equal(reloaded.pooled, pooled), (
            f"a rebuilt encoder loaded from the saved state_dict gives different outputs (max diff "
            f"{max_diff(reloaded.pooled, pooled):.3g}): some state is not in state_dict")

    with check(label, "processor"), tempfile.TemporaryDirectory() as tmp:
        processor = enc.build_processor()
        if processor is not None:
            assert isinstance(processor, InputProcessor), \
                f"build_processor returned {type(processor).__name__}, not an mmzoo.InputProcessor"
            processor.save(Path(tmp))
            pickles = [p.name for p in Path(tmp).rglob("*") if p.suffix.lower() in PICKLE_SUFFIXES]
            assert not pickles, f"the processor saved pickle files {pickles}; save data files only"
            other = make(1).build_processor()
            other.load(Path(tmp))
            values = raw if raw is not None else _default_raw(enc, batch_size)
            if values is not None:
                first, second = processor(values), other(values)
                a, b = (first["input_ids"], second["input_ids"]) if isinstance(first, Mapping) else (first, second)
                assert torch.equal(a, b), "a processor reloaded from its saved files processes differently"
                prepared, _ = enc.prepare_input(first, "input")
                _run(enc, prepared)

    if isinstance(encoder, str) and fusion is not None:
        _check_model_round_trip(label, encoder, kwargs, fusion, x_raw, registry)


def _check_model_round_trip(label: str, encoder: str, kwargs, fusion: str, x_raw, registry) -> None:
    import torch

    import mmzoo
    from mmzoo.names import format_part, parse_part

    registry = resolve_registry(registry)
    if fusion not in registry.list("fusion"):
        return
    part = parse_part(encoder)
    name = format_part(part.name, {**part.kwargs, **dict(kwargs or {})}) + "/" + fusion
    with check(label, "model round trip"), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        model = mmzoo.create(name, num_classes=3, registry=registry).eval()
        slot = model.inputs[0]
        expected = model(**{slot: x_raw})
        model.save_pretrained(tmp)
        loaded = mmzoo.load(tmp, registry=registry)
        assert loaded.name == model.name, f"reloaded name {loaded.name!r} != {model.name!r}"
        got = loaded(**{slot: x_raw})
        assert torch.equal(got, expected), (
            f"save_pretrained + mmzoo.load gives different outputs (max diff {max_diff(got, expected):.3g})")
