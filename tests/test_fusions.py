"""The fusion library: every registered fusion, with 1, 2 and 3 inputs.

Parametrized over ``mmzoo.list_fusions()``, so a fusion a plugin adds is
tested by the same rules: forward + backward, every parameter registered and
trained, missing inputs masked exactly, whole-batch missing == placeholder,
no NaN, batch independence, eval determinism, and at model level
``mmzoo.create`` / ``save_pretrained`` / ``mmzoo.load`` / ``torch.compile``.
"""

from __future__ import annotations

import time
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import mmzoo
from mmzoo.components import EncoderOutput, InputSpec
from mmzoo.errors import InputError, MMZooError

B = 6

FUSIONS = mmzoo.list_fusions()
_REGISTRY = mmzoo.default_registry()


def factory(name: str) -> Any:
    return _REGISTRY.resolve("fusion", name).factory


def _cases() -> list[Any]:
    cases = []
    for name in FUSIONS:
        cases.append(pytest.param(name, {}, id=name))
        if getattr(factory(name), "decision_level", False):
            cases.append(pytest.param(name, {"num_classes": 3}, id=f"{name}-classes"))
    return cases


CASES = _cases()

# Pooled and token widths differ (as for timm's mobilenetv3); "tab" has no tokens.
INPUTS = {
    "2": {"image": InputSpec(12, 10, "image"), "text": InputSpec(8, 6, "text")},
    "3": {
        "image": InputSpec(12, 10, "image"),
        "text": InputSpec(8, 6, "text"),
        "tab": InputSpec(5, None, "tabular"),
    },
    "flat": {"a": InputSpec(7), "b": InputSpec(9)},
}
TOKENS = {"image": 5, "text": 7}  # unaligned sequences of different lengths


def build(name: str, extra: dict[str, Any], inputs: dict[str, InputSpec]) -> torch.nn.Module:
    torch.manual_seed(0)
    fusion = factory(name)(inputs, **extra)
    return fusion.eval()


def make_feats(inputs: dict[str, InputSpec], seed: int = 1, b: int = B) -> dict[str, EncoderOutput]:
    g = torch.Generator().manual_seed(seed)
    feats = {}
    for slot, spec in inputs.items():
        pooled = torch.randn(b, spec.num_features, generator=g)
        if spec.token_features is None:
            feats[slot] = EncoderOutput(pooled)
            continue
        t = TOKENS.get(slot, 4)
        tokens = torch.randn(b, t, spec.token_features, generator=g)
        lengths = torch.randint(1, t + 1, (b,), generator=g)
        lengths[0] = t
        mask = torch.arange(t)[None, :] < lengths[:, None]
        feats[slot] = EncoderOutput(pooled, tokens, mask)
    return feats


def all_present(inputs: dict[str, InputSpec], b: int = B) -> dict[str, torch.Tensor]:
    return {slot: torch.ones(b, dtype=torch.bool) for slot in inputs}


def mixed_present(inputs: dict[str, InputSpec], b: int = B) -> dict[str, torch.Tensor]:
    """Sample 0 has every input; sample k (k >= 1) has only input (k-1) % n;
    the last sample misses only the first input (when n > 1)."""
    slots = list(inputs)
    present = {slot: torch.zeros(b, dtype=torch.bool) for slot in slots}
    for slot in slots:
        present[slot][0] = True
    for k in range(1, b):
        present[slots[(k - 1) % len(slots)]][k] = True
    if len(slots) > 1:
        for slot in slots[1:]:
            present[slot][b - 1] = True
    return present


def scramble(feats: dict[str, EncoderOutput], present: dict[str, torch.Tensor], garbage: float
             ) -> dict[str, EncoderOutput]:
    """Overwrite what must not matter: features of missing samples and padding tokens."""
    out = {}
    for slot, f in feats.items():
        miss = ~present[slot]
        pooled = f.pooled.clone()
        pooled[miss] = garbage
        tokens, mask = f.tokens, f.token_mask
        if tokens is not None:
            tokens = tokens.clone()
            tokens[miss] = garbage
            tokens[~mask] = -garbage
        out[slot] = EncoderOutput(pooled, tokens, mask)
    return out


def placeholder(spec: InputSpec, b: int = B) -> EncoderOutput:
    """What the model passes for an input missing from the whole batch."""
    pooled = torch.zeros(b, spec.num_features)
    if spec.token_features is None:
        return EncoderOutput(pooled)
    return EncoderOutput(pooled, torch.zeros(b, 1, spec.token_features), torch.zeros(b, 1, dtype=torch.bool))


def loss_of(y: torch.Tensor, seed: int = 0) -> torch.Tensor:
    # random weights: a plain sum has zero gradient through a LayerNorm / L2 norm
    w = torch.randn(y.shape, generator=torch.Generator().manual_seed(seed))
    return (y * w).sum()


def assert_same(a: torch.Tensor, b: torch.Tensor) -> None:
    torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def assert_close_float(a: torch.Tensor, b: torch.Tensor) -> None:
    """Same up to float32 rounding (attention over key sequences of different
    lengths sums in a different order)."""
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------ module level


def test_registry_lists_builtin_fusions():
    expected = {"concat", "gated", "attention", "sum", "mean", "max", "late", "film",
                "bilinear", "lmf", "tfn", "cross_attn", "perceiver"}
    assert expected <= set(FUSIONS)


@pytest.mark.parametrize("n", ["2", "3", "flat"])
@pytest.mark.parametrize("name,extra", CASES)
def test_forward_backward(name, extra, n):
    inputs = INPUTS[n]
    fusion = build(name, extra, inputs).train()
    y = fusion(make_feats(inputs), mixed_present(inputs))
    width = extra.get("num_classes") or fusion.num_features
    assert y.shape == (B, width) and y.dtype == torch.float32
    assert torch.isfinite(y).all()
    loss_of(y).backward()
    state = fusion.state_dict(keep_vars=True)
    registered = {id(t) for t in state.values()}
    for pname, p in fusion.named_parameters():
        assert id(p) in registered, f"{pname} is not in the state_dict"
        assert p.grad is not None, f"{pname} is not reached by the gradient"
        assert torch.isfinite(p.grad).all(), pname
    # nothing trainable hides outside parameters() (e.g. tensors in a Python list)
    for key, t in state.items():
        if t.requires_grad:
            assert any(t is p for p in fusion.parameters()), key


@pytest.mark.parametrize("n", ["2", "3"])
@pytest.mark.parametrize("name,extra", CASES)
def test_every_parameter_trains(name, extra, n):
    """Every parameter gets a non-zero gradient from some batch (batches vary
    which inputs are present, so missing-input embeddings train too)."""
    inputs = INPUTS[n]
    fusion = build(name, extra, inputs).train()
    slots = list(inputs)
    batches = [all_present(inputs), mixed_present(inputs)]
    for slot in slots:  # each input missing for the whole batch once
        present = all_present(inputs)
        present[slot][:] = False
        batches.append(present)
    for seed, present in enumerate(batches):
        loss_of(fusion(make_feats(inputs, seed=seed), present), seed).backward()
    dead = [pname for pname, p in fusion.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters that never receive a gradient: {dead}"


@pytest.mark.parametrize("n", ["2", "3", "flat"])
@pytest.mark.parametrize("garbage", [1e4, float("nan")], ids=["large", "nan"])
@pytest.mark.parametrize("name,extra", CASES)
def test_masking_is_exact(name, extra, n, garbage):
    """Values of missing inputs and padding tokens never reach the output or
    the gradient, not even inf/NaN."""
    inputs = INPUTS[n]
    fusion = build(name, extra, inputs).train()
    feats = make_feats(inputs)
    present = mixed_present(inputs)
    y = fusion(feats, present)
    y2 = fusion(scramble(feats, present, garbage), present)
    assert_same(y, y2)
    loss_of(y2).backward()
    for pname, p in fusion.named_parameters():
        assert torch.isfinite(p.grad).all(), f"{pname}: masked values leak into the gradient"


@pytest.mark.parametrize("name,extra", CASES)
@settings(max_examples=6, deadline=None)
@given(masks=st.lists(st.lists(st.booleans(), min_size=3, max_size=3).filter(any), min_size=1, max_size=5))
def test_masking_is_exact_for_any_masks(name, extra, masks):
    inputs = INPUTS["3"]
    fusion = build(name, extra, inputs)
    b = len(masks)
    present = {slot: torch.tensor([row[i] for row in masks]) for i, slot in enumerate(inputs)}
    feats = make_feats(inputs, b=b)
    with torch.no_grad():
        assert_same(fusion(feats, present), fusion(scramble(feats, present, float("nan")), present))


@pytest.mark.parametrize("n", ["2", "3"])
@pytest.mark.parametrize("name,extra", CASES)
def test_samples_are_independent(name, extra, n):
    """A sample with every input present is unaffected by other samples' masks
    and by the rest of the batch."""
    inputs = INPUTS[n]
    fusion = build(name, extra, inputs)
    feats = make_feats(inputs)
    with torch.no_grad():
        full = fusion(feats, all_present(inputs))
        mixed = fusion(feats, mixed_present(inputs))
        assert_same(full[0], mixed[0])  # sample 0 has every input in both
        alone = fusion(
            {s: EncoderOutput(f.pooled[2:3], None if f.tokens is None else f.tokens[2:3],
                              None if f.token_mask is None else f.token_mask[2:3])
             for s, f in feats.items()},
            {s: m[2:3] for s, m in mixed_present(inputs).items()},
        )
    assert_close_float(alone[0], mixed[2])


@pytest.mark.parametrize("n", ["2", "3"])
@pytest.mark.parametrize("name,extra", CASES)
def test_whole_batch_missing_equals_placeholder(name, extra, n):
    inputs = INPUTS[n]
    fusion = build(name, extra, inputs)
    for slot, spec in inputs.items():
        feats = make_feats(inputs)
        present = all_present(inputs)
        present[slot][:] = False
        with torch.no_grad():
            y = fusion(feats, present)
            y_placeholder = fusion({**feats, slot: placeholder(spec)}, present)
        assert_close_float(y, y_placeholder)


@pytest.mark.parametrize("name,extra", CASES)
def test_no_nan_with_a_single_input_or_none(name, extra):
    """One input per sample, empty token sequences, even a sample with nothing
    (the model refuses it, but the fusion must stay finite)."""
    inputs = INPUTS["3"]
    fusion = build(name, extra, inputs).train()
    feats = make_feats(inputs)
    feats["text"].token_mask[1] = False  # a present input with every token padded
    present = {slot: torch.zeros(B, dtype=torch.bool) for slot in inputs}
    slots = list(inputs)
    for k in range(B - 1):
        present[slots[k % len(slots)]][k] = True  # last sample: nothing present
    y = fusion(feats, present)
    assert torch.isfinite(y).all()
    loss_of(y).backward()
    for pname, p in fusion.named_parameters():
        assert torch.isfinite(p.grad).all(), pname


@pytest.mark.parametrize("name,extra", CASES)
def test_eval_is_deterministic(name, extra):
    inputs = INPUTS["3"]
    fusion = build(name, extra, inputs)
    feats, present = make_feats(inputs), mixed_present(inputs)
    with torch.no_grad():
        assert torch.equal(fusion(feats, present), fusion(feats, present))
    again = build(name, extra, inputs)  # seeded construction: same weights
    with torch.no_grad():
        assert torch.equal(fusion(feats, present), again(feats, present))


@pytest.mark.parametrize("name,extra", CASES)
def test_one_input_works_or_is_refused_clearly(name, extra):
    inputs = {"image": INPUTS["2"]["image"]}
    try:
        fusion = build(name, extra, inputs)
    except MMZooError as exc:
        assert "input" in str(exc)
        return
    y = fusion(make_feats(inputs), all_present(inputs))
    assert y.shape[0] == B and torch.isfinite(y).all()
    loss_of(y).backward()
    dead = [pname for pname, p in fusion.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not dead, f"parameters unused with one input: {dead}"


@pytest.mark.parametrize("name,extra", CASES)
def test_bfloat16_autocast(name, extra):
    inputs = INPUTS["3"]
    fusion = build(name, extra, inputs)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        y = fusion(make_feats(inputs), mixed_present(inputs))
    assert torch.isfinite(y.float()).all()


def test_fusion_modules_import_no_torch_at_registration():
    import subprocess
    import sys

    code = ("import sys, mmzoo; mmzoo.list_fusions(); import mmzoo.builtin.fusions, "
            "mmzoo.builtin.fusions_plugin; assert 'torch' not in sys.modules, 'torch imported'")
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("name", FUSIONS)
def test_conformance_kit(name):
    """The public conformance kit a plugin author runs agrees with these tests."""
    from mmzoo.testing import check_fusion

    check_fusion(name)


# ------------------------------------------------------- specific behaviour


def test_tfn_size_cap_is_a_clear_error():
    inputs = {f"x{i}": InputSpec(4) for i in range(4)}
    with pytest.raises(InputError, match=r"max_size.*tfn\(hidden=15\)"):
        factory("tfn")(inputs)  # 17^4 = 83,521 > 65,536
    assert factory("tfn")(inputs, hidden=15).num_features == 128  # 16^4 = 65,536 fits
    assert factory("tfn")(inputs, max_size=100_000).num_features == 128


def test_film_condition_by_name_or_index():
    inputs = INPUTS["3"]
    f = factory("film")
    assert f(inputs).condition_slot == "tab"
    assert f(inputs, condition="image").condition_slot == "image"
    assert f(inputs, condition=1).condition_slot == "text"
    with pytest.raises(InputError, match="condition"):
        f(inputs, condition="audio")
    with pytest.raises(InputError, match="two inputs"):
        f({"image": 4})


@pytest.mark.parametrize("name", ["concat", "gated", "attention", "tfn", "lmf", "perceiver"])
def test_bad_kwargs_are_input_errors(name):
    with pytest.raises(InputError, match=name):
        factory(name)(INPUTS["2"], dim=-1)


def test_mean_pools_over_present_inputs_only():
    fusion = build("mean", {}, INPUTS["2"])
    feats = make_feats(INPUTS["2"])
    present = {"image": torch.ones(B, dtype=torch.bool), "text": torch.zeros(B, dtype=torch.bool)}
    with torch.no_grad():
        expected = fusion.proj[0](feats["image"].pooled)
        assert_same(fusion(feats, present), expected)


def test_late_averages_logits_over_present_inputs():
    fusion = build("late", {"num_classes": 3}, INPUTS["2"])
    feats = make_feats(INPUTS["2"])
    present = mixed_present(INPUTS["2"])
    with torch.no_grad():
        y = fusion(feats, present)
        li, lt = fusion.heads[0](feats["image"].pooled), fusion.heads[1](feats["text"].pooled)
    assert_same(y[0], (li[0] + lt[0]) / 2)
    assert_same(y[1], li[1])
    assert_same(y[2], lt[2])


def test_lmf_factors_are_trained_parameters():
    """Regression for the peer bug: low-rank factors kept in a Python list."""
    fusion = build("lmf", {}, INPUTS["3"])
    keys = set(fusion.state_dict())
    assert {"factors.0", "factors.1", "factors.2"} <= keys


def test_bilinear_output_is_l2_normalised():
    fusion = build("bilinear", {}, INPUTS["2"])
    with torch.no_grad():
        y = fusion(make_feats(INPUTS["2"]), mixed_present(INPUTS["2"]))
    torch.testing.assert_close(y.norm(dim=-1), torch.ones(B))


# ------------------------------------------------------------- model level

TEXT = "lstm(vocab_size=300,embed_dim=8,hidden_size=8)"
IMAGE = "cnn(channels=(4,8))"
MODELS = {"2": f"{IMAGE}+{TEXT}", "3": f"{IMAGE}+{TEXT}+{TEXT}"}


def model_inputs(model, b: int = 4, seed: int = 0) -> dict[str, Any]:
    g = torch.Generator().manual_seed(seed)
    out: dict[str, Any] = {}
    for slot in model.inputs:
        if slot.startswith("image"):
            out[slot] = torch.randn(b, 3, 32, 32, generator=g)
        else:
            ids = torch.randint(1, 300, (b, 6), generator=g)
            mask = torch.ones(b, 6, dtype=torch.long)
            mask[1, 3:] = 0
            out[slot] = {"input_ids": ids * mask, "attention_mask": mask}
    return out


def create(n: str, name: str, extra: dict[str, Any]):
    torch.manual_seed(0)
    return mmzoo.create(f"{MODELS[n]}/{name}", num_classes=extra.get("num_classes", 3))


@pytest.mark.parametrize("n", ["2", "3"])
@pytest.mark.parametrize("name,extra", CASES)
def test_model_forward_backward_and_missing_by_omission(name, extra, n):
    model = create(n, name, extra)
    x = model_inputs(model)
    model.train()
    loss_of(model(**x)).backward()
    assert all(p.grad is not None for p in model.fusion.parameters())
    model.eval()
    last = model.inputs[-1]
    with torch.no_grad():
        omitted = model(**{k: v for k, v in x.items() if k != last})
        masked = model(**x, present={last: torch.zeros(4, dtype=torch.bool)})
        y = model(**x)
    assert y.shape == (4, 3)
    assert_close_float(omitted, masked)
    assert torch.isfinite(omitted).all()
    # rebuilding from the canonical name gives the same architecture
    torch.manual_seed(0)
    assert mmzoo.create(model.name, num_classes=3).name == model.name


@pytest.mark.parametrize("name,extra", CASES)
def test_model_save_and_load(name, extra, tmp_path):
    model = create("3", name, extra).eval()
    x = model_inputs(model)
    model.save_pretrained(tmp_path / "run")
    loaded = mmzoo.load(tmp_path / "run").eval()
    with torch.no_grad():
        assert torch.equal(model(**x), loaded(**x))
        present = {model.inputs[0]: torch.tensor([True, False, True, False])}
        assert torch.equal(model(**x, present=present), loaded(**x, present=present))


def test_loaded_model_keeps_its_canonical_name(tmp_path):
    """The name survives config.json (a tuple kwarg must not come back a list)."""
    model = create("2", "film", {})
    model.save_pretrained(tmp_path / "run")
    assert mmzoo.load(tmp_path / "run").name == model.name


def test_model_with_no_input_for_a_sample_is_refused():
    model = create("2", "attention", {}).eval()
    x = model_inputs(model)
    present = {s: torch.tensor([True, False, True, True]) for s in model.inputs}
    with pytest.raises(InputError, match="no input"):
        model(**x, present=present)


@pytest.mark.slow
def test_torch_compile_runs():
    """One small model through the default inductor backend (about 15 s warm,
    45 s with a cold inductor cache on two cores)."""
    model = create("2", "attention", {}).eval()
    x = model_inputs(model)
    compiled = torch.compile(model)
    start = time.time()
    with torch.no_grad():
        y = compiled(**x)
        expected = model(**x)
    torch.testing.assert_close(y, expected, rtol=1e-4, atol=1e-5)
    assert time.time() - start < 300
