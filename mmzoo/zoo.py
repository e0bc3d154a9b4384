"""Zoo entries: named models that come with trained weights.

A plugin registers one with ``registry.add_model(name, spec, weights=FOLDER)``;
FOLDER is the model saved with ``save_pretrained`` plus a ``card.json``
(canonical name, task and split, test accuracy and macro-F1 with the seed,
the training command, the weights' SHA-256, the data's license). The
``mmzoo-zoo`` distribution (``plugins/mmzoo-zoo``) ships entries this way as
package data, so they work offline. ``zoo:NAME`` names an entry:

    mmzoo.create("zoo:NAME", pretrained=True)   # == mmzoo.load("zoo:NAME")
    mmzoo.create("zoo:NAME")                    # the same architecture, untrained

An entry may store its weights in half precision (``"weights_dtype":
"float16"`` in its card, to fit the 10 MB budget); the first load writes a
float32 copy of the folder (weights upcast, everything else as shipped,
checked against the card's SHA-256) under ``$MMZOO_CACHE/zoo/`` (default
``~/.cache/mmzoo/zoo/``) and loads that.
"""

from __future__ import annotations

import fnmatch
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from mmzoo.errors import UnknownNameError, WeightsError

__all__ = ["PREFIX", "CARD_NAME", "CACHE_ENV", "cache_root", "entry", "has_weights", "card", "cards",
           "entry_folder", "format_cards"]

PREFIX = "zoo:"
CARD_NAME = "card.json"
CACHE_ENV = "MMZOO_CACHE"


def entry(name: str, registry):
    """The registered model preset ``name`` (``zoo:NAME``, ``plugin:NAME`` or ``NAME``) that has weights."""
    try:
        info = registry.get("model", name)
    except UnknownNameError:
        if not name.startswith(PREFIX):
            raise
        info = registry.get("model", name[len(PREFIX):])  # an entry of another plugin than 'zoo'
    if not info.weights:
        raise WeightsError(f"model {name!r} comes without trained weights; "
                           "mmzoo.list_models(pretrained=True) lists the entries that have them")
    return info


def has_weights(name: str, registry) -> bool:
    try:
        return bool(registry.get("model", name).weights)
    except UnknownNameError:
        return False


def card(info) -> dict[str, Any]:
    """The ``card.json`` of a zoo entry (its scores and provenance)."""
    path = Path(info.weights) / CARD_NAME
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise WeightsError(f"zoo entry {info.qualified_name!r}: cannot read {path}: {exc}; "
                           f"reinstall the distribution of plugin {info.plugin!r}") from exc
    if not isinstance(data, dict):
        raise WeightsError(f"zoo entry {info.qualified_name!r}: {path} must hold a JSON object")
    return data


def cards(filter: str = "", registry=None) -> list[dict[str, Any]]:
    """The card of every zoo entry matching ``filter``, with ``entry`` = its name."""
    from mmzoo.plugins import default_registry

    registry = registry or default_registry()
    out = []
    for name in registry.list("model", "", qualified=True):
        info = registry.get("model", name)
        if info.weights and (not filter or fnmatch.fnmatchcase(info.name, filter)):
            out.append({**card(info), "entry": info.name, "plugin": info.plugin})
    return out


def entry_folder(name: str, *, verify_checksum: bool = True, registry=None) -> Path:
    """The saved-model folder of zoo entry ``name``, checked against its card."""
    from mmzoo.plugins import default_registry
    from mmzoo.weights import CONFIG_NAME

    registry = registry or default_registry()
    info = entry(name, registry)
    folder = Path(info.weights)
    expected = card(info).get("weights_sha256")
    try:
        recorded = json.loads((folder / CONFIG_NAME).read_text(encoding="utf-8")).get("weights_sha256")
    except (OSError, ValueError) as exc:
        raise WeightsError(f"zoo entry {name!r}: cannot read {folder / CONFIG_NAME}: {exc}") from exc
    if verify_checksum and expected != recorded:
        raise WeightsError(f"zoo entry {name!r}: its card names weights {expected} but {folder} holds "
                           f"{recorded}; reinstall the distribution of plugin {info.plugin!r}")
    dtype = card(info).get("weights_dtype", "float32")
    if dtype == "float16":
        return _float32_copy(name, folder, expected, info.plugin)
    if dtype != "float32":
        raise WeightsError(f"zoo entry {name!r}: weights_dtype {dtype!r} in its card is not float32 or float16")
    return folder


def cache_root() -> Path:
    """mmzoo's cache folder (``$MMZOO_CACHE``, default ``~/.cache/mmzoo``)."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "mmzoo").expanduser()


def cache_dir() -> Path:
    """Where float32 copies of half-precision entries are kept (``$MMZOO_CACHE/zoo``)."""
    return cache_root() / "zoo"


def _float32_copy(name: str, folder: Path, sha256: str, plugin: str) -> Path:
    """The entry's folder with its float16 weights upcast to float32, made once
    (atomically: a folder renamed into place) and reused while it is complete."""
    from safetensors.torch import load, save

    from mmzoo.weights import CONFIG_NAME

    target = cache_dir() / f"{folder.name}-{sha256[:16]}"
    if (target / CONFIG_NAME).is_file():
        return target
    raw = (folder / "model.safetensors").read_bytes()
    if hashlib.sha256(raw).hexdigest() != sha256:
        raise WeightsError(f"zoo entry {name!r}: {folder / 'model.safetensors'} does not match the SHA-256 "
                           f"of its card; reinstall the distribution of plugin {plugin!r}")
    state = {k: v.float() if v.is_floating_point() else v for k, v in load(raw).items()}
    blob = save(state)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    except OSError as exc:
        raise WeightsError(f"zoo entry {name!r} stores float16 weights and needs a float32 copy in "
                           f"{target.parent}, which cannot be written ({exc}); set ${CACHE_ENV} to a "
                           "writable folder") from exc
    try:
        shutil.copytree(folder, staging, dirs_exist_ok=True)
        (staging / "model.safetensors").write_bytes(blob)
        config = json.loads((staging / CONFIG_NAME).read_text(encoding="utf-8"))
        config["weights_sha256"] = hashlib.sha256(blob).hexdigest()
        (staging / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
        try:
            staging.rename(target)
        except OSError:  # another process made it first
            if not (target / CONFIG_NAME).is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def format_cards(filter: str = "", registry=None) -> str:
    """The table ``mmzoo list models --pretrained`` prints."""
    rows = [(f"zoo:{c['entry']}" if c["plugin"] == "zoo" else f"{c['plugin']}:{c['entry']}", c.get("task", "?"),
             f"{c.get('test_accuracy', float('nan')):.4f}", f"{c.get('test_macro_f1', float('nan')):.4f}",
             str(c.get("seed", "?")), f"{c.get('weights_bytes', 0) / 1e6:.2f} MB", c.get("name", "?"))
            for c in cards(filter, registry)]
    if not rows:
        return "no zoo entries installed (pip install ./plugins/mmzoo-zoo)"
    header = ("ENTRY", "TASK", "TEST ACC", "MACRO-F1", "SEED", "WEIGHTS", "NAME")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(6)]
    return "\n".join("  ".join(f"{v:<{w}}" for v, w in zip(row[:6], widths)) + "  " + row[6]
                     for row in [header, *rows])
