"""Tests for augsearch.models: shapes, gradients, parameter counts, layouts and error messages."""

from __future__ import annotations

import pytest
import torch

from augsearch.errors import UserError
from augsearch.models import build_model, model_names

EXPECTED_NAMES = {
    "cnn-tiny",
    "cnn-small",
    "cnn-teacher",
    "resnet8",
    "resnet20",
    "resnet32",
    "resnet56",
    "resnet8x4",
    "resnet32x4",
    "wrn-16-2",
    "wrn-40-2",
}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def build(name: str, channels: int = 1, classes: int = 10, size: int = 28) -> torch.nn.Module:
    return build_model(name, in_channels=channels, num_classes=classes, image_size=size)


def test_model_names() -> None:
    names = model_names()
    assert isinstance(names, tuple)
    assert set(names) == EXPECTED_NAMES
    assert not any(n.startswith("torchvision:") for n in names)


@pytest.mark.parametrize("name", sorted(EXPECTED_NAMES))
@pytest.mark.parametrize(("channels", "size"), [(1, 28), (3, 32), (1, 32), (3, 28), (3, 20), (1, 8)])
def test_forward_backward(name: str, channels: int, size: int) -> None:
    torch.manual_seed(0)
    model = build(name, channels=channels, classes=7, size=size).train()
    x = torch.randn(2, channels, size, size)
    out = model(x)
    assert out.shape == (2, 7)
    assert torch.isfinite(out).all()
    out.sum().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None for g in grads)
    assert all(torch.isfinite(g).all() for g in grads)


def test_parameter_count_order() -> None:
    p = {name: n_params(build(name)) for name in EXPECTED_NAMES}
    assert p["cnn-tiny"] < p["cnn-small"] < p["cnn-teacher"]
    assert p["resnet8"] < p["resnet20"] < p["resnet32"] < p["resnet56"]
    assert p["resnet8x4"] > p["resnet8"]
    assert p["resnet32x4"] > p["resnet8x4"]
    assert p["wrn-40-2"] > p["wrn-16-2"]


@pytest.mark.parametrize(
    ("name", "classes", "expected"),
    [
        ("resnet20", 10, 0.27e6),  # He et al. 2016, Table 6
        ("resnet56", 10, 0.86e6),
        ("resnet8x4", 100, 1.23e6),  # CRD (Tian et al. 2020), CIFAR-100
        ("resnet32x4", 100, 7.43e6),
        ("wrn-16-2", 100, 0.70e6),
        ("wrn-40-2", 100, 2.26e6),
    ],
)
def test_known_parameter_counts(name: str, classes: int, expected: float) -> None:
    count = n_params(build(name, channels=3, classes=classes, size=32))
    assert abs(count - expected) / expected < 0.02, count


def test_cnn_tiny_architecture() -> None:
    model = build("cnn-tiny")
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    assert [(c.in_channels, c.out_channels) for c in convs] == [(1, 8), (8, 16)]
    assert all(c.bias is None and c.kernel_size == (3, 3) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.modules()) == 2
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    assert [(lin.in_features, lin.out_features) for lin in linears] == [(16 * 7 * 7, 10)]  # a 7x7 grid head


def test_cnn_teacher_architecture() -> None:
    convs = [m for m in build("cnn-teacher").modules() if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [24, 48, 48, 96]


@pytest.mark.parametrize("name", ["resnet20", "wrn-16-2", "cnn-tiny"])
def test_channels_last_matches_contiguous(name: str) -> None:
    torch.manual_seed(0)
    model = build(name, channels=3, size=32).eval()
    x = torch.randn(4, 3, 32, 32)
    with torch.no_grad():
        ref = model(x)
        out = model(x.to(memory_format=torch.channels_last))
        model_cl = model.to(memory_format=torch.channels_last)
        out_cl = model_cl(x.to(memory_format=torch.channels_last))
    torch.testing.assert_close(out, ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(out_cl, ref, rtol=1e-4, atol=1e-5)


def test_bf16_autocast() -> None:
    model = build("resnet8", channels=1, size=28).train()
    x = torch.randn(2, 1, 28, 28).to(memory_format=torch.channels_last)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert out.shape == (2, 10)
    out.float().sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_seeded_construction_is_deterministic() -> None:
    torch.manual_seed(123)
    a = build("resnet8")
    torch.manual_seed(123)
    b = build("resnet8")
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb)
    torch.manual_seed(124)
    c = build("resnet8")
    assert not torch.equal(a.fc.weight, c.fc.weight)


def test_torchvision_resnet18_one_channel() -> None:
    model = build("torchvision:resnet18", channels=1, classes=5, size=32)
    first = model.conv1
    assert first.in_channels == 1
    assert (first.out_channels, first.kernel_size, first.stride) == (64, (7, 7), (2, 2))
    out = model(torch.randn(2, 1, 32, 32))
    assert out.shape == (2, 5)
    out.sum().backward()


def test_torchvision_three_channels_untouched() -> None:
    model = build("torchvision:resnet18", channels=3, classes=5, size=32)
    assert model.conv1.in_channels == 3


def one_line_user_error(name: str, **kwargs: int) -> str:
    args = {"in_channels": 1, "num_classes": 10, "image_size": 28, **kwargs}
    with pytest.raises(UserError) as info:
        build_model(name, **args)
    message = str(info.value)
    assert message and "\n" not in message
    return message


def test_unknown_torchvision_name() -> None:
    message = one_line_user_error("torchvision:not_a_model")
    assert "not_a_model" in message
    assert "list_models" in message


def test_torchvision_detection_model_rejected() -> None:
    # Only classification models (torchvision.models, not .detection/.segmentation) are accepted.
    assert "fasterrcnn_resnet50_fpn" in one_line_user_error("torchvision:fasterrcnn_resnet50_fpn")


def test_unknown_model_name() -> None:
    message = one_line_user_error("resnet9000")
    assert "'resnet9000'" in message
    assert "cnn-tiny" in message and "wrn-40-2" in message
    assert "torchvision:NAME" in message


@pytest.mark.parametrize(
    "kwargs", [{"image_size": 7}, {"in_channels": 0}, {"num_classes": 0}], ids=["size", "channels", "classes"]
)
def test_bad_sizes(kwargs: dict[str, int]) -> None:
    one_line_user_error("cnn-tiny", **kwargs)
