"""Raw inputs -> tensors: images through timm's data config, text through
``tokenizers`` (scratch encoders) or a Hugging Face tokenizer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo.components import InputProcessor
from mmzoo.errors import InputError, WeightsError

__all__ = ["ImageProcessor", "ScratchTextProcessor", "HFTextProcessor", "MultimodalProcessor"]


def _as_list(values: Any, slot: str) -> list[Any]:
    """One item per sample: a list/tuple, or an array/tensor split along dim 0."""
    is_batch_array = hasattr(values, "__array__") and getattr(values, "ndim", 0) >= 1
    if isinstance(values, (str, bytes, Path)) or not (isinstance(values, Sequence) or is_batch_array):
        raise InputError(f"processor input {slot!r} must be a list (one item per sample), "
                         f"got {type(values).__name__}")
    return list(values)


class ImageProcessor(InputProcessor):
    """PIL images, numpy arrays (H, W[, C]; uint8 or floats in [0, 1]) or file
    paths -> a float (B, C, H, W) tensor, using ``timm.data.create_transform``
    with the backbone's data config (resize, crop, normalise)."""

    def __init__(self, data_config: Mapping[str, Any]):
        self.data_config = dict(data_config)
        self._transform = None

    @property
    def transform(self):
        if self._transform is None:
            from timm.data import create_transform

            config = {k: self.data_config[k] for k in
                      ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")
                      if k in self.data_config}
            self._transform = create_transform(**config, is_training=False)
        return self._transform

    def _to_pil(self, value: Any, index: int):
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        channels = self.data_config.get("input_size", (3,))[0]
        mode = "RGB" if channels == 3 else "L"
        if isinstance(value, (str, Path)):
            try:
                with Image.open(value) as image:
                    return image.convert(mode)
            except FileNotFoundError:
                raise InputError(f"image {index}: file {str(value)!r} does not exist") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"image {index}: cannot read {str(value)!r} as an image ({exc})") from None
        if isinstance(value, Image.Image):
            return value.convert(mode)
        if isinstance(value, Tensor):
            value = value.detach().cpu().numpy()
            if value.ndim == 3 and value.shape[0] in (1, 3):  # CHW -> HWC
                value = value.transpose(1, 2, 0)
        if isinstance(value, np.ndarray):
            array = value
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim not in (2, 3):
                raise InputError(f"image {index}: an array must be (H, W) or (H, W, C), got {array.shape}")
            if array.dtype != np.uint8:
                if array.size and (array.min() < 0 or array.max() > 1):
                    raise InputError(f"image {index}: float arrays must hold values in [0, 1]; "
                                     "pass uint8 for 0..255")
                array = (array * 255).round().astype(np.uint8)
            return Image.fromarray(array).convert(mode)
        raise InputError(f"image {index}: expected a PIL image, numpy array or file path, "
                         f"got {type(value).__name__}")

    def __call__(self, values: Sequence[Any]) -> Tensor:
        values = _as_list(values, "image")
        if not values:
            raise InputError("no images given")
        return torch.stack([self.transform(self._to_pil(v, i)) for i, v in enumerate(values)])

    def save(self, directory: Path) -> None:
        _write_json(directory / "data_config.json", self.data_config)

    def load(self, directory: Path) -> None:
        self.data_config = _read_json(directory / "data_config.json")
        self.data_config["input_size"] = tuple(self.data_config["input_size"])
        self._transform = None


class ScratchTextProcessor(InputProcessor):
    """A byte-level BPE tokenizer from the ``tokenizers`` library.

    Works untrained (one token per byte, no download needed); ``fit(texts)``
    learns merges up to ``vocab_size``. Pads with id 0 on the right.
    """

    SPECIALS = ("[PAD]", "[UNK]")

    def __init__(self, vocab_size: int = 8192, max_length: int = 128):
        from tokenizers import pre_tokenizers

        minimum = len(self.SPECIALS) + len(pre_tokenizers.ByteLevel.alphabet())
        if vocab_size < minimum:
            raise InputError(f"the scratch tokenizer needs vocab_size >= {minimum} (one id per byte), "
                             f"the encoder has {vocab_size}; build it with a larger vocab_size")
        self.vocab_size = vocab_size
        self.max_length = max_length
        self.tokenizer = self._untrained()

    def _configure(self, tokenizer):
        from tokenizers import decoders, normalizers, pre_tokenizers

        tokenizer.normalizer = normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()])
        tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tokenizer.decoder = decoders.ByteLevel()
        tokenizer.enable_padding(pad_id=0, pad_token=self.SPECIALS[0])
        tokenizer.enable_truncation(self.max_length)
        return tokenizer

    def _untrained(self):
        from tokenizers import Tokenizer, models, pre_tokenizers

        alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
        vocab = {token: i for i, token in enumerate([*self.SPECIALS, *alphabet])}
        return self._configure(Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token=self.SPECIALS[1])))

    def fit(self, texts: Iterable[str]) -> "ScratchTextProcessor":
        """Learn BPE merges from ``texts`` (up to the encoder's vocab_size)."""
        from tokenizers import Tokenizer, models, pre_tokenizers, trainers

        tokenizer = self._configure(Tokenizer(models.BPE(unk_token=self.SPECIALS[1])))
        trainer = trainers.BpeTrainer(vocab_size=self.vocab_size, special_tokens=list(self.SPECIALS),
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tokenizer.train_from_iterator(list(texts), trainer)
        self.tokenizer = tokenizer
        return self

    def __call__(self, values: Sequence[str]) -> dict[str, Tensor]:
        values = _as_list(values, "text")
        bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
        if bad:
            raise InputError(f"text items {bad[:5]} are not strings")
        encodings = self.tokenizer.encode_batch(values)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(values), -1)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool).reshape(len(values), -1)
        return {"input_ids": ids, "attention_mask": mask}

    def save(self, directory: Path) -> None:
        _write_text(directory / "tokenizer.json", self.tokenizer.to_str())

    def load(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        self.tokenizer = Tokenizer.from_str((directory / "tokenizer.json").read_text(encoding="utf-8"))


class HFTextProcessor(InputProcessor):
    """A Hugging Face tokenizer, loaded lazily from ``source`` (a folder or a cached id)."""

    def __init__(self, source: str, max_length: int = 512):
        self.source = source
        self.max_length = max_length
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(self.source)
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot load the tokenizer from {self.source!r}: {exc}") from exc
        return self._tokenizer

    def __call__(self, values: Sequence[str]) -> dict[str, Tensor]:
        values = _as_list(values, "text")
        batch = self.tokenizer(values, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].bool()}

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    def load(self, directory: Path) -> None:
        self.source = str(directory)
        self._tokenizer = None


class MultimodalProcessor:
    """One processor per input: ``processor(image=[...], text=[...])`` returns
    the keyword arguments for ``model(**batch)``."""

    def __init__(self, processors: Mapping[str, InputProcessor | None]):
        self.processors = dict(processors)

    @classmethod
    def for_model(cls, model) -> "MultimodalProcessor":
        return cls({slot: encoder.build_processor() for slot, encoder in model.encoders.items()})

    def __getitem__(self, slot: str) -> InputProcessor | None:
        return self.processors[slot]

    def __call__(self, **inputs: Any) -> dict[str, Any]:
        unknown = sorted(set(inputs) - set(self.processors))
        if unknown:
            raise InputError(f"unknown input(s) {unknown}; the model takes {sorted(self.processors)}")
        batch: dict[str, Any] = {}
        for slot, values in inputs.items():
            if values is None:
                continue
            processor = self.processors[slot]
            if processor is None:
                raise InputError(f"input {slot!r} has no processor; pass tensors directly")
            batch[slot] = processor(values)
        return batch

    def fit_text(self, texts: Iterable[str], slot: str | None = None) -> "MultimodalProcessor":
        """Train the scratch tokenizer(s) on ``texts`` (every text input, or ``slot``)."""
        texts = list(texts)
        fitted = 0
        for name, processor in self.processors.items():
            if (slot is None or name == slot) and isinstance(processor, ScratchTextProcessor):
                processor.fit(texts)
                fitted += 1
        if not fitted:
            raise InputError("no trainable text tokenizer" + (f" for input {slot!r}" if slot else "")
                             + "; only scratch text encoders (lstm, gru, transformer) have one")
        return self

    def save(self, directory: Path) -> None:
        for slot, processor in self.processors.items():
            if processor is not None:
                (directory / slot).mkdir(parents=True, exist_ok=True)
                processor.save(directory / slot)

    def load(self, directory: Path) -> None:
        for slot, processor in self.processors.items():
            if processor is not None and (directory / slot).is_dir():
                processor.load(directory / slot)


def _write_text(path: Path, text: str) -> None:
    from mmzoo.weights import atomic_write

    atomic_write(path, text.encode("utf-8"))


def _write_json(path: Path, data: Any) -> None:
    _write_text(path, json.dumps(data, indent=2, sort_keys=True))


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read {path}: {exc}") from exc
