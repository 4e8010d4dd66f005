"""The generic half of :mod:`lazystream.config`: typed loading of frozen dataclasses from YAML-shaped data.

A section is a frozen dataclass whose fields are settings. Its YAML key is the camelCase of the attribute
(``idle_ttl_seconds`` → ``idleTtlSeconds``) unless the field's metadata gives another (:func:`meta`).
Values are converted and checked by the field's type hint: ``bool``, ``int``, ``float``, ``str``, ``Path``,
``Literal``, ``X | None``, ``tuple[X, ...]``, ``Mapping[str, X]``, nested dataclasses and ``Any`` (JSON-like,
kept as written). A dataclass's own ``__post_init__`` checks values and raises :class:`ConfigError` with a
key path relative to itself; :func:`build` prefixes it with the section's path, and :class:`Sources` finally
relabels the path with where the value came from (a file line, an environment variable, an override).
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import math
import os
import typing
import warnings
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from types import UnionType
from typing import Any, Literal, NoReturn, TypeVar

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """An invalid configuration; the message starts with the key path (or environment variable) at fault.

    ``key`` is the key path in the normalised form (``general.dispatches[1].domainRegex``), ``reason`` what is
    wrong with it; ``label`` is what the message names (the same path, the path inside a SlimeBoot, or an
    environment variable) and ``location`` the file and line when the value came from the file.
    """

    def __init__(
        self, key: str, reason: str, *, label: str | None = None, location: str | None = None
    ) -> None:
        self.key = key
        self.reason = reason
        self.label = key if label is None else label
        self.location = location
        text = f"{self.label}: {reason}" if self.label else reason
        super().__init__(f"{text} ({location})" if location else text)

    def within(self, prefix: str) -> ConfigError:
        """The same error, for a key path relative to ``prefix``."""
        return ConfigError(join_path(prefix, self.key), self.reason)


class ConfigErrors(ConfigError):
    """Several invalid values, reported at once (a file with three mistakes needs one run, not three). It is
    a :class:`ConfigError` whose key, reason and location are the first error's; ``errors`` has them all."""

    def __init__(self, errors: list[ConfigError]) -> None:
        flat: list[ConfigError] = []
        for error in errors:
            flat += error.errors if isinstance(error, ConfigErrors) else [error]
        self.errors: list[ConfigError] = flat
        first = flat[0]
        super().__init__(first.key, first.reason, label=first.label, location=first.location)

    def __str__(self) -> str:
        if len(self.errors) == 1:
            return str(self.errors[0])
        return f"{len(self.errors)} problems:\n" + "\n".join(f"  {e}" for e in self.errors)

    def within(self, prefix: str) -> ConfigError:
        return ConfigErrors([e.within(prefix) for e in self.errors])


def suggestion(key: str, known: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest of ``known`` (case and separators aside), or ""."""
    folded = {k.lower().replace("-", "").replace("_", ""): k for k in known}
    near = difflib.get_close_matches(
        key.lower().replace("-", "").replace("_", ""), list(folded), n=1, cutoff=0.75
    )
    return f"; did you mean {folded[near[0]]!r}?" if near else ""


class ConfigWarning(UserWarning):
    """An unknown or deprecated key, or a retired environment variable: ignored, and worth fixing."""


# --- schema ------------------------------------------------------------------------------------------------


REDACTED = "<redacted>"
"""What :func:`encode` shows instead of a secret's value."""


def meta(
    *, key: str | None = None, empty_is_default: bool = False, deprecated: str = "", secret: bool = False
) -> dict[str, Any]:
    """Field metadata: the YAML key when it is not the camelCase of the attribute, loading hints, and
    whether the value is a secret (never shown: :func:`encode` redacts it)."""
    return {"key": key, "empty_is_default": empty_is_default, "deprecated": deprecated, "secret": secret}


def yaml_key(f: dataclasses.Field[Any]) -> str:
    """The YAML key of field ``f``: its metadata's ``key``, else the camelCase of its name."""
    key = f.metadata.get("key")
    if key:
        return str(key)
    head, *rest = f.name.rstrip("_").split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def join_path(prefix: str, key: str) -> str:
    """``prefix.key``, or ``prefix[i]`` when ``key`` is an index."""
    if not prefix:
        return key
    if not key:
        return prefix
    return prefix + key if key.startswith("[") else f"{prefix}.{key}"


def fail(key: str, reason: str) -> NoReturn:
    raise ConfigError(key, reason)


def encode(value: Any, *, redact: bool = True) -> Any:
    """A dataclass (and what it holds) in its YAML form: camelCase keys, lists, strings for paths. Secret
    fields that are set read :data:`REDACTED` unless ``redact`` is false."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out = {}
        for f in dataclasses.fields(value):
            item = getattr(value, f.name)
            secret = redact and f.metadata.get("secret") and item
            out[yaml_key(f)] = REDACTED if secret else encode(item, redact=redact)
        return out
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): encode(v, redact=redact) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v, redact=redact) for v in value]
    return value


@cache
def type_hints(cls: type) -> dict[str, Any]:
    """The resolved type hints of dataclass ``cls`` (annotations are strings under ``from __future__``)."""
    return dict(typing.get_type_hints(cls))


def is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def unwrap_optional(tp: Any) -> tuple[Any, bool]:
    if typing.get_origin(tp) in (typing.Union, UnionType):
        args = [arg for arg in typing.get_args(tp) if arg is not type(None)]
        return args[0], len(args) < len(typing.get_args(tp))
    return tp, False


@dataclass(frozen=True, slots=True)
class Setting:
    path: str  # YAML key path, e.g. general.wormholePort
    attr_path: str  # attribute path, e.g. general.wormhole_port
    env: str  # LAZYSTREAM_GENERAL_WORMHOLE_PORT
    type: Any


def walk_settings(cls: type, path: str, attr_path: str, env: str) -> Iterator[Setting]:
    """Every field of dataclass ``cls`` and, depth first, of the dataclasses it nests."""
    hints = type_hints(cls)
    for f in dataclasses.fields(cls):
        setting = Setting(
            join_path(path, yaml_key(f)),
            join_path(attr_path, f.name),
            f"{env}_{f.name.rstrip('_').upper()}",
            hints[f.name],
        )
        yield setting
        if is_dataclass_type(setting.type):
            yield from walk_settings(setting.type, setting.path, setting.attr_path, setting.env)


# --- sources and conversion ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Origin:
    label: str  # what messages name: a key path in the file, an environment variable or an override path
    in_file: bool


class Sources:
    """Where each value came from: the file (with its line numbers), the environment or an override."""

    def __init__(self) -> None:
        self.file: Path | None = None
        self.prefix = ""  # "spec.module[N]." for a SlimeBoot
        self.lines: dict[str, int] = {}
        self.origins: dict[str, Origin] = {}

    def origin(self, path: str) -> Origin:
        best = ""
        for prefix in self.origins:
            if len(prefix) > len(best) and (path == prefix or path.startswith((prefix + ".", prefix + "["))):
                best = prefix
        if best:
            origin = self.origins[best]
            return Origin(origin.label + path[len(best) :], origin.in_file)
        return Origin(self.prefix + path, True)

    def location(self, label: str) -> str | None:
        """``file:line`` of ``label``, or of its nearest enclosing key that is in the file."""
        if self.file is None:
            return None
        while label:
            if label in self.lines:
                return f"{self.file}:{self.lines[label]}"
            cut = max(label.rfind("."), label.rfind("["))
            label = label[: max(cut, 0)]
        return None

    def describe(self, path: str) -> tuple[str, str | None]:
        origin = self.origin(path)
        return origin.label, self.location(origin.label) if origin.in_file else None

    def warn(self, path: str, reason: str) -> None:
        label, location = self.describe(path)
        text = f"{label}: {reason}"
        warnings.warn(f"{text} ({location})" if location else text, ConfigWarning, stacklevel=4)

    def relabel(self, exc: ConfigError) -> ConfigError:
        if isinstance(exc, ConfigErrors):
            return ConfigErrors([self.relabel(e) for e in exc.errors])
        label, location = self.describe(exc.key)
        return ConfigError(exc.key, exc.reason, label=label, location=location)

    def set_from(self, raw: dict[str, Any], path: str, value: Any, origin: Origin) -> None:
        """Set ``value`` at key path ``path`` of ``raw``, replacing what a lower source had there."""
        *parents, last = path.split(".")
        node = raw
        for key in parents:
            child = node.get(key)
            if not isinstance(child, dict):
                child = node[key] = {}
            node = child
        node[last] = value
        for known in [p for p in self.origins if p == path or p.startswith((path + ".", path + "["))]:
            del self.origins[known]
        self.origins[path] = origin


def describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"boolean {str(value).lower()}"
    if isinstance(value, int | float):
        return f"number {value!r}"
    if isinstance(value, str):
        return f"string {value!r}"
    if isinstance(value, Mapping):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    return type(value).__name__


def convert(tp: Any, value: Any, path: str, src: Sources) -> Any:
    """``value`` (from YAML, JSON or an override) as type ``tp``, or :class:`ConfigError` naming ``path``."""
    tp, optional = unwrap_optional(tp)
    origin = typing.get_origin(tp)
    if value is None and optional:
        return None
    if tp is Any:
        return plain(value, path)
    if is_dataclass_type(tp):
        return build(tp, value, path, src)
    if origin is Literal:
        choices = typing.get_args(tp)
        if value not in choices or not isinstance(value, str):
            fail(path, f"must be one of {', '.join(choices)}, got {describe(value)}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            fail(path, f"expected a list, got {describe(value)}")
        item_type = typing.get_args(tp)[0]
        return tuple(convert(item_type, item, f"{path}[{i}]", src) for i, item in enumerate(value))
    if origin in (dict, Mapping):
        if not isinstance(value, Mapping):
            fail(path, f"expected a mapping, got {describe(value)}")
        value_type = typing.get_args(tp)[1]
        return {
            map_key(key, path): convert(value_type, item, join_path(path, str(key)), src)
            for key, item in value.items()
        }
    if tp is bool:
        if not isinstance(value, bool):
            fail(path, f"expected true or false, got {describe(value)}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            fail(path, f"expected an integer, got {describe(value)}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
            fail(path, f"expected a number, got {describe(value)}")
        return float(value)
    if tp is str:
        if isinstance(value, bool):
            fail(
                path,
                f"expected a string, got {describe(value)} (YAML reads on/off/yes/no as booleans: quote it)",
            )
        if isinstance(value, int | float):
            return str(value)
        if not isinstance(value, str):
            fail(path, f"expected a string, got {describe(value)}")
        return value
    if tp is Path:
        if isinstance(value, str) and not value and optional:
            return None
        if not isinstance(value, str | os.PathLike):
            fail(path, f"expected a path, got {describe(value)}")
        if not os.fspath(value):
            fail(path, "must not be empty")
        return Path(value).expanduser()
    raise TypeError(f"{path}: unsupported setting type {tp!r}")  # a programming error, not a user's


def map_key(key: Any, path: str) -> str:
    if isinstance(key, bool) or not isinstance(key, str | int):
        fail(path, f"keys must be strings, got {describe(key)}")
    return str(key)


def plain(value: Any, path: str) -> Any:
    """A JSON-like value (kept as written), or an error naming the first part that is not."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {map_key(k, path): plain(v, join_path(path, str(k))) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [plain(v, f"{path}[{i}]") for i, v in enumerate(value)]
    fail(path, f"unsupported value {describe(value)}")


def build(cls: type[T], value: Any, path: str, src: Sources) -> T:
    """An instance of dataclass ``cls`` from a mapping in the YAML form; unknown keys are warned about."""
    if isinstance(value, cls):
        return value
    if value is None:
        value = {}
    if not isinstance(value, Mapping):
        fail(path, f"expected a mapping, got {describe(value)}")
    by_key = {yaml_key(f): f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    hints = type_hints(typing.cast(type, cls))
    kwargs: dict[str, Any] = {}
    errors: list[ConfigError] = []
    for key, item in value.items():
        child = join_path(path, str(key))
        f = by_key.get(str(key))
        if f is None:
            hint = suggestion(str(key), by_key)
            if path:
                src.warn(child, f"unknown key (ignored){hint}")
            else:  # a whole section would silently fall back to its defaults
                known = hint or f" (known sections: {', '.join(by_key)})"
                errors.append(ConfigError(child, f"unknown section{known}"))
            continue
        if f.metadata.get("deprecated") and item != f.default:
            src.warn(child, str(f.metadata["deprecated"]))
        if item is None or (item == "" and f.metadata.get("empty_is_default")):
            continue  # null means the default, as in Slime's protojson
        try:
            kwargs[f.name] = convert(hints[f.name], item, child, src)
        except ConfigError as exc:
            errors.append(exc)
    for key, f in by_key.items():
        required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        if (
            required
            and f.name not in kwargs
            and not any(e.key.startswith(join_path(path, key)) for e in errors)
        ):
            errors.append(ConfigError(join_path(path, key), "is required"))
    if errors:
        raise ConfigErrors(errors)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.within(path) from None


def index_lines(node: yaml.Node, path: str, lines: dict[str, int], src: Sources) -> None:
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                continue
            child = join_path(path, str(key_node.value))
            if key_node.value in seen:
                location = f"{src.file}:{key_node.start_mark.line + 1}"
                warnings.warn(
                    f"{child}: duplicate key; the last one counts ({location})", ConfigWarning, stacklevel=5
                )
            seen.add(key_node.value)
            lines[child] = key_node.start_mark.line + 1
            index_lines(value_node, child, lines, src)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            child = f"{path}[{i}]"
            lines[child] = item.start_mark.line + 1
            index_lines(item, child, lines, src)


BOOL_WORDS = {
    "true": True,
    "1": True,
    "yes": True,
    "on": True,
    "false": False,
    "0": False,
    "no": False,
    "off": False,
}


def parse_env(tp: Any, raw: str) -> Any:
    """An environment string as a value of type ``tp`` (JSON for maps, objects and lists of objects)."""
    tp, optional = unwrap_optional(tp)
    if optional and not raw.strip():
        return None
    if tp is bool:
        if raw.strip().lower() not in BOOL_WORDS:
            raise ValueError(f"{raw!r} is not a boolean (true or false)")
        return BOOL_WORDS[raw.strip().lower()]
    if tp is int:
        try:
            return int(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not an integer") from None
    if tp is float:
        try:
            return float(raw.strip())
        except ValueError:
            raise ValueError(f"{raw!r} is not a number") from None
    origin = typing.get_origin(tp)
    scalar_list = origin is tuple and typing.get_args(tp)[0] in (str, int, float)
    if scalar_list and not raw.lstrip().startswith("["):
        return [item.strip() for item in raw.split(",") if item.strip()]
    if scalar_list or origin in (tuple, dict, Mapping) or is_dataclass_type(tp) or tp is Any:
        try:
            return json.loads(raw)
        except ValueError as exc:
            raise ValueError(f"invalid JSON: {exc}") from None
    return raw  # str, Path and Literal values are checked when converted


def read_yaml(file: Path, src: Sources) -> Any:
    """The one YAML document of ``file``, with its key paths' line numbers recorded in ``src``.

    Unreadable files and YAML errors raise :class:`ConfigError` naming the file (and the line and column).
    """
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError("", f"cannot read the configuration file: {exc}", label=str(file)) from None
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"{file}:{mark.line + 1}:{mark.column + 1}" if mark else str(file)
        problem = ", ".join(part for part in (exc.context, exc.problem) if part)
        raise ConfigError("", f"invalid YAML: {problem}", label=where) from None
    except yaml.YAMLError as exc:
        raise ConfigError("", f"invalid YAML: {exc}", label=str(file)) from None
    if node is not None:
        index_lines(node, "", src.lines, src)
    return data
