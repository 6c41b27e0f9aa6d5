"""Adapter for VinDr-Mammo (PhysioNet): breast-level BI-RADS and density, finding boxes, official split.

Layout: `breast-level_annotations.csv` (study_id, series_id, image_id, laterality, view_position, height, width,
breast_birads "BI-RADS 1".."BI-RADS 5", breast_density "DENSITY A".."DENSITY D", split training/test) and
`finding_annotations.csv` (the same keys plus finding_categories, finding_birads, xmin, ymin, xmax, ymax) beside
`images/<study_id>/<image_id>.dicom`. Images are matched on the file name (image_id).

VinDr-Mammo has no pathology, so malignancy is a proxy: `cancer` = breast BI-RADS 4-5, `benign` = BI-RADS 2-3, and a
finding box is `malignant` when its finding BI-RADS is 4-5. Boxes are in the DICOM pixel grid; when the label's
height/width differ from the header's rows/columns the boxes are rescaled to the header grid (with a warning).
Boxes are then clipped to that grid (the real file has boxes up to 27 px outside it); a box with no area left is
dropped. Both are counted (`boxes_clipped`, `boxes_dropped`) and warned about on the row. `split` training/test
becomes `split_group` train/test.
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
    canonical_split,
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


def clip_box(coords: list[float], grid: tuple[float, float] | None) -> tuple[list[float] | None, bool]:
    """(box clipped to the [0, width] x [0, height] grid or None when no area is left, whether it was clipped)."""
    if grid is None or any(g != g for g in grid):
        return coords, False
    width, height = grid
    x0, x1 = (min(max(c, 0.0), width) for c in (coords[0], coords[2]))
    y0, y1 = (min(max(c, 0.0), height) for c in (coords[1], coords[3]))
    clipped = [x0, y0, x1, y1]
    if x1 <= x0 or y1 <= y0:
        return None, True
    return clipped, clipped != coords


def _findings(path: Path, rows: pd.Series, scale: dict[Any, tuple[float, float]],
              grid: dict[Any, tuple[float, float]]) -> tuple[dict[Any, list[dict]], dict[Any, list[int]]]:
    """Lesion records per scan row from finding_annotations.csv (rows: image_id -> scan row index), each box rescaled
    then clipped to the row's (width, height) grid; also [clipped, dropped] counts per row."""
    table = read_table(path)
    require_columns(table, FINDING_REQUIRED, path)
    table = table[table["image_id"].map(clean).isin(rows.index)]
    lesions: dict[Any, list[dict]] = {}
    clips: dict[Any, list[int]] = {}
    for n, rec in enumerate(table.to_dict("records")):
        coords = [number_float(rec[k]) for k in ("xmin", "ymin", "xmax", "ymax")]
        if any(c != c for c in coords):  # "No Finding" rows carry no box
            continue
        image_id = clean(rec["image_id"])
        row = rows[image_id]
        sx, sy = scale.get(row, (1.0, 1.0))
        kept, changed = clip_box([coords[0] * sx, coords[1] * sy, coords[2] * sx, coords[3] * sy], grid.get(row))
        counts = clips.setdefault(row, [0, 0])
        counts[kept is None] += changed  # [clipped, dropped]
        if kept is None:
            continue
        birads = number(rec.get("finding_birads"))
        lesions.setdefault(row, []).append(box(*kept, finding_kind(rec["finding_categories"]), int(birads >= 4),
                                               f"{image_id}:{n}"))
    return lesions, clips


def _warn_clips(images: pd.DataFrame, clips: dict[Any, list[int]]) -> tuple[int, int]:
    """Row warnings for clipped and dropped boxes; returns the totals (clipped, dropped)."""
    for i, (clipped, dropped) in clips.items():
        one = pd.Series(True, index=[i])
        if clipped:
            append_warning(images, one, f"{clipped} VinDr box(es) clipped to the image")
        if dropped:
            append_warning(images, one, f"{dropped} VinDr box(es) outside the image dropped")
    return sum(c for c, _ in clips.values()), sum(d for _, d in clips.values())


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
    images["split_group"] = lab["split"].map(canonical_split) if "split" in lab.columns else None
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
    grid = dict(zip(images.index, zip(images["columns"].astype(float), images["rows"].astype(float), strict=True),
                    strict=True))
    lesions, clips = _findings(finding_path, row_of, scale, grid) if finding_path.is_file() else ({}, {})
    clipped, dropped = _warn_clips(images, clips)

    counts = fill_header(images, lab["laterality"].map(canonical_side), lab["view_position"].map(canonical_view),
                         "vindr")
    # VinDr has no patient id: each study is one patient's exam; use it only where the header has no PatientID.
    no_patient = images["patient_id"].isna() if "patient_id" in images.columns else pd.Series(True, images.index)
    filled = set_patients(images, study.where(matched & no_patient), resolve_salt(salt))
    report = {"label_file": str(path), "finding_file": str(finding_path) if finding_path.is_file() else None,
              "label_rows": len(table), "label_rows_without_image": int(len(table) - stem[matched].nunique()),
              "study_folder_mismatch": int(mismatch.sum()), "size_mismatch": int(size_mismatch.sum()),
              "patient_id_from_study": filled, "boxes_clipped": clipped, "boxes_dropped": dropped, **counts}
    return finish(result, images, dataset="vindr", matched=matched, lesions=lesions, report=report)
