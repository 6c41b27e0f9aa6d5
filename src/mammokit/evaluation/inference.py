"""Run a released model over a store: logits per exam, breast and view, saliency, patches, MC-dropout and TTA passes.

Every model reads one `ModelInput` and returns one `ModelOutput` (`models.contract`), so this code never branches
on the architecture or on the input level (four-view exams or single views).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import DataLoader

from mammokit.data.augment import loader_worker_kwargs, tta_transforms
from mammokit.data.dataset import ExamDataset, collate
from mammokit.evaluation.tta_torch import slot_views, tta_batch
from mammokit.models.contract import ModelOutput
from mammokit.release.device import model_inputs


@dataclass
class InferenceResult:
    """Per item (exam, or image at the view level) arrays; `passes_*` are (N, items) probabilities."""

    level: str
    input_size: tuple[int, int]  # (H, W) of the global input: saliency maps and boxes refer to it
    items: pd.DataFrame  # exam_id, patient_id, image ids per slot, labels
    exam_logit: np.ndarray
    breast_logits: np.ndarray  # (items, 2), NaN where the breast is absent
    view_logits: np.ndarray  # (items, slots), NaN where the view is absent
    saliency: list[np.ndarray]  # per item: (slots, h, w)
    patch_boxes: list[np.ndarray]  # per item: (slots, K, 4) in input pixels (y0, x0, y1, x1)
    lesion_boxes: list[list[tuple[np.ndarray, np.ndarray]]]  # per item, slot: ((N, 4) y0,x0,y1,x1 px, (N,) malignant)
    passes: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)  # kind -> {"exam": (N, M), "breast": ...}
    seconds: dict[str, float] = field(default_factory=dict)


def dataset_for(model_config: dict[str, Any], table: pd.DataFrame, store: str | Path) -> ExamDataset:
    """An evaluation `ExamDataset` with the released model's input settings (no augmentation)."""
    inp = model_config["input"]
    return ExamDataset(table, store, level=inp["level"], input_size=tuple(inp["input_size"]),
                       full_scale=int(inp["full_scale"]), normalization=inp["normalization"],
                       view_stats=inp.get("view_stats") or None, augment=None)


def _enable_dropout(model: nn.Module, on: bool) -> None:
    for m in model.modules():
        if isinstance(m, nn.Dropout | nn.Dropout2d):
            m.train(on)


def _tta_batch(batch: dict[str, Any], index: int, n: int) -> dict[str, Any]:
    """Apply the `index`-th test-time transform to every view of a CPU batch with NumPy/OpenCV (vertical flip only
    on CC views); `tta_torch.tta_batch` is the same on any device."""
    images, full = batch["images"].clone(), None if batch.get("full") is None else batch["full"].clone()
    lists = {"CC": tta_transforms(n, view="CC"), "MLO": tta_transforms(n, view="MLO")}
    for slot, view in enumerate(slot_views(images.shape[1])):
        transform = lists[view][index % len(lists[view])]
        for b in range(images.shape[0]):
            images[b, slot, 0] = torch.from_numpy(transform.forward(images[b, slot, 0].numpy()))
            if full is not None:
                full[b, slot, 0] = torch.from_numpy(transform.forward(full[b, slot, 0].numpy()))
    return {**batch, "images": images, **({} if full is None else {"full": full})}


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().float().cpu().numpy()


def _roll_up(out: ModelOutput) -> dict[str, np.ndarray]:
    """Exam, breast and view logits of one batch as numpy (NaN where absent)."""
    breast = _numpy(out.breast_logits).copy()
    breast[~out.breast_mask.cpu().numpy()] = np.nan
    views = _numpy(out.view_logits).copy()
    views[~out.view_mask.cpu().numpy()] = np.nan
    return {"exam": _numpy(out.exam_logit), "breast": breast, "view": views}


def run_inference(model: nn.Module, dataset: ExamDataset, *, batch_size: int = 4, mc_passes: int = 0,
                  tta_passes: int = 0, num_workers: int = 0, seed: int = 0,
                  tta_on_device: bool | None = None) -> InferenceResult:
    """Plain pass (eval mode), then optional MC-dropout and TTA passes, over the whole dataset, on the model's device.
    MC-dropout masks follow `seed` on either device.

    Test-time transforms run as torch ops on the model's device (`tta_torch`) when `tta_on_device`, else with
    NumPy/OpenCV on the CPU batch; None (default) picks the device unless it is the CPU, where OpenCV is faster.
    """
    model.eval()
    device = next(model.parameters()).device
    on_device = device.type != "cpu" if tta_on_device is None else bool(tta_on_device)
    cuda_state = torch.cuda.get_rng_state_all() if device.type == "cuda" else None
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate,
                        **loader_worker_kwargs(num_workers))
    rows, logits, sal, boxes, lesions = [], [], [], [], []
    passes: dict[str, list[list[dict[str, np.ndarray]]]] = {"mc": [[] for _ in range(mc_passes)],
                                                             "tta": [[] for _ in range(tta_passes)]}
    seconds = {"plain": 0.0, "mc": 0.0, "tta": 0.0}
    gen_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        with torch.no_grad():
            for batch in loader:
                t0 = time.perf_counter()
                inputs = model_inputs(batch, device)
                out = model(inputs)
                logits.append(_roll_up(out))  # copies to the CPU: the GPU has finished
                seconds["plain"] += time.perf_counter() - t0
                sal += list(_numpy(out.saliency))
                boxes += list(_numpy(out.patch_boxes))
                lesions += [[(b, m) for b, m in zip(bx, mal, strict=True)]
                            for bx, mal in zip(batch["lesion_boxes"], batch["lesion_malignant"], strict=True)]
                for i in range(len(batch["exam_id"])):
                    rows.append({"exam_id": batch["exam_id"][i], "patient_id": batch["patient_id"][i],
                                 "image_ids": list(batch["image_ids"][i]),
                                 "breast_label_L": float(batch["breast_labels"][i, 0]),
                                 "breast_label_R": float(batch["breast_labels"][i, 1]),
                                 "exam_label": float(batch["exam_label"][i])})
                t0 = time.perf_counter()
                _enable_dropout(model, True)
                for k in range(mc_passes):
                    passes["mc"][k].append(_roll_up(model(inputs)))
                _enable_dropout(model, False)
                seconds["mc"] += time.perf_counter() - t0
                t0 = time.perf_counter()
                for k in range(tta_passes):
                    tta_in = tta_batch(inputs, k, tta_passes) if on_device else \
                        model_inputs(_tta_batch(batch, k, tta_passes), device)
                    tta_out = model(tta_in)
                    passes["tta"][k].append(_roll_up(tta_out))
                seconds["tta"] += time.perf_counter() - t0
    finally:
        _enable_dropout(model, False)
        torch.random.set_rng_state(gen_state)
        if cuda_state is not None:
            torch.cuda.set_rng_state_all(cuda_state)
    cat = {k: np.concatenate([b[k] for b in logits]) for k in ("exam", "breast", "view")}
    stacked: dict[str, dict[str, np.ndarray]] = {}
    for kind, runs in passes.items():
        if runs:
            stacked[kind] = {lvl: np.stack([_sigmoid(np.concatenate([b[lvl] for b in run])) for run in runs])
                             for lvl in ("exam", "breast", "view")}
    return InferenceResult(dataset.level, dataset.input_size, pd.DataFrame(rows), cat["exam"], cat["breast"],
                           cat["view"], sal, boxes, lesions, stacked, seconds)


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))
