"""Typed loading of dataclass configs from YAML plus ``section.key=value`` overrides.

The loader knows nothing about the project's sections: it walks dataclass fields and their
type hints, so every section gets the same checks (unknown keys with suggestions, wrong types
with the expected type) and the same error format.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from pathlib import Path
from typing import Any, Literal, Mapping, Sequence, TypeVar, Union

import yaml

from megatron_seqpt.errors import UserError

T = TypeVar("T")


class ConfigError(UserError):
    """A config the user must fix: says where (file, key) and what to do."""

    def __init__(self, message: str, *, key: str | None = None, source: str | None = None):
        self.message = message
        self.key = key
        self.source = source
        where = ", ".join(part for part in (source, f"key '{key}'" if key else None) if part)
        super().__init__(f"{where}: {message}" if where else message)


def _dataclass_in(hint: Any) -> type | None:
    """The dataclass type a hint refers to (also through Optional), else None."""
    if dataclasses.is_dataclass(hint):
        return hint
    if _is_union(hint):
        inner = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(inner) == 1 and dataclasses.is_dataclass(inner[0]):
            return inner[0]
    return None


def _is_union(hint: Any) -> bool:
    return typing.get_origin(hint) in (Union, types.UnionType)


def _type_name(hint: Any) -> str:
    if hint is type(None):
        return "null"
    if dataclasses.is_dataclass(hint):
        return "a mapping of settings (a config section)"
    if isinstance(hint, type) and not typing.get_args(hint):
        return {"int": "an integer", "float": "a number", "bool": "true or false",
                "str": "a string"}.get(hint.__name__, hint.__name__)
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if _is_union(hint):
        return " or ".join(_type_name(a) for a in args)
    if origin in (list, Sequence, tuple):
        return f"a list of {_type_name(args[0])}" if args else "a list"
    if origin in (dict, Mapping):
        return f"a mapping of {_type_name(args[0])} to {_type_name(args[1])}"
    return str(hint)


def _suggest(name: str, valid: Sequence[str], prefix: str = "") -> str:
    close = difflib.get_close_matches(name, valid, n=3, cutoff=0.6)
    if close:
        return "did you mean " + " or ".join(f"'{prefix}{c}'" for c in close) + "?"
    return f"valid keys{' under ' + prefix.rstrip('.') if prefix else ''}: " + \
        ", ".join(sorted(valid))


def _coerce(value: Any, hint: Any, key: str, source: str | None) -> Any:
    """Check ``value`` against ``hint`` and convert where the conversion is lossless."""

    def wrong() -> ConfigError:
        return ConfigError(f"got {value!r} ({type(value).__name__}), expected {_type_name(hint)}",
                           key=key, source=source)

    if hint is Any:
        return value
    sub = _dataclass_in(hint)
    if sub is not None and (value is not None or not _is_union(hint)):
        if not isinstance(value, Mapping):
            raise wrong()
        return build(sub, value, prefix=key + ".", source=source)
    if _is_union(hint):
        args = typing.get_args(hint)
        if value is None:
            if type(None) in args:
                return None
            raise wrong()
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key, source)
            except ConfigError:
                continue
        raise wrong()
    origin = typing.get_origin(hint)
    if origin is Literal:
        if value in typing.get_args(hint):
            return value
        raise ConfigError(f"got {value!r}, expected {_type_name(hint)}", key=key, source=source)
    if origin in (list, Sequence, tuple):
        if isinstance(value, (str, bytes)) or not isinstance(value, Sequence):
            raise wrong()
        (item_hint,) = typing.get_args(hint)[:1] or (Any,)
        return [_coerce(v, item_hint, f"{key}[{i}]", source) for i, v in enumerate(value)]
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise wrong()
        key_hint, value_hint = typing.get_args(hint) or (Any, Any)
        return {_coerce(k, key_hint, key, source): _coerce(v, value_hint, f"{key}.{k}", source)
                for k, v in value.items()}
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise wrong()
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        raise wrong()
    if hint is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            # YAML 1.1 reads 1e-3 (no dot) as a string; take it as the number it means.
            try:
                return float(value)
            except ValueError:
                pass
        raise wrong()
    if hint is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise wrong()
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise wrong()


def build(cls: type[T], data: Mapping[str, Any] | None, *, prefix: str = "",
          source: str | None = None) -> T:
    """Build dataclass ``cls`` from a nested mapping, refusing unknown keys and wrong types."""
    data = data or {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"expected a mapping of keys to values, got {data!r}",
                          key=prefix.rstrip(".") or None, source=source)
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for name, value in data.items():
        if name not in hints or name not in fields:
            # A config class names the top-level sections of other configs and who takes them.
            elsewhere = getattr(cls, "SECTIONS_OF_OTHER_CONFIGS", {}).get(name)
            raise ConfigError(elsewhere if elsewhere and not prefix else
                              f"unknown key; {_suggest(str(name), list(fields), prefix)}",
                              key=f"{prefix}{name}", source=source)
        kwargs[name] = _coerce(_over_default(fields[name], value), hints[name],
                               f"{prefix}{name}", source)
    return cls(**kwargs)


def _over_default(field: dataclasses.Field, value: Any) -> Any:
    """A section given in part keeps the other settings of the section's default (which a
    config class may set apart from the section class's own defaults)."""
    if not isinstance(value, Mapping) or field.default_factory is dataclasses.MISSING:
        return value
    default = field.default_factory()
    if not dataclasses.is_dataclass(default):
        return value
    return merge(dataclasses.asdict(default), value)


def _set_dotted(tree: dict, dotted: str, value: Any, root_cls: type, source: str) -> None:
    """Set ``a.b.c`` in a nested dict, checking each part names a real field."""
    parts = dotted.split(".")
    cls: type | None = root_cls
    node = tree
    for depth, part in enumerate(parts):
        path = ".".join(parts[: depth + 1])
        if cls is None:
            raise ConfigError(f"'{'.'.join(parts[:depth])}' is a value, not a section",
                              key=dotted, source=source)
        fields = {f.name: f for f in dataclasses.fields(cls)}
        if part not in fields:
            prefix = ".".join(parts[:depth]) + "." if depth else ""
            raise ConfigError(f"unknown key; {_suggest(part, list(fields), prefix)}", key=path,
                              source=source)
        hint = typing.get_type_hints(cls)[part]
        if depth == len(parts) - 1:
            node[part] = value
            return
        cls = _dataclass_in(hint)
        child = node.get(part)
        if not isinstance(child, dict):
            child = {}
            node[part] = child
        node = child


def parse_override(text: str) -> tuple[str, Any]:
    """``key.sub=value`` -> (``key.sub``, YAML-typed value)."""
    if "=" not in text:
        raise ConfigError(f"override '{text}' is not of the form section.key=value")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"override '{text}' has no key before '='")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key, value


def merge(base: Mapping[str, Any], over: Mapping[str, Any]) -> dict:
    """``base`` with ``over`` on top, section by section (nested mappings merge, values replace)."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge(merged[key], value)
        else:
            merged[key] = value
    return merged


class _UniqueKeyLoader(yaml.SafeLoader):
    """YAML's safe loader refusing a key given twice in one mapping (plain YAML keeps the
    last one, so a whole section written twice would silently lose its first copy)."""


def _unique_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen: dict[Any, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node)
        line = key_node.start_mark.line + 1
        if key in seen:
            raise ConfigError(f"line {line}: key '{key}' is given twice (first on line "
                              f"{seen[key]}); YAML would keep only the second. Merge the two",
                              source=key_node.start_mark.name)
        seen[key] = line
    return loader.construct_mapping(node)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: Path) -> Any:
    """A YAML file's content; ConfigError (file, line) for syntax errors and repeated keys."""
    try:
        with open(path, encoding="utf-8") as handle:
            loader = _UniqueKeyLoader(handle)
            loader.name = str(path)
            try:
                return loader.get_single_data()
            finally:
                loader.dispose()
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", source=str(path)) from None


def read_tree(cls: type, path: str | Path | None = None, overrides: Sequence[str] = (),
              base: Mapping[str, Any] | None = None) -> tuple[dict, str | None, dict[str, str]]:
    """The settings tree of a YAML file (over ``base``) with the overrides applied, unbuilt:
    (tree, file name, override text by key). Every override key is checked against ``cls``."""
    tree: dict = {}
    source = None
    if path is not None:
        source = str(path)
        p = Path(path)
        if not p.is_file():
            raise ConfigError("config file not found; pass an existing YAML file to --config "
                              "(see examples/configs/)", source=source)
        loaded = read_yaml(p)
        if loaded is None:
            raise ConfigError("the file holds no settings (empty, or comments only); write the "
                              "sections to change, or leave out --config to run the defaults",
                              source=source)
        if not isinstance(loaded, dict):
            raise ConfigError("the top level must be a mapping of sections "
                              f"({', '.join(f.name for f in dataclasses.fields(cls))})",
                              source=source)
        tree = loaded
    tree = merge(base or {}, tree)
    given = {}
    for text in overrides:
        key, value = parse_override(text)
        _set_dotted(tree, key, value, cls, source=f"command-line override '{text}'")
        given[key] = text
    return tree, source, given


def load(cls: type[T], path: str | Path | None = None, overrides: Sequence[str] = (),
         base: Mapping[str, Any] | None = None) -> T:
    """Load ``cls`` from an optional YAML file, apply overrides, build and validate.

    ``base`` holds values under the file's (settings a caller derives, such as the model shape
    of the run a fine-tuning starts from): the file and the overrides win over it.
    """
    tree, source, given = read_tree(cls, path, overrides, base)
    try:
        config = build(cls, tree, source=source)
        validate(config, source=source)
    except ConfigError as err:
        # A value the command line gave is the command line's fault, not the file's.
        text = next((t for k, t in given.items() if err.key == k or
                     (err.key or "").startswith(k + ".")), None)
        if text is not None:
            raise ConfigError(err.message, key=err.key,
                              source=f"command-line override '{text}'") from None
        # A cross check between settings: name the overrides it speaks of too.
        involved = [t for k, t in given.items() if k.rsplit(".", 1)[-1] in err.message]
        if not involved:
            raise
        with_overrides = ", ".join(f"'{t}'" for t in involved)
        raise ConfigError(err.message, key=err.key, source=", ".join(
            part for part in (err.source, f"command-line override {with_overrides}") if part)
        ) from None
    return config


def validate(config: Any, source: str | None = None, prefix: str = "") -> None:
    """Run every section's ``validate()``: sections first, then their parents' cross checks.

    A section raises ConfigError with a key relative to itself; the error is re-raised here
    with the full dotted key and the file it came from.
    """
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            validate(value, source, f"{prefix}{f.name}.")
    check = getattr(config, "validate", None)
    if check is None:
        return
    try:
        check()
    except ConfigError as err:
        if err.source is not None:
            raise
        key = prefix + err.key if err.key else (prefix.rstrip(".") or None)
        raise ConfigError(err.message, key=key, source=source or "config") from None


def to_dict(config: Any) -> dict:
    return dataclasses.asdict(config)


def dump(config: Any, path: str | Path) -> None:
    """Write the fully resolved config as YAML (readable back with :func:`load`)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(yaml.safe_dump(to_dict(config), sort_keys=False), encoding="utf-8")
    tmp.replace(path)
