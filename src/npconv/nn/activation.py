"""Activations and their gradients, fast: relu, relu6, leaky_relu, hardswish, hardsigmoid, silu,
sigmoid and tanh.

Each forward `f(x, *, out=None)` returns y = f(x) elementwise; each backward
`f_backward(dy, v, *, out=None)` returns dx = dy * f'(x), where v is what the layer keeps: the
output y for relu, relu6, leaky_relu, sigmoid and tanh (so their forward may overwrite its input,
`out=x`, when the caller owns that buffer), the input x for hardswish, hardsigmoid and silu
(their derivative cannot be read off y). `out=` takes a buffer to write into: a new array by
default, or one of the op's inputs (in place), or any writeable C-contiguous array of the right
shape and dtype that overlaps none. The arrays are walked in cache-sized blocks on npconv's
worker threads (`_blocks.map_blocks`); float16 is computed in float32 and rounded once.

PyTorch's conventions at the kinks and for NaN, checked against torch 2.13 autograd: relu'(0) = 0;
relu6' = 0 at 0 and at 6; leaky_relu'(0) = negative_slope; hardswish' = 0 at -3 and 1 at 3;
hardsigmoid' = 0 at -3 and at 3. A NaN input gives a NaN output, and its gradient is dy for relu,
dy * negative_slope for leaky_relu, 0 for relu6 and hardsigmoid, NaN for the rest: PyTorch's
vectorized CPU kernels, which every tensor of more than a few elements goes through (its scalar
loop for the last few elements passes dy through relu6 and hardswish at NaN instead). A gradient
zeroed by the rule is 0 even where dy is inf or NaN (a select, not a multiplication by 0), as in
PyTorch. The rules are derived in docs/layer_ops.md.
"""

from __future__ import annotations

import numpy as np

from npconv.nn import _blocks
from npconv.nn.functional import real_in

__all__ = [
    "hardsigmoid",
    "hardsigmoid_backward",
    "hardswish",
    "hardswish_backward",
    "leaky_relu",
    "leaky_relu_backward",
    "relu",
    "relu6",
    "relu6_backward",
    "relu_backward",
    "sigmoid",
    "sigmoid_backward",
    "silu",
    "silu_backward",
    "tanh",
    "tanh_backward",
]

_INT = {2: np.int16, 4: np.int32, 8: np.int64}                 # same-size integer views


def _forward(kernel, x, out, *, exact: bool = False):
    """Check x and out, then y = kernel(x) block by block."""
    _blocks.float_array(x, "x")
    x = _blocks.contiguous(x)
    return _blocks.map_blocks(kernel, (x,), _blocks.output(out, x, (x,)), exact=exact)


def _backward(kernel, dy, v, v_name: str, out, *, exact: bool = False, extra: tuple = ()):
    """Check dy, v (the saved x or y) and out, then dx = kernel(dy, v, *extra) block by block
    (extra: more saved arrays like v, already checked)."""
    _blocks.float_array(dy, "dy")
    _blocks.check_like(v, dy, v_name, "dy")
    ins = tuple(_blocks.contiguous(a) for a in (dy, v, *extra))
    return _blocks.map_blocks(kernel, ins, _blocks.output(out, ins[0], ins), exact=exact)


def _select(o, dy, keep) -> None:
    """o = dy where keep, else +0: the bits of dy times 0 or 1, so that an inf or NaN dy is
    dropped where keep is False (dy * 0 would give NaN)."""
    t = _INT[dy.itemsize]
    np.multiply(dy.view(t), keep.view(np.uint8), out=o.view(t))


# ---------------------------------------------------------------------------------------------
# ReLU, ReLU6, LeakyReLU: backward from the output
# ---------------------------------------------------------------------------------------------


def relu(x, *, out=None):
    """y = max(x, 0), elementwise, any shape; NaN stays NaN. (Computed as clip(x, 0, inf),
    which NumPy runs about 1.8x faster than maximum(x, 0).)

    Parameters
    ----------
    x : ndarray, float16/32/64, any shape
    out : ndarray, optional
        Where to write y: x itself (in place) or a writeable C-contiguous array like x.

    Examples
    --------
    >>> relu(np.array([-1.0, 0.0, 2.0]))
    array([0., 0., 2.])
    """
    return _forward(lambda o, x, s: np.clip(x, 0, np.inf, out=o), x, out, exact=True)


def _relu_backward(o, dy, y, s) -> None:
    keep = s.bool(0, dy.size)
    np.less_equal(y, 0, out=keep)                                # PyTorch: y <= 0 gives 0,
    np.logical_not(keep, out=keep)                               # so NaN passes dy
    _select(o, dy, keep)


def relu_backward(dy, y, *, out=None):
    """dx = dy where y > 0 (or y is NaN), else 0; y is relu's output (its input x gives the
    same result: y > 0 exactly where x > 0).

    >>> relu_backward(np.array([5.0, 5.0, 5.0]), np.array([0.0, 1.0, 2.0]))
    array([0., 5., 5.])
    """
    return _backward(_relu_backward, dy, y, "y", out, exact=True)


def relu6(x, *, out=None):
    """y = min(max(x, 0), 6), elementwise; NaN stays NaN.

    >>> relu6(np.array([-1.0, 3.0, 7.0]))
    array([0., 3., 6.])
    """
    return _forward(lambda o, x, s: np.clip(x, 0, 6, out=o), x, out, exact=True)


def _relu6_backward(o, dy, y, s) -> None:
    keep, below = s.bool(0, dy.size), s.bool(1, dy.size)
    np.greater(y, 0, out=keep)
    np.less(y, 6, out=below)
    np.logical_and(keep, below, out=keep)                        # NaN: False
    _select(o, dy, keep)


def relu6_backward(dy, y, *, out=None):
    """dx = dy where 0 < y < 6, else 0 (NaN included); y is relu6's output (or its input x).

    >>> relu6_backward(np.ones(4), np.array([0.0, 3.0, 6.0, 6.0]))
    array([0., 1., 0., 0.])
    """
    return _backward(_relu6_backward, dy, y, "y", out, exact=True)


def _slope(negative_slope) -> float:
    return real_in(negative_slope, 0.0, 1.0, "negative_slope", closed_high=True)


def leaky_relu(x, negative_slope: float = 0.01, *, out=None):
    """y = x where x > 0, else negative_slope * x; negative_slope in [0, 1].

    Computed as max(x, negative_slope * x), which is that rule for every x except x = +inf
    with negative_slope = 0 (NaN, where the rule gives inf; use relu).

    >>> leaky_relu(np.array([-2.0, 3.0]), 0.5)
    array([-1.,  3.])
    """
    a = _slope(negative_slope)

    def kernel(o, x, s):
        t = s.float(0, x.size)
        np.multiply(x, a, out=t)
        np.maximum(x, t, out=o)

    return _forward(kernel, x, out)


def leaky_relu_backward(dy, y, negative_slope: float = 0.01, *, out=None):
    """dx = dy where y > 0, else negative_slope * dy (NaN y included, as PyTorch); y is
    leaky_relu's output or its input (with negative_slope >= 0, y > 0 exactly where x > 0).

    >>> leaky_relu_backward(np.ones(3), np.array([-1.0, 0.0, 2.0]), 0.5)
    array([0.5, 0.5, 1. ])
    """
    a = _slope(negative_slope)

    def kernel(o, dy, y, s):
        factor = s.float(0, dy.size)
        np.greater(y, 0, out=factor)                             # 1 or 0
        np.maximum(factor, a, out=factor)                        # 1 or a (a <= 1)
        np.multiply(dy, factor, out=o)

    return _backward(kernel, dy, y, "y", out)


# ---------------------------------------------------------------------------------------------
# Hardswish, Hardsigmoid, SiLU: backward from the input
# ---------------------------------------------------------------------------------------------


def _hardswish(o, x, s) -> None:
    t = s.float(0, x.size)
    np.add(x, 3, out=t)
    np.clip(t, 0, 6, out=t)
    with np.errstate(invalid="ignore"):                          # x = -inf: -inf * 0 (NaN)
        np.multiply(x, t, out=t)                                 # PyTorch's order: x * r / 6
    np.divide(t, 6, out=o)


def hardswish(x, *, out=None):
    """y = x * relu6(x + 3) / 6 (MobileNetV3), elementwise.

    >>> hardswish(np.array([-4.0, 0.0, 1.5, 4.0]))
    array([-0.   ,  0.   ,  1.125,  4.   ])
    """
    return _forward(_hardswish, x, out)


def _hardswish_backward(o, dy, x, s) -> None:
    n = x.size
    factor, keep, high = s.float(0, n), s.bool(0, n), s.bool(1, n)
    np.divide(x, 3, out=factor)
    np.add(factor, 0.5, out=factor)                              # x / 3 + 1/2 on (-3, 3)
    np.less_equal(x, -3, out=keep)
    np.greater_equal(x, 3, out=high)
    np.logical_or(keep, high, out=keep)
    np.logical_not(keep, out=keep)                               # -3 < x < 3, or NaN
    _select(factor, factor, keep)                                # (a select: x may be inf)
    np.add(factor, high, out=factor)                             # x >= 3: factor 1
    np.multiply(dy, factor, out=o)


def hardswish_backward(dy, x, *, out=None):
    """dx = dy * (0 for x <= -3, x / 3 + 1/2 for -3 < x < 3, 1 for x >= 3; NaN for NaN); x is
    the forward's input.

    >>> hardswish_backward(np.ones(4), np.array([-3.0, 0.0, 1.5, 3.0]))
    array([0. , 0.5, 1. , 1. ])
    """
    return _backward(_hardswish_backward, dy, x, "x", out)


def hardsigmoid(x, *, out=None):
    """y = relu6(x + 3) / 6, elementwise.

    >>> hardsigmoid(np.array([-4.0, 0.0, 1.5, 4.0]))
    array([0.  , 0.5 , 0.75, 1.  ])
    """

    def kernel(o, x, s):
        t = s.float(0, x.size)
        np.add(x, 3, out=t)
        np.clip(t, 0, 6, out=t)
        np.divide(t, 6, out=o)

    return _forward(kernel, x, out)


def hardsigmoid_backward(dy, x, *, out=None):
    """dx = dy / 6 where -3 < x < 3, else 0 (NaN included); x is the forward's input.

    >>> hardsigmoid_backward(np.full(3, 6.0), np.array([-3.0, 0.0, 3.0]))
    array([0., 1., 0.])
    """

    def kernel(o, dy, x, s):
        keep, high = s.bool(0, x.size), s.bool(1, x.size)
        np.greater(x, -3, out=keep)
        np.less(x, 3, out=high)
        np.logical_and(keep, high, out=keep)
        t = s.float(0, x.size)
        np.divide(dy, 6, out=t)
        _select(o, t, keep)

    return _backward(kernel, dy, x, "x", out)


def _sigmoid_into(t, x) -> None:
    """t = 1 / (1 + exp(-x)) (t may be x); exp overflows to inf for x below about -88
    (float32), giving 0 where the exact value is below the smallest normal number."""
    np.negative(x, out=t)
    with np.errstate(over="ignore", under="ignore"):
        np.exp(t, out=t)
    np.add(t, 1, out=t)
    np.reciprocal(t, out=t)


def silu(x, *, out=None, keep_sigmoid: bool = False):
    """y = x * sigmoid(x) (also called swish), elementwise.

    With `keep_sigmoid`, returns (y, s), s = sigmoid(x) a new array like x: give it to
    `silu_backward`, whose pass then skips the exponential. One more array kept between
    forward and backward, and a pass more forward, for four fewer backward (one thread, 25 MiB
    of float32 written into existing arrays: forward 6.5 -> 8.4 ms, backward 10.2 -> 5.6 ms;
    a fresh 25 MiB array costs up to 5 ms of page faults more on the 2-core VM when the
    allocator cannot reuse memory).

    >>> silu(np.array([0.0, 1.0])).round(4)
    array([0.    , 0.7311])
    """

    def kernel(o, x, s):
        t = s.float(0, x.size)
        np.negative(x, out=t)
        with np.errstate(over="ignore", under="ignore", invalid="ignore"):
            np.exp(t, out=t)
            np.add(t, 1, out=t)
            np.divide(x, t, out=o)                               # PyTorch: x / (1 + exp(-x))

    def kernel_keeping(o, sig, x, s):
        _sigmoid_into(sig, x)
        with np.errstate(invalid="ignore"):                      # x = -inf: -inf * 0
            np.multiply(x, sig, out=o)

    if not keep_sigmoid:
        return _forward(kernel, x, out)
    _blocks.float_array(x, "x")
    x = _blocks.contiguous(x)
    y, sig = _blocks.output(out, x, (x,)), np.empty(x.shape, dtype=x.dtype)
    return _blocks.map_blocks(kernel_keeping, (x,), (y, sig))


def silu_backward(dy, x, *, sigmoid=None, out=None):
    """dx = dy * s * (1 + x * (1 - s)) with s = sigmoid(x); x is the forward's input, and
    `sigmoid` the s that `silu(x, keep_sigmoid=True)` returned (else it is recomputed).

    >>> silu_backward(np.ones(1), np.zeros(1))
    array([0.5])
    """

    def factor(t, x, sig) -> None:
        np.subtract(1, sig, out=t)
        with np.errstate(invalid="ignore", under="ignore"):      # x = -inf: -inf * 0
            np.multiply(t, x, out=t)
            np.add(t, 1, out=t)
            np.multiply(t, sig, out=t)

    def kernel(o, dy, x, s):
        sig, t = s.float(0, x.size), s.float(1, x.size)
        _sigmoid_into(sig, x)
        factor(t, x, sig)
        np.multiply(dy, t, out=o)

    def kernel_kept(o, dy, x, sig, s):
        t = s.float(0, x.size)
        factor(t, x, sig)
        np.multiply(dy, t, out=o)

    if sigmoid is None:
        return _backward(kernel, dy, x, "x", out)
    _blocks.check_like(sigmoid, x, "sigmoid")
    return _backward(kernel_kept, dy, x, "x", out, extra=(sigmoid,))


# ---------------------------------------------------------------------------------------------
# Sigmoid, Tanh: backward from the output
# ---------------------------------------------------------------------------------------------


def sigmoid(x, *, out=None):
    """y = 1 / (1 + exp(-x)), elementwise; 0 below x of about -88 (float32) or -708 (float64),
    where exp(-x) overflows and the exact value is subnormal.

    >>> sigmoid(np.array([-1000.0, 0.0, 1000.0]))
    array([0. , 0.5, 1. ])
    """

    return _forward(lambda o, x, s: _sigmoid_into(o, x), x, out)


def sigmoid_backward(dy, y, *, out=None):
    """dx = dy * y * (1 - y), from the forward's output y.

    >>> sigmoid_backward(np.ones(1), np.array([0.5]))
    array([0.25])
    """

    def kernel(o, dy, y, s):
        t = s.float(0, y.size)
        np.subtract(1, y, out=t)
        np.multiply(t, y, out=t)
        np.multiply(dy, t, out=o)

    return _backward(kernel, dy, y, "y", out)


def tanh(x, *, out=None):
    """y = tanh(x), elementwise.

    >>> tanh(np.array([0.0]))
    array([0.])
    """
    return _forward(lambda o, x, s: np.tanh(x, out=o), x, out)


def tanh_backward(dy, y, *, out=None):
    """dx = dy * (1 - y^2), from the forward's output y.

    >>> tanh_backward(np.ones(2), np.array([0.0, 0.5]))
    array([1.  , 0.75])
    """

    def kernel(o, dy, y, s):
        t = s.float(0, y.size)
        np.multiply(y, y, out=t)
        np.subtract(1, t, out=t)
        np.multiply(dy, t, out=o)

    return _backward(kernel, dy, y, "y", out)
