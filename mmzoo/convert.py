"""Convert a PyTorch checkpoint of a timm architecture into safetensors.

The one place mmzoo reads a pickle-based checkpoint, and only when asked to
(``mmzoo convert``), with ``torch.load(weights_only=True)``; ``create`` and
``load`` stay safetensors-only. Names are mapped to timm's

- by the checkpoint's own names when they already are timm's,
- by an explicit ``{checkpoint name: timm name}`` mapping, or
- by position, when both state dicts have the same number of tensors and
  every shape matches in order (the report says so).

The normalisation the checkpoint expects (mean, std, ...) is stored as a
data config in the safetensors metadata; ``TimmEncoder`` reads it when given
the file as ``pretrained=``, so the image processor uses it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

from mmzoo.errors import InputError, WeightsError

__all__ = ["Conversion", "convert_checkpoint", "stored_data_config", "DATA_CONFIG_KEY"]

DATA_CONFIG_KEY = "mmzoo_data_config"
_DATA_CONFIG_FIELDS = ("input_size", "interpolation", "mean", "std", "crop_pct", "crop_mode")


@dataclass(frozen=True)
class Conversion:
    """What :func:`convert_checkpoint` did."""

    source: str
    out: str
    timm_model: str
    method: str  # "names", "mapping" or "position"
    tensors: int
    parameters: int
    data_config: dict[str, Any]

    def summary(self) -> str:
        how = {"names": "by name (the checkpoint already uses timm's names)",
               "mapping": "by the explicit name mapping",
               "position": "by position (same tensor count, every shape matches in order)"}[self.method]
        return (f"converted {self.tensors} tensors ({self.parameters:,} parameters) of {self.source} "
                f"to timm {self.timm_model!r} {how}; wrote {self.out}; data config "
                f"mean={self.data_config.get('mean')} std={self.data_config.get('std')}")


def _read_checkpoint(path: Path) -> dict[str, Any]:
    import torch

    if not path.is_file():
        raise WeightsError(f"checkpoint {path} does not exist")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # an unpickling refusal, a corrupt or truncated file
        raise WeightsError(f"cannot read {path} as a PyTorch checkpoint with weights_only=True "
                           f"(only tensors are accepted, never arbitrary pickled objects): {exc}") from exc
    for key in ("state_dict", "model", "model_state_dict"):  # common training-script wrappers
        if isinstance(state, Mapping) and isinstance(state.get(key), Mapping):
            state = state[key]
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def _map_names(state: dict[str, Any], own: Mapping[str, Any], mapping: Mapping[str, str] | None,
               source: str, timm_model: str) -> tuple[dict[str, Any], str]:
    if mapping:
        unmapped = sorted(set(state) - set(mapping))
        if unmapped:
            raise WeightsError(f"the mapping does not say where {len(unmapped)} tensor(s) of {source} go: "
                               f"{unmapped[:8]}")
        return {mapping[k]: v for k, v in state.items()}, "mapping"
    if set(state) == set(own):
        return state, "names"
    pairs = list(zip(state.items(), own.items()))
    mismatched = [f"#{i} {src} {tuple(value.shape)} vs {dst} {tuple(target.shape)}"
                  for i, ((src, value), (dst, target)) in enumerate(pairs) if value.shape != target.shape]
    if len(state) != len(own) or mismatched:
        raise WeightsError(
            f"cannot map {source} onto timm {timm_model!r} by position: the checkpoint has "
            f"{len(state)} tensors and the model {len(own)}"
            + (f", and shapes differ at {mismatched[:5]}" if mismatched else "")
            + "; pass an explicit name mapping (--mapping FILE.json)")
    return {dst: value for (_, value), (dst, _) in pairs}, "position"


def convert_checkpoint(source: str | Path, out: str | Path, timm_model: str, *,
                       mapping: Mapping[str, str] | None = None,
                       data_config: Mapping[str, Any] | None = None) -> Conversion:
    """Write ``source`` (a ``.pth``/``.pt``/``.bin`` state dict) as safetensors
    loadable with ``timm_model(pretrained='OUT.safetensors')``.

    ``data_config`` overrides fields of timm's default data config for the
    architecture (``mean``, ``std``, ``input_size``, ``interpolation``, ...)."""
    import timm
    from safetensors.torch import save
    from timm.data import resolve_data_config

    from mmzoo.weights import atomic_write

    source, out = Path(source), Path(out)
    if out.suffix != ".safetensors":
        raise InputError(f"the output {out} must end in .safetensors")
    if not timm.is_model(timm_model):
        raise InputError(f"{timm_model!r} is not a timm model; see mmzoo.list_encoders('{timm_model}*')")
    unknown = sorted(set(data_config or {}) - set(_DATA_CONFIG_FIELDS))
    if unknown:
        raise InputError(f"unknown data config field(s) {unknown}; use {', '.join(_DATA_CONFIG_FIELDS)}")
    state = _read_checkpoint(source)
    model = timm.create_model(timm_model, pretrained=False)
    own = model.state_dict()
    renamed, method = _map_names(state, own, mapping, str(source), timm_model)
    try:
        model.load_state_dict(renamed, strict=True)
    except RuntimeError as exc:
        raise WeightsError(f"the converted tensors of {source} do not fit timm {timm_model!r}: {exc}") from exc
    config = {k: v for k, v in resolve_data_config({}, model=model).items() if k in _DATA_CONFIG_FIELDS}
    config.update(data_config or {})
    config = {k: list(v) if isinstance(v, tuple) else v for k, v in config.items()}
    tensors = {k: v.detach().contiguous().clone() for k, v in renamed.items()}
    blob = save(tensors, metadata={"format": "pt", "timm_model": timm_model, "converted_from": source.name,
                                   "name_mapping": method, DATA_CONFIG_KEY: json.dumps(config)})
    atomic_write(out, _sorted_metadata(blob))
    parameters = sum(p.numel() for p in model.parameters())
    return Conversion(str(source), str(out), timm_model, method, len(tensors), parameters, config)


def _sorted_metadata(blob: bytes) -> bytes:
    """The same safetensors file with its metadata keys in sorted order, so that
    one conversion always gives the same bytes (the writer orders them at random)
    and the file can be named by its SHA-256. Tensor offsets are relative to the
    end of the header, so only the header changes (padded with spaces to 8 bytes)."""
    length = int.from_bytes(blob[:8], "little")
    header = json.loads(blob[8:8 + length])
    header["__metadata__"] = dict(sorted(header.get("__metadata__", {}).items()))
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)
    return len(text).to_bytes(8, "little") + text + blob[8 + length:]


def stored_data_config(path: Path) -> dict[str, Any]:
    """The data config stored in a safetensors file's metadata (``{}`` if none)."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as handle:
            raw = (handle.metadata() or {}).get(DATA_CONFIG_KEY)
    except Exception as exc:  # unreadable metadata: the tensors were already read fine
        raise WeightsError(f"cannot read the metadata of {path}: {exc}") from exc
    if not raw:
        return {}
    try:
        config = json.loads(raw)
    except ValueError as exc:
        raise WeightsError(f"{path}: metadata {DATA_CONFIG_KEY!r} is not JSON: {exc}") from exc
    if not isinstance(config, dict):
        raise WeightsError(f"{path}: metadata {DATA_CONFIG_KEY!r} must be a JSON object")
    config = {k: v for k, v in config.items() if k in _DATA_CONFIG_FIELDS}
    return {k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}
