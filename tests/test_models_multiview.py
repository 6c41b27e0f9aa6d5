"""Four-view model: output contract of every registered model, missing-view masking, fusion options."""

from __future__ import annotations

import pytest
import torch

from mammokit.models import VIEW_ORDER, create_model, list_models

SMALL = dict(image_size=(128, 80), patch_size=32, num_patches=3)


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


@pytest.mark.parametrize("name", ["global_only", "gmic", "multiview_global", "multiview_gmic"])
def test_every_registered_model_follows_the_output_contract(name: str) -> None:
    assert name in list_models()
    is_global = name in ("global_only", "multiview_global")
    model = create_model(name, seed=0, **{**SMALL, "num_patches": None if is_global else 3})
    batch = model.example_input(2)
    out = model(batch)
    v = 4 if name.startswith("multiview") else 1
    k = 0 if is_global else 3
    assert out["breast_logits"].shape == (2, 2) and out["breast_mask"].shape == (2, 2)
    assert out["exam_logit"].shape == (2,)
    assert out["saliency"].shape == (2, v, 4, 3) and out["aux"]["saliency"].shape == (2, v, 4, 3)
    assert out["patch_boxes"].shape == (2, v, k, 4) and out["patch_attention"].shape == (2, v, k)
    for key in ("global", "local", "fusion"):
        assert out["aux"][key].shape == ((2, 4) if v == 4 else (2,))
    assert ((out["saliency"] >= 0) & (out["saliency"] <= 1)).all()
    boxes = out["patch_boxes"]
    assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= 128).all() and (boxes[..., 3] <= 80).all()
    for b in range(2):
        for view in range(v):
            for i in range(k):
                for j in range(i):
                    assert not _overlap(boxes[b, view, i], boxes[b, view, j])


def test_view_order_constant_and_global_models_refuse_patches() -> None:
    assert VIEW_ORDER == ("L-CC", "L-MLO", "R-CC", "R-MLO")
    with pytest.raises(ValueError, match="no local pathway"):
        create_model("global_only", num_patches=3)


def test_missing_views_are_masked_not_zero_filled() -> None:
    model = create_model("multiview_gmic", seed=1, breast_fusion="mean", **SMALL).eval()
    x = model.example_input(1)["images"][0, 0]  # one view image
    images = torch.randn(1, 4, 1, 128, 80, generator=torch.Generator().manual_seed(5))
    images[0, 0] = x
    only_cc = {"images": images, "view_mask": torch.tensor([[True, False, True, True]])}
    both = {"images": images.clone(), "view_mask": torch.ones(1, 4, dtype=torch.bool)}
    both["images"][0, 1] = x  # L-MLO = L-CC image; view embeddings start at zero, so both views encode alike
    out_cc, out_both = model(only_cc), model(both)
    # masked mean of {h(x)} == mean of {h(x), h(x)}; zero-filling would halve the representation instead
    torch.testing.assert_close(out_cc["breast_logits"][:, 0], out_both["breast_logits"][:, 0])
    # what sits in a missing view's slot cannot change anything
    garbage = {"images": images.clone(), "view_mask": only_cc["view_mask"]}
    garbage["images"][0, 1] = 1e3
    torch.testing.assert_close(model(garbage)["exam_logit"], out_cc["exam_logit"])
    assert out_cc["view_logits"][0, 1].item() == 0.0 and out_cc["patch_boxes"][0, 1].abs().sum().item() == 0.0


@pytest.mark.parametrize("fusion", ["concat", "mean", "attention"])
def test_a_single_view_exam_still_gets_a_prediction(fusion: str) -> None:
    model = create_model("multiview_gmic", seed=2, breast_fusion=fusion, exam_pool="max", **SMALL).eval()
    batch = model.example_input(1)
    batch["view_mask"] = torch.tensor([[False, False, False, True]])  # only R-MLO
    out = model(batch)
    assert out["breast_mask"].tolist() == [[False, True]]
    assert out["breast_logits"][0, 0].item() == 0.0
    assert torch.isfinite(out["exam_logit"]).all()
    assert out["exam_logit"].item() == out["breast_logits"][0, 1].item()  # max over the one present breast


@pytest.mark.parametrize(("conditioning", "exam_pool"), [("film", "lse"), ("add", "attention"), ("film", "max")])
def test_fusion_options_train(conditioning: str, exam_pool: str) -> None:
    model = create_model("multiview_gmic", seed=3, conditioning=conditioning, exam_pool=exam_pool, **SMALL)
    out = model(model.example_input(2))
    if exam_pool == "max":
        torch.testing.assert_close(out["exam_logit"], out["breast_logits"].amax(dim=1))
    loss = out["exam_logit"].sum() + out["aux"]["local"].sum()
    loss.backward()
    enc = model.encoder
    assert enc.global_net.model.stem.conv1.conv.weight.grad.abs().sum() > 0
    assert enc.local_net.model.stem.conv1.conv.weight.grad.abs().sum() > 0
    assert model.view_embed.weight.grad.abs().sum() > 0  # embeddings are learned


def test_seeded_multiview_is_deterministic_and_inputs_are_checked() -> None:
    a = create_model("multiview_gmic", seed=4, **SMALL).eval()
    b = create_model("multiview_gmic", seed=4, **SMALL).eval()
    x = a.example_input(1)
    torch.testing.assert_close(a(x)["breast_logits"], b(x)["breast_logits"], rtol=0, atol=0)
    with pytest.raises(ValueError, match="'images' must be"):
        a({"images": torch.zeros(1, 3, 1, 128, 80)})
    with pytest.raises(ValueError, match="view_mask"):
        a({"images": x["images"], "view_mask": torch.ones(1, 3, dtype=torch.bool)})
    with pytest.raises(TypeError, match="unknown multi-view model options"):
        create_model("multiview_gmic", breast_fusoin="mean")
    with pytest.raises(ValueError, match="breast_fusion"):
        create_model("multiview_gmic", breast_fusion="sum")
