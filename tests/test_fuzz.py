"""Fuzz ``mmzoo.create`` and ``mmzoo.parse_name``: names built from real
components with hostile values, and garbage strings, give a model or an
``MMZooError``, never another exception.

The suite runs a modest number of examples; a longer run:
``MMZOO_FUZZ_EXAMPLES=5000 python -m pytest -q tests/test_fuzz.py``.
"""

from __future__ import annotations

import os
import warnings
from unittest import mock

import pytest

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mmzoo
from mmzoo.errors import InputError, MMZooError
from mmzoo.names import format_part

EXAMPLES = int(os.environ.get("MMZOO_FUZZ_EXAMPLES", "50"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much])
#: a low limit, so that no example allocates much (the limit is part of what is fuzzed)
LIMIT = "1e7"

ENCODERS = ["cnn", "lstm", "gru", "transformer", "test_resnet", "timm:test_vit", "resnet", "nope", "text:lstm"]
FUSIONS = ["concat", "gated", "attention", "sum", "mean", "max", "late", "film", "bilinear", "lmf", "tfn",
           "cross_attn", "perceiver", "fusions:mean", "nope"]
KEYS = ["channels", "in_chans", "img_size", "vocab_size", "embed_dim", "hidden_size", "num_layers",
        "bidirectional", "dropout", "max_length", "dim", "depth", "heads", "mlp_ratio", "pooling",
        "layers", "latents", "rank", "factor", "condition", "drop_path_rate", "pretrained", "zzz"]

scalars = st.one_of(
    st.integers(-3, 40),
    st.sampled_from([0, -1, 10**6, 10**12, 10**30, 2**63]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.booleans(),
    st.none(),
    st.text(max_size=6),
)
values = st.one_of(scalars, st.tuples(scalars), st.tuples(st.integers(-2, 40), st.integers(-2, 40)))


@st.composite
def parts(draw, names):
    kwargs = draw(st.dictionaries(st.sampled_from(KEYS), values, max_size=3))
    try:
        return format_part(draw(st.sampled_from(names)), kwargs)
    except Exception:  # a value whose repr is not a literal (nan): spelled as text instead
        return draw(st.sampled_from(names)) + "(" + ",".join(f"{k}={v}" for k, v in kwargs.items()) + ")"


@st.composite
def names(draw):
    encoders = draw(st.lists(parts(ENCODERS), min_size=1, max_size=3))
    return "+".join(encoders) + "/" + draw(parts(FUSIONS))


garbage = st.one_of(
    st.text(max_size=60),
    st.text(alphabet="ab()+/=:,'\"0123456789.-_ \\", max_size=60),
    names().map(lambda n: n[: len(n) // 2]),
    names().map(lambda n: n.replace("/", "+", 1)),
)


def _create(name: str, num_classes: int) -> None:
    with mock.patch.dict(os.environ, {"MMZOO_MAX_PARAMS": LIMIT}):
        try:
            model = mmzoo.create(name, num_classes=num_classes)
        except MMZooError:
            return
    assert isinstance(model, mmzoo.MultimodalModel)
    assert sum(p.numel() for p in model.parameters()) <= float(LIMIT)


@FUZZ
@given(name=names(), num_classes=st.integers(-2, 5))
def test_create_from_grammar_names_raises_only_mmzoo_errors(name, num_classes):
    _create(name, num_classes)


@FUZZ
@given(name=garbage)
def test_create_and_parse_garbage_raise_only_mmzoo_errors(name):
    try:
        parsed = mmzoo.parse_name(name)
    except MMZooError:
        pass
    else:
        assert mmzoo.parse_name(str(parsed)) == parsed
    _create(name, 0)


@pytest.mark.parametrize("name, message", [
    ("test_resnet(channels=(8, 0))+lstm/concat",
     r"encoder 'test_resnet\(channels=\(8, 0\)\)': its parameter 'backbone\.layer2\.0\.conv1\.weight' would "
     r"have no elements \(shape \(0, 8, 3, 3\)\); a size among its arguments \(channels\) is 0"),
    ("transformer(dim=0)+lstm/concat", r"transformer: dim=0 is invalid"),
    ("transformer(mlp_ratio=0.0)+lstm/concat", r"transformer: mlp_ratio=0\.0 leaves the blocks' MLP without units"),
])
def test_sizes_of_zero_are_refused_naming_the_part_without_a_torch_warning(name, message):
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # torch's "Initializing zero-element tensors is a no-op" included
        with pytest.raises(InputError, match=message):
            mmzoo.create(name)
