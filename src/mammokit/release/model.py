"""Released models on disk: `model.safetensors` + `config.json` (architecture, input, preprocessing, calibration, card).

config.json follows the declared, versioned schema of `mammokit.release.config_schema` (`FORMAT`), checked when it is
written and when it is read.

An ensemble is released the same way: its members' weights live in one safetensors file under `members.<i>.`, and
`mammokit.models.EnsembleModel` combines the members' outputs, so every consumer sees one model.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

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
    """Rebuild a released model in eval mode; returns (model, config as a dict, checked against the schema)."""
    path = Path(path)
    cfg_path = path / "config.json"
    if not cfg_path.is_file():
        raise MissingInputError(f"{path}: no config.json (is this a released model folder?)")
    config = read_config(cfg_path).to_dict()
    model = build_model(config["model"])
    state = load_file(str(path / "model.safetensors"), device=map_location)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise InvalidInputError(f"{path}: weights do not match the architecture (missing {missing[:5]}, "
                                f"unexpected {unexpected[:5]})")
    model.eval()
    return model, config


def set_calibration(path: str | Path, calibration: dict[str, Any], *, temperature: float, source: str) -> None:
    """Store fitted calibration (per level, `LevelCalibration.to_dict()`) and the exam-level temperature in a
    released model's config.json."""
    cfg_path = Path(path) / "config.json"
    config = read_config(cfg_path).to_dict()
    config.update(calibration=calibration, temperature=float(temperature), temperature_source=source)
    write_config(cfg_path, config)
