"""The `mammokit train` configuration (YAML + `--set key=value` overrides), validated by pydantic."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field

from mammokit.config import StrictModel


class DataConfig(StrictModel):
    """What the loader feeds the model."""

    store: str = "demo/store"
    level: Literal["exam", "breast", "view"] = "exam"  # view: single-view models (global_only, gmic)
    input_size: tuple[int, int] = (256, 160)  # global input (H, W) per view, canonical frame
    full_scale: int = 4  # the local pathway's view is input_size × full_scale (0 = no separate full view)
    normalization: Literal["image", "view_group"] = "image"
    train_split: str = "train"
    val_split: str = "val"
    batch_size: int = 4
    num_workers: int = 0
    positive_ratio: float = 0.5  # fraction of positive cases per epoch at the start (case-level sampling)
    positive_ratio_end: float | None = None  # linearly scheduled to this by the last epoch (None: constant)
    augment: dict[str, Any] = Field(default_factory=dict)  # passed to mammokit.data.augment.build_augment
    mixup: float = 0.0
    cutmix: float = 0.0


class ModelConfig(StrictModel):
    """A registered model and its keyword overrides (None values are dropped, so defaults stay the model's)."""

    name: str = "multiview_gmic"
    kwargs: dict[str, Any] = Field(default_factory=dict)


class LossConfig(StrictModel):
    """Keyword arguments of `MammoLoss`, and the optional lesion-box saliency supervision weight."""

    kwargs: dict[str, Any] = Field(default_factory=dict)
    box_saliency: float = 0.0  # > 0: saliency maps also learn "look here" from annotated lesion boxes


class OptimConfig(StrictModel):
    """AdamW, warmup + cosine, clipping, accumulation, EMA."""

    lr: float = 1e-3
    backbone_lr: float | None = None
    weight_decay: float = 1e-4
    warmup_fraction: float = 0.1
    grad_clip: float | None = 1.0
    accumulate: int = 1
    ema_decay: float | None = None


class StageConfig(StrictModel):
    """One curriculum stage: which parts train, for how long, at what learning rate."""

    name: str
    epochs: int = 1
    train: list[str] = Field(default_factory=lambda: ["all"])  # parameter-name prefixes to train ("all" = all)
    freeze: list[str] = Field(default_factory=list)  # prefixes frozen even if matched by `train`
    lr: float | None = None  # overrides optim.lr for this stage
    backbone_lr: float | None = None
    model_mode: str | None = None  # passed to model.set_mode() when the model has one (e.g. "global")
    loss: dict[str, Any] = Field(default_factory=dict)  # loss overrides for this stage (e.g. aux weights)


class TrainerConfig(StrictModel):
    """Lightning Trainer settings."""

    accelerator: str = "auto"
    devices: int | str = 1
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"  # auto: bf16-mixed on GPUs that support it, 16-mixed on older GPUs, 32-true on CPU
    monitor: str = "val/exam_auc"
    monitor_mode: Literal["max", "min"] = "max"
    log_every_n_steps: int = 10
    max_steps_per_epoch: int | None = None  # cap on batches per epoch (quick runs)
    max_steps: int = -1  # stop after this many optimiser steps in a stage (-1 = no cap)
    checkpoint_every_n_steps: int | None = None  # also checkpoint mid-epoch (resume after a kill)
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
    stages: list[StageConfig] = Field(default_factory=lambda: [StageConfig(name="all", epochs=2)])
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
