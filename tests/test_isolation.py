"""Batch commands survive what kills or stalls a reader: a segfault, an abort, a hang, a BaseException (pyo3's
PanicException is one). Each costs exactly its own item, with a reason that says what happened; the rest go on.

The crashes are real (a null-pointer read, `os.abort`, a sleep past the limit) in functions of this module; the
reader itself no longer crashes on any file we can make, so the pipeline is checked with its per-image function
wrapped by one that dies on chosen rows, and end to end with a file that truly fails to parse.
"""

from __future__ import annotations

import ctypes
import os
import sys
import time
import types
from functools import partial
from pathlib import Path

import pytest

from mammokit.isolate import ItemFailure, WorkerStartError, isolated_map

# Heavy modules are imported inside the tests: every worker imports this module to find its function (Python 3.11's
# fork server cannot preload a module from the tests folder), so its top level must stay light.


class FakePanic(BaseException):
    """Like pyo3's PanicException: a BaseException, which `except Exception` does not catch."""


SEGFAULT, ABORT, HANG, PANIC, RAISE, EXIT = 2, 4, 6, 8, 9, 11


def square_or_die(x: int) -> int:
    """x², except for the items that crash, hang, panic, raise or exit the process."""
    if x == SEGFAULT:
        ctypes.string_at(0)  # reads address 0: SIGSEGV
    if x == ABORT:
        os.abort()
    if x == HANG:
        time.sleep(120)
    if x == PANIC:
        raise FakePanic("called `Option::unwrap()` on a `None` value")
    if x == RAISE:
        raise ValueError("bad item")
    if x == EXIT:
        os._exit(3)
    return x * x


def unpicklable(x: int):
    return lambda: x


def environment(name: str) -> tuple[str | None, int]:
    mask = os.umask(0)
    os.umask(mask)
    return os.environ.get(name), mask


@pytest.mark.parametrize("workers", [1, 2])
def test_each_crash_hang_or_panic_costs_only_its_item(workers: int) -> None:
    t0 = time.monotonic()
    out = dict(isolated_map(square_or_die, range(14), workers=workers, time_limit_s=2))
    assert time.monotonic() - t0 < 30  # the hang cost its 2 s, not 120
    failed = {i: o.reason for i, o in out.items() if isinstance(o, ItemFailure)}
    assert failed == {SEGFAULT: "worker crashed (SIGSEGV)", ABORT: "worker crashed (SIGABRT)",
                      HANG: "timed out after 2 s",
                      PANIC: "FakePanic: called `Option::unwrap()` on a `None` value",
                      RAISE: "ValueError: bad item", EXIT: "worker exited with status 3"}
    assert {i: o for i, o in out.items() if i not in failed} == {i: i * i for i in range(14) if i not in failed}


def test_a_raised_exception_comes_back_whole_and_an_unsendable_result_is_a_failure() -> None:
    out = dict(isolated_map(square_or_die, [RAISE, PANIC]))
    assert isinstance(out[0].error, ValueError) and str(out[0].error) == "bad item"
    assert isinstance(out[1].error, FakePanic)
    (_, result), = isolated_map(unpicklable, [1])
    assert isinstance(result, ItemFailure) and result.reason.startswith("result could not be sent back")


def test_workers_see_the_parents_environment_and_umask(monkeypatch: pytest.MonkeyPatch) -> None:
    """A fork server's child would otherwise keep the server's environment and umask from when it started."""
    list(isolated_map(square_or_die, [1]))  # the fork server is running before the change
    monkeypatch.setenv("MAMMOKIT_ISOLATE_PROBE", "seen")
    old = os.umask(0o027)
    try:
        (_, (value, mask)), = isolated_map(environment, ["MAMMOKIT_ISOLATE_PROBE"])
    finally:
        os.umask(old)
    assert (value, mask) == ("seen", 0o027)


def test_closing_early_ends_the_workers_at_once() -> None:
    t0 = time.monotonic()
    outcomes = isolated_map(square_or_die, [1, HANG, HANG], workers=3)
    assert next(outcomes) == (0, 1)
    outcomes.close()
    assert time.monotonic() - t0 < 30


def test_a_worker_that_cannot_start_is_an_error_not_an_item_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    """A function the workers cannot import (here: a module that exists only in this process) fails them all at
    start-up: no item is to blame, so the batch stops with a clear error instead of failing every item."""
    module = types.ModuleType("only_in_the_parent")
    exec("def f(x):\n    return x\n", module.__dict__)
    monkeypatch.setitem(sys.modules, "only_in_the_parent", module)
    with pytest.raises(WorkerStartError, match="could not start"):
        list(isolated_map(module.f, [1, 2]))


@pytest.fixture(scope="module")
def small_index(tmp_path_factory: pytest.TempPathFactory):
    """One synth exam (4 images) indexed."""
    from mammokit.datasets.index import build_index
    from mammokit.synth import generate

    root = tmp_path_factory.mktemp("isolation")
    generate(root / "raw", exams=1, seed=2, size_scale=0.2, masks=False)
    return build_index(root / "raw", adapter="synth").images


def preprocess_or_die(row: dict, **kwargs) -> dict:
    """The pipeline's per-image function, except for rows named after a way to die."""
    from mammokit.preprocess.pipeline import _safe_process
    from mammokit.preprocess.store_schema import StoreRowError

    how = row["image_id"]
    if how == "segfault":
        ctypes.string_at(0)
    if how == "hang":
        time.sleep(120)
    if how == "panic":
        raise FakePanic("decoder panicked")
    if how == "bug":
        raise StoreRowError("a row that breaks the store schema")
    return _safe_process(row, **kwargs)


def test_preprocess_rows_that_crash_hang_or_panic_become_failure_rows(small_index, tmp_path: Path) -> None:
    """What `run_pipeline` does with each outcome: records for good rows, failure rows (with their image id) for
    a crash, a hang and a panic, and a StoreRowError (a bug) stops the run."""
    from mammokit.config import config_hash
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import _run_local
    from mammokit.preprocess.store_schema import StoreRowError

    cfg = PreprocessConfig(spacing_mm=0.4, global_long_side=128)
    fn = partial(preprocess_or_die, store=str(tmp_path), cfg_dict=cfg.model_dump(), cfg_hash=config_hash(cfg),
                 salt="test")
    good = small_index.to_dict("records")
    bad = [{**good[0], "image_id": how, "safe_relpath": f"{how}.dcm"} for how in ("segfault", "hang", "panic")]
    rows = [bad[0], *good[:2], bad[1], *good[2:], bad[2]]
    out = {r["image_id"]: r for r in _run_local(rows, fn, workers=2, time_limit_s=15)}
    assert {k: v.get("_failed") for k, v in out.items() if "_failed" in v} == {
        "segfault": "worker crashed (SIGSEGV)", "hang": "timed out after 15 s", "panic": "FakePanic: decoder panicked"}
    assert out["segfault"]["safe_relpath"] == "segfault.dcm"
    assert sorted(k for k, v in out.items() if "_failed" not in v) == sorted(small_index["image_id"])
    with pytest.raises(StoreRowError, match="breaks the store schema"):
        list(_run_local([*good[:1], {**good[0], "image_id": "bug"}], fn, workers=1, time_limit_s=30))


def test_preprocess_runs_every_image_in_a_worker_and_a_broken_file_fails_alone(small_index, tmp_path: Path) -> None:
    import pandas as pd

    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import run_pipeline

    cut = tmp_path / "cut.dcm"
    data = Path(small_index["path"].iloc[0]).read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    bad = small_index.iloc[[0]].assign(image_id="cut", sop_uid="cut", path=str(cut), safe_relpath="cut.dcm")
    index = pd.concat([bad, small_index], ignore_index=True)
    summary = run_pipeline(index, tmp_path / "store", PreprocessConfig(spacing_mm=0.4, global_long_side=128),
                           workers=1, progress=False)
    assert (summary["processed"], summary["failed"]) == (4, 1)
    failures = pd.read_csv(tmp_path / "store" / "failures.csv")
    assert failures["image_id"].tolist() == ["cut"] and failures["reason"].iloc[0].startswith("truncated file")
