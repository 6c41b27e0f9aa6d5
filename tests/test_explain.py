"""Explanations: Grad-CAM (against an independent autograd computation and a trained lesion finder), the model's own
saliency and patches, and the exact mapping of heatmaps and boxes from the input canvas to the DICOM pixel grid."""

from __future__ import annotations

from types import SimpleNamespace

import cv2
import numpy as np
import pytest
import timm
import torch
from scipy.ndimage import gaussian_filter
from timm.models import build_model_with_cfg, register_model
from timm.models.byobnet import ByoBlockCfg, ByobNet, ByoModelCfg

from mammokit.data.dataset import fit_into
from mammokit.evaluation.explain import (
    gradcam,
    input_boxes_to_dicom,
    input_scale,
    model_saliency,
    overlay_png,
    patch_attention_map,
    patch_overlays,
    to_dicom_grid,
)
from mammokit.models import create_model
from mammokit.preprocess.geometry import TransformRecord, original_to_stored_boxes
from mammokit.training.losses import saliency_l1

# ----------------------------------------------------------------------------------------------- geometry
# Original 400x300 DICOM, crop x 50..250, y 30..330 (200 wide, 300 tall), stored at half resolution: 150x100.
CROP = (50, 30, 250, 330)


def _record(flip: bool) -> TransformRecord:
    return TransformRecord(original_shape=(400, 300), source_spacing_mm=(0.1, 0.1), target_spacing_mm=0.2,
                           output_spacing_mm=(0.2, 0.2), crop_box=CROP, scale=(0.5, 0.5), stored_shape=(150, 100),
                           flip=flip)


def _canvas_scale() -> tuple[tuple[int, int], tuple[float, float]]:
    """A 128x96 input canvas: fit_into scales the 150x100 stored image by 128/150 rows, 85/100 cols."""
    _, placement = fit_into(np.zeros((150, 100), np.float32), (128, 96), 0.0)
    assert (placement.height, placement.width) == (128, 85)
    return (128, 96), input_scale(placement, (150, 100))


@pytest.mark.parametrize("kind", ["exact", "scalar", "global"])
@pytest.mark.parametrize("flip", [False, True])
def test_heatmap_peak_lands_at_the_known_dicom_position(flip: bool, kind: str) -> None:
    size, (sy, sx) = _canvas_scale()
    if kind == "scalar":  # Placement.scale alone (fractional covered width 85.33)
        sy = sx = 128 / 150
    elif kind == "global":  # the 4x smaller global input (covered 32 x 21.25)
        size, sy, sx = (32, 24), sy / 4, sx / 4
    ys, xs = 60.25, 30.75  # peak in stored pixel-edge coordinates
    yy, xx = np.mgrid[: size[0], : size[1]] + 0.5
    heat = np.exp(-((yy - ys * sy) ** 2 + (xx - xs * sx) ** 2) / (2 * 2.0**2)).astype(np.float32)
    out = to_dicom_grid(heat, sy if kind == "scalar" else (sy, sx), _record(flip))
    assert out.shape == (400, 300)
    # by hand: original = stored / 0.5 + crop origin, x mirrored first (stored width 100) when flipped
    exp_y = 60.25 / 0.5 + 30
    exp_x = ((100 - 30.75) if flip else 30.75) / 0.5 + 50
    oy, ox = np.mgrid[:400, :300] + 0.5
    assert (out * oy).sum() / out.sum() == pytest.approx(exp_y, abs=0.3)
    assert (out * ox).sum() / out.sum() == pytest.approx(exp_x, abs=0.3)
    iy, ix = np.unravel_index(np.argmax(out), out.shape)
    tol = 0.5 / (min(sy, sx) * 0.5) + 1  # the peak sample is within half a canvas pixel (in DICOM pixels) + 1
    assert abs(iy + 0.5 - exp_y) <= tol and abs(ix + 0.5 - exp_x) <= tol


@pytest.mark.parametrize("flip", [False, True])
def test_covered_region_maps_exactly_onto_the_crop_box(flip: bool) -> None:
    size, scale = _canvas_scale()
    heat = np.zeros(size, np.float32)
    heat[:128, :85] = 1.0  # the region fit_into covered; the padding column(s) stay 0 and must not bleed in
    out = to_dicom_grid(heat, scale, _record(flip), fill=-1.0)
    x0, y0, x1, y1 = CROP
    np.testing.assert_allclose(out[y0:y1, x0:x1], 1.0, atol=1e-6)
    outside = np.ones(out.shape, bool)
    outside[y0:y1, x0:x1] = False
    assert np.all(out[outside] == -1.0)


def test_to_dicom_grid_rejects_a_scale_too_large_for_the_canvas() -> None:
    with pytest.raises(ValueError, match="placement_scale"):
        to_dicom_grid(np.zeros((64, 64), np.float32), 1.0, _record(False))  # 150x100 cannot fit in 64x64
    with pytest.raises(ValueError, match="placement_scale"):
        to_dicom_grid(np.zeros((64, 64), np.float32), -0.2, _record(False))
    with pytest.raises(ValueError, match="heatmap_input"):
        to_dicom_grid(np.zeros((2, 64, 64), np.float32), 0.2, _record(False))


@pytest.mark.parametrize(
    ("flip", "expected"), [(False, (70.0, 70.0, 110.0, 130.0)), (True, (190.0, 70.0, 230.0, 130.0))])
def test_input_boxes_map_exactly_to_dicom(flip: bool, expected: tuple[float, ...]) -> None:
    _, (sy, sx) = _canvas_scale()
    # stored box x 10..30, y 20..50 -> input (y0, x0, y1, x1)
    box = np.array([[20 * sy, 10 * sx, 50 * sy, 30 * sx]])
    out = input_boxes_to_dicom(box, (sy, sx), _record(flip))
    np.testing.assert_allclose(out[0], expected, atol=1e-9)
    # and back: original -> stored through the record gives the stored box again
    np.testing.assert_allclose(original_to_stored_boxes(out, _record(flip))[0], (10, 20, 30, 50), atol=1e-9)
    with pytest.raises(ValueError, match="boxes"):
        input_boxes_to_dicom(np.zeros((2, 3)), 0.5, _record(flip))


# ----------------------------------------------------------------------------------------------- model maps
def test_model_saliency_upsamples_bilinearly_and_keeps_probabilities() -> None:
    sal = torch.tensor([[[[0.0, 1.0], [0.0, 0.0]]], [[[0.5, 0.5], [0.5, 0.5]]]])  # (B=2, V=1, 2, 2)
    up = model_saliency(SimpleNamespace(saliency=sal), (4, 4))
    assert up.shape == (2, 1, 4, 4) and up.dtype == np.float32
    # half-pixel bilinear: output column 2 samples source x = 0.75 -> 0.75 * 1 + 0.25 * 0
    np.testing.assert_allclose(up[0, 0, 0], [0.0, 0.25, 0.75, 1.0], atol=1e-6)
    np.testing.assert_allclose(up[0, 0, 3], 0.0, atol=1e-6)
    np.testing.assert_allclose(up[1], 0.5, atol=1e-6)  # not renormalised
    with pytest.raises(ValueError, match="saliency"):
        model_saliency(SimpleNamespace(saliency=None), (4, 4))


def test_patch_overlays_sort_by_attention_and_skip_missing_views() -> None:
    boxes = torch.tensor([[[[0, 0, 2, 2], [2, 2, 4, 4]], [[0, 0, 1, 1], [1, 1, 2, 2]]]], dtype=torch.float32)
    att = torch.tensor([[[0.3, 0.7], [0.5, 0.5]]])
    out = SimpleNamespace(patch_boxes=boxes, patch_attention=att, view_mask=torch.tensor([[True, False]]))
    ov = patch_overlays(out)
    np.testing.assert_allclose(ov[0][0].attention, [0.7, 0.3])
    np.testing.assert_allclose(ov[0][0].boxes, [[2, 2, 4, 4], [0, 0, 2, 2]])
    assert ov[0][1].boxes.shape == (0, 4)
    amap = patch_attention_map(out, (4, 4))
    expected = np.zeros((4, 4), np.float32)
    expected[:2, :2], expected[2:, 2:] = 0.3, 0.7
    np.testing.assert_allclose(amap[0, 0], expected)
    assert not amap[0, 1].any()


# ----------------------------------------------------------------------------------------------- Grad-CAM mechanics
@pytest.fixture(scope="module")
def multiview() -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    model = create_model("multiview_gmic", preset="cpu", image_size=(64, 48), patch_size=16, num_patches=2, seed=0)
    batch = model.example_input(2, seed=1)
    batch["view_mask"][1, 2] = False  # exam 1 has no R-CC
    return model, batch


def _manual_gradcam(model: torch.nn.Module, batch: dict[str, torch.Tensor]) -> np.ndarray:
    """Grad-CAM of the exam logit by plain autograd (no grad-cam package), per present view."""
    feats = []
    handle = model.encoder.global_net.register_forward_hook(lambda m, i, o: feats.append(o))
    try:
        model.eval()
        out = model(batch)
        (grad,) = torch.autograd.grad(out.exam_logit.sum(), feats[0])
    finally:
        handle.remove()
    feat = feats[0].detach()
    cam = torch.relu((grad.mean(dim=(2, 3), keepdim=True) * feat).sum(1)).numpy()
    h, w = batch["images"].shape[-2:]

    def norm(a: np.ndarray) -> np.ndarray:
        a = a - a.min()
        return a / (1e-7 + a.max())

    return np.stack([norm(cv2.resize(norm(c), (w, h), interpolation=cv2.INTER_LINEAR)) for c in cam])


def test_gradcam_matches_an_independent_autograd_computation(multiview) -> None:
    model, batch = multiview
    cam = gradcam(model, batch, target="exam")
    assert cam.shape == (2, 4, 64, 48) and cam.dtype == np.float32
    assert cam.min() >= 0 and cam.max() <= 1
    present = batch["view_mask"].reshape(-1).numpy()
    expected = _manual_gradcam(model, batch)
    np.testing.assert_allclose(cam.reshape(8, 64, 48)[present], expected, atol=1e-4)
    assert not cam[1, 2].any()  # the missing view
    model.train()


def test_gradcam_view_and_breast_targets_are_per_view(multiview) -> None:
    model, batch = multiview
    every_view = gradcam(model, batch, target="view")
    for v in range(4):
        one = gradcam(model, batch, target="view", view=v)
        np.testing.assert_allclose(one[:, v], every_view[:, v], atol=1e-5)
        assert not np.delete(one, v, axis=1).any()  # a view's own logit has no gradient through the other views
    left = gradcam(model, batch, target="breast", view=1)
    assert left[:, :2].max() > 0 and not left[:, 2:].any()
    both = gradcam(model, batch, target="breast")
    np.testing.assert_allclose(both[:, :2], left[:, :2], atol=1e-5)
    stage = gradcam(model, batch, target="exam", layer="encoder.global_net.model.stages.2")  # an earlier stage
    assert stage.shape == both.shape and stage.max() == pytest.approx(1.0, abs=1e-5)
    with pytest.raises(ValueError, match="not a submodule"):
        gradcam(model, batch, layer="encoder.no_such_layer")
    with pytest.raises(ValueError, match="target"):
        gradcam(model, batch, target="lesion")
    with pytest.raises(ValueError, match="view=7"):
        gradcam(model, batch, target="view", view=7)


def test_gradcam_leaves_no_hooks_and_restores_the_model(multiview) -> None:
    model, batch = multiview
    model.train()
    model.encoder.local_net.eval()  # a mixed state must come back as it was
    modes = {n: m.training for n, m in model.named_modules()}
    first = next(model.parameters())
    first.grad = torch.full_like(first, 3.0)
    first.requires_grad_(False)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    model.eval()
    with torch.no_grad():
        before = model(batch).exam_logit.clone()
    for n, m in model.named_modules():
        m.training = modes[n]

    with torch.no_grad():  # callers may sit inside no_grad (e.g. an evaluation loop)
        reference = gradcam(model, batch, target="exam")
    with torch.inference_mode():  # ... or inference_mode, with a batch made there
        frozen = {k: v.clone() for k, v in batch.items()}
        np.testing.assert_allclose(gradcam(model, frozen, target="exam"), reference, atol=1e-6)

    assert {n: m.training for n, m in model.named_modules()} == modes
    for m in model.modules():
        assert not m._forward_hooks and not m._forward_pre_hooks and not m._backward_hooks
    assert torch.equal(first.grad, torch.full_like(first, 3.0)) and not first.requires_grad
    assert all(p.grad is None for p in list(model.parameters())[1:])
    first.requires_grad_(True)
    first.grad = None
    for k, v in model.state_dict().items():
        assert torch.equal(v, state[k]), k  # batch-norm statistics untouched
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(batch).exam_logit, before)
    model.train()


def test_gradcam_rejects_unknown_models_and_batches() -> None:
    model = create_model("global_only", preset="cpu", image_size=(64, 64), seed=0)
    with pytest.raises(ValueError, match="gradcam: model input needs 'images'"):
        gradcam(model, {"image": torch.zeros(1, 1, 64, 64)})
    with pytest.raises(ValueError, match="takes 1"):
        gradcam(model, {"images": torch.zeros(1, 4, 1, 64, 64)})


# ----------------------------------------------------------------------------------------------- trained lesion finder
SIZE, SIGMA, AMP = 64, 3.5, 6.0
HALF = 2.15 * SIGMA  # the blob's box: where it adds at least 10 % of its peak


@register_model
def _explain_test_s8(pretrained: bool = False, **kwargs) -> ByobNet:
    """A 2-stage stride-8 narrow ResNet (no dilation): an 8x8 map on 64x64 inputs, fast on a CPU."""
    blocks = (ByoBlockCfg(type="basic", d=1, c=16, s=2, br=1.0), ByoBlockCfg(type="basic", d=1, c=32, s=2, br=1.0))
    cfg = ByoModelCfg(blocks=blocks, stem_chs=16, stem_type="7x7", stem_pool="", num_features=0)
    kwargs.pop("pretrained_cfg_overlay", None)
    kwargs.pop("pretrained_cfg", None)
    return build_model_with_cfg(ByobNet, "_explain_test_s8", pretrained, model_cfg=cfg,
                                feature_cfg=dict(flatten_sequential=True),
                                pretrained_cfg=dict(num_classes=0, first_conv="stem.conv1.conv"), **kwargs)


def _blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor, np.ndarray]:
    """Smooth random texture; about half the images carry a bright Gaussian blob at a random position."""
    rng = np.random.default_rng(seed)
    x = gaussian_filter(rng.standard_normal((n, SIZE, SIZE)), sigma=(0, 1.5, 1.5))
    x = (x - x.mean()) / x.std()
    y = rng.random(n) < 0.5
    centres = rng.uniform(HALF, SIZE - HALF, size=(n, 2))
    yy, xx = np.mgrid[:SIZE, :SIZE] + 0.5
    for i in np.flatnonzero(y):
        x[i] += AMP * np.exp(-((yy - centres[i, 0]) ** 2 + (xx - centres[i, 1]) ** 2) / (2 * SIGMA**2))
    return torch.from_numpy(x[:, None].astype(np.float32)), torch.from_numpy(y.astype(np.float32)), centres


@pytest.fixture(scope="module")
def lesion_finder() -> torch.nn.Module:
    assert "_explain_test_s8" in timm.list_models()
    model = create_model("global_only", preset="cpu", image_size=(SIZE, SIZE), global_backbone="_explain_test_s8",
                         dropout=0.0, channels_last=False, seed=0)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=1e-4)
    model.train()
    for step in range(150):
        x, y, _ = _blobs(32, 1000 + step)
        out = model({"images": x[:, None]})
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.exam_logit, y)
        loss = loss + 0.5 * saliency_l1(out.saliency)  # GMIC's sparsity term
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def _hit_rate(maps: np.ndarray, centres: np.ndarray) -> float:
    peaks = np.array([np.unravel_index(np.argmax(m), m.shape) for m in maps]) + 0.5
    return float(np.mean(np.all(np.abs(peaks - centres) <= HALF, axis=1)))


def test_gradcam_and_saliency_find_the_planted_lesion(lesion_finder) -> None:
    x, y, centres = _blobs(96, seed=7)
    pos = y.numpy() > 0
    with torch.no_grad():
        out = lesion_finder({"images": x[:, None]})
    scores = out.exam_logit.numpy()
    assert scores[pos].mean() > scores[~pos].mean() + 2.0  # it learned to detect the blob
    cam = gradcam(lesion_finder, {"images": x[pos][:, None]}, target="exam")[:, 0]
    sal = model_saliency(out, (SIZE, SIZE))[pos, 0]
    assert cam.shape == (pos.sum(), SIZE, SIZE)
    # one view: its breast logit and its view logit are the exam logit
    np.testing.assert_allclose(gradcam(lesion_finder, {"images": x[pos][:, None]}, target="breast")[:, 0], cam,
                               atol=1e-6)
    assert _hit_rate(cam, centres[pos]) >= 0.8
    assert _hit_rate(sal, centres[pos]) >= 0.8
    # the blob-free images give no consistent hit: peaks land on the (random) texture
    assert _hit_rate(model_saliency(out, (SIZE, SIZE))[~pos, 0], centres[~pos]) < 0.5


# ----------------------------------------------------------------------------------------------- PNG
def test_overlay_png_blends_heat_and_draws_boxes(tmp_path) -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(100, 4000, (120, 90)).astype(np.float32)
    heat = np.zeros_like(image)
    heat[35:55, 60:85] = 1.0
    path = overlay_png(image, heat, tmp_path / "o.png", boxes=[[50, 60, 80, 100]], lesion_boxes=[[5, 70, 40, 110]],
                       title="exam 1")
    out = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert out.shape == (120, 90, 3)
    cold = out[60:100, 52:78][2:-2, 2:-2]  # inside the patch box, no heat: plain gray
    assert np.all(cold[..., 0] == cold[..., 1]) and np.all(cold[..., 1] == cold[..., 2])
    lo, hi = np.percentile(image, [0.5, 99.5])
    expected = np.clip((image[62:98, 54:76] - lo) / (hi - lo), 0, 1) * 255
    assert np.abs(cold[..., 0].astype(float) - expected).max() <= 1.0
    hot = out[40:50, 65:80]
    assert np.all(hot[..., 0].astype(int) != hot[..., 2].astype(int))  # jet colour over the heat
    assert tuple(out[80, 50]) == (255, 255, 0)  # cyan patch-box edge (BGR)
    assert tuple(out[90, 5]) == (0, 255, 0)  # green lesion-box edge
    assert [p.name for p in tmp_path.iterdir()] == ["o.png"]  # atomic: no temporary left

    small = cv2.imread(str(overlay_png(image, heat, tmp_path / "s.png", max_side=60)), cv2.IMREAD_COLOR)
    assert small.shape == (60, 45, 3)
    with pytest.raises(ValueError, match="heatmap shape"):
        overlay_png(image, heat[:10], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\.png"):
        overlay_png(image, heat, tmp_path / "x.jpg")
