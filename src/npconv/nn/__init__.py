"""npconv.nn: layers, initializers, losses, optimizers and model files on top of the core ops,
with PyTorch's names (torch.nn's classes, arguments and state_dict keys).

    >>> import numpy as np
    >>> from npconv import nn
    >>> rng = np.random.default_rng(0)
    >>> model = nn.Sequential(
    ...     nn.Conv2d(1, 8, 3, padding="same", rng=rng), nn.ReLU(), nn.MaxPool2d(2),
    ...     nn.Flatten(), nn.Linear(4 * 4 * 8, 10, rng=rng))
    >>> x, labels = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 16)
    >>> opt = nn.Adam(lr=1e-3)
    >>> loss, dlogits = nn.softmax_cross_entropy(model.forward(x, training=True), labels)
    >>> _ = model.backward(dlogits)
    >>> opt.step(model.params, model.grads)

Modules: `module` (Layer, Module: composition by forward code with a derived backward,
Sequential, enable_grad / no_grad), `layers` (Conv, Conv1d/2d/3d, ConvTranspose,
ConvTranspose1d/2d/3d, MaxPool, MaxPool1d/2d/3d, AvgPool, AvgPool1d/2d/3d, AdaptiveAvgPool,
AdaptiveAvgPool1d/2d/3d, GlobalAvgPool, GlobalMaxPool, Linear, Flatten, ReLU, ReLU6, LeakyReLU,
Hardswish, Hardsigmoid, SiLU, Tanh, Sigmoid, Dropout, BatchNorm, BatchNorm1d/2d/3d, LayerNorm,
GroupNorm, Upsample), `combine` (Identity, Add, Concat, ZeroPad, add, concat), `functional`,
`activation`, `normalization`, `resample` and `merge` (the maths those layers call), `init`
(initializers and the default generator: `manual_seed`), `losses`, `optim` and
`serialization` (save / load).
"""

from npconv.nn import functional, init
from npconv.nn.combine import Add, Concat, Identity, ZeroPad, add, concat
from npconv.nn.init import manual_seed
from npconv.nn.layers import (
    LAYERS,
    AdaptiveAvgPool,
    AdaptiveAvgPool1d,
    AdaptiveAvgPool2d,
    AdaptiveAvgPool3d,
    AvgPool,
    AvgPool1d,
    AvgPool2d,
    AvgPool3d,
    BatchNorm,
    BatchNorm1d,
    BatchNorm2d,
    BatchNorm3d,
    Conv,
    Conv1d,
    Conv2d,
    Conv3d,
    ConvTranspose,
    ConvTranspose1d,
    ConvTranspose2d,
    ConvTranspose3d,
    Dropout,
    Flatten,
    GlobalAvgPool,
    GlobalMaxPool,
    GroupNorm,
    Hardsigmoid,
    Hardswish,
    Layer,
    LayerNorm,
    LeakyReLU,
    Linear,
    MaxPool,
    MaxPool1d,
    MaxPool2d,
    MaxPool3d,
    ReLU,
    ReLU6,
    Sequential,
    Sigmoid,
    SiLU,
    Tanh,
    Upsample,
)
from npconv.nn.losses import LOSSES, mse, softmax_cross_entropy
from npconv.nn.module import (
    MODULES,
    IncompatibleKeys,
    Module,
    can_overwrite,
    enable_grad,
    grad_enabled,
    no_grad,
)
from npconv.nn.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from npconv.nn.serialization import is_model_file, load, load_metadata, load_weights, save

__all__ = [
    "LAYERS",
    "LOSSES",
    "MODULES",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "AdaptiveAvgPool",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "Add",
    "AvgPool",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "Concat",
    "Conv",
    "Conv1d",
    "Conv2d",
    "Conv3d",
    "ConvTranspose",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "GlobalMaxPool",
    "GroupNorm",
    "Hardsigmoid",
    "Hardswish",
    "Identity",
    "IncompatibleKeys",
    "Layer",
    "LayerNorm",
    "LeakyReLU",
    "Linear",
    "MaxPool",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "Module",
    "Optimizer",
    "ReLU",
    "ReLU6",
    "Sequential",
    "SiLU",
    "Sigmoid",
    "Tanh",
    "Upsample",
    "ZeroPad",
    "add",
    "can_overwrite",
    "concat",
    "enable_grad",
    "functional",
    "grad_enabled",
    "init",
    "is_model_file",
    "load",
    "load_metadata",
    "load_weights",
    "manual_seed",
    "mse",
    "no_grad",
    "save",
    "softmax_cross_entropy",
]

# Names replaced by PyTorch's (README, "Changes"); no aliases are kept, so that one thing has
# one name, but the old name says where it went.
_RENAMED = {"Dense": "Linear"}


def __getattr__(name: str):
    if name in _RENAMED:
        raise AttributeError(f"npconv.nn.{name} was renamed npconv.nn.{_RENAMED[name]} (PyTorch's "
                             f"name); see the README's Changes section")
    raise AttributeError(f"module 'npconv.nn' has no attribute {name!r}")
