"""Where a store's original DICOM files are, without writing their paths into the store.

Raw paths stay in the local index (`images.parquet`): PACS exports name folders by patient. A store records only
which index it was built from (`source_index.json`); readers that need an original (`mammokit qc`, `mammokit show`,
the evaluation report's overlays) look its path up there by image id, in memory. A store built from an in-memory
index (`predict`) names none: its caller holds the paths.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from mammokit.io import atomic_write_text

__all__ = ["SOURCE_LINK", "link_index", "source_paths", "with_sources"]

log = logging.getLogger(__name__)
SOURCE_LINK = "source_index.json"


def link_index(store: Path, index: str | Path | pd.DataFrame) -> None:
    """Record in `store` the index file it is built from (nothing for an in-memory index)."""
    if isinstance(index, pd.DataFrame):
        return
    atomic_write_text(store / SOURCE_LINK, json.dumps({"index": str(Path(index).resolve())}, indent=1))


def source_paths(store: Path) -> dict[str, str]:
    """image_id → path of the original file, from the index `store` names; {} when it names none or that is gone."""
    link = Path(store) / SOURCE_LINK
    if not link.is_file():
        return {}
    try:
        index = Path(json.loads(link.read_text())["index"])
        table = pd.read_parquet(index, columns=["image_id", "path"])
    except (OSError, ValueError, KeyError, TypeError) as err:  # moved, deleted or not an index
        log.warning("%s: cannot read the store's index, originals are not shown (%s)", link, err)
        return {}
    return dict(zip(table["image_id"].astype(str), table["path"].astype(str), strict=True))


def with_sources(table: pd.DataFrame, store: Path) -> pd.DataFrame:
    """Store rows with each original's `path` added (in memory only: never write the result back to the store)."""
    if "path" in table.columns:  # a store written before paths left it
        return table
    paths = source_paths(store)
    return table.assign(path=table["image_id"].astype(str).map(paths) if len(table) else pd.Series(dtype=object))
