"""Layers: parameters, hyperparameters and a cache, around the functional ops.

A layer holds no maths (tinygrad's rule): `forward(x, training=...)` checks the input, keeps
what the backward pass needs and calls one functional op (`npconv.conv`, `npconv.max_pool`,
`npconv.nn.functional.dense`, ...); `backward(dy)` calls that op's backward, stores the
parameter gradients in `grads` (the same keys as `params`) and returns dx. Non-trained state
that is saved with a model (batch norm's running statistics) lives in `buffers`.

Every layer takes `data_format` where it matters ("channels_last": x (N, *S, C), the default;
"channels_first": x (N, C, *S)), and its weights use the matching layout of `npconv.conv`:
(*K, C/G, F) or PyTorch's (F, C/G, *K). A layer is rebuilt from `type(layer).__name__` and
`layer.config()` (JSON-ready keyword arguments), which is how `npconv.nn.save` stores it.

>>> import numpy as np
>>> from npconv import nn
>>> rng = np.random.default_rng(0)
>>> model = nn.Sequential(nn.Conv(1, 4, (3, 3), padding=1, rng=rng), nn.ReLU(),
...                       nn.MaxPool(2), nn.Flatten(), nn.Dense(4 * 4 * 4, 10, rng=rng))
>>> logits = model.forward(np.zeros((2, 8, 8, 1), np.float32), training=True)   # (N, 10)
>>> dx = model.backward(np.ones_like(logits))                                   # (N, 8, 8, 1)
>>> logits.shape, dx.shape, sorted(model.params) == sorted(model.grads)
((2, 10), (2, 8, 8, 1), True)
"""

from __future__ import annotations

import math

import numpy as np

from npconv import _args, convolution, pooling
from npconv.nn import functional as F
from npconv.nn import init as initializers
from npconv.spec import resolve_padding

__all__ = [
    "LAYERS",
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


def _kernel_tuple(kernel_size) -> tuple[int, ...]:
    """A layer's kernel_size sets its rank, so it must be a tuple: (3, 3) for 2-D."""
    if not isinstance(kernel_size, (tuple, list)) or not kernel_size:
        raise TypeError(
            f"`kernel_size` must be a tuple with one int per spatial dimension (its length sets "
            f"the rank: (3, 3) for 2-D, (3,) for 1-D); got {kernel_size!r}"
        )
    return _args.positive_tuple(tuple(kernel_size), len(kernel_size), "kernel_size")


def _pool_size(value, name: str, allow_none: bool = False):
    """An int or a tuple of ints >= 1, kept as given (a pool's rank comes from its input)."""
    if value is None and allow_none:
        return None
    if _args.is_int(value):
        return _args.positive_tuple(value, 1, name)[0]
    if isinstance(value, (tuple, list)) and value:
        return _args.positive_tuple(tuple(value), len(value), name)
    raise TypeError(f"`{name}` must be an int or a tuple of ints; got {value!r}")


def _padding(padding, kernel_size, stride, dilation):
    """"valid", "same", "full" kept; ints and pairs resolved to explicit (lo, hi) pairs."""
    if isinstance(padding, str):
        return _args.choice(padding, ("valid", "same", "full"), "padding")
    if isinstance(padding, list):
        padding = tuple(tuple(p) if isinstance(p, list) else p for p in padding)
    return resolve_padding(padding, (1,) * len(kernel_size), kernel_size, stride, dilation)


def _float_dtype(dtype) -> np.dtype:
    try:
        dt = np.dtype(dtype)
    except TypeError:
        dt = None
    if dt not in _args.FLOAT_DTYPES:
        raise TypeError(f"`dtype` must be float16, float32 or float64; got {dtype!r}")
    return dt


def _frozen(value):
    """Lists (from JSON) back to tuples, recursively."""
    return tuple(map(_frozen, value)) if isinstance(value, (list, tuple)) else value


# ---------------------------------------------------------------------------------------------
# Base class
# ---------------------------------------------------------------------------------------------


class Layer:
    """Base of every layer.

    Attributes
    ----------
    params : dict of str -> ndarray
        Trained arrays; an optimizer updates them in place.
    grads : dict of str -> ndarray
        The same keys, filled by `backward` (zeros before the first one).
    buffers : dict of str -> ndarray
        Saved, not trained (batch norm's running statistics).
    """

    def __init__(self, params: dict | None = None, buffers: dict | None = None) -> None:
        self.params = dict(params or {})
        self.grads = {k: np.zeros_like(v) for k, v in self.params.items()}  # like params
        self.buffers = dict(buffers or {})
        self._cache = None

    def forward(self, x, training: bool = False):
        """y = layer(x); `training` selects batch statistics and dropout."""
        raise NotImplementedError

    def backward(self, dy):
        """dx from dy = dL/dy, for the input of the last `forward`; fills `grads`."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor keyword arguments, JSON-ready (the random generator excluded)."""
        return {}

    def __call__(self, x, training: bool = False):
        return self.forward(x, training=training)

    def to(self, xp):
        """Move params, grads and buffers to the array module `xp` (numpy or cupy); returns self.

        >>> layer = Dense(3, 2, rng=np.random.default_rng(0)).to(np)
        >>> type(layer.params["w"]).__name__
        'ndarray'
        """
        for attr in ("params", "grads", "buffers"):
            setattr(self, attr, {k: xp.asarray(v) for k, v in getattr(self, attr).items()})
        self._cache = None
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    def _start(self, training, cache) -> None:
        """Check the mode flag and keep what backward needs."""
        pooling.check_flag(training, "training")
        self._cache = cache

    def _saved(self):
        if self._cache is None:
            raise RuntimeError(f"{type(self).__name__}.backward called before forward")
        return self._cache


def _check_rank(layer: Layer, x, rank: int, channels: int, data_format: str) -> None:
    _args.float_array(x, "x")
    if x.ndim != rank + 2:
        layout = "(N, *S, C)" if data_format == "channels_last" else "(N, C, *S)"
        raise ValueError(
            f"{layer!r} expects `x` of shape {layout} with {rank} spatial dimension(s); "
            f"got shape {tuple(x.shape)}"
        )
    F.check_channels(x, channels, data_format, repr(layer))


# ---------------------------------------------------------------------------------------------
# Convolutions
# ---------------------------------------------------------------------------------------------


def _conv_args(in_channels, out_channels, kernel_size, groups, stride, dilation, padding):
    """Checked (C, F, K) and the geometry keywords shared by Conv and ConvTranspose."""
    c = _positive_int(in_channels, "in_channels")
    f = _positive_int(out_channels, "out_channels")
    k = _kernel_tuple(kernel_size)
    g = _positive_int(groups, "groups")
    if c % g or f % g:
        raise ValueError(f"`groups` must divide in_channels and out_channels; got groups={g}, "
                         f"in_channels={c}, out_channels={f}")
    stride = _args.positive_tuple(_frozen(stride), len(k), "stride")
    dilation = _args.positive_tuple(_frozen(dilation), len(k), "dilation")
    padding = _padding(padding, k, stride, dilation)
    return c, f, k, dict(stride=stride, padding=padding, dilation=dilation, groups=g)


def _with_bias(w, out_channels: int, bias: bool) -> dict:
    """{"w": w} plus a zero bias (F,) in w's dtype when `bias`."""
    return {"w": w, "b": np.zeros(out_channels, dtype=w.dtype)} if bias else {"w": w}  # b (F,)


class Conv(Layer):
    """N-d convolution layer; the rank is len(kernel_size).

    Weight w (*K, C/G, F) channels_last or (F, C/G, *K) channels_first, bias b (F,); the other
    arguments are those of `npconv.conv`. `init` names an `npconv.nn.init` initializer, drawn
    from `rng` with fan_in = C/G * prod(K), fan_out = F/G * prod(K); the bias starts at zero.
    Output size per dimension: P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1.

    >>> conv = Conv(3, 8, (3, 3), stride=2, padding="same", rng=np.random.default_rng(0))
    >>> conv.params["w"].shape, conv(np.zeros((2, 32, 32, 3), np.float32)).shape
    ((3, 3, 3, 8), (2, 16, 16, 8))
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, stride=1,
                 padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 padding_mode: str = "zeros", data_format: str = "channels_last",
                 init: str = "he_normal", rng: np.random.Generator | None = None,
                 dtype="float32") -> None:
        c, f, k, self.kw = _conv_args(in_channels, out_channels, kernel_size, groups, stride,
                                      dilation, padding)
        self.kw["data_format"] = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.kw["padding_mode"] = _args.choice(padding_mode, _args.PADDING_MODES,
                                               "padding_mode")
        self.in_channels, self.out_channels, self.kernel_size = c, f, k
        self.bias = pooling.check_flag(bias, "bias")
        self.init, self.dtype = init, _float_dtype(dtype)
        g = self.kw["groups"]
        w_shape = (*k, c // g, f) if data_format == "channels_last" else (f, c // g, *k)
        w = initializers.get(init)(w_shape, c // g * math.prod(k), f // g * math.prod(k),
                                   rng=rng, dtype=self.dtype)
        super().__init__(_with_bias(w, f, self.bias))

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, **self.kw, bias=self.bias, init=self.init,
                    dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, len(self.kernel_size), self.in_channels, self.kw["data_format"])
        self._start(training, x)
        return convolution.conv(x, self.params["w"], self.params.get("b"), **self.kw)

    def backward(self, dy):
        dx, dw, db = convolution.conv_backward(dy, self._saved(), self.params["w"],
                                               bias=self.bias, **self.kw)
        self.grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx


class ConvTranspose(Layer):
    """N-d transposed convolution layer (PyTorch's ConvTransposeNd); rank = len(kernel_size).

    Weight w (*K, F/G, C) channels_last or (C, F/G, *K) channels_first (C = in_channels,
    F = out_channels), bias b (F,); the other arguments are those of `npconv.conv_transpose`.
    fan_in = F/G * prod(K) as PyTorch counts it for this weight. Output size per dimension:
    O = (S - 1) * stride - lo - hi + dilation * (K - 1) + output_padding + 1.

    >>> up = ConvTranspose(8, 3, (2, 2), stride=2, rng=np.random.default_rng(0))
    >>> up(np.zeros((2, 16, 16, 8), np.float32)).shape              # (16 - 1) * 2 + 2
    (2, 32, 32, 3)
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size, *, stride=1,
                 padding=0, output_padding=0, dilation=1, groups: int = 1, bias: bool = True,
                 data_format: str = "channels_last", init: str = "he_normal",
                 rng: np.random.Generator | None = None, dtype="float32") -> None:
        c, f, k, self.kw = _conv_args(in_channels, out_channels, kernel_size, groups, stride,
                                      dilation, padding)
        self.kw["output_padding"] = _args.int_tuple(_frozen(output_padding), len(k),
                                                    "output_padding")
        self.kw["data_format"] = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.in_channels, self.out_channels, self.kernel_size = c, f, k
        self.bias = pooling.check_flag(bias, "bias")
        self.init, self.dtype = init, _float_dtype(dtype)
        g = self.kw["groups"]
        w_shape = (*k, f // g, c) if data_format == "channels_last" else (c, f // g, *k)
        w = initializers.get(init)(w_shape, f // g * math.prod(k), c // g * math.prod(k),
                                   rng=rng, dtype=self.dtype)
        super().__init__(_with_bias(w, f, self.bias))

    def config(self) -> dict:
        return dict(in_channels=self.in_channels, out_channels=self.out_channels,
                    kernel_size=self.kernel_size, **self.kw, bias=self.bias, init=self.init,
                    dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        _check_rank(self, x, len(self.kernel_size), self.in_channels, self.kw["data_format"])
        self._start(training, x)
        return convolution.conv_transpose(x, self.params["w"], self.params.get("b"), **self.kw)

    def backward(self, dy):
        dx, dw, db = convolution.conv_transpose_backward(dy, self._saved(), self.params["w"],
                                                         bias=self.bias, **self.kw)
        self.grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


class MaxPool(Layer):
    """N-d max pooling (`npconv.max_pool`); the rank comes from the input.

    y (N, *P, C): P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1, or ceil.

    >>> x = np.zeros((2, 7, 7, 4))                                  # (N, H, W, C)
    >>> MaxPool(2)(x).shape, MaxPool(2, ceil_mode=True)(x).shape
    ((2, 3, 3, 4), (2, 4, 4, 4))
    """

    def __init__(self, kernel_size, *, stride=None, padding=0, dilation=1,
                 ceil_mode: bool = False, data_format: str = "channels_last") -> None:
        self.kw = dict(kernel_size=_pool_size(_frozen(kernel_size), "kernel_size"),
                       stride=_pool_size(_frozen(stride), "stride", allow_none=True),
                       padding=_frozen(padding), dilation=_pool_size(_frozen(dilation),
                                                                     "dilation"),
                       ceil_mode=pooling.check_flag(ceil_mode, "ceil_mode"),
                       data_format=_args.choice(data_format, _args.DATA_FORMATS, "data_format"))
        super().__init__()

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, training: bool = False):
        self._start(training, x)
        return pooling.max_pool(x, **self.kw)

    def backward(self, dy):
        return pooling.max_pool_backward(dy, self._saved(), **self.kw)


class AvgPool(Layer):
    """N-d average pooling (`npconv.avg_pool`); the rank comes from the input."""

    def __init__(self, kernel_size, *, stride=None, padding=0, ceil_mode: bool = False,
                 count_include_pad: bool = True, data_format: str = "channels_last") -> None:
        self.kw = dict(kernel_size=_pool_size(_frozen(kernel_size), "kernel_size"),
                       stride=_pool_size(_frozen(stride), "stride", allow_none=True),
                       padding=_frozen(padding),
                       ceil_mode=pooling.check_flag(ceil_mode, "ceil_mode"),
                       count_include_pad=pooling.check_flag(count_include_pad,
                                                            "count_include_pad"),
                       data_format=_args.choice(data_format, _args.DATA_FORMATS, "data_format"))
        super().__init__()

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        self._start(training, x.shape)
        return pooling.avg_pool(x, **self.kw)

    def backward(self, dy):
        return pooling.avg_pool_backward(dy, self._saved(), **self.kw)


class GlobalAvgPool(Layer):
    """Mean over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C)."""

    def __init__(self, *, data_format: str = "channels_last") -> None:
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(data_format=self.data_format)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        self._start(training, x.shape)
        return pooling.global_avg_pool(x, data_format=self.data_format)

    def backward(self, dy):
        return pooling.global_avg_pool_backward(dy, self._saved(), data_format=self.data_format)


# ---------------------------------------------------------------------------------------------
# Dense and reshaping
# ---------------------------------------------------------------------------------------------


class Dense(Layer):
    """Fully connected layer: x (N, D) @ w (D, F) + b (F,) -> (N, F).

    `init` names an `npconv.nn.init` initializer (fan_in = D, fan_out = F); b starts at zero.

    >>> Dense(64, 10, rng=np.random.default_rng(0))(np.ones((5, 64), np.float32)).shape
    (5, 10)
    """

    def __init__(self, in_features: int, out_features: int, *, bias: bool = True,
                 init: str = "he_normal", rng: np.random.Generator | None = None,
                 dtype="float32") -> None:
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        self.bias, self.init = pooling.check_flag(bias, "bias"), init
        self.dtype = _float_dtype(dtype)
        d, f = self.in_features, self.out_features
        params = {"w": initializers.get(init)((d, f), d, f, rng=rng, dtype=self.dtype)}
        if self.bias:
            params["b"] = np.zeros(f, dtype=self.dtype)            # (F,)
        super().__init__(params)

    def config(self) -> dict:
        return dict(in_features=self.in_features, out_features=self.out_features,
                    bias=self.bias, init=self.init, dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if x.ndim != 2 or x.shape[1] != self.in_features:
            hint = " (put a Flatten or GlobalAvgPool before it)" if x.ndim > 2 else ""
            raise ValueError(f"{self!r} expects `x` of shape (N, {self.in_features}); got "
                             f"shape {tuple(x.shape)}{hint}")
        self._start(training, x)
        return F.dense(x, self.params["w"], self.params.get("b"))

    def backward(self, dy):
        dx, dw, db = F.dense_backward(dy, self._saved(), self.params["w"], bias=self.bias)
        self.grads = {"w": dw, "b": db} if self.bias else {"w": dw}
        return dx


class Flatten(Layer):
    """(N, ...) -> (N, prod(...)), in the input's memory order (C order)."""

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if x.ndim < 2:
            raise ValueError(f"Flatten expects `x` with a batch axis and at least one more; got "
                             f"shape {tuple(x.shape)}")
        self._start(training, x.shape)
        return x.reshape(x.shape[0], -1)                           # (N, prod(...))

    def backward(self, dy):
        shape = self._saved()
        _args.float_array(dy, "dy")
        if dy.shape != (shape[0], math.prod(shape[1:])):
            raise ValueError(f"`dy` must have shape {(shape[0], math.prod(shape[1:]))}; got "
                             f"{tuple(dy.shape)}")
        return dy.reshape(shape)                                   # like x


# ---------------------------------------------------------------------------------------------
# Activations and dropout
# ---------------------------------------------------------------------------------------------


class ReLU(Layer):
    """max(x, 0)."""

    def forward(self, x, training: bool = False):
        self._start(training, x)
        return F.relu(x)

    def backward(self, dy):
        return F.relu_backward(dy, self._saved())


class LeakyReLU(Layer):
    """x if x > 0 else negative_slope * x."""

    def __init__(self, negative_slope: float = 0.01) -> None:
        self.negative_slope = F.real_in(negative_slope, 0.0, 1.0, "negative_slope",
                                        closed_high=True)
        super().__init__()

    def config(self) -> dict:
        return dict(negative_slope=self.negative_slope)

    def forward(self, x, training: bool = False):
        self._start(training, x)
        return F.leaky_relu(x, self.negative_slope)

    def backward(self, dy):
        return F.leaky_relu_backward(dy, self._saved(), self.negative_slope)


class Tanh(Layer):
    """tanh(x); backward uses the saved output."""

    def forward(self, x, training: bool = False):
        y = F.tanh(x)
        self._start(training, y)
        return y

    def backward(self, dy):
        return F.tanh_backward(dy, self._saved())


class Sigmoid(Layer):
    """1 / (1 + exp(-x)); backward uses the saved output."""

    def forward(self, x, training: bool = False):
        y = F.sigmoid(x)
        self._start(training, y)
        return y

    def backward(self, dy):
        return F.sigmoid_backward(dy, self._saved())


class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability `rate` and scale the
    rest by 1 / (1 - rate); in evaluation, the identity. Training needs `rng` (it may be set
    later: `layer.rng = np.random.default_rng(seed)`; a loaded model has none)."""

    def __init__(self, rate: float = 0.5, *, rng: np.random.Generator | None = None) -> None:
        self.rate = F.real_in(rate, 0.0, 1.0, "rate")
        self.rng = rng
        super().__init__()

    def config(self) -> dict:
        return dict(rate=self.rate)

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if not pooling.check_flag(training, "training") or self.rate == 0:
            self._start(training, np.ones_like(x))                 # mask like x
            return x.copy()
        if self.rng is None:
            raise ValueError("Dropout needs a numpy.random.Generator to train: pass "
                             "rng=np.random.default_rng(seed) or set layer.rng; got rng=None")
        y, mask = F.dropout(x, self.rate, rng=self.rng)
        self._start(training, mask)
        return y

    def backward(self, dy):
        return F.dropout_backward(dy, self._saved())


# ---------------------------------------------------------------------------------------------
# Batch normalization
# ---------------------------------------------------------------------------------------------


class BatchNorm(Layer):
    """Batch normalization over all axes but the channel axis (PyTorch's BatchNorm1d/2d/3d).

    params gamma (C,) = 1 and beta (C,) = 0; buffers running_mean (C,) = 0 and running_var
    (C,) = 1, updated in training as (1 - momentum) * old + momentum * batch statistic.
    Training normalizes with the batch statistics, evaluation with the running ones.

    >>> bn = BatchNorm(4)
    >>> y = bn(np.random.default_rng(0).normal(3, 2, (64, 5, 5, 4)), training=True)
    >>> bool(abs(y.mean()) < 1e-6), bn.buffers["running_mean"].round(2)  # 0.9 * 0 + 0.1 * 3
    (True, array([0.3, 0.3, 0.3, 0.3], dtype=float32))
    """

    def __init__(self, num_features: int, *, momentum: float = 0.1, eps: float = 1e-5,
                 data_format: str = "channels_last", dtype="float32") -> None:
        self.num_features = c = _positive_int(num_features, "num_features")
        self.momentum = F.real_in(momentum, 0.0, 1.0, "momentum", closed_high=True)
        self.eps = F.real_in(eps, 0.0, np.inf, "eps")
        if self.eps <= 0:
            raise ValueError(f"`eps` must be > 0; got {eps!r}")
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        self.dtype = _float_dtype(dtype)
        super().__init__(
            params=dict(gamma=np.ones(c, self.dtype), beta=np.zeros(c, self.dtype)),  # (C,)
            buffers=dict(running_mean=np.zeros(c, self.dtype),                   # (C,)
                         running_var=np.ones(c, self.dtype)))                    # (C,)

    def config(self) -> dict:
        return dict(num_features=self.num_features, momentum=self.momentum, eps=self.eps,
                    data_format=self.data_format, dtype=self.dtype.name)

    def forward(self, x, training: bool = False):
        F.check_channels(x, self.num_features, self.data_format, repr(self))
        self._start(training, (x, bool(training)))
        y, mean, var = F.batch_norm(x, self.params["gamma"], self.params["beta"],
                                    self.buffers["running_mean"], self.buffers["running_var"],
                                    training=training, momentum=self.momentum, eps=self.eps,
                                    data_format=self.data_format)
        if training:
            self.buffers["running_mean"][...] = mean               # in place: views stay valid
            self.buffers["running_var"][...] = var
        return y

    def backward(self, dy):
        x, training = self._saved()
        dx, dgamma, dbeta = F.batch_norm_backward(
            dy, x, self.params["gamma"], self.buffers["running_mean"],
            self.buffers["running_var"], training=training, eps=self.eps,
            data_format=self.data_format)
        self.grads = {"gamma": dgamma, "beta": dbeta}
        return dx


# ---------------------------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------------------------


class Sequential(Layer):
    """Layers applied in order; backward runs them in reverse.

    `params`, `grads` and `buffers` gather the layers' dicts under keys "i.name" (the layer's
    index, then its own key: "0.w", "3.running_mean"); the arrays are the layers' own, so an
    optimizer stepping `model.params` updates the layers.
    """

    def __init__(self, *layers: Layer) -> None:
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes Layer instances; argument {i} is "
                                f"{type(layer).__name__}")
        self.layers = tuple(layers)
        self._cache = None

    def _gather(self, attr: str) -> dict:
        return {f"{i}.{k}": v for i, layer in enumerate(self.layers)
                for k, v in getattr(layer, attr).items()}

    params = property(lambda self: self._gather("params"), doc="All layers' params.")
    grads = property(lambda self: self._gather("grads"), doc="All layers' grads.")
    buffers = property(lambda self: self._gather("buffers"), doc="All layers' buffers.")

    def to(self, xp):
        """Move every layer's arrays to the array module `xp` (numpy or cupy); returns self."""
        for layer in self.layers:
            layer.to(xp)
        return self

    def __len__(self) -> int:
        return len(self.layers)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ",\n".join(f"  {layer!r}" for layer in self.layers)
        return f"Sequential(\n{inner}\n)"

    def forward(self, x, training: bool = False):
        pooling.check_flag(training, "training")
        for layer in self.layers:
            x = layer.forward(x, training=training)
        return x

    def backward(self, dy):
        for layer in reversed(self.layers):
            dy = layer.backward(dy)
        return dy


LAYERS = {cls.__name__: cls for cls in (
    AvgPool, BatchNorm, Conv, ConvTranspose, Dense, Dropout, Flatten, GlobalAvgPool,
    LeakyReLU, MaxPool, ReLU, Sequential, Sigmoid, Tanh)}
