"""The conformance kit: contract checks for encoders and fusions, and pytest
fixtures for an isolated registry (in the spirit of scikit-learn's
``check_estimator``).

::

    from mmzoo.testing import check_encoder, check_fusion

    check_encoder("lstm(hidden_size=16, vocab_size=300)")   # a registered name
    check_encoder(MyEncoder, kwargs={"width": 8})             # or a class / factory
    check_fusion("concat")

Each check that fails raises :class:`ConformanceError` (an
``AssertionError``) that names the component, the check and the reason.
The checks run on CPU with tiny random inputs.

Encoders checked (:func:`check_encoder`): ``build``, ``registered
parameters``, ``prepare_input``, ``rejects bad input``, ``output``,
``num_features honest``, ``token mask``, ``padding ignored``, ``samples
independent``, ``deterministic in eval``, ``gradient``, ``state_dict round
trip``, ``processor``, ``model round trip``.

Fusions checked (:func:`check_fusion`), for 3, 2 and 1 inputs: ``build``,
``registered parameters``, ``output``, ``masking exact``, ``token masks
honoured``, ``whole input missing``, ``samples independent``,
``deterministic in eval``, ``gradient``, ``state_dict round trip``.

Example inputs: images (B, C, 32, 32) and token ids are made by the kit; an
encoder of another modality implements ``example_input(batch_size,
generator)`` (and, for its processor, ``example_raw(batch_size)``) or the
caller passes ``inputs=``.

Pytest fixtures: import them into your ``conftest.py``
(``from mmzoo.testing import make_mmzoo_registry, mmzoo_registry``) or list
``pytest_plugins = ["mmzoo.testing"]`` in the rootdir's ``conftest.py``::

    def test_it(make_mmzoo_registry):
        registry = make_mmzoo_registry("my_plugin.plugin")   # built-ins + this plugin
        model = mmzoo.create("my_encoder/concat")            # uses that registry

``make_mmzoo_registry(*plugins, builtins=True)`` builds a clean
:class:`~mmzoo.registry.Registry` (no entry-point discovery) holding mmzoo's
built-in plugins and ``plugins`` (entry-point names such as ``"audio"``,
module names, modules or ``(name, module)`` pairs) and makes it the default
registry until the test ends; ``mmzoo_registry`` is the same with the
built-ins only.
"""

from __future__ import annotations

import contextlib
import copy
import subprocess
import sys
import tempfile
from importlib import import_module, metadata
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

from mmzoo.errors import InputError

__all__ = [
    "ConformanceError",
    "check_encoder",
    "check_fusion",
    "check_plugin",
    "isolated_registry",
    "mmzoo_registry",
]

ATOL = 1e-5
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}


class ConformanceError(AssertionError):
    """A component broke the contract: ``subject`` failed ``check`` because ``reason``."""

    def __init__(self, subject: str, check: str, reason: str):
        self.subject, self.check, self.reason = subject, check, reason
        super().__init__(f"{subject} fails check '{check}': {reason}")


@contextlib.contextmanager
def _check(subject: str, name: str) -> Iterator[None]:
    """Turn any failure inside the block into a ConformanceError naming ``name``."""
    try:
        yield
    except ConformanceError:
        raise
    except AssertionError as exc:
        raise ConformanceError(subject, name, str(exc)) from exc
    except Exception as exc:
        raise ConformanceError(subject, name, f"raised {type(exc).__name__}: {exc}") from exc


# ------------------------------------------------------------------ helpers


def _registry(registry):
    from mmzoo.registry import default_registry

    return registry if registry is not None else default_registry()


def _take(x: Any, index: list[int]) -> Any:
    """Samples ``index`` of a batch (tensor, mapping of tensors, or list)."""
    import torch

    if isinstance(x, torch.Tensor):
        return x[index]
    if isinstance(x, Mapping):
        return {k: _take(v, index) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [x[i] for i in index]
    raise AssertionError(f"cannot slice an input of type {type(x).__name__} into samples")


def _close(a, b, atol: float = ATOL) -> bool:
    import torch

    return a.shape == b.shape and bool(torch.allclose(a, b, atol=atol, rtol=atol, equal_nan=False))


def _max_diff(a, b) -> float:
    if a.shape != b.shape:
        return float("inf")
    return float((a.double() - b.double()).abs().max()) if a.numel() else 0.0


def _unregistered(module) -> list[str]:
    """Parameters, trainable tensors or modules that ``state_dict`` and
    ``parameters()`` miss: held in plain lists/dicts/tuples, or set with
    ``object.__setattr__`` (``nn.Module`` registers direct attributes itself)."""
    import torch
    from torch import nn

    registered = {id(t) for t in module.parameters()} | {id(t) for t in module.buffers()} | \
        {id(m) for m in module.modules()}

    def hidden(item: Any) -> bool:  # a trainable thing the root module does not know about
        trainable = isinstance(item, (nn.Parameter, nn.Module)) or \
            (isinstance(item, torch.Tensor) and item.requires_grad)
        return trainable and id(item) not in registered

    problems = []
    for prefix, sub in module.named_modules():
        for attr, value in vars(sub).items():
            if attr in ("_parameters", "_buffers", "_modules"):
                continue
            where = f"{prefix + '.' if prefix else ''}{attr}"
            if hidden(value):
                problems.append(f"{where} is a {type(value).__name__} the module does not register")
            elif isinstance(value, (list, tuple, dict)):
                items = value.values() if isinstance(value, dict) else value
                if any(hidden(item) for item in items):
                    problems.append(f"{where} holds modules or parameters in a plain {type(value).__name__}; "
                                    "use nn.ModuleList / nn.ModuleDict / nn.ParameterList so they are "
                                    "registered (saved, moved to the device, trained)")
    return problems


def _gradient_problems(module, allow_zero: bool = False) -> list[str]:
    """Parameters the gradient never reached (None) or, unless ``allow_zero``,
    reached with exactly zero everywhere."""
    import torch

    never, zero = [], []
    for name, parameter in module.named_parameters():
        if not parameter.requires_grad:
            continue
        if parameter.grad is None:
            never.append(name)
        elif not allow_zero and not bool(torch.any(parameter.grad != 0)):
            zero.append(name)
    problems = []
    if never:
        problems.append(f"parameters never reached by the gradient (built but unused?): {never[:10]}")
    if zero:
        problems.append(f"parameters whose gradient is exactly zero: {zero[:10]}")
    return problems


def _state_bytes(module) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous().clone() for k, v in module.state_dict().items()})


def _load_bytes(module, data: bytes) -> None:
    from safetensors.torch import load

    from mmzoo.weights import load_state

    load_state(module, load(data), strict=True, source="the saved state_dict")


def _perturbed_copy(module, scale: float = 1.0):
    """A deep copy whose floating parameters and buffers are all changed."""
    import torch

    other = copy.deepcopy(module)
    with torch.no_grad():
        for tensor in [*other.parameters(), *other.buffers()]:
            if tensor.is_floating_point():
                tensor.add_(scale * (torch.randn_like(tensor) + 1.0))
    return other


def _jittered_copy(module):
    """A deep copy with small noise on every parameter (buffers untouched), for
    the gradient check: zero-initialised weights (a residual branch's last
    BatchNorm, say) block the gradient only at initialisation, while a
    parameter that is structurally cut off stays at zero gradient."""
    import torch

    other = copy.deepcopy(module)
    with torch.no_grad():
        for parameter in other.parameters():
            if parameter.is_floating_point():
                parameter.add_(0.02 * torch.randn_like(parameter))
    return other


def _builder(kind: str, spec: Any, kwargs: Mapping[str, Any] | None, registry, skip: set[str],
             extra: Mapping[str, Any]) -> tuple[str, Callable[[int], Any], Any]:
    """(label, make(seed) -> component, resolved-or-None) for a name, a factory or an instance."""
    import torch

    kwargs = dict(kwargs or {})
    if isinstance(spec, str):
        from mmzoo.builder import build_part
        from mmzoo.names import NamePart, parse_part

        part = parse_part(spec)
        resolved = _registry(registry).resolve(kind, part.name)
        part = NamePart(part.name, {**part.kwargs, **kwargs})

        def make(seed: int):
            with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
                torch.manual_seed(seed)
                return build_part(resolved, part, skip, extra)[0]

        return f"{kind} {str(part)!r}", make, resolved
    if isinstance(spec, torch.nn.Module):
        def copy_of(seed: int):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return spec if seed == 0 else _perturbed_copy(spec)

        return f"{kind} {type(spec).__name__}", copy_of, None
    if callable(spec):
        def call(seed: int):
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return spec(**kwargs, **extra)

        return f"{kind} {getattr(spec, '__qualname__', repr(spec))}", call, None
    raise TypeError(f"check_{kind} takes a registered name, a class/factory or an instance, "
                    f"not {type(spec).__name__}")


# ------------------------------------------------------------------ encoders


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

    if batch_size < 2:
        raise ValueError("check_encoder needs batch_size >= 2 (BatchNorm in train mode)")
    label, make, resolved = _builder("encoder", encoder, kwargs, registry, set(), {})
    generator = torch.Generator().manual_seed(0)

    with _check(label, "build"):
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
    with _check(label, "registered parameters"):
        problems = _unregistered(enc)
        assert not problems, "; ".join(problems)

    with _check(label, "prepare_input"):
        x_raw = (inputs(batch_size) if callable(inputs) else inputs) if inputs is not None \
            else _default_input(enc, batch_size, generator)
        x, present = enc.prepare_input(x_raw, "input")
        batch = enc.batch_size(x)
        assert isinstance(batch, int) and batch >= 2, f"batch_size() returned {batch!r} for a batch of inputs"
        if present is not None:
            assert isinstance(present, torch.Tensor) and present.dtype == torch.bool and \
                present.shape == (batch,), f"present must be None or a ({batch},) bool tensor, got {present!r}"
        present = torch.ones(batch, dtype=torch.bool) if present is None else present
    with _check(label, "rejects bad input"):
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
    with _check(label, "output"), torch.no_grad():
        out = _run(enc, x)
        pooled = out.pooled
        assert isinstance(pooled, torch.Tensor) and pooled.is_floating_point(), "pooled must be a float tensor"
        assert pooled.dim() == 2 and pooled.shape[0] == batch, \
            f"pooled must be (batch={batch}, D), got {tuple(pooled.shape)}"
        assert bool(torch.isfinite(pooled).all()), "pooled holds NaN or infinity"
    with _check(label, "num_features honest"):
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
    with _check(label, "token mask"):
        if out.tokens is not None:
            mask = out.token_mask
            assert isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and \
                mask.shape == out.tokens.shape[:2], (
                    f"token_mask must be a bool tensor of shape {tuple(out.tokens.shape[:2])}, got "
                    f"{getattr(mask, 'dtype', None)} {tuple(getattr(mask, 'shape', ()))}")
            empty = (present & ~mask.any(1)).nonzero().flatten().tolist()
            assert not empty, f"samples {empty} are present but have no valid token"
    with _check(label, "padding ignored"), torch.no_grad():
        if isinstance(x, Mapping) and isinstance(x.get("attention_mask"), torch.Tensor) and \
                isinstance(x.get("input_ids"), torch.Tensor) and not bool(x["attention_mask"].all()):
            ids, amask = x["input_ids"], x["attention_mask"].bool()
            noise = torch.randint(1, max(2, min(_vocab_size(enc), 1000)), ids.shape, generator=generator)
            out2 = _run(enc, {**x, "input_ids": torch.where(amask, ids, noise)})
            assert _close(out2.pooled[present], pooled[present], atol), (
                f"pooled output changes when padding ids change (max diff {_max_diff(out2.pooled, pooled):.3g})")
            if out.tokens is not None:
                valid = out.token_mask & present[:, None]
                assert _close(out2.tokens[valid], out.tokens[valid], atol), \
                    "valid tokens change when padding ids change"
    with _check(label, "deterministic in eval"), torch.no_grad():
        again = _run(enc, x)
        assert torch.equal(again.pooled, pooled), "two eval forward passes on the same input differ"
    with _check(label, "samples independent"), torch.no_grad():
        for i in range(batch):
            if not bool(present[i]):
                continue
            single = _run(enc, _take(x, [i]))
            assert _close(single.pooled[0], pooled[i], atol), (
                f"sample {i} encoded alone differs from the same sample in a batch "
                f"(max diff {_max_diff(single.pooled[0], pooled[i]):.3g}); samples must not influence "
                "each other in eval mode")

    with _check(label, "gradient"):
        enc = _jittered_copy(original := enc).train()  # leaves the checked encoder untouched
        out = _run(enc, x)
        g = torch.Generator().manual_seed(1)
        loss = (out.pooled * torch.randn(out.pooled.shape, generator=g)).sum()
        if out.tokens is not None:
            weight = torch.randn(out.tokens.shape, generator=g) * out.token_mask[..., None]
            loss = loss + (out.tokens * weight).sum()
        loss.backward()
        problems = _gradient_problems(enc)
        enc = original
        assert not problems, "; ".join(problems)

    with _check(label, "state_dict round trip"), torch.no_grad():
        data = _state_bytes(enc)
        fresh = make(1).eval()
        _load_bytes(fresh, data)
        reloaded = _run(fresh, x)
        assert torch.equal(reloaded.pooled, pooled), (
            f"a rebuilt encoder loaded from the saved state_dict gives different outputs (max diff "
            f"{_max_diff(reloaded.pooled, pooled):.3g}): some state is not in state_dict")

    with _check(label, "processor"), tempfile.TemporaryDirectory() as tmp:
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

    registry = _registry(registry)
    if fusion not in registry.list("fusion"):
        return
    part = parse_part(encoder)
    name = format_part(part.name, {**part.kwargs, **dict(kwargs or {})}) + "/" + fusion
    with _check(label, "model round trip"), tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        model = mmzoo.create(name, num_classes=3, registry=registry).eval()
        slot = model.inputs[0]
        expected = model(**{slot: x_raw})
        model.save_pretrained(tmp)
        loaded = mmzoo.load(tmp, registry=registry)
        assert loaded.name == model.name, f"reloaded name {loaded.name!r} != {model.name!r}"
        got = loaded(**{slot: x_raw})
        assert torch.equal(got, expected), (
            f"save_pretrained + mmzoo.load gives different outputs (max diff {_max_diff(got, expected):.3g})")


# ------------------------------------------------------------------- fusions


def _default_specs():
    from mmzoo.components import InputSpec

    return {"image": InputSpec(12, 8, "image"), "text": InputSpec(10, 10, "text"),
            "tabular": InputSpec(6, None, "tabular")}


def _feats(specs, batch: int, generator, tokens: int = 5):
    import torch

    from mmzoo.components import EncoderOutput

    lengths = torch.tensor([[tokens, 2, 1, tokens - 1, 3][i % 5] for i in range(batch)]).clamp(1, tokens)
    result = {}
    for slot, spec in specs.items():
        pooled = torch.randn(batch, spec.num_features, generator=generator)
        if spec.token_features is None:
            result[slot] = EncoderOutput(pooled)
        else:
            mask = torch.arange(tokens)[None, :] < lengths[:, None]
            toks = torch.randn(batch, tokens, spec.token_features, generator=generator)
            result[slot] = EncoderOutput(pooled, toks, mask)
    return result


def _presence(slots, batch: int):
    """Sample 0 has every input; sample i (1 <= i <= n) misses input i-1 only;
    later samples miss two inputs (n > 2) or one. So every input is missing
    somewhere while the others are present, and every sample keeps one."""
    import torch

    n = len(slots)
    rows = [[True] * n]
    for i in range(1, batch):
        row = [True] * n
        if n > 1:
            row[(i - 1) % n] = False
            if n > 2 and i > n:
                row[i % n] = False
        rows.append(row)
    table = torch.tensor(rows)
    return {slot: table[:, j].clone() for j, slot in enumerate(slots)}


def _replace(feats, slot, where, value_fn, tokens_where=None):
    """Copy of ``feats`` with ``slot``'s pooled rows ``where`` (B,) and tokens
    ``tokens_where`` (B, T) (default: the rows ``where``) set by ``value_fn(shape)``."""
    import torch

    from mmzoo.components import EncoderOutput

    out = dict(feats)
    old = feats[slot]
    pooled = torch.where(where[:, None], value_fn(old.pooled.shape), old.pooled)
    toks = old.tokens
    if toks is not None:
        tw = where[:, None].expand(toks.shape[:2]) if tokens_where is None else tokens_where
        toks = torch.where(tw[..., None], value_fn(toks.shape), toks)
    out[slot] = EncoderOutput(pooled, toks, old.token_mask)
    return out


def _fusion_run(fusion, feats, present):
    import torch

    y = fusion(feats, present)
    if not isinstance(y, torch.Tensor):
        raise AssertionError(f"forward returned {type(y).__name__}, not a tensor")
    return y


def check_fusion(fusion: Any, *, kwargs: Mapping[str, Any] | None = None, inputs: Mapping[str, Any] | None = None,
                 num_classes: int | None = None, batch_size: int = 4, registry=None,
                 atol: float = 1e-4) -> None:
    """Run the fusion contract checks on ``fusion`` (a registered name part such
    as ``"attention(dim=16)"``, a :class:`mmzoo.Fusion` subclass called with
    ``inputs`` and ``kwargs``, or an instance).

    ``inputs`` maps slot -> :class:`mmzoo.InputSpec` (default: three inputs,
    one without tokens, token widths different from pooled widths). The
    checks run for those inputs and for their first two and first one; a
    fusion that refuses a number of inputs with an ``InputError`` (say, FiLM
    with one input) passes that configuration. A decision-level fusion gets
    ``num_classes`` (default 5). Raises :class:`ConformanceError`.
    """
    import torch

    from mmzoo.components import InputSpec

    specs = {k: v if isinstance(v, InputSpec) else InputSpec(int(v)) for k, v in (inputs or _default_specs()).items()}
    if isinstance(fusion, torch.nn.Module):
        configs = [dict(fusion.inputs)]  # an instance is built for its own inputs
    else:
        configs = [dict(list(specs.items())[:n]) for n in range(len(specs), 0, -1)]
    for number, config in enumerate(configs):
        _check_fusion_once(fusion, kwargs, config, num_classes, batch_size, registry, atol,
                           optional=number > 0)


def _check_fusion_once(fusion, kwargs, specs, num_classes, batch_size, registry, atol, optional: bool) -> None:
    import torch

    from mmzoo.components import Fusion

    decision = bool(getattr(fusion, "decision_level", False))
    if isinstance(fusion, str):
        from mmzoo.names import parse_part

        decision = bool(getattr(_registry(registry).resolve("fusion", parse_part(fusion).name).factory,
                                "decision_level", False))
    extra: dict[str, Any] = {}
    if not isinstance(fusion, torch.nn.Module):
        extra["inputs"] = specs
        if decision:
            extra["num_classes"] = 5 if num_classes is None else num_classes
    label, make, _ = _builder("fusion", fusion, kwargs, registry, {"inputs", "num_classes"}, extra)
    label = f"{label} with inputs {list(specs)}"
    generator = torch.Generator().manual_seed(0)

    with _check(label, "build"):
        try:
            fus = make(0)
        except InputError:
            if optional:
                return  # a documented restriction on the number of inputs
            raise
        assert isinstance(fus, Fusion), f"built a {type(fus).__name__}, not a subclass of mmzoo.Fusion"
        nf = getattr(fus, "num_features", None)
        assert isinstance(nf, int) and not isinstance(nf, bool) and nf > 0, \
            f"num_features must be a positive int, got {nf!r}"
        if fus.decision_level and extra.get("num_classes"):
            assert nf == extra["num_classes"], (
                f"a decision-level fusion built with num_classes={extra['num_classes']} must output "
                f"that many logits, num_features is {nf}")
    with _check(label, "registered parameters"):
        problems = _unregistered(fus)
        assert not problems, "; ".join(problems)

    specs = dict(fus.inputs)
    feats = _feats(specs, batch_size, generator)
    present = _presence(list(specs), batch_size)
    fus.eval()
    with _check(label, "output"), torch.no_grad():
        y = _fusion_run(fus, feats, present)
        assert y.is_floating_point() and y.shape == (batch_size, fus.num_features), (
            f"output must be a float (batch={batch_size}, num_features={fus.num_features}) tensor, "
            f"got {y.dtype} {tuple(y.shape)}")
        assert bool(torch.isfinite(y).all()), "output holds NaN or infinity"

    with _check(label, "deterministic in eval"), torch.no_grad():
        assert torch.equal(_fusion_run(fus, feats, present), y), "two eval forward passes differ"
    with _check(label, "masking exact"), torch.no_grad():
        for slot in specs:
            missing = ~present[slot]
            if not bool(missing.any()):
                continue
            for what, fill in (("large values", lambda s: 1e3 * torch.randn(s, generator=generator)),
                               ("NaN", lambda s: torch.full(s, float("nan")))):
                y2 = _fusion_run(fus, _replace(feats, slot, missing, fill), present)
                assert _close(y2, y, atol), (
                    f"changing the features of input {slot!r} for samples where it is missing "
                    f"({what}) changes the output (max diff {_max_diff(y2, y):.3g}); select with "
                    "torch.where instead of multiplying by the mask")
    with _check(label, "token masks honoured"), torch.no_grad():
        for slot, spec in specs.items():
            old = feats[slot]
            if spec.token_features is None or old.token_mask is None or bool(old.token_mask.all()):
                continue
            y2 = _fusion_run(fus, _replace(feats, slot, torch.zeros(batch_size, dtype=torch.bool),
                                           lambda s: 1e3 * torch.randn(s, generator=generator),
                                           tokens_where=~old.token_mask), present)
            assert _close(y2, y, atol), (
                f"padding tokens (token_mask False) of input {slot!r} change the output "
                f"(max diff {_max_diff(y2, y):.3g})")
    with _check(label, "whole input missing"), torch.no_grad():
        if len(specs) > 1:
            from mmzoo.components import EncoderOutput

            slot = list(specs)[0]
            spec = specs[slot]
            absent = {s: torch.ones(batch_size, dtype=torch.bool) for s in specs}
            absent[slot] = torch.zeros(batch_size, dtype=torch.bool)
            placeholder = dict(feats)  # what MultimodalModel passes for an input not given
            placeholder[slot] = EncoderOutput(
                torch.zeros(batch_size, spec.num_features),
                None if spec.token_features is None else torch.zeros(batch_size, 1, spec.token_features),
                None if spec.token_features is None else torch.zeros(batch_size, 1, dtype=torch.bool))
            y_placeholder = _fusion_run(fus, placeholder, absent)
            y_random = _fusion_run(fus, feats, absent)
            assert bool(torch.isfinite(y_placeholder).all()), \
                f"output holds NaN/inf when input {slot!r} is missing for the whole batch"
            assert _close(y_placeholder, y_random, atol), (
                f"with input {slot!r} missing for the whole batch, its (placeholder) features still "
                f"change the output (max diff {_max_diff(y_placeholder, y_random):.3g})")
    with _check(label, "samples independent"), torch.no_grad():
        for i in range(batch_size):
            single = _fusion_run(fus, {s: _take_output(o, [i]) for s, o in feats.items()},
                                 {s: m[[i]] for s, m in present.items()})
            assert _close(single[0], y[i], atol), (
                f"sample {i} fused alone differs from the same sample in a batch (max diff "
                f"{_max_diff(single[0], y[i]):.3g}); samples must not influence each other in eval mode")

    with _check(label, "gradient"):
        fus = _jittered_copy(original := fus).train()  # leaves the checked fusion untouched
        leaves = {}
        for slot, o in feats.items():
            pooled = o.pooled.clone().requires_grad_(True)
            toks = None if o.tokens is None else o.tokens.clone().requires_grad_(True)
            leaves[slot] = type(o)(pooled, toks, o.token_mask)
        out = _fusion_run(fus, leaves, present)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * weight).sum().backward()
        # with one input no sample can miss it, so missing-input parameters may get a zero gradient
        problems = _gradient_problems(fus, allow_zero=len(specs) == 1)
        for slot, o in leaves.items():
            missing = ~present[slot]
            if o.pooled.grad is not None and bool((o.pooled.grad[missing] != 0).any()):
                problems.append(f"the gradient reaches the features of input {slot!r} where it is missing")
            if o.tokens is not None and o.tokens.grad is not None:
                invalid = missing[:, None] | ~o.token_mask
                if bool((o.tokens.grad[invalid] != 0).any()):
                    problems.append(f"the gradient reaches padding or missing tokens of input {slot!r}")
        fus = original
        assert not problems, "; ".join(problems)

    with _check(label, "state_dict round trip"), torch.no_grad():
        data = _state_bytes(fus)
        fresh = make(1).eval()
        _load_bytes(fresh, data)
        again = _fusion_run(fresh, feats, present)
        assert torch.equal(again, y), (
            f"a rebuilt fusion loaded from the saved state_dict gives different outputs "
            f"(max diff {_max_diff(again, y):.3g}): some state is not in state_dict")


def _take_output(out, index):
    from mmzoo.components import EncoderOutput

    return EncoderOutput(out.pooled[index], None if out.tokens is None else out.tokens[index],
                         None if out.token_mask is None else out.token_mask[index])


# ------------------------------------------------------------------- plugins


def check_plugin(module: str, *, name: str | None = None) -> None:
    """Check a plugin module: it imports no heavy module (torch, timm,
    transformers, ...) when loaded (in a fresh interpreter), implements
    ``mmzoo_register`` and registers cleanly into an isolated registry."""
    from mmzoo.plugins import HEAVY_MODULES

    subject = f"plugin module {module!r}"
    with _check(subject, "light import"):
        code = ("import sys, importlib; importlib.import_module(%r); "
                "print(','.join(m for m in %r if m in sys.modules))" % (module, HEAVY_MODULES))
        result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert result.returncode == 0, f"importing it fails: {result.stderr.strip()[-500:]}"
        heavy = [m for m in result.stdout.strip().split(",") if m]
        assert not heavy, (f"importing it pulls in {heavy}; import those inside the component "
                           "modules named by 'module:attr' factories instead")
    with _check(subject, "registers"):
        registry = isolated_registry(builtins=False)
        info = registry.register_plugin(import_module(module), name or module)
        assert info.status == "ok", f"status {info.status}: {info.error}"
        assert info.components, "mmzoo_register registered no component"


# ------------------------------------------------------------ registries


def _entry_point(name: str):
    for entry_point in metadata.entry_points(group="mmzoo"):
        if entry_point.name == name:
            return entry_point
    return None


def isolated_registry(*plugins: Any, builtins: bool = True):
    """A clean :class:`~mmzoo.registry.Registry` (no discovery) holding
    mmzoo's built-in plugins (unless ``builtins=False``) and ``plugins``:
    installed entry-point names (``"audio"``), module names
    (``"my_pkg.plugin"``), module objects, or ``(name, module)`` pairs.
    A plugin that fails to register raises :class:`~mmzoo.errors.PluginError`."""
    import mmzoo
    from mmzoo.errors import PluginError
    from mmzoo.plugins import BUILTIN_PLUGINS
    from mmzoo.registry import Registry

    registry = Registry(autoload=False)

    def add(module, name, **info):
        result = registry.register_plugin(module, name, **info)
        if result.status != "ok":
            raise PluginError(f"plugin {name!r} failed to register: {result.error}")

    if builtins:
        for name, module_name in BUILTIN_PLUGINS.items():
            add(import_module(module_name), name, distribution="mmzoo", version=mmzoo.__version__, builtin=True)
    for plugin in plugins:
        if isinstance(plugin, tuple):
            name, module = plugin
            add(import_module(module) if isinstance(module, str) else module, name)
        elif isinstance(plugin, str):
            entry_point = _entry_point(plugin)
            if entry_point is not None:
                dist = getattr(entry_point, "dist", None)
                add(entry_point.load(), plugin, distribution=dist.metadata["Name"] if dist else None,
                    version=dist.version if dist else None)
            else:
                add(import_module(plugin), plugin)
        else:
            add(plugin, getattr(plugin, "__name__", repr(plugin)))
    return registry


@contextlib.contextmanager
def use_registry(registry) -> Iterator[Any]:
    """Make ``registry`` the process default (``mmzoo.create`` etc.) inside the block."""
    import mmzoo.registry as registry_module

    with registry_module._DEFAULT_LOCK:
        previous, registry_module._DEFAULT = registry_module._DEFAULT, registry
    try:
        yield registry
    finally:
        with registry_module._DEFAULT_LOCK:
            registry_module._DEFAULT = previous


try:  # pytest integration (optional: the checks above work without pytest)
    import pytest
except ImportError:  # pragma: no cover
    pytest = None

if pytest is not None:

    @pytest.fixture
    def make_mmzoo_registry():
        """A factory: ``make_mmzoo_registry(*plugins, builtins=True)`` returns an
        :func:`isolated_registry` and makes it the default registry (what
        ``mmzoo.create``, ``mmzoo.list_*`` and ``mmzoo.load`` use) until the
        test ends."""
        stack = contextlib.ExitStack()

        def make(*plugins: Any, builtins: bool = True):
            return stack.enter_context(use_registry(isolated_registry(*plugins, builtins=builtins)))

        with stack:
            yield make

    @pytest.fixture
    def mmzoo_registry(make_mmzoo_registry):
        """A clean default registry holding mmzoo's built-in plugins only."""
        return make_mmzoo_registry()

    __all__ += ["make_mmzoo_registry", "use_registry"]
else:  # pragma: no cover
    __all__ = [n for n in __all__ if n != "mmzoo_registry"] + ["use_registry"]
