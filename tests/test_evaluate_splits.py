"""Which exams `mammokit evaluate` and `calibrate` score: the store's or the run's splits, never silently all."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from mammokit.evaluation.evaluate import select_split, training_overlap
from mammokit.release.store_table import with_run_splits


@pytest.fixture()
def run_model(tmp_path: Path) -> Path:
    """A run folder layout: runs/NAME/splits.csv beside runs/NAME/model/."""
    model_dir = tmp_path / "run" / "model"
    model_dir.mkdir(parents=True)
    pd.DataFrame({"exam_id": ["e1", "e2", "e3"], "patient_id": ["p1", "p2", "p3"],
                  "split": ["train", "train", "val"]}).to_csv(tmp_path / "run" / "splits.csv", index=False)
    return model_dir


def _images(*exams: str) -> pd.DataFrame:
    """Two images per exam, as a store's table has them."""
    return pd.DataFrame({"exam_id": [e for e in exams for _ in range(2)], "image_id": range(2 * len(exams))})


def test_training_store_takes_the_run_splits(run_model: Path) -> None:
    table = with_run_splits(_images("e1", "e2", "e3"), run_model)
    chosen, used = select_split(table, "val")
    assert used == "val" and set(chosen["exam_id"]) == {"e3"} and len(chosen) == 2
    assert training_overlap(chosen, run_model) == 1


def test_missing_split_is_an_error_naming_store_and_splits(run_model: Path) -> None:
    table = with_run_splits(_images("e1", "e2", "e3"), run_model)
    with pytest.raises(ValueError, match=r"store-x: no exams in split 'test' \(its splits: train, val\)"):
        select_split(table, "test", "store-x")
    everything, used = select_split(table, "all")
    assert used == "all" and len(everything) == 6 and training_overlap(everything, run_model) == 3


def test_a_store_the_run_never_saw_is_used_whole(run_model: Path) -> None:
    table = with_run_splits(_images("x1", "x2"), run_model)
    assert "split" not in table.columns
    chosen, used = select_split(table, "test")
    assert used == "all" and len(chosen) == 4 and training_overlap(chosen, run_model) == 0


def test_store_splits_win_over_the_run_splits(run_model: Path) -> None:
    table = _images("e1", "e2").assign(split=["test", "test", "val", "val"])
    assert with_run_splits(table, run_model) is table
    chosen, used = select_split(table, "test")
    assert used == "test" and set(chosen["exam_id"]) == {"e1"}


def test_released_model_without_run_splits(tmp_path: Path) -> None:
    (tmp_path / "model").mkdir()
    table = _images("e1")
    assert with_run_splits(table, tmp_path / "model") is table
    assert training_overlap(table, tmp_path / "model") == 0
