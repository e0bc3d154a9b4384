"""A model folder on disk: ``config.json`` + ``model.safetensors`` + ``processor/``.

This module reads and writes the files; :mod:`mmzoo.hub` rebuilds a model
from them (``mmzoo.load``).

- Only safetensors; pickle files (``.bin``, ``.pt``, ...) are refused.
- ``strict=True``: missing/unexpected keys, shape and dtype mismatches raise
  :class:`~mmzoo.errors.WeightsError` naming them.
- A save is all-or-nothing for the folder. The new weights and processor
  files are written beside the old ones under private names
  (``.mmzoo-<token>.*``), then ``config.json``, which names them and records
  their SHA-256, replaces the old one in one atomic rename: that rename is
  the switch. Only then are the new files renamed to their usual names
  (``config.json`` is rewritten once more); a reader that finds a named file
  already moved takes the usual name and checks its digest (``mmzoo.load``
  checks the processor files again after reading them, and reads the folder
  again when a save overlapped). At every instant the folder loads as the
  previous model or the new one. Leftovers
  of an interrupted save (only names mmzoo makes) go on the next save;
  other files in the folder are never touched. One writer per folder.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import mmap
import os
import re
import secrets
import shutil
from pathlib import Path
from typing import Any, Mapping, NamedTuple

from mmzoo._io import TMP_SUFFIX, atomic_write, fsync_dir, is_inside
from mmzoo.errors import WeightsError

__all__ = ["save_pretrained", "load_state", "read_safetensors", "file_digest", "FileDigest", "read_config", "refuse_pickle",
           "weights_path", "processor_path", "names_staged_files", "atomic_write",
           "CONFIG_NAME", "WEIGHTS_NAME", "PROCESSOR_DIR", "FORMAT_VERSION", "PICKLE_SUFFIXES"]

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
PROCESSOR_DIR = "processor"
FORMAT_VERSION = 1
PICKLE_SUFFIXES = frozenset({".bin", ".pt", ".pth", ".ckpt", ".pkl", ".pickle", ".tar"})
#: names of the files a save stages beside the old model; nothing else starts so
_STAGED_PREFIX = ".mmzoo-"
#: temporaries of an atomic write of one of the folder's own files
_TEMPORARY = re.compile(r"\.(?:config\.json|model\.safetensors)\..+" + re.escape(TMP_SUFFIX))


def refuse_pickle(path: Path) -> None:
    """Raise :class:`WeightsError` for a pickle-based file name (``.bin``, ``.pt``, timm's ``.pth.tar``, ...)."""
    if Path(path).suffix.lower() in PICKLE_SUFFIXES:
        raise WeightsError(
            f"{path} is a pickle-based checkpoint ({Path(path).suffix}); mmzoo never loads "
            "pickle, because unpickling can run arbitrary code. Convert it once, in an environment you "
            "trust, with safetensors.torch.save_file(torch.load(path, weights_only=True), "
            "'model.safetensors')."
        )


class FileDigest(NamedTuple):
    """The SHA-256 of a file and which file it was (inode, device)."""

    sha256: str
    identity: tuple[int, int]


def file_digest(path: Path) -> FileDigest:
    """Hash ``path`` through a memory map (its pages stay cached for the loader);
    a missing or unreadable file is a :class:`WeightsError`."""
    try:
        with open(path, "rb") as handle:
            stat = os.fstat(handle.fileno())
            if stat.st_size == 0:  # an empty file cannot be memory-mapped
                return FileDigest(hashlib.sha256(b"").hexdigest(), (stat.st_ino, stat.st_dev))
            with mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
                return FileDigest(hashlib.sha256(view).hexdigest(), (stat.st_ino, stat.st_dev))
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} does not exist") from None
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the weights file {path}: {exc}") from exc


def read_safetensors(path: Path, *, sha256: str | None = None, digest: FileDigest | None = None
                     ) -> dict[str, Any]:
    """Tensors of a ``.safetensors`` file; with ``sha256`` its bytes must have that
    digest (``digest``: already computed by :func:`file_digest`, e.g. while the
    model was being built). The file is read once: the hash goes through a
    memory map whose pages the memory-mapped safetensors loader reuses. Any
    problem becomes a :class:`WeightsError`."""
    path = Path(path)
    refuse_pickle(path)
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    if sha256 is not None:
        digest = digest or file_digest(path)
        if digest.sha256 != sha256:
            raise WeightsError(f"{path} does not match {CONFIG_NAME} (different SHA-256): the files "
                               "come from different checkpoints or were changed after saving")
    try:
        state = load_file(str(path), device="cpu")
        now = os.stat(path)
    except FileNotFoundError:
        raise WeightsError(f"weights file {path} does not exist") from None
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path} is not a readable safetensors file (truncated or corrupt?): {exc}") from exc
    if digest is not None and (now.st_ino, now.st_dev) != digest.identity:
        raise WeightsError(f"{path} was replaced while it was being read (a save into the same folder?)")
    return state


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


def _model_config(model, weights_sha256: str) -> dict[str, Any]:
    import mmzoo

    config = {
        "format": "mmzoo",
        "format_version": FORMAT_VERSION,
        "mmzoo_version": mmzoo.__version__,
        "name": model.name,
        "num_classes": model.num_classes,
        "labels": model.labels,
        "weights_sha256": weights_sha256,
        "inputs": list(model.encoders),  # slot order (the keys below are sorted)
        **{k: v for k, v in model.config.items() if k != "name"},
    }
    config["encoders"] = {slot: dict(entry) for slot, entry in config["encoders"].items()}
    for slot, encoder in model.encoders.items():
        config["encoders"][slot]["reload_kwargs"] = encoder.reload_kwargs()
    return config


def _check_slots(model, directory: Path) -> None:
    """Slot and modality names become folder names: they must be identifiers."""
    for slot, encoder in model.encoders.items():
        for what, value in (("input", slot), ("modality", encoder.modality)):
            if not isinstance(value, str) or not value.isidentifier():
                raise WeightsError(f"cannot save into {directory}: {what} name {value!r} of input {slot!r} "
                                   "is not an identifier (letters, digits, '_'), so it cannot name a folder")


def _prepare_folder(directory: Path) -> Path:
    refuse_pickle(directory)
    if directory.exists() and not directory.is_dir():
        raise WeightsError(f"cannot save the model into {directory}: it is a file, not a folder")
    if (directory / CONFIG_NAME).is_dir():
        raise WeightsError(f"cannot save the model into {directory}: {directory / CONFIG_NAME} is a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"cannot create the model folder {directory}: {exc.strerror or exc}") from exc
    return directory


def save_pretrained(model, directory: str | Path) -> Path:
    """Write ``model`` into ``directory``, all-or-nothing (see the module docstring)."""
    from safetensors.torch import save

    directory = _prepare_folder(Path(directory))
    _check_slots(model, directory)
    weights = save(_state_for_saving(model), metadata={"format": "pt", "mmzoo_name": model.name})
    config = _model_config(model, hashlib.sha256(weights).hexdigest())
    try:
        json.dumps(config)
    except TypeError as exc:
        raise WeightsError(f"the model's config is not JSON-serialisable ({exc}); "
                           "component kwargs must be Python literals") from exc
    _remove_leftovers(directory, keep=_referenced(directory))
    token = secrets.token_hex(8)
    staged_weights, staged_processor = f"{_STAGED_PREFIX}{token}.safetensors", f"{_STAGED_PREFIX}{token}.processor"
    try:
        _write_new(directory / staged_weights, weights)
        (directory / staged_processor).mkdir()
        model.processor.save(directory / staged_processor)
        config.update(weights_file=staged_weights, processor_dir=staged_processor,
                      processor_sha256=_tree_sha256(directory / staged_processor, directory))
        _write_config(directory, config)  # the switch: from here on the folder holds the new model
    except BaseException as exc:
        _remove_leftovers(directory, keep=_referenced(directory))  # ours too, unless the switch happened
        if isinstance(exc, OSError):
            where = exc.filename or directory
            raise WeightsError(f"cannot save the model into {directory}: writing {where} failed "
                               f"({exc.strerror or exc}); check that the folder is writable and has "
                               "space") from exc
        raise
    _settle(directory, config, token)
    return directory


def _write_new(path: Path, data: bytes) -> None:
    """Write a file under a fresh private name (no temporary needed: nothing reads it yet)."""
    with open(path, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _settle(directory: Path, config: dict[str, Any], token: str) -> None:
    """Give the new files their usual names. The folder is complete before and
    after each step, so a failure here leaves it loadable (as the new model)."""
    try:
        os.replace(directory / config["weights_file"], directory / WEIGHTS_NAME)
        if (directory / PROCESSOR_DIR).exists():
            os.replace(directory / PROCESSOR_DIR, directory / f"{_STAGED_PREFIX}{token}.old")
        os.replace(directory / config["processor_dir"], directory / PROCESSOR_DIR)
        fsync_dir(directory)
        config.update(weights_file=WEIGHTS_NAME, processor_dir=PROCESSOR_DIR)
        _write_config(directory, config)
    except OSError:
        return  # the next save finishes the tidying
    _remove_leftovers(directory, keep=set())


def _write_config(directory: Path, config: Mapping[str, Any]) -> None:
    atomic_write(directory / CONFIG_NAME, json.dumps(config, indent=2, sort_keys=True).encode("utf-8"))


def _referenced(directory: Path) -> set[str] | None:
    """File names the folder's current config.json points at (None: unreadable, keep everything)."""
    try:
        config = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return set()
    except (OSError, ValueError):
        return None
    if not isinstance(config, dict):
        return None
    return {v for v in (config.get("weights_file"), config.get("processor_dir")) if isinstance(v, str)}


def names_staged_files(directory: Path) -> bool:
    """Whether the folder's config.json names files a save has not finished renaming."""
    return any(name.startswith(_STAGED_PREFIX) for name in _referenced(directory) or ())


def _remove_leftovers(directory: Path, keep: set[str] | None) -> None:
    """Remove what interrupted saves left: staged files no config names, and temporaries."""
    if keep is None:
        return
    for entry in directory.iterdir():
        name = entry.name
        if (name.startswith(_STAGED_PREFIX) and name not in keep) or _TEMPORARY.fullmatch(name):
            _remove(entry)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()


def _tree_sha256(root: Path, folder: Path) -> str:
    """One digest over the relative names and bytes of every file below ``root``;
    a file that resolves outside ``folder`` is refused."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if not p.is_dir()):
        if not is_inside(folder, path):
            raise WeightsError(f"{path} resolves outside the model folder {folder}")
        data = path.read_bytes()
        digest.update(f"{path.relative_to(root).as_posix()}\0{len(data)}\0".encode("utf-8"))
        digest.update(data)
    return digest.hexdigest()


def read_config(directory: Path) -> dict[str, Any]:
    """``config.json`` of a model folder, with its fields' types checked."""
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


def _member(directory: Path, config: Mapping[str, Any], field: str, usual: str) -> Path:
    """The file or folder ``config[field]`` names inside ``directory``; while a save
    settles the named one may already carry its usual name."""
    name = config.get(field, usual)
    if not isinstance(name, str) or name in ("", ".", "..") or "/" in name or "\\" in name \
            or not is_inside(directory, directory / name):
        raise WeightsError(f"{directory / CONFIG_NAME}: {field} {name!r} must name a file inside the folder")
    path = directory / name
    return path if path.exists() else directory / usual


def weights_path(directory: Path, config: Mapping[str, Any]) -> Path:
    """Where the folder's weights are."""
    return _member(directory, config, "weights_file", WEIGHTS_NAME)


def processor_path(directory: Path, config: Mapping[str, Any], *, verify_checksum: bool = True) -> Path:
    """Where the folder's processor files are; checked against ``processor_sha256`` when recorded."""
    path = _member(directory, config, "processor_dir", PROCESSOR_DIR)
    expected = config.get("processor_sha256")
    if path.is_dir() and (expected is not None or verify_checksum):
        actual = _tree_sha256(path, directory)  # also refuses files linked from outside
        if verify_checksum and expected is not None and actual != expected:
            raise WeightsError(f"{path} does not match {CONFIG_NAME} (different SHA-256): the processor "
                               "files come from a different checkpoint or were changed after saving")
    return path


def load_state(model, state: Mapping[str, Any], *, strict: bool, source: str) -> None:
    """Load ``state`` into ``model``, reporting missing/unexpected keys, shapes and dtypes."""
    own = model.state_dict()
    # a parameter a state-dict hook leaves out would keep its (possibly skipped) initialisation
    parameters = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    missing = sorted((set(own) | parameters) - set(state))
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
