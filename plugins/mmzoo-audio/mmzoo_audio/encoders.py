"""Audio encoders: a small CNN over log-mel spectrograms, and any timm image
backbone applied to the spectrogram.

Both take either waveforms, a float (B, samples) tensor at the encoder's
``sample_rate``, or precomputed log-mel spectrograms, a float
(B, n_mels, frames) tensor (see :class:`mmzoo_audio.features.LogMel`). Their
processor turns numpy arrays and WAV files into fixed-length waveforms of
``clip_seconds``.
"""

from __future__ import annotations

import difflib
from typing import Any

import torch
from torch import Tensor, nn

from mmzoo.components import Encoder, EncoderOutput
from mmzoo.errors import InputError
from mmzoo_audio.features import LogMel

__all__ = ["AudioEncoder", "AudioCNN", "AudioTimm"]


class AudioEncoder(Encoder):
    """Base of the audio encoders: input checks, the log-mel front end, the processor."""

    modality = "audio"

    def __init__(self, *, sample_rate: int, n_mels: int, clip_seconds: float, win_ms: float, hop_ms: float):
        super().__init__()
        if isinstance(clip_seconds, bool) or not isinstance(clip_seconds, (int, float)) or clip_seconds <= 0:
            raise InputError(f"clip_seconds must be a positive number, got {clip_seconds!r}")
        self.clip_seconds = float(clip_seconds)
        self.frontend = LogMel(sample_rate, n_mels, win_ms=win_ms, hop_ms=hop_ms)

    @property
    def sample_rate(self) -> int:
        return self.frontend.sample_rate

    @property
    def n_mels(self) -> int:
        return self.frontend.n_mels

    @property
    def num_samples(self) -> int:
        """Length of the waveforms the processor produces."""
        return max(self.frontend.win_length, round(self.clip_seconds * self.sample_rate))

    def prepare_input(self, x: Any, slot: str) -> tuple[Tensor, None]:
        expected = (f"a float tensor of waveforms (batch, samples) at {self.sample_rate} Hz, or of "
                    f"log-mel spectrograms (batch, {self.n_mels}, frames)")
        if not isinstance(x, Tensor):
            raise InputError(f"input {slot!r} (audio) must be {expected}, got {type(x).__name__}; "
                             f"use model.processor({slot}=[...]) for numpy arrays or WAV files")
        if not x.is_floating_point():
            raise InputError(f"input {slot!r} (audio) must be a floating-point tensor, got dtype {x.dtype} "
                             "(int16 PCM? divide by 32768, or use model.processor)")
        if x.dim() == 3 and x.shape[1] == 1 and self.n_mels != 1:
            x = x[:, 0]  # (B, 1, samples): mono with a channel axis
        if x.dim() == 2:
            if x.shape[1] < self.frontend.win_length:
                raise InputError(f"input {slot!r} (audio): waveforms of {x.shape[1]} samples are shorter than "
                                 f"one analysis window ({self.frontend.win_length} samples at "
                                 f"{self.sample_rate} Hz); pad them (the processor does)")
        elif x.dim() != 3 or x.shape[1] != self.n_mels or x.shape[2] < 1:
            raise InputError(f"input {slot!r} (audio) must be {expected}, got shape {tuple(x.shape)}")
        return x, None

    def spectrogram(self, x: Tensor) -> Tensor:
        """(B, n_mels, frames) log-mels, standardised per sample (zero mean, unit variance)."""
        spec = self.frontend(x) if x.dim() == 2 else x
        mean = spec.mean((1, 2), keepdim=True)
        std = spec.std((1, 2), keepdim=True, unbiased=False) if spec[0].numel() > 1 else torch.ones_like(mean)
        return (spec - mean) / (std + 1e-5)

    def build_processor(self):
        from mmzoo_audio.processing import AudioProcessor

        return AudioProcessor(self.sample_rate, self.num_samples)

    def example_input(self, batch_size: int, generator: torch.Generator | None = None) -> Tensor:
        """Random waveforms of the processor's length (used by ``mmzoo.testing``)."""
        return 0.1 * torch.randn(batch_size, self.num_samples, generator=generator)

    def example_raw(self, batch_size: int) -> list[Any]:
        """Raw clips of mixed forms and lengths for the processor (used by ``mmzoo.testing``)."""
        import numpy as np

        rng = np.random.default_rng(0)
        forms = [
            lambda: (0.1 * rng.standard_normal(self.num_samples // 2)).astype(np.float32),
            lambda: rng.integers(-3000, 3000, self.num_samples * 2, dtype=np.int16),
            lambda: ((0.1 * rng.standard_normal(800)).astype(np.float32), 8000),
        ]
        return [forms[i % len(forms)]() for i in range(batch_size)]


class AudioCNN(AudioEncoder):
    """Log-mel spectrogram -> ``depth`` stages of conv3x3 -> BatchNorm -> ReLU
    -> 2x2 max-pool, with ``width``, 2 ``width``, 4 ``width``, ... channels.
    Tokens are the time steps of the last feature map (averaged over
    frequency); pooled is their mean."""

    def __init__(self, *, width: int = 16, depth: int = 3, sample_rate: int = 16000, n_mels: int = 64,
                 clip_seconds: float = 1.0, win_ms: float = 25.0, hop_ms: float = 10.0):
        super().__init__(sample_rate=sample_rate, n_mels=n_mels, clip_seconds=clip_seconds,
                         win_ms=win_ms, hop_ms=hop_ms)
        for key, value in (("width", width), ("depth", depth)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise InputError(f"audio_cnn: {key} must be a positive int, got {value!r}")
        layers: list[nn.Module] = []
        channels = 1
        for stage in range(depth):
            out = width * 2 ** stage
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out),
                       nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            channels = out
        self.body = nn.Sequential(*layers)
        self.num_features = self.token_features = channels

    def forward(self, x: Tensor) -> EncoderOutput:
        features = self.body(self.spectrogram(x).unsqueeze(1))  # (B, C, F, T)
        tokens = features.mean(2).transpose(1, 2)  # (B, T, C)
        return EncoderOutput(tokens.mean(1), tokens)


class AudioTimm(AudioEncoder):
    """A timm image backbone (``model=``, built with ``in_chans=1`` and
    ``num_classes=0`` through mmzoo's public :class:`mmzoo.encoders.TimmEncoder`)
    applied to the (1, n_mels, frames) spectrogram image. Other kwargs go to
    ``timm.create_model``; ``pretrained`` is a local ``.safetensors`` file."""

    weight_kwargs = ("pretrained",)

    def __init__(self, model: str = "resnet18", *, pretrained: str | None = None, sample_rate: int = 16000,
                 n_mels: int = 64, clip_seconds: float = 1.0, win_ms: float = 25.0, hop_ms: float = 10.0,
                 **timm_kwargs: Any):
        super().__init__(sample_rate=sample_rate, n_mels=n_mels, clip_seconds=clip_seconds,
                         win_ms=win_ms, hop_ms=hop_ms)
        import timm

        from mmzoo.encoders import TimmEncoder

        if not isinstance(model, str) or not timm.is_model(model):
            close = difflib.get_close_matches(str(model), timm.list_models(), n=3)
            hint = f"; did you mean {' or '.join(map(repr, close))}?" if close else "; see timm.list_models()"
            raise InputError(f"audio_timm: {model!r} is not a timm model{hint}")
        self.model = model
        self.backbone = TimmEncoder(model, pretrained=pretrained, in_chans=1, **timm_kwargs)
        self.num_features = self.backbone.num_features
        self.token_features = self.backbone.token_features

    def forward(self, x: Tensor) -> EncoderOutput:
        return self.backbone(self.spectrogram(x).unsqueeze(1))
