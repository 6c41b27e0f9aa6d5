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
id (hashed), also for full mammograms whose subject folder the given CSVs do not list (they stay unlabelled).

The same breast view can be published in both the Mass and Calc collections, some in both official splits: one copy
(same size) is kept, the one of the most held-out split (test before train), the other moved to `skipped`; a
patient's images all take the patient's most held-out split (in `finish`). `pool_splits` (default True) pools a
breast's labels and boxes over both collections and both splits (the truth of the image); False keeps those of the
kept copy's own split, as published CBIS-DDSM test results count them. ROI masks and crops are recognised by their
folders even without their CSV: a subject folder ending in `_<n>` or a series folder named "ROI mask images" or
"cropped images".
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from mammokit.datasets.public_common import (
    SPLIT_RANK,
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
# a TCIA subject folder: group 1 the patient, 4 the abnormality number of an ROI/crop series ("_1")
SUBJECT = re.compile(r"^(?:Mass|Calc)-(?:Training|Test)_(P_\d+)_(LEFT|RIGHT)_(CC|MLO)(_\d+)?$", re.IGNORECASE)
DERIVED_SERIES = ("roi mask images", "cropped images")  # TCIA series folders of ROI masks and crops
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


def subject_folder(parts: tuple[str, ...]) -> re.Match[str] | None:
    """The TCIA subject folder in a path ('Mass-Training_P_00001_LEFT_CC'; '..._1' for abnormality 1's ROI series)."""
    return next((m for m in map(SUBJECT.match, parts) if m), None)


def derived_path(parts: tuple[str, ...]) -> bool:
    """An ROI mask or cropped lesion by its folders: a subject ending in `_<n>`, or a series folder named so."""
    folder = subject_folder(parts)
    return bool(folder and folder.group(4)) or any(d in p.lower() for p in parts[:-1] for d in DERIVED_SERIES)


def match_images(images: pd.DataFrame, parts: pd.Series, abn: pd.DataFrame
                 ) -> tuple[pd.Series, pd.Series, pd.DataFrame]:
    """(full-mammogram subject, abnormality row of an ROI/crop file) per image, either None, and the CSV subjects.

    Full mammograms match on the SeriesInstanceUID of the CSV's image path, else on a path folder named like its
    subject; ROI masks and crops on the series or subject folder of the CSV's ROI and crop paths.
    """
    subjects = abn[abn["subject"].notna()].drop_duplicates("subject").set_index("subject")
    by_series = {s: subj for s, subj in zip(abn["series"], abn["subject"], strict=True) if s}
    derived: dict[str, int] = {}  # series or ROI subject folder -> abnormality row
    for i, rec in abn.iterrows():
        for key in (rec["roi_series"], rec["crop_series"], rec["roi_subject"], rec["crop_subject"]):
            if key and key not in by_series and key not in subjects.index:
                derived.setdefault(key, i)

    def full_subject(row: Any) -> str | None:
        series = images.at[row, "series_uid"]
        if series in by_series:
            return by_series[series]
        return next((p for p in parts[row] if p in subjects.index), None)

    def derived_abn(row: Any) -> int | None:
        series = images.at[row, "series_uid"]
        if series in derived:
            return derived[series]
        return next((derived[p] for p in parts[row] if p in derived), None)

    subject = pd.Series([full_subject(i) for i in images.index], index=images.index, dtype=object)
    owner = pd.Series([derived_abn(i) if subject[i] is None else None for i in images.index], index=images.index,
                      dtype=object)
    return subject, owner, subjects


def breast_labels(abn: pd.DataFrame, *, by_split: bool) -> pd.DataFrame:
    """cancer/benign/birads/density/kinds over the abnormalities of each (patient, side), or (patient, side, split)."""
    keys = ["pid", "side", "split"] if by_split else ["pid", "side"]
    return abn.groupby(keys, dropna=False).agg(
        cancer=("malignant", "max"), benign=("is_benign", "max"), birads=("birads", "max"),
        density=("density", "first"), kinds=("kind", lambda s: ",".join(sorted(set(s)))))


def pooling_changes(abn: pd.DataFrame, pooled: pd.DataFrame, per_split: pd.DataFrame) -> tuple[int, int]:
    """(breasts with abnormalities in several official splits, how many of them pooling changes): pooled labels
    against those of the breast's most held-out split alone (cancer, benign, BI-RADS)."""
    splits = abn.groupby(["pid", "side"])["split"].agg(lambda s: set(s.dropna()))
    mixed = splits[splits.map(len) > 1]
    cols = ["cancer", "benign", "birads"]
    changed = 0
    for (pid, side), names in mixed.items():
        held_out = max(names, key=lambda n: SPLIT_RANK.get(n, -1))
        own = per_split.loc[(pid, side, held_out), cols].to_numpy(float)
        pool = pooled.loc[(pid, side), cols].to_numpy(float)
        changed += int(not np.array_equal(np.nan_to_num(own, nan=-1), np.nan_to_num(pool, nan=-1)))
    return len(mixed), changed


def pick_copies(images: pd.DataFrame, info: pd.DataFrame, matched: pd.Series) -> dict[Any, Any]:
    """Duplicate row -> kept row, for a breast view published more than once (same patient, side, view and size):
    the copy of the most held-out split is kept (test before train), then the first in path order."""
    full = images.loc[matched, ["relpath", "rows", "columns"]].assign(
        _pid=info["pid"], _side=info["side"], _view=info["view"],
        _rank=-info["split"].map(lambda s: SPLIT_RANK.get(s, -1)))
    full = full.sort_values(["_rank", "relpath"])
    copies: dict[Any, Any] = {}
    for _, group in full.groupby(["_pid", "_side", "_view", "rows", "columns"], sort=False, dropna=False):
        copies.update(dict.fromkeys(group.index[1:], group.index[0]))
    return copies


def lesion_boxes(images: pd.DataFrame, abn: pd.DataFrame, subject: pd.Series, owner: pd.Series,
                 mask_boxes: bool) -> tuple[dict[Any, list[dict]], int]:
    """Row -> boxes of the abnormalities of its subject, each from its full-size ROI mask; and how many had none."""
    lesions: dict[Any, list[dict]] = {}
    no_box = 0
    row_of_subject = {s: i for i, s in subject.dropna().items()}
    derived_rows: dict[int, list[Any]] = {}
    for r, a in owner.dropna().items():
        derived_rows.setdefault(int(a), []).append(r)
    for i, rec in abn.iterrows():
        row = row_of_subject.get(rec["subject"])
        if row is None:
            continue
        shape = (int(images.at[row, "rows"]), int(images.at[row, "columns"]))
        found = None
        if mask_boxes:
            candidates = [images.at[r, "path"] for r in derived_rows.get(i, [])
                          if (images.at[r, "rows"], images.at[r, "columns"]) == shape]
            found = mask_box(candidates, shape)
        if found is None:
            no_box += 1
            continue
        lesions.setdefault(row, []).append(box(*found, rec["kind"], rec["malignant"], f"{rec['kind']}:{rec['abn']:g}"))
    return lesions, no_box


def merge_copies(images: pd.DataFrame, split: pd.Series, copies: dict[Any, Any], lesions: dict[Any, list[dict]],
                 pool_splits: bool) -> tuple[list[dict[str, str]], int]:
    """Move each duplicate's lesions to its kept copy (in place; unpooled, only from a copy of the same split).

    Returns the duplicates' `skipped` rows and how many lie in another official split than their kept copy.
    """
    rows, across = [], 0
    for dup, keep in copies.items():
        same_split = split[dup] == split[keep]
        across += int(not same_split)
        moved = lesions.pop(dup, [])
        merged = pool_splits or same_split
        if merged:
            lesions.setdefault(keep, []).extend(moved)
        fate = "merged there" if merged else "left out (another official split)"
        rows.append({"path": images.at[dup, "path"],
                     "reason": f"CBIS-DDSM duplicate of {images.at[keep, 'path']} (same breast view in another "
                               f"collection); its lesions are {fate}"})
    return rows, across


def adapt_cbis_ddsm(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None,
                    mask_boxes: bool = True, merge_duplicates: bool = True, pool_splits: bool = True) -> IndexResult:
    """Join CBIS-DDSM case descriptions onto the scan; ROI masks become lesion boxes and leave the index.

    Args:
        result: the header scan of the TCIA tree (masks and crops included).
        src: the scanned folder (the CSVs are looked for here and two folders up when `labels` is None).
        labels: one case-description CSV, or the folder holding them all.
        salt: identifier-hash key; must be the one the scan used.
        mask_boxes: decode each full-size ROI mask for its box (one decode per abnormality).
        merge_duplicates: keep one copy of a breast view published in both the Mass and Calc collections.
        pool_splits: a breast's labels and boxes pool its abnormalities of both official splits (its truth); False
            keeps those of the kept copy's own split (comparable to published CBIS-DDSM test results).
    """
    salt = resolve_salt(salt)
    paths = locate_csvs(Path(src), labels)
    abn = read_abnormalities(paths)
    images = result.images.copy()
    parts = images["relpath"].map(path_parts)
    subject, owner, subjects = match_images(images, parts, abn)
    matched = subject.notna()
    is_derived = ~matched & (owner.notna() | parts.map(derived_path))
    folder = parts.map(subject_folder)
    unlisted = ~matched & ~is_derived & folder.map(lambda m: m is not None)

    info = subjects.reindex(subject.to_numpy())
    info.index = images.index
    pooled, per_split = breast_labels(abn, by_split=False), breast_labels(abn, by_split=True)
    if pool_splits:
        lab = pooled.reindex(pd.MultiIndex.from_arrays([info["pid"], info["side"]]))
    else:
        lab = per_split.reindex(pd.MultiIndex.from_arrays([info["pid"], info["side"], info["split"]]))
    lab.index = images.index
    for col in ("cancer", "benign", "birads", "density"):
        images[col] = lab[col]
    images["split_group"] = info["split"]
    images["site"] = "cbis-ddsm"
    images["abnormality_types"] = lab["kinds"].where(matched, None)
    counts = fill_header(images, info["side"], info["view"], "cbis-ddsm")
    woman = info["pid"].where(matched, folder.map(lambda m: m.group(1).upper() if m else None).where(unlisted))
    changed = set_patients(images, woman, salt)
    images["exam_id"] = images["exam_id"].astype(object).where(
        woman.isna(), woman.map(lambda p: hash_patient(f"CBIS-DDSM exam {p}", salt)))

    lesions, no_box = lesion_boxes(images, abn, subject.where(matched), owner, mask_boxes)
    skipped_rows = [{"path": images.at[r, "path"],
                     "reason": "CBIS-DDSM ROI mask or cropped lesion image (not a full mammogram"
                               + ("" if owner[r] is not None else "; no case-description row") + ")"}
                    for r in images.index[is_derived]]
    copies = pick_copies(images, info, matched) if merge_duplicates else {}
    dropped, across = merge_copies(images, info["split"], copies, lesions, pool_splits)
    skipped_rows += dropped
    keep_rows = images.index[~is_derived & ~images.index.isin(list(copies))]
    kept = matched[keep_rows]
    split_count = info.loc[kept[kept].index].groupby("pid")["split"].nunique()
    in_both, relabelled = pooling_changes(abn, pooled, per_split)
    report = {"label_files": [str(p) for p in paths], "label_rows": len(abn),
              "label_subjects_without_image": int(len(subjects) - subject[matched].nunique()),
              "label_rows_without_image": int((~abn["subject"].isin(set(subject[matched]))).sum()),
              "roi_or_cropped_images": int(is_derived.sum()),
              "roi_or_cropped_without_labels": int((is_derived & owner.isna()).sum()),
              "full_mammograms_not_in_labels": int(unlisted.sum()), "duplicates_merged": len(copies),
              "views_in_both_splits": across, "breasts_in_both_splits": in_both,
              "labels_changed_by_pooling": relabelled, "pool_splits": pool_splits,
              "patients_moved_to_test": int((split_count > 1).sum()), "lesions_without_box": no_box,
              "patient_id_replaced": changed, **counts}
    return finish(result, images.loc[keep_rows], dataset="cbis-ddsm", matched=matched[keep_rows],
                  lesions={k: v for k, v in lesions.items() if k in keep_rows}, skipped_rows=skipped_rows,
                  report=report)
