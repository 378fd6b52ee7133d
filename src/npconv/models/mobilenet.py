"""MobileNetV2 (Sandler et al., 2018) with torchvision's module structure and state_dict keys:
features.0.0.weight (the stem's Conv2dNormActivation), features.1.conv.0.0.weight (the first
inverted residual's depthwise block), features.18 (the last 1x1 block), classifier.1.weight.

An inverted residual is forward code: `x + conv(x)` (a recorded `nn.add`) where the stride is 1
and the channels stay, else `conv(x)`; its ReLU6s run in place on their batch norms' outputs.

>>> import numpy as np
>>> from npconv import models
>>> model = models.mobilenet_v2(num_classes=10, width_mult=0.25, rng=np.random.default_rng(0))
>>> model.forward(np.zeros((1, 32, 32, 3), np.float32)).shape
(1, 10)
>>> model.state_dict()["features.2.conv.1.0.weight"].shape    # depthwise, PyTorch's layout
(48, 1, 3, 3)
"""

from __future__ import annotations

from npconv.models._common import (
    Classifier,
    check_builder_args,
    check_positive,
)
from npconv.nn import combine
from npconv.nn import functional as F
from npconv.nn import layers as L
from npconv.nn.module import Layer, Module, Sequential

__all__ = ["SETTING", "Conv2dNormActivation", "InvertedResidual", "MobileNetV2",
           "make_divisible", "mobilenet_v2"]

# torchvision's inverted_residual_setting: expansion t, channels c, repeats n, first stride s
SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
           (6, 160, 3, 2), (6, 320, 1, 1))


def make_divisible(v: float, divisor: int = 8) -> int:
    """torchvision's _make_divisible: v rounded to a multiple of divisor (at least divisor),
    never more than 10% below v.

    >>> make_divisible(32 * 0.35), make_divisible(1280 * 1.4)
    (16, 1792)
    """
    rounded = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * v else rounded


class Conv2dNormActivation(Sequential):
    """torchvision's Conv2dNormActivation with batch norm and ReLU6: a k x k convolution
    (padding (k - 1) // 2, no bias), BatchNorm2d, ReLU6 in place; keys 0.weight, 1.*."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3,
                 stride: int = 1, groups: int = 1, *, data_format: str = "channels_last",
                 dtype="float32") -> None:
        f = dict(data_format=data_format, dtype=dtype)
        super().__init__(
            L.Conv2d(in_channels, out_channels, kernel_size, stride=stride,
                     padding=(kernel_size - 1) // 2, groups=groups, bias=False, init="zeros",
                     **f),
            L.BatchNorm2d(out_channels, **f), L.ReLU6(inplace=True))
        self.kw = dict(in_channels=in_channels, out_channels=out_channels,
                       kernel_size=kernel_size, stride=stride, groups=groups, **f)

    def config(self) -> dict:
        return dict(self.kw)


class InvertedResidual(Module):
    """1x1 expansion by `expand_ratio` (none when 1), 3x3 depthwise with `stride`, 1x1
    projection and batch norm (no activation), plus x when stride is 1 and the channels stay.

    x (N, H, W, in_channels) -> (N, ceil(H / stride), ceil(W / stride), out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, expand_ratio: int, *,
                 data_format: str = "channels_last", dtype="float32") -> None:
        super().__init__()
        f = dict(data_format=data_format, dtype=dtype)
        self.kw = dict(in_channels=in_channels, out_channels=out_channels, stride=stride,
                       expand_ratio=expand_ratio, **f)
        hidden = round(in_channels * expand_ratio)
        self.use_res_connect = stride == 1 and in_channels == out_channels
        layers: list[Layer] = [Conv2dNormActivation(in_channels, hidden, 1, **f)] \
            if expand_ratio != 1 else []
        layers += [Conv2dNormActivation(hidden, hidden, 3, stride, groups=hidden, **f),
                   L.Conv2d(hidden, out_channels, 1, bias=False, init="zeros", **f),
                   L.BatchNorm2d(out_channels, **f)]
        self.conv = Sequential(*layers)

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        return combine.add(x, self.conv(x), inplace=True) if self.use_res_connect else self.conv(x)


class MobileNetV2(Classifier):
    """torchvision's MobileNetV2: features (a stem, 17 inverted residuals, a 1x1 block to
    `last_channel`), a global average pool, classifier (Dropout, Linear). Use `mobilenet_v2`."""

    def __init__(self, num_classes: int = 1000, in_channels: int = 3, *,
                 width_mult: float = 1.0, round_nearest: int = 8, dropout: float = 0.2,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        dtype = check_builder_args(num_classes, in_channels, data_format, dtype)
        check_positive(round_nearest=round_nearest)
        width_mult = F.real_in(width_mult, 0.0, float("inf"), "width_mult")
        if width_mult <= 0:
            raise ValueError(f"`width_mult` must be > 0; got {width_mult!r}")
        self.kw = dict(num_classes=num_classes, in_channels=in_channels, width_mult=width_mult,
                       round_nearest=round_nearest, dropout=F.real_in(dropout, 0.0, 1.0,
                                                                      "dropout"),
                       data_format=data_format, dtype=dtype)
        f = dict(data_format=data_format, dtype=dtype)
        c = make_divisible(32 * width_mult, round_nearest)
        last = make_divisible(1280 * max(1.0, width_mult), round_nearest)
        blocks: list[Layer] = [Conv2dNormActivation(in_channels, c, 3, 2, **f)]
        for t, channels, n, s in SETTING:
            out = make_divisible(channels * width_mult, round_nearest)
            for i in range(n):
                blocks.append(InvertedResidual(c, out, s if i == 0 else 1, t, **f))
                c = out
        blocks.append(Conv2dNormActivation(c, last, 1, **f))
        self.features = Sequential(*blocks)
        self.avgpool = L.AdaptiveAvgPool2d(1, data_format=data_format)
        self.flatten = L.Flatten()
        self.classifier = Sequential(L.Dropout(dropout),
                                     L.Linear(last, num_classes, dtype=dtype, init="zeros"))
        self._initialize(rng)


def mobilenet_v2(num_classes: int = 1000, in_channels: int = 3,
                 data_format: str = "channels_last", **kwargs) -> MobileNetV2:
    """MobileNetV2 with torchvision's structure and state_dict keys.

    Keywords: width_mult (1.0: every layer's channels times it, rounded to multiples of
    round_nearest=8), dropout (0.2, before the classifier), dtype ("float32"), rng.
    3.5 M parameters at width_mult 1.0 and 1000 classes.
    """
    return MobileNetV2(num_classes, in_channels, data_format=data_format, **kwargs)
