"""`mammokit predict` end to end on a tiny released model and a tiny synthetic archive.

The scores are checked against an independent run of the training-time path (index → run_pipeline with the model's
preprocessing config → dataset_for → run_inference), the calibration against sigmoid(logit / T) for the T written
into the model, the heatmaps against each DICOM's own pixel grid and crop box, and every output file for PHI.
"""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import cv2
import numpy as np
import pydicom
import pytest
import torch
from typer.testing import CliRunner

from mammokit import INTENDED_USE
from mammokit.cli import app
from mammokit.config import config_hash
from mammokit.datasets.index import scan
from mammokit.dicom import hash_id, read_dicom
from mammokit.evaluation.inference import dataset_for, run_inference
from mammokit.ids import resolve_salt
from mammokit.models import create_model
from mammokit.predict import predict_studies, preprocess_config_of
from mammokit.preprocess.config import PreprocessConfig
from mammokit.preprocess.pipeline import run_pipeline
from mammokit.release.calibration import Calibrator, LevelCalibration
from mammokit.release.model import load_released, save_released, set_calibration
from mammokit.synth import PHI_PATTERNS, generate

TEMPERATURE = 2.0
MODEL_KWARGS = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2}
PRE = PreprocessConfig(spacing_mm=0.4, global_long_side=256, patch_size=64)


def release_tiny(folder: Path, temperature: float = TEMPERATURE, pre: PreprocessConfig = PRE) -> Path:
    """A tiny four-view model released with a config shaped like `training.run.release_config` writes."""
    model = create_model("multiview_gmic", seed=0, **MODEL_KWARGS)
    config = {
        "model": {"name": "multiview_gmic", "kwargs": MODEL_KWARGS},
        "input": {"level": "exam", "input_size": [64, 40], "full_scale": 2, "normalization": "image",
                  "view_stats": {}},
        "preprocess": {"config": pre.model_dump(), "config_hash": config_hash(pre)},
        "temperature": temperature, "temperature_source": "test",
        "training": {"run": "tiny", "seed": 0, "store": "/nowhere", "exams": 3, "images": 12, "sites": ["site-A"],
                     "vendors": ["x"], "spacing_mm": 0.4, "stages": {"all": {"epochs": 1}}},
    }
    return save_released(folder, model, config)


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("predict")
    generate(root / "raw", exams=2, seed=11, size_scale=0.2, masks=False)
    studies = root / "studies"
    shutil.copytree(root / "raw" / "dicom", studies)
    (studies / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    first = sorted(p for p in studies.rglob("*.dcm") if p.parent != studies)[0]  # inside one study's series folder
    (first.parent / "cut.dcm").write_bytes(first.read_bytes()[: first.stat().st_size // 2])
    return {"root": root, "studies": studies, "model": release_tiny(root / "model")}


@pytest.fixture(scope="module")
def predicted(workspace: dict[str, Path]) -> dict[str, dict]:
    torch.manual_seed(0)
    out = workspace["root"] / "out"
    preds = predict_studies(workspace["model"], workspace["studies"], out=out)
    return {p.exam_id: p.prediction for p in preds}


def _headers(folder: Path) -> dict[str, pydicom.Dataset]:
    """SOP-UID hash (as predict names images) -> header, for every DICOM under `folder`."""
    out = {}
    for path in folder.rglob("*.dcm"):
        if path.name == "broken.dcm":
            continue
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        out[hash_id(str(ds.SOPInstanceUID), resolve_salt())] = ds
    return out


def _check_scores(block: dict, temperature: float) -> None:
    assert 0.0 <= block["prob"] <= 1.0 and 0.0 <= block["prob_raw"] <= 1.0
    assert block["prob_raw"] == pytest.approx(_sigmoid(block["logit"]), abs=1e-12)
    assert block["prob"] == pytest.approx(_sigmoid(block["logit"] / temperature), abs=1e-12)


def test_one_calibrated_prediction_per_study(workspace: dict[str, Path], predicted: dict[str, dict]) -> None:
    assert set(predicted) == set(scan(workspace["root"] / "raw" / "dicom").images["exam_id"])
    for exam_id, pred in predicted.items():
        saved = json.loads((workspace["root"] / "out" / exam_id / "prediction.json").read_text())
        assert saved["exam"] == pytest.approx(pred["exam"])
        assert pred["intended_use"] == INTENDED_USE
        assert pred["model"]["name"] == "multiview_gmic" and pred["model"]["temperature"] == TEMPERATURE
        assert pred["model"]["training"]["exams"] == 3 and "store" not in pred["model"]["training"]
        assert pred["study"]["views_used"] == ["L-CC", "L-MLO", "R-CC", "R-MLO"]
        for block in [pred["exam"], *pred["breasts"].values(), *pred["views"]]:
            _check_scores(block, TEMPERATURE)
    summary = json.loads((workspace["root"] / "out" / "summary.json").read_text())
    assert {s["exam_id"] for s in summary["studies"]} == set(predicted)


def test_scores_match_the_training_time_path(workspace: dict[str, Path], predicted: dict[str, dict]) -> None:
    """Preprocessing with the model's recorded config + the evaluation dataset give the very same logits."""
    model, config = load_released(workspace["model"])
    cfg, warnings = preprocess_config_of(config)
    assert cfg == PRE and warnings == []
    store = workspace["root"] / "ref_store"
    index = scan(workspace["root"] / "raw" / "dicom").images
    run_pipeline(index, store, cfg, progress=False)
    import pandas as pd

    table = pd.read_parquet(store / "preprocessed.parquet").assign(cancer=np.nan)
    res = run_inference(model, dataset_for(config, table, store), batch_size=2)
    for i, exam_id in enumerate(res.items["exam_id"]):
        pred = predicted[exam_id]
        assert pred["exam"]["logit"] == pytest.approx(float(res.exam_logit[i]), abs=1e-5)
        for col, side in enumerate("LR"):
            assert pred["breasts"][side]["logit"] == pytest.approx(float(res.breast_logits[i, col]), abs=1e-5)


def test_heatmaps_lie_on_each_dicom_grid(workspace: dict[str, Path], predicted: dict[str, dict]) -> None:
    headers = _headers(workspace["studies"])
    for exam_id, pred in predicted.items():
        folder = workspace["root"] / "out" / exam_id
        for view in pred["views"]:
            ds = headers[view["image_hash"]]
            shape = (int(ds.Rows), int(ds.Columns))
            assert (view["rows"], view["columns"]) == shape
            assert f"{ds.ImageLaterality}-{ds.ViewPosition}" == view["view"]
            heat = cv2.imread(str(folder / view["heatmap"]), cv2.IMREAD_UNCHANGED)
            overlay = cv2.imread(str(folder / view["overlay"]), cv2.IMREAD_UNCHANGED)
            assert heat.dtype == np.uint16 and heat.shape == shape
            assert overlay.shape == (*shape, 3)
            box = view["crop_box"]
            inside = np.zeros(shape, bool)
            inside[box["y0"]:box["y1"], box["x0"]:box["x1"]] = True
            assert not heat[~inside].any()  # nothing outside the breast crop
            assert (heat[inside] > 0).all()  # the saliency is a sigmoid: positive everywhere on the breast
            assert heat.max() / 65535 == pytest.approx(view["heatmap_max"], abs=1e-4)
            assert len(view["patch_boxes"]) == MODEL_KWARGS["num_patches"]
            # expected patch side in DICOM pixels: 16 full-canvas px -> stored px (fit_into scale of the stored
            # image, ~crop * spacing / 0.4 mm) -> DICOM px (x 0.4 mm / the DICOM's spacing)
            sy, sx = read_dicom(ds.filename, pixels=False).spacing_mm  # the spacing tag the reader trusts
            stored = ((box["y1"] - box["y0"]) * sy / PRE.spacing_mm, (box["x1"] - box["x0"]) * sx / PRE.spacing_mm)
            fit = min(MODEL_KWARGS["full_size"][0] / stored[0], MODEL_KWARGS["full_size"][1] / stored[1])
            side = MODEL_KWARGS["patch_size"] / fit * PRE.spacing_mm
            for b in view["patch_boxes"]:
                assert b["x1"] - b["x0"] == pytest.approx(side / sx, rel=0.03)
                assert b["y1"] - b["y0"] == pytest.approx(side / sy, rel=0.03)
                if b["inside_fraction"] == 1.0:  # retrieval may also pick windows on the canvas padding
                    assert box["x0"] - 1e-6 <= b["x0"] < b["x1"] <= box["x1"] + 1e-6
                    assert box["y0"] - 1e-6 <= b["y0"] < b["y1"] <= box["y1"] + 1e-6
            att = [b["attention"] for b in view["patch_boxes"]]
            assert att == sorted(att, reverse=True) and sum(att) == pytest.approx(1.0, abs=1e-5)


def test_no_phi_or_raw_ids_in_any_output(workspace: dict[str, Path], predicted: dict[str, dict]) -> None:
    out = workspace["root"] / "out"
    headers = _headers(workspace["studies"]).values()
    raw_ids = {str(ds.PatientID) for ds in headers} | {str(ds.StudyInstanceUID) for ds in headers} | {
        str(ds.SOPInstanceUID) for ds in headers}
    files = [p for p in out.rglob("*") if p.is_file()]
    assert files and not any(".store-" in str(p) for p in out.rglob("*"))  # the temporary store is gone
    for path in files:
        text = path.read_bytes().decode("latin-1")
        for name, pattern in PHI_PATTERNS.items():
            assert not re.search(pattern, text), f"{name} leaked into {path.name}"
        if path.suffix == ".json":
            assert not [i for i in raw_ids if i in text], f"raw identifier in {path.name}"


def test_broken_files_are_warnings_not_crashes(workspace: dict[str, Path], predicted: dict[str, dict],
                                               caplog: pytest.LogCaptureFixture) -> None:
    assert len(predicted) == 2 and all(p["exam"] is not None for p in predicted.values())
    root_file = "file #" + hash_id("broken.dcm", resolve_salt())[:10]  # named by a salted hash of its path
    for pred in predicted.values():  # a file beside no study's files concerns every study
        assert any(w.startswith(f"{root_file}: not used:") for w in pred["warnings"]), pred["warnings"]
    cut = next(workspace["studies"].rglob("cut.dcm"))
    owner = scan(cut.parent).images["exam_id"].iloc[0]  # the cut copy's neighbour names its study
    for exam_id, pred in predicted.items():
        hits = [w for w in pred["warnings"] if "not used" in w and not w.startswith(root_file)]
        assert len(hits) == (1 if exam_id == owner else 0), pred["warnings"]


@pytest.fixture(scope="module")
def left_only(workspace: dict[str, Path]) -> Path:
    """One study with its right-breast views removed."""
    first = sorted(p.parent.parent for p in (workspace["root"] / "raw" / "dicom").rglob("*.dcm"))[0]  # a study
    study = workspace["root"] / "left_only"
    shutil.copytree(first, study)
    for path in study.rglob("*.dcm"):
        if pydicom.dcmread(path, stop_before_pixels=True).ImageLaterality == "R":
            path.unlink()
    return study


def test_subset_of_views_predicts_with_warnings(workspace: dict[str, Path], left_only: Path) -> None:
    (pred,) = [p.prediction for p in predict_studies(workspace["model"], left_only, out=workspace["root"] / "o2")]
    assert pred["study"]["views_used"] == ["L-CC", "L-MLO"]
    assert pred["breasts"]["R"] is None
    _check_scores(pred["breasts"]["L"], TEMPERATURE)
    _check_scores(pred["exam"], TEMPERATURE)
    assert any("missing views: R-CC, R-MLO" in w for w in pred["warnings"]), pred["warnings"]


def test_gradcam_heatmaps(workspace: dict[str, Path], left_only: Path) -> None:
    out = workspace["root"] / "o3"
    (pred,) = [p.prediction for p in predict_studies(workspace["model"], left_only, out=out, heatmap="gradcam")]
    for view in pred["views"]:
        assert view["heatmap_kind"] == "gradcam"
        heat = cv2.imread(str(out / pred["study"]["exam_id"] / view["heatmap"]), cv2.IMREAD_UNCHANGED)
        assert heat.shape == (view["rows"], view["columns"]) and 0.0 <= view["heatmap_max"] <= 1.0


def test_bad_inputs_raise_clear_errors(workspace: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="not a folder"):
        predict_studies(workspace["model"], tmp_path / "absent", out=tmp_path / "o")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "x.dcm").write_bytes(b"nope")
    with pytest.raises(ValueError, match=r"no usable DICOM file.*x\.dcm"):
        predict_studies(workspace["model"], tmp_path / "junk", out=tmp_path / "o")
    with pytest.raises(ValueError, match="heatmap must be one of"):
        predict_studies(workspace["model"], workspace["studies"], out=tmp_path / "o", heatmap="lime")
    with pytest.raises(FileNotFoundError, match="released model"):
        predict_studies(tmp_path, workspace["studies"], out=tmp_path / "o")


def test_cli_predict(workspace: dict[str, Path], left_only: Path) -> None:
    out = workspace["root"] / "o4"
    result = CliRunner().invoke(app, ["predict", str(workspace["model"]), str(left_only), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "prediction.json" in result.output and INTENDED_USE in result.output
    assert len(list(out.glob("*/prediction.json"))) == 1


def test_stored_beta_calibration_is_what_predict_applies(workspace: dict[str, Path], predicted: dict[str, dict],
                                                         tmp_path: Path) -> None:
    """`calibrate` may store beta calibration for a level: predict applies each level's own map."""
    model_dir = tmp_path / "model"
    shutil.copytree(workspace["model"], model_dir)
    beta = Calibrator("beta", {"a": 1.4, "b": 0.0, "c": 1.5})
    t_exam, t_breast = Calibrator("temperature", {"T": 1.3}), Calibrator("temperature", {"T": 0.8})
    levels = {"exam": LevelCalibration(beta, t_exam, {"beta": 0.3, "temperature": 0.4}, "val"),
              "breast": LevelCalibration(t_breast, t_breast, {}, "val")}
    set_calibration(model_dir, {k: v.to_dict() for k, v in levels.items()}, temperature=1.3, source="val")
    preds = {p.exam_id: p.prediction for p in predict_studies(model_dir, workspace["studies"], out=tmp_path / "out")}
    assert preds.keys() == predicted.keys()
    for exam_id, pred in preds.items():
        z = pred["exam"]["logit"]
        assert z == pytest.approx(predicted[exam_id]["exam"]["logit"], abs=1e-5)
        assert pred["exam"]["prob"] == pytest.approx(_sigmoid(1.4 * math.log(_sigmoid(z)) + 1.5), abs=1e-9)
        for block in [*pred["breasts"].values(), *pred["views"]]:
            _check_scores(block, 0.8)
        assert pred["model"]["calibration"] == {"exam": "beta a = 1.4, b = 0, c = 1.5",
                                                "breast": "temperature T = 0.8"}
        assert "log(sigmoid(logit))" in pred["calibration"]["exam"]["formula"]


def test_mc_dropout_gives_each_probability_its_spread(workspace: dict[str, Path], predicted: dict[str, dict],
                                                     tmp_path: Path) -> None:
    runs = [{p.exam_id: p.prediction for p in predict_studies(workspace["model"], workspace["studies"],
                                                              out=tmp_path / name, mc_passes=4)}
            for name in ("a", "b")]
    assert runs[0].keys() == predicted.keys()
    for exam_id, pred in runs[0].items():
        plain = predicted[exam_id]
        assert pred["exam"]["prob"] == plain["exam"]["prob"] and plain.get("uncertainty") is None  # plain pass kept
        assert pred["uncertainty"]["method"] == "mc_dropout" and pred["uncertainty"]["passes"] == 4
        spreads = [pred["exam"]["prob_std"], *(b["prob_std"] for b in pred["breasts"].values() if b)]
        assert all(0 < s < 0.5 for s in spreads)
        assert runs[1][exam_id]["exam"]["prob_std"] == pred["exam"]["prob_std"]  # seeded: the same spread again
