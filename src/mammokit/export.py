"""`mammokit export`: a released model as ONNX, checked against PyTorch with onnxruntime.

The export traces the model with the TorchScript-based `torch.onnx.export(..., dynamo=False)`. The dynamo exporter
(`torch.export`, needs `onnxscript`) was tried and refuses the model: `MultiViewNet` picks the present views with
`nonzero`, a data-dependent size that batch norm then guards on. Tracing records the run with every view present
instead, and fixes everything that depends on shapes, so the graph is exported for one input layout:

- all views present: `MultiViewNet` encodes only the present views (`nonzero` + `index_select` on `view_mask`); the
  wrapper passes no mask, so every view is encoded (missing views cannot be expressed in the ONNX graph);
- a fixed view size: the global input (H, W) and the full-resolution input (H * full_scale, W * full_scale) of the
  released config (patch retrieval windows and top-t pooling sizes are traced as constants);
- a free batch size (dynamic axis 0 on every input and output).

Inputs are named as in the model's `ModelInput` (`images` (B, V, 1, H, W) and `full`, with V = 4 for exam models
and 1 for single views; `patch_boxes` in grid mode) and the outputs `exam_logit`, `breast_logits`, `saliency`.
The released config.json (model card, preprocessing config, normalisation statistics, calibration) is written beside
the .onnx with an `onnx` section describing the graph and the measured agreement with PyTorch.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from mammokit.errors import InvalidInputError
from mammokit.io import atomic_write, atomic_write_text
from mammokit.release.calibration import calibration_from_config
from mammokit.release.model import load_released, resolve_model_dir

__all__ = ["OUTPUT_NAMES", "ExportResult", "OnnxMismatchError", "check_onnx", "export_inputs", "export_onnx"]

OUTPUT_NAMES = ("exam_logit", "breast_logits", "saliency")
INPUT_KEYS = ("images", "full", "patch_boxes", "patch_mask")  # view_mask / laterality: every view present, in order
EXPORTER = "torch.onnx.export (TorchScript tracer, dynamo=False)"


class OnnxMismatchError(RuntimeError):
    """onnxruntime's outputs differ from PyTorch's beyond the tolerance."""


class _ExportWrapper(nn.Module):
    """Positional tensors in (named `keys`), the three exported outputs out: what the ONNX graph computes."""

    def __init__(self, model: nn.Module, keys: tuple[str, ...]) -> None:
        super().__init__()
        self.model = model
        self.keys = keys

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(dict(zip(self.keys, tensors, strict=True)))
        return tuple(getattr(out, name) for name in OUTPUT_NAMES)


@dataclass
class ExportResult:
    """Where the ONNX file and its model card went, the graph's inputs, and the max |ONNX - PyTorch| per output."""

    onnx_path: Path
    card_path: Path
    inputs: dict[str, list[int]]
    max_abs_error: dict[str, float]


def export_inputs(model: nn.Module, config: dict[str, Any], batch_size: int = 1, seed: int = 0
                  ) -> dict[str, torch.Tensor]:
    """An all-views-present input batch of the released model's input size (its `example_input` when they agree).

    Only the keys the graph takes are kept (`view_mask` is dropped: every view is present).
    """
    example = model.example_input(batch_size, seed)
    batch = {k: example[k] for k in INPUT_KEYS if k in example}
    inp = config.get("input") or {}
    if "input_size" in inp:
        h, w = (int(v) for v in inp["input_size"])
        k = int(inp.get("full_scale", 0))
        lead = tuple(batch["images"].shape[:-2])
        if tuple(batch["images"].shape[-2:]) != (h, w) or ("full" in batch) != bool(k) or (
                k and tuple(batch["full"].shape[-2:]) != (h * k, w * k)):
            g = torch.Generator().manual_seed(seed)
            batch["images"] = torch.randn(*lead, h, w, generator=g)
            batch.pop("full", None)
            if k:
                batch["full"] = torch.randn(*lead, h * k, w * k, generator=g)
    return batch


def check_onnx(onnx_path: str | Path, model: nn.Module, batch: dict[str, torch.Tensor], *, rtol: float = 1e-3,
               atol: float = 1e-4) -> dict[str, float]:
    """Run the ONNX graph with onnxruntime (CPU) and PyTorch on `batch`; max |difference| per output.

    Raises:
        OnnxMismatchError: any output differs by more than `atol + rtol * |pytorch|` somewhere.
    """
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    missing = [n for n in names if n not in batch]
    if missing:
        raise ValueError(f"{onnx_path}: the graph needs inputs {missing}, the batch has {sorted(batch)}")
    got = session.run(list(OUTPUT_NAMES), {n: batch[n].numpy() for n in names})
    model.eval()
    with torch.no_grad():
        ref = _ExportWrapper(model, tuple(names)).eval()(*(batch[n] for n in names))
    errors, bad = {}, []
    for name, r, g in zip(OUTPUT_NAMES, ref, got, strict=True):
        r = r.detach().float().numpy()
        if r.shape != g.shape:
            raise OnnxMismatchError(f"{onnx_path}: output {name} has shape {g.shape}, PyTorch gives {r.shape}")
        errors[name] = float(np.max(np.abs(r - g))) if r.size else 0.0
        if not np.allclose(g, r, rtol=rtol, atol=atol):
            bad.append(f"{name} (max |error| {errors[name]:.3g})")
    if bad:
        raise OnnxMismatchError(f"{onnx_path}: onnxruntime differs from PyTorch beyond rtol={rtol}, atol={atol}: "
                                f"{', '.join(bad)}")
    return errors


def export_onnx(model_path: str | Path, out: str | Path, *, opset: int = 17, rtol: float = 1e-3, atol: float = 1e-4,
                seed: int = 0) -> ExportResult:
    """Export a released model to ONNX, check it with onnxruntime, and write its config.json beside it.

    Args:
        model_path: a released model folder or a run folder holding one in `model/`.
        out: the `.onnx` file to write.
        opset: ONNX opset version.
        rtol, atol: tolerance of the onnxruntime-vs-PyTorch check (on a batch of 1 and a batch of 2).
        seed: seed of the random check inputs.

    Raises:
        ValueError: `out` does not end in .onnx, or `opset` is out of range.
        OnnxMismatchError: the exported graph does not reproduce PyTorch within the tolerance.
    """
    out = Path(out)
    if out.suffix.lower() != ".onnx":
        raise InvalidInputError(f"--out {out}: the file name must end in .onnx")
    if not 11 <= opset <= 25:
        raise InvalidInputError(f"--opset {opset}: choose an ONNX opset between 11 and 25 (17 is well supported)")
    model_dir = resolve_model_dir(model_path)
    model, config = load_released(model_dir)
    batch = export_inputs(model, config, 1, seed)
    names = tuple(batch)
    wrapper = _ExportWrapper(model, names).eval()  # a fresh module trains by default: export would restore that
    dynamic = {n: {0: "batch"} for n in (*names, *OUTPUT_NAMES)}
    out.parent.mkdir(parents=True, exist_ok=True)

    def write(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # shape checks become constants, by design
            warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx")  # legacy path
            torch.onnx.export(wrapper, tuple(batch[n] for n in names), str(tmp), dynamo=False, opset_version=opset,
                              input_names=list(names), output_names=list(OUTPUT_NAMES), dynamic_axes=dynamic)

    atomic_write(out, write)
    model.eval()
    errors = check_onnx(out, model, batch, rtol=rtol, atol=atol)
    errors_b2 = check_onnx(out, model, export_inputs(model, config, 2, seed + 1), rtol=rtol, atol=atol)
    max_err = {k: max(errors[k], errors_b2[k]) for k in errors}
    shapes = {n: ["batch", *batch[n].shape[1:]] for n in names}
    card = {k: v for k, v in config.items() if k != "onnx"}
    card["onnx"] = {
        "file": out.name, "opset": opset, "exporter": EXPORTER, "inputs": shapes, "outputs": list(OUTPUT_NAMES),
        "views": _views_text(int(batch["images"].shape[1])),
        "check": {"runtime": "onnxruntime CPU", "rtol": rtol, "atol": atol, "max_abs_error": max_err},
        "calibration": {level: f"{c.chosen.formula()} with {c.chosen.describe()} on the {level} logit"
                        for level, c in calibration_from_config(config).items()},
    }
    card_path = out.parent / "config.json"
    atomic_write_text(card_path, json.dumps(card, indent=2, default=str))
    return ExportResult(out, card_path, {n: list(batch[n].shape) for n in names}, max_err)


def _views_text(views: int) -> str:
    if views == 4:
        return "all four views present, in VIEW_ORDER (L-CC, L-MLO, R-CC, R-MLO)"
    return "one view (its logit fills the left breast column: no laterality input)"
