import pytest
from hypothesis import given, settings, strategies as st

import mmzoo
from mmzoo.errors import MMZooError, NameSyntaxError
from mmzoo.names import format_part, parse_name


def test_basic_name():
    parsed = parse_name("resnet+lstm/concat")
    assert [p.name for p in parsed.encoders] == ["resnet", "lstm"]
    assert parsed.fusion.name == "concat"
    assert str(parsed) == "resnet+lstm/concat"


def test_public_example_with_hf_id_and_kwargs():
    parsed = mmzoo.parse_name("hf:org/model(pooling='mean')+resnet18/attention")
    assert parsed.encoders[0].name == "hf:org/model"
    assert parsed.encoders[0].namespace == "hf"
    assert parsed.encoders[0].id == "org/model"
    assert dict(parsed.encoders[0].kwargs) == {"pooling": "mean"}
    assert parsed.encoders[1].name == "resnet18"
    assert parsed.fusion.name == "attention"


def test_literals_and_separators_inside_strings():
    parsed = parse_name('a(x=(1, 2), y="p)q/r+s", z=None, w=-1.5, b=True)+b/c(d=3)')
    assert dict(parsed.encoders[0].kwargs) == {"x": (1, 2), "y": "p)q/r+s", "z": None, "w": -1.5, "b": True}
    assert dict(parsed.fusion.kwargs) == {"d": 3}


def test_canonical_format_round_trips():
    name = parse_name("lstm(hidden_size=64,bidirectional=True)+cnn/gated(dim=32)")
    assert str(name) == "lstm(bidirectional=True,hidden_size=64)+cnn/gated(dim=32)"
    assert parse_name(str(name)) == name
    assert format_part("x", {}) == "x"


@pytest.mark.parametrize(
    "name, column, fragment",
    [
        ("a+b", 3, "needs a fusion"),
        ("a(x=1/b", 1, "never closed"),
        ("a)+b/c", 1, "unmatched"),
        ("a(1)/b", 2, "by keyword"),
        ("a(x=foo)/b", 2, "not a Python literal"),
        ("a(x=1,x=2)/b", 6, "given twice"),
        ("a+/b", 2, "empty encoder"),
        ("a b/c", 1, "may only contain"),
        ("a(x=1)y/b", 6, "unexpected text"),
        ("a(x=__import__('os'))/b", 2, "not a Python literal"),
    ],
)
def test_syntax_errors_point_at_the_column(name, column, fragment):
    with pytest.raises(NameSyntaxError) as info:
        parse_name(name)
    assert info.value.column == column
    assert fragment in str(info.value)
    assert "^" in str(info.value)


def test_nothing_is_executed(tmp_path):
    marker = tmp_path / "pwned"
    with pytest.raises(NameSyntaxError):
        parse_name(f"a(x=open({str(marker)!r}, 'w'))/b")
    assert not marker.exists()


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab:_()/+=,'\"1. -x\\[]{}*")), max_size=40))
def test_fuzz_grammar_alphabet(text):
    try:
        parsed = parse_name(text)
    except MMZooError:
        return
    assert parse_name(str(parsed)) == parsed


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_fuzz_any_text(text):
    try:
        parse_name(text)
    except MMZooError:
        pass
