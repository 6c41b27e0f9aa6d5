"""The declared schema of a released model's `config.json`: `ReleaseConfig`, version `FORMAT`.

Sections: `format`, `mammokit_version`, `intended_use`, `model` (a registered model and its keywords, or an
ensemble of member specs), `input` (what the loader feeds the model), `preprocess` (the preprocessing config the
training store was made with), `training` (the model card), `temperature` / `temperature_source` / `calibration`
(what `mammokit calibrate` fitted) and, for an ensemble, `members` (the member runs).

Checked on write (`write_config`: `release.model.save_released`, `set_calibration`) and on read (`read_config`:
`load_released`). Every problem raises `InvalidInputError` naming the file and the field: another `format` (an older
or newer mammokit), no `format` (another tool's config.json), a missing or wrongly typed field. Unknown keys are
errors too, on write (a typo or an undeclared addition: declare it here first) and on read (a file from a newer or
patched mammokit, whose extra key this version would silently ignore). Sections that hold another component's own
settings stay open: `model.kwargs` (checked by the model's constructor), `preprocess.config` (a `PreprocessConfig`
dump, checked by `predict` when it preprocesses).

The file keeps the keys consumers read as a dict (`config["input"]["level"]` and so on); `ReleaseConfig` is the
typed view of the same content.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from mammokit.config import field_errors, one_line
from mammokit.errors import InvalidInputError
from mammokit.io import atomic_write_text
from mammokit.release.calibration import Calibrator

FORMAT = "mammokit-model/1"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", protected_namespaces=())


class ModelSpec(_Section):
    """A registered model and its keywords (weight sources left out), or `ensemble` with its members' specs."""

    name: str
    kwargs: dict[str, Any] = Field(default_factory=dict)  # checked by the model's constructor
    members: list[ModelSpec] | None = None  # only for name == "ensemble"

    @model_validator(mode="after")
    def _members_iff_ensemble(self) -> ModelSpec:
        if (self.name == "ensemble") != (self.members is not None):
            raise ValueError("members are given exactly when the name is 'ensemble'")
        if self.name == "ensemble" and not self.members:
            raise ValueError("an ensemble needs at least one member")
        return self


class GroupStatsSpec(_Section):
    """Pooled intensity statistics of one view group (`preprocess.stats.GroupStats`)."""

    n_images: int
    count: int
    mean: float
    std: float
    percentiles: dict[str, float]


class InputSpec(_Section):
    """What the loader feeds the model (`training.config.DataConfig`'s input settings)."""

    level: Literal["exam", "breast", "view"]
    input_size: tuple[int, int]  # (H, W) of the global input per view
    full_scale: int  # the local pathway's view is input_size × full_scale (0: no separate full view)
    normalization: Literal["image", "view_group"]
    view_stats: dict[str, GroupStatsSpec] = Field(default_factory=dict)  # per view group, for "view_group"


class PreprocessSpec(_Section):
    """The training store's `preprocess_config.json`: its `PreprocessConfig` dump and that config's hash."""

    config: dict[str, Any] | None = None
    config_hash: str | None = None


class StageSummary(_Section):
    """One curriculum stage of the training run (its `done.json`)."""

    stage: str | None = None
    seconds: float | None = None
    best_checkpoint: str | None = None
    best_score: float | None = None
    monitor: str | None = None
    epochs: int | None = None


class TrainingCard(_Section):
    """The model card: what the model was trained on, how, and where."""

    run: str | None = None
    seed: int | None = None
    store: str | None = None
    exams: int | None = None
    images: int | None = None
    sites: list[str] = Field(default_factory=list)
    vendors: list[str] = Field(default_factory=list)
    spacing_mm: float | None = None  # median stored pixel spacing of the training images
    film_images: int | None = None  # scanned-film training images (read by predict's film warning)
    images_left_out: dict[str, int] = Field(default_factory=dict)  # training images in no view slot, by reason
    split_source: str | None = None  # where train/val/test came from: the dataset's official split, or random
    stages: dict[str, StageSummary] = Field(default_factory=dict)
    initial_weights: dict[str, str] = Field(default_factory=dict)  # keyword -> "file:..." / "timm:..."
    hardware: str | None = None
    precision: str | None = None


class CalibratorSpec(_Section):
    """One calibration map (`release.calibration.Calibrator`)."""

    method: str
    params: dict[str, float] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _valid_map(self) -> CalibratorSpec:
        Calibrator(self.method, self.params)  # raises ValueError on an unknown method or bad parameters
        return self


class LevelCalibrationSpec(_Section):
    """One level's calibration (`release.calibration.LevelCalibration.to_dict()`)."""

    chosen: CalibratorSpec
    temperature: CalibratorSpec
    cv_nll: dict[str, float] = Field(default_factory=dict)
    source: str = ""
    formula: str = ""
    note: str | None = None  # why no temperature could be fitted (it is then T = 1)


class ReleaseConfig(_Section):
    """A released model's config.json."""

    format: Literal["mammokit-model/1"]
    mammokit_version: str
    intended_use: str
    model: ModelSpec
    input: InputSpec
    preprocess: PreprocessSpec = Field(default_factory=PreprocessSpec)
    training: TrainingCard | None = None
    temperature: float = Field(1.0, gt=0)  # the exam-level temperature (1: uncalibrated)
    temperature_source: str | None = None
    calibration: dict[Literal["exam", "breast"], LevelCalibrationSpec] | None = None
    members: list[str] | None = None  # an ensemble's member run folders

    def to_dict(self) -> dict[str, Any]:
        """The JSON content: the fields that were given (defaults not added), tuples as lists."""
        return self.model_dump(mode="json", exclude_unset=True)


def validate_config(data: Any, path: str | Path) -> ReleaseConfig:
    """`data` as a `ReleaseConfig`.

    Raises:
        InvalidInputError: naming `path` and the field: not a mammokit config, another format, a missing, unknown
            or invalid field.
    """
    if not isinstance(data, dict) or "format" not in data:
        raise InvalidInputError(f"{path}: not a mammokit released-model config (no \"format\": {FORMAT!r}); "
                                "it may be another tool's config.json")
    if "onnx" in data:
        raise InvalidInputError(f"{path}: the model card beside an exported ONNX file, not a released model's config "
                                "(point at the released model folder: model.safetensors + config.json)")
    if data["format"] != FORMAT:
        raise InvalidInputError(f"{path}: format {data['format']!r}, this mammokit reads {FORMAT!r}: a model "
                                "released by another mammokit version; use that version or release it again")
    try:
        return ReleaseConfig.model_validate(data)
    except ValidationError as err:
        raise InvalidInputError(f"{path}: invalid {FORMAT} config, {field_errors(err)}") from err


def read_config(path: str | Path) -> ReleaseConfig:
    """The checked content of a config.json (`validate_config`); unreadable JSON is an `InvalidInputError` too."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InvalidInputError(f"{path}: not a readable JSON file ({one_line(str(err))})") from err
    return validate_config(data, path)


def write_config(path: str | Path, config: ReleaseConfig | dict[str, Any]) -> ReleaseConfig:
    """Check `config` and write it to `path` atomically; returns the checked config."""
    data = config.to_dict() if isinstance(config, ReleaseConfig) else config  # a typed config may have been edited
    checked = validate_config(data, path)
    atomic_write_text(Path(path), json.dumps(checked.to_dict(), indent=2))
    return checked
