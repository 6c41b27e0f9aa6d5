"""Adapter for the RSNA Screening Mammography Breast Cancer Detection data (Kaggle 2023).

Layout: `train.csv` (site_id, patient_id, image_id, laterality, view, age, cancer, biopsy, invasive, BIRADS,
implant, density, machine_id, difficult_negative_case) beside `train_images/<patient_id>/<image_id>.dcm`.
Images are matched on the file name (image_id); the parent folder is checked against patient_id.

Labels: `cancer` as given; `benign` = biopsied and not cancer (RSNA has no benign pathology column);
`birads` 0 (recall) / 1 (negative) / 2 (benign finding) or NaN; `density` A-D; `site` "rsna-site<site_id>".
`difficult_negative_case` is 1.0/0.0 (NaN when unknown); the other extras are numbers. Views other than CC/MLO
(AT, LM, ML, LMO) keep their codes and are counted in the report (`views_other`).
RSNA has no official split of the training set, so `split_group` stays empty. There are no lesion boxes.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mammokit.datasets.public_common import (
    append_warning,
    boolean,
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
    resolve_salt,
    set_patients,
)

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

LABEL_NAMES = ("train.csv",)
REQUIRED = ("patient_id", "image_id", "laterality", "view", "cancer")
EXTRA_NUMERIC = ("age", "biopsy", "invasive", "implant", "machine_id")
EXTRA_BOOLEAN = ("difficult_negative_case",)  # "True"/"False" in the Kaggle file


def adapt_rsna(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None) -> IndexResult:
    """Join RSNA `train.csv` onto the scan by image_id (file name); unmatched images keep NaN labels.

    Args:
        result: the header scan of the image folder.
        src: the scanned folder (train.csv is looked for here and two folders up when `labels` is None).
        labels: train.csv or the folder holding it.
        salt: identifier-hash key; must be the one the scan used (default resolution as in `read_dicom`).
    """
    path = locate_label_file(Path(src), labels, LABEL_NAMES, "rsna")
    table = read_image_table(path, REQUIRED)
    images = result.images.copy()
    stem, folder, matched, lab = match_by_file_stem(images, table)

    patient = lab["patient_id"].map(clean)
    numeric_folder = folder.map(lambda f: bool(f) and str(f).isdigit())
    mismatch = matched & numeric_folder & (folder != patient)
    append_warning(images, mismatch, "parent folder is not the train.csv patient_id of this image_id")

    cancer = lab["cancer"].map(number)
    images["cancer"] = cancer
    if "biopsy" in lab.columns:
        biopsy = lab["biopsy"].map(number)
        images["benign"] = ((biopsy == 1) & (cancer == 0)).astype(float).where(biopsy.notna() & cancer.notna())
    images["birads"] = lab["BIRADS"].map(number) if "BIRADS" in lab.columns else float("nan")
    images["density"] = lab["density"].map(density_letter) if "density" in lab.columns else None
    site = lab["site_id"].map(clean) if "site_id" in lab.columns else pd.Series(None, index=images.index)
    images["site"] = ("rsna-site" + site.astype(str)).where(site.notna(), "rsna")
    for col in EXTRA_NUMERIC:
        if col in lab.columns:
            images[col] = lab[col].map(number).where(matched)
    for col in EXTRA_BOOLEAN:
        if col in lab.columns:
            images[col] = lab[col].map(boolean).where(matched)
    images["source_image_id"] = stem.where(matched, None)

    counts = fill_header(images, lab["laterality"].map(canonical_side), lab["view"].map(canonical_view), "rsna")
    changed = set_patients(images, patient.where(matched), resolve_salt(salt))
    report = {"label_file": str(path), "label_rows": len(table),
              "label_rows_without_image": int(len(table) - stem[matched].nunique()),
              "patient_folder_mismatch": int(mismatch.sum()), "patient_id_replaced": changed, **counts}
    return finish(result, images, dataset="rsna", matched=matched, report=report)
