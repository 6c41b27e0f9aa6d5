"""Small file helpers shared by every step: atomic writes so a killed run never leaves half a file.

A killed writer can still leave its temporary file (`.<stem>.<random>.tmp<suffix>` beside the target): a run that
owns a folder removes them at its start with `remove_temp_files`.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from pathlib import Path

# the names `atomic_write` gives its temporary files: "." + stem + "." + mkstemp's random part + ".tmp" + suffix
TEMP_NAME = re.compile(r"\..+\.[A-Za-z0-9_]+\.tmp(\.[A-Za-z0-9_]+)?")


def current_umask() -> int:
    """The process's umask, read without changing it where the system tells it (Linux), else by setting it back."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except OSError:  # no /proc (not Linux): fall through to the portable read below
        pass
    mask = os.umask(0o022)  # elsewhere: read by setting; a thread creating a file just now would see 022
    os.umask(mask)
    return mask


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp_path)` on a temporary file beside `path`, then rename it into place.

    The temporary name keeps `path`'s suffix so writers that pick a format by extension still work. The file gets
    the mode an ordinary `open` would give it (0o666 less the umask), not the temporary file's 0o600.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        write(tmp_path)
        os.chmod(tmp_path, 0o666 & ~current_umask())
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
    return path


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write bytes atomically."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data))


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write text (UTF-8) atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def remove_temp_files(folder: str | Path) -> int:
    """Delete what killed atomic writes left under `folder` (recursively); returns how many files went.

    Only for a folder this process owns (e.g. under its lock): another writer's temporary file is in use.
    """
    removed = 0
    for root, _, files in os.walk(folder):
        for name in files:
            if TEMP_NAME.fullmatch(name):
                Path(root, name).unlink(missing_ok=True)
                removed += 1
    return removed
