"""Configuration: pydantic models loaded from YAML, with dotted `key=value` overrides.

Every step's settings are a pydantic model so a typo in a YAML key is an error, not a silent default.
The resolved configuration is written next to every output, and its hash decides what a re-run may skip.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mammokit.errors import InvalidInputError

ModelT = TypeVar("ModelT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for all configs: unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ConfigError(InvalidInputError):
    """A configuration file or override that cannot be used."""


def one_line(text: str) -> str:
    """`text` with every run of whitespace (newlines included) made one space: error messages are one line."""
    return " ".join(str(text).split())


def field_errors(err: ValidationError, limit: int = 3) -> str:
    """The first problems of a validation error as "field: problem", field dotted (e.g. data.batch_size=0: ...)."""
    wording = {"missing": "missing", "extra_forbidden": "unknown key"}
    parts = []
    for e in err.errors()[:limit]:
        field = ".".join(str(p) for p in e["loc"]) or "(top level)"
        given = e.get("input")
        if e["type"] not in wording and given is not None and not isinstance(given, dict | list):
            field = f"{field}={given!r}"
        parts.append(f"{field}: {wording.get(e['type'], e['msg'])}")
    more = f" (and {err.error_count() - limit} more)" if err.error_count() > limit else ""
    return one_line("; ".join(parts) + more)


def _yaml_problem(err: yaml.YAMLError) -> str:
    """A YAML parse error in one line: where (line, column) and what."""
    mark = getattr(err, "problem_mark", None)
    problem = getattr(err, "problem", None)
    if mark is not None and problem:
        return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"
    return one_line(str(err))


def parse_override(text: str) -> tuple[list[str], Any]:
    """Split `a.b.c=value` into (["a", "b", "c"], parsed value); the value is parsed as YAML (numbers, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"override {text!r} is not of the form key=value")
    key, raw = text.split("=", 1)
    parts = [p for p in key.strip().split(".") if p]
    if not parts:
        raise ConfigError(f"override {text!r} has an empty key")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"override {text!r}: value is not valid YAML ({_yaml_problem(err)})") from err
    return parts, value


def _list_index(items: list[Any], part: str, where: str, text: str) -> int:
    """`part` as an index into the list `where`; anything else names the key and the list's length."""
    if part.isdigit() and int(part) < len(items):
        return int(part)
    raise ConfigError(f"override {text!r}: {where} is a list of {len(items)} items, it has no item {part!r} "
                      f"(items are numbered from 0)")


def _child(node: dict[str, Any] | list[Any], parts: list[str], depth: int, text: str) -> dict[str, Any] | list[Any]:
    """The section `parts[depth]` of `node` (created when a mapping lacks it)."""
    part = parts[depth]
    if isinstance(node, list):
        child = node[_list_index(node, part, ".".join(parts[:depth]), text)]
    else:
        child = node.setdefault(part, {})
    if not isinstance(child, dict | list):
        raise ConfigError(f"override {text!r}: {'.'.join(parts[: depth + 1])} is a value, not a section")
    return child


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with each dotted override applied (list items addressed by integer index).

    Raises:
        ConfigError: an override that is not key=value, steps into a value, or names a list item that is not there.
    """
    result = json.loads(json.dumps(data))
    for text in overrides or []:
        parts, value = parse_override(text)
        node: Any = result
        for depth in range(len(parts) - 1):
            node = _child(node, parts, depth, text)
        last = parts[-1]
        if isinstance(node, list):
            node[_list_index(node, last, ".".join(parts[:-1]), text)] = value
        else:
            node[last] = value
    return result


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML config file's top-level mapping; every problem is a `ConfigError` naming the file."""
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML ({_yaml_problem(err)})") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not a readable text file ({one_line(str(err))})") from err
    if loaded is not None and not isinstance(loaded, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    return loaded or {}


def load_config(cls: type[ModelT], path: str | Path | None = None, overrides: list[str] | None = None) -> ModelT:
    """Build config `cls` from an optional YAML file plus dotted overrides; errors name the file and the key."""
    data = _read_yaml(Path(path)) if path is not None else {}
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        named = [str(path)] if path is not None else []
        source = " with ".join(named + (["--set"] if overrides else [])) or "defaults"
        raise ConfigError(f"invalid configuration ({source}): {field_errors(err)}") from err


def config_hash(config: BaseModel, length: int = 16) -> str:
    """Stable short hash of a config's resolved values (key order independent)."""
    payload = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from mammokit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
