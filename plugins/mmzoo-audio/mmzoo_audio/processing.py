"""Raw audio -> fixed-length waveform tensors: numpy arrays, torch tensors,
``(array, sample_rate)`` pairs and WAV files (read with the stdlib ``wave``)."""

from __future__ import annotations

import json
import wave
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from mmzoo.components import InputProcessor
from mmzoo.errors import InputError, WeightsError

__all__ = ["AudioProcessor", "read_wav", "to_float", "resample"]

CONFIG_NAME = "audio_config.json"


def to_float(array: np.ndarray) -> np.ndarray:
    """PCM integers (uint8, int16, int32) or floats -> float32 in [-1, 1]."""
    array = np.asarray(array)
    if array.dtype == np.uint8:
        return (array.astype(np.float32) - 128.0) / 128.0
    if np.issubdtype(array.dtype, np.integer):
        return array.astype(np.float32) / float(2 ** (8 * array.dtype.itemsize - 1))
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32)
    raise InputError(f"audio arrays must hold integer PCM or floats, got dtype {array.dtype}")


def read_wav(path: str | Path) -> tuple[np.ndarray, int]:
    """A PCM WAV file -> (mono float32 samples in [-1, 1], sample rate)."""
    try:
        with wave.open(str(path), "rb") as handle:
            channels, width, rate = handle.getnchannels(), handle.getsampwidth(), handle.getframerate()
            raw = handle.readframes(handle.getnframes())
    except FileNotFoundError:
        raise InputError(f"audio file {str(path)!r} does not exist") from None
    except (wave.Error, EOFError, OSError) as exc:
        raise InputError(f"cannot read {str(path)!r} as a PCM WAV file ({exc}); convert it to "
                         "16-bit PCM WAV (e.g. ffmpeg -i in -acodec pcm_s16le out.wav)") from None
    if width == 3:  # 24-bit little-endian: widen to int32
        bytes_ = np.frombuffer(raw, dtype=np.uint8).reshape(-1, 3)
        samples = (bytes_[:, 0].astype(np.int32) << 8 | bytes_[:, 1].astype(np.int32) << 16
                   | bytes_[:, 2].astype(np.int32) << 24)
    elif width in (1, 2, 4):
        samples = np.frombuffer(raw, dtype={1: np.uint8, 2: "<i2", 4: "<i4"}[width])
    else:
        raise InputError(f"{str(path)!r}: unsupported sample width of {width} bytes")
    audio = to_float(samples)
    if channels > 1:
        audio = audio.reshape(-1, channels).mean(1)
    return audio, rate


def resample(audio: np.ndarray, rate: int, target: int) -> np.ndarray:
    """Linear-interpolation resampling (no anti-aliasing filter: fine for
    upsampling and mild downsampling of speech)."""
    if rate == target or audio.size == 0:
        return audio
    duration = audio.size / rate
    n = max(1, round(duration * target))
    return np.interp(np.arange(n) * (rate / target), np.arange(audio.size), audio).astype(np.float32)


class AudioProcessor(InputProcessor):
    """Raw audio -> a float32 (B, num_samples) tensor at ``sample_rate``.

    Each item is a WAV path, a 1-D numpy array or tensor (assumed to be at
    ``sample_rate``; integer PCM is scaled to [-1, 1]) or a pair
    ``(samples, rate)``, resampled from ``rate``. Clips are cropped to, or
    zero-padded at the end to, ``num_samples``.
    """

    def __init__(self, sample_rate: int, num_samples: int):
        self.sample_rate = int(sample_rate)
        self.num_samples = int(num_samples)

    def _one(self, value: Any, index: int) -> np.ndarray:
        rate = self.sample_rate
        if isinstance(value, (str, Path)):
            audio, rate = read_wav(value)
        else:
            if isinstance(value, tuple) and len(value) == 2:
                value, rate = value
                if isinstance(rate, bool) or not isinstance(rate, (int, np.integer)) or rate <= 0:
                    raise InputError(f"audio {index}: sample rate must be a positive int, got {rate!r}")
            if hasattr(value, "detach"):  # a torch tensor
                value = value.detach().cpu().numpy()
            if not isinstance(value, np.ndarray):
                raise InputError(f"audio {index}: expected a WAV path, a 1-D array or tensor, or a "
                                 f"(samples, sample_rate) pair, got {type(value).__name__}")
            if value.ndim != 1:
                raise InputError(f"audio {index}: expected a 1-D (mono) array of samples, got shape "
                                 f"{value.shape}; average the channels first")
            audio = to_float(value)
        if not np.isfinite(audio).all():
            raise InputError(f"audio {index}: samples contain NaN or infinity")
        audio = resample(audio, int(rate), self.sample_rate)[: self.num_samples]
        return np.pad(audio, (0, self.num_samples - audio.size))

    def __call__(self, values: Sequence[Any]):
        import torch

        if isinstance(values, (str, Path, tuple)) or not hasattr(values, "__len__"):
            raise InputError("processor input 'audio' must be a list with one item per sample, "
                             f"got {type(values).__name__}")
        values = list(values)
        if not values:
            raise InputError("no audio given")
        return torch.from_numpy(np.stack([self._one(v, i) for i, v in enumerate(values)]))

    def save(self, directory: Path) -> None:
        from mmzoo.weights import atomic_write

        data = {"sample_rate": self.sample_rate, "num_samples": self.num_samples}
        atomic_write(Path(directory) / CONFIG_NAME, json.dumps(data, indent=2).encode("utf-8"))

    def load(self, directory: Path) -> None:
        path = Path(directory) / CONFIG_NAME
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            self.sample_rate, self.num_samples = int(data["sample_rate"]), int(data["num_samples"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise WeightsError(f"cannot read the audio processor config {path}: {exc}") from exc
