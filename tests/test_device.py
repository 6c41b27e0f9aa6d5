"""Device choice for inference: "auto" picks a GPU only when there is one; batches follow the model's device."""

from __future__ import annotations

import pytest
import torch

from mammokit.release.device import model_inputs, resolve_device


def test_auto_is_the_gpu_only_when_there_is_one() -> None:
    assert resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without a GPU")
def test_asking_for_a_missing_gpu_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="no CUDA GPU"):
        resolve_device("cuda")


def test_model_inputs_move_only_what_models_read() -> None:
    batch = {"images": torch.zeros(1, 4, 1, 8, 6), "view_mask": torch.ones(1, 4, dtype=torch.bool),
             "exam_label": torch.zeros(1), "exam_id": ["e1"]}
    moved = model_inputs(batch, "meta")
    assert set(moved) == {"images", "view_mask"} and all(v.device.type == "meta" for v in moved.values())
    assert model_inputs(batch)["images"] is batch["images"]
