"""Reusing an output folder (a store, a run): resume what was made with the same settings, else refuse or replace it.

A step that finds its output folder already made with other settings must not mix the two (half the images of
one config, the table of another; a finished training stage of one config under the card of another). It refuses
with one line naming what differs, or, when the user asked to overwrite, removes the old output whole first.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

OVERWRITE_HINT = "rerun with --overwrite to replace it whole, or write to another folder"


def flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested mapping as {dotted.key: leaf value}."""
    out: dict[str, Any] = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping) and value:
            out.update(flatten(value, f"{name}."))
        else:
            out[name] = value
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any], ignore: Iterable[str] = ()) -> list[str]:
    """What differs between two resolved configs, one "key old → new" per dotted key (keys in `ignore` and below
    them left out)."""
    a, b = flatten(old), flatten(new)
    skip = tuple(ignore)
    changes = []
    for key in sorted(set(a) | set(b)):
        if any(key == s or key.startswith(f"{s}.") for s in skip):
            continue
        if a.get(key, "<unset>") != b.get(key, "<unset>"):
            changes.append(f"{key} {a.get(key, '<unset>')!r} → {b.get(key, '<unset>')!r}")
    return changes


def summarize(changes: list[str], limit: int = 5) -> str:
    """The first `limit` changes, and how many more."""
    more = len(changes) - limit
    return "; ".join(changes[:limit]) + (f"; and {more} more" if more > 0 else "")


def remove_entries(folder: Path, names: Iterable[str]) -> None:
    """Delete the named files and folders of `folder` (those that exist)."""
    for name in names:
        path = folder / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
