"""Shared plumbing of the public-dataset adapters (RSNA, VinDr-Mammo, CBIS-DDSM, CMMD, INbreast).

Each adapter matches scan rows to its label file by what the path or the header gives, then hands a per-row label
table to `finish`, which adds the label columns every dataset shares, keeps unmatched images with NaN labels,
makes cancer/benign/BI-RADS breast-level, and records the counts in `images.attrs["adapter_report"]` and the log.
Patient identifiers read from label files go through the same keyed hash as `read_dicom`, never raw.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammokit.dicom import VIEW_ALIASES
from mammokit.errors import InvalidInputError, MissingDependencyError, MissingInputError
from mammokit.ids import hash_id, safe_relpath
from mammokit.ids import resolve_salt as resolve_salt  # the adapters' salt rule: the reader's, one place

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

log = logging.getLogger("mammokit.datasets")

SHARED_COLUMNS = ("cancer", "benign", "birads", "density", "site", "split_group")
NUMERIC_COLUMNS = ("cancer", "benign", "birads")
DENSITY_LETTERS = {1: "A", 2: "B", 3: "C", 4: "D"}
SEPARATORS = (",", ";", "\t")
TRUE_WORDS = ("true", "t", "yes", "y", "1")
FALSE_WORDS = ("false", "f", "no", "n", "0")
SPLIT_NAMES = {"training": "train", "train": "train", "validation": "val", "val": "val", "valid": "val",
               "dev": "val", "test": "test", "testing": "test"}
SPLIT_RANK = {"train": 0, "val": 1, "test": 2}  # more held-out wins when a patient's rows disagree
CORE_VIEWS = ("CC", "MLO")


def hash_patient(value: Any, salt: str) -> str | None:
    """Keyed hash of a label-file patient id (None for a missing one); equals the header hash of the same PatientID."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return None
    text = str(value).strip()
    return hash_id(text, salt) if text else None


def locate_label_file(src: Path, labels: Path | None, names: Sequence[str], dataset: str) -> Path:
    """The label file: `labels` itself, or the first of `names` in `labels` (a folder) or in `src` and two folders up.

    Raises:
        FileNotFoundError: no label file was found (the message lists where it looked).
    """
    if labels is not None and labels.is_file():
        return labels
    if labels is not None and not labels.exists():
        raise MissingInputError(f"{labels}: label path for the {dataset} adapter does not exist")
    folders = [labels] if labels is not None else [src, *list(src.parents)[:2]]
    for folder in folders:
        for name in names:
            if (folder / name).is_file():
                return folder / name
    where = ", ".join(str(f) for f in folders)
    raise MissingInputError(f"{dataset} adapter: none of {', '.join(names)} found in {where}; pass labels=PATH")


def sniff_separator(path: Path) -> str:
    """The column separator of a CSV, decided from its header line: the most frequent of ',', ';' and tab outside
    quotes (',' on a tie or when none occurs). Errors name the file."""
    try:
        with open(path, "rb") as fh:
            head = fh.readline(1 << 20).decode("utf-8", errors="replace")
    except OSError as err:
        raise MissingInputError(f"{path}: cannot read the label table: {err.strerror or err}") from err
    counts = dict.fromkeys(SEPARATORS, 0)
    quoted = False
    for char in head:
        if char == '"':
            quoted = not quoted
        elif not quoted and char in counts:
            counts[char] += 1
    best = max(SEPARATORS, key=lambda sep: counts[sep])  # SEPARATORS order breaks ties: ',' first
    return best if counts[best] else ","


def read_table(path: Path, *, sep: str | None = None, dtype: Any = str) -> pd.DataFrame:
    """Read a CSV (or an .xlsx/.xls sheet) as strings with stripped column names; errors name the file.

    `sep` None sniffs the CSV separator from the header line (`sniff_separator`): ',', ';' or tab.
    """
    suffix = path.suffix.lower()
    try:
        if suffix in (".xlsx", ".xls"):
            table = pd.read_excel(path, dtype=dtype)
        else:
            table = pd.read_csv(path, sep=sep or sniff_separator(path), dtype=dtype)
    except ImportError as err:
        raise MissingDependencyError(f"{path}: reading {suffix} needs {err.name or 'an Excel reader'} "
                          f"(pip install openpyxl for .xlsx, xlrd for .xls) or a CSV export of the sheet") from err
    except (pd.errors.ParserError, ValueError, UnicodeDecodeError) as err:
        raise InvalidInputError(f"{path}: cannot parse the label table: {err}") from err
    table.columns = [str(c).strip() for c in table.columns]
    return table


def require_columns(table: pd.DataFrame, columns: Iterable[str], path: Path) -> None:
    """Raise a ValueError naming the file and the missing columns."""
    missing = [c for c in columns if c not in table.columns]
    if missing:
        raise InvalidInputError(f"{path}: missing column(s) {missing}; found {list(table.columns)}")


def clean(value: Any) -> str | None:
    """A label cell as stripped text, None for empty/NaN."""
    if value is None or (isinstance(value, float) and np.isnan(value)) or value is pd.NA:
        return None
    text = str(value).strip()
    return text or None


def number(value: Any) -> float:
    """The first integer in a cell ('BI-RADS 4' -> 4, '4c' -> 4, '3.0' -> 3), NaN when there is none."""
    match = re.search(r"\d+", clean(value) or "")
    return float(match.group()) if match else float("nan")


def boolean(value: Any) -> float:
    """A yes/no cell as 1.0/0.0 (True/False, 1/0, yes/no, any case; 1.0/0.0), NaN when empty or anything else."""
    text = (clean(value) or "").lower()
    if text in TRUE_WORDS:
        return 1.0
    if text in FALSE_WORDS:
        return 0.0
    try:
        code = float(text)
    except ValueError:
        return float("nan")
    return code if code in (0.0, 1.0) else float("nan")


def canonical_split(value: Any) -> str | None:
    """An official split name as train/val/test (training, validation, valid, dev, testing, any case); else None."""
    return SPLIT_NAMES.get((clean(value) or "").lower())


def density_letter(value: Any) -> str | None:
    """Breast density as A-D from 'DENSITY C', 'C', ACR '3' or 3.0; None when absent or unknown."""
    text = clean(value)
    if text is None:
        return None
    last = text.upper().split()[-1]
    if last in ("A", "B", "C", "D"):
        return last
    code = number(text)
    return DENSITY_LETTERS.get(int(code)) if not np.isnan(code) else None


def canonical_view(value: Any) -> str | None:
    """A label-file view spelling mapped to mammokit's canonical view code (None when unknown)."""
    text = clean(value)
    return VIEW_ALIASES.get(text.upper()) if text else None


def canonical_side(value: Any) -> str | None:
    """'L'/'R' from 'L', 'LEFT', 'right', ... (None when unknown)."""
    text = (clean(value) or "").upper()
    return text[0] if text[:1] in ("L", "R") and text in ("L", "R", "LEFT", "RIGHT") else None


def read_image_table(path: Path, required: Iterable[str]) -> pd.DataFrame:
    """A label table with one row per `image_id` (the file stem of each DICOM), indexed by it."""
    table = read_table(path)
    require_columns(table, required, path)
    table["image_id"] = table["image_id"].map(clean)
    repeated = table["image_id"][table["image_id"].duplicated()]
    if len(repeated):
        raise InvalidInputError(f"{path}: image_id repeated ({', '.join(repeated.astype(str).head(5))})")
    return table.set_index("image_id")


def match_by_file_stem(
    images: pd.DataFrame, table: pd.DataFrame
) -> tuple[pd.Series, pd.Series, pd.Series, pd.DataFrame]:
    """(file stem, parent folder, matched, label rows) per image; matched = its stem is an `image_id` of `table`."""
    parts = images["relpath"].map(path_parts)
    stem = parts.map(lambda p: Path(p[-1]).stem)
    folder = parts.map(lambda p: p[-2] if len(p) > 1 else None)
    matched = stem.isin(table.index)
    lab = table.reindex(stem.where(matched).to_numpy())
    lab.index = images.index
    return stem, folder, matched, lab


def path_parts(relpath: str) -> tuple[str, ...]:
    """Components of a scan row's relative path (OS-independent)."""
    return tuple(Path(relpath.replace("\\", "/")).parts)


def append_warning(images: pd.DataFrame, mask: pd.Series, text: str) -> None:
    """Append `text` to the `warnings` column of the rows in `mask` (in place)."""
    old = images["warnings"].astype(object) if "warnings" in images.columns else pd.Series(None, index=images.index)
    mask = mask.reindex(images.index).fillna(False).astype(bool)
    has = old.map(lambda w: isinstance(w, str) and bool(w))
    joined = old.where(~has, old.astype(str) + "; " + text).where(has, text)
    images["warnings"] = old.where(~mask, joined)


def fill_header(images: pd.DataFrame, side: pd.Series, view: pd.Series, dataset: str) -> dict[str, int]:
    """Fill missing laterality/view from the labels; on a disagreement keep the header and warn. Returns counts."""
    counts = {"laterality_from_labels": 0, "view_from_labels": 0, "laterality_conflicts": 0, "view_conflicts": 0}
    for col, values, source_col in (("laterality", side, None), ("view", view, "view_source")):
        if col not in images.columns:
            images[col] = None
        header = images[col]
        have_label = values.notna()
        missing = header.isna() & have_label
        conflict = header.notna() & have_label & (header.astype(object) != values.astype(object))
        images[col] = header.astype(object).where(~missing, values.astype(object))
        if source_col is not None:
            images[source_col] = images.get(source_col, pd.Series(None, index=images.index)).astype(object).where(
                ~missing, f"{dataset} labels")
        append_warning(images, missing, f"{col} taken from the {dataset} label file")
        append_warning(images, conflict, f"{col} in the header disagrees with the {dataset} label file; header kept")
        counts[f"{col}_from_labels"] = int(missing.sum())
        counts[f"{col}_conflicts"] = int(conflict.sum())
    return counts


def set_patients(images: pd.DataFrame, label_ids: pd.Series, salt: str) -> int:
    """Replace `patient_id` by the salted hash of the label-file patient id where known, also where that id names a
    folder or file in `safe_relpath`; returns how many changed."""
    hashed = label_ids.map(lambda v: hash_patient(v, salt))
    known = hashed.notna()
    old = images["patient_id"] if "patient_id" in images.columns else pd.Series(None, index=images.index)
    changed = int((known & (old.astype(object) != hashed.astype(object))).sum())
    images["patient_id"] = old.astype(object).where(~known, hashed.astype(object))
    if "safe_relpath" in images.columns:  # a label id that names folders or files is hashed there too
        images["safe_relpath"] = [safe_relpath(p, str(v).strip(), salt) if k and isinstance(p, str) else p
                                  for p, v, k in zip(images["safe_relpath"], label_ids.reindex(images.index),
                                                     known.reindex(images.index, fill_value=False), strict=True)]
    return changed


def box(x0: float, y0: float, x1: float, y1: float, kind: str, malignant: int, lesion_id: str) -> dict[str, Any]:
    """One lesion record in the index's `lesions` JSON (xyxy, pixel-edge coordinates, x1/y1 exclusive)."""
    return {"x0": float(x0), "y0": float(y0), "x1": float(x1), "y1": float(y1), "kind": kind,
            "malignant": int(malignant), "lesion_id": lesion_id}


def breast_level(images: pd.DataFrame, matched: pd.Series) -> int:
    """Make cancer/benign/birads the maximum over each breast (exam_id + laterality) among labelled rows.

    Label files are per image in most datasets; a breast's CC and MLO must carry the same breast-level label.
    Returns how many values were raised.
    """
    keys = ["exam_id", "laterality"]
    if not set(keys) <= set(images.columns):
        return 0
    usable = matched & images[keys].notna().all(axis=1)
    raised = 0
    for col in NUMERIC_COLUMNS:
        values = images[col].astype(float)
        sub = values[usable]
        best = sub.groupby([images.loc[usable, k] for k in keys]).transform("max")
        new = np.fmax(sub, best)
        raised += int((new.notna() & (sub.isna() | (new > sub))).sum())
        values.loc[sub.index] = new
        images[col] = values
    return raised


def unify_patient_splits(images: pd.DataFrame) -> int:
    """Give every patient one split: a patient whose rows carry several takes the most held-out (test > val > train)
    on all rows that carry a split, with a warning on the rows moved. Returns how many patients were moved."""
    if "patient_id" not in images.columns:
        return 0
    has = images["split_group"].notna() & images["patient_id"].notna()
    rank = images.loc[has, "split_group"].map(SPLIT_RANK)
    by_patient = rank.groupby(images.loc[has, "patient_id"])
    mixed = by_patient.transform("nunique") > 1
    if not mixed.any():
        return 0
    names = {v: k for k, v in SPLIT_RANK.items()}
    target = by_patient.transform("max")[mixed].map(names)
    moved = target[images.loc[target.index, "split_group"] != target]
    for name in sorted(set(moved)):
        append_warning(images, moved == name, f"this patient's images span several official splits; moved to {name}")
    images.loc[target.index, "split_group"] = target
    return int(images.loc[target.index, "patient_id"].nunique())


def other_views(images: pd.DataFrame) -> dict[str, int]:
    """How many indexed images have each view other than CC/MLO ({"AT": 19, "ML": 8, ...}), by canonical code."""
    if "view" not in images.columns:
        return {}
    views = images["view"].dropna().astype(str)
    counts = views[~views.isin(CORE_VIEWS)].value_counts()
    return {str(k): int(v) for k, v in sorted(counts.items())}


def finish(
    result: IndexResult,
    images: pd.DataFrame,
    *,
    dataset: str,
    matched: pd.Series,
    lesions: dict[Any, list[dict[str, Any]]] | None = None,
    skipped_rows: list[dict[str, str]] | None = None,
    report: dict[str, Any] | None = None,
) -> IndexResult:
    """Shared tail of every adapter: label columns, NaN for unmatched images, breast-level labels, counts.

    Args:
        result: the scan result the adapter started from (its skipped files and timing are kept).
        images: the scan rows with the adapter's label columns added (unmatched rows may hold anything).
        dataset: short dataset name written to the `dataset` column and the report.
        matched: bool per row of `images`: the label file covers this image.
        lesions: row index -> lesion records; rows without an entry get "[]".
        skipped_rows: extra files left out by the adapter ({"path", "reason"}), e.g. CBIS-DDSM ROI masks.
        report: adapter-specific counts merged into the report.
    """
    images = images.copy()
    matched = matched.reindex(images.index).fillna(False).astype(bool)
    for col in SHARED_COLUMNS:
        if col not in images.columns:
            images[col] = None
    for col in NUMERIC_COLUMNS:
        images[col] = pd.to_numeric(images[col], errors="coerce").astype(float).where(matched, np.nan)
    given_split = images["split_group"].astype(object).where(matched & images["split_group"].notna(), None)
    images["split_group"] = given_split.map(canonical_split).astype(object).where(given_split.notna(), None)
    unknown_split = given_split.notna() & images["split_group"].isna()
    append_warning(images, unknown_split, "split name in the label file is not train/val/test; left empty")
    for col in ("density", "site"):
        images[col] = images[col].astype(object).where(matched & images[col].notna(), None)
    unified = unify_patient_splits(images)
    raised = breast_level(images, matched)
    images["labelled"] = matched
    images["dataset"] = dataset
    lesions = lesions or {}
    images["lesions"] = [json.dumps(lesions.get(i, [])) for i in images.index]
    images = images.reset_index(drop=True)
    skipped = result.skipped
    if skipped_rows:
        skipped = pd.concat([skipped, pd.DataFrame(skipped_rows, columns=["path", "reason"])], ignore_index=True)
    summary = {"dataset": dataset, "images": len(images), "labelled": int(matched.sum()),
               "unlabelled": int((~matched).sum()), "raised_to_breast_level": raised,
               "lesions": int(sum(len(v) for v in lesions.values())), "adapter_skipped": len(skipped_rows or []),
               "split_names_unknown": int(unknown_split.sum()), "patients_split_unified": unified,
               "views_other": other_views(images), **(report or {})}
    images.attrs["adapter_report"] = summary
    level = logging.WARNING if summary["unlabelled"] or summary.get("label_rows_without_image") else logging.INFO
    log.log(level, "%s adapter: %s", dataset, json.dumps(summary))
    return type(result)(images, skipped, result.seconds)
