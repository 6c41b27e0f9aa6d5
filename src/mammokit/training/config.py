"""The `mammokit train` configuration (YAML + `--set key=value` overrides), validated by pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, PositiveInt, field_validator, model_validator

from mammokit.config import StrictModel

BATCH_MIX_KEYS = ("mix", "mix_alpha", "p_mix")  # AugmentConfig's batch-level keys: set by data.mixup / data.cutmix


class DataConfig(StrictModel):
    """What the loader feeds the model."""

    store: str = "demo/store"
    level: Literal["exam", "breast", "view"] = "exam"  # view: single-view models (global_only, gmic)
    input_size: tuple[PositiveInt, PositiveInt] = (256, 160)  # global input (H, W) per view, canonical frame
    full_scale: int = Field(4, ge=0)  # the local pathway's view is input_size × full_scale (0 = no separate full view)
    normalization: Literal["image", "view_group"] = "image"
    train_split: str = "train"
    val_split: str = "val"
    # where `split` comes from when the store has none: the dataset's official split (`split_group` train / val /
    # test) with val carved out of train by patient, a random patient-level split, or auto (official when present)
    split_source: Literal["auto", "official", "random"] = "auto"
    val_fraction: float = Field(0.2, gt=0, lt=1)  # share of the (official) train patients held out for validation
    # share of the patients held out as an internal test set (`evaluate --split test`) when the dataset has no
    # official split; ignored when it has one (its test split is used)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    batch_size: int = Field(4, ge=1)
    num_workers: int = Field(0, ge=0)
    # fraction of positive cases per epoch at the start (case-level sampling), linearly scheduled to
    # positive_ratio_end by the last epoch (None: constant)
    positive_ratio: float = Field(0.5, ge=0, le=1)
    positive_ratio_end: float | None = Field(None, ge=0, le=1)
    augment: dict[str, Any] = Field(default_factory=dict)  # passed to mammokit.data.augment.build_augment
    mixup: float = Field(0.0, ge=0.0)  # MixUp's Beta(α, α) parameter for training batches (0 = off)
    cutmix: float = Field(0.0, ge=0.0)  # CutMix's Beta(α, α) parameter (0 = off); with both on, each batch picks one

    @field_validator("augment")
    @classmethod
    def _no_batch_mix(cls, value: dict[str, Any]) -> dict[str, Any]:
        given = sorted(set(value) & set(BATCH_MIX_KEYS))
        if given:
            raise ValueError(f"augment keys {given} are batch-level: set data.mixup / data.cutmix (their α) instead")
        return value


class ModelConfig(StrictModel):
    """A registered model and its keyword overrides (None values are dropped, so defaults stay the model's)."""

    name: str = "multiview_gmic"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossConfig(StrictModel):
    """Keyword arguments of `MammoLoss`, and the optional lesion-box saliency supervision weight."""

    kwargs: dict[str, Any] = Field(default_factory=dict)
    box_saliency: float = Field(0.0, ge=0)  # > 0: saliency maps also learn "look here" from annotated lesion boxes


class OptimConfig(StrictModel):
    """AdamW, warmup + cosine, clipping, accumulation, EMA."""

    lr: float = Field(1e-3, gt=0)
    backbone_lr: float | None = Field(None, gt=0)
    weight_decay: float = Field(1e-4, ge=0)
    warmup_fraction: float = Field(0.1, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0)
    accumulate: int = Field(1, ge=1)
    ema_decay: float | None = Field(None, gt=0, lt=1)


class StageConfig(StrictModel):
    """One curriculum stage: which parts train, for how long, at what learning rate."""

    name: str
    epochs: int = Field(1, ge=0)
    train: list[str] = Field(default_factory=lambda: ["all"])  # parameter-name prefixes to train ("all" = all)
    freeze: list[str] = Field(default_factory=list)  # prefixes frozen even if matched by `train`
    lr: float | None = Field(None, gt=0)  # overrides optim.lr for this stage
    backbone_lr: float | None = Field(None, gt=0)
    loss: dict[str, Any] = Field(default_factory=dict)  # loss overrides for this stage (e.g. aux weights)

    @model_validator(mode="before")
    @classmethod
    def _no_model_mode(cls, data: Any) -> Any:
        """`model_mode` did nothing and is gone; the `null` of older resolved configs (config.yaml) is dropped."""
        if not isinstance(data, dict) or "model_mode" not in data:
            return data
        if data["model_mode"] is not None:
            raise ValueError("model_mode was removed (no model has modes): a stage chooses what trains with its "
                             "train / freeze prefixes and its loss weights")
        return {k: v for k, v in data.items() if k != "model_mode"}


class TrainerConfig(StrictModel):
    """Lightning Trainer settings."""

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = Field(1, ge=1)
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU
    monitor: str = "val/exam_auc"
    monitor_mode: Literal["max", "min"] = "max"
    log_every_n_steps: int = Field(10, ge=1)
    max_steps_per_epoch: int | None = Field(None, ge=1)  # cap on batches per epoch (quick runs)
    max_steps: int = Field(-1, ge=-1)  # stop after this many optimiser steps in a stage (-1 = no cap)
    checkpoint_every_n_steps: int | None = Field(None, ge=1)  # also checkpoint mid-epoch (resume after a kill)
    progress_bar: bool = True
    deterministic: bool = True


class TrainConfig(StrictModel):
    """Everything `mammokit train` needs; written resolved into runs/NAME/config.yaml."""

    name: str = "run"
    runs_dir: str = "runs"
    seed: int = 0
    data: DataConfig = Field(default_factory=DataConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="all", epochs=2)], min_length=1)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)

    @model_validator(mode="after")
    def _one_input_size(self) -> TrainConfig:
        """The data section sets the input size; the model's `image_size` / `full_size` follow from it."""
        for key, want in input_sizes(self.data).items():
            given = self.model.kwargs.get(key)
            if given is not None and (want is None or [int(v) for v in given] != want):
                raise ValueError(f"model.kwargs.{key}={given} contradicts the data section ({key} = {want} from "
                                 f"data.input_size={list(self.data.input_size)}, data.full_scale="
                                 f"{self.data.full_scale}): leave it out, it follows from the data")
        self.model.kwargs = {**self.model.kwargs, **{k: v for k, v in input_sizes(self.data).items() if v}}
        return self


def input_sizes(data: DataConfig) -> dict[str, list[int] | None]:
    """The model's input sizes as the loader produces them: `image_size` = input_size, `full_size` = input_size ×
    full_scale (None without a separate full view)."""
    h, w = (int(v) for v in data.input_size)
    k = data.full_scale
    return {"image_size": [h, w], "full_size": [h * k, w * k] if k else None}
