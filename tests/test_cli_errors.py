"""A user's mistake on the command line ends in one line naming the file or key and the problem: never a silent
"ok" (exit 0) and never a traceback.

Each case runs the real command (typer's CliRunner on `mammokit.cli.app`) on inputs made for real: an empty folder,
a folder of PNGs, an index whose DICOM files are gone, a released tiny model with a truncated, foreign or mismatched
model.safetensors, a config.json without its model section or not JSON at all, and broken configs. `mammokit.cli.main`
prints a `MammokitError` as one line and exits 2 (tests/test_errors.py checks that part); here the command must end
in such an error, its message one line holding the expected pieces.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from conftest import SynthStore, tiny_train_dict
from mammokit.cli import app
from mammokit.errors import MammokitError
from mammokit.models import create_model
from mammokit.release.model import save_released

runner = CliRunner()

KW = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2}
SECTIONS = {"model": {"name": "multiview_gmic", "kwargs": KW},
            "input": {"level": "exam", "input_size": [64, 40], "full_scale": 2, "normalization": "image"}}


def _model_copy(released: Path, folder: Path, edit_config=None, weights: bytes | None = None) -> Path:
    """A copy of the released model with its config.json edited and/or its model.safetensors replaced."""
    shutil.copytree(released, folder)
    if edit_config is not None:
        config = json.loads((folder / "config.json").read_text())
        edit_config(config)
        (folder / "config.json").write_text(json.dumps(config))
    if weights is not None:
        (folder / "model.safetensors").write_bytes(weights)
    return folder


def _another_architecture(config: dict) -> None:
    """The model section of a single-pathway model: the released two-pathway weights do not fit it."""
    config["model"] = {"name": "multiview_global", "kwargs": {"preset": "cpu", "image_size": [64, 40]}}


def _broken_models(root: Path) -> dict[str, Path]:
    """A tiny released model and its broken copies, by case name."""
    released = save_released(root / "released", create_model("multiview_gmic", seed=0, **KW), SECTIONS)
    weights = (released / "model.safetensors").read_bytes()
    save_file({"embeddings.weight": torch.zeros(4, 3)}, str(root / "foreign.safetensors"))
    torch.save({"state_dict": {"w": torch.zeros(3)}}, root / "pickle.pt")
    models = {
        "released": released,
        "truncated": _model_copy(released, root / "truncated", weights=weights[: len(weights) // 2]),
        "pickle": _model_copy(released, root / "pickle", weights=(root / "pickle.pt").read_bytes()),
        "foreign": _model_copy(released, root / "foreign", weights=(root / "foreign.safetensors").read_bytes()),
        "no_model": _model_copy(released, root / "no_model", edit_config=lambda c: c.pop("model")),
        "other_arch": _model_copy(released, root / "other_arch", edit_config=_another_architecture),
        "no_weights": _model_copy(released, root / "no_weights"),
        "bad_json": _model_copy(released, root / "bad_json"),
    }
    (models["no_weights"] / "model.safetensors").unlink()
    (models["bad_json"] / "config.json").write_text('{"format": "mammokit-model/1", "model": ')
    return models


@pytest.fixture(scope="module")
def inputs(synth_store: SynthStore, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every input the cases name, as `str.format` fields."""
    root = tmp_path_factory.mktemp("cli_errors")
    (root / "empty").mkdir()
    (root / "pngs").mkdir()
    for i in range(3):
        cv2.imwrite(str(root / "pngs" / f"view{i}.png"), np.full((32, 24), 60 * i, np.uint8))
    gone = pd.read_parquet(synth_store.index)
    gone["path"] = [str(root / "moved" / Path(p).name) for p in gone["path"]]
    gone.to_parquet(root / "gone.parquet", index=False)
    (root / "bad.yaml").write_text("spacing_mm: [0.1\npatch_size: 64\n")
    train = tiny_train_dict(synth_store.store, root / "runs", stages=[{"name": "a"}, {"name": "b"}])
    (root / "train.yaml").write_text(yaml.safe_dump(train))
    models = _broken_models(root)
    return {"root": root, "index": synth_store.index, "store": synth_store.store, **models}


# case: (command line, pieces the one-line message holds); {name} is an `inputs` path
CASES: dict[str, tuple[list[str], list[str]]] = {
    "index-empty-folder": (["index", "{root}/empty", "--out", "{root}/i.parquet"],
                           ["{root}/empty", "no DICOM files found"]),
    "index-folder-of-pngs": (["index", "{root}/pngs", "--out", "{root}/i.parquet"],
                             ["{root}/pngs", "no DICOM files found", ".png"]),
    "index-workers-0": (["index", "{root}/empty", "--workers", "0"], ["--workers 0", "at least 1"]),
    "synth-workers-negative": (["synth", "{root}/s", "--workers", "-1"], ["--workers -1", "at least 1"]),
    "preprocess-workers-0": (["preprocess", "{index}", "--out", "{root}/p", "--workers", "0"],
                             ["--workers 0", "at least 1"]),
    "predict-workers-0": (["predict", "{released}", "{root}/empty", "--workers", "0"], ["--workers 0", "at least 1"]),
    "evaluate-workers-negative": (["evaluate", "{released}", "--data", "{store}", "--workers", "-1"],
                                  ["--workers -1", "0 (read in this process) or more"]),
    "preprocess-spacing-0": (["preprocess", "{index}", "--out", "{root}/p", "--set", "spacing_mm=0"],
                             ["--set", "spacing_mm=0", "greater than 0"]),
    "preprocess-patch-size-0": (["preprocess", "{index}", "--out", "{root}/p", "--set", "patch_size=0"],
                                ["patch_size=0", "greater than or equal to 2"]),
    "preprocess-bad-yaml": (["preprocess", "{index}", "--out", "{root}/p", "--config", "{root}/bad.yaml"],
                            ["{root}/bad.yaml", "not valid YAML", "line 2"]),
    "preprocess-every-image-failed": (["preprocess", "{root}/gone.parquet", "--out", "{root}/gone-store"],
                                      ["all 48 images failed", "{root}/gone-store/failures.csv"]),
    "train-no-such-stage": (["train", "{root}/train.yaml", "--set", "stages.5.epochs=1"],
                            ["stages.5.epochs=1", "stages is a list of 2 items", "no item '5'"]),
    "train-batch-size-0": (["train", "{root}/train.yaml", "--set", "data.batch_size=0"],
                           ["{root}/train.yaml", "data.batch_size=0", "greater than or equal to 1"]),
    "show-unknown-image": (["show", "{store}", "no-such-image", "--out", "{root}/show.png"],
                           ["{store}", "no image 'no-such-image'"]),
    "model-truncated-weights": (["export", "{truncated}", "--out", "{root}/m.onnx"],
                                ["{truncated}/model.safetensors", "not a readable safetensors file"]),
    "model-pickle-weights": (["export", "{pickle}", "--out", "{root}/m.onnx"],
                             ["{pickle}/model.safetensors", "not a readable safetensors file"]),
    "model-foreign-weights": (["export", "{foreign}", "--out", "{root}/m.onnx"],
                              ["{foreign}/model.safetensors", "another architecture", "unexpected, e.g. embeddings"]),
    "model-no-weights": (["export", "{no_weights}", "--out", "{root}/m.onnx"],
                         ["{no_weights}/model.safetensors", "not found"]),
    "config-without-model": (["export", "{no_model}", "--out", "{root}/m.onnx"],
                             ["{no_model}/config.json", "model: missing"]),
    "config-of-another-architecture": (["export", "{other_arch}", "--out", "{root}/m.onnx"],
                                       ["{other_arch}/model.safetensors", "another architecture", "of another shape"]),
    "config-not-json": (["evaluate", "{bad_json}", "--data", "{store}"],
                        ["{bad_json}/config.json", "not a readable JSON file"]),
}


@pytest.mark.parametrize(("args", "says"), CASES.values(), ids=CASES.keys())
def test_a_user_mistake_ends_in_one_line_naming_it(inputs: dict[str, Path], args: list[str],
                                                   says: list[str]) -> None:
    result = runner.invoke(app, [a.format(**inputs) for a in args])
    assert result.exit_code != 0, result.output
    assert isinstance(result.exception, MammokitError), f"not a user error: {result.exception!r}"
    message = str(result.exception)
    assert "\n" not in message and "Traceback" not in result.output, message
    for piece in says:
        assert piece.format(**inputs) in message, message
