"""Adapter for CBIS-DDSM (TCIA): pathology-proven masses and calcifications with ROI masks.

Layout: `{mass,calc}_case_description_{train,test}_set.csv` (patient_id "P_00001", breast density 1-4, left or right
breast, image view, abnormality id, abnormality type, assessment, pathology MALIGNANT / BENIGN /
BENIGN_WITHOUT_CALLBACK, image file path, cropped image file path, ROI mask file path) and the TCIA tree, whose
top folders are the subject ids of those paths ("Mass-Training_P_00001_LEFT_CC", "..._1" for the ROI series).

Full mammograms are matched on the SeriesInstanceUID in the CSV path, else on the subject folder in the file's path.
ROI masks and cropped lesions are DICOM too: they are moved to `skipped` (not mammograms) after each abnormality's
box is taken from its full-size ROI mask (bounding box of the non-zero pixels). Labels are breast level: `cancer` =
any MALIGNANT abnormality on the breast, `benign` = any BENIGN*, `birads` = the highest assessment, `split_group` the
official train/test. Each TCIA subject is one image, so `patient_id` and `exam_id` are rebuilt from the CSV patient
id (hashed). The same breast view can be published in both the Mass and Calc collections: the later copy (same
size) is moved to `skipped` and its lesions merged into the kept one.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammokit.datasets.public_common import (
    box,
    canonical_side,
    canonical_view,
    clean,
    density_letter,
    fill_header,
    finish,
    hash_patient,
    number,
    path_parts,
    read_table,
    require_columns,
    resolve_salt,
    set_patients,
)
from mammokit.dicom import DicomReadError, read_dicom
from mammokit.errors import MissingInputError

if TYPE_CHECKING:
    from mammokit.datasets.result import IndexResult

CSV_GLOB = "*case_description*.csv"
REQUIRED = ("patient id", "left or right breast", "image view", "abnormality id", "abnormality type", "pathology",
            "image file path")


def locate_csvs(src: Path, labels: Path | None) -> list[Path]:
    """The case-description CSVs: `labels` itself, or every `*case_description*.csv` in `labels` / `src` / above."""
    if labels is not None and labels.is_file():
        return [labels]
    if labels is not None and not labels.is_dir():
        raise MissingInputError(f"{labels}: label path for the cbis-ddsm adapter does not exist")
    folders = [labels] if labels is not None else [src, *list(src.parents)[:2]]
    for folder in folders:
        found = sorted(folder.glob(CSV_GLOB))
        if found:
            return found
    raise MissingInputError(f"cbis-ddsm adapter: no {CSV_GLOB} in {', '.join(map(str, folders))}; pass labels=PATH")


def tcia_parts(cell: Any) -> tuple[str | None, str | None]:
    """(subject folder, SeriesInstanceUID) of a CSV path 'Subject/StudyUID/SeriesUID/000000.dcm'."""
    parts = [p for p in (clean(cell) or "").replace("\\", "/").split("/") if p]
    return (parts[0] if parts else None), (parts[2] if len(parts) > 2 else None)


def read_abnormalities(paths: list[Path]) -> pd.DataFrame:
    """One row per abnormality from all CSVs, with normalised column names and the split taken from the file name."""
    frames = []
    for path in paths:
        table = read_table(path)
        table.columns = [c.lower().replace("_", " ") for c in table.columns]
        require_columns(table, REQUIRED, path)
        name = path.name.lower()
        table["split"] = "train" if "train" in name else ("test" if "test" in name else None)
        frames.append(table)
    table = pd.concat(frames, ignore_index=True)
    table["pid"] = table["patient id"].map(clean)
    table["side"] = table["left or right breast"].map(canonical_side)
    table["view"] = table["image view"].map(canonical_view)
    table["abn"] = table["abnormality id"].map(number)
    table["kind"] = table["abnormality type"].map(lambda v: (clean(v) or "").lower())
    table["malignant"] = table["pathology"].map(lambda v: (clean(v) or "").upper() == "MALIGNANT").astype(int)
    table["is_benign"] = table["pathology"].map(lambda v: (clean(v) or "").upper().startswith("BENIGN")).astype(int)
    density_col = "breast density" if "breast density" in table.columns else None
    table["density"] = table[density_col].map(density_letter) if density_col else None
    table["birads"] = table["assessment"].map(number) if "assessment" in table.columns else float("nan")
    table[["subject", "series"]] = table["image file path"].map(tcia_parts).tolist()
    for col, out in (("roi mask file path", "roi"), ("cropped image file path", "crop")):
        pairs = table[col].map(tcia_parts).tolist() if col in table.columns else [(None, None)] * len(table)
        table[[f"{out}_subject", f"{out}_series"]] = pairs
    return table


def mask_box(paths: list[str], shape: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """Bounding box (x0, y0, x1, y1; x1/y1 exclusive) of the non-zero pixels of the first readable binary mask."""
    for path in paths:
        try:
            pixels = read_dicom(path).pixels
        except DicomReadError:
            continue
        if pixels is None or pixels.shape != shape or len(np.unique(pixels)) > 2:
            continue
        on = pixels > pixels.min()
        if not on.any():
            continue
        ys, xs = np.nonzero(on.any(axis=1))[0], np.nonzero(on.any(axis=0))[0]
        return int(xs[0]), int(ys[0]), int(xs[-1]) + 1, int(ys[-1]) + 1
    return None


def adapt_cbis_ddsm(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None,
                    mask_boxes: bool = True, merge_duplicates: bool = True) -> IndexResult:
    """Join CBIS-DDSM case descriptions onto the scan; ROI masks become lesion boxes and leave the index.

    Args:
        result: the header scan of the TCIA tree (masks and crops included).
        src: the scanned folder (the CSVs are looked for here and two folders up when `labels` is None).
        labels: one case-description CSV, or the folder holding them all.
        salt: identifier-hash key; must be the one the scan used.
        mask_boxes: decode each full-size ROI mask for its box (one decode per abnormality).
        merge_duplicates: keep one copy of a breast view published in both the Mass and Calc collections.
    """
    salt = resolve_salt(salt)
    paths = locate_csvs(Path(src), labels)
    abn = read_abnormalities(paths)
    images = result.images.copy()
    parts = images["relpath"].map(path_parts)

    subjects = abn[abn["subject"].notna()].drop_duplicates("subject").set_index("subject")
    by_series = {s: subj for s, subj in zip(abn["series"], abn["subject"], strict=True) if s}
    derived: dict[str, int] = {}  # series or ROI subject folder -> abnormality row
    for i, rec in abn.iterrows():
        for key in (rec["roi_series"], rec["crop_series"], rec["roi_subject"], rec["crop_subject"]):
            if key and key not in by_series and key not in subjects.index:
                derived.setdefault(key, i)

    def full_subject(row: int) -> str | None:
        series = images.at[row, "series_uid"]
        if series in by_series:
            return by_series[series]
        return next((p for p in parts[row] if p in subjects.index), None)

    def derived_abn(row: int) -> int | None:
        series = images.at[row, "series_uid"]
        if series in derived:
            return derived[series]
        return next((derived[p] for p in parts[row] if p in derived), None)

    subject = pd.Series([full_subject(i) for i in images.index], index=images.index, dtype=object)
    owner = pd.Series([derived_abn(i) if subject[i] is None else None for i in images.index], index=images.index,
                      dtype=object)
    is_derived = owner.notna()
    matched = subject.notna()

    # Breast-level labels per (patient, side) over every abnormality of both collections.
    breast = abn.groupby(["pid", "side"]).agg(cancer=("malignant", "max"), benign=("is_benign", "max"),
                                             birads=("birads", "max"), density=("density", "first"),
                                             splits=("split", lambda s: "+".join(sorted(set(s.dropna())))),
                                             kinds=("kind", lambda s: ",".join(sorted(set(s)))))
    info = subjects.reindex(subject.to_numpy())
    info.index = images.index
    key = pd.MultiIndex.from_arrays([info["pid"], info["side"]])
    lab = breast.reindex(key)
    lab.index = images.index
    for col in ("cancer", "benign", "birads", "density"):
        images[col] = lab[col]
    images["split_group"] = info["split"]
    images["site"] = "cbis-ddsm"
    images["abnormality_types"] = lab["kinds"].where(matched, None)
    counts = fill_header(images, info["side"], info["view"], "cbis-ddsm")
    changed = set_patients(images, info["pid"].where(matched), salt)
    images["exam_id"] = images["exam_id"].astype(object).where(
        ~matched, info["pid"].map(lambda p: hash_patient(f"CBIS-DDSM exam {p}", salt)))

    # Lesion boxes from the full-size ROI masks.
    lesions: dict[Any, list[dict]] = {}
    no_box = 0
    row_of_subject = {s: i for i, s in subject[matched].items()}
    derived_rows: dict[int, list[int]] = {}
    for r, a in owner.dropna().items():
        derived_rows.setdefault(int(a), []).append(r)
    for i, rec in abn.iterrows():
        row = row_of_subject.get(rec["subject"])
        if row is None:
            continue
        found = None
        if mask_boxes:
            candidates = [images.at[r, "path"] for r in derived_rows.get(i, [])
                          if (images.at[r, "rows"], images.at[r, "columns"]) == (images.at[row, "rows"],
                                                                                  images.at[row, "columns"])]
            found = mask_box(candidates, (int(images.at[row, "rows"]), int(images.at[row, "columns"])))
        if found is None:
            no_box += 1
            continue
        lesions.setdefault(row, []).append(box(*found, rec["kind"], rec["malignant"], f"{rec['kind']}:{rec['abn']:g}"))

    skipped_rows = [{"path": images.at[r, "path"],
                     "reason": "CBIS-DDSM ROI mask or cropped lesion image (not a full mammogram)"}
                    for r in images.index[is_derived]]
    duplicates = 0
    if merge_duplicates:
        full = images[matched].assign(_pid=info["pid"], _side=info["side"], _view=info["view"]).sort_values("relpath")
        for _, group in full.groupby(["_pid", "_side", "_view", "rows", "columns"]):
            keep = group.index[0]
            for dup in group.index[1:]:
                lesions.setdefault(keep, []).extend(lesions.pop(dup, []))
                skipped_rows.append({"path": images.at[dup, "path"],
                                     "reason": f"CBIS-DDSM duplicate of {images.at[keep, 'path']} (same breast view in "
                                               "another collection); its lesions are merged there"})
                is_derived[dup] = True
                duplicates += 1
    keep_rows = images.index[~is_derived.astype(bool)]
    split_conflicts = int((breast["splits"].str.contains(r"\+")).sum())
    report = {"label_files": [str(p) for p in paths], "label_rows": len(abn),
              "label_subjects_without_image": int(len(subjects) - subject[matched].nunique()),
              "label_rows_without_image": int((~abn["subject"].isin(set(subject[matched]))).sum()),
              "roi_or_cropped_images": int(owner.notna().sum()), "duplicates_merged": duplicates,
              "lesions_without_box": no_box, "breasts_in_both_splits": split_conflicts,
              "patient_id_replaced": changed, **counts}
    return finish(result, images.loc[keep_rows], dataset="cbis-ddsm", matched=matched[keep_rows],
                  lesions={k: v for k, v in lesions.items() if k in keep_rows}, skipped_rows=skipped_rows,
                  report=report)
