"""AdamW parameter groups and the warmup + cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from torch import nn

from mammokit.training.optim import build_optimizer, param_groups, warmup_cosine_factor


class Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.global_net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4))
        self.view_embed = nn.Embedding(2, 4)
        self.head = nn.Linear(4, 1)


def test_no_decay_on_norms_biases_embeddings_and_backbone_lr() -> None:
    model = Tiny()
    groups = {g["name"]: g for g in param_groups(model, lr=1e-3, weight_decay=0.05, backbone_lr=1e-4)}
    ids = {name: {id(p) for p in g["params"]} for name, g in groups.items()}
    assert ids["backbone/decay"] == {id(model.global_net[0].weight)}
    assert ids["backbone/no_decay"] == {id(model.global_net[0].bias), id(model.global_net[1].weight),
                                        id(model.global_net[1].bias)}
    assert ids["head/decay"] == {id(model.head.weight)}
    assert ids["head/no_decay"] == {id(model.head.bias), id(model.view_embed.weight)}
    assert groups["backbone/decay"]["lr"] == 1e-4 and groups["head/decay"]["lr"] == 1e-3
    assert all(g["weight_decay"] == 0 for n, g in groups.items() if n.endswith("no_decay"))


def test_frozen_parameters_are_left_out_and_all_frozen_is_an_error() -> None:
    model = Tiny()
    model.global_net.requires_grad_(False)
    names = {g["name"] for g in param_groups(model, lr=1e-3, weight_decay=0.0)}
    assert names == {"head/decay", "head/no_decay"}
    model.requires_grad_(False)
    with pytest.raises(ValueError, match="no trainable parameters"):
        param_groups(model, lr=1e-3, weight_decay=0.0)


def test_warmup_then_cosine() -> None:
    total, warmup = 100, 10
    factors = [warmup_cosine_factor(s, total, warmup) for s in range(total + 1)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == pytest.approx(1.0)
    assert factors[10] == pytest.approx(1.0)
    assert factors[55] == pytest.approx(0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * 0.5)))
    assert factors[100] == pytest.approx(0.01)
    assert all(a >= b for a, b in itertools.pairwise(factors[10:]))


def test_scheduler_drives_every_group_with_its_own_base_lr() -> None:
    model = Tiny()
    opt, sched = build_optimizer(model, lr=1e-3, weight_decay=0.0, backbone_lr=1e-4, total_steps=20, warmup_steps=4)
    lrs = []
    for _ in range(20):
        opt.step()
        sched.step()
        lrs.append({g["name"]: g["lr"] for g in opt.param_groups})
    assert lrs[2]["head/decay"] == pytest.approx(1e-3 * warmup_cosine_factor(3, 20, 4))
    assert lrs[2]["backbone/decay"] == pytest.approx(1e-4 * warmup_cosine_factor(3, 20, 4))
    assert torch.isfinite(torch.tensor(lrs[-1]["head/decay"]))
