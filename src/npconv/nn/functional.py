"""The maths of the non-convolution layers: activations, linear, batch norm, dropout, softmax.

Each op is a pair: a forward function, and a backward function that takes dy = dL/dy plus what
the forward pass saw and returns the input (and parameter) gradients. Both are pure: they never
modify their inputs, and they return new arrays in the inputs' dtype. Convolution and pooling
live in `npconv.convolution` and `npconv.pooling`; the layers of `npconv.nn.layers` call these
ops and hold no maths of their own. The gradient rules are derived in docs/training.md.

Shape letters: N batch, C channels (features), S spatial size, D the feature size of a linear
layer's input and F of its output.
"""

from __future__ import annotations

import numbers

import numpy as np

from npconv import _args, _backend
from npconv.spec import check_shape

__all__ = [
    "adaptive_avg_pool",
    "adaptive_avg_pool_backward",
    "adaptive_windows",
    "batch_norm",
    "batch_norm_backward",
    "channel_axis",
    "check_channels",
    "dropout",
    "dropout_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "linear",
    "linear_backward",
    "log_softmax",
    "relu",
    "relu6",
    "relu6_backward",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "softmax",
    "tanh",
    "tanh_backward",
]


def _check_pair(dy, x, x_name: str = "x") -> None:
    """dy and x float arrays of one shape (the backward of an elementwise op)."""
    _args.float_array(dy, "dy")
    _args.float_array(x, x_name)
    check_shape(dy, x.shape, "dy")


def real_in(value, low: float, high: float, name: str, *, closed_high: bool = False) -> float:
    """A real number in [low, high) (or [low, high]), as a float; TypeError / ValueError."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number; got {value!r}")
    value = float(value)
    ok = low <= value <= high if closed_high else low <= value < high
    if not ok:
        bracket = "]" if closed_high else ")"
        raise ValueError(f"`{name}` must be in [{low}, {high}{bracket}; got {value!r}")
    return float(value)


# ---------------------------------------------------------------------------------------------
# Activations: y = f(x) elementwise, dx = dy * f'(x)
# ---------------------------------------------------------------------------------------------


def relu(x, *, out=None):
    """max(x, 0), elementwise; any shape; written into `out` when given (x itself: in place).

    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    _args.float_array(x, "x")
    return _backend.namespace(x).maximum(x, 0, out=out)


def relu_backward(dy, x):
    """dy where x > 0, else 0 (the subgradient at 0 is 0, as in PyTorch)."""
    _check_pair(dy, x)
    return np.where(x > 0, dy, 0).astype(dy.dtype, copy=False)  # like x


def relu6(x, *, out=None):
    """min(max(x, 0), 6), elementwise, in x's array module (npconv.nn.activation has the
    threaded NumPy kernel; this is the CuPy path of nn.ReLU6).

    >>> relu6(np.array([-1.0, 3.0, 7.0]))
    array([0., 3., 6.])
    """
    _args.float_array(x, "x")
    return _backend.namespace(x).clip(x, 0, 6, out=out)


def relu6_backward(dy, y):
    """dy where 0 < y < 6 (the output, or x: the same set), else 0."""
    _check_pair(dy, y, "y")
    xp = _backend.namespace(dy, y)
    return xp.where((y > 0) & (y < 6), dy, 0).astype(dy.dtype, copy=False)   # like y


def leaky_relu(x, negative_slope: float = 0.01):
    """x where x > 0, else negative_slope * x.

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.5)
    array([-1.,  3.])
    """
    _args.float_array(x, "x")
    negative_slope = real_in(negative_slope, 0.0, 1.0, "negative_slope", closed_high=True)
    return np.where(x > 0, x, x * negative_slope).astype(x.dtype, copy=False)  # like x


def leaky_relu_backward(dy, x, negative_slope: float = 0.01):
    """dy where x > 0, else negative_slope * dy."""
    _check_pair(dy, x)
    negative_slope = real_in(negative_slope, 0.0, 1.0, "negative_slope", closed_high=True)
    return np.where(x > 0, dy, dy * negative_slope).astype(dy.dtype, copy=False)  # like x


def tanh(x):
    """Hyperbolic tangent, elementwise."""
    _args.float_array(x, "x")
    return np.tanh(x)


def tanh_backward(dy, y):
    """dy * (1 - y^2), from the forward output y = tanh(x)."""
    _check_pair(dy, y, "y")
    return (dy * (1 - y * y)).astype(dy.dtype, copy=False)


def sigmoid(x):
    """1 / (1 + exp(-x)), evaluated without overflow: exp is only taken of -|x|.

    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """
    _args.float_array(x, "x")
    e = np.exp(-np.abs(x))                                         # like x, in (0, 1]
    return np.where(x >= 0, 1 / (1 + e), e / (1 + e)).astype(x.dtype, copy=False)  # like x


def sigmoid_backward(dy, y):
    """dy * y * (1 - y), from the forward output y = sigmoid(x)."""
    _check_pair(dy, y, "y")
    return (dy * y * (1 - y)).astype(dy.dtype, copy=False)


def softmax(z, axis: int = -1):
    """exp(z) / sum(exp(z)) along `axis`, shifted by the maximum so exp never overflows.

    >>> softmax(np.array([[0.0, 1000.0]]))
    array([[0., 1.]])
    """
    e = np.exp(z - z.max(axis=axis, keepdims=True))                # like z, in (0, 1]
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(z, axis: int = -1):
    """z - logsumexp(z) along `axis`, computed as (z - max) - log(sum(exp(z - max)))."""
    shifted = z - z.max(axis=axis, keepdims=True)                  # like z, max 0
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


# ---------------------------------------------------------------------------------------------
# Linear: y = x @ w + b
# ---------------------------------------------------------------------------------------------


def _check_linear(x, w, b) -> None:
    _args.float_array(x, "x")
    _args.float_array(w, "w")
    if w.ndim != 2:
        raise ValueError(f"`w` must have shape (D, F); got {tuple(w.shape)}")
    if x.ndim != 2 or x.shape[1] != w.shape[0]:
        raise ValueError(
            f"`x` must have shape (N, {w.shape[0]}) to match `w` of shape {tuple(w.shape)}; "
            f"got {tuple(x.shape)}"
        )
    if b is not None:
        _args.float_array(b, "b")
        check_shape(b, (w.shape[1],), "b")


def linear(x, w, b=None):
    """Affine map x (N, D) @ w (D, F) + b (F,) -> y (N, F); w is the transpose of the weight
    of PyTorch's F.linear.

    >>> linear(np.ones((2, 3)), np.ones((3, 4)), np.arange(4.0))
    array([[3., 4., 5., 6.],
           [3., 4., 5., 6.]])
    """
    _check_linear(x, w, b)
    y = x @ w                                                      # (N, F)
    return y if b is None else y + b


def linear_backward(dy, x, w, *, bias: bool = True, input_grad: bool = True):
    """(dx, dw, db) of `linear`: dx = dy w^T (N, D), or None when `input_grad` is False,
    dw = x^T dy (D, F), db = sum_n dy (F,) or None when `bias` is False."""
    _check_linear(x, w, None)
    _args.float_array(dy, "dy")
    check_shape(dy, (x.shape[0], w.shape[1]), "dy")
    dx = dy @ w.T if input_grad else None                          # (N, D)
    dw = x.T @ dy                                                  # (D, F)
    db = dy.sum(axis=0) if bias else None                          # (F,)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# Batch normalization over every axis but the channel axis
# ---------------------------------------------------------------------------------------------


def channel_axis(ndim: int, data_format: str) -> int:
    """The channel axis of an (N, C) or (N, *S, C) / (N, C, *S) array."""
    return ndim - 1 if data_format == "channels_last" else 1


def check_channels(x, channels: int, data_format: str, name: object) -> None:
    """ValueError unless x is a float array of >= 2 dimensions with `channels` entries on its
    channel axis; `name` says who is asking (an op's name, or a layer: its repr, made only
    for the message)."""
    _args.float_array(x, "x")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    if x.ndim < 2 or x.shape[channel_axis(x.ndim, data_format)] != channels:
        where = "last" if data_format == "channels_last" else "second"
        raise ValueError(
            f"{name} expects `x` with {channels} channels on its {where} axis ({data_format}); "
            f"got shape {tuple(x.shape)}"
        )


def _stat_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    c = channel_axis(ndim, data_format)
    return tuple(a for a in range(ndim) if a != c)


def _per_channel(v, ndim: int, data_format: str):
    """A (C,) vector shaped to broadcast along the channel axis of an ndim array."""
    shape = [1] * ndim
    shape[channel_axis(ndim, data_format)] = -1
    return v.reshape(shape)                                        # (1, .., C, .., 1)


def _check_bn(x, gamma, stats, data_format: str, eps) -> None:
    _args.float_array(gamma, "gamma")
    check_channels(x, gamma.size, data_format, "batch_norm")
    for name, v in stats.items():
        if v is None:
            raise ValueError(f"`{name}` is needed when training=False; got None")
        _args.float_array(v, name)
        check_shape(v, (gamma.size,), name)
    real_in(eps, 0.0, np.inf, "eps")
    if eps <= 0:
        raise ValueError(f"`eps` must be > 0; got {eps!r}")


def batch_norm(x, gamma, beta, running_mean, running_var, *, training: bool,
               momentum: float = 0.1, eps: float = 1e-5, data_format: str = "channels_last"):
    """Batch normalization (PyTorch's BatchNormNd), any rank: x (N, C), (N, *S, C) or (N, C, *S).

    Training: normalize by the batch's per-channel mean and biased variance over all other
    axes, and return running statistics updated as (1 - momentum) * old + momentum * batch,
    with the unbiased batch variance (times m / (m - 1), m the values per channel).
    Evaluation: normalize by the running statistics, which come back unchanged.

    Returns
    -------
    y : like x
        gamma * (x - mean) / sqrt(var + eps) + beta.
    running_mean, running_var : (C,)
        New arrays; the inputs are never modified.

    Examples
    --------
    >>> x = np.array([[1.0], [3.0]])                            # (N, C)
    >>> y, rm, rv = batch_norm(x, np.ones(1), np.zeros(1), np.zeros(1), np.ones(1),
    ...                        training=True)
    >>> y.round(3).ravel(), rm, rv                              # batch var 1, unbiased 2
    (array([-1.,  1.]), array([0.2]), array([1.1]))
    """
    _check_bn(x, gamma, dict(beta=beta, running_mean=running_mean, running_var=running_var),
              data_format, eps)
    momentum = real_in(momentum, 0.0, 1.0, "momentum", closed_high=True)
    nd, dtype = x.ndim, x.dtype
    x = x.astype(_args.compute_dtype(dtype), copy=False)          # float16 -> float32 sums
    mean, var = running_mean, running_var
    if training:
        axes = _stat_axes(nd, data_format)
        mean, var = x.mean(axis=axes), x.var(axis=axes)            # (C,) twice, var biased
        m = x.size // gamma.size
        running_mean = (1 - momentum) * running_mean + momentum * mean          # (C,)
        running_var = (1 - momentum) * running_var + momentum * var * (m / max(m - 1, 1))
    inv = 1 / np.sqrt(var + eps)                                   # (C,)
    scale = _per_channel(gamma * inv, nd, data_format)             # (1, .., C, ..)
    shift = _per_channel(beta - mean * gamma * inv, nd, data_format)
    y = (x * scale + shift).astype(dtype, copy=False)             # like x
    stat = gamma.dtype
    return y, running_mean.astype(stat, copy=True), running_var.astype(stat, copy=True)


def batch_norm_backward(dy, x, gamma, running_mean=None, running_var=None, *, training: bool,
                        eps: float = 1e-5, data_format: str = "channels_last"):
    """(dx, dgamma, dbeta) of `batch_norm`; running statistics are needed when not training.

    With xhat = (x - mean) * inv, inv = 1 / sqrt(var + eps), and m values per channel:
    dbeta = sum dy and dgamma = sum dy * xhat over all axes but the channel axis; in training
    mode the batch statistics depend on x and dx = gamma * inv * (dy - mean(dy) - xhat *
    mean(dy * xhat)); in evaluation mode they are constants and dx = gamma * inv * dy.
    """
    stats = {} if training else dict(running_mean=running_mean, running_var=running_var)
    _check_bn(x, gamma, stats, data_format, eps)
    _args.float_array(dy, "dy")
    check_shape(dy, x.shape, "dy")
    nd, axes = x.ndim, _stat_axes(x.ndim, data_format)
    x = x.astype(_args.compute_dtype(x.dtype), copy=False)        # float16 -> float32 sums
    mean, var = (x.mean(axis=axes), x.var(axis=axes)) if training else (running_mean, running_var)
    inv = 1 / np.sqrt(var + eps)                                   # (C,)
    xhat = (x - _per_channel(mean, nd, data_format)) * _per_channel(inv, nd, data_format)
    dbeta = dy.sum(axis=axes)                                      # (C,)
    dgamma = (dy * xhat).sum(axis=axes)                            # (C,)
    g = _per_channel(gamma * inv, nd, data_format)                 # (1, .., C, ..)
    if not training:
        return (dy * g).astype(dy.dtype, copy=False), dgamma, dbeta
    m = x.size // gamma.size
    dx = g * (dy - _per_channel(dbeta / m, nd, data_format)
              - xhat * _per_channel(dgamma / m, nd, data_format))  # like x
    return dx.astype(dy.dtype, copy=False), dgamma, dbeta


# ---------------------------------------------------------------------------------------------
# Adaptive average pooling: output cell i of a dimension averages inputs
# floor(i * S / P) <= s < ceil((i + 1) * S / P), PyTorch's rule
# ---------------------------------------------------------------------------------------------


def adaptive_windows(s: int, p: int):
    """(indicator (P, S) of 0/1, counts (P,)): which inputs each of the P output cells of one
    dimension of size S averages.

    >>> m, counts = adaptive_windows(5, 3)          # windows [0, 2), [1, 4), [3, 5)
    >>> m.astype(int).tolist(), counts.tolist()
    ([[1, 1, 0, 0, 0], [0, 1, 1, 1, 0], [0, 0, 0, 1, 1]], [2, 3, 2])
    """
    i = np.arange(p)
    start, end = (i * s) // p, -((-(i + 1) * s) // p)               # floor, ceil; (P,) each
    cols = np.arange(s)                                              # (S,)
    m = (cols >= start[:, None]) & (cols < end[:, None])             # (P, S)
    return m, end - start


def _adaptive_sizes(x_shape, output_size, data_format: str):
    """The spatial axes of x and the output sizes, one per spatial dimension (None: kept)."""
    axes = range(1, len(x_shape) - 1) if data_format == "channels_last" else \
        range(2, len(x_shape))
    rank = len(axes)
    sizes = (output_size,) * rank if output_size is None or _args.is_int(output_size) else \
        tuple(output_size)
    if len(sizes) != rank or not all(v is None or (_args.is_int(v) and v >= 1) for v in sizes):
        raise ValueError(f"`output_size` must be an int >= 1 or a tuple of {rank} of them (None "
                         f"keeps a size), for x of shape {tuple(x_shape)}; got {output_size!r}")
    return [(a, x_shape[a] if p is None else int(p)) for a, p in zip(axes, sizes)]


def _contract(xp, x, m, axis: int):
    """Apply the (P, S) matrix m along `axis` of x: (.., S, ..) -> (.., P, ..)."""
    y = xp.tensordot(m, x, axes=([1], [axis]))                       # (P, ..)
    return xp.moveaxis(y, 0, axis)                                   # (.., P, ..)


def adaptive_avg_pool(x, output_size, *, data_format: str = "channels_last"):
    """PyTorch's adaptive average pooling, any rank: x (N, *S, C) or (N, C, *S) -> P given by
    `output_size` (an int for every dimension, or one per dimension; None keeps S).

    Per dimension, output cell i averages inputs floor(i * S / P) <= s < ceil((i + 1) * S / P):
    a 0/1 window matrix contracted along that axis (one GEMM), then divided by the counts.
    P = 1 everywhere is the global mean. Allocates the output and, per pooled dimension, one
    intermediate of the output's size along the dimensions done so far.

    >>> adaptive_avg_pool(np.arange(5.0).reshape(1, 5, 1), 3).ravel()      # (N, L, C)
    array([0.5, 2. , 3.5])
    """
    _args.float_array(x, "x")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    if x.ndim < 3:
        raise ValueError(f"adaptive_avg_pool expects `x` with a batch, a channel and at least "
                         f"one spatial axis; got shape {tuple(x.shape)}")
    plan = _adaptive_sizes(x.shape, output_size, data_format)
    xp, dtype = _backend.namespace(x), x.dtype
    y = x.astype(_args.compute_dtype(dtype), copy=False)
    if all(p == 1 for _, p in plan):
        return y.mean(axis=tuple(a for a, _ in plan), keepdims=True).astype(dtype, copy=False)
    for axis, p in plan:
        if p == x.shape[axis]:
            continue                                                 # cell i averages input i
        m, counts = adaptive_windows(x.shape[axis], p)
        y = _contract(xp, y, xp.asarray(m, y.dtype), axis)          # sums: (.., P, ..)
        y /= _per_axis(xp.asarray(counts, y.dtype), y.ndim, axis)
    return y.astype(dtype, copy=False) if y is not x else y.copy()


def adaptive_avg_pool_backward(dy, x_shape, output_size, *,
                               data_format: str = "channels_last"):
    """dx of `adaptive_avg_pool`: dy divided by the counts, spread back over each window (the
    transposed window matrices)."""
    _args.float_array(dy, "dy")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    plan = _adaptive_sizes(tuple(x_shape), output_size, data_format)
    want = list(x_shape)
    for axis, p in plan:
        want[axis] = p
    check_shape(dy, tuple(want), "dy")
    xp, dtype = _backend.namespace(dy), dy.dtype
    dx = dy.astype(_args.compute_dtype(dtype), copy=True)
    for axis, p in plan:
        if p == x_shape[axis]:
            continue
        m, counts = adaptive_windows(x_shape[axis], p)
        dx /= _per_axis(xp.asarray(counts, dx.dtype), dx.ndim, axis)
        dx = _contract(xp, dx, xp.asarray(m.T, dx.dtype), axis)     # (.., S, ..)
    return xp.ascontiguousarray(dx).astype(dtype, copy=False)       # like x


def _per_axis(v, ndim: int, axis: int):
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)                                          # (1, .., P, .., 1)


# ---------------------------------------------------------------------------------------------
# Dropout (inverted: the kept values are scaled by 1 / (1 - p) at training time)
# ---------------------------------------------------------------------------------------------


def dropout(x, p: float, *, rng: np.random.Generator):
    """Zero each element with probability `p`, scale the rest by 1 / (1 - p).

    Returns (y, mask), mask of x's shape and dtype holding 0 or 1 / (1 - p), for
    `dropout_backward`. The expected value of y is x.

    >>> y, mask = dropout(np.ones((1, 4)), 0.5, rng=np.random.default_rng(0))
    >>> sorted(set(mask.ravel().tolist())) <= [0.0, 2.0]
    True
    """
    _args.float_array(x, "x")
    p = real_in(p, 0.0, 1.0, "p")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}")
    keep = rng.random(x.shape) >= p                                # like x, bool
    mask = (keep / (1 - p)).astype(x.dtype)                        # like x
    return x * mask, mask


def dropout_backward(dy, mask):
    """dy * mask: the dropped elements get no gradient."""
    _check_pair(dy, mask, "mask")
    return (dy * mask).astype(dy.dtype, copy=False)
