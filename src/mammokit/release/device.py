"""Device and batch helpers shared by training and every consumer of a released model."""

from __future__ import annotations

from typing import Any

import torch

from mammokit.errors import InvalidInputError
from mammokit.models.contract import INPUT_KEYS


def model_inputs(batch: dict[str, Any], device: torch.device | str | None = None) -> dict[str, torch.Tensor]:
    """The keys of a loader batch that the models read (`ModelInput`), moved to `device` when given."""
    picked = {k: batch[k] for k in INPUT_KEYS if k in batch}
    return picked if device is None else {k: v.to(device, non_blocking=True) for k, v in picked.items()}


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """"auto" = the first CUDA GPU when there is one, else the CPU; anything else as torch reads it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r}: this machine has no CUDA GPU (use --device cpu or auto)")
    return resolved
