"""Read fuzzing mutants (`tests/fuzz_corpus.py`) in child processes and sort every read into an outcome.

`run` hands the reads of each mutant (pixels, then header only) to worker children (this file run with ``--child``)
one at a time, with a timeout per read, and sorts every read into one of OUTCOMES. A child that hangs is killed and
one that dies is replaced; either way the read that did it is named. `table` prints issue 13's outcome table.
"""

from __future__ import annotations

import importlib
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from queue import Empty, Queue
from typing import Any

import numpy as np
import pydicom

from fuzz_corpus import SYNTAXES, choose, mutant

OUTCOMES = ("clean", "nonfinite", "foreign", "hang", "killed")
BACKENDS = ("auto", "auto", "auto", "pydicom")  # pixel reads cycle through these by mutant index


@dataclass(frozen=True)
class Result:
    """One read of one mutant: which, how, and its outcome (one of OUTCOMES) with a short detail."""

    syntax: int
    index: int
    pixels: bool
    backend: str
    mutator: str
    outcome: str
    detail: str

    def describe(self) -> str:
        what = f"{self.backend} pixels" if self.pixels else "header only"
        name = pydicom.uid.UID(SYNTAXES[self.syntax]).keyword
        return f"{name} mutant {self.index} ({self.mutator}), {what}: {self.outcome}: {self.detail}"


def classify(reader: Callable[..., Any], path: Path, pixels: bool, backend: str) -> tuple[str, str]:
    """(outcome, detail) of one read: a refusal or finite float Rows x Columns pixels is "clean"."""
    from mammokit.dicom import DicomReadError

    try:
        image = reader(path, pixels=pixels, backend=backend)
    except DicomReadError as err:
        if err.path != str(path) or not err.reason or getattr(err, "unexpected", False):
            return "foreign", f"DicomReadError without path or reason, or of an unexpected error: {err}"
        return "clean", f"refused: {err.reason[:160]}"
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as err:  # pyo3's PanicException is a BaseException
        return "foreign", f"{type(err).__name__}: {str(err)[:300]}"
    ends = image.value_range or ()
    if not all(np.isfinite(v) for v in ends):
        return "nonfinite", f"value_range {ends}"
    if pixels:
        arr = image.pixels
        if not isinstance(arr, np.ndarray) or arr.dtype.kind != "f" or arr.shape != (image.rows, image.columns):
            return "nonfinite", f"pixels {getattr(arr, 'dtype', None)} {getattr(arr, 'shape', None)}, header says " \
                                f"{image.rows}x{image.columns}"
        if not np.isfinite(arr).all():
            return "nonfinite", f"{int((~np.isfinite(arr)).sum())} non-finite pixels"
    return "clean", "read"


def misbehaving_reader(path: Path, *, pixels: bool = True, backend: str = "auto") -> Any:
    """A stand-in for `read_dicom` that misbehaves as mutant index % 5 says: the harness's own test."""
    from types import SimpleNamespace

    from mammokit.dicom import DicomReadError

    kind = int(Path(path).stem.rsplit("-", 1)[-1]) % 5
    if kind == 0:
        raise DicomReadError(str(path), "refused on purpose")
    if kind == 1:
        return SimpleNamespace(pixels=np.full((2, 2), np.nan, np.float32), rows=2, columns=2,
                               value_range=(float("nan"), 1.0))
    if kind == 2:
        raise TypeError("a foreign error")
    if kind == 3:
        time.sleep(3600)
    os.kill(os.getpid(), signal.SIGSEGV)
    return None


def _child(bases: Path, work: Path, seed: int, max_items: int, reader_name: str) -> None:
    """Worker loop: read requests (JSON lines) on stdin, answer on the original stdout; library output is dropped."""
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 1)
    module, _, function = reader_name.partition(":")
    reader = getattr(importlib.import_module(module), function)
    work.mkdir(parents=True, exist_ok=True)
    current: tuple[int, int] | None = None
    path = work / "none.dcm"
    answers.write("ready\n")
    for line in sys.stdin:
        request = json.loads(line)
        key = (request["syntax"], request["index"])
        if key != current:
            path.unlink(missing_ok=True)
            base = (bases / f"base-{key[0]:02d}.dcm").read_bytes()
            try:
                data = mutant(base, *key, seed=seed, max_items=max_items)[1]
            except Exception as err:  # a bug in fuzz_corpus.py, not in the reader: the parent stops the run
                answers.write(json.dumps({"outcome": "generator", "detail": repr(err)}) + "\n")
                continue
            path = work / f"m-{key[0]:02d}-{key[1]}.dcm"
            path.write_bytes(data)
            current = key
        outcome, detail = classify(reader, path, request["pixels"], request["backend"])
        answers.write(json.dumps({"outcome": outcome, "detail": detail}) + "\n")


class _Worker:
    """One child process, restarted after it hangs or dies."""

    def __init__(self, command: list[str]) -> None:
        self.command = command
        self.proc: subprocess.Popen[bytes] | None = None
        self.buffer = b""
        self.hung = False

    def _line(self, timeout: float) -> str | None:
        """The next line from the child; None when it does not come in time (the child is killed) or the child died."""
        assert self.proc is not None and self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            left = deadline - time.monotonic()
            ready = select.select([self.proc.stdout], [], [], max(left, 0))[0] if left > 0 else []
            if not ready:
                self.hung = True
                self.proc.kill()
                return None
            chunk = os.read(self.proc.stdout.fileno(), 1 << 16)
            if not chunk:
                return None
            self.buffer += chunk
        line, _, self.buffer = self.buffer.partition(b"\n")
        return line.decode()

    def ask(self, request: dict[str, Any], timeout: float) -> dict[str, str]:
        if self.proc is None:
            self.proc = subprocess.Popen(self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                         stderr=subprocess.DEVNULL)
            self.buffer = b""
            if self._line(120.0) != "ready":
                raise RuntimeError(f"fuzz worker did not start: {' '.join(self.command)}")
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write((json.dumps(request) + "\n").encode())
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass
        line = self._line(timeout)
        if line is not None:
            return json.loads(line)
        code, hung = self.proc.wait(), self.hung
        self.proc, self.hung = None, False
        if hung:
            return {"outcome": "hang", "detail": f"no answer in {timeout:g} s"}
        what = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
        return {"outcome": "killed", "detail": what}

    def close(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()


def run(
    mutants: Iterable[tuple[int, int]],
    bases: Path,
    work: Path,
    *,
    seed: int = 0,
    workers: int = 2,
    timeout: float = 20.0,
    max_items: int = 100_000,
    reader: str = "mammokit.dicom:read_dicom",
    progress: Callable[[int], None] | None = None,
) -> list[Result]:
    """Read each (syntax, index) mutant twice (pixels with BACKENDS[index % 4], then header only) in child processes.

    Args:
        mutants: (syntax index into SYNTAXES, mutant index) pairs.
        bases: the folder `write_bases` wrote.
        work: scratch folder for the mutant files (one per worker at a time).
        seed, max_items: as for `mutant`.
        workers: child processes reading in parallel.
        timeout: seconds one read may take before it counts as a hang.
        reader: "module:function" called like `read_dicom(path, pixels=..., backend=...)`.
        progress: called with the number of mutants done after each one.
    """
    queue: Queue[tuple[int, int]] = Queue()
    for item in mutants:
        queue.put(item)
    results: list[Result] = []
    errors: list[str] = []
    lock = threading.Lock()

    def work_loop(k: int) -> None:
        command = [sys.executable, str(Path(__file__).resolve()), "--child", str(bases), str(work / f"w{k}"),
                   str(seed), str(max_items), reader]
        worker = _Worker(command)
        try:
            while True:
                try:
                    syntax, index = queue.get_nowait()
                except Empty:
                    return
                done = []
                for pixels in (True, False):
                    backend = BACKENDS[index % len(BACKENDS)] if pixels else "auto"
                    answer = worker.ask({"syntax": syntax, "index": index, "pixels": pixels, "backend": backend},
                                        timeout)
                    if answer["outcome"] == "generator":
                        errors.append(f"mutant ({syntax}, {index}) of seed {seed}: {answer['detail']}")
                        break
                    done.append(Result(syntax, index, pixels, backend, choose(syntax, index, seed)[0],
                                       answer["outcome"], answer["detail"]))
                with lock:
                    results.extend(done)
                    if progress is not None:
                        progress(len(results) // 2)
        finally:
            worker.close()

    threads = [threading.Thread(target=work_loop, args=(k,), daemon=True) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise RuntimeError("the mutant generator failed: " + "; ".join(errors[:5]))
    return sorted(results, key=lambda r: (r.syntax, r.index, not r.pixels))


ROW_TITLES = {
    "clean": "clean `DicomReadError` / finite pixels of Rows × Columns",
    "nonfinite": "pixels with NaN/inf, or not float Rows × Columns",
    "foreign": "an exception that is not mammokit's",
    "hang": "hang > {timeout:g} s",
    "killed": "process killed (signal or exit status)",
}


def counts(results: Iterable[Result]) -> dict[str, dict[bool, int]]:
    """outcome -> {pixels: count, header only: count}."""
    table = {o: {True: 0, False: 0} for o in OUTCOMES}
    for r in results:
        table[r.outcome][r.pixels] += 1
    return table


def table(results: Sequence[Result], timeout: float) -> str:
    """The outcome table in the issue's format (Markdown)."""
    found = counts(results)
    lines = ["| outcome | pixels | header only |", "|---|---:|---:|"]
    for outcome in OUTCOMES:
        title = ROW_TITLES[outcome].format(timeout=timeout)
        lines.append(f"| {title} | {found[outcome][True]:,} | {found[outcome][False]:,} |")
    return "\n".join(lines)


def failures(results: Iterable[Result], limit: int = 30) -> list[str]:
    """A description of each read that was not clean (the first `limit`)."""
    return [r.describe() for r in results if r.outcome != "clean"][:limit]


if __name__ == "__main__" and sys.argv[1:2] == ["--child"]:
    _bases, _work, _seed, _items, _reader = sys.argv[2:7]
    _child(Path(_bases), Path(_work), int(_seed), int(_items), _reader)
