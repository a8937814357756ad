"""Student and teacher networks, built by name.

The built-in names cover three families:

* ``cnn-tiny`` / ``cnn-small`` / ``cnn-teacher``: plain conv-BN-ReLU stacks sized so that a whole
  augmentation-policy search on Fashion-MNIST fits on a 2-core CPU (measured at batch 256 on 2 cores:
  cnn-tiny trains at roughly 10k img/s; cnn-teacher at roughly 2k img/s, 5k img/s in inference).
* CIFAR-style ResNets (He et al. 2016, "Deep Residual Learning for Image Recognition", Sec. 4.2): depth
  6n+2, a stride-1 3x3 stem and three stages of BasicBlocks. The ``x4`` variants and the 1x1-conv projection
  shortcuts follow the KD benchmarks of CRD (Tian et al. 2020, "Contrastive Representation Distillation")
  and mdistiller, so student/teacher pairs such as resnet32x4 -> resnet8x4 match the literature.
* Wide ResNets (Zagoruyko & Komodakis 2016, "Wide Residual Networks"): pre-activation blocks, depth 6n+4,
  widen factor k, dropout 0 as in the CRD pairs wrn-40-2 -> wrn-16-2.

``torchvision:NAME`` builds any torchvision classification model with random weights (never downloaded).

Every network ends in adaptive average pooling (to a fixed grid), so any ``image_size >= 8`` and any
channel count works,
and the output is always logits of shape (N, num_classes).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from augsearch.errors import UserError

TORCHVISION_PREFIX = "torchvision:"
MIN_IMAGE_SIZE = 8


def _init_weights(model: nn.Module) -> nn.Module:
    """Kaiming-normal convs (He et al. 2015, fan_out as in torchvision and CRD), unit-gamma BNs."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    return model


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    # No bias: every conv is followed by a BatchNorm, whose shift makes a conv bias redundant.
    return nn.Conv2d(cin, cout, kernel_size=3, stride=stride, padding=1, bias=False)


class PlainCNN(nn.Module):
    """A VGG-style stack (Simonyan & Zisserman 2015) of 3x3 conv-BN-ReLU and max-pooling, then a linear head.

    ``plan`` lists conv output widths, with ``"M"`` for a 2x2 max-pool. The features are average-pooled to a
    fixed ``grid`` x ``grid`` map before the head, so the head does not depend on the image size; a grid
    larger than 1 keeps where things are, which a tiny network cannot afford to throw away (global pooling,
    grid 1, cost cnn-tiny about 15 points of Fashion-MNIST accuracy after two epochs).
    """

    def __init__(self, in_channels: int, num_classes: int, plan: Sequence[int | str], grid: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                assert isinstance(item, int)
                layers += [_conv3x3(width, item), nn.BatchNorm2d(item), nn.ReLU(inplace=True)]
                width = item
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.fc = nn.Linear(width * grid * grid, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.features(x)), 1))


class BasicBlock(nn.Module):
    """Post-activation residual block of two 3x3 convs (He et al. 2016).

    Where the shape changes, the shortcut is a 1x1 conv + BN ("option B"), as in CRD's CIFAR ResNets; the
    paper's CIFAR models used zero-padding ("option A"), which costs ~1% fewer parameters.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for small images: stride-1 stem, three stages of n blocks, strides 1/2/2.

    ``widths`` is (stem, stage1, stage2, stage3): (16, 16, 32, 64) for He et al.'s resnet20/32/56 and
    (32, 64, 128, 256) for CRD's resnet8x4/resnet32x4. Keeping the stem at stride 1 (no 7x7 conv, no max-pool)
    is what lets the net see 28x28 or 32x32 inputs at full resolution.
    """

    def __init__(self, depth: int, widths: Sequence[int], in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        stem, *stages = widths
        self.stem = nn.Sequential(_conv3x3(in_channels, stem), nn.BatchNorm2d(stem), nn.ReLU(inplace=True))
        blocks: list[nn.Module] = []
        width = stem
        for i, out in enumerate(stages):
            for j in range(n):
                blocks.append(BasicBlock(width, out, stride=2 if i > 0 and j == 0 else 1))
                width = out
        self.layers = nn.Sequential(*blocks)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.pool(self.layers(self.stem(x))), 1))


class WideBlock(nn.Module):
    """Pre-activation wide basic block, BN-ReLU-conv twice (He et al. 2016b; Zagoruyko & Komodakis 2016).

    When the shape changes the 1x1 shortcut reads the pre-activated input, as in the WRN reference code.
    Dropout is omitted: the CRD/mdistiller WRN students and teachers use a drop rate of 0.
    """

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.shortcut: nn.Module | None = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, kernel_size=1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = F.relu(self.bn1(x))
        residual = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv2(F.relu(self.bn2(self.conv1(pre))))
        return out + residual


class WideResNet(nn.Module):
    """WRN-depth-k: a 16-channel stem, stages of width 16k/32k/64k with (depth-4)/6 blocks each, BN-ReLU."""

    def __init__(self, depth: int, widen: int, in_channels: int, num_classes: int) -> None:
        super().__init__()
        if (depth - 4) % 6:
            raise ValueError(f"WRN depth must be 6n+4, got {depth}")
        n = (depth - 4) // 6
        self.stem = _conv3x3(in_channels, 16)
        blocks: list[nn.Module] = []
        width = 16
        for i, out in enumerate((16 * widen, 32 * widen, 64 * widen)):
            for j in range(n):
                blocks.append(WideBlock(width, out, stride=2 if i > 0 and j == 0 else 1))
                width = out
        self.layers = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn(self.layers(self.stem(x))))
        return self.fc(torch.flatten(self.pool(out), 1))


_SMALL = (16, 16, 32, 64)
_X4 = (32, 64, 128, 256)

# name -> constructor(in_channels, num_classes); a literal table, nothing registers itself on import.
_BUILDERS: dict[str, Callable[[int, int], nn.Module]] = {
    "cnn-tiny": lambda c, k: PlainCNN(c, k, (8, "M", 16, "M"), grid=7),
    "cnn-small": lambda c, k: PlainCNN(c, k, (16, "M", 32, "M"), grid=7),
    "cnn-teacher": lambda c, k: PlainCNN(c, k, (24, "M", 48, 48, "M", 96), grid=3),
    "resnet8": lambda c, k: CifarResNet(8, _SMALL, c, k),
    "resnet20": lambda c, k: CifarResNet(20, _SMALL, c, k),
    "resnet32": lambda c, k: CifarResNet(32, _SMALL, c, k),
    "resnet56": lambda c, k: CifarResNet(56, _SMALL, c, k),
    "resnet8x4": lambda c, k: CifarResNet(8, _X4, c, k),
    "resnet32x4": lambda c, k: CifarResNet(32, _X4, c, k),
    "wrn-16-2": lambda c, k: WideResNet(16, 2, c, k),
    "wrn-40-2": lambda c, k: WideResNet(40, 2, c, k),
}


def model_names() -> tuple[str, ...]:
    """The built-in model names (``torchvision:NAME`` is accepted too but not listed here)."""
    return tuple(_BUILDERS)


def build_model(name: str, *, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """Build a randomly initialised net mapping (N, in_channels, H, W) images to (N, num_classes) logits.

    ``image_size`` is checked against the minimum the built-in nets support (three halvings must leave at
    least one pixel) and is passed to torchvision models that need it at construction (ViT, MaxViT).
    Raises :class:`UserError` for an unknown name or out-of-range sizes.
    """
    if in_channels < 1 or num_classes < 1:
        raise UserError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}")
    if image_size < MIN_IMAGE_SIZE:
        raise UserError(f"image_size must be >= {MIN_IMAGE_SIZE}, got {image_size}")
    if name.startswith(TORCHVISION_PREFIX):
        return _build_torchvision(name[len(TORCHVISION_PREFIX) :], in_channels, num_classes, image_size)
    builder = _BUILDERS.get(name)
    if builder is None:
        raise UserError(
            f"unknown model {name!r}; choose one of {', '.join(_BUILDERS)} or {TORCHVISION_PREFIX}NAME"
        )
    return _init_weights(builder(in_channels, num_classes))


def _build_torchvision(name: str, in_channels: int, num_classes: int, image_size: int) -> nn.Module:
    """A torchvision classifier with ``weights=None``; its first conv is rebuilt if ``in_channels != 3``."""
    import torchvision  # deferred: importing torchvision.models costs ~1 s and most runs never need it

    available = torchvision.models.list_models(module=torchvision.models)
    if name not in available:
        raise UserError(
            f"unknown torchvision model {name!r}; "
            "see torchvision.models.list_models(module=torchvision.models)"
        )
    kwargs: dict[str, object] = {}
    if name in ("googlenet", "inception_v3"):
        # Without this, training-mode forward returns a namedtuple with auxiliary logits, not a tensor.
        kwargs.update(aux_logits=False, init_weights=True)
    elif name.startswith("vit_"):
        kwargs["image_size"] = image_size
    elif name.startswith("maxvit_"):
        kwargs["input_size"] = (image_size, image_size)
    try:
        model = torchvision.models.get_model(name, weights=None, num_classes=num_classes, **kwargs)
    except (ValueError, AssertionError) as e:  # e.g. ViT patch size or MaxViT partition vs. image_size
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise UserError(
            f"torchvision model {name!r} cannot be built for {image_size}px images: {reason}"
        ) from e
    if in_channels != 3:
        _adapt_first_conv(model, in_channels)
    return model


def _adapt_first_conv(model: nn.Module, in_channels: int) -> None:
    """Swap the first Conv2d for a Kaiming-initialised copy of its settings taking ``in_channels`` inputs."""
    for path, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            new = nn.Conv2d(
                in_channels,
                module.out_channels,
                kernel_size=module.kernel_size,
                stride=module.stride,
                padding=module.padding,
                dilation=module.dilation,
                groups=module.groups,
                bias=module.bias is not None,
                padding_mode=module.padding_mode,
            )
            _init_weights(new)
            parent_path, _, attr = path.rpartition(".")
            setattr(model.get_submodule(parent_path), attr, new)
            return
    raise UserError(f"cannot adapt {type(model).__name__} to {in_channels} input channels: it has no Conv2d")
