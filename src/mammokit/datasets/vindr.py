"""Adapter for VinDr-Mammo (PhysioNet): breast-level BI-RADS and density, finding boxes, official split.

Layout: `breast-level_annotations.csv` (study_id, series_id, image_id, laterality, view_position, height, width,
breast_birads "BI-RADS 1".."BI-RADS 5", breast_density "DENSITY A".."DENSITY D", split training/test) and
`finding_annotations.csv` (the same keys plus finding_categories, finding_birads, xmin, ymin, xmax, ymax) beside
`images/<study_id>/<image_id>.dicom`. Images are matched on the file name (image_id).

VinDr-Mammo has no pathology, so malignancy is a proxy: `cancer` = breast BI-RADS 4-5, `benign` = BI-RADS 2-3, and a
finding box is `malignant` when its finding BI-RADS is 4-5. Boxes are in the DICOM pixel grid; when the label's
height/width differ from the header's rows/columns the boxes are rescaled to the header grid (with a warning).
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from mammokit.datasets.public_common import (
    append_warning,
    box,
    canonical_side,
    canonical_view,
    clean,
    density_letter,
    fill_header,
    finish,
    locate_label_file,
    match_by_file_stem,
    number,
    read_image_table,
    read_table,
    require_columns,
    resolve_salt,
    set_patients,
)

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

BREAST_FILE = "breast-level_annotations.csv"
FINDING_FILE = "finding_annotations.csv"
REQUIRED = ("study_id", "image_id", "laterality", "view_position", "breast_birads")
FINDING_REQUIRED = ("image_id", "finding_categories", "xmin", "ymin", "xmax", "ymax")


def finding_kind(value: Any) -> str:
    """"['Mass', 'Suspicious Calcification']" -> 'Mass, Suspicious Calcification' (plain text passes through)."""
    text = clean(value) or ""
    if text.startswith("["):
        try:
            items = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text.strip("[]").replace("'", "")
        return ", ".join(str(i) for i in items)
    return text


def number_float(value: Any) -> float:
    """A coordinate cell as float (NaN when empty)."""
    text = clean(value)
    try:
        return float(text) if text is not None else float("nan")
    except ValueError:
        return float("nan")


def _findings(path: Path, rows: pd.Series, scale: dict[Any, tuple[float, float]]) -> dict[Any, list[dict]]:
    """Lesion records per scan row from finding_annotations.csv (rows: image_id -> scan row index)."""
    table = read_table(path)
    require_columns(table, FINDING_REQUIRED, path)
    table = table[table["image_id"].map(clean).isin(rows.index)]
    lesions: dict[Any, list[dict]] = {}
    for n, rec in enumerate(table.to_dict("records")):
        coords = [number_float(rec[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(c != c for c in coords):  # "No Finding" rows carry no box
            continue
        image_id = clean(rec["image_id"])
        row = rows[image_id]
        sx, sy = scale.get(row, (1.0, 1.0))
        birads = number(rec.get("finding_birads"))
        lesions.setdefault(row, []).append(box(
            coords[0] * sx, coords[1] * sy, coords[2] * sx, coords[3] * sy, finding_kind(rec["finding_categories"]),
            int(birads >= 4), f"{image_id}:{n}"))
    return lesions


def adapt_vindr(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None) -> IndexResult:
    """Join VinDr-Mammo breast-level labels and finding boxes onto the scan by image_id (file name).

    Args:
        result: the header scan of the image folder.
        src: the scanned folder (the CSVs are looked for here and two folders up when `labels` is None).
        labels: breast-level_annotations.csv or the folder holding it (finding_annotations.csv is read beside it).
        salt: identifier-hash key; must be the one the scan used.
    """
    path = locate_label_file(Path(src), labels, (BREAST_FILE,), "vindr")
    table = read_image_table(path, REQUIRED)
    images = result.images.copy()
    stem, folder, matched, lab = match_by_file_stem(images, table)
    study = lab["study_id"].map(clean)
    mismatch = matched & (folder != study)
    append_warning(images, mismatch, "parent folder is not the VinDr study_id of this image_id")

    birads = lab["breast_birads"].map(number)
    images["birads"] = birads
    images["cancer"] = (birads >= 4).astype(float).where(birads.notna())
    images["benign"] = birads.isin([2, 3]).astype(float).where(birads.notna())
    images["density"] = lab["breast_density"].map(density_letter) if "breast_density" in lab.columns else None
    images["site"] = "vindr"
    images["split_group"] = lab["split"].map(clean) if "split" in lab.columns else None
    images["source_image_id"] = stem.where(matched, None)

    scale: dict[Any, tuple[float, float]] = {}
    size_mismatch = pd.Series(False, index=images.index)
    if {"height", "width"} <= set(lab.columns):
        h, w = lab["height"].map(number_float), lab["width"].map(number_float)
        rows, cols = images["rows"].astype(float), images["columns"].astype(float)
        size_mismatch = matched & h.notna() & w.notna() & ((h != rows) | (w != cols))
        for i in images.index[size_mismatch]:
            scale[i] = (cols[i] / w[i], rows[i] / h[i])
        append_warning(images, size_mismatch, "VinDr height/width differ from Rows/Columns; boxes rescaled")

    finding_path = path.parent / FINDING_FILE
    row_of = pd.Series(images.index[matched], index=stem[matched].to_numpy())
    row_of = row_of[~row_of.index.duplicated()]
    lesions = _findings(finding_path, row_of, scale) if finding_path.is_file() else {}

    counts = fill_header(images, lab["laterality"].map(canonical_side), lab["view_position"].map(canonical_view),
                         "vindr")
    # VinDr has no patient id: each study is one patient's exam; use it only where the header has no PatientID.
    no_patient = images["patient_id"].isna() if "patient_id" in images.columns else pd.Series(True, images.index)
    filled = set_patients(images, study.where(matched & no_patient), resolve_salt(salt))
    report = {"label_file": str(path), "finding_file": str(finding_path) if finding_path.is_file() else None,
              "label_rows": len(table), "label_rows_without_image": int(len(table) - stem[matched].nunique()),
              "study_folder_mismatch": int(mismatch.sum()), "size_mismatch": int(size_mismatch.sum()),
              "patient_id_from_study": filled, **counts}
    return finish(result, images, dataset="vindr", matched=matched, lesions=lesions, report=report)
