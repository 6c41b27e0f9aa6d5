"""`mammokit export`: the ONNX graph reproduces PyTorch (checked here with onnxruntime directly), and the model card
travels with it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import torch
from typer.testing import CliRunner

from mammokit.cli import app
from mammokit.export import OUTPUT_NAMES, OnnxMismatchError, check_onnx, export_inputs, export_onnx
from mammokit.models import create_model
from mammokit.release.model import load_released, save_released

KW = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2}
INPUT = {"input_size": [64, 40], "full_scale": 2, "normalization": "image", "view_stats": {}}


def _release(folder: Path, name: str, level: str) -> Path:
    model = create_model(name, seed=0, **KW)
    return save_released(folder, model, {"model": {"name": name, "kwargs": KW}, "input": {"level": level, **INPUT},
                                         "preprocess": {"config": {"spacing_mm": 0.4}}, "temperature": 1.7,
                                         "training": {"run": "tiny", "exams": 2}})


@pytest.fixture(scope="module")
def four_view(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("export")
    model_dir = _release(root / "model", "multiview_gmic", "exam")
    export_onnx(model_dir, root / "onnx" / "model.onnx")
    return model_dir, root / "onnx" / "model.onnx"


def _ort_vs_torch(onnx_path: Path, model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> None:
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = dict(zip(OUTPUT_NAMES, session.run(list(OUTPUT_NAMES), {n: batch[n].numpy() for n in names}), strict=True))
    with torch.no_grad():
        ref = model({k: v for k, v in batch.items()})
    for name in OUTPUT_NAMES:
        np.testing.assert_allclose(got[name], getattr(ref, name).numpy(), rtol=1e-3, atol=1e-4, err_msg=name)


def test_onnx_matches_pytorch_on_example_input(four_view: tuple[Path, Path]) -> None:
    model_dir, onnx_path = four_view
    model, _ = load_released(model_dir)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["images", "full"]
    assert [o.name for o in session.get_outputs()] == list(OUTPUT_NAMES)
    _ort_vs_torch(onnx_path, model, model.example_input())  # all four views present (view_mask all True)
    _ort_vs_torch(onnx_path, model, model.example_input(3, seed=5))  # the batch axis is free


def test_model_card_beside_the_onnx(four_view: tuple[Path, Path]) -> None:
    model_dir, onnx_path = four_view
    card = json.loads((onnx_path.parent / "config.json").read_text())
    original = json.loads((model_dir / "config.json").read_text())
    assert {k: card[k] for k in original} == original  # the released card, untouched
    assert card["onnx"]["file"] == "model.onnx" and card["onnx"]["opset"] == 17
    assert card["onnx"]["inputs"] == {"images": ["batch", 4, 1, 64, 40], "full": ["batch", 4, 1, 128, 80]}
    assert all(0 <= e < 1e-4 for e in card["onnx"]["check"]["max_abs_error"].values())
    assert card["onnx"]["calibration"]["exam"].startswith("prob = sigmoid(logit / T) with temperature T =")


def test_check_detects_a_model_that_differs(four_view: tuple[Path, Path]) -> None:
    model_dir, onnx_path = four_view
    model, config = load_released(model_dir)
    batch = export_inputs(model, config)
    assert max(check_onnx(onnx_path, model, batch).values()) < 1e-4
    with torch.no_grad():
        model.breast_head.bias += 0.01  # every breast and exam logit moves by 0.01
    with pytest.raises(OnnxMismatchError, match="breast_logits"):
        check_onnx(onnx_path, model, batch)


def test_single_view_model_exports(tmp_path: Path) -> None:
    model_dir = _release(tmp_path / "model", "gmic", "view")
    result = export_onnx(model_dir, tmp_path / "gmic.onnx", opset=18)
    assert result.inputs == {"images": [1, 1, 1, 64, 40], "full": [1, 1, 1, 128, 80]}
    model, _ = load_released(model_dir)
    _ort_vs_torch(tmp_path / "gmic.onnx", model, model.example_input(2, seed=1))


def test_bad_arguments(four_view: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, _ = four_view
    with pytest.raises(ValueError, match=r"must end in \.onnx"):
        export_onnx(model_dir, tmp_path / "model.bin")
    with pytest.raises(ValueError, match="--opset 7"):
        export_onnx(model_dir, tmp_path / "model.onnx", opset=7)
    with pytest.raises(FileNotFoundError, match="released model"):
        export_onnx(tmp_path, tmp_path / "model.onnx")


def test_cli_export(four_view: tuple[Path, Path], tmp_path: Path) -> None:
    model_dir, _ = four_view
    result = CliRunner().invoke(app, ["export", str(model_dir), "--out", str(tmp_path / "m.onnx"), "--opset", "17"])
    assert result.exit_code == 0, result.output
    assert "max |onnxruntime - pytorch|" in result.output
    assert (tmp_path / "m.onnx").is_file() and (tmp_path / "config.json").is_file()
