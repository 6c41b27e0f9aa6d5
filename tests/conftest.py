"""Shared fixtures: one tiny synthetic store per session (synth → index → preprocess) and tiny training configs.

The store takes a few seconds to build and is read-only for tests: a test that needs a changed table copies it.
Torch is limited to one thread per process: the machine has two cores shared by several processes, and torch's
default (one thread per core) makes every spinning thread wait on the others (a tiny step goes from 0.05 s to 1 s).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch

torch.set_num_threads(1)

STORE_EXAMS = 12
STORE_SEED = 7
TINY_INPUT = (64, 40)  # global input per view (H, W)
TINY_FULL_SCALE = 2  # the local pathway crops from a 128x80 rendering


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Files holding a slow test first (order otherwise kept): `make test` hands whole files to 2 processes, and
    starting the long ones first keeps one process from finishing the run alone."""
    slow_files = {item.path for item in items if item.get_closest_marker("slow")}
    items.sort(key=lambda item: item.path not in slow_files)


@pytest.fixture(scope="session", autouse=True)
def mammokit_config_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """mammokit's config folder for the session (env MAMMOKIT_CONFIG_DIR): its random id salt, made on first use,
    lands there and never in the user's home. MAMMOKIT_ID_SALT is cleared, so tests hash as a plain install does."""
    from mammokit.ids import ENV_CONFIG_DIR, ENV_SALT

    with pytest.MonkeyPatch.context() as mp:
        folder = tmp_path_factory.mktemp("mammokit-config")
        mp.setenv(ENV_CONFIG_DIR, str(folder))
        mp.delenv(ENV_SALT, raising=False)
        yield folder


@dataclass(frozen=True)
class SynthStore:
    """Where the session's synthetic archive, its index and its preprocessed store live."""

    raw: Path  # synth output: dicom/, labels.csv, lesions.csv
    index: Path  # images.parquet
    store: Path  # preprocessed store (preprocessed.parquet, view_stats.json, images/)


@pytest.fixture(scope="session")
def dciodvfy() -> str:
    """dicom3tools' validator; skips without it, unless MAMMOKIT_REQUIRE_DICOM3TOOLS=1 (CI) makes that a failure."""
    path = shutil.which("dciodvfy")
    if path is None:
        if os.environ.get("MAMMOKIT_REQUIRE_DICOM3TOOLS") == "1":
            pytest.fail("dciodvfy (dicom3tools) is not installed but MAMMOKIT_REQUIRE_DICOM3TOOLS=1")
        pytest.skip("dciodvfy (dicom3tools) is not installed")
    return path


@pytest.fixture(scope="session")
def synth_store(tmp_path_factory: pytest.TempPathFactory) -> SynthStore:
    """12 four-view exams (6 with a cancer) at 0.4 mm, global long side 256: 48 small uint16 images.

    With seed 0 the patient-level split puts 10 exams (5 positive) in train and 2 (1 positive) in val, so the
    validation AUC is defined and a balanced epoch of 10 draws holds every training exam exactly once.
    """
    from mammokit.datasets.index import build_index, write_index
    from mammokit.preprocess.config import PreprocessConfig
    from mammokit.preprocess.pipeline import run_pipeline
    from mammokit.synth import generate

    root = tmp_path_factory.mktemp("synth_store")
    generate(root / "raw", exams=STORE_EXAMS, seed=STORE_SEED, size_scale=0.2, masks=False, prevalence=0.5)
    write_index(build_index(root / "raw", adapter="synth"), root / "images.parquet")
    summary = run_pipeline(root / "images.parquet", root / "store",
                           PreprocessConfig(spacing_mm=0.4, global_long_side=256, patch_size=64),
                           workers=1, progress=False)
    assert summary["failed"] == 0, summary
    return SynthStore(raw=root / "raw", index=root / "images.parquet", store=root / "store")


def tiny_train_dict(store: Path, runs_dir: Path, **sections: dict[str, Any]) -> dict[str, Any]:
    """A `TrainConfig` mapping for a tiny four-view model on `store`; `sections` update its top-level sections."""
    cfg: dict[str, Any] = {
        "name": "tiny", "runs_dir": str(runs_dir), "seed": 0,
        "data": {"store": str(store), "input_size": list(TINY_INPUT), "full_scale": TINY_FULL_SCALE, "batch_size": 2,
                 "num_workers": 0, "augment": {"enabled": False}},
        "model": {"name": "multiview_gmic",
                  "kwargs": {"preset": "cpu", "image_size": list(TINY_INPUT),
                             "full_size": [TINY_INPUT[0] * TINY_FULL_SCALE, TINY_INPUT[1] * TINY_FULL_SCALE],
                             "patch_size": 16, "num_patches": 2}},
        "loss": {"kwargs": {"kind": "bce"}},
        "optim": {"lr": 1e-3, "warmup_fraction": 0.0},
        "stages": [{"name": "all", "epochs": 2}],
        "trainer": {"accelerator": "cpu", "devices": 1, "progress_bar": False, "log_every_n_steps": 1},
    }
    for key, value in sections.items():
        cfg[key] = {**cfg[key], **value} if isinstance(value, dict) and isinstance(cfg.get(key), dict) else value
    return cfg


@pytest.fixture
def tiny_config(synth_store: SynthStore, tmp_path: Path) -> Callable[..., Any]:
    """Factory: `tiny_config(**sections)` → a validated `TrainConfig` writing its runs under this test's tmp_path."""
    from mammokit.training.config import TrainConfig

    def make(**sections: dict[str, Any]) -> TrainConfig:
        return TrainConfig.model_validate(tiny_train_dict(synth_store.store, tmp_path / "runs", **sections))

    return make


class SimulatedKill(RuntimeError):
    """Raised by `BatchRecorder` to stop a run the way a crash would (no clean end of the stage)."""


@contextmanager
def simulated_kill() -> Iterator[None]:
    """Expect the block to end by `SimulatedKill`. Lightning tears the run down while the exception passes: a loader
    worker spawned for the new epoch and stopped during its start-up may die then (SIGABRT at its exit, seen on a
    loaded machine), and Lightning raises that instead, with the kill as its context. Either way the run was killed
    where the test said; any other error fails the test."""
    try:
        yield
    except SimulatedKill:
        return
    except RuntimeError as err:
        if not isinstance(err.__context__, SimulatedKill) or "DataLoader worker" not in str(err):
            raise
        return
    pytest.fail("the run was not killed")


class BatchRecorder(L.Callback):
    """Appends one JSON line per training batch (stage, epoch, step, exam ids) to `<folder>/<prefix>rank<r>.jsonl`;
    optionally raises at a given global step of a given stage to simulate a killed run."""

    def __init__(self, folder: str | Path, prefix: str = "", kill_at: tuple[str, int] | None = None) -> None:
        self.folder, self.prefix, self.kill_at = Path(folder), prefix, kill_at

    def on_train_batch_start(self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any,
                             batch_idx: int) -> None:
        stage = str(trainer.loggers[0].version).partition("+resume")[0]
        if self.kill_at is not None and self.kill_at == (stage, trainer.global_step):
            raise SimulatedKill(f"simulated kill at {self.kill_at}")
        record = {"stage": stage, "epoch": trainer.current_epoch, "step": trainer.global_step, "batch_idx": batch_idx,
                  "exams": list(batch["exam_id"]), "index": [int(i) for i in batch["index"]]}
        self.folder.mkdir(parents=True, exist_ok=True)
        with (self.folder / f"{self.prefix}rank{trainer.global_rank}.jsonl").open("a") as f:
            f.write(json.dumps(record) + "\n")


def read_records(path: Path) -> list[dict[str, Any]]:
    """The JSON lines a `BatchRecorder` wrote."""
    return [json.loads(line) for line in path.read_text().splitlines()]
