"""ResNet (He et al., 2016) with torchvision's module structure, so its state_dict keys and
shapes are torchvision's: conv1, bn1, layer1.0.conv1, layer2.0.downsample.1.running_var, fc.

A residual block is forward code over its layers (`npconv.nn.Module`); the sum with the
shortcut is a recorded `nn.add`, which writes into the block's own batch-norm output, and the
ReLUs run in place, so a block adds no activation buffers beyond its convolutions' outputs.

>>> import numpy as np
>>> from npconv import models
>>> model = models.resnet18(num_classes=10, width=8, rng=np.random.default_rng(0))
>>> model.forward(np.zeros((2, 32, 32, 3), np.float32)).shape
(2, 10)
>>> model.state_dict()["layer2.0.downsample.0.weight"].shape         # PyTorch's (F, C, kh, kw)
(16, 8, 1, 1)
"""

from __future__ import annotations

from npconv import _args
from npconv.models._common import check_builder_args, check_positive, init_convolutions
from npconv.nn import combine
from npconv.nn import layers as L
from npconv.nn.module import Module, Sequential

__all__ = ["BasicBlock", "Bottleneck", "ResNet", "resnet18", "resnet34", "resnet50"]


def _conv(c, f, k, stride, fmt, dtype, groups=1):
    """torchvision's conv3x3 / conv1x1: padding k // 2, no bias (a batch norm follows)."""
    return L.Conv2d(c, f, k, stride=stride, padding=k // 2, groups=groups, bias=False,
                    data_format=fmt, dtype=dtype, init="zeros")


class _Block(Module):
    """What BasicBlock and Bottleneck share: the arguments (config), the shortcut's
    `downsample` (1x1 convolution and batch norm, or None), the residual sum and the ReLU."""

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int, downsample: bool,
                 data_format: str, dtype) -> None:
        super().__init__()
        self.kw = dict(in_channels=in_channels, channels=channels, stride=stride,
                       downsample=downsample, data_format=data_format, dtype=dtype)

    def config(self) -> dict:
        return dict(self.kw)

    def _shortcut(self) -> Sequential | None:
        """The 1x1 convolution and batch norm of the shortcut (keys downsample.0, .1), or
        None; assigned last, so that the keys come in torchvision's order."""
        kw = self.kw
        if not kw["downsample"]:
            return None
        return Sequential(
            _conv(kw["in_channels"], kw["channels"] * self.expansion, 1, kw["stride"],
                  kw["data_format"], kw["dtype"]),
            L.BatchNorm2d(kw["channels"] * self.expansion, data_format=kw["data_format"],
                          dtype=kw["dtype"]))

    def _merge(self, out, x):
        """relu(out + x), x through downsample when there is one."""
        identity = x if self.downsample is None else self.downsample(x)
        return self.relu(combine.add(out, identity, inplace=True))


class BasicBlock(_Block):
    """Two 3x3 convolutions and a shortcut: relu(bn2(conv2(relu(bn1(conv1(x))))) + x), with x
    through `downsample` (1x1 convolution and batch norm) when `downsample` is True.

    x (N, H, W, in_channels) -> (N, ceil(H / stride), ceil(W / stride), channels).
    """

    expansion = 1

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *,
                 downsample: bool = False, data_format: str = "channels_last",
                 dtype="float32") -> None:
        super().__init__(in_channels, channels, stride, downsample, data_format, dtype)
        fmt = data_format
        self.conv1 = _conv(in_channels, channels, 3, stride, fmt, dtype)
        self.bn1 = L.BatchNorm2d(channels, data_format=fmt, dtype=dtype)
        self.relu = L.ReLU(inplace=True)
        self.conv2 = _conv(channels, channels, 3, 1, fmt, dtype)
        self.bn2 = L.BatchNorm2d(channels, data_format=fmt, dtype=dtype)
        self.downsample = self._shortcut()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        return self._merge(self.bn2(self.conv2(out)), x)


class Bottleneck(_Block):
    """1x1 (reduce), 3x3 (stride), 1x1 (expand by 4) convolutions and a shortcut
    (torchvision's ResNet v1.5: the stride sits on the 3x3).

    x (N, H, W, in_channels) -> (N, ceil(H / stride), ceil(W / stride), 4 * channels).
    """

    expansion = 4

    def __init__(self, in_channels: int, channels: int, stride: int = 1, *,
                 downsample: bool = False, data_format: str = "channels_last",
                 dtype="float32") -> None:
        super().__init__(in_channels, channels, stride, downsample, data_format, dtype)
        fmt = data_format
        self.conv1 = _conv(in_channels, channels, 1, 1, fmt, dtype)
        self.bn1 = L.BatchNorm2d(channels, data_format=fmt, dtype=dtype)
        self.conv2 = _conv(channels, channels, 3, stride, fmt, dtype)
        self.bn2 = L.BatchNorm2d(channels, data_format=fmt, dtype=dtype)
        self.conv3 = _conv(channels, channels * 4, 1, 1, fmt, dtype)
        self.bn3 = L.BatchNorm2d(channels * 4, data_format=fmt, dtype=dtype)
        self.relu = L.ReLU(inplace=True)
        self.downsample = self._shortcut()

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self._merge(self.bn3(self.conv3(out)), x)


_BLOCKS = {"basic": BasicBlock, "bottleneck": Bottleneck}


class ResNet(Module):
    """torchvision's ResNet: a 7x7 stride-2 stem, a 3x3 stride-2 max pool, four stages of
    `layers[i]` blocks of width * 2^i channels (strides 1, 2, 2, 2), a global average pool and
    a Linear head. Any input size (at least 1x1 after the five halvings is not required: the
    pool is adaptive). Use the builders (`resnet18`, `resnet50`, ...).

    Initialization as torchvision's: convolutions kaiming_normal(fan_out), batch norms 1 and
    0 (with zero_init_residual, each block's last batch-norm weight 0), the head PyTorch's
    Linear default.
    """

    def __init__(self, block: str = "basic", layers=(2, 2, 2, 2), num_classes: int = 1000,
                 in_channels: int = 3, *, width: int = 64, zero_init_residual: bool = False,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        dtype = check_builder_args(num_classes, in_channels, data_format, dtype, width=width)
        if block not in _BLOCKS:
            raise ValueError(f"`block` must be one of {tuple(_BLOCKS)}; got {block!r}")
        layers = tuple(layers) if isinstance(layers, (tuple, list)) else layers
        if not isinstance(layers, tuple) or len(layers) != 4:
            raise TypeError(f"`layers` must be 4 block counts, one per stage; got {layers!r}")
        check_positive(**{f"layers[{i}]": n for i, n in enumerate(layers)})
        self.kw = dict(block=block, layers=layers, num_classes=num_classes,
                       in_channels=in_channels, width=width,
                       zero_init_residual=_args.check_flag(zero_init_residual,
                                                             "zero_init_residual"),
                       data_format=data_format, dtype=dtype)
        fmt, cls = data_format, _BLOCKS[block]
        self.conv1 = L.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False,
                              data_format=fmt, dtype=dtype, init="zeros")
        self.bn1 = L.BatchNorm2d(width, data_format=fmt, dtype=dtype)
        self.relu = L.ReLU(inplace=True)
        self.maxpool = L.MaxPool2d(3, stride=2, padding=1, data_format=fmt)
        c = width
        for i, n in enumerate(layers):
            stage, c = self._stage(cls, c, width * 2**i, n, 1 if i == 0 else 2, fmt, dtype)
            setattr(self, f"layer{i + 1}", stage)
        self.avgpool = L.AdaptiveAvgPool2d((1, 1), data_format=fmt)
        self.flatten = L.Flatten()
        self.fc = L.Linear(c, num_classes, dtype=dtype, rng=rng)
        init_convolutions(self, rng)
        if zero_init_residual:
            for b in self.modules():
                if isinstance(b, BasicBlock | Bottleneck):
                    (b.bn3 if isinstance(b, Bottleneck) else b.bn2).params["weight"][...] = 0

    @staticmethod
    def _stage(cls, c: int, channels: int, n: int, stride: int, fmt, dtype):
        """torchvision's _make_layer: (Sequential of n blocks, channels out)."""
        f = channels * cls.expansion
        blocks = [cls(c, channels, stride, downsample=stride != 1 or c != f, data_format=fmt,
                      dtype=dtype)]
        blocks += [cls(f, channels, 1, data_format=fmt, dtype=dtype) for _ in range(n - 1)]
        return Sequential(*blocks), f

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet18(num_classes: int = 1000, in_channels: int = 3,
             data_format: str = "channels_last", **kwargs) -> ResNet:
    """ResNet-18 (BasicBlock, 2-2-2-2), torchvision's structure and state_dict keys.

    Keywords: width (64: the stem's channels; the stages have width, 2, 4 and 8 times it),
    zero_init_residual (False), dtype ("float32"), rng (a numpy Generator; None: npconv's
    default generator). 11.7 M parameters at width 64 and 1000 classes.
    """
    return ResNet("basic", (2, 2, 2, 2), num_classes, in_channels, data_format=data_format,
                  **kwargs)


def resnet34(num_classes: int = 1000, in_channels: int = 3,
             data_format: str = "channels_last", **kwargs) -> ResNet:
    """ResNet-34 (BasicBlock, 3-4-6-3); keywords as `resnet18`."""
    return ResNet("basic", (3, 4, 6, 3), num_classes, in_channels, data_format=data_format,
                  **kwargs)


def resnet50(num_classes: int = 1000, in_channels: int = 3,
             data_format: str = "channels_last", **kwargs) -> ResNet:
    """ResNet-50 (Bottleneck, 3-4-6-3), torchvision's v1.5; keywords as `resnet18`.
    25.6 M parameters at width 64 and 1000 classes."""
    return ResNet("bottleneck", (3, 4, 6, 3), num_classes, in_channels,
                  data_format=data_format, **kwargs)
