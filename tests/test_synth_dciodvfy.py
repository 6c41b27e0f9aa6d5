"""Every synthetic profile and hard case is valid DICOM: dicom3tools' `dciodvfy` reports no error.

Skipped when `dciodvfy` is not installed (Debian: `apt-get install dicom3tools`), unless MAMMOKIT_REQUIRE_DICOM3TOOLS=1
(CI sets it), which makes a missing validator a failure.
"""

from __future__ import annotations

import csv
import subprocess
from collections import Counter
from pathlib import Path

import pydicom
import pytest

from mammokit.synth import ALL_PROFILES, HARD_KINDS, VENDOR_PROFILES, generate


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    root = tmp_path_factory.mktemp("vfy")
    plain, hard = root / "plain", root / "hard"
    generate(plain, exams=len(VENDOR_PROFILES), seed=2, vendors="all", size_scale=0.06, prevalence=0.5,
             benign_rate=0.5)
    generate(hard, exams=2 * len(HARD_KINDS), seed=4, vendors="all", size_scale=0.06, hard_cases="all")
    return [plain, hard]


def _validate(dciodvfy: str, path: Path) -> tuple[list[str], list[str]]:
    """(errors, warnings) lines of dciodvfy's report on one file."""
    run = subprocess.run([dciodvfy, str(path)], capture_output=True, text=True, timeout=60)
    lines = (run.stdout + run.stderr).splitlines()
    return [ln for ln in lines if ln.startswith("Error")], [ln for ln in lines if ln.startswith("Warning")]


def _vendor_of(archive: Path) -> dict[str, str]:
    """SOPInstanceUID -> "vendor" or "vendor/hard case" of every file of an archive."""
    out = {}
    for path in (archive / "dicom").rglob("*.dcm"):
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[path.stem] = next(n for n, p in ALL_PROFILES.items() if p.manufacturer == ds.Manufacturer)
    if (archive / "images.csv").is_file():
        with (archive / "images.csv").open(newline="") as fh:
            for row in csv.DictReader(fh):
                out[row["sop_uid"]] += f"/{row['hard_case']}"
    return out


def test_every_profile_and_hard_case_is_valid_dicom(dciodvfy: str, archives: list[Path]) -> None:
    errors: dict[str, list[str]] = {}
    warnings: Counter[str] = Counter()
    seen = set()
    for archive in archives:
        labels = _vendor_of(archive)
        for path in sorted((archive / "dicom").rglob("*.dcm")):
            errs, warns = _validate(dciodvfy, path)
            key = labels[path.stem]
            seen.add(key)
            warnings[key] += len(warns)
            if errs:
                errors.setdefault(key, []).extend(errs)
    print("dciodvfy warnings per profile (/hard case):", dict(sorted(warnings.items())))
    assert {k.split("/")[0] for k in seen} == set(ALL_PROFILES)
    assert {k.split("/")[1] for k in seen if "/" in k} == set(HARD_KINDS)
    assert not errors, errors
