"""Build a :class:`~mmzoo.model.MultimodalModel` from a name."""

from __future__ import annotations

import difflib
import inspect
import re
import warnings
from typing import Any, Callable, Mapping

from mmzoo.errors import InputError, MMZooError, UnknownNameError
from mmzoo.names import ModelName, NamePart, format_part, parse_name
from mmzoo.plugins import default_registry
from mmzoo.registry import Registry, Resolved

__all__ = ["create", "build_part"]


def _signature_kwargs(factory: Callable[..., Any], skip: set[str]) -> tuple[dict[str, Any], bool, set[str]]:
    """Defaults of a factory's keyword parameters, whether it takes ``**kwargs``,
    and the names of all its keyword parameters."""
    try:
        signature = inspect.signature(factory)
    except (TypeError, ValueError):
        return {}, True, set()
    defaults: dict[str, Any] = {}
    accepted: set[str] = set()
    var_keyword = False
    for parameter in signature.parameters.values():
        if parameter.kind is inspect.Parameter.VAR_KEYWORD:
            var_keyword = True
        elif parameter.name in skip or parameter.name == "self":
            continue
        elif parameter.kind in (inspect.Parameter.KEYWORD_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD):
            accepted.add(parameter.name)
            if parameter.default is not inspect.Parameter.empty:
                defaults[parameter.name] = parameter.default
    return defaults, var_keyword, accepted


_UNEXPECTED_KWARG = re.compile(r"unexpected keyword argument '(\w+)'")


def _no_such_argument(resolved: Resolved, unknown: list[str], accepted: set[str]) -> str:
    hints = []
    for key in unknown:
        close = difflib.get_close_matches(key, sorted(accepted), n=1)
        hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return f"{resolved.kind} {resolved.name!r} has no argument {', '.join(hints)}"


def build_part(resolved: Resolved, part: NamePart, skip: set[str], extra: Mapping[str, Any] | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """Instantiate one component; return it with its canonical kwargs."""
    defaults, var_keyword, accepted = _signature_kwargs(resolved.factory, skip)
    kwargs = dict(part.kwargs)
    freeze = kwargs.pop("freeze", False)  # generic: any encoder part (see Encoder.freeze)
    unknown = sorted(set(kwargs) - accepted)
    if unknown and not var_keyword:
        raise UnknownNameError(f"{_no_such_argument(resolved, unknown, accepted)}; "
                               f"it accepts {', '.join(sorted(accepted)) or 'no arguments'}")
    spelled = format_part(resolved.name, kwargs)
    try:
        with warnings.catch_warnings():  # a zero-element parameter is refused below, with the part named
            warnings.filterwarnings("ignore", "Initializing zero-element tensors is a no-op")
            component = resolved.factory(**kwargs, **dict(extra or {}))
    except MMZooError:
        raise
    except Exception as exc:  # any constructor failure names the part, the original is chained
        rejected = _UNEXPECTED_KWARG.search(str(exc)) if isinstance(exc, TypeError) else None
        if rejected and rejected.group(1) in unknown:  # a **kwargs factory passed it on and it was refused
            raise UnknownNameError(
                f"{_no_such_argument(resolved, [rejected.group(1)], accepted)}: what it passes "
                f"its kwargs to refused it ({exc}); check the spelling against that library's arguments"
            ) from exc
        raise InputError(
            f"cannot build {resolved.kind} {spelled!r}: {type(exc).__name__}: {exc}. "
            f"Check its arguments ({', '.join(sorted(kwargs)) or 'none given'})"
        ) from exc
    if component is None:
        raise InputError(f"cannot build {resolved.kind} {spelled!r}: its factory returned None "
                         f"(plugin {resolved.plugin!r} must return an nn.Module)")
    empty = next(((n, p) for n, p in component.named_parameters() if p.numel() == 0), None)
    if empty is not None:  # e.g. timm's channels=(0, 8): a layer of no units, which cannot learn
        raise InputError(f"cannot build {resolved.kind} {spelled!r}: its parameter {empty[0]!r} would have "
                         f"no elements (shape {tuple(empty[1].shape)}); a size among its arguments "
                         f"({', '.join(sorted(kwargs)) or 'none given'}) is 0")
    if freeze:
        if not callable(getattr(component, "freeze", None)):
            raise InputError(f"cannot freeze {resolved.kind} {spelled!r}: freeze=True is for encoders")
        component.freeze()
    weight_only = set(getattr(component, "weight_kwargs", ()))
    canonical = {k: v for k, v in {**defaults, **kwargs}.items() if k not in weight_only}
    if freeze:
        canonical["freeze"] = True
    return component, canonical


def _slot_names(modalities: list[str]) -> list[str]:
    """``["image", "text", "image"]`` -> ``["image", "text", "image_2"]``."""
    seen: dict[str, int] = {}
    slots = []
    for modality in modalities:
        seen[modality] = seen.get(modality, 0) + 1
        slots.append(modality if seen[modality] == 1 else f"{modality}_{seen[modality]}")
    return slots


def _expand_preset(name: str, registry: Registry) -> str:
    if "/" in name:
        return name
    if "+" in name or "(" in name:
        parse_name(name)  # raises the syntax error explaining the missing fusion
    try:
        entry = registry.get("model", name)
    except UnknownNameError as exc:
        raise UnknownNameError(f"{exc} (a full model name has encoders and a fusion, "
                               "e.g. 'resnet18+lstm/concat')") from None
    return str(entry.factory)


def create(name: str | ModelName, num_classes: int = 0, *, drop_rate: float = 0.0,
           modality_dropout: float = 0.0, labels: list[str] | None = None,
           registry: Registry | None = None,
           _reload: Mapping[str, Mapping[str, Any]] | None = None):
    """Create a model from a name such as ``"resnet18+lstm/concat"``.

    ``num_classes=0`` returns the fused embedding (timm's convention). A
    preset from :func:`mmzoo.list_models` can be used instead of a full name.
    A model past ``MMZOO_MAX_PARAMS`` parameters is refused before it is
    allocated (see :mod:`mmzoo._limits`). This builds an architecture;
    :func:`mmzoo.create` (``mmzoo.hub.create``) adds ``pretrained=True`` for zoo entries.
    """
    from mmzoo import _limits

    registry = registry or default_registry()
    parsed = name if isinstance(name, ModelName) else parse_name(_expand_preset(name, registry))
    resolved_encoders = [registry.resolve("encoder", part.name) for part in parsed.encoders]
    resolved_fusion = registry.resolve("fusion", parsed.fusion.name)
    modalities = [r.modality or "input" for r in resolved_encoders]
    for part, modality in zip(parsed.encoders, modalities):
        if not modality.isidentifier():  # it names the input and a folder of saved processor files
            raise InputError(f"encoder {part.name!r} is registered with modality {modality!r}, which is not "
                             "an identifier (letters, digits, '_'); its plugin must register a plain name")

    def build(budget):
        return _assemble(parsed, resolved_encoders, resolved_fusion, registry, budget, _reload or {},
                         num_classes=num_classes, drop_rate=drop_rate, modality_dropout=modality_dropout,
                         labels=labels)

    limit = _limits.max_params()
    if limit != float("inf"):
        try:
            with _limits.counting(limit) as budget, _limits.dry_run():
                build(budget)
        except _limits.ModelTooLarge:
            raise
        except Exception:  # a part that cannot be built on the meta device (it reads its
            pass           # weights, say) is built for real below, still counted
    with _limits.counting(limit) as budget:
        return build(budget)


def _assemble(parsed: ModelName, resolved_encoders: list[Resolved], resolved_fusion: Resolved,
              registry: Registry, budget: Any, reload: Mapping[str, Mapping[str, Any]], *,
              num_classes: int, drop_rate: float, modality_dropout: float, labels: list[str] | None):
    from mmzoo.model import MultimodalModel

    slots = _slot_names([r.modality or "input" for r in resolved_encoders])
    encoders = {}
    config_encoders: dict[str, dict[str, Any]] = {}
    canonical_parts = []
    for slot, part, resolved in zip(slots, parsed.encoders, resolved_encoders):
        budget.part = f"encoder {str(part)!r}"
        encoder, kwargs = build_part(resolved, part, set(), reload.get(slot))
        if encoder.modality and encoder.modality != resolved.modality:
            raise MMZooError(f"encoder {resolved.name!r} says modality {encoder.modality!r} but was "
                             f"registered as {resolved.modality!r}")
        encoders[slot] = encoder
        # a part named after a machine-local source (hf:/a/folder) says how to spell it anywhere
        name, kwargs = getattr(encoder, "portable_part", lambda n, k: (n, k))(resolved.name, kwargs)
        canonical_parts.append(format_part(name, kwargs))
        config_encoders[slot] = _part_config(resolved, kwargs, registry, name=name)
        weights = {k: v for k, v in part.kwargs.items() if k in getattr(encoder, "weight_kwargs", ())}
        if name != resolved.name:
            weights["source"] = resolved.name
        if weights:  # where the initial weights came from (not needed to rebuild)
            config_encoders[slot]["weight_kwargs"] = weights

    decision = bool(getattr(resolved_fusion.factory, "decision_level", False))
    extra = {"num_classes": num_classes} if decision else {}
    budget.part = f"fusion {str(parsed.fusion)!r}"
    fusion, fusion_kwargs = build_part(
        resolved_fusion, parsed.fusion, {"inputs", "num_classes"},
        {"inputs": {slot: enc.spec() for slot, enc in encoders.items()}, **extra},
    )
    canonical = "+".join(canonical_parts) + "/" + format_part(resolved_fusion.name, fusion_kwargs)
    config = {
        "name": canonical,
        "encoders": config_encoders,
        "fusion": _part_config(resolved_fusion, fusion_kwargs, registry),
        "head": {"drop_rate": drop_rate, "modality_dropout": modality_dropout},
    }
    budget.part = "the head"
    return MultimodalModel(encoders, fusion, num_classes, drop_rate=drop_rate,
                           modality_dropout=modality_dropout, name=canonical, config=config,
                           labels=labels)


def _part_config(resolved: Resolved, kwargs: Mapping[str, Any], registry: Registry, name: str | None = None
                 ) -> dict[str, Any]:
    plugin = registry.plugins.get(resolved.plugin)
    return {
        "name": name or resolved.name,
        "kwargs": dict(kwargs),
        "plugin": resolved.plugin,
        "distribution": plugin.distribution if plugin else None,
        "plugin_version": plugin.version if plugin else None,
    }
