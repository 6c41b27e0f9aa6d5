"""MixUp / CutMix of a whole training batch: partners share a view layout, the full views follow the global inputs,
labels mix with the images' weight (unknown stays unknown), lesion boxes follow the pixels."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mammokit.training.mixing import layout_partners, mix_lesions, mix_training_batch

NAN = float("nan")


def exam_batch() -> dict:
    """Four exams whose every pixel holds the exam's index (global 8x6, full 16x12); exam 2 lacks its R-MLO."""
    n = 4
    images = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 4, 1, 8, 6).clone()
    full = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1, 1).expand(n, 4, 1, 16, 12).clone()
    view_mask = torch.ones(n, 4, dtype=torch.bool)
    view_mask[2, 3] = False
    box = np.array([[1.0, 1.0, 3.0, 3.0]], np.float32)
    empty = np.zeros((0, 4), np.float32)
    return {
        "images": images, "full": full, "view_mask": view_mask, "laterality": torch.tensor([[0, 0, 1, 1]] * n),
        "breast_labels": torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0], [NAN, 0.0]]),
        "breast_mask": torch.tensor([[True, True], [True, True], [True, True], [False, True]]),
        "exam_label": torch.tensor([1.0, 1.0, 0.0, NAN]),
        "lesion_boxes": [[box, empty, empty, empty] for _ in range(n)],
        "lesion_malignant": [[np.array([True]), *(np.zeros(0, bool) for _ in range(3))] for _ in range(n)],
        "exam_id": [f"e{i}" for i in range(n)],
    }


def test_partners_share_the_view_layout() -> None:
    batch = exam_batch()
    for seed in range(10):
        perm = layout_partners(batch, np.random.default_rng(seed)).tolist()
        assert sorted(perm) == [0, 1, 2, 3] and perm[2] == 2  # exam 2 is alone in its layout
    single = {"laterality": torch.tensor([[0], [1], [0], [1], [1]]), "view_mask": torch.ones(5, 1, dtype=torch.bool)}
    for seed in range(10):
        perm = layout_partners(single, np.random.default_rng(seed)).tolist()
        assert all(single["laterality"][j] == single["laterality"][i] for i, j in enumerate(perm))


@pytest.mark.parametrize("kind", ["mixup", "cutmix"])
def test_everything_in_the_batch_mixes_with_one_weight(kind: str) -> None:
    batch = exam_batch()
    alphas = {"mixup_alpha": 0.4 if kind == "mixup" else 0.0, "cutmix_alpha": 1.0 if kind == "cutmix" else 0.0}
    for seed in range(6):
        out, rec = mix_training_batch(batch, rng=np.random.default_rng(seed), **alphas)
        assert rec["mode"] == kind
        lam, perm = rec["lam"], rec["perm"]
        for i, j in enumerate(perm):
            # the share of item i's own pixels is lam, in the global input and in the full view alike
            for key in ("images", "full"):
                x = out[key][i]
                own = x.mean() if kind == "mixup" else (x == i).float().mean()
                want = lam * i + (1 - lam) * j if kind == "mixup" else (1.0 if i == j else lam)
                assert own.item() == pytest.approx(want, abs=1e-5), (key, seed)
            want_labels = lam * batch["breast_labels"][i] + (1 - lam) * batch["breast_labels"][j]
            torch.testing.assert_close(out["breast_labels"][i], want_labels, equal_nan=True)
            want_exam = lam * batch["exam_label"][i] + (1 - lam) * batch["exam_label"][j]
            torch.testing.assert_close(out["exam_label"][i], want_exam, equal_nan=True)
            assert torch.equal(out["breast_mask"][i], batch["breast_mask"][i] & batch["breast_mask"][j])


def test_cutmix_full_view_box_is_the_global_box_scaled() -> None:
    batch = exam_batch()
    out, rec = mix_training_batch(batch, mixup_alpha=0.0, cutmix_alpha=1.0, rng=np.random.default_rng(3))
    y0, x0, y1, x1 = rec["box"]
    i = next(i for i, j in enumerate(rec["perm"]) if i != j)
    j = rec["perm"][i]
    pasted = torch.zeros(16, 12, dtype=torch.bool)
    pasted[2 * y0:2 * y1, 2 * x0:2 * x1] = True
    assert torch.equal(out["full"][i, 0, 0] == j, pasted)


def test_lesion_boxes_follow_the_mixed_pixels() -> None:
    batch = exam_batch()
    out, rec = mix_training_batch(batch, mixup_alpha=0.4, cutmix_alpha=0.0, rng=np.random.default_rng(0))
    for i, j in enumerate(rec["perm"]):
        assert len(out["lesion_boxes"][i][0]) == (1 if i == j else 2)  # MixUp: both lesions are visible
        assert len(out["lesion_malignant"][i][0]) == len(out["lesion_boxes"][i][0])
    record = {"mode": "cutmix", "lam": 0.75, "perm": [1, 0, 2, 3], "box": [0, 0, 2, 6], "shape": [8, 6]}
    boxes, flags = mix_lesions(batch["lesion_boxes"], batch["lesion_malignant"], record)
    # CutMix: the own lesion (rows 1-3) is partly pasted over and stays; the partner's is clipped to the pasted rows
    np.testing.assert_allclose(boxes[0][0], [[1, 1, 3, 3], [1, 1, 2, 3]])
    assert flags[0][0].tolist() == [True, True]
    boxes, _ = mix_lesions(batch["lesion_boxes"], batch["lesion_malignant"], {**record, "box": [0, 0, 8, 6]})
    np.testing.assert_allclose(boxes[0][0], [[1, 1, 3, 3]])  # wholly pasted over: only the partner's lesion


def test_no_mixing_returns_the_batch() -> None:
    batch = exam_batch()
    out, rec = mix_training_batch(batch, mixup_alpha=0.0, cutmix_alpha=0.0, rng=np.random.default_rng(0))
    assert out is batch and rec == {"mode": "none"}
