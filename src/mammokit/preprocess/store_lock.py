"""One writer per store: a lock file naming its holder (pid, host, start time), taken over only when provably stale.

`store/.lock` is created whole or not at all (written under a temporary name, then hard-linked into place, which
fails when the name exists, on local disks and NFS alike). A second writer is refused with one line naming the
holder. A lock whose holder ran on this host and is no longer alive (its pid gone, or reused by a process started
later) is stale and taken over; a lock from another host cannot be checked from here, so it is only ever refused,
with the file to delete named in the message. A stale lock is removed under a `flock` on `store/.lock.guard` and
only if it is still the same one, so of two runs that find it, one takes the store and the other is refused.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mammokit.errors import InvalidInputError

LOCK_NAME = ".lock"


class StoreLockedError(InvalidInputError):
    """Another live run holds the store's lock."""


def _process_start(pid: int) -> str | None:
    """When process `pid` started, in the kernel's clock ticks since boot (Linux), or None where unknown."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]  # field 22, counted after the command name (which may hold spaces)


def _alive(holder: dict[str, Any]) -> bool:
    """Whether the process a lock names still runs on this host (the same pid started at the same time)."""
    pid = int(holder.get("pid", 0))
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # it exists, owned by someone else
        pass
    started = holder.get("process_start")
    return started is None or _process_start(pid) in (None, started)


def _holder_line(lock: Path, holder: dict[str, Any] | None) -> str:
    if holder is None:
        return f"{lock.parent} is locked by another run ({lock} is unreadable); if no run is writing it, delete {lock}"
    command, pid, host, started = (holder.get(k) for k in ("command", "pid", "host", "started"))
    return (f"{lock.parent} is being written by another {command or 'mammokit'} run (pid {pid} on {host}, since "
            f"{started}); wait for it to finish, or, if that run is gone, delete {lock}")


def _read(lock: Path) -> dict[str, Any] | None:
    try:
        return json.loads(lock.read_text())
    except (OSError, ValueError):
        return None


def _create(lock: Path, holder: dict[str, Any]) -> bool:
    """Put a complete lock file in place; False when one exists already."""
    tmp = lock.with_name(f"{lock.name}.{holder['host']}.{holder['pid']}")
    tmp.write_text(json.dumps(holder))
    try:
        os.link(tmp, lock)
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def _guard(folder: Path) -> Iterator[None]:
    """Serialise taking over stale locks on this host (the only place they can be judged stale)."""
    with open(folder / f"{LOCK_NAME}.guard", "a") as f:
        with contextlib.suppress(OSError):  # no flock here: the hard link alone still refuses a second live writer
            fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _is_stale(lock: Path, holder: dict[str, Any] | None, host: str) -> bool:
    """A lock of a dead process on this host, or one damaged long ago (lock files are written whole)."""
    if holder is None:
        try:
            return time.time() - lock.stat().st_mtime > 60
        except FileNotFoundError:  # released meanwhile
            return True
    return holder.get("host") == host and not _alive(holder)


def acquire(folder: str | Path, command: str = "mammokit") -> dict[str, Any]:
    """Take `folder`'s lock for this process; returns what the lock file says (with "took_over": the stale holder,
    when there was one). Raises StoreLockedError, one line naming the holder, when a live run holds it."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lock = folder / LOCK_NAME
    pid = os.getpid()
    me: dict[str, Any] = {"pid": pid, "host": socket.gethostname(), "process_start": _process_start(pid),
                          "started": datetime.now(timezone.utc).isoformat(timespec="seconds"), "command": command}
    for _ in range(3):
        if _create(lock, me):
            return me
        holder = _read(lock)
        if holder is None and not lock.exists():  # released just now: try again
            continue
        if not _is_stale(lock, holder, me["host"]):
            raise StoreLockedError(_holder_line(lock, holder))
        with _guard(folder):
            if _read(lock) == holder:  # still the stale one: no other run took it over meanwhile
                lock.unlink(missing_ok=True)
        me["took_over"] = holder or {}
    raise StoreLockedError(_holder_line(lock, _read(lock)))


def release(folder: str | Path) -> None:
    """Remove `folder`'s lock if this process holds it."""
    lock = Path(folder) / LOCK_NAME
    holder = _read(lock)
    if holder is not None and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
        lock.unlink(missing_ok=True)


@contextlib.contextmanager
def store_lock(folder: str | Path, command: str = "mammokit") -> Iterator[dict[str, Any]]:
    """Hold `folder`'s lock for the `with` block (see `acquire`)."""
    holder = acquire(folder, command)
    try:
        yield holder
    finally:
        release(folder)
