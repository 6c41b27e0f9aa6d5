"""Backbone factory and the three weight sources, each on weight files the tests build themselves."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import timm
import torch
from safetensors.torch import save_file

from mammokit.models import WeightLoadError, create_backbone, load_weights, map_radimagenet_keys
from mammokit.models.backbone import Backbone


def _rand(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(("name", "channels"), [("resnet18", 512), ("efficientnet_b0", 1280),
                                               ("convnext_atto", 320), ("mammokit_resnet22n", 256)])
def test_backbone_gives_feature_map_of_one_channel_input(name: str, channels: int) -> None:
    net = create_backbone(name).eval()
    size = 128 if name == "mammokit_resnet22n" else 64
    y = net(_rand(2, 1, size, size))
    assert y.shape == (2, channels, size // net.reduction, size // net.reduction)
    assert net.num_features == channels


def test_unknown_backbone_name_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="not_a_net"):
        create_backbone("not_a_net")


@pytest.mark.parametrize("fmt", ["safetensors", "pt", "pt_wrapped"])
def test_file_weights_reproduce_the_source_model(tmp_path, fmt: str) -> None:
    torch.manual_seed(1)
    source = create_backbone("resnet18").eval()
    state = source.model.state_dict()
    if fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    else:
        path = tmp_path / "w.pt"
        obj = {"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3} if fmt == "pt_wrapped" else state
        torch.save(obj, path)
    torch.manual_seed(2)
    target = create_backbone("resnet18").eval()
    x = _rand(1, 1, 64, 64)
    assert not torch.allclose(target(x), source(x))
    loaded = create_backbone("resnet18", pretrained=f"file:{path}").eval()
    torch.testing.assert_close(loaded(x), source(x), rtol=0, atol=0)


def test_rgb_checkpoint_is_summed_into_one_channel_stem(tmp_path) -> None:
    torch.manual_seed(3)
    rgb = timm.create_model("resnet18", in_chans=3, num_classes=0, global_pool="").eval()
    path = tmp_path / "rgb.safetensors"
    save_file({k: v.contiguous() for k, v in rgb.state_dict().items()}, str(path))
    gray = create_backbone("resnet18", pretrained=f"file:{path}").eval()
    torch.testing.assert_close(gray.model.conv1.weight, rgb.conv1.weight.sum(dim=1, keepdim=True))
    x = _rand(1, 1, 64, 64)
    # conv(sum_c W_c, x) == sum_c conv(W_c, x): the 1-channel model equals the RGB model on a grey image
    torch.testing.assert_close(gray(x), rgb.forward_features(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)


def test_strict_loading_lists_mismatched_keys(tmp_path) -> None:
    state = create_backbone("resnet18").model.state_dict()
    state.pop("layer4.1.bn2.weight")
    state["extra.weight"] = torch.zeros(3)
    path = tmp_path / "partial.pt"
    torch.save(state, path)
    with pytest.raises(WeightLoadError, match=r"layer4\.1\.bn2\.weight.*extra\.weight"):
        create_backbone("resnet18", pretrained=f"file:{path}")
    model = timm.create_model("resnet18", in_chans=1, num_classes=0, global_pool="")
    missing, unexpected = load_weights(model, f"file:{path}", strict=False)
    assert missing == ["layer4.1.bn2.weight"] and unexpected == ["extra.weight"]
    torch.testing.assert_close(model.layer1[0].conv1.weight, state["layer1.0.conv1.weight"])


def test_bad_weight_files_raise_clear_errors(tmp_path) -> None:
    with pytest.raises(WeightLoadError, match="does not exist"):
        create_backbone("resnet18", pretrained=f"file:{tmp_path / 'nope.pt'}")
    wrong = create_backbone("resnet34").model.state_dict()
    wrong["layer1.0.conv1.weight"] = torch.zeros(64, 64, 5, 5)
    path = tmp_path / "shape.pt"
    torch.save({k: v for k, v in wrong.items() if k.startswith("layer1.0.")}, path)
    with pytest.raises(WeightLoadError, match=r"layer1\.0\.conv1\.weight: file \(64, 64, 5, 5\)"):
        create_backbone("resnet18", pretrained=f"file:{path}", strict=False)
    with pytest.raises(WeightLoadError, match="expected 'timm:<tag>'"):
        create_backbone("resnet18", pretrained="hub:foo")


def _radimagenet_names(arch: str, key: str) -> str:
    """The key a RadImageNet checkpoint uses: nn.Sequential(*torchvision_model.children()[:-1]) as `backbone`."""
    if arch == "densenet121":
        return "backbone.0." + key[len("features."):]
    head, rest = key.split(".", 1)
    index = {"conv1": 0, "bn1": 1, "layer1": 4, "layer2": 5, "layer3": 6, "layer4": 7}[head]
    return f"backbone.{index}.{rest}"


@pytest.mark.parametrize("arch", ["resnet50", "densenet121"])
def test_radimagenet_checkpoint_maps_onto_timm(tmp_path, arch: str) -> None:
    torch.manual_seed(4)
    reference = timm.create_model(arch, in_chans=3, num_classes=0, global_pool="").eval()
    state = {_radimagenet_names(arch, k): v for k, v in reference.state_dict().items()}
    assert map_radimagenet_keys(state, arch).keys() == reference.state_dict().keys()
    path = tmp_path / f"RadImageNet-{arch}.pt"
    torch.save(state, path)
    net = create_backbone(arch, pretrained=f"radimagenet:{path}").eval()
    x = _rand(1, 1, 64, 64)
    torch.testing.assert_close(net(x), reference.forward_features(x.repeat(1, 3, 1, 1)), rtol=1e-4, atol=1e-4)
    with pytest.raises(WeightLoadError, match="ResNet-50 and DenseNet-121"):
        create_backbone("resnet18", pretrained=f"radimagenet:{path}")


def test_timm_source_offline_names_the_tag_and_the_file_alternative() -> None:
    code = ("from mammokit.models import create_backbone\n"
            "try:\n    create_backbone('resnet18', pretrained='timm:a1_in1k')\n"
            "except Exception as e:\n    print(type(e).__name__, e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120).stdout
    assert out.startswith("WeightLoadError") and "resnet18.a1_in1k" in out and "file:" in out


def test_gradient_checkpointing_gives_same_output_and_gradients() -> None:
    torch.manual_seed(5)
    plain = create_backbone("resnet18")
    ckpt = create_backbone("resnet18", grad_checkpointing=True)
    ckpt.load_state_dict(plain.state_dict())
    assert ckpt.grad_checkpointing and not plain.grad_checkpointing
    x = _rand(2, 1, 64, 64)
    ya, yb = plain(x), ckpt(x)
    torch.testing.assert_close(ya, yb)
    ya.square().sum().backward()
    yb.square().sum().backward()
    torch.testing.assert_close(plain.model.conv1.weight.grad, ckpt.model.conv1.weight.grad, rtol=1e-4, atol=1e-5)


def _plain_attributes(module: torch.nn.Module) -> dict:
    return {k: v for k, v in vars(module).items() if not isinstance(v, dict)}


def test_token_backbone_forward_is_pure_and_traces() -> None:
    """A ViT's forward_features gives tokens; the backbone decides that when built, not on its first forward (which
    made forward mutate the module, so a trace recorded one path and its check run took the other)."""
    net = create_backbone("vit_tiny_patch16_224", img_size=64).eval()
    before = _plain_attributes(net)
    x = _rand(2, 1, 64, 64)
    with torch.no_grad():
        first, second = net(x), net(x)
    assert _plain_attributes(net) == before
    assert first.shape == (2, 192, 4, 4)
    torch.testing.assert_close(second, first, rtol=0, atol=0)
    traced = torch.jit.trace(net, x)  # check_trace re-runs the module and compares the graphs
    torch.testing.assert_close(traced(x), first)


class _NoMeta(torch.nn.Module):
    """A timm-like feature extractor whose forward cannot run on the meta device (it reads a value)."""

    num_features = 4

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 4, 3, stride=2, padding=1)
        self.bn = torch.nn.BatchNorm2d(4)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) * (1.0 + 0.0 * x.mean().item())


def test_feature_probe_falls_back_to_a_real_batch_and_leaves_the_model_as_it_was() -> None:
    model = _NoMeta()
    stats = {k: v.clone() for k, v in model.bn.state_dict().items()}
    net = Backbone(model)
    assert not net.tokens and model.training
    for key, value in model.bn.state_dict().items():
        assert torch.equal(value, stats[key]), key  # the probe ran in eval mode: no running statistics moved
    assert net(_rand(2, 1, 16, 16)).shape == (2, 4, 8, 8)
