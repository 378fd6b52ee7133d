"""Batch, group and layer normalization, forward and backward, and the running-statistics
updates of PyTorch's and Keras' batch norm.

- Batch norm (`batch_norm_train`, `batch_norm_eval`, `batch_norm_backward`): statistics per
  channel over the batch and every spatial position, x (N, C), (N, *S, C) or (N, C, *S).
  Training reads x once for the statistics (per-block BLAS sums, each block centred on its own
  mean so that float32 keeps two-pass accuracy when |mean| >> std) and once for y = (x - mean)
  * a + b; evaluation is one fused pass y = x * a + b (`batch_norm_scale_shift` gives a, b, the
  same numbers that fold batch norm into the preceding convolution); the backward is one pass
  of two per-channel reductions and one elementwise pass. `running_stats_update` applies
  either framework's update rule, so a layer can follow either.
- Group norm (`group_norm`, `group_norm_backward`): statistics per image and group of
  channels, affine per channel (PyTorch's GroupNorm), both layouts.
- Layer norm (`layer_norm`, `layer_norm_backward`): statistics per sample over the trailing
  `normalized_shape`, elementwise affine (PyTorch's LayerNorm); one pass over the data each way.

Every op returns new arrays in x's dtype (float16 computed in float32), or writes into `out`
(x itself, or dy in a backward, when the caller owns that buffer), and allocates otherwise only
per-channel vectors and per-worker block-sized temporaries. Statistics come back in the compute
dtype (float32 for float16 and float32 inputs). The gradient rules are derived in
docs/layer_ops.md.
"""

from __future__ import annotations

import math

import numpy as np

from npconv import _args
from npconv.nn import _blocks, _channels
from npconv.nn.functional import real_in

__all__ = [
    "CONVENTIONS",
    "batch_norm_backward",
    "batch_norm_eval",
    "batch_norm_scale_shift",
    "batch_norm_train",
    "group_norm",
    "group_norm_backward",
    "layer_norm",
    "layer_norm_backward",
    "running_stats_update",
]

CONVENTIONS = ("torch", "keras")
"""Running-statistics rules: PyTorch's (momentum 0.1 weighs the batch, unbiased variance) and
Keras' (momentum 0.99 weighs the old value, biased variance)."""


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------


def _layout(x, data_format: str, op: str) -> _channels.ChannelLayout:
    """Check x (N, C, ...) and data_format; return x's channel layout."""
    _blocks.float_array(x, "x")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    if x.ndim < 2:
        raise ValueError(f"{op} expects `x` of shape (N, C), (N, *S, C) or (N, C, *S); "
                         f"got shape {tuple(x.shape)}")
    if x.size == 0:
        raise ValueError(f"{op} needs at least one value per channel; got `x` of shape "
                         f"{tuple(x.shape)}")
    return _channels.layout(x.shape, data_format, _blocks.compute_dtype(x.dtype).itemsize)


def _vector(v, size: int, name: str, *, optional: bool = False):
    """A float vector of `size` entries (or None when optional), as given."""
    if v is None and optional:
        return None
    _blocks.float_array(v, name)
    if v.shape != (size,):
        raise ValueError(f"`{name}` must have shape ({size},), one entry per channel; "
                         f"got {tuple(v.shape)}")
    return v


def _length(v, name: str) -> int:
    """C, after checking that v is a float vector (C,)."""
    _blocks.float_array(v, name)
    if v.ndim != 1:
        raise ValueError(f"`{name}` must have shape (C,), one entry per channel; "
                         f"got {tuple(v.shape)}")
    return v.shape[0]


def _eps(eps) -> float:
    eps = real_in(eps, 0.0, math.inf, "eps")
    if eps <= 0:
        raise ValueError(f"`eps` must be > 0; got {eps!r}")
    return eps


def _dy(dy, x):
    _blocks.float_array(dy, "dy")
    _blocks.check_like(dy, x, "dy")
    return _blocks.contiguous(dy)


def _inv_std(var, eps: float):
    """1 / sqrt(var + eps), float64."""
    return 1 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)


def _or(v, default: float, size: int):
    """v as float64, or a vector of `default` when v is None (no affine parameter)."""
    return np.full(size, default) if v is None else np.asarray(v, dtype=np.float64)


def _param_grad(g, like):
    """A parameter's gradient in its dtype, or None for an absent parameter."""
    return None if like is None else g.astype(like.dtype)


# ---------------------------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------------------------


def batch_norm_train(x, gamma=None, beta=None, *, eps: float = 1e-5,
                     data_format: str = "channels_last", out=None):
    """Batch normalization with the batch's statistics (training mode), any rank.

    y = (x - mean) / sqrt(var + eps) * gamma + beta, with mean and the biased var taken per
    channel over the batch and all spatial positions (m = x.size / C values each).

    Parameters
    ----------
    x : ndarray, (N, C), (N, *S, C) channels_last or (N, C, *S) channels_first
    gamma, beta : ndarray (C,) or None
        Scale and shift; None means 1 and 0 (PyTorch's affine=False, Keras' scale/center
        False).
    eps : float
        PyTorch's default 1e-5; Keras' is 1e-3.
    out : ndarray, optional
        Where to write y: x itself, or a writeable C-contiguous array like x.

    Returns
    -------
    y : like x
    mean, var : (C,), the compute dtype
        The batch mean and biased variance: what `batch_norm_backward` and
        `running_stats_update` (with count m) take.

    Examples
    --------
    >>> x = np.array([[1.0], [3.0]])                            # (N, C)
    >>> y, mean, var = batch_norm_train(x)
    >>> y.round(3).ravel(), mean, var
    (array([-1.,  1.]), array([2.]), array([1.]))
    """
    layout = _layout(x, data_format, "batch_norm_train")
    gamma = _vector(gamma, layout.c, "gamma", optional=True)
    beta = _vector(beta, layout.c, "beta", optional=True)
    eps = _eps(eps)
    x = _blocks.contiguous(x)
    y = _blocks.output(out, x, (x,))
    if x.dtype == np.float16:                                    # blocks computed in float32
        mean, var = _batch_moments(layout, x)
        a = _or(gamma, 1.0, layout.c) * _inv_std(var, eps)        # (C,)
        _channels.affine(layout, y, x, a[None], _or(beta, 0.0, layout.c)[None],
                         center=mean[None])
        return y, mean, var
    # y holds x - shift per block, then (x - shift) a + beta - (mean - shift) a: the
    # subtraction serves the statistics and y, and shift is within a few std of the mean
    mean64, m2, shifts = _channels.shifted_moments(layout, x, y)  # (C,), (C,), (B, C)
    mean, var = mean64.astype(x.dtype), (m2 / (layout.n * layout.s)).astype(x.dtype)
    a = _or(gamma, 1.0, layout.c) * _inv_std(var, eps)            # (C,)
    _channels.shifted_affine(layout, y, a, _or(beta, 0.0, layout.c) - (mean64 - shifts) * a)
    return y, mean, var


def _batch_moments(layout, x):
    """Per-channel mean and biased variance, rounded to the compute dtype."""
    mean, m2 = _channels.channel_moments(layout, x)              # (C,) each
    work = _blocks.compute_dtype(x.dtype)
    return mean.astype(work), (m2 / (layout.n * layout.s)).astype(work)


def batch_norm_scale_shift(gamma, beta, mean, var, eps: float = 1e-5):
    """(a, b) with batch_norm(x) = x * a + b per channel: a = gamma / sqrt(var + eps),
    b = beta - mean * a (gamma, beta None: 1, 0). Folding batch norm into the convolution
    before it: w' = w * a along the output channels, bias' = bias * a + b.

    Returns
    -------
    a, b : (C,), float64

    >>> a, b = batch_norm_scale_shift(None, None, np.array([2.0]), np.array([4.0]), eps=1e-12)
    >>> a.round(6), b.round(6)
    (array([0.5]), array([-1.]))
    """
    size = _length(mean, "mean")
    _vector(var, size, "var")
    gamma = _vector(gamma, size, "gamma", optional=True)
    beta = _vector(beta, size, "beta", optional=True)
    a = _or(gamma, 1.0, size) * _inv_std(var, _eps(eps))         # (C,)
    return a, _or(beta, 0.0, size) - np.asarray(mean, dtype=np.float64) * a


def batch_norm_eval(x, gamma, beta, running_mean, running_var, *, eps: float = 1e-5,
                    data_format: str = "channels_last", out=None):
    """Batch normalization with the running statistics (evaluation mode): one fused pass
    y = x * a + b, (a, b) = `batch_norm_scale_shift(gamma, beta, running_mean, running_var)`.

    Shapes and `out` as in `batch_norm_train`; returns y (like x).

    >>> batch_norm_eval(np.array([[4.0]]), None, None, np.array([2.0]), np.array([4.0]),
    ...                 eps=1e-12)
    array([[1.]])
    """
    layout = _layout(x, data_format, "batch_norm_eval")
    for v, name in ((running_mean, "running_mean"), (running_var, "running_var")):
        _vector(v, layout.c, name)
    a, b = batch_norm_scale_shift(gamma, beta, running_mean, running_var, eps)
    x = _blocks.contiguous(x)
    return _channels.affine(layout, _blocks.output(out, x, (x,)), x, a[None], b[None])


def batch_norm_backward(dy, x, gamma, mean, var, *, eps: float = 1e-5, training: bool = True,
                        data_format: str = "channels_last", out=None):
    """(dx, dgamma, dbeta) of batch norm.

    Parameters
    ----------
    dy, x : ndarray like x
        The gradient of the loss with respect to y, and the forward's input.
    gamma : ndarray (C,) or None
    mean, var : ndarray (C,)
        What the forward normalized with: the batch statistics `batch_norm_train` returned
        (training=True), or the running statistics (training=False, where they are
        constants).
    out : ndarray, optional
        Where to write dx: dy or x (in place), or a writeable C-contiguous array like x.

    Returns
    -------
    dx : like x
    dgamma, dbeta : (C,) in gamma's dtype, or None when gamma is None (no affine
        parameters to train)

    Notes
    -----
    With inv = 1 / sqrt(var + eps), xhat = (x - mean) inv and m values per channel:
    dbeta = sum(dy), dgamma = sum(dy xhat); training: dx = gamma inv (dy - dbeta / m - xhat
    dgamma / m); evaluation: dx = gamma inv dy.
    """
    layout = _layout(x, data_format, "batch_norm_backward")
    gamma = _vector(gamma, layout.c, "gamma", optional=True)
    mean, var = _vector(mean, layout.c, "mean"), _vector(var, layout.c, "var")
    _args.check_flag(training, "training")
    dy, x = _dy(dy, x), _blocks.contiguous(x)
    dx = _blocks.output(out, x, (dy, x))
    inv = _inv_std(var, _eps(eps))                               # (C,)
    g = _or(gamma, 1.0, layout.c) * inv                          # (C,)
    if x.dtype != np.float16 and training:                       # dx = dy g + (x - mean) k + c
        t = None if dx is dy else dx                             # dx holds x - mean first
        s1, s2 = _channels.centered_sums(layout, dy, x, mean, t)  # (C,) each
    else:
        s1, s2 = (s.sum(axis=0) for s in _channels.sums(layout, dy, x, mean[None]))
    dbeta, dgamma = s1, s2 * inv                                 # (C,) each
    m = layout.n * layout.s
    k, c = -g * inv * dgamma / m, -g * dbeta / m                 # (C,) each
    if not training:
        _channels.affine(layout, dx, dy, g[None])
    elif x.dtype == np.float16:
        _channels.affine(layout, dx, x, k[None], c[None], dy, g[None], center=mean[None])
    elif t is None:
        _channels.centered_affine(layout, dx, dy, k, g, c, x, mean)
    else:
        _channels.centered_affine(layout, dx, dy, k, g, c)
    return dx, _param_grad(dgamma, gamma), _param_grad(dbeta, gamma)


def running_stats_update(running_mean, running_var, mean, var, count: int, *,
                         momentum: float | None = 0.1, convention: str = "torch",
                         num_batches_tracked: int | None = None):
    """The running statistics after one training batch, as new arrays in the running dtype.

    - convention="torch" (PyTorch's BatchNorm): new = (1 - momentum) * old + momentum *
      batch, the variance with Bessel's correction var * count / (count - 1);
      momentum=None: the cumulative average, momentum = 1 / num_batches_tracked (the count
      after this batch).
    - convention="keras" (Keras' BatchNormalization, momentum 0.99 there): new = momentum *
      old + (1 - momentum) * batch, the biased variance.

    Parameters
    ----------
    running_mean, running_var : ndarray (C,)
    mean, var : ndarray (C,)
        The batch's mean and biased variance (`batch_norm_train`).
    count : int
        Values per channel in the batch: x.size // C.

    >>> running_stats_update(np.zeros(1), np.ones(1), np.array([2.0]), np.array([1.0]), 2)
    (array([0.2]), array([1.1]))
    """
    c = _length(running_mean, "running_mean")
    for v, name in ((running_var, "running_var"), (mean, "mean"), (var, "var")):
        _vector(v, c, name)
    _args.choice(convention, CONVENTIONS, "convention")
    count = _count(count, convention)
    factor = _momentum(momentum, convention, num_batches_tracked)
    batch_var = np.asarray(var, np.float64)
    if convention == "torch":
        batch_var = batch_var * count / (count - 1)              # unbiased
    else:
        factor = 1 - factor                                      # Keras weighs the old value
    new = [(1 - factor) * np.asarray(old, np.float64) + factor * np.asarray(b, np.float64)
           for old, b in ((running_mean, mean), (running_var, batch_var))]
    return new[0].astype(running_mean.dtype), new[1].astype(running_var.dtype)


def _count(count, convention: str) -> int:
    if not _args.is_int(count):
        raise TypeError(f"`count` must be an int (values per channel); got {count!r}")
    if count < 1 or (convention == "torch" and count < 2):
        raise ValueError(f"`count` must be >= {2 if convention == 'torch' else 1} (the unbiased"
                         f" variance needs two values per channel); got {count}")
    return int(count)


def _momentum(momentum, convention: str, num_batches_tracked) -> float:
    if momentum is not None:
        return real_in(momentum, 0.0, 1.0, "momentum", closed_high=True)
    if convention != "torch":
        raise ValueError("`momentum` may be None (a cumulative average) only with "
                         f"convention='torch'; got convention={convention!r}")
    if not _args.is_int(num_batches_tracked) or num_batches_tracked < 1:
        raise ValueError("`num_batches_tracked` must be an int >= 1 (batches so far, this one "
                         f"included) when momentum is None; got {num_batches_tracked!r}")
    return 1.0 / num_batches_tracked


# ---------------------------------------------------------------------------------------------
# Group norm
# ---------------------------------------------------------------------------------------------


def _groups(num_groups, channels: int) -> int:
    if not _args.is_int(num_groups):
        raise TypeError(f"`num_groups` must be an int; got {num_groups!r}")
    if num_groups < 1 or channels % num_groups:
        raise ValueError(f"`num_groups` must be >= 1 and divide the channels; got "
                         f"num_groups={num_groups}, channels={channels}")
    return int(num_groups)


def group_norm(x, num_groups: int, gamma=None, beta=None, *, eps: float = 1e-5,
               data_format: str = "channels_last", out=None):
    """Group normalization (PyTorch's GroupNorm): the C channels split into `num_groups`
    groups of C/G consecutive channels; each image's group normalized by its own mean and
    biased variance over the group's channels and all positions; then gamma, beta per channel.

    Returns
    -------
    y : like x
    mean, var : (N, G), the compute dtype, for `group_norm_backward`.

    >>> y, mean, var = group_norm(np.array([[1.0, 3.0, 5.0, 5.0]]), 2)
    >>> y.round(3), mean, var
    (array([[-1.,  1.,  0.,  0.]]), array([[2., 5.]]), array([[1., 0.]]))
    """
    layout = _layout(x, data_format, "group_norm")
    g = _groups(num_groups, layout.c)
    gamma = _vector(gamma, layout.c, "gamma", optional=True)
    beta = _vector(beta, layout.c, "beta", optional=True)
    eps = _eps(eps)
    x = _blocks.contiguous(x)
    y = _blocks.output(out, x, (x,))
    mean, var = _group_moments(layout, x, g)                     # (N, G) each
    inv = _inv_std(var, eps)                                     # (N, G)
    scale = _spread(inv, layout.c) * _or(gamma, 1.0, layout.c)   # (N, C)
    _channels.affine(layout, y, x, scale, _or(beta, 0.0, layout.c)[None],
                     center=_spread(mean, layout.c))
    return y, mean, var


def _spread(v, channels: int):
    """(N, G) -> (N, C): each group's value on each of its C/G channels."""
    return np.repeat(np.asarray(v, dtype=np.float64), channels // v.shape[1], axis=1)


def _group_moments(layout, x, groups: int):
    """Per (image, group) mean and biased variance, rounded to the compute dtype."""
    mean_nc, m2_nc = _channels.moments(layout, x)                # (N, C) each
    shape = (layout.n, groups, layout.c // groups)
    mean, m2 = _channels.combine(float(layout.s), mean_nc.reshape(shape), m2_nc.reshape(shape),
                                 axis=2)                         # (N, G) each
    work = _blocks.compute_dtype(x.dtype)
    return mean.astype(work), (m2 / (shape[2] * layout.s)).astype(work)


def group_norm_backward(dy, x, num_groups: int, gamma, mean, var, *, eps: float = 1e-5,
                        data_format: str = "channels_last", out=None):
    """(dx, dgamma, dbeta) of `group_norm`; mean, var (N, G) are what it returned.

    Per image and group, with inv = 1 / sqrt(var + eps), xhat = (x - mean) inv, g = dy gamma
    and m = C/G * prod(S) values: dx = inv (g - mean(g) - xhat mean(g xhat)), the means over
    the group; dgamma = sum(dy xhat), dbeta = sum(dy) over images and positions.
    """
    layout = _layout(x, data_format, "group_norm_backward")
    g = _groups(num_groups, layout.c)
    gamma = _vector(gamma, layout.c, "gamma", optional=True)
    for v, name in ((mean, "mean"), (var, "var")):
        _blocks.float_array(v, name)
        if v.shape != (layout.n, g):
            raise ValueError(f"`{name}` must have shape (N, G) = {(layout.n, g)}; "
                             f"got {tuple(v.shape)}")
    dy, x = _dy(dy, x), _blocks.contiguous(x)
    dx = _blocks.output(out, x, (dy, x))
    center = _spread(mean, layout.c)                             # (N, C)
    s1, s2 = _channels.sums(layout, dy, x, center)               # (N, C) each
    inv = _inv_std(var, _eps(eps))                               # (N, G)
    w = _or(gamma, 1.0, layout.c)                                # (C,)
    m = layout.c // g * layout.s
    a = (s1 * w).reshape(layout.n, g, -1).sum(axis=2) / m        # (N, G): mean of dy gamma
    b = (s2 * w).reshape(layout.n, g, -1).sum(axis=2) / m        # (N, G), times inv: of g xhat
    inv_c = _spread(inv, layout.c)                               # (N, C)
    k = _spread(-inv**3 * b, layout.c)               # (N, C): dx = dy g + (x - mean) k + c
    _channels.affine(layout, dx, x, k, _spread(-inv * a, layout.c), dy, inv_c * w,
                     center=center)
    dgamma = (s2 * inv_c).sum(axis=0)                            # (C,)
    return dx, _param_grad(dgamma, gamma), _param_grad(s1.sum(axis=0), gamma)


# ---------------------------------------------------------------------------------------------
# Layer norm
# ---------------------------------------------------------------------------------------------


def _normalized(x, normalized_shape) -> tuple[int, ...]:
    """normalized_shape as a tuple of ints that ends x's shape."""
    shape: tuple[int, ...]
    if _args.is_int(normalized_shape):
        shape = (int(normalized_shape),)
    elif (isinstance(normalized_shape, (tuple, list))
          and all(_args.is_int(d) for d in normalized_shape)):
        shape = tuple(int(d) for d in normalized_shape)
    else:
        raise TypeError("`normalized_shape` must be an int or a tuple of ints; "
                        f"got {normalized_shape!r}")
    if (not shape or len(shape) > x.ndim or tuple(x.shape[x.ndim - len(shape):]) != shape
            or 0 in shape):
        raise ValueError(f"`normalized_shape` must end x's shape {tuple(x.shape)}, sizes "
                         f">= 1; got {normalized_shape!r}")
    return shape


def _check_layer_norm(x, normalized_shape, gamma, beta):
    """x's leading shape, D = prod(normalized_shape), and gamma, beta flattened to (D,)."""
    _blocks.float_array(x, "x")
    shape = _normalized(x, normalized_shape)
    params = []
    for v, name in ((gamma, "gamma"), (beta, "beta")):
        if v is not None:
            _blocks.float_array(v, name)
            if tuple(v.shape) != shape:
                raise ValueError(f"`{name}` must have shape normalized_shape = {shape}; "
                                 f"got {tuple(v.shape)}")
            v = v.reshape(-1)                                    # (D,)
        params.append(v)
    return x.shape[: x.ndim - len(shape)], math.prod(shape), params


class _Rows(_blocks.Scratch):
    """A worker's scratch for blocks of rows of length d, with vectors of ones for the row
    sums (x @ ones_d) and the column sums (ones_k @ x)."""

    def __init__(self, rows: list, d: int, dtype, accumulate: bool = False) -> None:
        most = max(r.stop - r.start for r in rows)
        super().__init__(dtype, most * d)
        self.ones_d, self.ones_k = np.ones(d, dtype=dtype), np.ones(most, dtype=dtype)
        self.acc = np.zeros((2, d)) if accumulate else None      # (2, D) float64

    def like(self, i, b):
        """Float temporary i shaped like the block b (rows, D)."""
        return self.float(i, b.size).reshape(b.shape)

    def block(self, i, b):
        """b itself, or a float32 copy of a float16 block."""
        return b if b.dtype == self.dtype else self.load(i, b)

    def moments(self, xb):
        """Per-row mean and biased variance of xb (k, D), float64: each row centred on its
        sum's mean, the rounding left in it summed again (as `_channels.moments`)."""
        d = xb.shape[1]
        center = _blocks.sum_last(xb, self.ones_d) / d           # (k,)
        t = self.like("centred", xb)
        np.subtract(xb, center[:, None], out=t)
        rest = _blocks.sum_last(t, self.ones_d).astype(np.float64)  # (k,)
        np.multiply(t, t, out=t)
        return center + rest / d, (_blocks.sum_last(t, self.ones_d) - rest * rest / d) / d


def _row_blocks(r: int, d: int, dtype) -> list[tuple[int, slice]]:
    """(index, rows) of the blocks of an (R, D) array."""
    return list(enumerate(_blocks.spans(r, d * dtype.itemsize)))


def _rows_run(task, blocks: list, d: int, dtype, *, accumulate: bool = False) -> list:
    """task((index, rows), state) on every block of rows, on the workers for large arrays;
    returns the per-worker states (with `acc`, (2, D) float64 zeros to add to, when
    `accumulate`)."""
    rows = [r for _, r in blocks]
    size = (rows[-1].stop if rows else 0) * d * dtype.itemsize
    return _blocks.run(task, blocks, size,
                       lambda: _Rows(rows or [slice(0, 1)], d, dtype, accumulate))


def _rows_backward(r, xb, dyb, mean, inv, w, st) -> None:
    """r = dx of one block of rows, (k, D), from mean, inv (k, 1) and w (D,) or None; adds the
    block's sum(dy) and sum(dy xhat) to st.acc."""
    d = xb.shape[1]
    xhat = st.like("xhat", xb)
    np.subtract(xb, mean, out=xhat)
    np.multiply(xhat, inv, out=xhat)
    g = dyb if w is None else np.multiply(dyb, w, out=st.like("g", xb))  # dy gamma
    t = st.like("t", xb)
    np.multiply(dyb, xhat, out=t)
    st.acc[0] += _blocks.sum_rows(dyb, st.ones_k)                # (D,)
    st.acc[1] += _blocks.sum_rows(t, st.ones_k)
    if w is not None:
        np.multiply(g, xhat, out=t)                              # g xhat
    a = _blocks.sum_last(g, st.ones_d) / d                       # (k,): the row means
    b = _blocks.sum_last(t, st.ones_d) / d
    np.multiply(xhat, b[:, None], out=xhat)
    np.subtract(g, xhat, out=r)
    np.subtract(r, a[:, None], out=r)
    np.multiply(r, inv, out=r)


def layer_norm(x, normalized_shape, gamma=None, beta=None, *, eps: float = 1e-5, out=None):
    """Layer normalization (PyTorch's LayerNorm): each sample normalized by the mean and biased
    variance of its trailing `normalized_shape` values, then scaled and shifted elementwise.

    Parameters
    ----------
    x : ndarray (*B, *normalized_shape)
    normalized_shape : int or tuple of ints
    gamma, beta : ndarray of shape normalized_shape, or None (1 and 0)
    out : ndarray, optional
        Where to write y: x itself, or a writeable C-contiguous array like x.

    Returns
    -------
    y : like x
    mean, var : (*B,), the compute dtype, for `layer_norm_backward`.

    >>> y, mean, var = layer_norm(np.array([[1.0, 3.0]]), 2)
    >>> y.round(3), mean, var
    (array([[-1.,  1.]]), array([2.]), array([1.]))
    """
    lead, d, (gamma, beta) = _check_layer_norm(x, normalized_shape, gamma, beta)
    eps = _eps(eps)
    x = _blocks.contiguous(x)
    y = _blocks.output(out, x, (x,))
    work = _blocks.compute_dtype(x.dtype)
    x2, y2 = x.reshape(-1, d), y.reshape(-1, d)                  # (R, D) views
    mean, var = np.empty(x2.shape[0], work), np.empty(x2.shape[0], work)  # (R,) each
    w, b = (None if v is None else v.astype(work) for v in (gamma, beta))

    def task(block, st):
        rs = block[1]
        xb = st.block("x", x2[rs])                               # (k, D)
        mean[rs], var[rs] = st.moments(xb)
        t = st.like("y", xb) if y.dtype != work else y2[rs]
        np.subtract(xb, mean[rs, None], out=t)
        np.multiply(t, _inv_std(var[rs], eps).astype(work)[:, None], out=t)
        if w is not None:
            np.multiply(t, w, out=t)
        if b is not None:
            np.add(t, b, out=t)
        if t.dtype != y.dtype:
            y2[rs] = t                                           # float16: rounded once

    _rows_run(task, _row_blocks(x2.shape[0], d, work), d, work)
    return y, mean.reshape(lead), var.reshape(lead)


def layer_norm_backward(dy, x, normalized_shape, gamma, mean, var, *, eps: float = 1e-5,
                        out=None):
    """(dx, dgamma, dbeta) of `layer_norm`; mean, var (*B,) are what it returned.

    Per sample, with inv = 1 / sqrt(var + eps), xhat = (x - mean) inv, g = dy gamma and the
    means over the D normalized values: dx = inv (g - mean(g) - xhat mean(g xhat));
    dgamma = sum(dy xhat) and dbeta = sum(dy) over the samples, of shape normalized_shape
    (None when gamma is None). One pass over dy and x.
    """
    lead, d, (gamma, _) = _check_layer_norm(x, normalized_shape, gamma, None)
    for v, name in ((mean, "mean"), (var, "var")):
        _blocks.float_array(v, name)
        if tuple(v.shape) != tuple(lead):
            raise ValueError(f"`{name}` must have shape {tuple(lead)} (x's shape without "
                             f"normalized_shape); got {tuple(v.shape)}")
    eps = _eps(eps)
    dy, x = _dy(dy, x), _blocks.contiguous(x)
    dx = _blocks.output(out, x, (dy, x))
    work = _blocks.compute_dtype(x.dtype)
    x2, dy2, dx2 = (a.reshape(-1, d) for a in (x, dy, dx))      # (R, D) views
    mean, inv = mean.reshape(-1).astype(work), _inv_std(var.reshape(-1), eps).astype(work)
    w = None if gamma is None else gamma.astype(work)

    def task(block, st):
        rs = block[1]
        xb, dyb = st.block("x", x2[rs]), st.block("dy", dy2[rs])  # (k, D) each
        r = st.like("dx", xb) if dx.dtype != work else dx2[rs]
        _rows_backward(r, xb, dyb, mean[rs, None], inv[rs, None], w, st)
        if r.dtype != dx.dtype:
            dx2[rs] = r                                          # float16: rounded once

    states = _rows_run(task, _row_blocks(x2.shape[0], d, work), d, work, accumulate=True)
    sums = np.sum([st.acc for st in states], axis=0)             # (2, D), workers in order
    dbeta, dgamma = sums.reshape(2, *x.shape[len(lead):])        # normalized_shape each
    return dx, _param_grad(dgamma, gamma), _param_grad(dbeta, gamma)
