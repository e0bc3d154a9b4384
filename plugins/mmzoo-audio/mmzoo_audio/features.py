"""Log-mel spectrograms with ``torch.stft`` and a mel filterbank computed here
(no torchaudio: its wheels must match the exact torch build)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from mmzoo.errors import InputError

__all__ = ["hz_to_mel", "mel_to_hz", "mel_filterbank", "LogMel"]


def hz_to_mel(f: Tensor | float) -> Tensor:
    """HTK mel scale: ``2595 log10(1 + f / 700)``."""
    return 2595.0 * torch.log10(1.0 + torch.as_tensor(f, dtype=torch.float64) / 700.0)


def mel_to_hz(m: Tensor | float) -> Tensor:
    return 700.0 * (10.0 ** (torch.as_tensor(m, dtype=torch.float64) / 2595.0) - 1.0)


def mel_filterbank(n_mels: int, n_fft: int, sample_rate: int, f_min: float = 0.0,
                   f_max: float | None = None) -> Tensor:
    """(n_mels, n_fft // 2 + 1) triangular filters, equally spaced on the HTK
    mel scale between ``f_min`` and ``f_max`` (default: Nyquist), each
    normalised to unit area. A filter narrower than one FFT bin (low
    frequencies, small ``n_fft``) would be empty; it takes the bin nearest
    its centre instead, so every mel band carries signal."""
    f_max = sample_rate / 2 if f_max is None else f_max
    if not 0 <= f_min < f_max <= sample_rate / 2:
        raise InputError(f"mel filterbank needs 0 <= f_min < f_max <= sample_rate/2 "
                         f"({sample_rate / 2}), got f_min={f_min}, f_max={f_max}")
    n_bins = n_fft // 2 + 1
    bins = torch.linspace(0, sample_rate / 2, n_bins, dtype=torch.float64)
    edges = mel_to_hz(torch.linspace(float(hz_to_mel(f_min)), float(hz_to_mel(f_max)), n_mels + 2,
                                     dtype=torch.float64))
    lower, center, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    rising = (bins[None] - lower) / (center - lower)
    falling = (upper - bins[None]) / (upper - center)
    weights = torch.clamp(torch.minimum(rising, falling), min=0.0)
    empty = weights.sum(1) == 0
    if bool(empty.any()):
        nearest = (bins[None] - center[empty]).abs().argmin(1)
        weights[empty.nonzero().flatten(), nearest] = 1.0
    weights = weights / weights.sum(1, keepdim=True)
    return weights.to(torch.float32)


class LogMel(nn.Module):
    """Waveforms (B, samples) -> log-mel spectrograms (B, n_mels, frames).

    Windows of ``win_ms`` every ``hop_ms`` (Hann window, ``n_fft`` the next
    power of two), power spectrum, mel filterbank, ``log(mel + 1e-6)``. The
    window and filterbank are non-persistent buffers: they follow the module
    to a device but are rebuilt from the arguments, not saved.
    """

    def __init__(self, sample_rate: int = 16000, n_mels: int = 64, win_ms: float = 25.0,
                 hop_ms: float = 10.0, f_min: float = 0.0, f_max: float | None = None):
        super().__init__()
        if not isinstance(sample_rate, int) or sample_rate <= 0:
            raise InputError(f"sample_rate must be a positive int (Hz), got {sample_rate!r}")
        if not isinstance(n_mels, int) or n_mels < 1:
            raise InputError(f"n_mels must be a positive int, got {n_mels!r}")
        self.sample_rate = sample_rate
        self.n_mels = n_mels
        self.win_length = max(2, round(sample_rate * win_ms / 1000))
        self.hop_length = max(1, round(sample_rate * hop_ms / 1000))
        self.n_fft = 2 ** math.ceil(math.log2(self.win_length))
        self.register_buffer("window", torch.hann_window(self.win_length), persistent=False)
        self.register_buffer("filterbank", mel_filterbank(n_mels, self.n_fft, sample_rate, f_min, f_max),
                             persistent=False)

    def num_frames(self, num_samples: int) -> int:
        return num_samples // self.hop_length + 1

    def forward(self, wave: Tensor) -> Tensor:
        spec = torch.stft(wave.float(), self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          window=self.window, center=True, pad_mode="constant", return_complex=True)
        power = spec.real.square() + spec.imag.square()  # (B, bins, frames)
        mel = torch.matmul(self.filterbank, power)
        return torch.log(mel + 1e-6)
