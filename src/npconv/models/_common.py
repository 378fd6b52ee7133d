"""What the builders share: torchvision's initialization and the checks of their arguments.

torchvision initializes its classifiers itself rather than with PyTorch's layer defaults:
every convolution weight from kaiming_normal with mode "fan_out" (std = sqrt(2 / fan_out),
fan_out = F * prod(K), PyTorch's count, which does not divide by the groups), convolution biases
0, batch norm weight 1 and bias 0 (the layers' own), and, for MobileNetV2 and VGG, Linear
weights from N(0, 0.01^2) with zero biases. The draws are made in npconv's layouts, so they
are not PyTorch's numbers, only its distributions. Inside `npconv.nn.init.meta()` (a model file
being loaded) nothing is drawn.
"""

from __future__ import annotations

import math

from npconv import _args
from npconv.nn import init
from npconv.nn import layers as L
from npconv.nn.module import Layer, Module

__all__ = ["Classifier", "check_builder_args", "check_positive", "init_convolutions",
           "init_linears", "spatial_shape"]


def init_convolutions(model: Layer, rng) -> None:
    """Every Conv weight of `model` from kaiming_normal(mode="fan_out"), every Conv bias 0."""
    if init.is_meta():
        return
    rng = init.generator(rng)
    for layer in model.modules():
        if isinstance(layer, L.Conv):
            w = layer.params["weight"]
            fan_out = layer.out_channels * math.prod(layer.kernel_size)
            w[...] = init.kaiming_normal(w.shape, fan_out, 1, rng=rng, dtype=w.dtype)
            if "bias" in layer.params:
                layer.params["bias"][...] = 0


def init_linears(model: Layer, rng, std: float = 0.01) -> None:
    """Every Linear weight of `model` from N(0, std^2), every Linear bias 0."""
    if init.is_meta():
        return
    rng = init.generator(rng)
    for layer in model.modules():
        if isinstance(layer, L.Linear):
            w = layer.params["weight"]
            w[...] = rng.normal(0.0, std, w.shape)                          # like w
            if "bias" in layer.params:
                layer.params["bias"][...] = 0


def check_positive(**values) -> None:
    """Every keyword an int >= 1; TypeError / ValueError naming it."""
    for name, value in values.items():
        if not _args.is_int(value):
            raise TypeError(f"`{name}` must be an int; got {value!r}")
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1; got {value}")


def check_builder_args(num_classes, in_channels, data_format, dtype, **positive) -> str:
    """num_classes, in_channels and every keyword (a width, a depth) ints >= 1, data_format
    one of the two layouts; returns dtype's name ("float32"), for config()."""
    check_positive(num_classes=num_classes, in_channels=in_channels, **positive)
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    return L.float_dtype(dtype).name


def spatial_shape(x, data_format: str) -> tuple[int, ...]:
    """S of an (N, *S, C) or (N, C, *S) array."""
    return tuple(x.shape[1:-1] if data_format == "channels_last" else x.shape[2:])




class Classifier(Module):
    """torchvision's image classifiers' shape (MobileNetV2, VGG): `features`, an adaptive
    average pool, a flatten and a `classifier`, built by the subclass, which keeps its
    constructor's arguments in `kw`; `_initialize` gives the convolutions and the Linear
    layers torchvision's initialization."""

    kw: dict

    def config(self) -> dict:
        return dict(self.kw)

    def _initialize(self, rng) -> None:
        init_convolutions(self, rng)
        init_linears(self, rng)

    def forward(self, x):
        return self.classifier(self.flatten(self.avgpool(self.features(x))))
