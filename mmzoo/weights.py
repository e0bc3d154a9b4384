"""Saving and loading models: ``config.json`` + ``model.safetensors`` (+ processor files).

- Only safetensors; pickle files (``.bin``, ``.pt``, ...) are refused.
- Loading rebuilds the architecture through the registry from the names in
  ``config.json``; no module named in a file is ever imported.
- ``strict=True``: missing/unexpected keys and shape mismatches raise
  :class:`~mmzoo.errors.WeightsError` naming them.
- Each file is written atomically (temporary file in the same folder, fsync,
  rename), weights first and ``config.json`` last; the config records the
  weights' SHA-256, so a save interrupted between the two renames is
  detected on load instead of silently mixing checkpoints.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any, Mapping

from mmzoo.errors import NameSyntaxError, PluginError, UnknownNameError, WeightsError

__all__ = ["save_pretrained", "load", "load_state", "read_safetensors", "atomic_write",
           "CONFIG_NAME", "WEIGHTS_NAME", "FORMAT_VERSION"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PROCESSOR_DIR = "processor"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = {".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle"}
#: a distribution name as PEP 508 allows it (nothing a shell would interpret)
_DISTRIBUTION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new file, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _refuse_pickle(path: Path) -> None:
    if path.suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path} is a pickle-based checkpoint ({path.suffix}); mmzoo never loads pickle, because "
            "unpickling can run arbitrary code. Convert it once, in an environment you trust, with "
            "safetensors.torch.save_file(torch.load(path, weights_only=True), 'model.safetensors')."
        )


def read_safetensors(path: Path) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file; any problem becomes a :class:`WeightsError`."""
    path = Path(path)
    _refuse_pickle(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc


def _state_for_saving(model) -> dict[str, Any]:
    """The state dict with every tensor contiguous and owning its storage
    (safetensors refuses tensors that share memory, e.g. tied weights)."""
    state = {}
    seen: set[tuple[int, int]] = set()
    for key, tensor in model.state_dict().items():
        tensor = tensor.detach()
        storage = (tensor.untyped_storage().data_ptr(), tensor.untyped_storage().nbytes())
        if storage in seen or not tensor.is_contiguous() or tensor.device.type != "cpu":
            tensor = tensor.to("cpu", copy=True).contiguous()
        seen.add(storage)
        state[key] = tensor
    return state


def save_pretrained(model, directory: str | Path) -> Path:
    """Write ``model`` into ``directory`` (see the module docstring)."""
    from safetensors.torch import save

    import mmzoo

    directory = Path(directory)
    _refuse_pickle(directory)
    if directory.exists() and not directory.is_dir():
        raise WeightsError(f"cannot save the model into {directory}: it is a file, not a folder")
    if (directory / CONFIG_NAME).is_dir():
        raise WeightsError(f"cannot save the model into {directory}: {directory / CONFIG_NAME} is a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the model folder {directory}: {exc.strerror or exc}") from exc
    weights = save(_state_for_saving(model), metadata={"format": "pt", "mmzoo_name": model.name})
    config = {
        "format": "mmzoo",
        "format_version": FORMAT_VERSION,
        "mmzoo_version": mmzoo.__version__,
        "name": model.name,
        "num_classes": model.num_classes,
        "labels": model.labels,
        "weights_sha256": hashlib.sha256(weights).hexdigest(),
        "inputs": list(model.encoders),  # slot order (the keys below are sorted)
        **{k: v for k, v in model.config.items() if k != "name"},
    }
    config["encoders"] = {slot: dict(entry) for slot, entry in config["encoders"].items()}
    for slot, encoder in model.encoders.items():
        config["encoders"][slot]["reload_kwargs"] = encoder.reload_kwargs()
    try:
        text = json.dumps(config, indent=2, sort_keys=True)
    except TypeError as exc:
        raise WeightsError(f"the model's config is not JSON-serialisable ({exc}); "
                           "component kwargs must be Python literals") from exc
    try:
        atomic_write(directory / WEIGHTS_NAME, weights)
        model.processor.save(directory / PROCESSOR_DIR)
        atomic_write(directory / CONFIG_NAME, text.encode("utf-8"))
    except OSError as exc:
        where = exc.filename or directory
        raise WeightsError(f"cannot save the model into {directory}: writing {where} failed "
                           f"({exc.strerror or exc}); check that the folder is writable and has space") from exc
    return directory


def _read_config(directory: Path) -> dict[str, Any]:
    path = directory / CONFIG_NAME
    if not path.is_file():
        pickles = sorted(p.name for p in directory.iterdir() if p.suffix.lower() in PICKLE_SUFFIXES) \
            if directory.is_dir() else []
        hint = f" It holds pickle files {pickles}, which mmzoo never loads." if pickles else ""
        raise WeightsError(f"{directory} is not an mmzoo model folder: {CONFIG_NAME} is missing.{hint} "
                           "Save models with model.save_pretrained(folder).")
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{path} is not valid JSON: {exc}") from exc
    if not isinstance(config, dict) or config.get("format") != "mmzoo":
        raise WeightsError(f"{path} is not an mmzoo config (no \"format\": \"mmzoo\")")
    version = config.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version > FORMAT_VERSION:
        raise WeightsError(f"{path} has format_version {version!r}; this mmzoo reads up to "
                           f"{FORMAT_VERSION}: upgrade mmzoo")
    for key in ("name", "encoders", "fusion", "num_classes"):
        if key not in config:
            raise WeightsError(f"{path} lacks the field {key!r}")
    types = {"name": str, "encoders": dict, "fusion": dict, "num_classes": int}
    for key, kind in types.items():
        value = config[key]
        if not isinstance(value, kind) or isinstance(value, bool):
            raise WeightsError(f"{path}: field {key!r} must be a {kind.__name__}, "
                               f"got {type(value).__name__} {value!r:.60}")
    return config


def _check_plugin(entry: Mapping[str, Any], registry) -> None:
    plugin = entry.get("plugin")
    info = registry.plugins.get(plugin) if plugin else None
    if plugin and (info is None or info.status != "ok"):
        dist = entry.get("distribution") or plugin
        if not isinstance(dist, str) or not _DISTRIBUTION_RE.fullmatch(dist):
            raise WeightsError(f"config.json names distribution {dist!r} for plugin {plugin!r}, "
                               "which is not a valid distribution name (PEP 508)")
        if info is not None:
            state = f"plugin {plugin!r} is {info.status}" + (f" ({info.error})" if info.error else "")
            action = f"Enable or repair plugin {plugin!r} (see `mmzoo plugins`)"
        elif _installed(dist):
            state = (f"distribution {dist!r} is installed and no plugin {plugin!r} is loaded (disabled "
                     "through MMZOO_LOAD_PLUGINS / MMZOO_DISABLE_PLUGINS, or a version that names it otherwise)")
            action = ("Check `mmzoo plugins`, or install the version the model was saved with: "
                      f"pip install '{dist}=={entry.get('plugin_version')}'")
        else:
            state = f"distribution {dist!r} is not installed"
            action = f"Install it with: pip install '{dist}'"
        raise PluginError(
            f"this model needs component {entry.get('name')!r} from plugin {plugin!r} "
            f"(distribution {dist!r}, version {entry.get('plugin_version')}), but {state}. {action}"
        )


def _installed(distribution: str) -> bool:
    from importlib import metadata

    try:
        metadata.distribution(distribution)
    except metadata.PackageNotFoundError:
        return False
    return True


def _part_name(entry: Mapping[str, Any], kind: str, registry) -> str:
    """The name to rebuild a part with: qualified by its plugin when that
    plugin registered it under this short name (avoids ambiguity)."""
    name = entry["name"]
    if ":" not in name and registry.owns(kind, name, entry.get("plugin")):
        return f"{entry['plugin']}:{name}"
    return name


def load(path: str | Path, *, strict: bool = True, verify_checksum: bool = True, registry=None):
    """Load a model saved with ``save_pretrained`` (returned in eval mode).

    The weights must match the SHA-256 recorded in ``config.json``; a config
    without one is refused unless ``verify_checksum=False``."""
    from mmzoo.builder import create
    from mmzoo.names import ModelName, NamePart, parse_name
    from mmzoo.registry import default_registry

    directory = Path(path)
    _refuse_pickle(directory)
    config = _read_config(directory)
    registry = registry or default_registry()
    try:
        order = config.get("inputs") or list(config["encoders"])
        if sorted(order) != sorted(config["encoders"]):
            raise WeightsError(f"{directory / CONFIG_NAME}: 'inputs' {order} and 'encoders' "
                               f"{sorted(config['encoders'])} disagree")
        encoders = {slot: config["encoders"][slot] for slot in order}
        for entry in [*encoders.values(), config["fusion"]]:
            _check_plugin(entry, registry)
        # kwargs come from the canonical name, which keeps literal types
        # exactly (JSON would turn tuples into lists)
        canonical = parse_name(config["name"])
        if len(canonical.encoders) != len(encoders):
            raise WeightsError(f"{directory / CONFIG_NAME}: the name lists {len(canonical.encoders)} "
                               f"encoders but 'encoders' has {len(encoders)}")
        name = ModelName(
            tuple(NamePart(_part_name(e, "encoder", registry), part.kwargs)
                  for e, part in zip(encoders.values(), canonical.encoders)),
            NamePart(_part_name(config["fusion"], "fusion", registry), canonical.fusion.kwargs),
        )
        head = config.get("head", {})
        model = create(name, int(config["num_classes"]), drop_rate=head.get("drop_rate", 0.0),
                       modality_dropout=head.get("modality_dropout", 0.0), labels=config.get("labels"),
                       registry=registry,
                       _reload={slot: e.get("reload_kwargs") or {} for slot, e in encoders.items()})
    except NameSyntaxError as exc:
        raise WeightsError(f"{directory / CONFIG_NAME} holds an invalid name: {exc}") from exc
    except UnknownNameError as exc:
        raise PluginError(f"cannot rebuild {config['name']!r} from {directory}: {exc}") from exc
    except (KeyError, TypeError, AttributeError) as exc:
        raise WeightsError(f"{directory / CONFIG_NAME} is malformed: {type(exc).__name__}: {exc}") from exc
    if list(model.encoders) != list(encoders):
        raise WeightsError(f"{directory}: rebuilt inputs {list(model.encoders)} differ from the saved "
                           f"{list(encoders)}")

    weights_path = directory / WEIGHTS_NAME
    expected = config.get("weights_sha256")
    if verify_checksum and (not isinstance(expected, str) or not expected):
        raise WeightsError(f"{directory / CONFIG_NAME} records no weights_sha256, so the weights cannot "
                           "be checked against it; re-save the model, or pass verify_checksum=False "
                           "if you trust the folder")
    if verify_checksum and weights_path.is_file():
        digest = hashlib.sha256(weights_path.read_bytes()).hexdigest()
        if digest != expected:
            raise WeightsError(f"{weights_path} does not match {CONFIG_NAME} (different SHA-256): "
                               "the save was interrupted or the files come from different checkpoints")
    state = read_safetensors(weights_path)
    load_state(model, state, strict=strict, source=str(weights_path))
    model.processor.load(directory / PROCESSOR_DIR)
    return model.eval()


def load_state(model, state: Mapping[str, Any], *, strict: bool, source: str) -> None:
    """Load ``state`` into ``model``, reporting missing/unexpected keys and shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    mismatched = sorted(k for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    wrong_dtype = sorted(k for k in set(own) & set(state)
                         if k not in mismatched and own[k].dtype != state[k].dtype)
    if wrong_dtype:  # never cast silently (an int tensor into a float parameter)
        raise WeightsError(f"{source} does not match the model's dtypes: " + ", ".join(
            f"{k}: checkpoint {state[k].dtype} vs model {own[k].dtype}" for k in wrong_dtype[:10]))
    if strict and (missing or unexpected or mismatched):
        parts = []
        if missing:
            parts.append(f"missing keys {missing[:10]}" + (" ..." if len(missing) > 10 else ""))
        if unexpected:
            parts.append(f"unexpected keys {unexpected[:10]}" + (" ..." if len(unexpected) > 10 else ""))
        if mismatched:
            parts.append("shape mismatches " + ", ".join(
                f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}" for k in mismatched[:10]))
        raise WeightsError(f"{source} does not match the model: {'; '.join(parts)}. "
                           "Pass strict=False to load the matching tensors only.")
    usable = {k: v for k, v in state.items() if k in own and k not in mismatched}
    try:
        model.load_state_dict(usable, strict=False)
    except RuntimeError as exc:  # dtype problems and the like
        raise WeightsError(f"cannot load {source}: {exc}") from exc

