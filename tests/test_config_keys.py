"""Training config keys either do what they say or are refused: `data.mixup` / `data.cutmix` reach the loss,
`model_mode` is gone, a `freeze:` prefix that matches nothing is an error, and the input size has one source."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import lightning as L
import pytest
import torch
from pydantic import ValidationError
from torch import nn

from mammokit.config import ConfigError, load_config
from mammokit.demo import DEMO_CONFIG
from mammokit.errors import InvalidInputError
from mammokit.training.config import TrainConfig
from mammokit.training.module import MammoModule
from mammokit.training.run import train


class RecordingLoss(nn.Module):
    """The module's own loss, noting the label targets it is given in training steps."""

    def __init__(self, loss: nn.Module, seen: list[torch.Tensor], owner: L.LightningModule) -> None:
        super().__init__()
        self.loss, self.seen, self.owner = loss, seen, [owner]

    def forward(self, outputs: dict[str, Any], targets: dict[str, torch.Tensor]) -> Any:
        if self.owner[0].training:
            self.seen.append(torch.cat([targets["breast_labels"].flatten(), targets["exam_label"].flatten()]))
        return self.loss(outputs, targets)


class SeeLossTargets(L.Callback):
    def __init__(self) -> None:
        self.seen: list[torch.Tensor] = []

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.loss_fn = RecordingLoss(pl_module.loss_fn, self.seen, pl_module)


@pytest.mark.parametrize(("mix", "soft"), [({}, False), ({"mixup": 0.4}, True), ({"cutmix": 1.0}, True)])
def test_batch_mixing_reaches_the_loss(tiny_config, mix: dict[str, float], soft: bool) -> None:
    spy = SeeLossTargets()
    cfg = tiny_config(name=f"mix-{'-'.join(mix) or 'off'}", data={"batch_size": 5, **mix},
                      stages=[{"name": "all", "epochs": 1}], trainer={"max_steps": 2})
    train(cfg, callbacks=[spy])
    targets = torch.cat(spy.seen)
    known = targets[~torch.isnan(targets)]
    assert len(spy.seen) == 2 and known.numel() > 0
    fractional = ((known > 0) & (known < 1)).any().item()
    assert fractional == soft, known.tolist()
    assert ((known >= 0) & (known <= 1)).all()


def test_batch_mix_keys_inside_augment_are_refused(tiny_config) -> None:
    with pytest.raises(ValidationError, match=r"data\.mixup"):
        tiny_config(data={"augment": {"mix": "mixup", "p_mix": 1.0}})
    with pytest.raises(ValidationError, match="greater than or equal to 0"):
        tiny_config(data={"mixup": -0.1})


def test_model_mode_is_refused_with_a_reason() -> None:
    with pytest.raises(ConfigError, match=r"stages\.0[\s\S]*model_mode was removed"):
        load_config(TrainConfig, DEMO_CONFIG, ["stages.0.model_mode=global"])
    # the resolved config.yaml of an older run holds `model_mode: null` in every stage: it still loads (to resume)
    old = load_config(TrainConfig, DEMO_CONFIG, ["stages.0.model_mode=null", "stages.1.model_mode=null"])
    assert old.stages == load_config(TrainConfig, DEMO_CONFIG).stages


def test_a_freeze_prefix_matching_nothing_stops_training_before_it_starts(tiny_config) -> None:
    cfg = tiny_config(stages=[{"name": "a", "epochs": 1, "freeze": ["encoder.local_net"]},
                              {"name": "b", "epochs": 1, "freeze": ["encoder.locl_net"]}])
    with pytest.raises(InvalidInputError) as err:
        train(cfg)
    message = str(err.value)
    assert "stages[1] (b)" in message and "'encoder.locl_net'" in message
    assert "did you mean 'encoder.local_net'" in message and "encoder.global_net" in message
    assert not list(Path(cfg.runs_dir).glob("*/stages/*/checkpoints/*.ckpt"))  # nothing trained


def test_train_prefixes_are_checked_too(tiny_config) -> None:
    kwargs = tiny_config().model.kwargs
    with pytest.raises(InvalidInputError, match="train prefix 'head'"):
        MammoModule("multiview_gmic", kwargs, trainable=["head"])
    module = MammoModule("multiview_gmic", kwargs, trainable=["encoder.global_net"],
                         frozen=["encoder.global_net.model.stem"])
    trains = {n for n, p in module.model.named_parameters() if p.requires_grad}
    assert trains and all(n.startswith("encoder.global_net.") and ".stem" not in n for n in trains)


def test_the_input_size_has_one_source(tiny_config) -> None:
    cfg = tiny_config(data={"input_size": [96, 60], "full_scale": 3},
                      model={"kwargs": {"preset": "cpu", "patch_size": 16, "num_patches": 2}})
    assert cfg.model.kwargs["image_size"] == [96, 60] and cfg.model.kwargs["full_size"] == [288, 180]
    model = MammoModule(cfg.model.name, cfg.model.kwargs).model
    assert tuple(model.example_input(1)["images"].shape[-2:]) == (96, 60)
    assert tuple(model.example_input(1)["full"].shape[-2:]) == (288, 180)
    no_full = tiny_config(data={"full_scale": 0}, model={"kwargs": {"preset": "cpu"}})
    assert "full_size" not in no_full.model.kwargs
    # the resolved config (written to runs/NAME/config.yaml) validates again
    assert TrainConfig.model_validate(cfg.model_dump(mode="json")).model.kwargs == cfg.model.kwargs
    for kwargs, key in (({"image_size": [64, 48]}, "image_size"), ({"full_size": [64, 40]}, "full_size")):
        with pytest.raises(ValidationError, match=rf"model\.kwargs\.{key}"):
            tiny_config(model={"kwargs": {"preset": "cpu", **kwargs}})
    with pytest.raises(ValidationError, match="full_size"):
        tiny_config(data={"full_scale": 0}, model={"kwargs": {"preset": "cpu", "full_size": [128, 80]}})


def test_the_demo_config_derives_the_same_sizes_it_always_used() -> None:
    cfg = load_config(TrainConfig, DEMO_CONFIG)
    assert cfg.data.input_size == (320, 200) and cfg.data.full_scale == 2
    assert cfg.model.kwargs["image_size"] == [320, 200] and cfg.model.kwargs["full_size"] == [640, 400]
    assert cfg.data.mixup == cfg.data.cutmix == 0.0  # the demo trains without batch mixing, as before
