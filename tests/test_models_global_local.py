"""Global-local network: pooling, retrieval, cropping, the planted-spot check, gradients and grid mode."""

from __future__ import annotations

import pytest
import torch

from mammokit.models import GlobalLocalNet, create_model, crop_boxes, resample_boxes, retrieve_windows, top_t_pool

SMALL = dict(image_size=(128, 80), patch_size=32, num_patches=3)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


def test_top_t_pool_is_the_mean_of_the_largest_fraction() -> None:
    x = torch.arange(100.0).reshape(1, 1, 10, 10)
    assert top_t_pool(x, 0.05).item() == pytest.approx((99 + 98 + 97 + 96 + 95) / 5)
    assert top_t_pool(x, 1e-6).item() == 99.0  # at least one value
    with pytest.raises(ValueError, match="top-t"):
        top_t_pool(x, 0.0)


def test_retrieved_windows_are_inside_disjoint_and_start_at_the_peak() -> None:
    g = torch.Generator().manual_seed(0)
    sal = torch.rand(5, 23, 15, generator=g) * 0.5
    sal[0, 10:13, 4:7] = 1.0  # a 3x3 hot spot in the first map
    hf, wf, p = 1472, 960, 128  # cell = 64 px -> 2x2-cell windows
    boxes = retrieve_windows(sal, (hf, wf), p, k=6)
    assert boxes.shape == (5, 6, 4) and boxes.dtype == torch.int64
    assert (boxes[..., 2] - boxes[..., 0] == p).all() and (boxes[..., 3] - boxes[..., 1] == p).all()
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= hf).all() and (boxes[..., 3] <= wf).all()
    for b in range(5):
        for i in range(6):
            for j in range(i):
                assert not _overlap(boxes[b, i], boxes[b, j]), (b, i, j)
    # best 2x2 window inside the 3x3 hot spot; its top-left cell (10, 4) -> pixel (640, 256)
    assert boxes[0, 0].tolist() == [640, 256, 768, 384]


def test_retrieval_rejects_patches_larger_than_the_image() -> None:
    with pytest.raises(ValueError, match="patch_size 300 exceeds"):
        retrieve_windows(torch.rand(1, 4, 4), (256, 256), 300, 2)


def test_crop_and_resample_cut_exact_pixels() -> None:
    img = torch.arange(2 * 40 * 30, dtype=torch.float32).reshape(2, 1, 40, 30)
    boxes = torch.tensor([[[0, 0, 8, 8], [32, 22, 40, 30]], [[5, 7, 13, 15], [10, 1, 18, 9]]])
    crops = crop_boxes(img, boxes, 8)
    assert crops.shape == (4, 1, 8, 8)
    for b in range(2):
        for k in range(2):
            y0, x0, y1, x1 = boxes[b, k].tolist()
            torch.testing.assert_close(crops[b * 2 + k, 0], img[b, 0, y0:y1, x0:x1])
    resampled = resample_boxes(img, boxes.float(), 8)  # pixel-centre sampling of a same-size box is exact
    torch.testing.assert_close(resampled, crops, rtol=0, atol=1e-3)


def test_planted_spot_is_retrieved_from_the_full_resolution_image() -> None:
    torch.manual_seed(0)
    model = create_model("gmic", image_size=(128, 96), full_size=(512, 384), patch_size=128, num_patches=2).eval()
    full = torch.zeros(1, 1, 512, 384)
    full[0, 0, 300, 200] = 50.0  # one full-resolution pixel: downscaling would blur it away
    image = torch.nn.functional.avg_pool2d(full, 4)
    assert image.max().item() < 4.0
    h, w = 4, 3  # saliency map of the stride-32 global net on 128x96: one cell = one 128-px patch at full resolution
    forced = torch.full((1, 1, h, w), -10.0)
    forced[0, 0, 300 // 128, 200 // 128] = 10.0  # force the saliency onto the spot's cell
    seen = []
    hooks = [model.saliency_head.register_forward_hook(lambda m, i, o: forced),
             model.local_net.register_forward_hook(lambda m, i, o: seen.append(i[0].detach()))]
    out = model({"images": image[:, None], "full": full[:, None]})
    for hk in hooks:
        hk.remove()
    y0, x0, y1, x1 = (out.patch_boxes[0, 0, 0] * 4).tolist()  # image pixels -> full pixels
    assert y0 <= 300 < y1 and x0 <= 200 < x1
    assert seen[0][0].max().item() == 50.0  # the local network saw the full-resolution spot itself
    assert out.saliency.shape == (1, 1, h, w)


def test_gradients_reach_both_pathways_and_outputs_follow_the_contract() -> None:
    torch.manual_seed(1)
    model = create_model("gmic", **SMALL)
    batch = model.example_input(2)
    batch["laterality"] = torch.tensor([[1], [0]])
    out = model(batch)
    assert out.breast_logits.shape == (2, 2) and out.exam_logit.shape == (2,)
    assert out.breast_mask.tolist() == [[False, True], [True, False]]
    torch.testing.assert_close(out.breast_logits[0, 1], out.view_logits[0, 0])
    assert out.patch_boxes.shape == (2, 1, 3, 4) and out.patch_attention.shape == (2, 1, 3)
    torch.testing.assert_close(out.patch_attention.sum(-1), torch.ones(2, 1))
    loss = sum(out.aux_view_logits[k].sum() for k in ("global", "local", "fusion")) + out.saliency.abs().mean()
    loss.backward()
    for part in (model.global_net, model.local_net, model.mil, model.fusion_head):
        grads = [p.grad for p in part.parameters() if p.requires_grad]
        assert all(g is not None for g in grads) and sum(g.abs().sum() for g in grads) > 0


def test_grid_mode_uses_the_given_boxes() -> None:
    torch.manual_seed(2)
    model = create_model("gmic", patch_source="grid", image_size=(128, 80), full_size=(256, 160), patch_size=32,
                         num_patches=4).eval()
    batch = model.example_input(1)
    assert batch["patch_boxes"].shape == (1, 1, 4, 4)
    seen = []
    hook = model.local_net.register_forward_hook(lambda m, i, o: seen.append(i[0]))
    out = model(batch)
    hook.remove()
    torch.testing.assert_close(out.patch_boxes, batch["patch_boxes"])
    full_boxes = (batch["patch_boxes"][:, 0] * 2).long()  # 32-px boxes at full resolution
    torch.testing.assert_close(seen[0], crop_boxes(batch["full"][:, 0], full_boxes, 32), rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="patch_boxes"):
        model({"images": batch["images"], "full": batch["full"]})


def test_global_only_has_empty_patch_outputs() -> None:
    model = create_model("global_only", image_size=(128, 80))
    out = model(model.example_input(2))
    assert out.patch_boxes.shape == (2, 1, 0, 4) and out.patch_attention.shape == (2, 1, 0)
    torch.testing.assert_close(out.aux_view_logits["global"][:, 0], out.exam_logit)
    assert sorted(out.aux_view_logits) == ["global"]  # no local head to train twice on the global logit


def test_seeded_models_are_deterministic() -> None:
    a, b = (create_model("gmic", seed=7, **SMALL).eval() for _ in range(2))
    c = create_model("gmic", seed=8, **SMALL).eval()
    x = a.example_input(2, seed=3)
    torch.testing.assert_close(a(x).exam_logit, b(x).exam_logit, rtol=0, atol=0)
    assert not torch.allclose(a(x).exam_logit, c(x).exam_logit)


def test_bad_inputs_are_clear_errors() -> None:
    model = GlobalLocalNet(**SMALL)
    with pytest.raises(ValueError, match="'images' must be"):
        model({"images": torch.zeros(1, 1, 3, 128, 80)})
    with pytest.raises(ValueError, match="patch_source"):
        create_model("gmic", patch_source="random")
    with pytest.raises(ValueError, match="unknown model"):
        create_model("gmicc")
