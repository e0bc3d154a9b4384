"""Registry: components by name, lazily imported factories, listing with filters.

The registry knows no torch: factories are ``"module:attr"`` strings imported
only when a component is built. Plugins fill it through the
``mmzoo_register`` hook (see :mod:`mmzoo.plugins`).
"""

from __future__ import annotations

import contextlib
import difflib
import fnmatch
import importlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Iterator

from mmzoo.errors import AmbiguousNameError, MMZooError, PluginError, UnknownNameError

__all__ = [
    "Registry",
    "ComponentInfo",
    "ResolverInfo",
    "PluginInfo",
    "Resolved",
    "default_registry",
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


def _natural_key(text: str) -> list[Any]:
    return [int(piece) if piece.isdigit() else piece.lower() for piece in re.split(r"(\d+)", text)]


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


@dataclass
class PluginInfo:
    """What discovery learned about one plugin."""

    name: str
    distribution: str | None = None
    version: str | None = None
    module: str | None = None
    builtin: bool = False
    status: str = "ok"  # "ok" | "error" | "disabled"
    error: str | None = None
    components: list[str] = field(default_factory=list)
    load_seconds: float = 0.0
    heavy_imports: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class Resolved:
    """The outcome of looking up one name part."""

    kind: str
    name: str  # canonical spelling, e.g. "resnet18" for the alias "resnet"
    factory: Callable[..., Any]
    plugin: str
    modality: str | None


class Registry:
    """Encoders, fusions, resolvers, model presets and tasks by name.

    ``Registry()`` discovers installed plugins on first use;
    ``Registry(autoload=False)`` starts empty (tests register what they need
    with :meth:`register_plugin`).
    """

    def __init__(self, autoload: bool = True):
        self._components: dict[str, dict[str, list[ComponentInfo]]] = {k: {} for k in KINDS}
        self._aliases: dict[str, dict[str, tuple[str, str]]] = {k: {} for k in KINDS}
        self._resolvers: dict[str, ResolverInfo] = {}
        self._plugins: dict[str, PluginInfo] = {}
        self._current_plugin: str | None = None
        self._autoload = autoload
        self._loaded = not autoload
        self._load_error: PluginError | None = None
        self._lock = threading.RLock()

    # ------------------------------------------------------------ loading
    @property
    def plugins(self) -> dict[str, PluginInfo]:
        """What discovery learned about each plugin, by name (discovers on first use)."""
        self._ensure_loaded()
        return self._plugins

    def _ensure_loaded(self) -> None:
        if self._loaded:
            if self._load_error is not None:  # strict mode stays strict on every later use
                raise self._load_error
            return
        with self._lock:
            if self._loaded:
                return self._ensure_loaded()
            self._loaded = True
            from mmzoo.plugins import load_plugins

            try:
                load_plugins(self)
            except PluginError as exc:
                self._load_error = exc
                raise

    def register_plugin(self, plugin: Any, name: str | None = None, **info: Any) -> PluginInfo:
        """Register a module or object implementing ``mmzoo_register`` as a plugin.

        Errors are reported as described in :mod:`mmzoo.plugins`.
        """
        from mmzoo.plugins import register_plugin

        return register_plugin(self, plugin, name or getattr(plugin, "__name__", repr(plugin)), **info)

    @contextlib.contextmanager
    def _plugin_context(self, name: str) -> Iterator[None]:
        previous, self._current_plugin = self._current_plugin, name
        try:
            yield
        finally:
            self._current_plugin = previous

    def _owner(self) -> str:
        return self._current_plugin or LOCAL_PLUGIN

    def _remove_plugin(self, plugin: str) -> None:
        """Undo every registration of ``plugin`` (a plugin that failed half-way)."""
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

    def _record(self, label: str) -> None:
        info = self.plugins.get(self._owner())
        if info is not None:
            info.components.append(label)

    # ------------------------------------------------------------ adding
    def _add(self, kind: str, name: str, factory: Any, modality: str | None, description: str) -> None:
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
        info = ComponentInfo(kind, name, factory, self._owner(), modality, description)
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

    def add_model(self, name: str, spec: str, *, description: str = "") -> None:
        """Register a named preset: ``name`` stands for the full model name ``spec``."""
        from mmzoo.names import parse_name

        parse_name(spec)  # a preset must at least be well-formed
        self._add("model", name, spec, None, description or spec)

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
        self._ensure_loaded()
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
        self._ensure_loaded()
        target = self._aliases[kind].get(name, (name, None))[0]
        if kind == "encoder":
            if ":" in target:
                namespace, _, ident = target.partition(":")
                resolver = self._resolvers.get(namespace)
                if resolver is not None and not self.owns(kind, ident, namespace):
                    factory = self._call_resolver(resolver, ident)
                    if factory is None:
                        raise self._unknown(kind, target, namespace=resolver)
                    display = ident if resolver.default else target
                    return Resolved(kind, display, factory, resolver.plugin, resolver.modality)
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
        return Resolved(kind, entry.name, import_factory(entry.factory), entry.plugin, entry.modality)

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
        self._ensure_loaded()
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
        return sorted(chosen, key=_natural_key)

    def owns(self, kind: str, name: str, plugin: str | None) -> bool:
        """Whether ``plugin`` registered a component ``name`` of ``kind``."""
        self._ensure_loaded()
        return any(c.plugin == plugin for c in self._components[kind].get(name, []))


_DEFAULT: Registry | None = None
_DEFAULT_LOCK = threading.Lock()


def default_registry() -> Registry:
    """The process-wide registry, filled from installed plugins on first use."""
    global _DEFAULT
    with _DEFAULT_LOCK:
        if _DEFAULT is None:
            _DEFAULT = Registry()
        return _DEFAULT
