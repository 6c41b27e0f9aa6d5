"""Reading a preprocessed store's table and a training run's splits: what training, evaluation and predict share."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.preprocess.store_schema import check_store_table


def load_store_table(store: str | Path) -> pd.DataFrame:
    """`preprocessed.parquet` of a store, checked against the store-row schema (`preprocess.store_schema`), with a
    clear error when the store is missing, empty, of an older schema or not a store."""
    path = Path(store) / "preprocessed.parquet"
    if not path.is_file():
        raise MissingInputError(f"{path}: not found; run `mammokit preprocess` first")
    try:
        table = pd.read_parquet(path)
    except (OSError, ValueError) as err:  # pyarrow's ArrowInvalid is a ValueError
        raise InvalidInputError(f"{path}: not a readable parquet table ({err})") from err
    if table.empty:
        raise InvalidInputError(f"{path}: the store holds no images")
    check_store_table(table, path)
    return table


def run_splits(model_dir: Path) -> pd.DataFrame | None:
    """The training run's patient-level splits (runs/NAME/splits.csv beside model/): exam_id, split; None when the
    model was released without its run."""
    splits_csv = model_dir.parent / "splits.csv"
    return pd.read_csv(splits_csv, dtype=str)[["exam_id", "split"]] if splits_csv.is_file() else None


def with_run_splits(table: pd.DataFrame, model_dir: Path) -> pd.DataFrame:
    """Attach the training run's splits when the store has none of its own and shares exams with the run; a store
    the run never saw (a held-out test set, another site) is returned as is."""
    splits = None if "split" in table.columns else run_splits(model_dir)
    if splits is None or not table["exam_id"].astype(str).isin(splits["exam_id"]).any():
        return table
    return table.merge(splits, on="exam_id", how="left")
