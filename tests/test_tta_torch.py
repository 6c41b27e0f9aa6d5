"""Test-time transforms in torch (`evaluation.tta_torch`) against the NumPy/OpenCV path, on real synthetic batches.

Tolerance: identity and vertical flip are exact (no resampling) and gamma differs by float32 rounding of `pow` only
(1e-5). The affine passes differ by how the source coordinate of each output pixel is computed: OpenCV >= 5
(installed here) samples at exact coordinates, `affine_grid` + `grid_sample` in float32, so values differ by float32
coordinate rounding (~1e-5 px at these sizes) times the local gradient; on normalised values (clipped to +-6, one
step at the skin line <= 12) that is < 1e-3 max and < 1e-5 mean (measured: 3e-5 max, 7e-7 mean). OpenCV 4 rounds
source coordinates to 1/32 px: up to 1/64 px per axis, so up to 2 * 12 / 64 = 0.375 at a skin-line step; there the
bound is that (max) and 1e-2 (mean).
"""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch

from mammokit.data.augment import tta_transforms
from mammokit.data.dataset import collate
from mammokit.evaluation.inference import _tta_batch, dataset_for, run_inference
from mammokit.evaluation.tta_torch import slot_views, tta_batch, tta_forward
from mammokit.models import create_model
from mammokit.release.store_table import load_store_table

N_TTA = 7  # with 7 passes the CC and MLO lists together hold every transform of `tta_transforms`
EXACT_COORDS = int(cv2.__version__.split(".")[0]) >= 5
WARP_MAX, WARP_MEAN = (1e-3, 1e-5) if EXACT_COORDS else (0.375, 1e-2)
PROB_ATOL = 1e-5 if EXACT_COORDS else 1e-2  # TTA probabilities of the two paths (measured: 6e-8 with OpenCV 5)
MODEL_KWARGS = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2,
                "dropout": 0.3}


def _dataset(store, level: str = "exam"):
    inp = {"level": level, "input_size": [64, 40], "full_scale": 2, "normalization": "image", "view_stats": None}
    return dataset_for({"input": inp}, load_store_table(store), store)


def _kinds(index: int, n_slots: int) -> set[str]:
    """Which kinds of transform pass `index` applies: identity, flip, gamma or warp."""
    lists = {"CC": tta_transforms(N_TTA, view="CC"), "MLO": tta_transforms(N_TTA, view="MLO")}
    kinds = set()
    for view in slot_views(n_slots):
        t = lists[view][index % len(lists[view])]
        kinds.add("flip" if t.vflip else "gamma" if t.gamma is not None else "warp" if t.name != "identity"
                  else "identity")
    return kinds


@pytest.mark.parametrize("level", ["exam", "view"])
def test_torch_tta_matches_opencv(synth_store, level: str) -> None:
    dataset = _dataset(synth_store.store, level)
    batch = collate([dataset[i] for i in range(4)])
    assert batch["images"].shape[1] == (4 if level == "exam" else 1) and "full" in batch
    for k in range(N_TTA):
        ref, got = _tta_batch(batch, k, N_TTA), tta_batch(batch, k, N_TTA)
        kinds = _kinds(k, batch["images"].shape[1])
        for key in ("images", "full"):
            assert got[key].shape == ref[key].shape and got[key].dtype == ref[key].dtype
            diff = (got[key] - ref[key]).abs()
            if kinds <= {"identity", "flip"}:
                assert diff.max() == 0, (k, key)
            elif kinds <= {"identity", "flip", "gamma"}:
                assert diff.max() < 1e-5, (k, key, float(diff.max()))
            else:
                assert diff.max() < WARP_MAX and diff.mean() < WARP_MEAN, (k, key, float(diff.max()), diff.mean())
            if kinds != {"identity"}:
                assert (got[key] - batch[key]).abs().max() > 0.1  # the pass changed the images
        assert got["view_mask"] is batch["view_mask"]  # other keys pass through


def test_flat_and_single_images() -> None:
    """A flat image (an absent view: zeros) stays as it is; one image matches `TTATransform.forward`."""
    rng = np.random.default_rng(0)
    image = rng.normal(size=(50, 30)).astype(np.float32)
    image[:, 20:] = -3.0  # air on the right, as in the canonical frame
    for t in tta_transforms(8, view="CC"):  # every transform
        assert torch.equal(tta_forward(torch.zeros(2, 1, 50, 30), t), torch.zeros(2, 1, 50, 30))
        got = tta_forward(torch.from_numpy(image), t).numpy()
        np.testing.assert_allclose(got, t.forward(image), atol=WARP_MAX, err_msg=t.name)
    with pytest.raises(ValueError, match="non-empty"):
        tta_forward(torch.zeros(0, 5, 5), tta_transforms(1)[0])


def test_tta_logits_agree_and_stay_deterministic(synth_store) -> None:
    """A tiny model's TTA passes from both paths agree closely; plain and MC-dropout passes are the same bits; the torch
    path repeats itself exactly and leaves the global RNG as it was."""
    model = create_model("multiview_gmic", seed=0, **MODEL_KWARGS).eval()
    dataset = _dataset(synth_store.store)
    state = torch.random.get_rng_state()
    kw = {"batch_size": 4, "mc_passes": 2, "tta_passes": N_TTA, "seed": 3}
    cpu = run_inference(model, dataset, tta_on_device=False, **kw)
    dev = run_inference(model, dataset, tta_on_device=True, **kw)
    again = run_inference(model, dataset, tta_on_device=True, **kw)
    auto = run_inference(model, dataset, **kw)  # on the CPU: the OpenCV path
    assert torch.equal(torch.random.get_rng_state(), state)
    np.testing.assert_array_equal(cpu.exam_logit, dev.exam_logit)
    for lvl in ("exam", "breast", "view"):
        np.testing.assert_array_equal(cpu.passes["mc"][lvl], dev.passes["mc"][lvl])
        np.testing.assert_array_equal(dev.passes["tta"][lvl], again.passes["tta"][lvl])
        np.testing.assert_array_equal(auto.passes["tta"][lvl], cpu.passes["tta"][lvl])
        np.testing.assert_allclose(dev.passes["tta"][lvl], cpu.passes["tta"][lvl], atol=PROB_ATOL, rtol=0)
    assert dev.passes["tta"]["exam"].shape == (N_TTA, len(dataset))
    assert np.ptp(dev.passes["tta"]["exam"], axis=0).max() > 1e-3  # the passes differ from each other


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_matches_cpu(synth_store) -> None:
    batch = collate([_dataset(synth_store.store)[i] for i in range(4)])
    on_gpu = {k: batch[k].cuda() for k in ("images", "full")}
    for k in range(N_TTA):
        ref, got = _tta_batch(batch, k, N_TTA), tta_batch(on_gpu, k, N_TTA)
        for key in ("images", "full"):
            assert got[key].is_cuda
            diff = (got[key].cpu() - ref[key]).abs()
            assert diff.max() < WARP_MAX and diff.mean() < WARP_MEAN, (k, key)
