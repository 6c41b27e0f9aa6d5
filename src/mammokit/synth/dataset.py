"""`generate(...)`: a synthetic multi-vendor mammography archive laid out like a PACS export.

Layout under `out_dir`:

    dicom/<PatientID>/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm   (4 views per exam)
    labels.csv    one row per breast: patient_id, study_uid, laterality, cancer, benign, birads, density,
                  vendor, site, split_group (0-4, patient-level folds stratified by cancer)
    lesions.csv   one row per lesion per image: sop_uid, patient_id, study_uid, laterality, view, lesion_id,
                  kind, malignant, x0, y0, x1, y1 (end-exclusive, in the STORED pixel grid, after any flip)
    masks/<SOPInstanceUID>_{breast,pectoral,lesion}.png   uint8 0/255 in the stored grid (optional);
                  breast = all tissue incl. pectoral muscle and nipple, never a marker, label or film border;
                  <SOPInstanceUID>_fold.png too for a skin-fold hard case
    images.csv    only with hard cases or an opt-in profile (film): one row per image: sop_uid, patient_id,
                  study_uid, laterality, view, vendor, hard_case ("" for none), film (0/1), chest_wall ("left" or
                  "right" in the stored image), truth (JSON, boxes in the stored grid, x0, y0, x1, y1 end-exclusive):
                  spacing_mm (the true spacing, also for a film without spacing tags), rows, cols, air_fraction
                  (share of the image that is not breast), marker_boxes (lead markers and burned-in blocks),
                  label_boxes (paper labels), border_boxes (unexposed film borders), mark_gaps_mm (film: distance
                  of each marker, then each label, to the breast), collimation_box (the collimated field) and
                  collimation_value (the stored value outside it), fold_pixels and fold_box
    synth.json    parameters, seed, resolved vendor profiles, PHI patterns (and hard_cases when used); written last

Every random choice flows from `seed` (and `site`): exam i draws from its own generator, so results
are byte-identical for any `workers`. Hard cases draw from generators of their own, so that without them the
output is exactly what it was before they existed; `hard_case(kind, seed)` renders one such image in memory.
Each patient has one study; PatientID is a fake code, never a name.
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
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from pydicom.dataset import Dataset

from mammokit import __version__
from mammokit.errors import InvalidInputError
from mammokit.synth.hard import (
    adjust_spec,
    air_fraction,
    fold_summary,
    modify_phantom,
    render_options,
    resolve_hard_cases,
)
from mammokit.synth.lesions import BENIGN_KINDS, MALIGNANT_KINDS
from mammokit.synth.phantom import BreastSpec, LesionSpec, render_view
from mammokit.synth.vendors import (
    ALL_PROFILES,
    DEFAULT_VENDORS,
    FILM_PROFILE,
    VENDOR_PROFILES,
    VendorProfile,
    resolve_vendors,
)
from mammokit.synth.writer import ImageIdentity, StoredImage, render_image, synth_uid

LABEL_COLUMNS = ("patient_id", "study_uid", "laterality", "cancer", "benign", "birads", "density", "vendor", "site",
                 "split_group")
LESION_COLUMNS = ("sop_uid", "patient_id", "study_uid", "laterality", "view", "lesion_id", "kind", "malignant",
                  "x0", "y0", "x1", "y1")
IMAGE_COLUMNS = ("sop_uid", "patient_id", "study_uid", "laterality", "view", "vendor", "hard_case", "film",
                 "chest_wall", "truth")
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
    hard_case: str | None = None


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


@dataclass
class ExamSetup:
    """The anatomy, findings and identifiers of one exam, drawn from the exam's generator."""

    profile: VendorProfile
    rows: int
    cols: int
    spacing: float
    density: str
    birth_year: int
    specs: dict[str, BreastSpec]
    thickness: dict[str, float]
    findings: dict[str, list[LesionSpec]]
    digest: str
    patient_id: str
    study_uid: str
    study_date: str


def exam_setup(task: ExamTask) -> ExamSetup:
    """Draw one exam's anatomy and findings (the order of draws is part of the output: do not reorder)."""
    site_code = _site_code(task.site)
    rng = np.random.default_rng([task.seed, site_code, task.index])
    profile = ALL_PROFILES[task.vendor]
    if task.hard_case == "collimated":
        profile = replace(profile, padding_value=None)
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
    if task.hard_case:
        hard_rng = np.random.default_rng([task.seed, site_code, task.index, 9])
        specs = {side: adjust_spec(task.hard_case, spec, rows, cols, spacing, hard_rng) for side, spec in specs.items()}
        if task.hard_case == "fatty":
            density = "A"
    digest = hashlib.sha256(f"{task.seed}|{task.site}|{task.index}".encode()).hexdigest()
    return ExamSetup(
        profile=profile, rows=rows, cols=cols, spacing=spacing, density=density, birth_year=birth_year, specs=specs,
        thickness=thickness, findings=findings, digest=digest, patient_id="SYN" + digest[:10].upper(),
        study_uid=synth_uid("study", task.seed, task.site, task.index),
        study_date=(dt.date(2020, 1, 1) + dt.timedelta(days=task.index % 3000)).strftime("%Y%m%d"),
    )


def render_exam_view(task: ExamTask, setup: ExamSetup, k: int) -> tuple[Dataset, StoredImage, ImageIdentity]:
    """Render view `k` (index into VIEWS) of an exam: its dataset (not written), stored-grid truth and identity."""
    side, view = VIEWS[k]
    site_code = _site_code(task.site)
    ident = ImageIdentity(
        patient_id=setup.patient_id, patient_number=task.index + 1, birth_year=setup.birth_year,
        age=2020 - setup.birth_year, site=task.site, study_uid=setup.study_uid,
        series_uid=synth_uid("series", task.seed, task.site, task.index, k),
        sop_uid=synth_uid("sop", task.seed, task.site, task.index, k),
        accession=f"ACC{int(setup.digest[10:22], 16) % 10**10:010d}", study_date=setup.study_date,
        series_number=k + 1, instance_number=1, laterality=side, view=view,
    )
    view_rng = np.random.default_rng([task.seed, site_code, task.index, k, 1])
    noise_rng = np.random.default_rng([task.seed, site_code, task.index, k, 2])
    phantom = render_view(setup.specs[side], view, setup.findings[side], setup.rows, setup.cols, setup.spacing,
                          view_rng, detail=min(3.0, 1.0 / task.difficulty), **render_options(task.hard_case))
    extra = {}
    if task.hard_case:
        hard_rng = np.random.default_rng([task.seed, site_code, task.index, k, 3])
        phantom, fold = modify_phantom(task.hard_case, phantom, view, setup.spacing, hard_rng)
        extra = {"fold": fold} if fold is not None else {}
    ds, stored = render_image(phantom, setup.profile, ident, setup.spacing, setup.thickness[side], noise_rng,
                              collimate=task.hard_case == "collimated", extra_masks=extra)
    return ds, stored, ident


def image_truth(task: ExamTask, setup: ExamSetup, ident: ImageIdentity, stored: StoredImage) -> dict:
    """The JSON-able ground truth of one image (see the module docstring)."""
    rows, cols = stored.tissue.shape
    return {
        "sop_uid": str(ident.sop_uid), "laterality": ident.laterality, "view": ident.view,
        "vendor": setup.profile.name, "hard_case": task.hard_case or "", "film": setup.profile.film,
        "chest_wall": stored.chest_wall, "spacing_mm": setup.spacing, "rows": rows, "cols": cols,
        "air_fraction": round(air_fraction(stored.tissue), 6), **stored.truth, **fold_summary(stored.extra.get("fold")),
    }


def make_exam(task: ExamTask) -> dict:
    """Render and write the 4 views of one exam; return its label, lesion and per-image truth rows."""
    setup = exam_setup(task)
    out = Path(task.out_dir)
    lesion_rows, image_rows = [], []
    for k, (side, view) in enumerate(VIEWS):
        ds, stored, ident = render_exam_view(task, setup, k)
        sop_uid = ident.sop_uid
        # folders name the case by its index, not by PatientID, so file paths in manifests carry no identifier
        path = out / "dicom" / f"case{task.index + 1:05d}" / setup.study_uid / ident.series_uid / f"{sop_uid}.dcm"
        path.parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        for placed, (x0, y0, x1, y1) in zip(setup.findings[side], stored.boxes, strict=True):
            lesion_rows.append([sop_uid, setup.patient_id, setup.study_uid, side, view, placed.lesion_id, placed.kind,
                                int(placed.malignant), x0, y0, x1, y1])
        truth = image_truth(task, setup, ident, stored)
        image_rows.append([sop_uid, setup.patient_id, setup.study_uid, side, view, setup.profile.name,
                           task.hard_case or "", int(setup.profile.film), stored.chest_wall, _json(truth)])
        if task.masks:
            masks = {"breast": stored.tissue, "pectoral": stored.pectoral, "lesion": stored.lesion, **stored.extra}
            for name, mask in masks.items():
                mpath = out / "masks" / f"{sop_uid}_{name}.png"
                if not cv2.imwrite(str(mpath), mask.astype(np.uint8) * 255):
                    raise OSError(f"{mpath}: could not write the mask PNG")
    label_rows = []
    for side in ("L", "R"):
        les = setup.findings[side]
        label_rows.append([
            setup.patient_id, setup.study_uid, side, int(any(f.malignant for f in les)),
            int(any(not f.malignant for f in les)), max([1] + [BIRADS[f.kind] for f in les]), setup.density,
            task.vendor, task.site, task.split_group,
        ])
    return {"labels": label_rows, "lesions": lesion_rows, "images": len(VIEWS), "image_rows": image_rows}


def _check_args(exams: int, size_scale: float, prevalence: float, benign_rate: float, difficulty: float,
                workers: int, site: str) -> None:
    """Raise ValueError naming the argument when a value is out of range."""
    if not isinstance(exams, int) or exams < 1:
        raise InvalidInputError(f"exams: must be a positive integer, got {exams!r}")
    if not 0.02 <= size_scale <= 1.0:
        raise InvalidInputError(f"size_scale: must be in [0.02, 1.0] (1.0 = full detector size), got {size_scale!r}")
    for name, value in (("prevalence", prevalence), ("benign_rate", benign_rate)):
        if not 0.0 <= value <= 1.0:
            raise InvalidInputError(f"{name}: must be a fraction in [0, 1], got {value!r}")
    if not 0.25 <= difficulty <= 4.0:
        raise InvalidInputError(f"difficulty: must be in [0.25, 4] (1 = default, higher = subtler), got {difficulty!r}")
    if not isinstance(workers, int) or workers < 1:
        raise InvalidInputError(f"workers: must be a positive integer, got {workers!r}")
    if not site or any(c in site for c in "/\\\n"):
        raise InvalidInputError(f"site: must be a non-empty name without slashes or newlines, got {site!r}")


def _exam_vendor(names: tuple[str, ...], kinds: tuple[str, ...], i: int) -> str:
    """Vendor of exam i: the vendors cycle, except that a film hard case uses the film profile."""
    if kinds and kinds[i % len(kinds)] == "film":
        return FILM_PROFILE.name
    return names[i % len(names)]


def _json(value: object) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


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
    hard_cases: str | list[str] | tuple[str, ...] | None = None,
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
        hard_cases: None (default) or hard-case kinds ("all", a comma-separated string or names; see
            `mammokit.synth.hard`): exam i becomes kind i % len(kinds), a "film" exam uses the film profile, and
            images.csv records each image's ground truth.

    Returns:
        Summary: counts, paths, vendor counts, seconds and exams per minute.

    Raises:
        ValueError: an argument out of range (named in the message), an unknown vendor or hard-case kind.
        FileExistsError: `out_dir` exists and is not empty.
    """
    _check_args(exams, size_scale, prevalence, benign_rate, difficulty, workers, site)
    names = resolve_vendors(vendors)
    kinds = resolve_hard_cases(hard_cases)
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
        ExamTask(index=i, seed=seed, site=site, vendor=_exam_vendor(names, kinds, i), cancer=bool(cancer[i]),
                 benign=bool(benign[i]), size_scale=size_scale, difficulty=difficulty, masks=masks, out_dir=str(out),
                 split_group=int(folds[i]), hard_case=kinds[i % len(kinds)] if kinds else None)
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
    used = tuple(dict.fromkeys(t.vendor for t in tasks))
    with_truth = bool(kinds) or any(n not in VENDOR_PROFILES for n in used)
    if with_truth:
        _write_csv(out / "images.csv", IMAGE_COLUMNS, [row for r in results for row in r["image_rows"]])
    manifest = {
        "generator": "mammokit.synth", "version": __version__, "seed": seed, "exams": exams, "site": site,
        "vendors": list(names), "size_scale": size_scale, "prevalence": prevalence, "benign_rate": benign_rate,
        "difficulty": difficulty, "masks": masks,
        "profiles": {
            n: {**ALL_PROFILES[n].summary(), "scaled_rows_cols_spacing": ALL_PROFILES[n].scaled(size_scale)}
            for n in (used if kinds else names)
        },
        "phi_patterns": PHI_PATTERNS,
        "box_convention": "x0, y0 inclusive; x1, y1 exclusive; stored DICOM pixel grid",
    }
    if kinds:
        manifest["hard_cases"] = list(kinds)
    (out / "synth.json").write_text(json.dumps(manifest, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    seconds = time.perf_counter() - start
    vendor_counts = {n: sum(t.vendor == n for t in tasks) for n in (used if kinds else names)}
    return {
        "out_dir": str(out), "dicom_dir": str(out / "dicom"), "labels_csv": str(out / "labels.csv"),
        "lesions_csv": str(out / "lesions.csv"), "masks_dir": str(out / "masks") if masks else None,
        "manifest": str(out / "synth.json"), "images_csv": str(out / "images.csv") if with_truth else None,
        "exams": exams, "patients": exams,
        "images": sum(r["images"] for r in results), "breasts": len(labels),
        "cancer_exams": int(cancer.sum()), "benign_exams": int(benign.sum()),
        "cancer_breasts": sum(r[3] for r in labels), "lesion_rows": len(lesions), "vendors": vendor_counts,
        "seconds": round(seconds, 3), "exams_per_minute": round(60 * exams / seconds, 2) if seconds > 0 else None,
    }


def hard_case(
    kind: str | None, seed: int = 0, size_scale: float = 0.25, *, vendor: str | None = None, view: str | None = None,
    laterality: str | None = None, path: str | Path | None = None,
) -> tuple[Dataset, dict]:
    """One hard-case image and its ground truth, without writing an archive (see `mammokit.synth.hard`).

    Args:
        kind: a hard-case kind ("fatty", "air_minority", "collimated", "film", "skin_fold"), or None for a plain image.
        seed: the same seed and arguments give a byte-identical dataset.
        size_scale: linear image-size factor, as in `generate`.
        vendor: profile name; default "film" for the film kind, else the default vendors in turn by seed.
        view, laterality: "CC"/"MLO" and "L"/"R"; default from the seed.
        path: also write the file there.

    Returns:
        (dataset, truth): truth holds the JSON-able fields of images.csv's `truth` column plus bool masks on the
        stored pixel grid: "breast", "pectoral", "lesion" and, for a skin fold, "fold".

    Raises:
        ValueError: an unknown kind, vendor, view or laterality.
    """
    kinds = resolve_hard_cases([kind]) if kind else ()
    kind = kinds[0] if kinds else None
    name = vendor or ("film" if kind == "film" else DEFAULT_VENDORS[seed % len(DEFAULT_VENDORS)])
    name = resolve_vendors([name])[0]
    k = (seed + seed // 4) % len(VIEWS)
    side, view_name = laterality or VIEWS[k][0], view or VIEWS[k][1]
    if (side, view_name) not in VIEWS:
        raise ValueError(f"laterality/view: expected L/R and CC/MLO, got {side!r}/{view_name!r}")
    task = ExamTask(index=0, seed=seed, site=f"hard-{kind or 'plain'}", vendor=name, cancer=False, benign=False,
                    size_scale=size_scale, difficulty=1.0, masks=False, out_dir="", split_group=0, hard_case=kind)
    setup = exam_setup(task)
    ds, stored, ident = render_exam_view(task, setup, VIEWS.index((side, view_name)))
    truth = image_truth(task, setup, ident, stored)
    truth.update(breast=stored.tissue, pectoral=stored.pectoral, lesion=stored.lesion, **stored.extra)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        ds.save_as(path, enforce_file_format=True)
        truth["path"] = str(path)
    return ds, truth
