import json
import wave

import numpy as np
import pytest
import torch

from mmzoo.errors import InputError, WeightsError
from mmzoo_audio.processing import AudioProcessor, read_wav, resample


def write_wav(path, samples, rate, width=2, channels=1):
    with wave.open(str(path), "wb") as handle:
        handle.setnchannels(channels)
        handle.setsampwidth(width)
        handle.setframerate(rate)
        handle.writeframes(np.ascontiguousarray(samples).tobytes())


def test_arrays_are_scaled_padded_and_cropped():
    proc = AudioProcessor(8000, 100)
    out = proc([np.full(50, 0.5, np.float32), np.full(300, 16384, np.int16), torch.zeros(100)])
    assert out.shape == (3, 100) and out.dtype == torch.float32
    assert torch.allclose(out[0, :50], torch.tensor(0.5)) and bool((out[0, 50:] == 0).all())
    assert torch.allclose(out[1], torch.tensor(0.5))  # int16 PCM scaled to [-1, 1], cropped


def test_pairs_are_resampled():
    proc = AudioProcessor(16000, 16000)
    ramp = np.linspace(0, 1, 4000, dtype=np.float32)
    out = proc([(ramp, 8000)])
    # 0.5 s at 8 kHz -> 8000 samples at 16 kHz (every other one an original sample), then zero padding
    assert torch.allclose(out[0, 0:8000:2], torch.from_numpy(ramp))
    assert torch.allclose(out[0, 1:7998:2], torch.from_numpy((ramp[:-1] + ramp[1:]) / 2))
    assert bool((out[0, 8000:] == 0).all())
    assert resample(ramp, 8000, 8000) is ramp


@pytest.mark.parametrize("width,dtype,scale", [(2, "<i2", 32768), (1, np.uint8, None), (4, "<i4", 2**31)])
def test_wav_files(tmp_path, width, dtype, scale):
    rng = np.random.default_rng(0)
    if dtype is np.uint8:
        samples = rng.integers(0, 256, 400).astype(np.uint8)
        expected = (samples.astype(np.float32) - 128) / 128
    else:
        samples = rng.integers(-1000, 1000, 400).astype(dtype)
        expected = samples.astype(np.float32) / scale
    write_wav(tmp_path / "a.wav", samples, 8000, width=width)
    audio, rate = read_wav(tmp_path / "a.wav")
    assert rate == 8000 and np.allclose(audio, expected)
    out = AudioProcessor(8000, 500)([tmp_path / "a.wav", str(tmp_path / "a.wav")])
    assert torch.allclose(out[:, :400], torch.from_numpy(expected)) and torch.equal(out[0], out[1])


def test_stereo_wav_is_averaged(tmp_path):
    frames = np.stack([np.full(10, 1000, np.int16), np.full(10, 3000, np.int16)], 1)
    write_wav(tmp_path / "s.wav", frames, 8000, channels=2)
    audio, _ = read_wav(tmp_path / "s.wav")
    assert np.allclose(audio, 2000 / 32768)


@pytest.mark.parametrize("values,match", [
    ("a.wav", "list"),
    ([np.zeros((2, 10))], "1-D"),
    ([np.array([0.0, np.nan])], "NaN"),
    ([{"x": 1}], "expected a WAV path"),
    ([], "no audio"),
    ([(np.zeros(10), 0)], "sample rate"),
])
def test_bad_values(values, match):
    with pytest.raises(InputError, match=match):
        AudioProcessor(8000, 100)(values)


def test_missing_and_unreadable_files(tmp_path):
    proc = AudioProcessor(8000, 100)
    with pytest.raises(InputError, match="does not exist"):
        proc([tmp_path / "nope.wav"])
    (tmp_path / "bad.wav").write_bytes(b"not a wav")
    with pytest.raises(InputError, match="PCM WAV"):
        proc([tmp_path / "bad.wav"])


def test_save_load_round_trip(tmp_path):
    AudioProcessor(8000, 1234).save(tmp_path)
    assert json.loads((tmp_path / "audio_config.json").read_text()) == {"sample_rate": 8000, "num_samples": 1234}
    other = AudioProcessor(16000, 1)
    other.load(tmp_path)
    assert (other.sample_rate, other.num_samples) == (8000, 1234)
    with pytest.raises(WeightsError, match="audio processor config"):
        other.load(tmp_path / "missing")
