"""Augmentations: geometry keeps the chest wall left and carries boxes/masks/heatmaps, intensity changes follow
their physical models, and seeding makes every draw reproducible per item, never repeated across workers."""

from __future__ import annotations

import dataclasses
import json
import random

import cv2
import numpy as np
import pytest
import torch
from pydantic import BaseModel
from torch.utils.data import DataLoader, Dataset

from mammokit.data.augment import (
    AugmentConfig,
    AugmentRecord,
    build_augment,
    cutmix,
    geometric_matrix,
    item_rng,
    map_heatmap_back,
    mix_batch,
    mixup,
    tta_transforms,
    worker_init_fn,
)

H, W = 128, 96
CHEST_WALL = (16, 112)  # rows where the phantom touches the left edge
GEOMETRY_ONLY = {"p_affine": 1.0, "p_crop": 1.0, "p_gamma": 0.0, "p_contrast": 0.0, "p_noise": 0.0}
INTENSITY_OFF = {"p_gamma": 0.0, "p_contrast": 0.0, "p_noise": 0.0}


def phantom() -> np.ndarray:
    """A D-shaped breast: a band against the left edge (rows 16..111, 40 px deep) with a rounded nipple side."""
    yy, xx = np.mgrid[0:H, 0:W]
    breast = ((xx < 40) & (yy >= CHEST_WALL[0]) & (yy < CHEST_WALL[1])) | (
        ((xx - 40) / 40.0) ** 2 + ((yy - 64) / 48.0) ** 2 < 1
    )
    image = np.zeros((H, W), np.float32)
    image[breast] = 0.4 + 0.1 * np.sin(xx[breast] / 5.0)
    return image


def edge_point(matrix: np.ndarray, y: float, x: float) -> tuple[float, float]:
    """Map an edge-coordinate point through a pixel-centre affine."""
    px = matrix[0, 0] * (x - 0.5) + matrix[0, 1] * (y - 0.5) + matrix[0, 2] + 0.5
    py = matrix[1, 0] * (x - 0.5) + matrix[1, 1] * (y - 0.5) + matrix[1, 2] + 0.5
    return py, px


def left_column_covers_chest_wall(out: np.ndarray, matrix: np.ndarray) -> bool:
    """True when column 0 is tissue on every row spanned by the transformed chest-wall segment."""
    rows = [edge_point(matrix, y, 0.0)[0] for y in CHEST_WALL]
    lo, hi = max(int(np.ceil(min(rows))) + 2, 0), min(int(np.floor(max(rows))) - 2, H)
    return bool((out[lo:hi, 0] > 0.2).all())


def record_for(matrix: np.ndarray) -> AugmentRecord:
    return AugmentRecord(shape=(H, W), view="CC", background=0.0, matrix=matrix.tolist())


@pytest.mark.parametrize("angle", [-10.0, 10.0])
@pytest.mark.parametrize("scale", [0.9, 1.1])
def test_extreme_rotation_keeps_chest_wall_on_left_edge(angle: float, scale: float) -> None:
    image, aug = phantom(), build_augment(GEOMETRY_ONLY)
    matrix = geometric_matrix((H, W), angle_deg=angle, scale=scale, chest_wall=CHEST_WALL)
    out, _, _ = aug.apply(image, record_for(matrix))
    assert left_column_covers_chest_wall(out, matrix)
    # Control: the same rotation about the chest-wall midpoint without the detector-edge shift leaves a
    # background wedge against the left edge, which is what the check above guards against.
    naive = _naive_rotation(angle, scale)
    out_naive, _, _ = aug.apply(image, record_for(naive))
    assert not left_column_covers_chest_wall(out_naive, naive)


def _naive_rotation(angle: float, scale: float) -> np.ndarray:
    centre = (-0.5, 0.5 * sum(CHEST_WALL) - 0.5)
    return cv2.getRotationMatrix2D(centre, angle, scale)


@pytest.mark.parametrize("view", ["CC", "MLO"])
def test_random_geometry_keeps_chest_wall_on_left_edge(view: str) -> None:
    image, aug = phantom(), build_augment({**GEOMETRY_ONLY, "p_vflip": 1.0})
    for index in range(12):
        out, _, _, rec = aug(image, view=view, rng=item_rng(3, 0, index))
        assert left_column_covers_chest_wall(out, np.asarray(rec.matrix)), rec
        assert rec.translate[1] <= 0  # horizontal shifts only towards the chest wall
        assert rec.vflip == (view == "CC")


def test_vertical_flip_only_for_cc_and_exact() -> None:
    image = phantom() + np.linspace(0, 0.05, H, dtype=np.float32)[:, None] * (phantom() > 0)
    aug = build_augment({"p_affine": 0.0, "p_crop": 0.0, "p_vflip": 1.0, **INTENSITY_OFF})
    box = [[40.0, 50.0, 56.0, 66.0]]
    cc, cc_box, _, rec_cc = aug(image, boxes=box, view="CC", rng=item_rng(0, 0, 0))
    mlo, mlo_box, _, rec_mlo = aug(image, boxes=box, view="MLO", rng=item_rng(0, 0, 0))
    assert rec_cc.vflip and not rec_mlo.vflip
    np.testing.assert_allclose(cc_box, [[H - 56, 50, H - 40, 66]], atol=1e-4)
    np.testing.assert_allclose(mlo_box, box)
    np.testing.assert_allclose(cc, np.flipud(image), atol=1e-6)
    np.testing.assert_array_equal(mlo, image)


def test_boxes_and_mask_follow_a_planted_bright_square() -> None:
    image = np.full((H, W), 0.3, np.float32)
    image[:, W - 10 :] = 0.0  # air on the nipple side, so the background value is 0
    box = np.array([[40.0, 50.0, 56.0, 66.0]])
    image[40:56, 50:66] = 1.0
    mask = np.zeros((H, W), bool)
    mask[40:56, 50:66] = True
    aug = build_augment({**GEOMETRY_ONLY, "p_vflip": 0.5})
    for index in range(10):
        out, boxes, warped_mask, rec = aug(image, boxes=box, mask=mask, view="CC", rng=item_rng(1, 2, index))
        rows, cols = np.nonzero(out > 0.65)
        found = [rows.min(), cols.min(), rows.max() + 1, cols.max() + 1]
        np.testing.assert_allclose(boxes[0], found, atol=0.8, err_msg=str(rec))
        mrows, mcols = np.nonzero(warped_mask)
        assert warped_mask.dtype == bool
        np.testing.assert_allclose(boxes[0], [mrows.min(), mcols.min(), mrows.max() + 1, mcols.max() + 1], atol=1.6)


def test_heatmap_maps_back_to_the_original_frame_at_lower_resolution() -> None:
    image = np.full((H, W), 0.3, np.float32)
    image[60:72, 30:42] = 1.0  # centre (66, 36) in edge coordinates
    aug = build_augment({**GEOMETRY_ONLY, "p_vflip": 1.0})
    for index in range(5):
        out, _, _, rec = aug(image, view="CC", rng=item_rng(0, 1, index))
        heat = cv2.resize(out - 0.3, (W // 4, H // 4), interpolation=cv2.INTER_AREA)
        back = map_heatmap_back(heat, rec)
        ys, xs = np.mgrid[0 : H // 4, 0 : W // 4]
        weight = np.clip(back, 0, None)
        centre = ((ys * weight).sum() / weight.sum() + 0.5, (xs * weight).sum() / weight.sum() + 0.5)
        np.testing.assert_allclose(centre, (66 / 4, 36 / 4), atol=0.6, err_msg=str(rec))


def test_tta_inverse_recovers_heatmaps_at_full_and_quarter_resolution() -> None:
    yy, xx = np.mgrid[0:H, 0:W]
    blob = np.exp(-((yy - 50.0) ** 2 + (xx - 35.0) ** 2) / (2 * 12.0**2)).astype(np.float32)
    transforms = tta_transforms(8, view="CC")
    assert [t.name for t in transforms][:2] == ["identity", "vflip"]
    for t in transforms:
        geometric = dataclasses.replace(t, gamma=None)
        moved = geometric.forward(blob, background=0.0)
        if t.name not in ("identity", "gamma0.9", "gamma1.1"):
            assert np.abs(moved - blob).max() > 0.1, t.name  # the transform really moves the map
        for factor in (1, 4):
            size = (W // factor, H // factor)
            heat = cv2.resize(moved, size, interpolation=cv2.INTER_AREA) if factor > 1 else moved
            truth = cv2.resize(blob, size, interpolation=cv2.INTER_AREA) if factor > 1 else blob
            back = t.inverse_heatmap(heat)
            covered = t.inverse_heatmap(np.ones_like(heat), fill=0.0) > 0.999
            assert covered.mean() > 0.8
            assert np.abs(back - truth)[covered].max() < (0.03 if factor == 1 else 0.06), (t.name, factor)


def test_tta_lists_respect_the_view() -> None:
    assert "vflip" not in [t.name for t in tta_transforms(7, view="MLO")]
    with pytest.raises(ValueError, match="n=8"):
        tta_transforms(8, view="MLO")
    with pytest.raises(ValueError, match="n=0"):
        tta_transforms(0)
    gamma = next(t for t in tta_transforms(8) if t.name == "gamma1.1")
    image = phantom()
    np.testing.assert_array_equal(gamma.inverse_heatmap(image), image)


def test_gamma_keeps_order_range_and_background() -> None:
    rng = np.random.default_rng(0)
    image = rng.uniform(0.2, 1.0, (H, W)).astype(np.float32)
    image[:, :5] = 0.0
    aug = build_augment(
        {"p_affine": 0.0, "p_crop": 0.0, "p_vflip": 0.0, **INTENSITY_OFF, "p_gamma": 1.0, "gamma": (0.8, 0.8)}
    )
    out, _, _, rec = aug(image, rng=item_rng(0, 0, 0))
    assert rec.gamma == pytest.approx(0.8)
    order = np.argsort(image, axis=None, kind="stable")
    assert (np.diff(out.ravel()[order]) >= 0).all()
    top = image.max()
    np.testing.assert_allclose(out, top * (image / top) ** 0.8, rtol=1e-5)
    assert out.max() == pytest.approx(top) and (out[:, :5] == 0).all()


def test_contrast_scales_about_the_breast_median() -> None:
    rng = np.random.default_rng(1)
    image = rng.uniform(0.4, 0.6, (H, W)).astype(np.float32)
    image[:, :5] = 0.0
    aug = build_augment({"p_affine": 0.0, "p_crop": 0.0, **INTENSITY_OFF, "p_contrast": 1.0, "contrast": (0.9, 0.9)})
    out, _, _, _ = aug(image, rng=item_rng(0, 0, 0))
    median = np.median(image[:, 5:])
    np.testing.assert_allclose(out[:, 5:], median + 0.9 * (image[:, 5:] - median), atol=1e-6)
    assert (out[:, :5] == 0).all()


def test_noise_variance_follows_the_poisson_gaussian_model() -> None:
    image = np.zeros((256, 257), np.float32)
    image[:, 1:129] = 0.25
    image[:, 129:] = 1.0  # range R = 1 - 0 = 1
    gain, sigma = 4e-3, 0.02
    aug = build_augment(
        {
            "p_affine": 0.0,
            "p_crop": 0.0,
            **INTENSITY_OFF,
            "p_noise": 1.0,
            "noise_gain": (gain, gain),
            "noise_sigma": (sigma, sigma),
        }
    )
    out, _, _, rec = aug(image, rng=item_rng(0, 0, 0))
    assert rec.noise_seed is not None
    for level, region in ((0.25, out[:, 1:129]), (1.0, out[:, 129:])):
        expected = gain * 1.0 * level + (sigma * 1.0) ** 2
        assert region.var() == pytest.approx(expected, rel=0.05)
        assert abs(region.mean() - level) < 4 * np.sqrt(expected / region.size)
    assert (out[:, 0] == 0).all()


def test_same_seed_same_output_other_epoch_or_item_differs_and_record_replays() -> None:
    image, aug = phantom(), build_augment({"p_noise": 1.0})
    out_a, _, _, rec_a = aug(image, view="CC", rng=item_rng(7, 3, 11))
    out_b, _, _, rec_b = aug(image, view="CC", rng=item_rng(7, 3, 11))
    np.testing.assert_array_equal(out_a, out_b)
    assert rec_a == rec_b and rec_a.seed == {"entropy": 7, "spawn_key": [3, 11]}
    assert not np.array_equal(out_a, aug(image, view="CC", rng=item_rng(7, 4, 11))[0])
    assert not np.array_equal(out_a, aug(image, view="CC", rng=item_rng(7, 3, 12))[0])
    stored = AugmentRecord.from_dict(json.loads(json.dumps(rec_a.to_dict())))
    np.testing.assert_array_equal(aug.apply(image, stored)[0], out_a)


def test_disabled_pipeline_is_identity() -> None:
    image = phantom()
    out, boxes, _, rec = build_augment({"enabled": False})(image, boxes=[[1, 2, 3, 4]], rng=item_rng(0, 0, 0))
    np.testing.assert_array_equal(out, image)
    np.testing.assert_array_equal(boxes, [[1, 2, 3, 4]])
    np.testing.assert_allclose(rec.matrix, [[1, 0, 0], [0, 1, 0]])


class AugmentedItems(Dataset):
    """Each item augmented with a generator drawn from (seed, epoch, index) only."""

    def __init__(self, epoch: int) -> None:
        self.image, self.aug, self.epoch = phantom(), build_augment({"p_noise": 1.0}), epoch

    def __len__(self) -> int:
        return 4

    def __getitem__(self, index: int) -> torch.Tensor:
        return torch.from_numpy(self.aug(self.image, rng=item_rng(5, self.epoch, index))[0])


def test_augmentation_is_independent_of_worker_count_and_differs_by_item_and_epoch() -> None:
    single = torch.cat(list(DataLoader(AugmentedItems(0), batch_size=1, num_workers=0)))
    workers = torch.cat(list(DataLoader(AugmentedItems(0), batch_size=1, num_workers=2, worker_init_fn=worker_init_fn)))
    torch.testing.assert_close(single, workers, rtol=0, atol=0)
    assert all(not torch.equal(single[i], single[j]) for i in range(4) for j in range(i))
    later = torch.cat(list(DataLoader(AugmentedItems(1), batch_size=1, num_workers=0)))
    assert all(not torch.equal(single[i], later[i]) for i in range(4))


class GlobalDraws(Dataset):
    """Returns the worker's torch seed and one draw from each global RNG."""

    def __len__(self) -> int:
        return 2

    def __getitem__(self, index: int) -> tuple[int, float, float]:
        info = torch.utils.data.get_worker_info()
        return info.seed, float(np.random.random()), random.random()


def test_worker_init_fn_reseeds_global_rngs_per_worker() -> None:
    loader = DataLoader(GlobalDraws(), batch_size=None, num_workers=2, worker_init_fn=worker_init_fn)
    draws = list(loader)
    assert draws[0][1] != draws[1][1] and draws[0][2] != draws[1][2]
    for worker_id, (seed, np_draw, py_draw) in enumerate(draws):
        seq = np.random.SeedSequence(int(seed) % 2**64, spawn_key=(worker_id,))
        assert np_draw == np.random.RandomState(seq.generate_state(4)).random_sample()
        assert py_draw == random.Random(int(seq.generate_state(2, np.uint64)[1])).random()


def test_mixup_mixes_images_and_labels_with_the_same_weight() -> None:
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 8, 8)
    targets = torch.tensor([0, 1, 0, 1, 1, 0])
    mixed, soft, rec = mixup(images, targets, alpha=0.4, rng=np.random.default_rng(0))
    lam, perm = rec["lam"], rec["perm"]
    assert sorted(perm) == list(range(6))
    for i in range(6):
        assert mixed[i, 0, 0, 0].item() == pytest.approx(lam * i + (1 - lam) * perm[i], abs=1e-5)
        assert soft[i].item() == pytest.approx(lam * targets[i].item() + (1 - lam) * targets[perm[i]].item())


def test_cutmix_label_weight_equals_the_pasted_area() -> None:
    images = torch.arange(6, dtype=torch.float32).view(6, 1, 1, 1).expand(6, 1, 20, 16).contiguous()
    targets = torch.tensor([0.0, 1.0, 0.0, 1.0, 1.0, 0.0])
    for seed in range(5):
        mixed, soft, rec = cutmix(images, targets, alpha=1.0, rng=np.random.default_rng(seed))
        lam, perm = rec["lam"], rec["perm"]
        for i in range(6):
            if perm[i] == i:
                continue
            kept = (mixed[i] == i).float().mean().item()
            assert kept == pytest.approx(lam)
            assert soft[i].item() == pytest.approx(lam * targets[i].item() + (1 - lam) * targets[perm[i]].item())


def test_mix_is_off_by_default() -> None:
    images, targets = torch.rand(4, 1, 8, 8), torch.tensor([0, 1, 0, 1])
    out, soft, rec = mix_batch(images, targets, AugmentConfig(), np.random.default_rng(0))
    assert rec == {"mode": "none"} and torch.equal(out, images) and torch.equal(soft, targets.float())
    cfg = AugmentConfig(mix="cutmix", p_mix=1.0)
    assert mix_batch(images, targets, cfg, np.random.default_rng(0))[2]["mode"] == "cutmix"


def test_config_and_input_errors_name_the_problem() -> None:
    with pytest.raises(ValueError, match="p_gamma"):
        AugmentConfig(p_gamma=1.5)
    with pytest.raises(ValueError, match="scale"):
        AugmentConfig(scale=(1.1, 0.9))
    with pytest.raises(ValueError, match="bogus"):
        build_augment({"bogus": 1})
    aug = build_augment()
    with pytest.raises(ValueError, match="image"):
        aug(np.zeros((2, 3, 4)), rng=item_rng(0, 0, 0))
    with pytest.raises(ValueError, match="NaN"):
        aug(np.full((4, 4), np.nan), rng=item_rng(0, 0, 0))
    with pytest.raises(TypeError, match="rng"):
        aug(phantom(), rng=np.random.RandomState(0))
    with pytest.raises(ValueError, match="boxes"):
        aug(phantom(), boxes=[[10, 10, 5, 20]], rng=item_rng(0, 0, 0))
    with pytest.raises(ValueError, match="mask"):
        aug(phantom(), mask=np.zeros((3, 3)), rng=item_rng(0, 0, 0))
    with pytest.raises(ValueError, match="index"):
        item_rng(0, 0, -1)


def test_build_from_pydantic_model() -> None:
    class Section(BaseModel):
        p_gamma: float = 1.0
        gamma: list[float] = [0.9, 0.9]

    aug = build_augment(Section())
    assert aug.config.p_gamma == 1.0 and aug.config.gamma == (0.9, 0.9)
