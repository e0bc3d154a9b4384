import pytest
import torch

import mmzoo
from mmzoo.errors import InputError
from mmzoo.testing import check_encoder, check_plugin
from mmzoo_audio.encoders import AudioCNN, AudioTimm

from audio_names import TINY_AUDIO


def test_plugin_module_is_light_and_registers():
    check_plugin("mmzoo_audio.plugin")


def test_audio_cnn_passes_the_conformance_kit(registry):
    check_encoder(TINY_AUDIO, registry=registry)


def test_audio_timm_passes_the_conformance_kit(registry):
    check_encoder("audio_timm(model='test_resnet',n_mels=32,clip_seconds=0.3)", registry=registry)


def test_kit_accepts_the_class_too():
    check_encoder(AudioCNN, kwargs={"width": 4, "depth": 1, "n_mels": 8, "clip_seconds": 0.1}, fusion=None)


def test_log_mels_and_waveforms_give_the_same_features():
    enc = AudioCNN(width=4, depth=2, n_mels=16, clip_seconds=0.25).eval()
    wave = 0.1 * torch.randn(2, enc.num_samples)
    with torch.no_grad():
        a = enc(enc.prepare_input(wave, "audio")[0]).pooled
        b = enc(enc.prepare_input(enc.frontend(wave), "audio")[0]).pooled
        c = enc(enc.prepare_input(wave[:, None], "audio")[0]).pooled  # (B, 1, samples)
    assert torch.allclose(a, b) and torch.equal(a, c)


@pytest.mark.parametrize("x,match", [
    (torch.zeros(2, 4000, dtype=torch.int16), "floating-point"),
    ([0.0, 0.1], "must be a float tensor"),
    (torch.zeros(2, 50), "shorter than one analysis window"),
    (torch.zeros(2, 7, 30), r"\(batch, 16, frames\)"),
    (torch.zeros(4000), r"\(batch, 16, frames\)"),
])
def test_bad_inputs_say_what_is_expected(x, match):
    enc = AudioCNN(width=4, depth=1, n_mels=16)
    with pytest.raises(InputError, match=match):
        enc.prepare_input(x, "audio")


@pytest.mark.parametrize("kwargs,match", [
    ({"width": 0}, "width"), ({"depth": 1.5}, "depth"), ({"clip_seconds": 0}, "clip_seconds"),
    ({"sample_rate": 8000.0}, "sample_rate"), ({"n_mels": 0}, "n_mels"),
])
def test_bad_kwargs(kwargs, match):
    with pytest.raises(InputError, match=match):
        AudioCNN(**kwargs)


def test_audio_timm_unknown_model_suggests_names():
    with pytest.raises(InputError, match="did you mean"):
        AudioTimm("resnet181")


def test_names_and_modality(registry):
    assert mmzoo.list_encoders(modality="audio", registry=registry) == ["audio_cnn", "audio_timm"]
    assert registry.get("encoder", "audio:audio_cnn").plugin == "audio"
