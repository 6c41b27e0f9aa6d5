"""Stores and runs that other runs cannot corrupt: one writer per store (a lock naming its holder, stale locks taken
over), no resuming into a store or run made with other settings (refused, or replaced whole with --overwrite), no
temporary files left from killed writes, and files written with the mode the umask asks for.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from mammokit.config import config_hash, dump_config
from mammokit.errors import InvalidInputError
from mammokit.io import atomic_write_text
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import run_pipeline
from mammokit.preprocess.store_lock import LOCK_NAME, StoreLockedError, _process_start, acquire, release
from mammokit.training.run import prepare_run_folder, train

CFG = PreprocessConfig(spacing_mm=0.4, global_long_side=128, patch_size=64)
CLI = [sys.executable, "-m", "mammokit.cli", "preprocess"]


@pytest.fixture(scope="module")
def index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One synth exam (4 images), indexed."""
    from mammokit.datasets.index import build_index, write_index
    from mammokit.synth import generate

    root = tmp_path_factory.mktemp("safety")
    generate(root / "raw", exams=1, seed=4, size_scale=0.2, masks=False)
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    return root / "images.parquet"


def assert_consistent(store: Path, cfg: PreprocessConfig, n: int) -> None:
    """One config throughout: the recorded config, every record and every table row; nothing else left behind."""
    h = config_hash(cfg)
    assert json.loads((store / "preprocess_config.json").read_text())["config_hash"] == h
    records = [json.loads(p.read_text()) for p in (store / "records").glob("*.json")]
    table = pd.read_parquet(store / "preprocessed.parquet")
    assert len(records) == len(table) == n
    assert {r["config_hash"] for r in records} == set(table["config_hash"]) == {h}
    suffix = {"tiff": ".tif", "png": ".png"}[cfg.image_format]
    assert sorted(p.name for p in (store / "images").iterdir()) == sorted(Path(p).name for p in table["image_path"])
    assert all(p.endswith(suffix) for p in table["image_path"])
    assert not (store / LOCK_NAME).exists()


def cli_args(index: Path, store: Path, cfg: PreprocessConfig) -> list[str]:
    sets = [f"{k}={v}" for k, v in cfg.model_dump(mode="json").items() if k in ("spacing_mm", "global_long_side",
                                                                               "patch_size", "image_format")]
    return [*CLI, str(index), "--out", str(store), *(a for s in sets for a in ("--set", s))]


def one_line_error(done: subprocess.CompletedProcess) -> str:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1, done.stderr
    return lines[0]


def test_two_preprocess_processes_on_one_store(index: Path, tmp_path: Path) -> None:
    """The second writer is refused with one line naming the first; the store is the first run's alone. Then the
    second config is refused on the finished store, and --overwrite replaces the store whole."""
    store, other = tmp_path / "store", CFG.model_copy(update={"image_format": "png"})
    env = {**os.environ, "MAMMOKIT_TRACEBACK": ""}
    first = subprocess.Popen(cli_args(index, store, CFG), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True)
    try:
        deadline = time.monotonic() + 120
        while not (store / LOCK_NAME).is_file() and time.monotonic() < deadline and first.poll() is None:
            time.sleep(0.05)
        os.kill(first.pid, signal.SIGSTOP)  # hold the first run mid-way, its lock taken
        assert json.loads((store / LOCK_NAME).read_text())["pid"] == first.pid
        second = subprocess.run(cli_args(index, store, other), env=env, capture_output=True, text=True, timeout=120)
    finally:
        os.kill(first.pid, signal.SIGCONT)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 0, err
    line = one_line_error(second)
    assert f"is being written by another preprocess run (pid {first.pid} on {socket.gethostname()}" in line
    assert_consistent(store, CFG, 4)

    again = subprocess.run(cli_args(index, store, other), env=env, capture_output=True, text=True, timeout=120)
    assert "was preprocessed with another config (image_format 'tiff' → 'png')" in one_line_error(again)
    assert "--overwrite" in one_line_error(again)
    assert_consistent(store, CFG, 4)
    replaced = subprocess.run([*cli_args(index, store, other), "--overwrite"], env=env, capture_output=True,
                              text=True, timeout=300)
    assert replaced.returncode == 0, replaced.stderr
    assert_consistent(store, other, 4)  # no .tif of the first run is left


def test_another_index_is_refused_a_grown_one_resumes_and_overwrite_replaces(index: Path, tmp_path: Path) -> None:
    store, table = tmp_path / "store", pd.read_parquet(index)
    run_pipeline(table.iloc[:3], store, CFG, progress=False)
    with pytest.raises(InvalidInputError, match=r"holds 2 images that are not in this index.*--overwrite"):
        run_pipeline(table.iloc[2:], store, CFG, progress=False)  # would orphan images 0 and 1
    assert_consistent(store, CFG, 3)
    grown = run_pipeline(table, store, CFG, progress=False)  # the same archive with one more image
    assert (grown["processed"], grown["skipped_done"]) == (1, 3)
    assert_consistent(store, CFG, 4)
    summary = run_pipeline(table.iloc[:1], store, CFG, progress=False, overwrite=True)
    assert (summary["processed"], summary["skipped_done"]) == (1, 0)
    assert_consistent(store, CFG, 1)


def dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def write_lock(store: Path, **holder: object) -> None:
    store.mkdir(parents=True, exist_ok=True)
    (store / LOCK_NAME).write_text(json.dumps({"host": socket.gethostname(), "started": "earlier",
                                               "command": "preprocess", **holder}))


def test_a_stale_lock_is_taken_over_and_a_live_one_refused(index: Path, tmp_path: Path,
                                                           caplog: pytest.LogCaptureFixture) -> None:
    store = tmp_path / "store"
    write_lock(store, pid=dead_pid())
    run_pipeline(pd.read_parquet(index).iloc[:1], store, CFG, progress=False)
    assert "took over the lock of a run that is gone" in caplog.text
    assert not (store / LOCK_NAME).exists()

    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        write_lock(store, pid=sleeper.pid, process_start=_process_start(sleeper.pid))
        with pytest.raises(StoreLockedError, match=rf"another preprocess run \(pid {sleeper.pid} on "):
            run_pipeline(pd.read_parquet(index).iloc[:1], store, CFG, progress=False)
    finally:
        sleeper.kill()
        sleeper.wait()
    assert json.loads((store / LOCK_NAME).read_text())["pid"] == sleeper.pid  # a refused run leaves it alone


def test_lock_rules_for_reused_pids_and_other_hosts(tmp_path: Path) -> None:
    write_lock(tmp_path, pid=os.getpid(), process_start="1")  # this pid, but a process started at boot: reused
    holder = acquire(tmp_path, "test")
    assert holder["took_over"]["process_start"] == "1" and holder["pid"] == os.getpid()
    with pytest.raises(StoreLockedError, match=f"pid {os.getpid()}"):  # now held by a live process: this one
        acquire(tmp_path, "test")
    release(tmp_path)
    assert not (tmp_path / LOCK_NAME).exists()
    write_lock(tmp_path, pid=dead_pid(), host="elsewhere")  # cannot be checked from here: never taken over
    with pytest.raises(StoreLockedError, match=f"on elsewhere.*delete {tmp_path / LOCK_NAME}"):
        acquire(tmp_path, "test")


def test_temporary_files_of_killed_writes_are_removed_at_start(index: Path, tmp_path: Path) -> None:
    store = tmp_path / "store"
    table = pd.read_parquet(index).iloc[:2]
    run_pipeline(table, store, CFG, progress=False)
    leftovers = [store / "images" / ".2.25.1.k3j_x9a1.tmp.tif", store / ".preprocessed.ab12cd34.tmp.parquet",
                 store / "records" / ".2.25.1.zz0000aa.tmp.json"]
    for path in leftovers:
        path.write_bytes(b"half-written")
    keep = store / "images" / "notes.tmp.txt"  # not a name atomic_write makes
    keep.write_text("mine")
    summary = run_pipeline(table, store, CFG, progress=False)
    assert summary["skipped_done"] == 2
    assert not any(p.exists() for p in leftovers) and keep.is_file()


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o077, 0o600)])
def test_files_get_the_mode_the_umask_asks_for(index: Path, tmp_path: Path, umask: int, mode: int) -> None:
    old = os.umask(umask)
    try:
        path = atomic_write_text(tmp_path / "a.json", "{}")
        run_pipeline(pd.read_parquet(index).iloc[:1], tmp_path / "store", CFG, progress=False)
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    written = [p for p in (tmp_path / "store").rglob("*") if p.is_file()]
    assert {oct(p.stat().st_mode & 0o777) for p in written} == {oct(mode)}  # images are written by the workers


def test_training_into_a_run_of_another_config_is_refused(tiny_config, tmp_path: Path) -> None:
    first = tiny_config()
    run_dir = Path(first.runs_dir) / first.name
    run_dir.mkdir(parents=True)
    dump_config(first, run_dir / "config.yaml")
    (run_dir / "stages").mkdir()
    (run_dir / "stages" / "done-marker").write_text("a finished stage of the first config")
    (run_dir / ".metrics.ab12cd34.tmp.csv").write_text("half")
    other = tiny_config(optim={"lr": 5e-4})
    with pytest.raises(InvalidInputError, match=r"holds a run of another config \(optim\.lr 0\.001 → 0\.0005\).*"
                                                "--overwrite"):
        train(other)
    assert (run_dir / "stages" / "done-marker").is_file()
    prepare_run_folder(tiny_config(trainer={"progress_bar": True}, data={"num_workers": 1}), run_dir)  # a resume
    assert (run_dir / "stages" / "done-marker").is_file() and not (run_dir / ".metrics.ab12cd34.tmp.csv").exists()
    prepare_run_folder(other, run_dir, overwrite=True)
    assert run_dir.is_dir() and not any(run_dir.iterdir())


RACE = """
import sys, time
from mammokit.preprocess.store_lock import StoreLockedError, acquire
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # start together
try:
    acquire(sys.argv[1], "race")
except StoreLockedError:
    print("refused")
else:
    print("took it")
    time.sleep(5)  # hold it while the slowest racer tries
"""


def test_of_runs_racing_for_a_stale_lock_exactly_one_takes_it(tmp_path: Path) -> None:
    write_lock(tmp_path, pid=dead_pid())
    start = str(time.time() + 4)  # after every racer's imports
    racers = [subprocess.Popen([sys.executable, "-c", RACE, str(tmp_path), start], stdout=subprocess.PIPE, text=True)
              for _ in range(4)]
    said = sorted(r.communicate(timeout=60)[0].strip() for r in racers)
    assert said == ["refused", "refused", "refused", "took it"]
