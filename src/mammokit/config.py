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
        raise ConfigError(f"override {text!r}: value is not valid YAML ({err})") from err
    return parts, value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of `data` with each dotted override applied (list items addressed by integer index)."""
    result = json.loads(json.dumps(data))
    for text in overrides or []:
        parts, value = parse_override(text)
        node: Any = result
        for part in parts[:-1]:
            if isinstance(node, list):
                node = node[int(part)]
                continue
            node = node.setdefault(part, {})
            if not isinstance(node, dict | list):
                raise ConfigError(f"override {text!r}: {part!r} is a value, not a section")
        last = parts[-1]
        if isinstance(node, list):
            node[int(last)] = value
        else:
            node[last] = value
    return result


def load_config(cls: type[ModelT], path: str | Path | None = None, overrides: list[str] | None = None) -> ModelT:
    """Build config `cls` from an optional YAML file plus dotted overrides; errors name the file and the key."""
    data: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            loaded = yaml.safe_load(path.read_text())
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({err})") from err
        if loaded is not None and not isinstance(loaded, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
        data = loaded or {}
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        where = str(path) if path is not None else "overrides"
        raise ConfigError(f"{where}: invalid configuration\n{err}") from err


def config_hash(config: BaseModel, length: int = 16) -> str:
    """Stable short hash of a config's resolved values (key order independent)."""
    payload = json.dumps(config.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(payload.encode()).hexdigest()[:length]


def dump_config(config: BaseModel, path: str | Path) -> None:
    """Write the resolved config as YAML (atomically)."""
    from mammokit.io import atomic_write_text

    atomic_write_text(path, yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False))
