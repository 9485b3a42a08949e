"""The model zoo: sizes against SPEC section 4, the Classifier contract, the registry."""
from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from trainables.models import MODELS, Classifier, ModelOutput, ModelSpec, create_model, list_models

# name: (params in millions at num_classes, MACs in millions at the test resolution, num_classes)
# CIFAR-style: SPEC section 4 (100 classes, 32x32). resnet20/32/56: He et al. (0.27M/0.46M/0.85M at
# 10 classes, + 64*90 for 100 classes). ImageNet-style: torchvision's published sizes (1000 classes,
# 224x224); MobileNetV1: 4.2M, 569M MACs (Howard et al. 2017).
REFERENCE = {
    "resnet8x4": (1.23, 177, 100),
    "resnet32x4": (7.43, 1083, 100),
    # resnet8 (one block per stage, 1x1-conv shortcuts), counted by hand: 83,892 params; MACs
    # 0.44M stem + 4.72M + 3.67M + 3.67M stages + 6.4K fc = 12.5M.
    "resnet8": (0.0839, 12.5, 100),
    "resnet20": (0.278, 40.8, 100),
    "resnet32": (0.473, 69.1, 100),
    "resnet56": (0.862, 125.8, 100),
    "resnet50_cifar": (23.7, 1298, 100),
    "vgg8": (3.97, 96, 100),
    "vgg13": (9.46, 285, 100),
    "wrn_40_1": (0.57, 83, 100),
    "wrn_40_2": (2.26, 328, 100),
    "shufflenetv1": (0.95, 39, 100),
    "mobilenetv2": (0.81, 6.5, 100),
    "resnet18": (11.69, 1814, 1000),
    "resnet34": (21.80, 3664, 1000),
    "resnet50": (25.56, 4089, 1000),
    "mobilenetv1": (4.23, 569, 1000),
}
PARAM_RTOL = 0.02
MAC_RTOL = 0.10

# stage shapes (channels, side) at 32x32 for the CIFAR-style pairs' models
STAGES_32 = {
    "resnet8x4": [(32, 32), (64, 32), (128, 16), (256, 8)],
    "resnet32x4": [(32, 32), (64, 32), (128, 16), (256, 8)],
    "resnet50_cifar": [(64, 32), (256, 32), (512, 16), (1024, 8), (2048, 4)],
    "vgg8": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)],
    "vgg13": [(64, 32), (128, 16), (256, 8), (512, 4), (512, 4)],
    "wrn_40_1": [(16, 32), (32, 16), (64, 8)],
    "wrn_40_2": [(32, 32), (64, 16), (128, 8)],
    "shufflenetv1": [(24, 32), (240, 16), (480, 8), (960, 4)],
    "mobilenetv2": [(16, 16), (12, 16), (16, 8), (48, 4), (160, 2), (1280, 2)],
}


def count_macs(model: nn.Module, x: torch.Tensor) -> tuple[ModelOutput, int]:
    """One forward pass of `forward_features`, counting conv and linear multiply-accumulates per sample."""
    total = 0

    def hook(mod: nn.Module, inp: tuple[torch.Tensor, ...], out: torch.Tensor) -> None:
        nonlocal total
        if isinstance(mod, nn.Conv2d):
            kh, kw = mod.kernel_size
            total += out[0].numel() * (mod.in_channels // mod.groups) * kh * kw
        else:
            total += mod.in_features * mod.out_features

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    try:
        out = model.forward_features(x)
    finally:
        for h in handles:
            h.remove()
    return out, total


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("a model constructor tried to download weights")

    monkeypatch.setattr(torch.hub, "load_state_dict_from_url", refuse)
    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)


def test_registry_covers_reference_table() -> None:
    assert set(MODELS) == set(REFERENCE)
    assert list_models() == list(MODELS)
    assert set(list_models("cifar")) | set(list_models("imagenet")) == set(MODELS)
    for name, spec in MODELS.items():
        assert isinstance(spec, ModelSpec) and spec.name == name
        assert spec.style in ("cifar", "imagenet")


def test_the_catalog_read_without_torch_is_the_registry() -> None:
    """model_catalog reads the @MODELS.register lines as written (the driver never imports torch): the
    same names, in the same order, with the same styles and learning rates as the imported registry."""
    from trainables.model_catalog import ModelInfo, _declared_models, model_catalog

    declared = dict(_declared_models())
    assert list(declared) == list(MODELS)
    for name, spec in MODELS.items():
        assert declared[name] == ModelInfo(name, spec.style, spec.student_lr), name
    assert model_catalog() == declared  # the registry is loaded here: read from it, the same


def test_the_catalog_refuses_a_registration_it_cannot_read_without_importing() -> None:
    import ast

    from trainables.model_catalog import _declared

    call = ast.parse('MODELS.register("net", style=STYLE_OF_SOMEWHERE, student_lr=0.05)').body[0].value
    with pytest.raises(ValueError, match="net.py, line 1: a @MODELS.register argument must be a literal"):
        _declared(call, "net", Path("net.py"), {"CIFAR_LR": 0.05})
    call = ast.parse('MODELS.register(style="cifar", student_lr=CIFAR_LR)').body[0].value
    assert _declared(call, "net", Path("net.py"), {"CIFAR_LR": 0.05}).name == "net"  # the function's name


def test_student_learning_rates() -> None:
    for name in list_models("cifar"):
        expected = 0.01 if name in ("shufflenetv1", "mobilenetv2") else 0.05
        assert MODELS[name].student_lr == expected, name
    for name in list_models("imagenet"):
        assert MODELS[name].student_lr == 0.2
    with pytest.raises(dataclasses.FrozenInstanceError):
        MODELS["vgg8"].student_lr = 1.0  # type: ignore[misc]


def test_unknown_architecture_and_bad_num_classes() -> None:
    with pytest.raises(ValueError, match=r"unknown architecture 'resnet9000' \(known: .*resnet8x4"):
        create_model("resnet9000", 100)
    for bad in (0, -3):
        with pytest.raises(ValueError):
            create_model("resnet20", bad)


@pytest.mark.parametrize("name", list(REFERENCE))
def test_model_contract(name: str) -> None:
    torch.manual_seed(0)
    params_m, macs_m, num_classes = REFERENCE[name]
    model = create_model(name, num_classes)
    assert isinstance(model, Classifier)
    assert isinstance(model.classifier, nn.Linear) and model.classifier.out_features == num_classes

    n_params = sum(p.numel() for p in model.parameters())
    assert n_params == pytest.approx(params_m * 1e6, rel=PARAM_RTOL), f"{name}: {n_params / 1e6:.3f}M params"

    style = MODELS[name].style
    side = 32 if style == "cifar" else 64  # ImageNet-style models: a small input keeps this fast
    model.eval()
    x = torch.randn(2, 3, side, side)
    with torch.no_grad():
        out, macs = count_macs(model, x)
        logits = model(x)
    if style == "cifar":
        assert macs == pytest.approx(macs_m * 1e6, rel=MAC_RTOL), f"{name}: {macs / 1e6:.1f}M MACs"
    else:  # MACs scale with the pixel count: compare the reference at 224 scaled down to 64
        assert macs == pytest.approx(macs_m * 1e6 * (side / 224) ** 2, rel=0.15), f"{name}: {macs / 1e6:.1f}M MACs"

    assert isinstance(out, ModelOutput)
    assert out.logits.shape == (2, num_classes)
    assert torch.equal(logits, out.logits)
    assert torch.equal(model.classifier(out.pooled), out.logits)
    assert out.pooled.shape == (2, model.classifier.in_features)
    assert len(out.stages) >= 3
    for f in out.stages:
        assert f.ndim == 4 and f.shape[0] == 2
    assert torch.equal(torch.flatten(F.adaptive_avg_pool2d(out.stages[-1], 1), 1), out.pooled)
    assert out.stages[-1].min() >= 0  # the pooled map is post-ReLU
    if name in STAGES_32:
        assert [(f.shape[1], f.shape[2]) for f in out.stages] == STAGES_32[name]
        assert all(f.shape[2] == f.shape[3] for f in out.stages)

    # checkpoint round trip: a fresh model with the saved state gives identical eval outputs
    torch.manual_seed(1)
    clone = create_model(name, num_classes)
    clone.load_state_dict(model.state_dict())
    clone.eval()
    with torch.no_grad():
        assert torch.equal(clone(x), logits)


@pytest.mark.parametrize("name", ["resnet8x4", "vgg8", "wrn_40_1", "shufflenetv1", "mobilenetv2"])
def test_cifar_models_at_64x64(name: str) -> None:
    model = create_model(name, 200).eval()
    with torch.no_grad():
        out = model.forward_features(torch.randn(2, 3, 64, 64))
    assert out.logits.shape == (2, 200)
    # every map doubles its side, except VGG's last block: the extra max-pool keeps it at 4x4
    expected = [(c, 2 * s) for c, s in STAGES_32[name]]
    if name == "vgg8":
        expected[-1] = (512, 4)
    assert [(f.shape[1], f.shape[2]) for f in out.stages] == expected
    assert torch.equal(torch.flatten(F.adaptive_avg_pool2d(out.stages[-1], 1), 1), out.pooled)
    assert torch.equal(model.classifier(out.pooled), out.logits)


@pytest.mark.parametrize("name", ["resnet8x4", "shufflenetv1", "mobilenetv2", "wrn_40_1", "vgg8"])
def test_channels_last_and_backward(name: str) -> None:
    torch.manual_seed(0)
    model = create_model(name, 10)
    x = torch.randn(4, 3, 32, 32)
    model.eval()
    with torch.no_grad():
        ref = model(x)
        model_cl = model.to(memory_format=torch.channels_last)
        got = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-4)

    model.train()
    out = model.forward_features(x.to(memory_format=torch.channels_last))
    loss = F.cross_entropy(out.logits, torch.tensor([0, 1, 2, 3])) + sum(f.mean() for f in out.stages)
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None]
    assert not missing, missing


def test_initialisation() -> None:
    model = create_model("resnet8x4", 100)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            assert torch.all(m.weight == 1) and torch.all(m.bias == 0)
    conv = model.conv1
    fan_out = conv.out_channels * conv.kernel_size[0] * conv.kernel_size[1]
    assert conv.weight.std().item() == pytest.approx((2.0 / fan_out) ** 0.5, rel=0.25)


def test_unknown_architecture_is_the_registry_error() -> None:
    from trainables.registry import UnknownNameError

    with pytest.raises(UnknownNameError, match=r"unknown architecture 'nope' \(known: resnet8x4, resnet32x4, "):
        create_model("nope", 10)
    assert "nope" not in MODELS and "vgg8" in MODELS


def test_every_architecture_registers_in_its_own_module() -> None:
    for name, spec in MODELS.items():
        assert spec.constructor.__module__.startswith("trainables.models."), name
        assert spec.constructor.__name__ == name, name


class _HookNet(Classifier):
    """A model written only from the hooks: forward_features comes from Classifier."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.layer1 = nn.Conv2d(4, 6, 3, stride=2, padding=1)
        self.set_head(6, num_classes)

    def forward_stem(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(self.conv(x))

    def stage_layers(self, x: torch.Tensor) -> list:
        return [self.layer1]

    def pre_pool(self, features: torch.Tensor) -> torch.Tensor:
        return F.relu(features)


def test_hooks_make_forward_features_and_a_test_may_patch_the_registry() -> None:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(MODELS, "hook_test_net", ModelSpec("hook_test_net", _HookNet, "cifar", 0.05))
        model = create_model("hook_test_net", 3)
        x = torch.randn(2, 3, 8, 8)
        out = model.forward_features(x)
        stem = F.relu(model.conv(x))
        last = F.relu(model.layer1(stem))
        assert [s.shape for s in out.stages] == [stem.shape, last.shape]
        assert torch.equal(out.stages[0], stem) and torch.equal(out.stages[1], last)
        assert torch.equal(out.pooled, last.mean((2, 3)))
        assert torch.equal(model(x), out.logits)
    assert "hook_test_net" not in MODELS
