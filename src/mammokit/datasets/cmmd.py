"""Adapter for CMMD, the Chinese Mammography Database (TCIA): breast-level benign/malignant diagnoses.

Layout: `CMMD_clinicaldata_revision.xlsx` (or a CSV export: ID1, LeftRight, Age, number, abnormality,
classification Benign/Malignant, subtype) beside the TCIA tree `CMMD/<ID1>/<study>/<series>/1-1.dcm`.
An image's patient comes from the `<ID1>` folder in its path, else from its header PatientID (compared through
the salted hash); its breast comes from the header laterality. The table lists only breasts with a finding, so
images of the other breast keep NaN labels (counted in the report). `cancer` = Malignant, `benign` = Benign; CMMD
has no BI-RADS, density, boxes or official split.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from mammokit.datasets.public_common import (
    canonical_side,
    clean,
    finish,
    hash_patient,
    locate_label_file,
    number,
    path_parts,
    read_table,
    require_columns,
    resolve_salt,
    set_patients,
)
from mammokit.errors import InvalidInputError

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

LABEL_NAMES = ("CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv", "CMMD_clinicaldata.xlsx",
               "CMMD_clinicaldata.csv")
REQUIRED = ("ID1", "LeftRight", "classification")


def adapt_cmmd(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None) -> IndexResult:
    """Join the CMMD clinical table onto the scan by (patient, laterality); unmatched images keep NaN labels.

    Args:
        result: the header scan of the TCIA tree.
        src: the scanned folder (the table is looked for here and two folders up when `labels` is None).
        labels: the clinical-data .xlsx/.csv or the folder holding it.
        salt: identifier-hash key; must be the one the scan used.
    """
    salt = resolve_salt(salt)
    path = locate_label_file(Path(src), labels, LABEL_NAMES, "cmmd")
    table = read_table(path)
    require_columns(table, REQUIRED, path)
    table["pid"] = table["ID1"].map(clean)
    table["side"] = table["LeftRight"].map(canonical_side)
    bad = table[table["pid"].isna() | table["side"].isna()]
    if len(bad):
        raise InvalidInputError(f"{path}: rows {bad.index[:5].tolist()} lack ID1 or have LeftRight other than L/R")
    diagnosis = table["classification"].map(lambda v: (clean(v) or "").lower())
    unknown = diagnosis[~diagnosis.isin(["benign", "malignant"])]
    if len(unknown):
        raise InvalidInputError(f"{path}: classification must be Benign or Malignant, got {sorted(set(unknown))[:5]}")
    table["cancer"] = (diagnosis == "malignant").astype(int)
    table["benign"] = (diagnosis == "benign").astype(int)
    table["finding"] = table["abnormality"].map(clean) if "abnormality" in table.columns else None
    table["subtype_"] = table["subtype"].map(clean) if "subtype" in table.columns else None
    table["age_"] = table["Age"].map(number) if "Age" in table.columns else float("nan")
    breast = table.groupby(["pid", "side"]).agg(
        cancer=("cancer", "max"), benign=("benign", "max"), age=("age_", "first"), subtype=("subtype_", "first"),
        finding=("finding", lambda s: ",".join(sorted(set(s.dropna())))))

    images = result.images.copy()
    ids = set(table["pid"])
    by_hash = {hash_patient(p, salt): p for p in ids}
    parts = images["relpath"].map(path_parts)
    from_path = parts.map(lambda ps: next((p for p in ps if p in ids), None))
    from_header = images["patient_id"].map(by_hash) if "patient_id" in images.columns else None
    pid = from_path.where(from_path.notna(), from_header).astype(object)
    side = images["laterality"].astype(object)
    key = pd.MultiIndex.from_arrays([pid, side])
    lab = breast.reindex(key)
    lab.index = images.index
    matched = pid.notna() & side.notna() & lab["cancer"].notna()

    for col in ("cancer", "benign"):
        images[col] = lab[col]
    images["site"] = "cmmd"
    images["age"] = lab["age"].where(matched)
    images["subtype"] = lab["subtype"].where(matched, None)
    images["abnormality"] = lab["finding"].where(matched, None)
    changed = set_patients(images, pid.where(pid.notna()), salt)
    listed_breasts = set(breast.index)
    seen = set(zip(pid[matched], side[matched], strict=True))
    report = {"label_file": str(path), "label_rows": len(table), "label_breasts": len(breast),
              "label_rows_without_image": len(listed_breasts - seen),
              "patient_from_path": int(from_path.notna().sum()),
              "patient_from_header": int((from_path.isna() & pid.notna()).sum()),
              "unknown_patient": int(pid.isna().sum()),
              "listed_patient_no_laterality": int((pid.notna() & side.isna()).sum()),
              "listed_patient_unlisted_breast": int((pid.notna() & side.notna() & ~matched).sum()),
              "patient_id_replaced": changed}
    return finish(result, images, dataset="cmmd", matched=matched, report=report)
