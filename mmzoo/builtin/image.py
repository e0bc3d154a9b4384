"""Image encoders: any timm backbone, and a small plain CNN."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmzoo.components import Encoder, EncoderOutput, check_int, check_params
from mmzoo.errors import InputError, WeightsError
from mmzoo.weights import PICKLE_SUFFIXES


def resolve_timm(name: str):
    """Factory for timm model ``name``, or None when timm has no such model."""
    import timm

    if not timm.is_model(name):
        return None
    return functools.partial(TimmEncoder, name)


def list_timm(filter: str = "*") -> list[str]:
    import timm

    return timm.list_models(filter or "*")


class ImageEncoder(Encoder):
    """Base for image encoders: takes a float (B, C, H, W) tensor."""

    modality = "image"
    in_chans: int = 3

    def prepare_input(self, x: Any, slot: str) -> tuple[Tensor, None]:
        x, _ = super().prepare_input(x, slot)
        if x.dim() != 4 or x.shape[1] != self.in_chans:
            raise InputError(
                f"input {slot!r} (image) must be a float tensor of shape (batch, {self.in_chans}, "
                f"height, width), got shape {tuple(x.shape)}; use model.processor({slot}=[...]) "
                "for PIL images, arrays or file paths"
            )
        return x, None

    def data_config(self) -> dict[str, Any]:
        raise NotImplementedError

    def build_processor(self):
        from mmzoo.processing import ImageProcessor

        return ImageProcessor(self.data_config())


def _tokens(features: Tensor, fmt: str) -> Tensor:
    """Unpooled features -> (B, T, D) tokens."""
    if features.dim() == 4:
        if fmt == "NHWC":
            return features.flatten(1, 2)
        return features.flatten(2).transpose(1, 2)
    if features.dim() == 3:
        return features
    raise InputError(f"cannot turn features of shape {tuple(features.shape)} into tokens")


#: ``timm.create_model`` kwargs that load weights (pickle checkpoints, the hub) or name where
#: from; a name or a saved config may not pass them (weights come through ``pretrained``)
TIMM_WEIGHT_SOURCE_KWARGS = frozenset({"checkpoint_path", "pretrained_cfg", "pretrained_cfg_overlay",
                                       "cache_dir", "pretrained_strict", "pretrained_filter_fn",
                                       "pretrained_model_args"})


class TimmEncoder(ImageEncoder):
    """A timm backbone built with ``num_classes=0``.

    ``pretrained`` says where the initial weights come from:

    - ``True``: timm's default pretrained weights for the model, and
      ``'a1_in1k'`` / ``'resnet50.a1_in1k'``: those of that pretrained tag,
      both through timm's pretrained config and the Hugging Face cache (used
      without network when cached; ``HF_HUB_OFFLINE`` and ``HF_HOME`` honoured);
    - a local ``.safetensors`` file (classifier weights in it are ignored; a
      data config stored in its metadata by ``mmzoo convert`` is used).

    The image processor follows the weights' data config (mean, std, input
    size, interpolation). Other kwargs such as ``img_size`` go to
    ``timm.create_model``, except those that load weights or name a
    weight file or hub (:data:`TIMM_WEIGHT_SOURCE_KWARGS`).
    """

    weight_kwargs = ("pretrained",)

    def __init__(self, model_name: str, *, pretrained: bool | str | None = None, in_chans: int = 3,
                 drop_path_rate: float = 0.0, **timm_kwargs: Any):
        super().__init__()
        from mmzoo.hub import loading_saved_model

        refused = sorted(TIMM_WEIGHT_SOURCE_KWARGS & set(timm_kwargs))
        if refused:
            raise WeightsError(f"timm model {model_name!r}: {', '.join(refused)} would let timm load weights "
                               "itself (pickle checkpoints, the hub); mmzoo loads only safetensors: pass "
                               "pretrained='file.safetensors' instead")
        if pretrained and loading_saved_model():
            raise WeightsError(f"timm model {model_name!r}: a saved model takes its weights from its own "
                               f"folder, never from pretrained={pretrained!r}")
        self.model_name = model_name
        self.in_chans = check_int(model_name, "in_chans", in_chans)
        self._data_overrides: dict[str, Any] = {}
        options = dict(num_classes=0, in_chans=in_chans, drop_path_rate=drop_path_rate, **timm_kwargs)
        if pretrained is True or (isinstance(pretrained, str) and not _is_file_path(pretrained)):
            self.backbone = _pretrained_backbone(model_name, None if pretrained is True else pretrained,
                                                 options)
        else:
            import timm

            self.backbone = timm.create_model(model_name, pretrained=False, **options)
            if pretrained:
                self._load_local(pretrained)
        self.num_features = int(getattr(self.backbone, "head_hidden_size", None) or self.backbone.num_features)
        self.token_features = int(self.backbone.num_features)
        self._output_fmt = str(getattr(self.backbone, "output_fmt", "NCHW"))

    def _load_local(self, path: str) -> None:
        from mmzoo.weights import read_safetensors

        state = read_safetensors(Path(path))
        own = self.backbone.state_dict()
        classifier = self.backbone.pretrained_cfg.get("classifier") or ""
        heads = classifier if isinstance(classifier, (list, tuple)) else (classifier,)
        state = {k: v for k, v in state.items()
                 if k in own or not any(h and k.startswith(h + ".") for h in heads)}
        missing = sorted(set(own) - set(state))
        unexpected = sorted(set(state) - set(own))
        shapes = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                  for k in set(own) & set(state) if state[k].shape != own[k].shape]
        if missing or unexpected or shapes:
            raise WeightsError(
                f"pretrained weights {path} do not fit timm model {self.model_name!r}: "
                f"missing {missing[:8]}, unexpected {unexpected[:8]}, shape mismatches {shapes[:8]}"
            )
        self.backbone.load_state_dict(state)
        from mmzoo.convert import stored_data_config

        self._data_overrides = stored_data_config(Path(path))

    def forward(self, x: Tensor) -> EncoderOutput:
        features = self.backbone.forward_features(x)
        pooled = self.backbone.forward_head(features, pre_logits=True)
        return EncoderOutput(pooled, _tokens(features, self._output_fmt))

    def data_config(self) -> dict[str, Any]:
        from timm.data import resolve_data_config

        return {**resolve_data_config({}, model=self.backbone), **self._data_overrides}


def _is_file_path(value: str) -> bool:
    """A ``pretrained=`` string that names a file rather than a timm tag."""
    suffix = Path(value).suffix.lower()
    return (suffix == ".safetensors" or suffix in PICKLE_SUFFIXES or "/" in value or os.sep in value
            or Path(value).is_file())


def _pretrained_backbone(model_name: str, tag: str | None, options: dict[str, Any]):
    """timm ``model_name`` with its pretrained weights (default tag, or ``tag``)."""
    import timm
    from timm.models import get_pretrained_cfg

    from mmzoo.builtin import _hf_cache

    architecture, _, own_tag = model_name.partition(".")
    if tag and "." in tag:
        arch_of_tag, _, tag = tag.partition(".")
        if arch_of_tag != architecture:
            raise WeightsError(f"pretrained='{arch_of_tag}.{tag}' names another architecture than the "
                               f"encoder {model_name!r}; use pretrained={tag!r} or the encoder {arch_of_tag!r}")
    tag = tag or own_tag
    full = f"{architecture}.{tag}" if tag else architecture
    try:
        cfg = get_pretrained_cfg(full, allow_unregistered=False)
    except RuntimeError:
        cfg = None
    if cfg is None:
        known = [n.partition(".")[2] for n in timm.list_pretrained(f"{architecture}.*")]
        raise WeightsError(f"timm model {architecture!r} has no pretrained tag {tag!r}; "
                           f"its tags are {known or 'none (it has no pretrained weights)'}")
    full = f"{architecture}.{cfg.tag}" if cfg.tag else architecture
    what = f"pretrained weights of timm model {architecture!r} (tag {cfg.tag!r})"
    if not cfg.hf_hub_id:
        raise WeightsError(f"{what} are not on the Hugging Face hub; download them yourself and pass "
                           "pretrained='path/to/model.safetensors'")
    repo = cfg.hf_hub_id
    filenames = ("model.safetensors", "open_clip_model.safetensors")
    cached = _hf_cache.cached_file(repo, filenames)
    if cached is None and _hf_cache.offline():
        raise _hf_cache.not_cached_error(what, repo, filenames[0],
                                         "pass pretrained='path/to/model.safetensors'")
    overlay = {"file": str(cached)} if cached is not None else {}
    try:
        return timm.create_model(full, pretrained=True, pretrained_cfg_overlay=overlay,
                                 cache_dir=str(_hf_cache.cache_dir()), **options)
    except Exception as exc:  # a hub, network or file problem: say which weights, not a traceback
        raise WeightsError(f"cannot load {what} from {cached or repo}: {type(exc).__name__}: {exc}. "
                           f"Check the network or the cache {_hf_cache.cache_dir()}, or pass "
                           "pretrained='path/to/model.safetensors'") from exc


class SmallCNN(ImageEncoder):
    """A plain CNN: per stage conv3x3 -> ReLU -> 2x2 max-pool; pooled = mean
    over the last feature map, tokens = its grid (the survey's image branch)."""

    def __init__(self, *, channels: tuple[int, ...] = (32, 64), in_chans: int = 3, img_size: int = 32):
        super().__init__()
        if (not isinstance(channels, (tuple, list)) or not channels
                or any(isinstance(w, bool) or not isinstance(w, int) or w < 1 for w in channels)):
            raise InputError(f"cnn: channels={channels!r} is invalid; give a tuple of positive stage "
                             "widths, e.g. cnn(channels=(32, 64))")
        self.in_chans = check_int("cnn", "in_chans", in_chans)
        self.img_size = check_int("cnn", "img_size", img_size)
        widths = (in_chans, *channels)
        check_params(f"cnn(channels={channels!r})", sum(9 * a * b + b for a, b in zip(widths, widths[1:])))
        layers: list[nn.Module] = []
        width = in_chans
        for out in channels:
            layers += [nn.Conv2d(width, out, 3, padding=1), nn.ReLU(inplace=True), nn.MaxPool2d(2, ceil_mode=True)]
            width = out
        self.body = nn.Sequential(*layers)
        self.num_features = self.token_features = width

    def forward(self, x: Tensor) -> EncoderOutput:
        features = self.body(x)
        return EncoderOutput(features.mean((2, 3)), _tokens(features, "NCHW"))

    def data_config(self) -> dict[str, Any]:
        return {"input_size": (self.in_chans, self.img_size, self.img_size), "interpolation": "bilinear",
                "mean": (0.5,) * self.in_chans, "std": (0.5,) * self.in_chans, "crop_pct": 1.0,
                "crop_mode": "center"}
