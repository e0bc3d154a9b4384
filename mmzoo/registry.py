"""Registry: components by name, lazily imported factories, listing with filters.

A passive container: it knows no torch and no plugin discovery. Factories
are ``"module:attr"`` strings imported only when a component is built.
:mod:`mmzoo.plugins` fills registries through the ``mmzoo_register`` hook,
each plugin inside :meth:`Registry.plugin` (its registrations roll back if it
fails).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Iterator

from mmzoo._sort import natural_key
from mmzoo.errors import AmbiguousNameError, MMZooError, PluginError, UnknownNameError

__all__ = [
    "Registry",
    "ComponentInfo",
    "ResolverInfo",
    "Resolved",
    "import_factory",
]

KINDS = ("encoder", "fusion", "model", "task")
_SHORT_NAME_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.\-]*\Z")
_FACTORY_RE = re.compile(r"[A-Za-z_][\w.]*:[A-Za-z_][\w.]*\Z")
LOCAL_PLUGIN = "local"


def import_factory(spec: str | Callable[..., Any]) -> Callable[..., Any]:
    """Import ``"package.module:attr"`` (an installed module registered by a
    plugin, never a path read from a file) or pass a callable through."""
    if callable(spec):
        return spec
    module_name, _, attr = spec.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for piece in attr.split("."):
            obj = getattr(obj, piece)
    except (ImportError, AttributeError) as exc:
        raise PluginError(
            f"cannot import factory {spec!r}: {type(exc).__name__}: {exc}. "
            "Check that the plugin that registered it is installed completely."
        ) from exc
    return obj


def _matches(name: str, filters: str | Iterable[str] | None) -> bool:
    if not filters:
        return True
    patterns = [filters] if isinstance(filters, str) else list(filters)
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)


@dataclass(frozen=True)
class ComponentInfo:
    """A named component: an encoder, fusion, preset model or task."""

    kind: str
    name: str
    factory: str | Callable[..., Any]
    plugin: str
    modality: str | None = None
    description: str = ""
    weights: str | None = None  # model presets only: a saved model folder (a zoo entry)

    @property
    def qualified_name(self) -> str:
        return f"{self.plugin}:{self.name}"


@dataclass(frozen=True)
class ResolverInfo:
    """An open namespace (``timm:``, ``hf:``): ``resolve(id)`` returns a factory or None."""

    namespace: str
    resolve: str | Callable[[str], Any]
    plugin: str
    modality: str
    lister: str | Callable[..., Iterable[str]] | None = None
    default: bool = False
    description: str = ""


@dataclass(frozen=True)
class Resolved:
    """The outcome of looking up one name part."""

    kind: str
    name: str  # canonical spelling: "resnet18" for the alias "resnet", "alpha:twin" when "twin" is ambiguous
    factory: Callable[..., Any]
    plugin: str
    modality: str | None


class Registry:
    """Encoders, fusions, resolvers, model presets and tasks by name.

    ``Registry()`` starts empty; :func:`mmzoo.plugins.discover` returns one
    filled from the installed plugins, :func:`mmzoo.plugins.register_plugin`
    adds one plugin.
    """

    def __init__(self) -> None:
        self._components: dict[str, dict[str, list[ComponentInfo]]] = {k: {} for k in KINDS}
        self._aliases: dict[str, dict[str, tuple[str, str]]] = {k: {} for k in KINDS}
        self._resolvers: dict[str, ResolverInfo] = {}
        self._registered: dict[str, list[str]] = {}  # plugin -> labels of what it registered
        self._current_plugin: str | None = None
        #: what discovery recorded about each plugin, by name (:class:`mmzoo.plugins.PluginInfo`);
        #: the registry reads only ``status``, ``error`` and ``name`` (for its error messages)
        self.plugins: dict[str, Any] = {}

    # ------------------------------------------------------------ plugins
    @contextlib.contextmanager
    def plugin(self, name: str) -> Iterator[list[str]]:
        """Register what the block adds as plugin ``name``: all or nothing.

        Yields the labels (``"fusion:concat"``) of what the plugin has
        registered. If the block raises (anything, ``SystemExit`` included),
        every registration it made is undone and the exception propagates.
        """
        if name in self._registered:
            raise PluginError(f"plugin {name!r} is already registered in this registry")
        registered = self._registered[name] = []
        previous, self._current_plugin = self._current_plugin, name
        try:
            yield registered
        except BaseException:
            self._forget(name)
            raise
        finally:
            self._current_plugin = previous

    def _owner(self) -> str:
        return self._current_plugin or LOCAL_PLUGIN

    def _forget(self, plugin: str) -> None:
        """Undo every registration of ``plugin``."""
        for kind in KINDS:
            table = self._components[kind]
            for name in list(table):
                table[name] = [c for c in table[name] if c.plugin != plugin]
                if not table[name]:
                    del table[name]
            aliases = self._aliases[kind]
            for alias in [a for a, (_, owner) in aliases.items() if owner == plugin]:
                del aliases[alias]
        for namespace in [n for n, r in self._resolvers.items() if r.plugin == plugin]:
            del self._resolvers[namespace]
        del self._registered[plugin]

    def _record(self, label: str) -> None:
        self._registered.setdefault(self._owner(), []).append(label)

    # ------------------------------------------------------------ adding
    def _add(self, kind: str, name: str, factory: Any, modality: str | None, description: str,
             weights: str | None = None) -> None:
        if not isinstance(name, str) or not _SHORT_NAME_RE.match(name):
            raise PluginError(
                f"cannot register {kind} {name!r}: names use letters, digits, '_', '.' and '-' "
                "and start with a letter, digit or '_'"
            )
        if kind != "model" and isinstance(factory, str) and not _FACTORY_RE.match(factory):
            raise PluginError(
                f"cannot register {kind} {name!r}: factory {factory!r} must be 'module:attr'"
            )
        if not (isinstance(factory, str) or callable(factory)):
            raise PluginError(f"cannot register {kind} {name!r}: factory must be 'module:attr' or callable")
        info = ComponentInfo(kind, name, factory, self._owner(), modality, description, weights)
        entries = self._components[kind].setdefault(name, [])
        if any(e.plugin == info.plugin for e in entries):
            raise PluginError(f"plugin {info.plugin!r} registers {kind} {name!r} twice")
        entries.append(info)
        self._record(f"{kind}:{name}")

    def add_encoder(self, name: str, factory: str | Callable[..., Any], *, modality: str,
                    description: str = "") -> None:
        """Register an encoder class or factory for inputs of ``modality``."""
        if not modality:
            raise PluginError(f"encoder {name!r} needs a modality (e.g. 'image', 'text')")
        self._add("encoder", name, factory, modality, description)

    def add_fusion(self, name: str, factory: str | Callable[..., Any], *, description: str = "") -> None:
        """Register a fusion class (a :class:`mmzoo.Fusion` subclass)."""
        self._add("fusion", name, factory, None, description)

    def add_task(self, name: str, factory: str | Callable[..., Any], *, description: str = "") -> None:
        """Register a benchmark task."""
        self._add("task", name, factory, None, description)

    def add_model(self, name: str, spec: str, *, description: str = "", weights: str | None = None) -> None:
        """Register a named preset: ``name`` stands for the full model name ``spec``.

        ``weights``: the folder of that model saved with ``save_pretrained``
        (with a ``card.json``), making it a zoo entry: ``create(name,
        pretrained=True)`` and ``load("zoo:name")`` return it trained."""
        from mmzoo.names import parse_name

        parse_name(spec)  # a preset must at least be well-formed
        if weights is not None and not isinstance(weights, str):
            raise PluginError(f"cannot register model {name!r}: weights must be a folder path (str)")
        self._add("model", name, spec, None, description or spec, weights)

    def add_alias(self, alias: str, target: str, *, kind: str = "encoder") -> None:
        """Let ``alias`` stand for the component name ``target`` (e.g. resnet -> resnet18)."""
        if kind not in KINDS:
            raise PluginError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        if not _SHORT_NAME_RE.match(alias):
            raise PluginError(f"cannot register alias {alias!r}: not a valid short name")
        if alias in self._aliases[kind]:
            other = self._aliases[kind][alias][1]
            raise PluginError(f"alias {alias!r} is already registered by plugin {other!r}")
        self._aliases[kind][alias] = (target, self._owner())
        self._record(f"alias:{alias}")

    def add_resolver(self, namespace: str, resolve: str | Callable[[str], Any], *, modality: str,
                     lister: str | Callable[..., Iterable[str]] | None = None,
                     default: bool = False, description: str = "") -> None:
        """Register an open namespace of encoders.

        ``resolve(id)`` returns a factory (called with the part's kwargs) or
        None; ``lister(filter)`` yields ids for :meth:`list_encoders`. With
        ``default=True`` bare names no one registered fall through to it.
        """
        if not _SHORT_NAME_RE.match(namespace):
            raise PluginError(f"cannot register namespace {namespace!r}: not a valid short name")
        if namespace in self._resolvers:
            other = self._resolvers[namespace].plugin
            raise PluginError(f"namespace {namespace!r} is already registered by plugin {other!r}")
        self._resolvers[namespace] = ResolverInfo(
            namespace, resolve, self._owner(), modality, lister, default, description
        )
        self._record(f"namespace:{namespace}")

    # ------------------------------------------------------------ lookup
    def get(self, kind: str, name: str) -> ComponentInfo:
        """The registered component ``name`` (short, qualified ``plugin:name`` or alias)."""
        name = self._aliases[kind].get(name, (name, None))[0]
        if ":" in name:
            plugin, _, short = name.partition(":")
            for entry in self._components[kind].get(short, []):
                if entry.plugin == plugin:
                    return entry
            raise self._unknown(kind, name)
        entries = self._components[kind].get(name, [])
        if len(entries) > 1:
            raise self._ambiguous(kind, name, [e.qualified_name for e in entries])
        if not entries:
            raise self._unknown(kind, name)
        return entries[0]

    def resolve(self, kind: str, name: str) -> Resolved:
        """Resolve an encoder or fusion name to a callable factory."""
        target = self._aliases[kind].get(name, (name, None))[0]
        if kind == "encoder":
            if ":" in target:
                namespace, _, ident = target.partition(":")
                resolver = self._resolvers.get(namespace)
                if resolver is not None and not self.owns(kind, ident, namespace):
                    factory = self._call_resolver(resolver, ident)
                    if factory is None:
                        raise self._unknown(kind, target, namespace=resolver)
                    bare = resolver.default and self._only_answer(kind, ident, resolver)
                    return Resolved(kind, ident if bare else target, factory, resolver.plugin,
                                    resolver.modality)
            elif target not in self._components[kind]:
                hits = []
                for resolver in self._resolvers.values():
                    if resolver.default:
                        factory = self._call_resolver(resolver, target)
                        if factory is not None:
                            hits.append((resolver, factory))
                if len(hits) > 1:
                    raise self._ambiguous(kind, target, [f"{r.namespace}:{target}" for r, _ in hits])
                if hits:
                    resolver, factory = hits[0]
                    return Resolved(kind, target, factory, resolver.plugin, resolver.modality)
        entry = self.get(kind, target)
        return Resolved(kind, self._canonical(entry), import_factory(entry.factory), entry.plugin,
                        entry.modality)

    def _canonical(self, entry: ComponentInfo) -> str:
        """The short name if it finds ``entry`` again in this registry, else ``plugin:name``."""
        unique = len(self._components[entry.kind][entry.name]) == 1 and \
            entry.name not in self._aliases[entry.kind]
        return entry.name if unique else entry.qualified_name

    def _only_answer(self, kind: str, ident: str, resolver: ResolverInfo) -> bool:
        """Whether the bare ``ident`` resolves to ``resolver`` alone (no component,
        alias or other default namespace claims it)."""
        if ident in self._components[kind] or ident in self._aliases[kind]:
            return False
        return not any(other.default and other is not resolver and self._call_resolver(other, ident) is not None
                       for other in self._resolvers.values())

    def _call_resolver(self, resolver: ResolverInfo, ident: str) -> Any:
        try:
            return import_factory(resolver.resolve)(ident)
        except MMZooError:
            raise
        except Exception as exc:  # a resolver must answer None, not crash
            raise PluginError(
                f"resolver of namespace {resolver.namespace!r} (plugin {resolver.plugin!r}) "
                f"failed on {ident!r}: {type(exc).__name__}: {exc}"
            ) from exc

    def _ambiguous(self, kind: str, name: str, qualified: list[str]) -> AmbiguousNameError:
        return AmbiguousNameError(
            f"{kind} {name!r} is registered by more than one plugin: {', '.join(qualified)}. "
            f"Use one of these qualified names instead, or disable a plugin with "
            f"MMZOO_DISABLE_PLUGINS."
        )

    def _unknown(self, kind: str, name: str, namespace: ResolverInfo | None = None) -> UnknownNameError:
        known = self._names(kind)
        close = difflib.get_close_matches(name.split(":")[-1], known, n=3, cutoff=0.6)
        if namespace is not None:
            message = f"{kind} {name!r} is not known to namespace {namespace.namespace!r}"
        else:
            message = f"unknown {kind} {name!r}"
        if close:
            message += "; did you mean " + " or ".join(repr(c) for c in close) + "?"
        else:
            message += f"; see mmzoo.list_{kind}s() for the names available"
        failed = [p for p in self.plugins.values() if p.status == "error"]
        if failed:
            message += " Plugins that failed to load (one may provide it): " + "; ".join(
                f"{p.name}: {p.error}" for p in failed
            )
        return UnknownNameError(message)

    def _names(self, kind: str) -> list[str]:
        names = set(self._components[kind]) | set(self._aliases[kind])
        if kind == "encoder":
            for resolver in self._resolvers.values():
                if resolver.lister is not None and resolver.default:
                    try:
                        names.update(import_factory(resolver.lister)("*"))
                    except Exception:  # a listing problem must not hide the real error
                        pass
        return sorted(names)

    # ------------------------------------------------------------ listing
    def list(self, kind: str, filter: str | Iterable[str] | None = "", *,
             exclude_filters: str | Iterable[str] | None = None, modality: str | None = None,
             qualified: bool = False) -> list[str]:
        """Names of ``kind`` matching fnmatch ``filter``, naturally sorted."""
        if kind not in KINDS:
            raise MMZooError(f"unknown kind {kind!r}; use one of {', '.join(KINDS)}")
        names: set[str] = set()
        for name, entries in self._components[kind].items():
            for entry in entries:
                if modality is None or entry.modality == modality:
                    names.add(entry.qualified_name if qualified else name)
        if kind == "encoder":
            for resolver in self._resolvers.values():
                if resolver.lister is None or (modality is not None and resolver.modality != modality):
                    continue
                ids = import_factory(resolver.lister)(filter or "*")
                names.update(i if resolver.default else f"{resolver.namespace}:{i}" for i in ids)
        chosen = [n for n in names if _matches(n, filter)]
        if exclude_filters:
            chosen = [n for n in chosen if not _matches(n, exclude_filters)]
        return sorted(chosen, key=natural_key)

    def owns(self, kind: str, name: str, plugin: str | None) -> bool:
        """Whether ``plugin`` registered a component ``name`` of ``kind``."""
        return any(c.plugin == plugin for c in self._components[kind].get(name, []))
