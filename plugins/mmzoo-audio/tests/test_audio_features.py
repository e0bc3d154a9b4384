import math

import pytest
import torch

from mmzoo.errors import InputError
from mmzoo_audio.features import LogMel, hz_to_mel, mel_filterbank, mel_to_hz


def test_mel_scale_round_trip():
    f = torch.tensor([0.0, 440.0, 1000.0, 4000.0], dtype=torch.float64)
    assert torch.allclose(mel_to_hz(hz_to_mel(f)), f)
    assert abs(float(hz_to_mel(1000.0)) - 1000.0) < 1.0  # the HTK scale's anchor


@pytest.mark.parametrize("sample_rate,n_fft,n_mels", [(8000, 256, 64), (16000, 512, 64), (16000, 512, 128)])
def test_filterbank_has_no_empty_band(sample_rate, n_fft, n_mels):
    fb = mel_filterbank(n_mels, n_fft, sample_rate)
    assert fb.shape == (n_mels, n_fft // 2 + 1)
    assert torch.allclose(fb.sum(1), torch.ones(n_mels))  # unit area, no empty band
    assert bool((fb >= 0).all())
    peaks = fb.argmax(1)
    assert bool((peaks[1:] >= peaks[:-1]).all())  # bands go up in frequency


def test_filterbank_rejects_bad_range():
    with pytest.raises(InputError, match="f_max"):
        mel_filterbank(10, 256, 8000, f_max=5000)


def test_log_mel_of_a_tone_peaks_at_its_band():
    sr, tone = 16000, 1000.0
    frontend = LogMel(sr, n_mels=40)
    t = torch.arange(sr // 2) / sr
    spec = frontend(torch.sin(2 * math.pi * tone * t)[None])
    assert spec.shape == (1, 40, frontend.num_frames(sr // 2))
    band = int(spec[0, :, 5:-5].mean(1).argmax())
    edges = mel_to_hz(torch.linspace(0, float(hz_to_mel(sr / 2)), 42))
    assert edges[band] <= tone <= edges[band + 2]


def test_frontend_buffers_are_not_saved():
    frontend = LogMel(8000, n_mels=16)
    assert frontend.state_dict() == {}
    assert frontend.n_fft == 256 and frontend.win_length == 200 and frontend.hop_length == 80
