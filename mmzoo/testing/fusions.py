"""The fusion contract: :func:`check_fusion`."""

from __future__ import annotations

from typing import Any, Mapping

from mmzoo.errors import InputError
from mmzoo.testing._common import builder, check, close, gradient_problems, jittered_copy, max_diff, \
    rebuilt_from_state, resolve_registry, unregistered

__all__ = ["check_fusion"]


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

        decision = bool(getattr(resolve_registry(registry).resolve("fusion", parse_part(fusion).name).factory,
                                "decision_level", False))
    extra: dict[str, Any] = {}
    if not isinstance(fusion, torch.nn.Module):
        extra["inputs"] = specs
        if decision:
            extra["num_classes"] = 5 if num_classes is None else num_classes
    label, make, _ = builder("fusion", fusion, kwargs, registry, {"inputs", "num_classes"}, extra)
    label = f"{label} with inputs {list(specs)}"
    generator = torch.Generator().manual_seed(0)

    with check(label, "build"):
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
    with check(label, "registered parameters"):
        problems = unregistered(fus)
        assert not problems, "; ".join(problems)

    specs = dict(fus.inputs)
    feats = _feats(specs, batch_size, generator)
    present = _presence(list(specs), batch_size)
    fus.eval()
    with check(label, "output"), torch.no_grad():
        y = _fusion_run(fus, feats, present)
        assert y.is_floating_point() and y.shape == (batch_size, fus.num_features), (
            f"output must be a float (batch={batch_size}, num_features={fus.num_features}) tensor, "
            f"got {y.dtype} {tuple(y.shape)}")
        assert bool(torch.isfinite(y).all()), "output holds NaN or infinity"

    with check(label, "deterministic in eval"), torch.no_grad():
        assert torch.equal(_fusion_run(fus, feats, present), y), "two eval forward passes differ"
    with check(label, "masking exact"), torch.no_grad():
        for slot in specs:
            missing = ~present[slot]
            if not bool(missing.any()):
                continue
            for what, fill in (("large values", lambda s: 1e3 * torch.randn(s, generator=generator)),
                               ("NaN", lambda s: torch.full(s, float("nan")))):
                y2 = _fusion_run(fus, _replace(feats, slot, missing, fill), present)
                assert close(y2, y, atol), (
                    f"changing the features of input {slot!r} for samples where it is missing "
                    f"({what}) changes the output (max diff {max_diff(y2, y):.3g}); select with "
                    "torch.where instead of multiplying by the mask")
    with check(label, "token masks honoured"), torch.no_grad():
        for slot, spec in specs.items():
            old = feats[slot]
            if spec.token_features is None or old.token_mask is None or bool(old.token_mask.all()):
                continue
            y2 = _fusion_run(fus, _replace(feats, slot, torch.zeros(batch_size, dtype=torch.bool),
                                           lambda s: 1e3 * torch.randn(s, generator=generator),
                                           tokens_where=~old.token_mask), present)
            assert close(y2, y, atol), (
                f"padding tokens (token_mask False) of input {slot!r} change the output "
                f"(max diff {max_diff(y2, y):.3g})")
    with check(label, "whole input missing"), torch.no_grad():
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
            assert close(y_placeholder, y_random, atol), (
                f"with input {slot!r} missing for the whole batch, its (placeholder) features still "
                f"change the output (max diff {max_diff(y_placeholder, y_random):.3g})")
    with check(label, "samples independent"), torch.no_grad():
        for i in range(batch_size):
            single = _fusion_run(fus, {s: _take_output(o, [i]) for s, o in feats.items()},
                                 {s: m[[i]] for s, m in present.items()})
            assert close(single[0], y[i], atol), (
                f"sample {i} fused alone differs from the same sample in a batch (max diff "
                f"{max_diff(single[0], y[i]):.3g}); samples must not influence each other in eval mode")

    with check(label, "gradient"):
        fus = jittered_copy(original := fus).train()  # leaves the checked fusion untouched
        leaves = {}
        for slot, o in feats.items():
            pooled = o.pooled.clone().requires_grad_(True)
            toks = None if o.tokens is None else o.tokens.clone().requires_grad_(True)
            leaves[slot] = type(o)(pooled, toks, o.token_mask)
        out = _fusion_run(fus, leaves, present)
        weight = torch.randn(out.shape, generator=torch.Generator().manual_seed(1))
        (out * weight).sum().backward()
        # with one input no sample can miss it, so missing-input parameters may get a zero gradient
        problems = gradient_problems(fus, allow_zero=len(specs) == 1)
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

    with check(label, "state_dict round trip"), torch.no_grad():
        again = _fusion_run(rebuilt_from_state(make, fus), feats, present)
        assert torch.equal(again, y), (
            f"a rebuilt fusion loaded from the saved state_dict gives different outputs "
            f"(max diff {max_diff(again, y):.3g}): some state is not in state_dict")


def _take_output(out, index):
    from mmzoo.components import EncoderOutput

    return EncoderOutput(out.pooled[index], None if out.tokens is None else out.tokens[index],
                         None if out.token_mask is None else out.token_mask[index])
