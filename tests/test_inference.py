"""`run_inference`: loader workers change nothing, not even the MC-dropout and TTA passes."""

from __future__ import annotations

import numpy as np
import pytest

from mammokit.evaluation.inference import dataset_for, run_inference
from mammokit.models import create_model
from mammokit.release.store_table import load_store_table

MODEL_KWARGS = {"preset": "cpu", "image_size": [64, 40], "full_size": [128, 80], "patch_size": 16, "num_patches": 2,
                "dropout": 0.3}
INPUT = {"level": "exam", "input_size": [64, 40], "full_scale": 2, "normalization": "image", "view_stats": None}


@pytest.mark.slow
def test_workers_give_the_same_passes(synth_store) -> None:
    model = create_model("multiview_gmic", seed=0, **MODEL_KWARGS).eval()
    dataset = dataset_for({"input": INPUT}, load_store_table(synth_store.store), synth_store.store)
    runs = [run_inference(model, dataset, batch_size=3, mc_passes=3, tta_passes=2, num_workers=n, seed=5)
            for n in (0, 1)]
    a, b = runs
    np.testing.assert_array_equal(a.exam_logit, b.exam_logit)
    for kind in ("mc", "tta"):
        np.testing.assert_array_equal(a.passes[kind]["exam"], b.passes[kind]["exam"])
    assert np.ptp(a.passes["mc"]["exam"], axis=0).max() > 0  # dropout was on: the passes differ from each other
    assert a.items["exam_id"].tolist() == b.items["exam_id"].tolist()
