"""``mmzoo.load``: a model folder -> a model, above the builder and the file I/O.

Loading reads only the folder's own files (``config.json``, the safetensors
weights, the processor's data files): the architecture is rebuilt through the
registry from the names in ``config.json``, no module named in a file is
imported, nothing is unpickled and nothing is downloaded. Any failure is a
:class:`~mmzoo.errors.WeightsError` (or a :class:`~mmzoo.errors.PluginError`
when a plugin is missing) naming the folder and the part, the original
exception chained.
"""

from __future__ import annotations

import functools
import re
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, nullcontext
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Iterator, Mapping

from mmzoo.errors import InputError, MMZooError, NameSyntaxError, PluginError, UnknownNameError, WeightsError
from mmzoo.weights import (CONFIG_NAME, file_digest, load_state, names_staged_files, processor_path,
                           read_config, read_safetensors, refuse_pickle, weights_path)

__all__ = ["load", "loading_saved_model", "initialisation_is_overwritten"]

#: a distribution name as PEP 508 allows it (nothing a shell would interpret)
_DISTRIBUTION_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?")

#: None outside load(); else whether the load is strict (every parameter is then overwritten)
_LOADING: ContextVar[bool | None] = ContextVar("mmzoo_loading_saved_model", default=None)


def loading_saved_model() -> bool:
    """True while :func:`load` rebuilds a model: components must then take their
    architecture from the saved config only (no hub, no weight files)."""
    return _LOADING.get() is not None


def initialisation_is_overwritten() -> bool:
    """True while a strict :func:`load` rebuilds a model: every parameter is then
    overwritten from the folder, so random initialisation may be skipped."""
    return bool(_LOADING.get())


@contextmanager
def _loading(strict: bool) -> Iterator[None]:
    token = _LOADING.set(strict)
    try:
        yield
    finally:
        _LOADING.reset(token)


def create(name, num_classes: int = 0, *, pretrained: bool = False, registry=None, **kwargs):
    """Create a model by name (:func:`mmzoo.builder.create`); ``pretrained=True``
    returns a zoo entry (``"zoo:NAME"``, see :mod:`mmzoo.zoo`) with its trained
    weights, head and labels, as :func:`load` does."""
    from mmzoo.builder import create as build

    if not pretrained:
        return build(name, num_classes, registry=registry, **kwargs)
    name = str(name)
    if "/" in name or "+" in name:
        raise InputError(f"pretrained=True is for zoo entries (mmzoo.list_models(pretrained=True)); for "
                         f"an encoder's own pretrained weights write it in the name, e.g. "
                         f"'resnet18(pretrained=True)+minilm/concat' (got {name!r})")
    if kwargs:
        raise InputError(f"zoo entry {name!r} comes trained: {', '.join(sorted(kwargs))} cannot be changed; "
                         f"build its architecture untrained with mmzoo.create({name!r}, ...) instead")
    from mmzoo.zoo import entry_folder

    model = load(entry_folder(name, registry=registry), registry=registry)
    if num_classes not in (0, model.num_classes):
        raise InputError(f"zoo entry {name!r} was trained for {model.num_classes} classes "
                         f"({model.labels}); got num_classes={num_classes}. Use the entry as it is, or "
                         f"fine-tune a model of its name: mmzoo.create({model.name!r}, num_classes=...)")
    return model


def load(path: str | Path, *, strict: bool = True, verify_checksum: bool = True, registry=None):
    """Load a model saved with ``save_pretrained``, or a zoo entry ``"zoo:NAME"`` (returned in eval mode).

    The weights (and processor files) must match the SHA-256 recorded in
    ``config.json``; a config without one is refused unless
    ``verify_checksum=False``."""
    if isinstance(path, str) and path.startswith("zoo:"):
        from mmzoo.zoo import entry_folder

        directory = entry_folder(path, verify_checksum=verify_checksum, registry=registry)
    else:
        directory = Path(path)
    refuse_pickle(directory)
    retries = 5
    while True:
        before = _identity(directory / CONFIG_NAME)
        try:
            return _load_once(directory, strict, verify_checksum, registry)
        except Exception as exc:
            # a save into the folder switched versions (or renamed the new files) under us, so a
            # file vanished or changed mid-read, whatever error that surfaced as: read again
            if retries and before is not None and (_identity(directory / CONFIG_NAME) != before
                                                   or names_staged_files(directory)):
                retries -= 1
                continue
            if isinstance(exc, MMZooError):
                raise
            # anything else still names the folder
            raise WeightsError(f"cannot load the model in {directory}: {type(exc).__name__}: {exc}") from exc


def _identity(path: Path) -> tuple[int, int, int] | None:
    """Which config.json this is: every save writes a new file (a new inode)."""
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_dev, stat.st_mtime_ns


def _load_once(directory: Path, strict: bool, verify_checksum: bool, registry):
    config = read_config(directory)
    if verify_checksum and (not isinstance(config.get("weights_sha256"), str) or not config["weights_sha256"]):
        raise WeightsError(f"{directory / CONFIG_NAME} records no weights_sha256, so the weights cannot "
                           "be checked against it; re-save the model, or pass verify_checksum=False "
                           "if you trust the folder")
    weights = weights_path(directory, config)
    # hash the weights while the model is built (hashlib releases the GIL); a strict load
    # overwrites every parameter, so their random initialisation is skipped
    with ThreadPoolExecutor(1, thread_name_prefix="mmzoo-sha256") as pool:
        hashing = pool.submit(_settled_digest, directory, config, weights) if verify_checksum else None
        with _loading(strict), _skipping_fills(strict):
            model = _rebuild(directory, config, registry)
        digest = hashing.result() if hashing else None
    weights = weights_path(directory, config)  # a save may have renamed it to its usual name meanwhile
    state = read_safetensors(weights, sha256=config["weights_sha256"] if verify_checksum else None,
                             digest=digest)
    load_state(model, state, strict=strict, source=str(weights))
    processors = processor_path(directory, config, verify_checksum=verify_checksum)
    try:
        model.processor.load(processors)
    except MMZooError:
        raise
    except Exception as exc:  # a plugin's processor may raise anything
        raise WeightsError(f"cannot load the processor files in {processors}: "
                           f"{type(exc).__name__}: {exc}") from exc
    if verify_checksum:
        # the files were checked before they were read; a save that settled in between
        # renames the next version's files to these names, so check what is there now
        # (a version never comes back, so a match means every file read was this one)
        processor_path(directory, config, verify_checksum=True)
    return model.eval()


def _skipping_fills(strict: bool):
    if not strict:
        return nullcontext()
    from mmzoo._fills import SkipParameterFills  # torch: imported only once a model is loaded

    return SkipParameterFills()


def _settled_digest(directory: Path, config: Mapping[str, Any], weights: Path):
    """``file_digest(weights)``; a staged file renamed to its usual name between
    resolving and opening it is the same file under its new name."""
    try:
        return file_digest(weights)
    except WeightsError:
        settled = weights_path(directory, config)
        if settled == weights:
            raise
        return file_digest(settled)


def _rebuild(directory: Path, config: Mapping[str, Any], registry):
    from mmzoo.builder import create
    from mmzoo.names import ModelName, NamePart, parse_name
    from mmzoo.plugins import default_registry

    where = directory / CONFIG_NAME
    registry = registry or default_registry()
    try:
        order = config.get("inputs") or list(config["encoders"])
        if sorted(order) != sorted(config["encoders"]):
            raise WeightsError(f"{where}: 'inputs' {order} and 'encoders' {sorted(config['encoders'])} disagree")
        encoders = {slot: config["encoders"][slot] for slot in order}
        for slot in encoders:
            if not isinstance(slot, str) or not slot.isidentifier():
                raise WeightsError(f"{where}: input name {slot!r} is not an identifier")
        for entry in [*encoders.values(), config["fusion"]]:
            _check_plugin(entry, registry)
        # kwargs come from the canonical name, which keeps literal types
        # exactly (JSON would turn tuples into lists)
        canonical = parse_name(config["name"])
        if len(canonical.encoders) != len(encoders):
            raise WeightsError(f"{where}: the name lists {len(canonical.encoders)} encoders but "
                               f"'encoders' has {len(encoders)}")
        parts = [NamePart(_part_name(e, "encoder", registry), part.kwargs)
                 for e, part in zip(encoders.values(), canonical.encoders)]
        fusion = NamePart(_part_name(config["fusion"], "fusion", registry), canonical.fusion.kwargs)
        reload = {}
        for (slot, entry), part in zip(encoders.items(), parts):
            reload[slot] = _reload_kwargs(where, slot, entry, part, registry)
        head = config.get("head", {})
        model = create(ModelName(tuple(parts), fusion), int(config["num_classes"]),
                       drop_rate=head.get("drop_rate", 0.0), modality_dropout=head.get("modality_dropout", 0.0),
                       labels=config.get("labels"), registry=registry, _reload=reload)
    except PluginError:
        raise
    except NameSyntaxError as exc:
        raise WeightsError(f"{where} holds an invalid name: {exc}") from exc
    except UnknownNameError as exc:
        raise PluginError(f"cannot rebuild {config['name']!r} from {directory}: {exc}") from exc
    except WeightsError as exc:
        if str(directory) in str(exc):
            raise
        raise WeightsError(f"cannot rebuild {config['name']!r} from {directory}: {exc}") from exc
    except Exception as exc:  # InputError from a part, or a malformed field
        raise WeightsError(f"cannot rebuild {config['name']!r} from {directory} ({where} is malformed "
                           f"or was changed): {type(exc).__name__}: {exc}") from exc
    if list(model.encoders) != list(encoders):
        raise WeightsError(f"{directory}: rebuilt inputs {list(model.encoders)} differ from the saved "
                           f"{list(encoders)}")
    return model


def _weight_kwargs(registry, part) -> tuple[str, ...]:
    """The component's kwargs that name where initial weights come from."""
    factory = registry.resolve("encoder", part.name).factory
    while isinstance(factory, functools.partial):
        factory = factory.func
    return tuple(getattr(factory, "weight_kwargs", ()))


def _reload_kwargs(where: Path, slot: str, entry: Mapping[str, Any], part, registry) -> dict[str, Any]:
    """The saved kwargs that rebuild ``slot`` offline. A weight source never
    appears in a saved name, and the stored ones may only describe the
    architecture (``weight_kwargs`` the component lists, such as ``hf_config``)."""
    weight_kwargs = _weight_kwargs(registry, part)
    in_name = sorted(set(part.kwargs) & set(weight_kwargs))
    if in_name:
        raise WeightsError(f"{where}: the name of input {slot!r} sets {in_name}, which say where weights "
                           "come from; a saved model takes its weights from its own folder only")
    reload = entry.get("reload_kwargs") or {}
    if not isinstance(reload, dict):
        raise WeightsError(f"{where}: reload_kwargs of input {slot!r} must be an object")
    unexpected = sorted(set(reload) - set(weight_kwargs))
    if unexpected:
        raise WeightsError(f"{where}: reload_kwargs of input {slot!r} sets {unexpected}; only the "
                           f"component's {sorted(weight_kwargs)} may be stored there")
    return reload


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
