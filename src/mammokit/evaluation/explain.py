"""Explanations: Grad-CAM, the model's own saliency and retrieved patches, mapped back onto the DICOM pixel grid.

Every map here starts on the model's input canvas (the stored image resized by `fit_into` into the top-left of an
(H, W) canvas) and ends on the original DICOM pixel grid through the image's `TransformRecord`, so a heatmap or a
patch box can be laid over the pixels a radiologist reads:

    input canvas --(undo fit_into: covered top-left region -> stored grid)--> stored image
                 --(stored_to_original_heatmap / stored_to_original_boxes)--> original DICOM grid

Grad-CAM uses the `grad-cam` package on the output of the global backbone (the feature map the saliency head reads),
for the exam, breast or view malignancy logit. The model is evaluated in eval mode and left exactly as it was found:
training flags, ``requires_grad`` flags, parameter gradients and hooks are all restored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from mammokit.io import atomic_write
from mammokit.models.contract import INPUT_KEYS, ModelOutput, check_input
from mammokit.preprocess.geometry import TransformRecord, stored_to_original_boxes, stored_to_original_heatmap
from mammokit.preprocess.preview import overlay_gray, overlay_size

__all__ = [
    "TARGETS",
    "PatchOverlay",
    "gradcam",
    "input_boxes_to_dicom",
    "input_scale",
    "model_saliency",
    "overlay_png",
    "patch_attention_map",
    "patch_overlays",
    "to_dicom_grid",
]

TARGETS = ("exam", "breast", "view")


# --------------------------------------------------------------------------------------------------- Grad-CAM
class _LogitOf(nn.Module):
    """Adapter for `pytorch_grad_cam`: per-view images (N, 1, H, W) in, the chosen logit (B, 1) out.

    The other inputs of the batch (full-resolution views, masks, patch boxes, laterality) stay fixed; N = B * V
    (views flattened in their batch order).
    """

    def __init__(self, model: nn.Module, batch: dict[str, torch.Tensor], pick: Any) -> None:
        super().__init__()
        self.model = model
        self.batch = batch
        self.pick = pick

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        out = self.model({**self.batch, "images": images.reshape(self.batch["images"].shape)})
        return self.pick(out)[:, None]


def _resolve_layers(model: nn.Module, layer: nn.Module | str | None) -> list[nn.Module]:
    """The modules whose output Grad-CAM weighs: by default the model's `gradcam_layers()` (the global backbones)."""
    if isinstance(layer, nn.Module):
        if not any(m is layer for m in model.modules()):
            raise ValueError("gradcam: `layer` is not a submodule of `model`")
        return [layer]
    if isinstance(layer, str):
        try:
            return [model.get_submodule(layer)]
        except AttributeError as err:
            raise ValueError(f"gradcam: layer={layer!r} is not a submodule name of {type(model).__name__}") from err
    if layer is not None:
        raise ValueError(f"gradcam: layer must be a module, a dotted name or None, got {type(layer).__name__}")
    return list(model.gradcam_layers())


def _cut_graph(module: nn.Module, args: Any, output: Any) -> Any:
    """Forward hook: continue from a fresh leaf (cloned, so in-place ops downstream stay legal)."""
    if isinstance(output, torch.Tensor) and output.is_floating_point():
        return output.detach().requires_grad_(True).clone()
    return None


def _picker(target: str, view: int | None, n_views: int) -> Any:
    """A function from the model's `ModelOutput` to the (B,) logit whose gradient Grad-CAM follows.

    Views are encoded independently (eval mode: batch norm uses running statistics), and a breast's logit depends
    only on that breast's views, so summing the logits of all views (or both breasts) gives every view the Grad-CAM
    of its own view (or breast) logit in a single backward pass.
    """
    if view is not None and not 0 <= view < n_views:
        raise ValueError(f"gradcam: view={view} is out of range for a model with {n_views} view(s)")
    if target == "exam":
        if view is not None:
            raise ValueError("gradcam: view= selects a view or breast logit; it has no meaning for target='exam'")
        return lambda out: out.exam_logit
    if target == "view":
        if view is not None:
            return lambda out: out.view_logits[:, view]
        return lambda out: (out.view_logits * out.view_mask).sum(dim=1)
    if view is not None and n_views > 1:  # the breast of that view (VIEW_ORDER: view v is breast v // 2)
        return lambda out: out.breast_logits[:, view // 2]
    return lambda out: (out.breast_logits * out.breast_mask).sum(dim=1)


def _model_batch(model: nn.Module, batch: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """The model's input tensors of ``batch`` on the model's device, checked against the contract."""
    tensors_in = {k: v for k, v in batch.items() if k in INPUT_KEYS and isinstance(v, torch.Tensor)}
    try:
        check_input(tensors_in, getattr(model, "views", None))
    except ValueError as err:
        raise ValueError(f"gradcam: {err}") from err
    device = next(model.parameters()).device
    with torch.inference_mode(False):  # tensors made under inference_mode cannot enter autograd: copy those
        return {k: (v.clone() if v.is_inference() else v).detach().to(device) for k, v in tensors_in.items()}


def gradcam(
    model: nn.Module,
    batch: Mapping[str, Any],
    *,
    target: str = "exam",
    view: int | None = None,
    layer: nn.Module | str | None = None,
) -> np.ndarray:
    """Grad-CAM maps of a malignancy logit over each view's input image.

    Args:
        model: any model of the contract (a registered model or an ensemble).
        batch: the model's input dict (extra keys such as ids or lesion boxes from `collate` are ignored).
        target: ``"exam"`` (the exam logit), ``"breast"`` (each view's own breast logit, or the breast of ``view``)
            or ``"view"`` (each view's own logit, or the logit of ``view`` only).
        view: restrict a breast/view target to this view index (VIEW_ORDER for 4-view models; 0 for one view).
        layer: the module (or dotted submodule name) whose activations are weighed; default the model's
            `gradcam_layers()`: the global backbones, whose output is the last feature map (the one the saliency
            head reads), whatever the timm family; an ensemble's maps are averaged over its members' backbones.

    Returns:
        float32 (B, V, H, W) maps in [0, 1], each view normalised to its own maximum, at the input-image resolution;
        missing views (``view_mask`` False) and views without positive evidence are all zeros.
    """
    from pytorch_grad_cam import GradCAM

    if target not in TARGETS:
        raise ValueError(f"gradcam: target must be one of {TARGETS}, got {target!r}")
    tensors = _model_batch(model, batch)
    images = tensors["images"]
    b, n_views = images.shape[:2]
    h, w = images.shape[-2:]
    pick = _picker(target, view, n_views)
    target_layers = _resolve_layers(model, layer)
    present = torch.ones(b * n_views, dtype=torch.bool)
    if "view_mask" in tensors:
        present = tensors["view_mask"].bool().reshape(-1).cpu()
    if not present.any():
        return np.zeros((b, n_views, h, w), np.float32)

    modes = {m: m.training for m in model.modules()}
    flags = {p: p.requires_grad for p in model.parameters()}
    grads = {p: p.grad for p in model.parameters()}
    wrapper = _LogitOf(model, tensors, pick)
    cam = None
    # The layer's output becomes a leaf that requires grad (this hook runs before grad-cam's own): the backward pass
    # stops there instead of running through the backbone, and no weight gradient is computed.
    cuts = [target_layer.register_forward_hook(_cut_graph) for target_layer in target_layers]
    try:
        for p in flags:
            p.requires_grad_(False)
        inputs = images.reshape(b * n_views, 1, h, w)
        with torch.inference_mode(False), torch.enable_grad():
            cam = GradCAM(model=wrapper, target_layers=target_layers)
            maps = cam(input_tensor=inputs, targets=[lambda out: out[0]] * b)
    finally:
        for cut in cuts:
            cut.remove()
        if cam is not None:
            cam.activations_and_grads.release()
        for p, flag in flags.items():
            p.requires_grad_(flag)
            p.grad = grads[p]
        for m, mode in modes.items():
            m.training = mode
    n_rows = int(present.sum())
    if maps.shape[0] != n_rows:
        raise RuntimeError(f"gradcam: the layer gave {maps.shape[0]} maps for {n_rows} present views; pick a layer "
                           "that runs once per view")
    out = np.zeros((b * n_views, h, w), np.float32)
    out[present.numpy()] = maps
    return out.reshape(b, n_views, h, w)


# --------------------------------------------------------------------------------------------------- model's own maps
def _as_numpy(value: Any, name: str) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        return value.detach().float().cpu().numpy()
    if value is None:
        raise ValueError(f"outputs has no {name!r}")
    return np.asarray(value)


def model_saliency(outputs: ModelOutput, input_size: tuple[int, int]) -> np.ndarray:
    """The model's own saliency (sigmoid of its logit map), bilinearly upsampled onto the input canvas.

    Values stay probabilities in [0, 1] (not renormalised), so maps of different views and exams compare.

    Args:
        outputs: a `ModelOutput` (its ``saliency`` is (B, V, h, w)).
        input_size: (H, W) of the model's global input.

    Returns:
        float32 (B, V, H, W).
    """
    sal = _as_numpy(outputs.saliency, "saliency").astype(np.float32)
    if sal.ndim != 4:
        raise ValueError(f"outputs.saliency must be (B, V, h, w), got shape {sal.shape}")
    hh, ww = (int(v) for v in input_size)
    if hh < 1 or ww < 1:
        raise ValueError(f"input_size must be positive (H, W), got {input_size!r}")
    up = F.interpolate(torch.from_numpy(sal), size=(hh, ww), mode="bilinear", align_corners=False)
    return up.clamp_(0.0, 1.0).numpy()


@dataclass(frozen=True)
class PatchOverlay:
    """The patches one view's local pathway used, most attended first.

    Attributes:
        boxes: (K, 4) float (y0, x0, y1, x1) in input-image pixels.
        attention: (K,) MIL attention weights (sum to 1 over the view's real patches).
    """

    boxes: np.ndarray
    attention: np.ndarray


def patch_overlays(outputs: ModelOutput, view_mask: Any = None) -> list[list[PatchOverlay]]:
    """Per exam and view, the chosen patch boxes with their attention, sorted by attention (highest first).

    Args:
        outputs: a `ModelOutput` (``patch_boxes`` (B, V, K, 4) and ``patch_attention`` (B, V, K)).
        view_mask: (B, V) bool; default ``outputs.view_mask``. Missing views and
            global-only models (K = 0) give empty overlays.
    """
    boxes = _as_numpy(outputs.patch_boxes, "patch_boxes").astype(np.float32)
    att = _as_numpy(outputs.patch_attention, "patch_attention").astype(np.float32)
    if boxes.ndim != 4 or boxes.shape[-1] != 4 or att.shape != boxes.shape[:3]:
        raise ValueError(f"outputs: patch_boxes must be (B, V, K, 4) and patch_attention (B, V, K), got "
                         f"{boxes.shape} and {att.shape}")
    mask = _as_numpy(outputs.view_mask if view_mask is None else view_mask, "view_mask").astype(bool)
    if mask.shape != boxes.shape[:2]:
        raise ValueError(f"view_mask must be (B, V) = {boxes.shape[:2]}, got {mask.shape}")
    result = []
    for i in range(boxes.shape[0]):
        row = []
        for v in range(boxes.shape[1]):
            if not mask[i, v]:
                row.append(PatchOverlay(np.zeros((0, 4), np.float32), np.zeros(0, np.float32)))
                continue
            order = np.argsort(-att[i, v], kind="stable")
            row.append(PatchOverlay(boxes[i, v][order], att[i, v][order]))
        result.append(row)
    return result


def patch_attention_map(outputs: ModelOutput, input_size: tuple[int, int], view_mask: Any = None) -> np.ndarray:
    """Paint each patch's attention into its box on the input canvas (overlaps keep the maximum): (B, V, H, W).

    Box edges are continuous pixel-edge coordinates; a pixel is inside when its centre is.
    """
    hh, ww = (int(v) for v in input_size)
    overlays = patch_overlays(outputs, view_mask)
    out = np.zeros((len(overlays), len(overlays[0]) if overlays else 0, hh, ww), np.float32)
    ys, xs = np.arange(hh) + 0.5, np.arange(ww) + 0.5
    for i, row in enumerate(overlays):
        for v, ov in enumerate(row):
            for (y0, x0, y1, x1), a in zip(ov.boxes, ov.attention, strict=True):
                inside = ((ys >= y0) & (ys < y1))[:, None] & ((xs >= x0) & (xs < x1))[None, :]
                out[i, v] = np.where(inside, np.maximum(out[i, v], a), out[i, v])
    return out


# --------------------------------------------------------------------------------------------------- DICOM grid
def input_scale(placement: Any, stored_shape: tuple[int, int], downscale: float = 1.0) -> tuple[float, float]:
    """Exact per-axis (row, col) input pixels per stored pixel of a `fit_into` placement.

    `fit_into` rounds the resized size, so the realised scale per axis is ``placement.height / stored rows`` (and
    likewise for columns), not exactly ``placement.scale``. ``downscale`` is how much smaller the canvas the heatmap
    lives on is than the placement's canvas (the dataset's ``full_scale`` for the global input).
    """
    rows, cols = (int(v) for v in stored_shape)
    if rows < 1 or cols < 1 or not downscale > 0:
        raise ValueError(f"input_scale: stored_shape {stored_shape!r} and downscale {downscale!r} must be positive")
    return placement.height / rows / downscale, placement.width / cols / downscale


def _scale_pair(placement_scale: float | Sequence[float], name: str = "placement_scale") -> tuple[float, float]:
    if isinstance(placement_scale, (int, float, np.floating, np.integer)):
        sy = sx = float(placement_scale)
    else:
        try:
            sy, sx = (float(v) for v in placement_scale)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{name} must be a number or a (row, col) pair, got {placement_scale!r}") from err
    if not (math.isfinite(sy) and math.isfinite(sx) and sy > 0 and sx > 0):
        raise ValueError(f"{name} must be positive and finite, got {placement_scale!r}")
    return sy, sx


def to_dicom_grid(
    heatmap_input: np.ndarray,
    placement_scale: float | Sequence[float],
    record: TransformRecord,
    *,
    fill: float = 0.0,
) -> np.ndarray:
    """Carry a heatmap over the model's input canvas onto the original DICOM pixel grid.

    The stored image covers the canvas's top-left ``stored_shape * placement_scale`` (continuous extent, so a
    fractional last row or column is handled exactly); that region is resampled onto a grid over the stored image,
    which `stored_to_original_heatmap` then carries through the flip, resampling and crop of the record.

    Args:
        heatmap_input: 2-D map over the input canvas (any canvas the stored image was fitted into: global or full).
        placement_scale: canvas pixels per stored pixel (`Placement.scale`, divided by the dataset's ``full_scale``
            for the global input), or the exact (row, col) pair from `input_scale`.
        record: the image's transform record.
        fill: value of DICOM pixels outside the crop box.

    Returns:
        float32 array of ``record.original_shape``.
    """
    hm = np.asarray(heatmap_input, dtype=np.float32)
    if hm.ndim != 2 or hm.size == 0:
        raise ValueError(f"heatmap_input must be a non-empty 2-D array, got shape {hm.shape}")
    sy, sx = _scale_pair(placement_scale)
    rows, cols = record.stored_shape
    ey, ex = rows * sy, cols * sx  # covered extent on the canvas, in pixels
    if ey > hm.shape[0] + 0.5 or ex > hm.shape[1] + 0.5:
        raise ValueError(f"placement_scale {placement_scale!r}: the stored image ({rows}x{cols}) would cover "
                         f"{ey:.1f}x{ex:.1f} canvas pixels, more than the heatmap's {hm.shape[0]}x{hm.shape[1]}")
    # A grid over exactly the stored extent at about canvas resolution; its pixel centres sample the canvas strictly
    # inside the covered region, so the canvas padding never bleeds in.
    gh, gw = max(1, round(ey)), max(1, round(ex))
    ay, ax = ey / gh, ex / gw  # canvas pixels per grid pixel
    # pixel-index form of the edge map canvas = grid * a: idx_canvas = a * (idx_grid + 0.5) - 0.5
    matrix = np.array([[ax, 0.0, 0.5 * ax - 0.5], [0.0, ay, 0.5 * ay - 0.5]], dtype=np.float64)
    grid = cv2.warpAffine(hm, matrix, (gw, gh), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)
    return stored_to_original_heatmap(grid, record, fill=fill)


def input_boxes_to_dicom(
    boxes: np.ndarray, placement_scale: float | Sequence[float], record: TransformRecord
) -> np.ndarray:
    """Map (N, 4) boxes (y0, x0, y1, x1) in input-canvas pixels to (N, 4) (x0, y0, x1, y1) original DICOM pixels.

    Exact (affine, pixel-edge coordinates): canvas -> stored by dividing by the scale, then through the record's
    flip, resampling and crop with `stored_to_original_boxes`. Boxes are not clipped.
    """
    arr = np.asarray(boxes, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 4:
        arr = arr[None]
    if arr.ndim != 2 or arr.shape[1] != 4:
        raise ValueError(f"boxes must be (N, 4) as (y0, x0, y1, x1) input pixels, got shape {arr.shape}")
    sy, sx = _scale_pair(placement_scale)
    stored_xyxy = np.stack([arr[:, 1] / sx, arr[:, 0] / sy, arr[:, 3] / sx, arr[:, 2] / sy], axis=1)
    return stored_to_original_boxes(stored_xyxy, record)


# --------------------------------------------------------------------------------------------------- PNG overlay
_BOX_COLOURS = {"boxes": (255, 255, 0), "lesion_boxes": (0, 255, 0)}  # BGR: cyan model patches, green lesions


def _draw_boxes(canvas: np.ndarray, boxes: Any, factor: float, colour: tuple[int, int, int], name: str) -> None:
    arr = np.asarray(boxes, dtype=np.float64).reshape(-1, 4) if boxes is not None else np.zeros((0, 4))
    if boxes is not None and np.asarray(boxes).size % 4:
        raise ValueError(f"overlay_png: {name} must be (N, 4) as (x0, y0, x1, y1) image pixels")
    thickness = max(1, round(max(canvas.shape[:2]) / 400))
    for x0, y0, x1, y1 in arr * factor:
        cv2.rectangle(canvas, (round(x0), round(y0)), (round(x1) - 1, round(y1) - 1), colour, thickness)


def overlay_png(
    image: np.ndarray,
    heatmap: np.ndarray,
    path: str | Path,
    *,
    boxes: Any = None,
    lesion_boxes: Any = None,
    title: str | None = None,
    cmap: str = "jet",
    alpha: float = 0.6,
    max_side: int | None = 2048,
    gray: np.ndarray | None = None,
) -> Path:
    """Write a PNG of ``heatmap`` blended over ``image`` (gray, windowed by its own 0.5-99.5 percentiles).

    The heat colour's opacity grows with the heat (``alpha * heatmap``), so cold regions show the plain image.

    Args:
        image: 2-D image (e.g. the DICOM pixels).
        heatmap: 2-D map of the same shape, values in [0, 1] (clipped).
        path: output ``.png`` file, written atomically.
        boxes: model patch boxes (N, 4) as (x0, y0, x1, y1) in image pixels, drawn in cyan.
        lesion_boxes: annotated lesions, same format, drawn in green.
        title: text drawn in the top-left corner.
        cmap: a matplotlib colormap name (``jet``, ``inferno``, ...).
        alpha: maximum heat opacity, in [0, 1].
        max_side: downscale so the longer side is at most this (None = keep the image's size).
        gray: ``overlay_gray(image, max_side)`` made earlier (e.g. the store's preview): ``image`` is then not read
            and may be None; the result is the same.
    """
    import matplotlib

    heat = np.asarray(heatmap, dtype=np.float32)
    shape = heat.shape if gray is not None else np.shape(image)
    if len(shape) != 2 or 0 in shape:
        raise ValueError(f"overlay_png: image must be a non-empty 2-D array, got shape {shape}")
    if heat.shape != shape:
        raise ValueError(f"overlay_png: heatmap shape {heat.shape} differs from image shape {shape}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"overlay_png: alpha must be in [0, 1], got {alpha}")
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"overlay_png: path {str(path)!r} must end in .png")
    try:
        colormap = matplotlib.colormaps[cmap]
    except KeyError as err:
        raise ValueError(f"overlay_png: unknown matplotlib colormap {cmap!r}") from err
    size = overlay_size(shape, max_side)
    if gray is None:
        gray = overlay_gray(image, max_side)
    elif gray.shape != (shape if size is None else size[::-1]):
        raise ValueError(f"overlay_png: gray shape {gray.shape} is not the overlay size of a {shape} image")
    heat = np.clip(np.nan_to_num(heat, nan=0.0), 0.0, 1.0)
    factor = 1.0
    if size is not None:
        factor = max_side / max(shape)
        heat = cv2.resize(heat, size, interpolation=cv2.INTER_AREA)
    colour = colormap(heat)[..., :3][..., ::-1].astype(np.float32) * 255  # RGBA -> BGR
    weight = (alpha * heat)[..., None]
    blend = (1 - weight) * gray[..., None].astype(np.float32) + weight * colour
    canvas = np.ascontiguousarray(np.clip(blend + 0.5, 0, 255).astype(np.uint8))
    _draw_boxes(canvas, boxes, factor, _BOX_COLOURS["boxes"], "boxes")
    _draw_boxes(canvas, lesion_boxes, factor, _BOX_COLOURS["lesion_boxes"], "lesion_boxes")
    if title:
        font_scale = max(0.4, max(canvas.shape[:2]) / 1200)
        org = (8, int(24 * font_scale) + 8)
        cv2.putText(canvas, title, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(canvas, title, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (255, 255, 255), 1, cv2.LINE_AA)

    def write(tmp: Path) -> None:
        if not cv2.imwrite(str(tmp), canvas):
            raise OSError(f"overlay_png: OpenCV could not write {str(path)!r}")

    return atomic_write(path, write)
