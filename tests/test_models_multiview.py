"""Four-view model: missing-view masking, fusion options (the contract of every model: test_model_contract.py)."""

from __future__ import annotations

import pytest
import torch

from mammokit.errors import InvalidInputError
from mammokit.models import VIEW_ORDER, create_model

SMALL = dict(image_size=(128, 80), patch_size=32, num_patches=3)


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
    torch.testing.assert_close(out_cc.breast_logits[:, 0], out_both.breast_logits[:, 0])
    # what sits in a missing view's slot cannot change anything
    garbage = {"images": images.clone(), "view_mask": only_cc["view_mask"]}
    garbage["images"][0, 1] = 1e3
    torch.testing.assert_close(model(garbage).exam_logit, out_cc.exam_logit)
    assert out_cc.view_logits[0, 1].item() == 0.0 and out_cc.patch_boxes[0, 1].abs().sum().item() == 0.0


@pytest.mark.parametrize("fusion", ["concat", "mean", "attention"])
def test_a_single_view_exam_still_gets_a_prediction(fusion: str) -> None:
    model = create_model("multiview_gmic", seed=2, breast_fusion=fusion, exam_pool="max", **SMALL).eval()
    batch = model.example_input(1)
    batch["view_mask"] = torch.tensor([[False, False, False, True]])  # only R-MLO
    out = model(batch)
    assert out.breast_mask.tolist() == [[False, True]]
    assert out.breast_logits[0, 0].item() == 0.0
    assert torch.isfinite(out.exam_logit).all()
    assert out.exam_logit.item() == out.breast_logits[0, 1].item()  # max over the one present breast


@pytest.mark.parametrize(("conditioning", "exam_pool"), [("film", "lse"), ("add", "attention"), ("film", "max")])
def test_fusion_options_train(conditioning: str, exam_pool: str) -> None:
    model = create_model("multiview_gmic", seed=3, conditioning=conditioning, exam_pool=exam_pool, **SMALL)
    out = model(model.example_input(2))
    if exam_pool == "max":
        torch.testing.assert_close(out.exam_logit, out.breast_logits.amax(dim=1))
    loss = out.exam_logit.sum() + out.aux_view_logits["local"].sum()
    loss.backward()
    enc = model.encoder
    assert enc.global_net.model.stem.conv1.conv.weight.grad.abs().sum() > 0
    assert enc.local_net.model.stem.conv1.conv.weight.grad.abs().sum() > 0
    assert model.view_embed.weight.grad.abs().sum() > 0  # embeddings are learned


def test_seeded_multiview_is_deterministic_and_inputs_are_checked() -> None:
    a = create_model("multiview_gmic", seed=4, **SMALL).eval()
    b = create_model("multiview_gmic", seed=4, **SMALL).eval()
    x = a.example_input(1)
    torch.testing.assert_close(a(x).breast_logits, b(x).breast_logits, rtol=0, atol=0)
    with pytest.raises(ValueError, match="has 3 views per item; this model takes 4"):
        a({"images": torch.zeros(1, 3, 1, 128, 80)})
    with pytest.raises(ValueError, match="view_mask"):
        a({"images": x["images"], "view_mask": torch.ones(1, 3, dtype=torch.bool)})
    with pytest.raises(InvalidInputError, match="unknown multi-view model options"):
        create_model("multiview_gmic", breast_fusoin="mean")
    with pytest.raises(ValueError, match="breast_fusion"):
        create_model("multiview_gmic", breast_fusion="sum")
