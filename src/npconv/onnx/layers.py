"""Layers that imported ONNX graphs need and `npconv.nn` does not have (yet): ReLU6, Softmax,
nearest-neighbour Upsample.

The importer takes a layer from `npconv.nn` when it has one of the name and from here
otherwise, so these step aside as soon as `npconv.nn` grows its own. Each layer calls one pair
of functions below (forward, backward), written with their gradient rule; they follow the
`npconv.nn` layer contract (`forward(x, training)`, `backward(dy)`, `config()`).
"""

from __future__ import annotations

import numpy as np

from npconv import _args
from npconv.nn import Layer
from npconv.nn import functional as F

__all__ = ["ReLU6", "Softmax", "Upsample", "relu6", "relu6_backward", "softmax_backward",
           "upsample_nearest", "upsample_nearest_backward"]


# ---------------------------------------------------------------------------------------------
# Functions
# ---------------------------------------------------------------------------------------------


def relu6(x):
    """min(max(x, 0), 6), PyTorch's ReLU6 (NaN stays NaN).

    >>> relu6(np.array([-1.0, 3.0, 7.0]))
    array([0., 3., 6.])
    """
    return np.clip(x, 0, 6).astype(x.dtype, copy=False)


def relu6_backward(dy, x):
    """dy where 0 < x < 6, else 0 (PyTorch's hardtanh_backward: the bounds get no gradient)."""
    return np.where((x > 0) & (x < 6), dy, 0).astype(dy.dtype, copy=False)


def softmax_backward(dy, y, axis: int):
    """dx of y = softmax(x) along `axis`: y * (dy - sum(dy * y)), from dx_i = sum_j dy_j
    dy_j/dx_i with dy_j/dx_i = y_j (delta_ij - y_i)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


def _spatial_axes(ndim: int, data_format: str) -> list[int]:
    return list(range(1, ndim - 1)) if data_format == "channels_last" else list(range(2, ndim))


def upsample_nearest(x, factors: tuple[int, ...], data_format: str = "channels_last"):
    """Repeat every pixel `factors[d]` times along spatial dimension d: (N, *S, C) ->
    (N, *(S * f), C) (or channels_first). One copy, through a broadcast view.

    >>> upsample_nearest(np.arange(2.0).reshape(1, 2, 1), (2,))[0, :, 0]
    array([0., 0., 1., 1.])
    """
    axes = _spatial_axes(x.ndim, data_format)
    view_shape, big_shape, out_shape = [], [], []
    for a, n in enumerate(x.shape):
        f = factors[axes.index(a)] if a in axes else 1
        view_shape += [n, 1] if a in axes else [n]
        big_shape += [n, f] if a in axes else [n]
        out_shape.append(n * f)
    y = np.broadcast_to(x.reshape(view_shape), big_shape)            # (N, S1, f1, ..., C) view
    return y.reshape(out_shape)                                    # (N, *(S * f), C), a copy


def upsample_nearest_backward(dy, factors: tuple[int, ...], data_format: str = "channels_last"):
    """dx of `upsample_nearest`: each input pixel receives the sum of its f1 x f2 x ... copies."""
    axes = _spatial_axes(dy.ndim, data_format)
    split, summed = [], []
    for a, n in enumerate(dy.shape):
        if a in axes:
            f = factors[axes.index(a)]
            split += [n // f, f]
            summed.append(len(split) - 1)
        else:
            split.append(n)
    return dy.reshape(split).sum(axis=tuple(summed))               # (N, *S, C)


# ---------------------------------------------------------------------------------------------
# Layers
# ---------------------------------------------------------------------------------------------


class ReLU6(Layer):
    """min(max(x, 0), 6) (PyTorch's nn.ReLU6; MobileNetV2's activation, ONNX's Clip(0, 6))."""

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        self._start(training, x)
        return relu6(x)

    def backward(self, dy):
        return relu6_backward(dy, self._saved())


class Softmax(Layer):
    """softmax along `axis` (None: the channel axis of `data_format`; PyTorch's nn.Softmax(dim)
    with dim renumbered for channels_last)."""

    def __init__(self, axis: int | None = None, *, data_format: str = "channels_last") -> None:
        if axis is not None and not _args.is_int(axis):
            raise TypeError(f"`axis` must be None (the channel axis) or an int; got {axis!r}")
        self.axis = axis
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(axis=self.axis, data_format=self.data_format)

    def _resolved(self, ndim: int) -> int:
        if self.axis is not None:
            return self.axis
        return ndim - 1 if self.data_format == "channels_last" or ndim == 2 else 1

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        axis = self._resolved(x.ndim)
        y = F.softmax(x, axis=axis)
        self._start(training, (y, axis))
        return y

    def backward(self, dy):
        y, axis = self._saved()
        return softmax_backward(dy, y, axis)


class Upsample(Layer):
    """Nearest-neighbour upsampling by integer `scale_factor` per spatial dimension (PyTorch's
    nn.Upsample(scale_factor, mode="nearest")); x (N, *S, C) -> (N, *(S * f), C)."""

    def __init__(self, scale_factor, mode: str = "nearest", *,
                 data_format: str = "channels_last") -> None:
        _args.choice(mode, ("nearest",), "mode")
        factors = (scale_factor,) if _args.is_int(scale_factor) else tuple(scale_factor)
        if not all(_args.is_int(f) and f >= 1 for f in factors):
            raise ValueError(f"`scale_factor` must be an int >= 1 or a tuple of them; got "
                             f"{scale_factor!r}")
        self.scale_factor, self.mode = tuple(int(f) for f in factors), mode
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(scale_factor=self.scale_factor, mode=self.mode, data_format=self.data_format)

    def _factors(self, x) -> tuple[int, ...]:
        rank = x.ndim - 2
        if len(self.scale_factor) not in (1, rank):
            raise ValueError(f"{self!r} has {len(self.scale_factor)} factors for an input with "
                             f"{rank} spatial dimensions (shape {tuple(x.shape)})")
        return self.scale_factor * rank if len(self.scale_factor) == 1 else self.scale_factor

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        factors = self._factors(x)
        self._start(training, factors)
        return upsample_nearest(x, factors, self.data_format)

    def backward(self, dy):
        return upsample_nearest_backward(dy, self._saved(), self.data_format)
