"""Layers: parameters, hyperparameters and a cache, around the functional ops.

A layer holds no maths (tinygrad's rule): `forward(x, training=...)` checks the input, keeps
what the backward pass needs and calls one functional op (`npconv.conv`, `npconv.max_pool`,
`npconv.nn.functional.linear`, ...); `backward(dy)` calls that op's backward, stores the
parameter gradients in `grads` (the same keys as `params`) and returns dx. Non-trained state
that is saved with a model (batch norm's running statistics) lives in `buffers`.

Names follow PyTorch's `torch.nn`: the classes (Conv2d, MaxPool2d, BatchNorm2d, Linear, ...),
their arguments (in_channels, out_channels, kernel_size, in_features, p, eps, momentum) and the
keys of params and buffers ("weight", "bias", "running_mean", "running_var",
"num_batches_tracked"), so a Sequential's keys ("0.weight", "1.running_var") are those of the
same PyTorch Sequential's state_dict. The N-d classes Conv, ConvTranspose, MaxPool, AvgPool and
BatchNorm take any rank; Conv1d ... BatchNorm3d fix it, as PyTorch's do.

Every layer takes `data_format` where it matters ("channels_last": x (N, *S, C), the default;
"channels_first": x (N, C, *S)), and its weights use the matching layout of `npconv.conv`:
(*K, C/G, F) or PyTorch's (F, C/G, *K); a Linear weight is (in_features, out_features). A layer
is rebuilt from `type(layer).__name__` and `layer.config()` (JSON-ready keyword arguments), which
is how `npconv.nn.save` stores it.

>>> import numpy as np
>>> from npconv import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1, rng=rng), nn.ReLU(),
...                       nn.MaxPool2d(2), nn.Flatten(), nn.Linear(4 * 4 * 4, 10, rng=rng))
>>> logits = model.forward(np.zeros((2, 8, 8, 1), np.float32), training=True)   # (N, 10)
>>> dx = model.backward(np.ones_like(logits))                                   # (N, 8, 8, 1)
>>> logits.shape, dx.shape, sorted(model.params)
((2, 10), (2, 8, 8, 1), ['0.bias', '0.weight', '4.bias', '4.weight'])
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from npconv import _args, _backend, convolution, pooling
from npconv.nn import activation, normalization, resample
from npconv.nn import functional as F
from npconv.nn import init as initializers
from npconv.nn.combine import Add, Concat, Identity, ZeroPad
from npconv.nn.module import (
    Layer,
    Sequential,
    can_overwrite,
    grad_enabled,
    reclaim,
    recording,
)
from npconv.spec import check_shape, resolve_padding

__all__ = [
    "LAYERS",
    "AdaptiveAvgPool",
    "AdaptiveAvgPool1d",
    "AdaptiveAvgPool2d",
    "AdaptiveAvgPool3d",
    "AvgPool",
    "AvgPool1d",
    "AvgPool2d",
    "AvgPool3d",
    "BatchNorm",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
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
    "Layer",
    "LeakyReLU",
    "Linear",
    "MaxPool",
    "MaxPool1d",
    "MaxPool2d",
    "MaxPool3d",
    "ReLU",
    "Sequential",
    "Sigmoid",
    "Tanh",
]


# ---------------------------------------------------------------------------------------------
# Hyperparameter checks (once, at construction; the functional ops check the arrays)
# ---------------------------------------------------------------------------------------------


def _positive_int(value, name: str) -> int:
    if not _args.is_int(value):
        raise TypeError(f"`{name}` must be an int; got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be >= 1; got {value}")
    return int(value)


def _frozen(value):
    """Lists (from JSON) back to tuples, recursively."""
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


def _layer_rank(cls: type, rank) -> int | None:
    """The rank of a layer: its class's (Conv2d: 2), else the `rank` argument (or None)."""
    fixed = getattr(cls, "rank", None)
    if rank is None:
        return fixed
    rank = _positive_int(rank, "rank")
    if fixed is not None and rank != fixed:
        raise ValueError(f"{cls.__name__} is {fixed}-d; got rank={rank}")
    return rank


def _kernel_size(kernel_size, rank: int | None, cls: type) -> tuple[int, ...]:
    """kernel_size as a tuple: an int repeated `rank` times, or a tuple (of `rank` ints)."""
    kernel_size = _frozen(kernel_size)
    if _args.is_int(kernel_size):
        if rank is None:
            raise TypeError(
                f"{cls.__name__}: an int `kernel_size` needs the rank: pass `rank=` (the number "
                f"of spatial dimensions), a tuple with one int per spatial dimension ((3, 3) for "
                f"2-D), or use {cls.__name__}1d/2d/3d; got kernel_size={kernel_size!r}")
        return _args.positive_tuple(kernel_size, rank, "kernel_size")
    if not isinstance(kernel_size, tuple) or not kernel_size:
        raise TypeError(f"`kernel_size` must be an int or a tuple of ints; got {kernel_size!r}")
    return _args.positive_tuple(kernel_size, rank or len(kernel_size), "kernel_size")


def _pool_size(value, name: str, rank: int | None, allow_none: bool = False):
    """An int or a tuple of ints >= 1 (of `rank` ints when the class fixes the rank), kept as
    given: a pool's rank comes from its input."""
    value = _frozen(value)
    if value is None and allow_none:
        return None
    if _args.is_int(value):
        return _args.positive_tuple(value, 1, name)[0]
    if isinstance(value, tuple) and value:
        return _args.positive_tuple(value, rank or len(value), name)
    raise TypeError(f"`{name}` must be an int or a tuple of ints; got {value!r}")


def _padding(padding, kernel_size, stride, dilation):
    """"valid", "same", "full" kept; ints and pairs resolved to explicit (lo, hi) pairs."""
    if isinstance(padding, str):
        return _args.choice(padding, ("valid", "same", "full"), "padding")
    return resolve_padding(_frozen(padding), (1,) * len(kernel_size), kernel_size, stride,
                           dilation)


def float_dtype(dtype) -> np.dtype:
    """np.dtype of float16, float32 or float64; TypeError naming `dtype` otherwise."""
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _args.FLOAT_DTYPES:
        raise TypeError(f"`dtype` must be float16, float32 or float64; got {dtype!r}")
    return dt


def _check_rank(layer: Layer, x, ranks, data_format: str) -> None:
    """x a float array with a batch axis, a channel axis and len(S) in `ranks` (None: any)."""
    _args.float_array(x, "x")
    if ranks is not None and x.ndim - 2 not in ranks:
        layout = "(N, *S, C)" if data_format == "channels_last" else "(N, C, *S)"
        dims = " or ".join(map(str, ranks))
        raise ValueError(f"{layer!r} expects `x` of shape {layout} with {dims} spatial "
                         f"dimension(s); got shape {tuple(x.shape)}")


class _Kernel(Layer):
    """A layer with a convolution kernel: PyTorch's layout (B, A, *K) in state_dict, whatever
    the layer's (a channels_last kernel is (*K, A, B)); views both ways."""

    kernel_size: tuple[int, ...]
    kw: dict

    def _to_torch(self, key: str, array):
        if not self._kernel_last(key):
            return array
        rank = len(self.kernel_size)
        return array.transpose(rank + 1, rank, *range(rank))       # (B, A, *K)

    def _from_torch(self, key: str, array):
        if not self._kernel_last(key):
            return array
        return array.transpose(*range(2, len(self.kernel_size) + 2), 1, 0)   # (*K, A, B)

    def _kernel_last(self, key: str) -> bool:
        return key == "weight" and self.kw["data_format"] == "channels_last"


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------


def _conv_args(cls, in_channels, out_channels, kernel_size, groups, stride, dilation, padding,
               rank):
    """Checked (C, F, K) and the geometry keywords shared by Conv and ConvTranspose."""
    c = _positive_int(in_channels, "in_channels")
    f = _positive_int(out_channels, "out_channels")
    k = _kernel_size(kernel_size, _layer_rank(cls, rank), cls)
    g = _positive_int(groups, "groups")
    if c % g or f % g:
        raise ValueError(f"`groups` must divide in_channels and out_channels; got groups={g}, "
                         f"in_channels={c}, out_channels={f}")
    stride = _args.positive_tuple(_frozen(stride), len(k), "stride")
    dilation = _args.positive_tuple(_frozen(dilation), len(k), "dilation")
    padding = _padding(padding, k, stride, dilation)
    return c, f, k, dict(stride=stride, padding=padding, dilation=dilation, groups=g)


class Conv(_Kernel):
    """N-d convolution layer (`npconv.conv`): PyTorch's Conv1d/Conv2d/Conv3d for any rank.

    The rank (number of spatial dimensions) is len(kernel_size) for a tuple; an int
    kernel_size needs `rank`: Conv(3, 8, (3, 3)), Conv(3, 8, 3, rank=2) and Conv2d(3, 8, 3)
    are the same layer.

    params: weight (*K, C/G, F) channels_last or (F, C/G, *K) channels_first, bias (F,). The
    other arguments are those of `npconv.conv`. Initialization (`npconv.nn.init`): with init
    None, PyTorch's default, weight and bias from U(-1/sqrt(fan_in), 1/sqrt(fan_in)),
    fan_in = C/G * prod(K); or the named initializer for the weight and a zero bias. Drawn from
    `rng` (the default generator when None). Output size per dimension:
    P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1.

    >>> conv = Conv(3, 8, (3, 3), stride=2, padding="same", rng=np.random.default_rng(0))
    >>> conv.params["weight"].shape, conv(np.zeros((2, 32, 32, 3), np.float32)).shape
    ((3, 3, 3, 8), (2, 16, 16, 8))
    """

    rank: int | None = None                     # fixed by Conv1d, Conv2d, Conv3d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", data_format: str = "channels_last",
                 rank: int | None = None, init: str | None = None,
                 rng: np.random.Generator | None = None, dtype="float32") -> None:
        c, f, k, self.kw = _conv_args(type(self), in_channels, out_channels, kernel_size,
                                      groups, stride, dilation, padding, rank)
        self.kw["data_format"] = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.kw["padding_mode"] = _args.choice(padding_mode, _args.PADDING_MODES,
                                               "padding_mode")
        self.in_channels, self.out_channels, self.kernel_size = c, f, k
        self.rank, self.has_bias = len(k), _args.check_flag(bias, "bias")
        self.dtype = float_dtype(dtype)
        g, n = self.kw["groups"], math.prod(k)
        w_shape = (*k, c // g, f) if data_format == "channels_last" else (f, c // g, *k)
        super().__init__(initializers.default_parameters(
            w_shape, (f,) if self.has_bias else None, c // g * n, f // g * n, init=init, rng=rng,
            dtype=self.dtype))

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, **self.kw, bias=self.has_bias,
                    dtype=self.dtype.name)

    _fold: tuple | None = None                  # (weight, bias) with the batch norm, eval()
    _folded_bn: BatchNorm | None = None         # the batch norm eval() folded in
    _fused_act: ReLU | ReLU6 | None = None      # the ReLU or ReLU6 eval() fused in
    _fold_out: Any = None                       # the last folded output, until it reaches it

    def forward(self, x, training: bool = False):
        _check_rank(self, x, (self.rank,), self.kw["data_format"])
        F.check_channels(x, self.in_channels, self.kw["data_format"], self)
        self._start(training, x)
        folded = self._fold is not None or self._fused_act is not None
        if folded and self._cache is None:
            w = self._fold or (self.params["weight"], self.params.get("bias"))
            clip = None if self._fused_act is None else self._fused_act.clip
            y = self._fold_out = convolution.conv(x, *w, **self.kw, clip=clip)
            return y                                               # batch norm, ReLU included
        if folded:
            self._unfold()                                         # weights may change now
        return convolution.conv(x, self.params["weight"], self.params.get("bias"), **self.kw)

    def backward(self, dy, input_grad: bool = True):
        """dx from dy, filling grads; with input_grad=False grads only (dx is not computed,
        None is returned)."""
        dx, dw, db = convolution.conv_backward(dy, self._saved(), self.params["weight"],
                                               bias=self.has_bias, **self.kw,
                                               input_grad=_args.check_flag(input_grad,
                                                                             "input_grad"))
        self.grads = {"weight": dw, "bias": db} if self.has_bias else {"weight": dw}
        return dx

    def _fold_batch_norm(self, bn) -> None:
        """Fold `bn`, the layer after this one, into this one's weights for evaluation-mode
        forwards (`Layer.eval`); nothing when bn is not a BatchNorm of out_channels in the
        same layout."""
        if (isinstance(bn, BatchNorm) and bn.num_features == self.out_channels
                and bn.data_format == self.kw["data_format"]):
            self._unfold()
            self._folded_bn, bn._folded_into = bn, self
            self._refold_batch_norm()

    def _refold_batch_norm(self) -> None:
        """weight * a and bias * a + b per output channel, with a, b the folded batch norm's
        evaluation-mode scale and shift (npconv.nn.normalization.batch_norm_scale_shift, in
        float64): conv(x, w) + bias is linear in (w, bias), and the batch norm scales and
        shifts each output channel, so BN(conv(x)) = conv(x, w * a) + bias * a + b. Rounded
        once to the weight's dtype: the folded model equals the unfolded one to rounding."""
        bn = self._folded_bn
        if bn is None:
            return
        w, bias = self.params["weight"], self.params.get("bias")
        gamma, beta, mean, var = (_backend.to_numpy(v) for v in (
            bn.params["weight"], bn.params["bias"], bn.buffers["running_mean"],
            bn.buffers["running_var"]))
        a, b = normalization.batch_norm_scale_shift(gamma, beta, mean, var, eps=bn.eps)  # (F,)
        if bias is not None:
            b = b + a * _backend.to_numpy(bias).astype(np.float64)
        xp = _backend.namespace(w)
        shape = (-1,) if self.kw["data_format"] == "channels_last" else (-1, *(1,) * (w.ndim - 1))
        self._fold = ((w * xp.asarray(a.reshape(shape))).astype(w.dtype),          # like w
                      xp.asarray(b.astype(w.dtype)))                                 # (F,)

    def _fuse_activation(self, act) -> None:
        """Clip this layer's evaluation-mode output as `act`, the layer after it (or after its
        folded batch norm) in a Sequential, would (`Layer.eval`); nothing unless act is a ReLU
        or ReLU6."""
        if isinstance(act, (ReLU, ReLU6)):
            if self._fused_act is not None:
                self._fused_act._folded_into = None
            self._fused_act, act._folded_into = act, self

    def _unfold(self) -> None:
        for layer in (self._folded_bn, self._fused_act):
            if layer is not None:
                layer._folded_into = None
        self._fold = self._folded_bn = self._fused_act = self._fold_out = None


class Conv1d(Conv):
    """`Conv` of rank 1: x (N, L, C) -> (N, P, F); kernel_size an int or a 1-tuple."""

    rank = 1


class Conv2d(Conv):
    """`Conv` of rank 2: x (N, H, W, C) -> (N, P1, P2, F) (channels_last).

    >>> Conv2d(3, 8, 3, padding=1, rng=np.random.default_rng(0)).params["weight"].shape
    (3, 3, 3, 8)
    """

    rank = 2


class Conv3d(Conv):
    """`Conv` of rank 3: x (N, D, H, W, C) -> (N, P1, P2, P3, F) (channels_last)."""

    rank = 3


class ConvTranspose(_Kernel):
    """N-d transposed convolution layer (`npconv.conv_transpose`): PyTorch's
    ConvTranspose1d/2d/3d for any rank; the rank as in `Conv`.

    params: weight (*K, F/G, C) channels_last or (C, F/G, *K) channels_first (C = in_channels,
    F = out_channels), bias (F,); the other arguments are those of `npconv.conv_transpose`.
    Initialization as `Conv`, with fan_in = F/G * prod(K) as PyTorch counts it for this weight
    (its second axis). Output size per dimension:
    O = (S - 1) * stride - lo - hi + dilation * (K - 1) + output_padding + 1.

    >>> up = ConvTranspose2d(8, 3, 2, stride=2, rng=np.random.default_rng(0))
    >>> up(np.zeros((2, 16, 16, 8), np.float32)).shape              # (16 - 1) * 2 + 2
    (2, 32, 32, 3)
    """

    rank: int | None = None                     # fixed by ConvTranspose1d/2d/3d

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, stride=1,
                 padding=0, output_padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 data_format: str = "channels_last", rank: int | None = None,
                 init: str | None = None, rng: np.random.Generator | None = None,
                 dtype="float32") -> None:
        c, f, k, self.kw = _conv_args(type(self), in_channels, out_channels, kernel_size,
                                      groups, stride, dilation, padding, rank)
        self.kw["output_padding"] = _args.int_tuple(_frozen(output_padding), len(k),
                                                    "output_padding")
        self.kw["data_format"] = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.in_channels, self.out_channels, self.kernel_size = c, f, k
        self.rank, self.has_bias = len(k), _args.check_flag(bias, "bias")
        self.dtype = float_dtype(dtype)
        g, n = self.kw["groups"], math.prod(k)
        w_shape = (*k, f // g, c) if data_format == "channels_last" else (c, f // g, *k)
        super().__init__(initializers.default_parameters(
            w_shape, (f,) if self.has_bias else None, f // g * n, c // g * n, init=init, rng=rng,
            dtype=self.dtype))

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, **self.kw, bias=self.has_bias,
                    dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, (self.rank,), self.kw["data_format"])
        F.check_channels(x, self.in_channels, self.kw["data_format"], self)
        self._start(training, x)
        return convolution.conv_transpose(x, self.params["weight"], self.params.get("bias"),
                                          **self.kw)

    def backward(self, dy):
        dx, dw, db = convolution.conv_transpose_backward(dy, self._saved(), self.params["weight"],
                                                         bias=self.has_bias, **self.kw)
        self.grads = {"weight": dw, "bias": db} if self.has_bias else {"weight": dw}
        return dx


class ConvTranspose1d(ConvTranspose):
    """`ConvTranspose` of rank 1."""

    rank = 1


class ConvTranspose2d(ConvTranspose):
    """`ConvTranspose` of rank 2."""

    rank = 2


class ConvTranspose3d(ConvTranspose):
    """`ConvTranspose` of rank 3."""

    rank = 3


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


class MaxPool(Layer):
    """N-d max pooling (`npconv.max_pool`); the rank comes from the input (MaxPool1d/2d/3d
    check it).

    y (N, *P, C): P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1, or ceil.

    >>> x = np.zeros((2, 7, 7, 4))                                  # (N, H, W, C)
    >>> MaxPool(2)(x).shape, MaxPool2d(2, ceil_mode=True)(x).shape
    ((2, 3, 3, 4), (2, 4, 4, 4))
    """

    rank: int | None = None                     # fixed by MaxPool1d, MaxPool2d, MaxPool3d

    def __init__(self, kernel_size, *, stride=None, padding=0, dilation=1,
                 ceil_mode: bool = False, data_format: str = "channels_last") -> None:
        r = self.rank
        self.kw = dict(kernel_size=_pool_size(kernel_size, "kernel_size", r),
                       stride=_pool_size(stride, "stride", r, allow_none=True),
                       padding=_frozen(padding), dilation=_pool_size(dilation, "dilation", r),
                       ceil_mode=_args.check_flag(ceil_mode, "ceil_mode"),
                       data_format=_args.choice(data_format, _args.DATA_FORMATS, "data_format"))
        super().__init__()

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, self.rank and (self.rank,), self.kw["data_format"])
        y: Any
        codes = None
        if grad_enabled(_args.check_flag(training, "training")):
            y, codes = pooling.max_pool_codes(x, **self.kw)        # 1 byte per window
        else:
            y = pooling.max_pool(x, **self.kw)
        self._start(training, (x.shape, codes))                    # the argmax, not x
        return y

    def backward(self, dy):
        shape, codes = self._saved()
        return pooling.max_pool_codes_backward(dy, codes, shape, **self.kw)


class MaxPool1d(MaxPool):
    """`MaxPool` for x (N, L, C) / (N, C, L)."""

    rank = 1


class MaxPool2d(MaxPool):
    """`MaxPool` for x (N, H, W, C) / (N, C, H, W)."""

    rank = 2


class MaxPool3d(MaxPool):
    """`MaxPool` for x (N, D, H, W, C) / (N, C, D, H, W)."""

    rank = 3


class AvgPool(Layer):
    """N-d average pooling (`npconv.avg_pool`); the rank comes from the input (AvgPool1d/2d/3d
    check it)."""

    rank: int | None = None                     # fixed by AvgPool1d, AvgPool2d, AvgPool3d

    def __init__(self, kernel_size, *, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, data_format: str = "channels_last") -> None:
        r = self.rank
        self.kw = dict(kernel_size=_pool_size(kernel_size, "kernel_size", r),
                       stride=_pool_size(stride, "stride", r, allow_none=True),
                       padding=_frozen(padding),
                       ceil_mode=_args.check_flag(ceil_mode, "ceil_mode"),
                       count_include_pad=_args.check_flag(count_include_pad,
                                                            "count_include_pad"),
                       data_format=_args.choice(data_format, _args.DATA_FORMATS, "data_format"))
        super().__init__()

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, self.rank and (self.rank,), self.kw["data_format"])
        self._start(training, x.shape)
        return pooling.avg_pool(x, **self.kw)

    def backward(self, dy):
        return pooling.avg_pool_backward(dy, self._saved(), **self.kw)


class AvgPool1d(AvgPool):
    """`AvgPool` for x (N, L, C) / (N, C, L)."""

    rank = 1


class AvgPool2d(AvgPool):
    """`AvgPool` for x (N, H, W, C) / (N, C, H, W)."""

    rank = 2


class AvgPool3d(AvgPool):
    """`AvgPool` for x (N, D, H, W, C) / (N, C, D, H, W)."""

    rank = 3


class _Global(Layer):
    """A pool over every spatial dimension: only a data_format to configure."""

    def __init__(self, *, data_format: str = "channels_last") -> None:
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(data_format=self.data_format)


class GlobalAvgPool(_Global):
    """Mean over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C) (PyTorch:
    AdaptiveAvgPool2d(1) then Flatten)."""

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        self._start(training, x.shape)
        return pooling.global_avg_pool(x, data_format=self.data_format)

    def backward(self, dy):
        return pooling.global_avg_pool_backward(dy, self._saved(), data_format=self.data_format)


class AdaptiveAvgPool(Layer):
    """PyTorch's adaptive average pooling to a fixed output size, any rank
    (`functional.adaptive_avg_pool`; AdaptiveAvgPool1d/2d/3d check the rank): output cell i of
    a dimension averages inputs floor(i * S / P) <= s < ceil((i + 1) * S / P).

    >>> AdaptiveAvgPool2d((7, 7))(np.zeros((2, 13, 13, 8))).shape        # (N, H, W, C)
    (2, 7, 7, 8)
    """

    rank: int | None = None                     # fixed by AdaptiveAvgPool1d/2d/3d

    def __init__(self, output_size, *, data_format: str = "channels_last") -> None:
        size = _frozen(output_size)
        if not (_args.is_int(size) or (isinstance(size, tuple) and size)):
            raise TypeError(f"`output_size` must be an int or a tuple of ints (None keeps a "
                            f"size); got {output_size!r}")
        if isinstance(size, tuple) and self.rank is not None and len(size) != self.rank:
            raise ValueError(f"{type(self).__name__} takes an `output_size` of {self.rank} "
                             f"sizes; got {output_size!r}")
        for v in size if isinstance(size, tuple) else (size,):
            if v is not None and not (_args.is_int(v) and v >= 1):
                raise ValueError(f"`output_size` entries must be ints >= 1 or None; got "
                                 f"{output_size!r}")
        self.output_size = size
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(output_size=self.output_size, data_format=self.data_format)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, self.rank and (self.rank,), self.data_format)
        self._start(training, x.shape)
        return F.adaptive_avg_pool(x, self.output_size, data_format=self.data_format)

    def backward(self, dy):
        return F.adaptive_avg_pool_backward(dy, self._saved(), self.output_size,
                                            data_format=self.data_format)


class AdaptiveAvgPool1d(AdaptiveAvgPool):
    """`AdaptiveAvgPool` for x (N, L, C) / (N, C, L)."""

    rank = 1


class AdaptiveAvgPool2d(AdaptiveAvgPool):
    """`AdaptiveAvgPool` for x (N, H, W, C) / (N, C, H, W): torchvision's ResNet ends with
    AdaptiveAvgPool2d((1, 1)), its VGG with AdaptiveAvgPool2d((7, 7))."""

    rank = 2


class AdaptiveAvgPool3d(AdaptiveAvgPool):
    """`AdaptiveAvgPool` for x (N, D, H, W, C) / (N, C, D, H, W)."""

    rank = 3


class GlobalMaxPool(_Global):
    """Maximum over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C) (PyTorch:
    AdaptiveMaxPool2d(1) then Flatten; Keras: GlobalMaxPooling2D). The backward sends dy to the
    first maximum of each (n, c), from the forward's indices.

    >>> GlobalMaxPool()(np.arange(8.0).reshape(1, 2, 2, 2))               # (N, H, W, C)
    array([[6., 7.]])
    """

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        keep = grad_enabled(_args.check_flag(training, "training"))
        out = pooling.global_max_pool(x, data_format=self.data_format, return_indices=keep)
        y, indices = out if keep else (out, None)
        self._start(training, (x.shape, indices))
        return y

    def backward(self, dy):
        shape, indices = self._saved()
        return pooling.global_max_pool_backward(dy, shape, data_format=self.data_format,
                                                indices=indices)


# ---------------------------------------------------------------------------------------------
# Linear and reshaping
# ---------------------------------------------------------------------------------------------


class Linear(Layer):
    """Fully connected layer: x (N, D) @ weight (D, F) + bias (F,) -> (N, F).

    The weight is stored (in_features, out_features), the transpose of PyTorch's. Initialization
    as `Conv`, with fan_in = D (PyTorch's default: U(-1/sqrt(D), 1/sqrt(D)) for both arrays).

    >>> Linear(64, 10, rng=np.random.default_rng(0))(np.ones((5, 64), np.float32)).shape
    (5, 10)
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 init: str | None = None, rng: np.random.Generator | None = None,
                 dtype="float32") -> None:
        self.in_features = d = _positive_int(in_features, "in_features")
        self.out_features = f = _positive_int(out_features, "out_features")
        self.has_bias = _args.check_flag(bias, "bias")
        self.dtype = float_dtype(dtype)
        super().__init__(initializers.default_parameters(
            (d, f), (f,) if self.has_bias else None, d, f, init=init, rng=rng, dtype=self.dtype))

    def config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.has_bias, dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            hint = " (put a Flatten or GlobalAvgPool before it)" if x.ndim > 2 else ""
            raise ValueError(f"{self!r} expects `x` of shape (N, {self.in_features}); got "
                             f"shape {tuple(x.shape)}{hint}")
        self._start(training, x)
        return F.linear(x, self.params["weight"], self.params.get("bias"))

    def backward(self, dy, input_grad: bool = True):
        """dx from dy, filling grads; with input_grad=False grads only (None is returned)."""
        dx, dw, db = F.linear_backward(dy, self._saved(), self.params["weight"],
                                       bias=self.has_bias,
                                       input_grad=_args.check_flag(input_grad, "input_grad"))
        self.grads = {"weight": dw, "bias": db} if self.has_bias else {"weight": dw}
        return dx

    def _to_torch(self, key: str, array):
        return array.T if key == "weight" else array               # (out_features, in_features)

    _from_torch = _to_torch


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)).

    data_format None flattens in the input's memory order (C order). "channels_last" flattens
    an (N, *S, C) input in PyTorch's order for the same data, (C, *S), so that a Linear after it
    takes PyTorch's weights unchanged (torchvision's VGG flattens a 7x7x512 map that way);
    "channels_first" is the memory order of an (N, C, *S) input.

    >>> x = np.arange(4.0).reshape(1, 2, 1, 2)                       # (N, H, W, C)
    >>> Flatten()(x), Flatten(data_format="channels_last")(x)
    (array([[0., 1., 2., 3.]]), array([[0., 2., 1., 3.]]))
    """

    def __init__(self, *, data_format: str | None = None) -> None:
        self.data_format = None if data_format is None else _args.choice(
            data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return {} if self.data_format is None else dict(data_format=self.data_format)

    def _channels_moved(self, ndim: int) -> bool:
        return self.data_format == "channels_last" and ndim > 2

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"Flatten expects `x` with a batch axis and at least one more; got "
                             f"shape {tuple(x.shape)}")
        self._start(training, x.shape)
        if self._channels_moved(x.ndim):
            x = _backend.namespace(x).moveaxis(x, -1, 1)            # (N, C, *S), a view
        return x.reshape(x.shape[0], -1)                           # (N, prod(...))

    def backward(self, dy):
        shape = self._saved()
        _args.float_array(dy, "dy")
        if dy.shape != (shape[0], math.prod(shape[1:])):
            raise ValueError(f"`dy` must have shape {(shape[0], math.prod(shape[1:]))}; got "
                             f"{tuple(dy.shape)}")
        if self._channels_moved(len(shape)):
            dx = dy.reshape(shape[0], shape[-1], *shape[1:-1])     # (N, C, *S)
            return _backend.namespace(dy).moveaxis(dx, 1, -1)      # (N, *S, C), a view
        return dy.reshape(shape)                                   # like x


# ---------------------------------------------------------------------------------------------
# Activations and dropout
# ---------------------------------------------------------------------------------------------


def _cpu(*arrays) -> bool:
    """True when every array is a NumPy array: npconv.nn.activation, normalization, resample
    and merge (the fast kernels on the worker threads) take NumPy arrays only; CuPy arrays go
    to nn.functional's array-module ops where it has them."""
    return all(isinstance(a, np.ndarray) for a in arrays)


class _Activation(Layer):
    """y = f(x) elementwise. Backward reads what the subclass keeps: the output y
    (`keeps_output`: ReLU, ReLU6, LeakyReLU, Sigmoid, Tanh) or the input x (Hardswish,
    Hardsigmoid, SiLU, whose derivative y does not give). With inplace=True (PyTorch's
    argument) y is written into x when the running Module forward made x and nothing else uses
    it (`nn.can_overwrite`), never into an array the caller passed in; a layer that keeps x
    does so only when no backward will follow. In a recorded Module forward, the kept output
    is the layer's own (`module.recording`): backward writes dx into it."""

    keeps_output = True

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = _args.check_flag(inplace, "inplace")
        super().__init__()

    def config(self) -> dict:
        return dict(inplace=True) if self.inplace else {}

    _folded_into: Conv | None = None            # the Conv that eval() fused this layer into

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        keep = grad_enabled(_args.check_flag(training, "training"))
        conv = self._folded_into
        if conv is not None and not keep and x is conv._fold_out:
            conv._fold_out = None                                  # clipped by the conv
            return x
        overwrite = self.inplace and (self.keeps_output or not keep) and can_overwrite(x)
        y = self._f(x, x if overwrite else None)
        reuse = self.keeps_output and recording() and _cpu(y)
        self._start(training, (y if self.keeps_output else x, reuse))
        return y

    def backward(self, dy):
        kept, reuse = self._saved()
        _args.float_array(dy, "dy")
        check_shape(dy, (kept[0] if isinstance(kept, tuple) else kept).shape, "dy")
        return self._df(dy, kept, reclaim(kept) if reuse and _cpu(dy) else None)

    def _f(self, x, out):
        """y = f(x), written into `out` when given."""
        raise NotImplementedError

    def _df(self, dy, kept, out):
        """dx from dy and what forward kept, written into `out` (the kept y) when given."""
        raise NotImplementedError


class ReLU(_Activation):
    """max(x, 0); backward from y (y > 0 exactly where x > 0)."""

    clip = (0, None)                            # as `npconv.conv(..., clip=)` fuses it

    def _f(self, x, out):
        return activation.relu(x, out=out) if _cpu(x) else F.relu(x, out=out)

    def _df(self, dy, y, out):
        return activation.relu_backward(dy, y, out=out) if _cpu(dy, y) else \
            F.relu_backward(dy, y)


class ReLU6(_Activation):
    """min(max(x, 0), 6) (MobileNetV2's activation); backward from y."""

    clip = (0, 6)

    def _f(self, x, out):
        return activation.relu6(x, out=out) if _cpu(x) else F.relu6(x, out=out)

    def _df(self, dy, y, out):
        return activation.relu6_backward(dy, y, out=out) if _cpu(dy, y) else \
            F.relu6_backward(dy, y)


class LeakyReLU(_Activation):
    """x if x > 0 else negative_slope * x; backward from y (negative_slope >= 0 keeps signs)."""

    def __init__(self, negative_slope: float = 0.01, inplace: bool = False) -> None:
        self.negative_slope = F.real_in(negative_slope, 0.0, 1.0, "negative_slope",
                                        closed_high=True)
        super().__init__(inplace)

    def config(self) -> dict:
        return dict(negative_slope=self.negative_slope, **super().config())

    def _f(self, x, out):
        if _cpu(x):
            return activation.leaky_relu(x, self.negative_slope, out=out)
        return F.leaky_relu(x, self.negative_slope)

    def _df(self, dy, y, out):
        if _cpu(dy, y):
            return activation.leaky_relu_backward(dy, y, self.negative_slope, out=out)
        return F.leaky_relu_backward(dy, y, self.negative_slope)


class Tanh(_Activation):
    """tanh(x); backward from y: dy (1 - y^2)."""

    def __init__(self) -> None:
        super().__init__()

    def _f(self, x, out):
        return activation.tanh(x) if _cpu(x) else F.tanh(x)

    def _df(self, dy, y, out):
        return activation.tanh_backward(dy, y, out=out) if _cpu(dy, y) else \
            F.tanh_backward(dy, y)


class Sigmoid(_Activation):
    """1 / (1 + exp(-x)); backward from y: dy y (1 - y)."""

    def __init__(self) -> None:
        super().__init__()

    def _f(self, x, out):
        return activation.sigmoid(x) if _cpu(x) else F.sigmoid(x)

    def _df(self, dy, y, out):
        return activation.sigmoid_backward(dy, y, out=out) if _cpu(dy, y) else \
            F.sigmoid_backward(dy, y)


class Hardswish(_Activation):
    """x * relu6(x + 3) / 6 (MobileNetV3's activation); backward from x. NumPy arrays only."""

    keeps_output = False

    def _f(self, x, out):
        return activation.hardswish(x, out=out)

    def _df(self, dy, x, out):
        return activation.hardswish_backward(dy, x)


class Hardsigmoid(_Activation):
    """relu6(x + 3) / 6; backward from x. NumPy arrays only."""

    keeps_output = False

    def _f(self, x, out):
        return activation.hardsigmoid(x, out=out)

    def _df(self, dy, x, out):
        return activation.hardsigmoid_backward(dy, x)


class SiLU(_Activation):
    """x * sigmoid(x) (swish); backward from x, and from the forward's sigmoid when training
    keeps it (one more array kept, about half the backward's passes). NumPy arrays only."""

    keeps_output = False

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if not grad_enabled(_args.check_flag(training, "training")):
            return super().forward(x, training)
        y, s = activation.silu(x, keep_sigmoid=True)
        self._start(training, ((x, s), False))
        return y

    def _f(self, x, out):
        return activation.silu(x, out=out)

    def _df(self, dy, kept, out):
        x, s = kept
        return activation.silu_backward(dy, x, sigmoid=s)


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability `p` and scale the
    rest by 1 / (1 - p); in evaluation, the identity. The masks are drawn from `rng`, or from
    npconv.nn.init's default generator when it is None (`nn.manual_seed` repeats them); it may
    be set later: `layer.rng = np.random.default_rng(seed)`."""

    def __init__(self, p: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        self.p = F.real_in(p, 0.0, 1.0, "p")
        if rng is not None:
            initializers.generator(rng)                            # TypeError for a non-generator
        self.rng = rng
        super().__init__()

    def config(self) -> dict:
        return dict(p=self.p)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if not _args.check_flag(training, "training") or self.p == 0:
            self._start(training, x.shape)                         # the identity: no mask
            return x.copy()
        y, mask = F.dropout(x, self.p, rng=initializers.generator(self.rng))
        self._start(training, mask)
        return y

    def backward(self, dy):
        mask = self._saved()
        if isinstance(mask, tuple):                                # x's shape: the identity
            _args.float_array(dy, "dy")
            check_shape(dy, mask, "dy")
            return dy.copy()
        return F.dropout_backward(dy, mask)


# ---------------------------------------------------------------------------------------------
# Batch normalization
# ---------------------------------------------------------------------------------------------


class BatchNorm(Layer):
    """Batch normalization over all axes but the channel axis, for x of any rank (PyTorch's
    BatchNorm1d/2d/3d in one class; those three check the rank).

    params weight (C,) = 1 and bias (C,) = 0 (gamma and beta); buffers running_mean (C,) = 0,
    running_var (C,) = 1 and num_batches_tracked () = 0. Training normalizes with the batch
    statistics (biased variance) and counts the batch in num_batches_tracked; evaluation
    normalizes with the running statistics. The running statistics follow `convention`:

    - "torch" (PyTorch's): (1 - momentum) * old + momentum * batch, the batch variance unbiased;
      momentum None: the cumulative average (momentum = 1 / num_batches_tracked);
    - "keras" (Keras' BatchNormalization): momentum * old + (1 - momentum) * batch, the batch
      variance biased; Keras' defaults are momentum=0.99, eps=1e-3.

    The maths is npconv.nn.normalization's (one read of x for the statistics, float32 sums
    kept at two-pass accuracy); CuPy arrays take nn.functional.batch_norm (PyTorch's
    convention only). y is a new array (in evaluation mode after `model.eval()` folded the
    layer into the convolution before it, no array at all); a recorded training forward's
    backward writes dx into x when no other recorded call uses x (`nn.can_overwrite`).

    >>> bn = BatchNorm2d(4)
    >>> y = bn(np.random.default_rng(0).normal(3, 2, (64, 5, 5, 4)), training=True)
    >>> bool(abs(y.mean()) < 1e-6), bn.buffers["running_mean"].round(2)  # 0.9 * 0 + 0.1 * 3
    (True, array([0.3, 0.3, 0.3, 0.3], dtype=float32))
    """

    ranks: tuple[int, ...] | None = None        # spatial ranks allowed by BatchNorm1d/2d/3d

    def __init__(self, num_features: int, *, eps: float = 1e-5, momentum: float | None = 0.1,
                 convention: str = "torch", data_format: str = "channels_last",
                 dtype="float32") -> None:
        self.num_features = c = _positive_int(num_features, "num_features")
        self.eps = _eps(eps)
        self.momentum = None if momentum is None else F.real_in(momentum, 0.0, 1.0, "momentum",
                                                                closed_high=True)
        self.convention = _args.choice(convention, normalization.CONVENTIONS, "convention")
        if momentum is None and convention == "keras":
            raise ValueError("`momentum` None (a cumulative average) is PyTorch's convention; "
                             "convention='keras' needs a number (Keras' default is 0.99)")
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.dtype = float_dtype(dtype)
        full = initializers.full                                   # placeholders in meta()
        super().__init__(
            params=dict(weight=full(c, 1, self.dtype), bias=full(c, 0, self.dtype)),  # (C,)
            buffers=dict(running_mean=full(c, 0, self.dtype),                      # (C,)
                         running_var=full(c, 1, self.dtype),                       # (C,)
                         num_batches_tracked=full((), 0, np.int64)))               # ()

    def config(self) -> dict:
        """The constructor's arguments; `convention` only when not "torch" (files written
        before it existed hold the same config)."""
        extra = {} if self.convention == "torch" else dict(convention=self.convention)
        return dict(num_features=self.num_features, eps=self.eps, momentum=self.momentum,
                    **extra, data_format=self.data_format, dtype=self.dtype.name)

    _folded_into: Conv | None = None            # the Conv that eval() folded this layer into

    def forward(self, x, training: bool = False):
        _check_rank(self, x, self.ranks, self.data_format)
        F.check_channels(x, self.num_features, self.data_format, self)
        training = _args.check_flag(training, "training")
        keep = grad_enabled(training)
        if self._folded_into is not None:
            if not training and not keep:
                return self._folded(x)
            self._folded_into._unfold()                            # weights may change now
        if training:
            count = self.buffers["num_batches_tracked"]
            count += 1                                             # in place: views stay valid
        # an input no recorded call has used is dead once backward has passed this layer
        # (`module.recording`): dx goes into it; it stays read-only until then
        reuse = keep and _cpu(x) and can_overwrite(x, claim=False)
        y, cache = self._normalize(x, training) if _cpu(x) else \
            self._normalize_xp(x, training)
        self._start(training, (*cache, reuse))
        return y

    def _folded(self, x):
        """x itself: the folded convolution before this layer normalized it already."""
        conv = self._folded_into
        if conv is None or x is not conv._fold_out:
            raise RuntimeError(
                f"{self!r} was folded into the convolution before it by eval(), but its input "
                f"is not that convolution's output: this forward does not feed one into the "
                f"other; call model.train() to undo the folding")
        if conv._fused_act is None:                                # else the ReLU takes it
            conv._fold_out = None
        return x

    def _normalize(self, x, training: bool):
        """(y, what backward needs) through npconv.nn.normalization (NumPy arrays)."""
        w, b = self.params["weight"], self.params["bias"]
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        kw: dict[str, Any] = dict(eps=self.eps, data_format=self.data_format)
        if not training:
            y = normalization.batch_norm_eval(x, w, b, rm, rv, **kw)
            return y, (x, rm.copy(), rv.copy(), False)
        y, mean, var = normalization.batch_norm_train(x, w, b, **kw)
        new = normalization.running_stats_update(
            rm, rv, mean, var, x.size // self.num_features, momentum=self.momentum,
            convention=self.convention, num_batches_tracked=int(self.buffers[
                "num_batches_tracked"]))
        rm[...], rv[...] = new                                     # in place: views stay valid
        return y, (x, mean, var, True)

    def _normalize_xp(self, x, training: bool):
        """(y, what backward needs) through nn.functional (CuPy arrays, PyTorch's convention)."""
        if self.convention != "torch":
            raise TypeError(f"{self!r}: convention='keras' runs on NumPy arrays only")
        count = float(self.buffers["num_batches_tracked"])
        momentum = (1 / count if self.momentum is None else self.momentum) if training else 0.0
        rm, rv = self.buffers["running_mean"], self.buffers["running_var"]
        y, mean, var = F.batch_norm(x, self.params["weight"], self.params["bias"], rm, rv,
                                    training=training, momentum=momentum, eps=self.eps,
                                    data_format=self.data_format)
        if training:
            rm[...], rv[...] = mean, var                           # the running statistics
        return y, (x, None if training else rm.copy(), None if training else rv.copy(),
                   training)

    def backward(self, dy):
        x, mean, var, training, reuse = self._saved()
        w, kw = self.params["weight"], dict(eps=self.eps, data_format=self.data_format)
        if _cpu(dy, x):
            out = reclaim(x) if reuse and x.flags.c_contiguous else None
            dx, dgamma, dbeta = normalization.batch_norm_backward(dy, x, w, mean, var, **kw,
                                                                  training=training, out=out)
        else:
            dx, dgamma, dbeta = F.batch_norm_backward(dy, x, w, mean, var, **kw,
                                                      training=training)
        self.grads = {"weight": dgamma, "bias": dbeta}
        return dx


class BatchNorm1d(BatchNorm):
    """`BatchNorm` for x (N, C) or (N, L, C) / (N, C, L)."""

    ranks = (0, 1)


class BatchNorm2d(BatchNorm):
    """`BatchNorm` for x (N, H, W, C) / (N, C, H, W)."""

    ranks = (2,)


class BatchNorm3d(BatchNorm):
    """`BatchNorm` for x (N, D, H, W, C) / (N, C, D, H, W)."""

    ranks = (3,)


def _affine(shape, affine: bool, dtype) -> dict:
    """weight (ones) and bias (zeros) of `shape` when affine, else none."""
    full = initializers.full                                       # placeholders in meta()
    return dict(weight=full(shape, 1, dtype), bias=full(shape, 0, dtype)) if affine else {}


class LayerNorm(Layer):
    """PyTorch's LayerNorm: each sample normalized by the mean and (biased) variance of its
    trailing `normalized_shape` values, then weight * xhat + bias elementwise (params of shape
    normalized_shape, 1 and 0; none with elementwise_affine=False, no bias with bias=False).
    The trailing axes of the array as given: normalized_shape=(C,) on channels_last images
    normalizes each pixel's channels (ConvNeXt's layer norm). npconv.nn.normalization's
    maths; NumPy arrays only.

    >>> LayerNorm(3)(np.array([[1.0, 2.0, 6.0]])).round(3)
    array([[-0.926, -0.463,  1.389]])
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, *, dtype="float32") -> None:
        shape = _frozen(normalized_shape)
        self.normalized_shape = (_positive_int(shape, "normalized_shape"),) if \
            _args.is_int(shape) else _args.positive_tuple(shape, len(shape), "normalized_shape") \
            if isinstance(shape, tuple) and shape else _positive_int(shape, "normalized_shape")
        self.eps = _eps(eps)
        self.elementwise_affine = _args.check_flag(elementwise_affine, "elementwise_affine")
        self.has_bias = _args.check_flag(bias, "bias")
        self.dtype = float_dtype(dtype)
        params = _affine(self.normalized_shape, self.elementwise_affine, self.dtype)
        if not self.has_bias:
            params.pop("bias", None)
        super().__init__(params)

    def config(self) -> dict:
        return dict(normalized_shape=self.normalized_shape, eps=self.eps,
                    elementwise_affine=self.elementwise_affine, bias=self.has_bias,
                    dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        y, mean, var = normalization.layer_norm(x, self.normalized_shape,
                                                self.params.get("weight"),
                                                self.params.get("bias"), eps=self.eps)
        self._start(training, (x, mean, var))
        return y

    def backward(self, dy):
        x, mean, var = self._saved()
        dx, dw, db = normalization.layer_norm_backward(
            dy, x, self.normalized_shape, self.params.get("weight"), mean, var, eps=self.eps)
        self.grads = {k: g for k, g in (("weight", dw), ("bias", db)) if k in self.params}
        return dx


class GroupNorm(Layer):
    """PyTorch's GroupNorm: each image's channels split into num_groups groups, each group
    normalized by its mean and (biased) variance over its channels and every spatial position,
    then weight * xhat + bias per channel (params (C,), 1 and 0; none with affine=False).
    npconv.nn.normalization's maths; NumPy arrays only.

    >>> GroupNorm(2, 4)(np.arange(8.0).reshape(1, 2, 4)).round(2)      # (N, L, C)
    array([[[-1.21, -0.73, -1.21, -0.73],
            [ 0.73,  1.21,  0.73,  1.21]]])
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, *, data_format: str = "channels_last",
                 dtype="float32") -> None:
        self.num_groups = _positive_int(num_groups, "num_groups")
        self.num_channels = c = _positive_int(num_channels, "num_channels")
        if c % self.num_groups:
            raise ValueError(f"`num_groups` must divide num_channels; got num_groups="
                             f"{num_groups}, num_channels={num_channels}")
        self.eps = _eps(eps)
        self.affine = _args.check_flag(affine, "affine")
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.dtype = float_dtype(dtype)
        super().__init__(_affine((c,), self.affine, self.dtype))

    def config(self) -> dict:
        return dict(num_groups=self.num_groups, num_channels=self.num_channels, eps=self.eps,
                    affine=self.affine, data_format=self.data_format, dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        F.check_channels(x, self.num_channels, self.data_format, self)
        y, mean, var = normalization.group_norm(
            x, self.num_groups, self.params.get("weight"), self.params.get("bias"),
            eps=self.eps, data_format=self.data_format)
        self._start(training, (x, mean, var))
        return y

    def backward(self, dy):
        x, mean, var = self._saved()
        dx, dw, db = normalization.group_norm_backward(
            dy, x, self.num_groups, self.params.get("weight"), mean, var, eps=self.eps,
            data_format=self.data_format)
        self.grads = {"weight": dw, "bias": db} if self.affine else {}
        return dx


def _eps(eps) -> float:
    value = F.real_in(eps, 0.0, np.inf, "eps")
    if value <= 0:
        raise ValueError(f"`eps` must be > 0; got {eps!r}")
    return value


# ---------------------------------------------------------------------------------------------
# Resampling
# ---------------------------------------------------------------------------------------------


class Upsample(Layer):
    """PyTorch's Upsample (F.interpolate): the spatial axes resized to `size`, or scaled by
    `scale_factor` (exactly one of them), with mode "nearest", "nearest-exact", "linear" (1-D),
    "bilinear" (2-D) or "trilinear" (3-D), and PyTorch's `align_corners` (linear modes only;
    None means False) and `recompute_scale_factor`. npconv.nn.resample's maths (PyTorch's
    index rules exactly); NumPy arrays only.

    >>> Upsample(scale_factor=2, mode="bilinear", align_corners=True)(
    ...     np.zeros((1, 3, 5, 8))).shape                               # (N, H, W, C)
    (1, 6, 10, 8)
    """

    def __init__(self, size=None, scale_factor=None, mode: str = "nearest",
                 align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
                 *, data_format: str = "channels_last") -> None:
        if (size is None) == (scale_factor is None):
            raise ValueError(f"Upsample takes exactly one of `size` and `scale_factor`; got "
                             f"size={size!r}, scale_factor={scale_factor!r}")
        self.kw = dict(size=_frozen(size), scale_factor=_frozen(scale_factor),
                       mode=_args.choice(mode, resample.MODES, "mode"),
                       align_corners=align_corners, recompute_scale_factor=recompute_scale_factor,
                       data_format=_args.choice(data_format, _args.DATA_FORMATS, "data_format"))
        super().__init__()

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, training: bool = False):
        y = resample.upsample(x, **self.kw)
        self._start(training, x.shape)
        return y

    def backward(self, dy):
        return resample.upsample_backward(dy, self._saved(), **self.kw)


LAYERS = {cls.__name__: cls for cls in (
    AdaptiveAvgPool, AdaptiveAvgPool1d, AdaptiveAvgPool2d, AdaptiveAvgPool3d, Add, AvgPool,
    AvgPool1d, AvgPool2d, AvgPool3d, BatchNorm, BatchNorm1d, BatchNorm2d, BatchNorm3d, Concat,
    Conv, Conv1d, Conv2d, Conv3d, ConvTranspose, ConvTranspose1d, ConvTranspose2d,
    ConvTranspose3d, Dropout, Flatten, GlobalAvgPool, GlobalMaxPool, GroupNorm, Hardsigmoid,
    Hardswish, Identity, LayerNorm, LeakyReLU, Linear, MaxPool, MaxPool1d, MaxPool2d, MaxPool3d,
    ReLU, ReLU6, Sequential, Sigmoid, SiLU, Tanh, Upsample, ZeroPad)}
