"""npconv.nn: layers, initializers, losses, optimizers and model files on top of the core ops.

    >>> import numpy as np
    >>> from npconv import nn
    >>> rng = np.random.default_rng(0)
    >>> model = nn.Sequential(
    ...     nn.Conv(1, 8, (3, 3), padding="same", rng=rng), nn.ReLU(), nn.MaxPool(2),
    ...     nn.Flatten(), nn.Dense(4 * 4 * 8, 10, rng=rng))
    >>> x, labels = rng.random((16, 8, 8, 1), dtype=np.float32), rng.integers(0, 10, 16)
    >>> opt = nn.Adam(lr=1e-3)
    >>> loss, dlogits = nn.softmax_cross_entropy(model.forward(x, training=True), labels)
    >>> _ = model.backward(dlogits)
    >>> opt.step(model.params, model.grads)

Modules: `layers` (Conv, ConvTranspose, MaxPool, AvgPool, GlobalAvgPool, Dense, Flatten, ReLU,
LeakyReLU, Tanh, Sigmoid, Dropout, BatchNorm, Sequential), `functional` (the maths those layers
call), `init`, `losses`, `optim` and `serialization` (save / load).
"""

from npconv.nn import functional, init
from npconv.nn.layers import (
    LAYERS,
    AvgPool,
    BatchNorm,
    Conv,
    ConvTranspose,
    Dense,
    Dropout,
    Flatten,
    GlobalAvgPool,
    Layer,
    LeakyReLU,
    MaxPool,
    ReLU,
    Sequential,
    Sigmoid,
    Tanh,
)
from npconv.nn.losses import LOSSES, mse, softmax_cross_entropy
from npconv.nn.optim import OPTIMIZERS, SGD, Adam, AdamW, Optimizer
from npconv.nn.serialization import is_model_file, load, load_metadata, load_weights, save

__all__ = [
    "LAYERS",
    "LOSSES",
    "OPTIMIZERS",
    "SGD",
    "Adam",
    "AdamW",
    "AvgPool",
    "BatchNorm",
    "Conv",
    "ConvTranspose",
    "Dense",
    "Dropout",
    "Flatten",
    "GlobalAvgPool",
    "Layer",
    "LeakyReLU",
    "MaxPool",
    "Optimizer",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
    "functional",
    "init",
    "is_model_file",
    "load",
    "load_metadata",
    "load_weights",
    "mse",
    "save",
    "softmax_cross_entropy",
]
