"""Image encoders: any timm backbone, and a small plain CNN."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

from torch import Tensor, nn

from mmzoo.components import Encoder, EncoderOutput
from mmzoo.errors import InputError, WeightsError


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


class TimmEncoder(ImageEncoder):
    """A timm backbone built with ``num_classes=0``.

    ``pretrained`` is a local ``.safetensors`` file loaded into the backbone
    (classifier weights in it are ignored); other kwargs such as ``img_size``
    go to ``timm.create_model``.
    """

    weight_kwargs = ("pretrained",)

    def __init__(self, model_name: str, *, pretrained: str | None = None, in_chans: int = 3,
                 drop_path_rate: float = 0.0, **timm_kwargs: Any):
        super().__init__()
        import timm

        self.model_name = model_name
        self.in_chans = in_chans
        self.backbone = timm.create_model(model_name, pretrained=False, num_classes=0,
                                          in_chans=in_chans, drop_path_rate=drop_path_rate,
                                          **timm_kwargs)
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

    def forward(self, x: Tensor) -> EncoderOutput:
        features = self.backbone.forward_features(x)
        pooled = self.backbone.forward_head(features, pre_logits=True)
        return EncoderOutput(pooled, _tokens(features, self._output_fmt))

    def data_config(self) -> dict[str, Any]:
        from timm.data import resolve_data_config

        return resolve_data_config({}, model=self.backbone)


class SmallCNN(ImageEncoder):
    """A plain CNN: per stage conv3x3 -> ReLU -> 2x2 max-pool; pooled = mean
    over the last feature map, tokens = its grid (the survey's image branch)."""

    def __init__(self, *, channels: tuple[int, ...] = (32, 64), in_chans: int = 3, img_size: int = 32):
        super().__init__()
        if not channels:
            raise InputError("cnn needs at least one stage in channels=(...)")
        self.in_chans = in_chans
        self.img_size = img_size
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
