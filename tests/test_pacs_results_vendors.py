"""Result objects for a study of every synthetic vendor profile (MG and CR, MONOCHROME1/2, with and without Pixel
Spacing, J2K/RLE/uncompressed, scanned film): each SR, SEG and SC passes `dciodvfy` and highdicom reads it back.
The model falls back to 0.1 mm where a header has no spacing it trusts (the GE- and Fuji-like profiles at this size)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from mammokit.pacs.node import process_study
from mammokit.synth import ALL_PROFILES, generate
from test_pacs_results import _validate
from test_predict import PRE, release_tiny

READERS = {"sr": hd.sr.srread, "seg": hd.seg.segread, "sc": hd.imread}
PRIVATE_CODE_WARNING = ("Warning - Unrecognized defined term <99MAMMOKIT> for value 1 of attribute <Coding Scheme "
                        "Designator>")


@pytest.fixture(scope="module")
def studies(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[tuple[str, Path]], Path]:
    root = tmp_path_factory.mktemp("pacs_vendors")
    generate(root / "raw", exams=len(ALL_PROFILES), seed=3, vendors=",".join(ALL_PROFILES), size_scale=0.06,
             masks=False)
    cases = sorted(p for p in (root / "raw" / "dicom").iterdir() if p.is_dir())
    vendors = [str(pydicom.dcmread(next(c.rglob("*.dcm")), stop_before_pixels=True).Manufacturer) for c in cases]
    model = release_tiny(root / "model", pre=PRE.model_copy(update={"fallback_spacing_mm": 0.1}))
    return root, list(zip(vendors, cases, strict=True)), model


@pytest.mark.slow
def test_results_of_every_vendor_are_valid(dciodvfy: str, studies: tuple) -> None:
    root, cases, model = studies
    problems = {}
    for vendor, case in cases:
        result = process_study(model, case, root / "out")
        for path in result.result_files:
            errors, warnings = _validate(dciodvfy, path)
            READERS[path.name.split("_")[0]](path)
            if errors or set(warnings) - {PRIVATE_CODE_WARNING}:
                problems[f"{vendor}/{path.name}"] = errors + warnings
        assert len(result.result_files) == 1 + 2 * len(result.prediction["views"]), vendor
    assert len(cases) == len(ALL_PROFILES)
    assert not problems, problems
