"""`predict_studies` with several workers: the views decode in worker processes and are written by threads, yet every
output file is byte for byte the one a single worker writes. The overlays are drawn on the pictures the preprocessing
workers kept (no second decode) and are byte for byte those drawn from a fresh decode of the DICOM."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

import mammokit.predict as predict_module
from mammokit.predict import STAGES, predict_studies
from mammokit.synth import generate
from test_predict import release_tiny  # the same tiny released model as the single-worker tests


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One four-view exam stored as JPEG 2000 lossless (the siemens-like profile) and a tiny released model."""
    root = tmp_path_factory.mktemp("predict_parallel")
    generate(root / "raw", exams=1, seed=5, size_scale=0.2, vendors="siemens", masks=False)
    return {"root": root, "studies": root / "raw" / "dicom", "model": release_tiny(root / "model")}


def _files(folder: Path) -> dict[str, str]:
    """sha256 of every output file but summary.json (it holds the run's seconds)."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != "summary.json"}


@pytest.fixture(scope="module")
def serial(workspace: dict[str, Path]) -> dict[str, str]:
    timings: dict[str, float] = {}
    out = workspace["root"] / "out1"
    predict_studies(workspace["model"], workspace["studies"], out=out, heatmap="gradcam", workers=1, timings=timings)
    assert set(timings) == set(STAGES) and all(v >= 0 for v in timings.values())
    return _files(out)


def test_outputs_do_not_depend_on_workers(workspace: dict[str, Path], serial: dict[str, str]) -> None:
    timings: dict[str, float] = {}
    out = workspace["root"] / "out2"
    preds = predict_studies(workspace["model"], workspace["studies"], out=out, heatmap="gradcam", workers=2,
                            timings=timings)
    assert len(preds) == 1 and len(preds[0].prediction["views"]) == 4
    assert sum(name.endswith(".png") for name in serial) == 8  # a heatmap and an overlay per view
    assert _files(out) == serial
    assert set(timings) == set(STAGES)


def test_overlays_from_kept_pictures_equal_a_fresh_decode(workspace: dict[str, Path], serial: dict[str, str],
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """Without the kept pictures (as if the store had none) every view is decoded again for its overlay."""
    asked: list[str] = []

    def none_kept(store: Path, stem: str) -> None:
        asked.append(stem)

    monkeypatch.setattr(predict_module, "read_preview", none_kept)
    out = workspace["root"] / "out_decoded"
    predict_studies(workspace["model"], workspace["studies"], out=out, heatmap="gradcam", workers=2)
    assert len(asked) == 4
    assert _files(out) == serial
