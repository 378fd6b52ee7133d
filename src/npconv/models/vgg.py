"""VGG (Simonyan and Zisserman, 2015) with torchvision's module structure and state_dict keys:
features.0.weight ... (convolutions, ReLUs, max pools in one Sequential), an adaptive average
pool to 7x7, and classifier.0/3/6 (Linear, ReLU, Dropout, Linear, ReLU, Dropout, Linear).

In channels_last the map is flattened in PyTorch's (C, H, W) order (`nn.Flatten(data_format=)`),
so classifier.0 takes torchvision's weights unchanged. The 25088 x 4096 first Linear makes
vgg11 a 133 M-parameter model: `width`, `hidden` and `pool_size` shrink it.

>>> import numpy as np
>>> from npconv import models
>>> model = models.vgg11(num_classes=10, width=4, hidden=32, pool_size=2,
...                      rng=np.random.default_rng(0))
>>> model.forward(np.zeros((1, 32, 32, 3), np.float32)).shape, sorted(model.state_dict())[:2]
((1, 10), ['classifier.0.bias', 'classifier.0.weight'])
"""

from __future__ import annotations

from npconv import _args
from npconv.models._common import (
    Classifier,
    check_builder_args,
    check_positive,
)
from npconv.nn import functional as F
from npconv.nn import layers as L
from npconv.nn.module import Layer, Sequential

__all__ = ["CONFIGS", "VGG", "vgg11", "vgg16"]

# torchvision's cfgs, in units of `width` (64): "M" is a 2x2 max pool
CONFIGS = {
    "A": (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"),                       # vgg11
    "D": (1, 1, "M", 2, 2, "M", 4, 4, 4, "M", 8, 8, 8, "M", 8, 8, 8, "M"),       # vgg16
}


def _features(cfg, in_channels: int, width: int, batch_norm: bool, fmt, dtype) -> Sequential:
    """torchvision's make_layers: 3x3 convolutions (with batch norm), ReLUs and max pools."""
    out: list[Layer] = []
    c = in_channels
    for v in cfg:
        if v == "M":
            out.append(L.MaxPool2d(2, stride=2, data_format=fmt))
            continue
        f = v * width
        out.append(L.Conv2d(c, f, 3, padding=1, data_format=fmt, dtype=dtype, init="zeros"))
        if batch_norm:
            out.append(L.BatchNorm2d(f, data_format=fmt, dtype=dtype))
        out.append(L.ReLU(inplace=True))
        c = f
    return Sequential(*out)


class VGG(Classifier):
    """torchvision's VGG; use the builders (`vgg11`, `vgg16`). features -> avgpool
    (AdaptiveAvgPool2d(pool_size)) -> flatten -> classifier. Initialization as torchvision's:
    convolutions kaiming_normal(fan_out) with zero biases, Linear N(0, 0.01^2) with zero
    biases."""

    def __init__(self, config: str = "A", num_classes: int = 1000, in_channels: int = 3, *,
                 width: int = 64, hidden: int = 4096, pool_size: int = 7,
                 batch_norm: bool = False, dropout: float = 0.5,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        dtype = check_builder_args(num_classes, in_channels, data_format, dtype, width=width,
                                   hidden=hidden)
        check_positive(pool_size=pool_size)
        if config not in CONFIGS:
            raise ValueError(f"`config` must be one of {tuple(CONFIGS)}; got {config!r}")
        self.kw = dict(config=config, num_classes=num_classes, in_channels=in_channels,
                       width=width, hidden=hidden, pool_size=pool_size,
                       batch_norm=_args.check_flag(batch_norm, "batch_norm"),
                       dropout=F.real_in(dropout, 0.0, 1.0, "dropout"), data_format=data_format,
                       dtype=dtype)
        fmt = data_format
        self.features = _features(CONFIGS[config], in_channels, width, batch_norm, fmt, dtype)
        self.avgpool = L.AdaptiveAvgPool2d(pool_size, data_format=fmt)
        self.flatten = L.Flatten(data_format=fmt)
        d = 8 * width * pool_size * pool_size
        self.classifier = Sequential(
            L.Linear(d, hidden, dtype=dtype, init="zeros"), L.ReLU(inplace=True),
            L.Dropout(dropout), L.Linear(hidden, hidden, dtype=dtype, init="zeros"),
            L.ReLU(inplace=True), L.Dropout(dropout),
            L.Linear(hidden, num_classes, dtype=dtype, init="zeros"))
        self._initialize(rng)


def vgg11(num_classes: int = 1000, in_channels: int = 3, data_format: str = "channels_last",
          **kwargs) -> VGG:
    """VGG-11 (configuration "A"), torchvision's structure and keys.

    Keywords: width (64: the first convolutions' channels; later ones 2, 4, 8 times it), hidden
    (4096: the classifier's hidden size), pool_size (7: the adaptive pool's output side),
    batch_norm (False; True is torchvision's vgg11_bn, whose feature indices shift), dropout
    (0.5), dtype ("float32"), rng.
    """
    return VGG("A", num_classes, in_channels, data_format=data_format, **kwargs)


def vgg16(num_classes: int = 1000, in_channels: int = 3, data_format: str = "channels_last",
          **kwargs) -> VGG:
    """VGG-16 (configuration "D"); keywords as `vgg11`."""
    return VGG("D", num_classes, in_channels, data_format=data_format, **kwargs)
