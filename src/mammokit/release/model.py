"""Released models on disk: `model.safetensors` + `config.json` (architecture, input, preprocessing, calibration, card).

config.json follows the declared, versioned schema of `mammokit.release.config_schema` (`FORMAT`), checked when it is
written and when it is read.

An ensemble is released the same way: its members' weights live in one safetensors file under `members.<i>.`, and
`mammokit.models.EnsembleModel` combines the members' outputs, so every consumer sees one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mammokit import INTENDED_USE, __version__
from mammokit.errors import InvalidInputError, MissingInputError
from mammokit.io import atomic_write
from mammokit.models import EnsembleModel, create_model
from mammokit.release.config_schema import FORMAT, read_config, validate_config, write_config


def is_weight_source(key: str) -> bool:
    """Whether a model keyword names where initial weights come from (`global_pretrained`, `local_pretrained`)."""
    return key == "pretrained" or key.endswith("_pretrained")


def architecture(kwargs: dict[str, Any]) -> dict[str, Any]:
    """Model keywords without the weight sources: what rebuilds the architecture that released weights fill."""
    return {k: v for k, v in kwargs.items() if not is_weight_source(k)}


def build_model(spec: dict[str, Any]) -> nn.Module:
    """A model (or ensemble) from the `model` section of a released config, randomly initialised.

    Weight sources (``file:``, ``timm:``) are ignored, also in configs released before they were left out: the
    weights are in model.safetensors, and loading must need neither the original file nor the network.
    """
    if spec["name"] == "ensemble":
        return EnsembleModel([build_model(m) for m in spec["members"]])
    return create_model(spec["name"], **architecture(spec.get("kwargs", {})))


def save_released(out_dir: str | Path, model: nn.Module, config: dict[str, Any]) -> Path:
    """Write `model.safetensors` and `config.json` (atomically) into `out_dir`.

    `config` holds the sections of `config_schema.ReleaseConfig` but format, mammokit_version and intended_use
    (added here; temperature defaults to 1). It is checked before anything is written.

    Raises:
        InvalidInputError: `config` breaks the schema (the message names the field).
    """
    out_dir = Path(out_dir)
    full = validate_config({"format": FORMAT, "mammokit_version": __version__, "intended_use": INTENDED_USE,
                            "temperature": 1.0, **config}, out_dir / "config.json")
    out_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    atomic_write(out_dir / "model.safetensors", lambda tmp: save_file(state, str(tmp)))
    write_config(out_dir / "config.json", full)
    return out_dir



def resolve_model_dir(path: str | Path) -> Path:
    """A released model folder, given it or a run folder that holds one in `model/`."""
    path = Path(path)
    if (path / "config.json").is_file():
        return path
    if (path / "model" / "config.json").is_file():
        return path / "model"
    raise MissingInputError(f"{path}: neither a released model (config.json) nor a run folder with model/")


def load_released(path: str | Path, map_location: str = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a released model in eval mode; returns (model, config as a dict, checked against the schema).

    Raises:
        MissingInputError: no config.json or no model.safetensors in `path`.
        InvalidInputError: naming the file: a config.json that breaks the schema or describes no buildable model,
            a model.safetensors that is not a safetensors file (truncated, another format), or weights of another
            architecture than the config's.
    """
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise MissingInputError(f"{path}: no config.json (is this a released model folder?)")
    config = read_config(cfg_path).to_dict()
    try:
        model = build_model(config["model"])
    except InvalidInputError as err:
        raise InvalidInputError(f"{cfg_path}: its model section describes no model mammokit can build: {err}") from err
    state = _read_weights(path / "model.safetensors", map_location)
    mismatch = _weight_mismatch(model.state_dict(), state)
    if mismatch:
        raise InvalidInputError(f"{path / 'model.safetensors'}: weights of another architecture than config.json's "
                                f"model ({mismatch})")
    model.load_state_dict(state)
    model.eval()
    return model, config


def _read_weights(weights: Path, map_location: str) -> dict[str, torch.Tensor]:
    """The tensors of a model.safetensors; a missing, truncated or foreign file is the user's to fix."""
    if not weights.is_file():
        raise MissingInputError(f"{weights}: not found (a released model keeps its weights beside config.json)")
    try:
        return load_file(str(weights), device=map_location)
    except SafetensorError as err:
        raise InvalidInputError(f"{weights}: not a readable safetensors file, truncated or of another format "
                                f"({err})") from err


def _weight_mismatch(own: dict[str, torch.Tensor], given: dict[str, torch.Tensor]) -> str:
    """How `given` weights differ from a model's own state ("" when they fit): missing, unexpected, reshaped keys."""
    missing = [k for k in own if k not in given]
    unexpected = [k for k in given if k not in own]
    reshaped = [f"{k} {list(given[k].shape)} vs {list(own[k].shape)}" for k in own
                if k in given and given[k].shape != own[k].shape]
    parts = [f"{len(keys)} {what}, e.g. {', '.join(keys[:2])}"
             for what, keys in (("missing", missing), ("unexpected", unexpected), ("of another shape", reshaped))
             if keys]
    return "; ".join(parts)


def set_calibration(path: str | Path, calibration: dict[str, Any], *, temperature: float, source: str) -> None:
    """Store fitted calibration (per level, `LevelCalibration.to_dict()`) and the exam-level temperature in a
    released model's config.json."""
    cfg_path = Path(path) / "config.json"
    config = read_config(cfg_path).to_dict()
    config.update(calibration=calibration, temperature=float(temperature), temperature_source=source)
    write_config(cfg_path, config)
