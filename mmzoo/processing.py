"""Raw inputs -> tensors: images through timm's data config, text through
``tokenizers`` (scratch encoders) or a Hugging Face tokenizer."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import torch
from torch import Tensor

from mmzoo._io import atomic_write_text, read_json, write_json
from mmzoo.components import InputProcessor
from mmzoo.errors import InputError, WeightsError

__all__ = ["ImageProcessor", "ScratchTextProcessor", "HFTextProcessor", "MultimodalProcessor"]


def as_list(values: Any, slot: str) -> list[Any]:
    """One item per sample: a list/tuple, or an array/tensor split along dim 0."""
    is_batch_array = hasattr(values, "__array__") and getattr(values, "ndim", 0) >= 1
    if isinstance(values, (str, bytes, Path)) or not (isinstance(values, Sequence) or is_batch_array):
        raise InputError(f"processor input {slot!r} must be a list (one item per sample), "
                         f"got {type(values).__name__}")
    return list(values)


def as_texts(values: Any) -> list[str]:
    """A batch of texts: :func:`as_list`, every item a string."""
    values = as_list(values, "text")
    bad = [i for i, v in enumerate(values) if not isinstance(v, str)]
    if bad:
        raise InputError(f"text items {bad[:5]} are not strings")
    return values


class ImageProcessor(InputProcessor):
    """PIL images, numpy arrays (H, W[, C]; uint8 or floats in [0, 1]) or file
    paths -> a float (B, C, H, W) tensor, using ``timm.data.create_transform``
    with the backbone's data config (resize, crop, normalise).

    Transparent images (RGBA, LA, P or L/RGB with a transparency key) are
    composited on ``data_config["background"]`` (default white) before the
    conversion to RGB/L: dropping alpha would turn a black-on-transparent icon
    into a constant square. ``train_transform(...)`` is timm's training
    transform for the same config (random-resized crop, flip, colour jitter,
    optional RandAugment); :meth:`preprocess` runs one image through either.

    A saved ``data_config.json`` whose ``input_size`` (C, H, W) holds more than
    :attr:`max_elements` values per image is refused on load, before anything
    is allocated; raise the limit (``ImageProcessor.max_elements = ...``) for
    inputs that really are that large.
    """

    #: the most values (C * H * W) one processed image may have: 3 x 4096 x 4096
    max_elements: int = 3 * 4096 * 4096
    TRANSFORM_KEYS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")

    def __init__(self, data_config: Mapping[str, Any]):
        self.data_config = dict(data_config)
        self.data_config.setdefault("background", (255, 255, 255))
        self._transform = None

    @property
    def transform(self):
        """The evaluation transform (resize, centre crop, normalise)."""
        if self._transform is None:
            from timm.data import create_transform

            self._transform = create_transform(**self._transform_config(), is_training=False)
        return self._transform

    def train_transform(self, **options: Any):
        """timm's training transform for this data config; ``options`` go to
        ``timm.data.create_transform`` (``scale``, ``hflip``, ``color_jitter``,
        ``auto_augment="rand-m9-mstd0.5"``, ``re_prob``, ...)."""
        from timm.data import create_transform

        try:
            return create_transform(**self._transform_config(), is_training=True, **options)
        except TypeError as exc:
            raise InputError(f"augmentation options {sorted(options)}: {exc}; see "
                             "timm.data.create_transform for the accepted keywords") from None

    def _transform_config(self) -> dict[str, Any]:
        return {k: self.data_config[k] for k in self.TRANSFORM_KEYS if k in self.data_config}

    def preprocess(self, value: Any, index: int = 0, transform=None) -> Tensor:
        """One image (PIL, array or path) -> a (C, H, W) tensor through
        ``transform`` (default: the evaluation transform)."""
        return (transform or self.transform)(self._to_pil(value, index))

    def _background(self) -> tuple[int, int, int]:
        from PIL import ImageColor

        value = self.data_config.get("background", (255, 255, 255))
        try:
            if isinstance(value, str):
                return ImageColor.getrgb(value)[:3]
            if isinstance(value, (int, float)):
                value = (value,) * 3
            rgb = tuple(int(v) for v in value)
            if len(rgb) != 3 or not all(0 <= v <= 255 for v in rgb):
                raise ValueError
            return rgb
        except (TypeError, ValueError):
            raise InputError(f"data_config['background'] must be a colour name, a 0..255 grey level or an "
                             f"(r, g, b) triple of 0..255, got {value!r}") from None

    def _convert(self, image, mode: str):
        """``image.convert(mode)``, compositing transparency on the background first."""
        from PIL import Image

        if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
            rgba = image.convert("RGBA")
            background = Image.new("RGBA", rgba.size, (*self._background(), 255))
            image = Image.alpha_composite(background, rgba)
        return image.convert(mode)

    def _to_pil(self, value: Any, index: int):
        import numpy as np
        from PIL import Image, UnidentifiedImageError

        channels = self.data_config.get("input_size", (3,))[0]
        mode = "RGB" if channels == 3 else "L"
        if isinstance(value, (str, Path)):
            try:
                with Image.open(value) as image:
                    return self._convert(image, mode)
            except FileNotFoundError:
                raise InputError(f"image {index}: file {str(value)!r} does not exist") from None
            except (UnidentifiedImageError, OSError) as exc:
                raise InputError(f"image {index}: cannot read {str(value)!r} as an image ({exc})") from None
        if isinstance(value, Image.Image):
            return self._convert(value, mode)
        if isinstance(value, Tensor):
            value = value.detach().cpu()
            value = (value.float() if value.is_floating_point() else value).numpy()  # numpy has no bfloat16
            if value.ndim == 3 and value.shape[0] in (1, 3):  # CHW -> HWC
                value = value.transpose(1, 2, 0)
        if isinstance(value, np.ndarray):
            array = value
            if array.ndim == 3 and array.shape[-1] == 1:
                array = array[..., 0]
            if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[-1] not in (3, 4)):
                raise InputError(f"image {index}: an array must be (H, W) or (H, W, C) with C = 1, 3 or 4, "
                                 f"got shape {array.shape}")
            if not array.shape[0] or not array.shape[1]:
                raise InputError(f"image {index}: an array of shape {array.shape} has no pixels")
            if array.dtype != np.uint8:
                if array.dtype.kind != "f":
                    raise InputError(f"image {index}: arrays must be uint8 (0..255) or floating point "
                                     f"(0..1), got dtype {array.dtype}")
                if not np.isfinite(array).all():
                    raise InputError(f"image {index}: the array holds NaN or infinite values; "
                                     "replace them (e.g. np.nan_to_num) before passing it")
                if array.min() < 0 or array.max() > 1:
                    raise InputError(f"image {index}: float arrays must hold values in [0, 1]; "
                                     "pass uint8 for 0..255")
                array = (array * 255).round().astype(np.uint8)
            return self._convert(Image.fromarray(array), mode)
        raise InputError(f"image {index}: expected a PIL image, numpy array or file path, "
                         f"got {type(value).__name__}")

    def __call__(self, values: Sequence[Any]) -> Tensor:
        values = as_list(values, "image")
        if not values:
            raise InputError("no images given")
        return torch.stack([self.preprocess(v, i) for i, v in enumerate(values)])

    def save(self, directory: Path) -> None:
        write_json(directory / "data_config.json", self.data_config)

    def load(self, directory: Path) -> None:
        path = directory / "data_config.json"
        self.data_config = self._checked(read_json(path), path)
        self._transform = None

    @classmethod
    def _checked(cls, config: Any, path: Path) -> dict[str, Any]:
        """``config`` read from ``path``, its fields' types and sizes checked."""
        def bad(message: str) -> WeightsError:
            return WeightsError(f"{path}: {message}; re-save the model or restore the file")

        if not isinstance(config, dict):
            raise bad(f"must hold a JSON object, got {type(config).__name__}")
        size = config.get("input_size")
        if not (isinstance(size, list) and len(size) == 3
                and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in size)):
            raise bad(f"input_size must be three positive integers [channels, height, width], got {size!r:.80}")
        if math.prod(size) > cls.max_elements:
            raise bad(f"input_size {size} means {math.prod(size):,} values per image, more than the limit of "
                      f"{cls.max_elements:,} (ImageProcessor.max_elements; raise it if you mean it)")
        for key in ("mean", "std"):
            value = config.get(key)
            if value is not None and not (isinstance(value, list) and len(value) in (1, size[0]) and all(
                    isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value)):
                raise bad(f"{key} must be {size[0]} finite numbers (one per channel) or one, got {value!r:.80}")
        if any(v <= 0 for v in config.get("std") or ()):
            raise bad(f"std must be positive, got {config['std']}")
        crop_pct = config.get("crop_pct")
        if crop_pct is not None and not (isinstance(crop_pct, (int, float)) and not isinstance(crop_pct, bool)
                                         and 0 < crop_pct <= 10):
            raise bad(f"crop_pct must be a number in (0, 10], got {crop_pct!r:.40}")
        for key in ("interpolation", "crop_mode"):
            if config.get(key) is not None and not isinstance(config[key], str):
                raise bad(f"{key} must be a string, got {config[key]!r:.40}")
        background = config.get("background", (255, 255, 255))
        channel = lambda v: isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 255  # noqa: E731
        if isinstance(background, list) and len(background) == 3 and all(map(channel, background)):
            background = tuple(background)
        elif not (isinstance(background, str) or channel(background) or background == (255, 255, 255)):
            raise bad(f"background must be a colour name, a 0..255 grey level or 3 integers in 0..255, "
                      f"got {background!r:.40}")
        return {**config, "input_size": tuple(size), "background": background,
                **{k: tuple(config[k]) for k in ("mean", "std") if config.get(k) is not None}}


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
        values = as_texts(values)
        encodings = self.tokenizer.encode_batch(values)
        ids = torch.tensor([e.ids for e in encodings], dtype=torch.long).reshape(len(values), -1)
        mask = torch.tensor([e.attention_mask for e in encodings], dtype=torch.bool).reshape(len(values), -1)
        return {"input_ids": ids, "attention_mask": mask}

    def save(self, directory: Path) -> None:
        atomic_write_text(directory / "tokenizer.json", self.tokenizer.to_str())

    def load(self, directory: Path) -> None:
        from tokenizers import Tokenizer

        path = directory / "tokenizer.json"
        try:
            tokenizer = Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise WeightsError(f"{path} is missing; re-save the model") from None
        except Exception as exc:  # the tokenizers library raises a bare Exception
            raise WeightsError(f"{path} is not a valid tokenizer file: {exc}") from exc
        if tokenizer.get_vocab_size() > self.vocab_size:
            raise WeightsError(f"{path} has {tokenizer.get_vocab_size()} tokens, more than the encoder's "
                               f"vocab_size {self.vocab_size}: it belongs to another model")
        self.tokenizer = tokenizer


class HFTextProcessor(InputProcessor):
    """A Hugging Face tokenizer, loaded lazily from ``source`` (a folder or a cached id)."""

    def __init__(self, source: str, max_length: int = 512):
        self.source = source
        self.max_length = max_length
        self._tokenizer = None

    @property
    def tokenizer(self):
        if self._tokenizer is None:
            try:
                self._tokenizer = self._from_pretrained()
            except (OSError, ValueError) as exc:
                raise InputError(f"cannot load the tokenizer from {self.source!r}: {exc}") from exc
        return self._tokenizer

    def _from_pretrained(self):
        from transformers import AutoTokenizer

        local = Path(self.source).is_dir()  # a folder never falls back to the hub
        return AutoTokenizer.from_pretrained(self.source, local_files_only=local, trust_remote_code=False)

    def __call__(self, values: Sequence[str]) -> dict[str, Tensor]:
        values = as_list(values, "text")
        batch = self.tokenizer(values, padding=True, truncation=True, max_length=self.max_length,
                               return_tensors="pt")
        return {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"].bool()}

    def save(self, directory: Path) -> None:
        self.tokenizer.save_pretrained(str(directory))

    def load(self, directory: Path) -> None:
        self.source = str(directory)
        try:  # read now: a broken file is reported as one of the model's files
            self._tokenizer = self._from_pretrained()
        except Exception as exc:  # transformers and tokenizers raise many kinds
            raise WeightsError(f"cannot load the tokenizer files in {directory}: {exc}") from exc


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

    def fit(self, data: Any, *, force: bool = False) -> list[str]:
        """Fit the processors that learn from training data (a ``fitted``
        attribute that is False, e.g. the tabular one) on ``data`` (a
        :class:`~mmzoo.tasks.Split` or a mapping of input name -> raw values).
        Fitted ones are kept unless ``force``. Returns the input names fitted."""
        inputs = getattr(data, "inputs", data)
        if not isinstance(inputs, Mapping):
            raise InputError(f"processor.fit takes a Split or a mapping of input name -> values, "
                             f"got {type(data).__name__}")
        fitted = []
        for slot, processor in self.processors.items():
            values = inputs.get(slot)
            if (values is None or isinstance(values, (Tensor, Mapping)) or not hasattr(processor, "fitted")
                    or (processor.fitted and not force)):
                continue
            processor.fit(values)
            fitted.append(slot)
        return fitted

    def save(self, directory: Path) -> None:
        for slot, processor in self.processors.items():
            if processor is not None:
                (directory / slot).mkdir(parents=True, exist_ok=True)
                processor.save(directory / slot)

    def load(self, directory: Path) -> None:
        for slot, processor in self.processors.items():
            if processor is None:
                continue
            if not (directory / slot).is_dir():
                raise WeightsError(f"{directory / slot} is missing: the model folder is incomplete "
                                   "(its processor files were not saved or were removed)")
            processor.load(directory / slot)
