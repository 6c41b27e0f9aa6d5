"""Header-only scan of a DICOM tree into one row per image, plus the adapters that join labels.

Every file the scan cannot use lands in the `skipped` table with its reason: unreadable files, refused modalities,
duplicate SOP Instance UIDs. Nothing is dropped silently.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import pandas as pd

from mammokit.datasets.public import PUBLIC_ADAPTERS
from mammokit.datasets.result import IndexResult
from mammokit.dicom import DicomReadError, read_dicom
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.ids import hash_id, resolve_salt, safe_relpath
from mammokit.isolate import ItemFailure, isolated_map

SKIP_SUFFIXES = {".csv", ".json", ".png", ".txt", ".md", ".parquet", ".yaml", ".yml", ".jpg", ".jpeg", ".zip", ".gz",
                 # label and metadata files shipped beside public datasets' DICOMs (INbreast .xml/.roi/.xls, ...)
                 ".xlsx", ".xls", ".xml", ".roi", ".pdf", ".doc", ".docx", ".tsv", ".html", ".htm", ".log", ".ini",
                 ".bak", ".db"}
LABEL_COLUMNS = ("cancer", "benign", "birads", "density")


def candidate_files(src: Path) -> list[Path]:
    """Every regular file under `src` that could be DICOM (DICOM files often have no extension): hidden files and the
    SKIP_SUFFIXES label/metadata files (`.xml.gz` through `.gz`) are left out before any read."""
    return sorted(
        p for p in src.rglob("*")
        if p.is_file() and not p.name.startswith(".") and p.suffix.lower() not in SKIP_SUFFIXES
    )


def header_row(path: Path, root: Path, salt: str | None = None) -> dict:
    """One index row from a file's header; raises DicomReadError for files that cannot be used.

    `path`, `relpath` and the raw UIDs (`study_uid`, `series_uid`, `sop_uid`) are the file's own: the index stays
    local, and only it keeps them, to go back to the files. What later steps write out is derived: `image_id` is
    the salted hash of the SOP Instance UID (of the relative path when there is none; some archives embed the
    patient id in their UIDs), `exam_id` and `patient_id` hashes too, and `safe_relpath` the relative path with the
    patient's folders replaced by the patient hash (`ids.safe_relpath`).
    """
    salt = resolve_salt(salt)
    img = read_dicom(path, pixels=False, salt=salt, keep_ids=True)
    spacing = img.spacing_mm
    rel = str(path.relative_to(root))
    safe = safe_relpath(rel, img.patient_id, salt, img.accession_number, img.study_uid, img.series_uid, img.sop_uid)
    return {
        "image_id": hash_id(img.sop_uid or rel, salt),  # written out downstream: never a raw UID or path
        "path": str(path.resolve()),
        "relpath": rel,
        "safe_relpath": safe,
        "patient_id": img.patient_hash,
        "exam_id": img.study_hash,
        "study_uid": img.study_uid,
        "series_uid": img.series_uid,
        "sop_uid": img.sop_uid,
        "laterality": img.laterality,
        "view": img.view,
        "view_source": img.view_source,
        "rows": img.rows,
        "columns": img.columns,
        "spacing_row_mm": spacing[0] if spacing else None,
        "spacing_col_mm": spacing[1] if spacing else None,
        "spacing_source": img.spacing_source,
        "spacing_trusted": img.spacing_trusted,
        "manufacturer": img.manufacturer,
        "manufacturer_model": img.manufacturer_model,
        "presentation_intent": img.presentation_intent,
        "photometric": img.photometric,
        "bits_stored": img.bits_stored,
        "transfer_syntax": img.transfer_syntax,
        "modality": img.modality,
        "patient_orientation": "\\".join(img.patient_orientation) if img.patient_orientation else None,
        "warnings": "; ".join(img.warnings),
    }


def _scan_file(path: str, root: str, salt: str | None) -> dict:
    """{"row": the file's index row} or {"skipped": why it cannot be used}."""
    try:
        return {"row": header_row(Path(path), Path(root), salt)}
    except DicomReadError as err:
        return {"skipped": err.reason}
    except Exception as err:  # a header we did not foresee: record it, never stop the scan
        return {"skipped": f"unexpected error: {type(err).__name__}: {err}"}


HEADER_TIME_LIMIT_S = 60.0  # a header read takes milliseconds; one that runs this long is stuck


def _scan_files(files: list[str], root: Path, salt: str | None, workers: int,
                time_limit_s: float | None = HEADER_TIME_LIMIT_S) -> tuple[list[dict], list[dict]]:
    """(rows, skipped) in file order, the headers read in worker processes (`mammokit.isolate`): a file that
    crashes or panics the reader, or holds it past `time_limit_s`, is skipped with that reason; the scan goes on."""
    fn = partial(_scan_file, root=str(root), salt=salt)
    outcomes = dict(isolated_map(fn, files, workers=max(1, workers), time_limit_s=time_limit_s))
    rows, skipped = [], []
    for i, path in enumerate(files):
        out = outcomes[i]
        if isinstance(out, ItemFailure):
            skipped.append({"path": path, "reason": f"the reader failed: {out.reason}"})
        elif "row" in out:
            rows.append(out["row"])
        else:
            skipped.append({"path": path, "reason": out["skipped"]})
    return rows, skipped


def scan(src: str | Path, *, workers: int = 1, salt: str | None = None) -> IndexResult:
    """Read every DICOM header under `src` into an index; duplicates and refusals go to `skipped`."""
    src = Path(src)
    if not src.is_dir():
        raise MissingInputError(f"{src}: not a folder")
    t0 = time.perf_counter()
    files = [str(p) for p in candidate_files(src)]
    salt = resolve_salt(salt)  # once, here: workers get the key itself
    rows, skipped = _scan_files(files, src, salt, workers)
    images = pd.DataFrame(rows)
    if not images.empty:
        dup = images.duplicated("image_id", keep="first")
        first_path = images.drop_duplicates("image_id").set_index("image_id")["path"]
        for _, row in images[dup].iterrows():
            reason = f"duplicate SOP Instance UID of {first_path[row['image_id']]}"
            skipped.append({"path": row["path"], "reason": reason})
        images = images[~dup].reset_index(drop=True)
    skipped_df = pd.DataFrame(skipped, columns=["path", "reason"])
    return IndexResult(images, skipped_df, time.perf_counter() - t0)


def _find_upwards(start: Path, name: str, levels: int = 2) -> Path | None:
    for folder in [start, *list(start.parents)[:levels]]:
        if (folder / name).is_file():
            return folder / name
    return None


def join_breast_labels(images: pd.DataFrame, labels: pd.DataFrame, source: str) -> pd.DataFrame:
    """Join breast-level labels on (study_uid, laterality), or on sop_uid when the label file has it."""
    labels = labels.copy()
    if "sop_uid" in labels.columns:
        keys = ["sop_uid"]
    elif {"study_uid", "laterality"} <= set(labels.columns):
        keys = ["study_uid", "laterality"]
    else:
        raise InvalidInputError(f"{source}: label file needs a sop_uid column or study_uid + laterality columns")
    keep = keys + [c for c in (*LABEL_COLUMNS, "site", "split_group") if c in labels.columns]
    labels = labels[keep].drop_duplicates(keys)
    for k in keys:
        labels[k] = labels[k].astype(str)
    merged = images.merge(labels, on=keys, how="left", suffixes=("", "_label"))
    return merged


def attach_lesions(images: pd.DataFrame, lesions: pd.DataFrame) -> pd.DataFrame:
    """Add a `lesions` JSON column: the boxes (x0, y0, x1, y1 in DICOM pixels), kind and malignancy per image."""
    by_sop: dict[str, list[dict]] = {}
    for rec in lesions.to_dict("records"):
        box = {k: float(rec[k]) for k in ("x0", "y0", "x1", "y1")}
        box.update(kind=str(rec.get("kind", "")), malignant=int(rec.get("malignant", 0)),
                   lesion_id=str(rec.get("lesion_id", "")))
        by_sop.setdefault(str(rec["sop_uid"]), []).append(box)
    images = images.copy()
    images["lesions"] = [json.dumps(by_sop.get(str(s), [])) for s in images["sop_uid"]]
    return images


def adapt_generic(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None) -> IndexResult:
    """Generic adapter: headers only, plus an optional label CSV (sop_uid or study_uid+laterality keyed)."""
    images = result.images
    if labels is not None:
        images = join_breast_labels(images, pd.read_csv(labels, dtype={"sop_uid": str, "study_uid": str}), str(labels))
    if "lesions" not in images.columns:
        images = images.assign(lesions="[]")
    return IndexResult(images, result.skipped, result.seconds)


def adapt_synth(result: IndexResult, src: Path, labels: Path | None, *, salt: str | None = None) -> IndexResult:
    """Adapter for `mammokit synth` output: joins labels.csv (breast level) and lesions.csv (boxes)."""
    labels = labels or _find_upwards(src, "labels.csv")
    if labels is None:
        raise MissingInputError(f"{src}: no labels.csv found here or in the two folders above (synth adapter)")
    images = join_breast_labels(result.images, pd.read_csv(labels, dtype={"study_uid": str}), str(labels))
    lesions_path = labels.parent / "lesions.csv"
    lesions = (pd.read_csv(lesions_path, dtype={"sop_uid": str}) if lesions_path.is_file()
               else pd.DataFrame(columns=["sop_uid", "x0", "y0", "x1", "y1"]))
    images = attach_lesions(images, lesions)
    masks = labels.parent / "masks"
    if masks.is_dir():
        images["truth_breast_mask"] = [str(masks / f"{s}_breast.png") if (masks / f"{s}_breast.png").is_file() else None
                                       for s in images["sop_uid"]]
        images["truth_pectoral_mask"] = [
            str(masks / f"{s}_pectoral.png") if (masks / f"{s}_pectoral.png").is_file() else None
            for s in images["sop_uid"]
        ]
    return IndexResult(images, result.skipped, result.seconds)


ADAPTERS: dict[str, Callable[..., IndexResult]] = {
    "generic": adapt_generic,
    "synth": adapt_synth,
    **PUBLIC_ADAPTERS,
}


def build_index(src: str | Path, *, adapter: str = "generic", labels: str | Path | None = None, workers: int = 1,
                salt: str | None = None) -> IndexResult:
    """Scan `src` and join labels with the named adapter."""
    if adapter not in ADAPTERS:
        raise InvalidInputError(f"unknown adapter {adapter!r}; choose from {', '.join(ADAPTERS)}")
    src = Path(src)
    result = scan(src, workers=workers, salt=salt)
    if result.images.empty:
        return result
    return ADAPTERS[adapter](result, src, Path(labels) if labels else None, salt=salt)


def write_index(result: IndexResult, out: str | Path) -> tuple[Path, Path]:
    """Write `images.parquet` and `<stem>.skipped.csv` beside it, atomically."""
    from mammokit.io import atomic_write

    out = Path(out)
    atomic_write(out, lambda tmp: result.images.to_parquet(tmp, index=False))
    skipped_path = out.with_name(f"{out.stem}.skipped.csv")
    atomic_write(skipped_path, lambda tmp: result.skipped.to_csv(tmp, index=False))
    return out, skipped_path
