"""`generate(...)`: a synthetic multi-vendor mammography archive laid out like a PACS export.

Layout under `out_dir`:

    dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   (4 views per exam)
    labels.csv    one row per breast: patient_id, study_uid, laterality, cancer, benign, birads, density,
                  vendor, site, split_group (0-4, patient-level folds stratified by cancer)
    lesions.csv   one row per lesion per image: sop_uid, patient_id, study_uid, laterality, view, lesion_id,
                  kind, malignant, x0, y0, x1, y1 (end-exclusive, in the STORED pixel grid, after any flip)
    masks/<SOPInstanceUID>_{breast,pectoral,lesion}.png   uint8 0/255 in the stored grid (optional);
                  breast = all tissue incl. pectoral muscle and nipple, never the burned-in marker
    synth.json    parameters, seed, resolved vendor profiles, PHI patterns; written last

Every random choice flows from `seed` (and `site`): exam i draws from its own generator, so results
are byte-identical for any `workers`. Each patient has one study; PatientID is a fake code, never a
name.
"""

from __future__ import annotations

import csv
import datetime as dt
import hashlib
import json
import math
import multiprocessing
import time
import zlib
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from mammokit import __version__
from mammokit.synth.lesions import BENIGN_KINDS, MALIGNANT_KINDS
from mammokit.synth.phantom import BreastSpec, LesionSpec, render_view
from mammokit.synth.vendors import VENDOR_PROFILES, resolve_vendors
from mammokit.synth.writer import ImageIdentity, synth_uid, write_view

LABEL_COLUMNS = ("patient_id", "study_uid", "laterality", "cancer", "benign", "birads", "density", "vendor", "site",
                 "split_group")
LESION_COLUMNS = ("sop_uid", "patient_id", "study_uid", "laterality", "view", "lesion_id", "kind", "malignant",
                  "x0", "y0", "x1", "y1")
VIEWS = (("L", "CC"), ("L", "MLO"), ("R", "CC"), ("R", "MLO"))
DENSITY_P = {"A": 0.1, "B": 0.4, "C": 0.4, "D": 0.1}
BIRADS = {"spiculated_mass": 5, "pleomorphic_calcifications": 4, "circumscribed_mass": 3, "round_calcifications": 2}
PHI_PATTERNS = {
    "PatientName": r"PHI\^NAME\d{4,}",
    "PatientBirthDate": r"19\d{2}0101",
    "OtherPatientIDs": r"PHI-OTHER-\d{6}",
    "InstitutionName": r"PHI INSTITUTION .+",
    "InstitutionAddress": r"PHI ADDRESS \d{4,} MAIN STREET",
    "ReferringPhysicianName": r"PHI\^DOCTOR\d{4}",
    "OperatorsName": r"PHI\^OPERATOR\d{4}",
}
N_FOLDS = 5


@dataclass(frozen=True)
class ExamTask:
    """Everything one worker needs to write one exam (picklable)."""

    index: int
    seed: int
    site: str
    vendor: str
    cancer: bool
    benign: bool
    size_scale: float
    difficulty: float
    masks: bool
    out_dir: str
    split_group: int


def _site_code(site: str) -> int:
    return zlib.crc32(site.encode("utf-8"))


def _lesion(rng: np.random.Generator, malignant: bool, lesion_id: int, difficulty: float) -> LesionSpec:
    """Draw one finding; benign and malignant share size, contrast and position laws (only fine structure differs)."""
    is_mass = rng.uniform() < 0.6
    kinds = MALIGNANT_KINDS if malignant else BENIGN_KINDS
    kind = kinds[0] if is_mass else kinds[1]
    gain = difficulty**-0.5
    size = rng.uniform(8, 20) if is_mass else rng.uniform(5, 15)
    contrast = (rng.uniform(0.10, 0.16) if is_mass else rng.uniform(0.5, 0.8)) * gain
    return LesionSpec(
        lesion_id=lesion_id, kind=kind, malignant=malignant, size_mm=float(size), contrast=float(contrast),
        nipple_frac=float(rng.uniform(0.25, 0.75)), angle_cc=float(rng.uniform(-0.6, 0.6)),
        angle_mlo=float(rng.uniform(-0.6, 0.6)), seed=int(rng.integers(2**62)),
    )


def make_exam(task: ExamTask) -> dict:
    """Render and write the 4 views of one exam; return its label and lesion rows."""
    site_code = _site_code(task.site)
    rng = np.random.default_rng([task.seed, site_code, task.index])
    profile = VENDOR_PROFILES[task.vendor]
    rows, cols, spacing = profile.scaled(task.size_scale)
    density = str(rng.choice(list(DENSITY_P), p=list(DENSITY_P.values())))
    birth_year = int(rng.integers(1940, 1976))
    depth = rng.uniform(60, 112)
    height = min(rng.uniform(110, 170), 0.75 * rows * spacing)
    specs = {
        side: BreastSpec(depth_mm=float(depth * rng.uniform(0.94, 1.06)),
                         height_mm=float(height * rng.uniform(0.95, 1.05)), power=float(rng.uniform(1.9, 2.6)),
                         asym=float(rng.uniform(-0.12, 0.12)), density=density, beta=float(rng.uniform(2.7, 3.3)))
        for side in ("L", "R")
    }
    thickness = {side: float(rng.uniform(35, 70)) for side in ("L", "R")}
    findings: dict[str, list[LesionSpec]] = {"L": [], "R": []}
    if task.cancer:
        findings[str(rng.choice(["L", "R"]))].append(_lesion(rng, True, 1, task.difficulty))
    if task.benign:
        findings[str(rng.choice(["L", "R"]))].append(_lesion(rng, False, 2 if task.cancer else 1, task.difficulty))
    digest = hashlib.sha256(f"{task.seed}|{task.site}|{task.index}".encode()).hexdigest()
    patient_id = "SYN" + digest[:10].upper()
    study_uid = synth_uid("study", task.seed, task.site, task.index)
    study_date = (dt.date(2020, 1, 1) + dt.timedelta(days=task.index % 3000)).strftime("%Y%m%d")
    out = Path(task.out_dir)
    lesion_rows = []
    detail = min(3.0, 1.0 / task.difficulty)
    for k, (side, view) in enumerate(VIEWS):
        series_uid = synth_uid("series", task.seed, task.site, task.index, k)
        sop_uid = synth_uid("sop", task.seed, task.site, task.index, k)
        ident = ImageIdentity(
            patient_id=patient_id, patient_number=task.index + 1, birth_year=birth_year, age=2020 - birth_year,
            site=task.site, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid,
            accession=f"ACC{int(digest[10:22], 16) % 10**10:010d}", study_date=study_date, series_number=k + 1,
            instance_number=1, laterality=side, view=view,
        )
        view_rng = np.random.default_rng([task.seed, site_code, task.index, k, 1])
        noise_rng = np.random.default_rng([task.seed, site_code, task.index, k, 2])
        phantom = render_view(specs[side], view, findings[side], rows, cols, spacing, view_rng, detail=detail)
        # folders name the case by its index, not by PatientID, so file paths in manifests carry no identifier
        path = out / "dicom" / f"case{task.index + 1:05d}" / study_uid / series_uid / f"{sop_uid}.dcm"
        stored = write_view(phantom, profile, ident, spacing, thickness[side], path, noise_rng)
        for placed, (x0, y0, x1, y1) in zip(phantom.lesions, stored.boxes, strict=True):
            les = placed.spec
            lesion_rows.append([sop_uid, patient_id, study_uid, side, view, les.lesion_id, les.kind, int(les.malignant),
                                x0, y0, x1, y1])
        if task.masks:
            for name, mask in (("breast", stored.tissue), ("pectoral", stored.pectoral), ("lesion", stored.lesion)):
                mpath = out / "masks" / f"{sop_uid}_{name}.png"
                if not cv2.imwrite(str(mpath), mask.astype(np.uint8) * 255):
                    raise OSError(f"{mpath}: could not write the mask PNG")
    label_rows = []
    for side in ("L", "R"):
        les = findings[side]
        label_rows.append([
            patient_id, study_uid, side, int(any(f.malignant for f in les)), int(any(not f.malignant for f in les)),
            max([1] + [BIRADS[f.kind] for f in les]), density, task.vendor, task.site, task.split_group,
        ])
    return {"labels": label_rows, "lesions": lesion_rows, "images": len(VIEWS)}


def _check_args(exams: int, size_scale: float, prevalence: float, benign_rate: float, difficulty: float,
                workers: int, site: str) -> None:
    """Raise ValueError naming the argument when a value is out of range."""
    if not isinstance(exams, int) or exams < 1:
        raise ValueError(f"exams: must be a positive integer, got {exams!r}")
    if not 0.02 <= size_scale <= 1.0:
        raise ValueError(f"size_scale: must be in [0.02, 1.0] (1.0 = full detector size), got {size_scale!r}")
    for name, value in (("prevalence", prevalence), ("benign_rate", benign_rate)):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name}: must be a fraction in [0, 1], got {value!r}")
    if not 0.25 <= difficulty <= 4.0:
        raise ValueError(f"difficulty: must be in [0.25, 4] (1 = default, higher = subtler), got {difficulty!r}")
    if not isinstance(workers, int) or workers < 1:
        raise ValueError(f"workers: must be a positive integer, got {workers!r}")
    if not site or any(c in site for c in "/\\\n"):
        raise ValueError(f"site: must be a non-empty name without slashes or newlines, got {site!r}")


def _write_csv(path: Path, header: tuple[str, ...], rows: list[list]) -> None:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate(
    out_dir: str | Path,
    *,
    exams: int = 8,
    seed: int = 0,
    vendors: str | list[str] | tuple[str, ...] | None = None,
    size_scale: float = 0.25,
    prevalence: float = 0.3,
    benign_rate: float = 0.3,
    masks: bool = True,
    site: str = "site-A",
    difficulty: float = 1.0,
    workers: int = 1,
) -> dict:
    """Write a synthetic mammography archive (see the module docstring for the layout).

    Args:
        out_dir: destination folder; must be absent or empty.
        exams: number of 4-view exams (one per patient).
        seed: master seed; the same seed and arguments give byte-identical files.
        vendors: profile selection (see `resolve_vendors`); exams cycle through them in order.
        size_scale: linear image-size factor; spacing grows as 1/size_scale so the breast keeps its size in mm.
        prevalence: fraction of exams with a cancer (exactly round(exams * prevalence) of them).
        benign_rate: fraction of exams with a benign finding, drawn independently of cancer.
        masks: also write breast/pectoral/lesion PNG masks.
        site: site name, written to labels.csv and InstitutionName; part of every seed and UID.
        difficulty: 1 = default; higher makes lesions fainter (contrast ~ difficulty^-0.5) and the fine
            malignant/benign differences weaker (fine-structure gain 1/difficulty, at most 3).
        workers: processes; results do not depend on it.

    Returns:
        Summary: counts, paths, vendor counts, seconds and exams per minute.

    Raises:
        ValueError: an argument out of range (named in the message) or an unknown vendor.
        FileExistsError: `out_dir` exists and is not empty.
    """
    _check_args(exams, size_scale, prevalence, benign_rate, difficulty, workers, site)
    names = resolve_vendors(vendors)
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FileExistsError(f"out_dir: {out} exists and is not empty; choose a new folder")
    out.mkdir(parents=True, exist_ok=True)
    if masks:
        (out / "masks").mkdir()
    start = time.perf_counter()
    master = np.random.default_rng([seed, _site_code(site)])
    cancer = np.zeros(exams, bool)
    cancer[master.permutation(exams)[: round(exams * prevalence)]] = True
    benign = np.zeros(exams, bool)
    benign[master.permutation(exams)[: round(exams * benign_rate)]] = True
    folds = np.zeros(exams, int)
    for stratum in (cancer, ~cancer):
        idx = np.flatnonzero(stratum)
        folds[master.permutation(idx)] = np.arange(idx.size) % N_FOLDS
    tasks = [
        ExamTask(index=i, seed=seed, site=site, vendor=names[i % len(names)], cancer=bool(cancer[i]),
                 benign=bool(benign[i]), size_scale=size_scale, difficulty=difficulty, masks=masks, out_dir=str(out),
                 split_group=int(folds[i]))
        for i in range(exams)
    ]
    if workers == 1:
        results = [make_exam(t) for t in tasks]
    else:
        ctx = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            results = list(pool.map(make_exam, tasks, chunksize=max(1, math.ceil(exams / (4 * workers)))))
    labels = [row for r in results for row in r["labels"]]
    lesions = [row for r in results for row in r["lesions"]]
    _write_csv(out / "labels.csv", LABEL_COLUMNS, labels)
    _write_csv(out / "lesions.csv", LESION_COLUMNS, lesions)
    manifest = {
        "generator": "mammokit.synth", "version": __version__, "seed": seed, "exams": exams, "site": site,
        "vendors": list(names), "size_scale": size_scale, "prevalence": prevalence, "benign_rate": benign_rate,
        "difficulty": difficulty, "masks": masks,
        "profiles": {
            n: {**VENDOR_PROFILES[n].summary(), "scaled_rows_cols_spacing": VENDOR_PROFILES[n].scaled(size_scale)}
            for n in names
        },
        "phi_patterns": PHI_PATTERNS,
        "box_convention": "x0, y0 inclusive; x1, y1 exclusive; stored DICOM pixel grid",
    }
    (out / "synth.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    vendor_counts = {n: sum(t.vendor == n for t in tasks) for n in names}
    return {
        "out_dir": str(out), "dicom_dir": str(out / "dicom"), "labels_csv": str(out / "labels.csv"),
        "lesions_csv": str(out / "lesions.csv"), "masks_dir": str(out / "masks") if masks else None,
        "manifest": str(out / "synth.json"), "exams": exams, "patients": exams,
        "images": sum(r["images"] for r in results), "breasts": len(labels),
        "cancer_exams": int(cancer.sum()), "benign_exams": int(benign.sum()),
        "cancer_breasts": sum(r[3] for r in labels), "lesion_rows": len(lesions), "vendors": vendor_counts,
        "seconds": round(seconds, 3), "exams_per_minute": round(60 * exams / seconds, 2) if seconds > 0 else None,
    }
