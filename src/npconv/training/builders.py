"""What `npconv train` builds: the default digits CNN and an optimizer chosen by name."""

from __future__ import annotations

import numpy as np

from npconv import _args
from npconv.nn import layers as L
from npconv.nn import optim

__all__ = ["digits_cnn", "make_optimizer"]


def digits_cnn(*, rng: np.random.Generator | None = None,
               input_shape: tuple[int, ...] = (8, 8, 1),
               n_classes: int = 10, width: int = 16) -> L.Sequential:
    """The default CNN: two 3x3 conv blocks (width and 2 * width channels, batch norm, ReLU),
    a 2x2 max pool after each, then a linear classifier; channels_last. The conv weights are
    drawn from kaiming_normal, the classifier's from xavier_uniform (with a zero bias).

    For 8x8 digits: (N, 8, 8, 1) -> (N, 4, 4, w) -> (N, 2, 2, 2w) -> (N, 8w) -> (N, 10).

    >>> digits_cnn(rng=np.random.default_rng(0), width=4).forward(np.zeros((2, 8, 8, 1))).shape
    (2, 10)
    """
    h, w, c = input_shape
    if h % 4 or w % 4:
        raise ValueError(f"`input_shape` must have a height and width divisible by 4 (two 2x2 "
                         f"pools); got {tuple(input_shape)}")
    return L.Sequential(
        L.Conv2d(c, width, 3, padding="same", bias=False, init="kaiming_normal", rng=rng),
        L.BatchNorm2d(width), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(width, 2 * width, 3, padding="same", bias=False, init="kaiming_normal",
                 rng=rng),
        L.BatchNorm2d(2 * width), L.ReLU(), L.MaxPool2d(2),
        L.Flatten(),
        L.Linear(h // 4 * (w // 4) * 2 * width, n_classes, init="xavier_uniform", rng=rng),
    )


def make_optimizer(name: str, *, lr: float, weight_decay: float = 0.0) -> optim.Optimizer:
    """"adam", "adamw" or "sgd" (with Nesterov momentum 0.9), by name.

    >>> make_optimizer("sgd", lr=0.1).nesterov
    True
    """
    _args.choice(name, tuple(optim.OPTIMIZERS), "optimizer")
    if name == "sgd":
        return optim.SGD(lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return optim.OPTIMIZERS[name](lr=lr, weight_decay=weight_decay)
