"""The audio input in whole models: any fusion, save/load, the processor,
and the error when the plugin is missing."""

import wave

import numpy as np
import pytest
import torch

import mmzoo
from mmzoo.errors import PluginError
from mmzoo.testing import isolated_registry

from audio_names import TINY_AUDIO, TINY_TEXT


def _inputs(batch=2):
    return {"image": torch.randn(batch, 3, 32, 32), "text": torch.randint(1, 300, (batch, 5)),
            "audio": 0.1 * torch.randn(batch, 4000)}


def test_the_issue_example_works(registry):
    model = mmzoo.create("resnet18+lstm+audio_cnn/attention", num_classes=10, registry=registry)
    assert model.inputs == ("image", "text", "audio")
    x = {"image": torch.randn(2, 3, 32, 32), "text": torch.randint(1, 8192, (2, 5)),
         "audio": 0.1 * torch.randn(2, 16000)}
    logits = model(**x)
    assert logits.shape == (2, 10)
    logits.sum().backward()
    model.eval()
    assert model(image=x["image"], text=x["text"]).shape == (2, 10)  # audio missing
    assert model(audio=x["audio"]).shape == (2, 10)                 # audio only


@pytest.mark.parametrize("fusion", mmzoo.list_fusions(registry=isolated_registry()))
def test_every_fusion_takes_audio(registry, fusion):
    model = mmzoo.create(f"cnn(channels=(4,))+{TINY_TEXT}+{TINY_AUDIO}/{fusion}", num_classes=3,
                         registry=registry)
    x = _inputs()
    out = model(**x, present={"audio": torch.tensor([True, False])})
    assert out.shape == (2, 3) and bool(torch.isfinite(out).all())
    out.sum().backward()
    assert model.encoders["audio"].body[0].weight.grad is not None


def _round_trip(name, registry, tmp_path):
    model = mmzoo.create(name, num_classes=4, registry=registry).eval()
    x = _inputs()
    model.save_pretrained(tmp_path / "m")
    loaded = mmzoo.load(tmp_path / "m", registry=registry)
    assert loaded.name == model.name
    with torch.no_grad():
        assert torch.equal(loaded(**x), model(**x))
    return model, loaded


@pytest.mark.parametrize("order", ["name-order", "alphabetical"])
def test_save_load_round_trip(registry, tmp_path, order):
    parts = [TINY_AUDIO, "test_resnet", TINY_TEXT]  # slots: audio, image, text
    if order == "name-order":
        parts = ["test_resnet", TINY_TEXT, TINY_AUDIO]  # slots not in alphabetical order
    _, loaded = _round_trip("+".join(parts) + "/attention", registry, tmp_path)
    assert (tmp_path / "m/processor/audio/audio_config.json").is_file()
    assert loaded.processor["audio"].num_samples == 4000


def test_saved_model_names_the_distribution_when_the_plugin_is_missing(registry, tmp_path):
    model = mmzoo.create(f"{TINY_AUDIO}/mean", num_classes=2, registry=registry)
    model.save_pretrained(tmp_path / "m")
    with pytest.raises(PluginError, match=r"mmzoo-audio.*pip install 'mmzoo-audio"):
        mmzoo.load(tmp_path / "m", registry=isolated_registry())  # built-ins only


def test_processor_reads_wav_files(registry, tmp_path):
    path = tmp_path / "clip.wav"
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(1)
        handle.setsampwidth(2)
        handle.setframerate(8000)
        handle.writeframes((np.sin(np.arange(4000) / 5) * 10000).astype("<i2").tobytes())
    model = mmzoo.create(f"{TINY_AUDIO}/mean", num_classes=2, registry=registry).eval()
    batch = model.processor(audio=[str(path), np.zeros(100, np.float32)])
    assert batch["audio"].shape == (2, 4000)  # 16 kHz x 0.25 s
    assert model(**batch).shape == (2, 2)


def test_entry_point_is_discovered():
    from mmzoo.plugins import discover

    registry = discover()
    assert "fsdd-digits" in mmzoo.list_tasks(registry=registry)
    info = registry.plugins["audio"]
    assert (info.status, info.distribution, info.module) == ("ok", "mmzoo-audio", "mmzoo_audio.plugin")
    assert sorted(info.components) == ["encoder:audio_cnn", "encoder:audio_timm", "task:fsdd-digits"]
