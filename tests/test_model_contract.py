"""The one model contract (issue 12 §1), checked on every model the registry lists and on an ensemble of them.

The test walks `list_models()`, so a newly registered model is covered without editing this file.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammokit.models import INPUT_KEYS, EnsembleModel, ModelOutput, create_model, list_models
from mammokit.training.losses import MammoLoss
from mammokit.training.module import loss_targets

SMALL = dict(image_size=(128, 80), patch_size=32)


def _small(name: str, seed: int = 0) -> torch.nn.Module:
    model = create_model(name, seed=seed, **SMALL)
    return model


def _models() -> list[tuple[str, torch.nn.Module]]:
    built = [(name, _small(name)) for name in list_models()]
    built += [(f"ensemble of {name}", EnsembleModel([_small(name, 0), _small(name, 1)])) for name in list_models()]
    return built


def _overlap(a: torch.Tensor, b: torch.Tensor) -> bool:
    return bool(a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3])


@pytest.fixture(scope="module")
def models() -> list[tuple[str, torch.nn.Module]]:
    return _models()


def test_the_registry_lists_the_models_the_docs_promise() -> None:
    assert {"global_only", "gmic", "multiview_global", "multiview_gmic"} <= set(list_models())


def test_every_model_reads_the_same_input_and_returns_one_typed_output(models) -> None:
    for name, model in models:
        views = model.views
        batch = model.example_input(2, seed=3)
        assert set(batch) <= set(INPUT_KEYS), name
        assert batch["images"].shape[:3] == (2, views, 1), name
        for key in ("view_mask", "laterality"):
            assert batch[key].shape == (2, views), (name, key)
        out = model.eval()(batch)
        assert isinstance(out, ModelOutput), name
        out.check()
        assert out.view_logits.shape == (2, views) and out.view_mask.all(), name
        assert out.breast_mask.dtype == torch.bool and out.breast_mask.any(dim=1).all(), name
        assert ((out.saliency >= 0) & (out.saliency <= 1)).all(), name
        assert "global" in out.aux_view_logits, name
        boxes = out.patch_boxes
        h, w = batch["images"].shape[-2:]
        assert (boxes[..., :2] >= 0).all() and (boxes[..., 2] <= h).all() and (boxes[..., 3] <= w).all(), name
        if not name.startswith("ensemble"):  # one network's retrieved windows never overlap
            for b in range(2):
                for v in range(views):
                    for i in range(boxes.shape[2]):
                        assert not any(_overlap(boxes[b, v, i], boxes[b, v, j]) for j in range(i)), name


def test_example_input_follows_the_seed(models) -> None:
    for name, model in models:
        a, b, c = model.example_input(1, seed=7), model.example_input(1, seed=7), model.example_input(1, seed=8)
        assert torch.equal(a["images"], b["images"]) and not torch.equal(a["images"], c["images"]), name


def test_every_model_trains_through_the_loss_with_every_aux_head_named(models) -> None:
    """The loss pairs each auxiliary head with the view labels by name: with B equal to the view count (the shape
    coincidence that once paired a (B, V) head with exam labels) every head still gets its view's breast label."""
    for name, model in models:
        views = model.views
        batch = model.example_input(views, seed=1)  # B == V on purpose
        out = model.train()(batch)
        labels = torch.tensor([[1.0, 0.0]] * views)
        fake = {"breast_labels": labels, "breast_mask": torch.ones(views, 2, dtype=torch.bool),
                "exam_label": labels.amax(1), "view_mask": batch["view_mask"], "laterality": batch["laterality"]}
        targets = loss_targets(fake, out)
        expected = labels.gather(1, batch["laterality"])  # each view's own breast
        assert torch.equal(targets["view_labels"], expected), name
        loss, parts = MammoLoss()(out, targets)
        assert set(parts) >= {"breast", "exam", "global"}, name
        assert ("local" in parts) == ("local" in out.aux_view_logits), name
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters()), name
        model.zero_grad()


def test_a_loss_weight_naming_no_head_is_an_error() -> None:
    model = _small("gmic")
    batch = model.example_input(2)
    out = model(batch)
    fake = {"breast_labels": torch.zeros(2, 2), "breast_mask": torch.ones(2, 2, dtype=torch.bool),
            "exam_label": torch.zeros(2), "view_mask": batch["view_mask"], "laterality": batch["laterality"]}
    with pytest.raises(KeyError, match="globl"):
        MammoLoss(aux_weights={"globl": 1.0})(out, loss_targets(fake, out))


def test_the_ensemble_combines_every_member() -> None:
    members = [_small("gmic", 0), _small("gmic", 1)]
    ensemble = EnsembleModel(members).eval()
    batch = ensemble.example_input(2, seed=4)
    outs = [m.eval()(batch) for m in members]
    out = ensemble(batch)
    k = outs[0].patch_boxes.shape[2]
    assert out.patch_boxes.shape[2] == 2 * k
    torch.testing.assert_close(out.patch_boxes[:, :, k:], outs[1].patch_boxes)  # member 1's patches are kept
    torch.testing.assert_close(out.patch_attention.sum(-1), torch.ones(2, 1))
    for head in ("global", "local", "fusion"):
        mean = (outs[0].aux_view_logits[head] + outs[1].aux_view_logits[head]) / 2
        torch.testing.assert_close(out.aux_view_logits[head], mean)
    torch.testing.assert_close(out.member_exam_logits, torch.stack([o.exam_logit for o in outs]))


def test_an_ensemble_refuses_members_of_different_view_counts() -> None:
    with pytest.raises(ValueError, match="view counts"):
        EnsembleModel([_small("gmic"), _small("multiview_global")])


def test_inputs_outside_the_contract_are_named() -> None:
    model = _small("gmic")
    batch = model.example_input(1)
    with pytest.raises(ValueError, match="unknown keys"):
        model({**batch, "image": batch["images"][:, 0]})
    with pytest.raises(ValueError, match="takes 1"):
        model({"images": torch.zeros(1, 4, 1, 128, 80)})
    four = _small("multiview_global")
    with pytest.raises(ValueError, match="VIEW_ORDER"):
        four({**four.example_input(1), "laterality": torch.tensor([[1, 1, 0, 0]])})


def test_the_output_is_a_pytree_so_ddp_and_export_see_its_tensors() -> None:
    out = _small("gmic")(_small("gmic").example_input(1))
    leaves, spec = torch.utils._pytree.tree_flatten(out)
    tensors = [leaf for leaf in leaves if leaf is not None]  # member_exam_logits is None outside an ensemble
    assert all(isinstance(leaf, torch.Tensor) for leaf in tensors) and len(tensors) == 8 + 3
    rebuilt = torch.utils._pytree.tree_unflatten(leaves, spec)
    assert isinstance(rebuilt, ModelOutput) and sorted(rebuilt.aux_view_logits) == ["fusion", "global", "local"]


def test_gradcam_reads_every_model_through_the_contract(models) -> None:
    """Grad-CAM needs no model type: each model names its layers (an ensemble, all its members')."""
    from mammokit.evaluation.explain import gradcam

    for name, model in models:
        batch = model.example_input(1, seed=2)
        maps = gradcam(model.eval(), batch, target="breast")
        assert maps.shape == (1, model.views, *batch["images"].shape[-2:]), name
        assert np.isfinite(maps).all() and maps.min() >= 0, name
    ensemble = next(m for n, m in models if n.startswith("ensemble"))
    assert len(ensemble.gradcam_layers()) == 2
