"""Build a :class:`~mmzoo.model.MultimodalModel` from a name."""

from __future__ import annotations

import difflib
import inspect
from typing import Any, Callable, Mapping

from mmzoo.errors import InputError, MMZooError, UnknownNameError
from mmzoo.names import ModelName, NamePart, format_part, parse_name
from mmzoo.registry import Registry, Resolved, default_registry

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


def build_part(resolved: Resolved, part: NamePart, skip: set[str], extra: Mapping[str, Any] | None = None
               ) -> tuple[Any, dict[str, Any]]:
    """Instantiate one component; return it with its canonical kwargs."""
    defaults, var_keyword, accepted = _signature_kwargs(resolved.factory, skip)
    kwargs = dict(part.kwargs)
    if not var_keyword:
        unknown = sorted(set(kwargs) - accepted)
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, sorted(accepted), n=1)
                hints.append(f"{key!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
            raise UnknownNameError(
                f"{resolved.kind} {resolved.name!r} has no argument {', '.join(hints)}; "
                f"it accepts {', '.join(sorted(accepted)) or 'no arguments'}"
            )
    spelled = format_part(resolved.name, kwargs)
    try:
        component = resolved.factory(**kwargs, **dict(extra or {}))
    except MMZooError:
        raise
    except Exception as exc:  # any constructor failure names the part, the original is chained
        raise InputError(
            f"cannot build {resolved.kind} {spelled!r}: {type(exc).__name__}: {exc}. "
            f"Check its arguments ({', '.join(sorted(kwargs)) or 'none given'})"
        ) from exc
    if component is None:
        raise InputError(f"cannot build {resolved.kind} {spelled!r}: its factory returned None "
                         f"(plugin {resolved.plugin!r} must return an nn.Module)")
    weight_only = set(getattr(component, "weight_kwargs", ()))
    canonical = {k: v for k, v in {**defaults, **kwargs}.items() if k not in weight_only}
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
           registry: Registry | None = None, _reload: Mapping[str, Mapping[str, Any]] | None = None):
    """Create a model from a name such as ``"resnet18+lstm/concat"``.

    ``num_classes=0`` returns the fused embedding (timm's convention). A
    preset from :func:`mmzoo.list_models` can be used instead of a full name.
    """
    registry = registry or default_registry()
    parsed = name if isinstance(name, ModelName) else parse_name(_expand_preset(name, registry))
    _reload = _reload or {}

    resolved_encoders = [registry.resolve("encoder", part.name) for part in parsed.encoders]
    resolved_fusion = registry.resolve("fusion", parsed.fusion.name)
    modalities = [r.modality or "input" for r in resolved_encoders]
    slots = _slot_names(modalities)

    from mmzoo.model import MultimodalModel

    encoders = {}
    config_encoders: dict[str, dict[str, Any]] = {}
    canonical_parts = []
    for slot, part, resolved in zip(slots, parsed.encoders, resolved_encoders):
        encoder, kwargs = build_part(resolved, part, set(), _reload.get(slot))
        if encoder.modality and encoder.modality != resolved.modality:
            raise MMZooError(f"encoder {resolved.name!r} says modality {encoder.modality!r} but was "
                             f"registered as {resolved.modality!r}")
        encoders[slot] = encoder
        canonical_parts.append(format_part(resolved.name, kwargs))
        config_encoders[slot] = _part_config(resolved, kwargs, registry)

    decision = bool(getattr(resolved_fusion.factory, "decision_level", False))
    extra = {"num_classes": num_classes} if decision else {}
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
    return MultimodalModel(encoders, fusion, num_classes, drop_rate=drop_rate,
                           modality_dropout=modality_dropout, name=canonical, config=config,
                           labels=labels)


def _part_config(resolved: Resolved, kwargs: Mapping[str, Any], registry: Registry) -> dict[str, Any]:
    plugin = registry.plugins.get(resolved.plugin)
    return {
        "name": resolved.name,
        "kwargs": dict(kwargs),
        "plugin": resolved.plugin,
        "distribution": plugin.distribution if plugin else None,
        "plugin_version": plugin.version if plugin else None,
    }
