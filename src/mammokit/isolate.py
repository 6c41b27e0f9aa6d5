"""Run a function over untrusted items in worker processes, so that a crash, a hang or a panic costs one item.

Decoding untrusted files can end the process that does it: a segfault or abort in a native decoder, a Rust panic
surfacing as pyo3's `PanicException` (a `BaseException`, which `except Exception` never sees), or a call that never
returns. `isolated_map` runs `fn(item)` in child processes, one item at a time per child, and yields each item's
outcome as it arrives. An item whose worker died, ran past the time limit or raised becomes an `ItemFailure` with a
one-line reason; a dead or stuck worker is replaced, and the other items go on. Because a worker holds exactly one
item at a time, a crash is always charged to the item that caused it.

Workers start from a fork server (spawn where there is none): never a fork of a parent that may run threads.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
import resource
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from mammokit.io import current_umask

__all__ = ["ItemFailure", "WorkerStartError", "isolated_map", "start_workers_early"]
STARTUP_LIMIT_S = 300.0  # a worker imports what `fn` needs before it is ready; on a busy machine that takes a while
_PENDING = object()  # what `_Worker.collect` returns when the message was the worker's "ready", not an outcome


class WorkerStartError(RuntimeError):
    """A worker process died before it was ready to take an item: nothing any item did, so no item is charged."""


@dataclass(frozen=True)
class ItemFailure:
    """What an item cost instead of a result: why, and the exception it raised (None for a crash or time-out, or
    when the exception could not be sent back)."""

    reason: str
    error: BaseException | None = None


def describe_exit(exitcode: int | None) -> str:
    """How a worker process ended, in words: "worker crashed (SIGSEGV)", "worker exited with status 3"."""
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker crashed ({signal.Signals(-exitcode).name})"
        except ValueError:
            return f"worker crashed (signal {-exitcode})"
    return f"worker exited with status {exitcode}"


def _failure_message(err: BaseException) -> tuple[str, str, BaseException | None]:
    """("failed", reason, the exception if it survives a pickle round trip, else None)."""
    reason = f"{type(err).__name__}: {err}"
    try:
        pickle.loads(pickle.dumps(err))
    except Exception:  # an exception class that cannot be rebuilt in the parent: keep its words only
        return ("failed", reason, None)
    return ("failed", reason, err)


def _reply(conn: Connection, message: tuple) -> None:
    """Send a message; a result that cannot be pickled becomes a failure (pickling happens before any byte is sent)."""
    try:
        conn.send(message)
    except Exception as err:
        conn.send(("failed", f"result could not be sent back: {type(err).__name__}: {err}", None))


def _serve(fn: Callable[[Any], Any], conn: Connection, environ: dict[str, str], umask: int) -> None:
    """A worker's loop: take the parent's environment and umask (a fork server's child has the server's), say
    ("ready",), then receive (item,) and send back ("ok", result) or ("failed", reason, error), until None."""
    os.environ.clear()
    os.environ.update(environ)
    os.umask(umask)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it ends the workers
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crashing decoder must not write a core dump per file
    conn.send(("ready",))
    while True:
        try:
            task = conn.recv()
        except EOFError:
            return
        if task is None:
            return
        try:
            message: tuple = ("ok", fn(task[0]))
        except BaseException as err:  # a PanicException or SystemExit from one item must not end the batch
            message = _failure_message(err)
        _reply(conn, message)


def _context() -> Any:
    """A fork-server context where the platform has one, else spawn."""
    return mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")


class _Worker:
    """One child process with its pipe, and the item (index, deadline) it is working on."""

    def __init__(self, ctx: Any, fn: Callable[[Any], Any], time_limit_s: float | None) -> None:
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_serve, args=(fn, child, dict(os.environ), current_umask()), daemon=True)
        self.proc.start()
        child.close()
        self.time_limit_s, self.ready = time_limit_s, False
        self.index: int | None = None
        self.deadline = float("inf")

    def give(self, index: int, item: Any) -> None:
        self.conn.send((item,))  # wrapped: an item may be None, which tells a worker to end
        self.index = index
        self._start_clock()

    def _start_clock(self) -> None:
        """The item's time limit counts from when the worker is ready and holds it; until then, the start-up's."""
        limit = self.time_limit_s if self.ready else STARTUP_LIMIT_S
        self.deadline = time.monotonic() + limit if limit else float("inf")

    def collect(self) -> Any:
        """The outcome of the current item (or `_PENDING`), once the pipe or the process sentinel is ready."""
        try:
            message = self.conn.recv()
        except (EOFError, OSError):  # the worker died before answering
            self.proc.join(timeout=5)
            if not self.ready:
                raise WorkerStartError(
                    f"a worker process could not start ({describe_exit(self.proc.exitcode)}); a script that runs "
                    "mammokit must guard its entry point with `if __name__ == '__main__':`") from None
            return ItemFailure(describe_exit(self.proc.exitcode))
        except Exception as err:  # a result or exception that cannot be rebuilt here
            return ItemFailure(f"result could not be read back: {type(err).__name__}: {err}")
        if message[0] == "ready":
            self.ready = True
            self._start_clock()
            return _PENDING
        if message[0] == "ok":
            return message[1]
        return ItemFailure(message[1], message[2])

    def stop(self, *, kill: bool = False) -> None:
        """End the worker: politely (it finishes nothing; it is idle) or, with `kill`, at once."""
        if not kill and self.proc.is_alive():
            try:
                self.conn.send(None)
                self.proc.join(timeout=5)
            except OSError:  # it died meanwhile
                pass
        if self.proc.is_alive():
            self.proc.kill()
            self.proc.join(timeout=5)
        self.conn.close()


def isolated_map(fn: Callable[[Any], Any], items: Iterable[Any], *, workers: int = 1,
                 time_limit_s: float | None = None) -> Iterator[tuple[int, Any]]:
    """Yield `(index, fn(item))` for every item, in completion order, computed in `workers` child processes.

    `fn` must be picklable (a module-level function, or a `functools.partial` of one); it is sent once per worker.
    An item whose worker crashed, that ran longer than `time_limit_s` (None: no limit) or that raised (any
    `BaseException`) yields an `ItemFailure` in place of its result. Closing the iterator early ends the workers.
    """
    pending = deque(enumerate(items))
    if not pending:
        return
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        ctx.set_forkserver_preload(_preload(fn))
    pool = [_Worker(ctx, fn, time_limit_s) for _ in range(max(1, min(workers, len(pending))))]
    clean = False
    try:
        while True:
            for k, w in enumerate(pool):
                if w.index is None and pending:
                    pool[k] = _dispatch(ctx, fn, w, pending)
            busy = [w for w in pool if w.index is not None]
            if not busy:
                break
            timeout = max(0.0, min(w.deadline for w in busy) - time.monotonic())
            ready = set(wait([w.conn for w in busy] + [w.proc.sentinel for w in busy],
                             timeout=None if timeout == float("inf") else timeout))
            for k, w in enumerate(pool):
                if w.index is None:
                    continue
                if w.conn in ready or w.proc.sentinel in ready:
                    index, outcome = w.index, w.collect()
                    if outcome is _PENDING:
                        continue
                elif time.monotonic() >= w.deadline:
                    if not w.ready:
                        raise WorkerStartError(f"a worker process did not start within {STARTUP_LIMIT_S:g} s")
                    index, outcome = w.index, ItemFailure(f"timed out after {time_limit_s:g} s")
                    w.stop(kill=True)
                else:
                    continue
                w.index = None
                if not w.proc.is_alive() or w.conn.closed:
                    pool[k] = _restart(ctx, fn, w, time_limit_s)
                yield index, outcome
        clean = True
    finally:
        for w in pool:
            w.stop(kill=not clean)


def start_workers_early(module: str) -> None:
    """Start the fork server now, importing `module` (where the worker function lives), while this process goes on
    importing what it needs: the two imports overlap instead of queueing before the first item (about 1.5 s of a
    command's start-up on two cores). A no-op without a fork server, or when it already runs."""
    ctx = _context()
    if ctx.get_start_method() != "forkserver":
        return
    from multiprocessing import forkserver

    ctx.set_forkserver_preload(_preload_modules(module))
    forkserver.ensure_running()


def _preload(fn: Callable[[Any], Any]) -> list[str]:
    """What the fork server imports once so that no worker imports it again (see `_preload_modules`)."""
    return _preload_modules(getattr(fn, "func", fn).__module__)


def _preload_modules(module: str) -> list[str]:
    """This module, `module` (the worker function's) and the main module (which every worker runs as
    `__mp_main__`: a script by its path, or e.g. `mammokit.cli`)."""
    main = getattr(sys.modules.get("__main__"), "__spec__", None)
    return ["__main__", __name__, module, *([main.name] if main is not None else [])]


def _restart(ctx: Any, fn: Callable[[Any], Any], worker: _Worker, time_limit_s: float | None) -> _Worker:
    """A fresh worker in place of a dead or killed one."""
    worker.stop(kill=True)
    return _Worker(ctx, fn, time_limit_s)


def _dispatch(ctx: Any, fn: Callable[[Any], Any], worker: _Worker, pending: deque) -> _Worker:
    """Give the next pending item to `worker` (replaced first when it died while idle); returns the worker used."""
    index, item = pending.popleft()
    try:
        worker.give(index, item)
    except OSError:  # BrokenPipeError: it died between items (e.g. the kernel's out-of-memory killer)
        worker = _restart(ctx, fn, worker, worker.time_limit_s)
        worker.give(index, item)
    return worker
