"""Merging branches: the residual sum `add` and the channel concatenation `concat`, with their
backward rules.

A sum's backward hands dy to every input unchanged: `add_backward` returns the same array n
times, no copies (a consumer that wants to modify its gradient in place must copy first). A
concatenation's backward cuts dy along the concatenated axis: `concat_backward` returns views of
dy, no copies. The forwards write their output once, in blocks of whole images on the worker
threads (NumPy copies and adds run on one core); `add` may write into one of its inputs
(`out=`) when the caller owns that buffer, a residual block's main branch for example.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np

from npconv import _args
from npconv.nn import _blocks

__all__ = ["add", "add_backward", "concat", "concat_backward"]


def _arrays(xs, name: str) -> list:
    if isinstance(xs, np.ndarray) or not isinstance(xs, Sequence) or len(xs) == 0:
        raise TypeError(f"`{name}` must be a non-empty sequence of arrays; got {type(xs).__name__}")
    for i, x in enumerate(xs):
        _blocks.float_array(x, f"{name}[{i}]")
    return list(xs)


def add(*xs, out=None):
    """y = xs[0] + xs[1] + ... (same shape and dtype), summed left to right.

    Parameters
    ----------
    *xs : ndarray
        Two or more arrays of one shape and dtype.
    out : ndarray, optional
        Where to write y: one of the inputs (in place), or a writeable C-contiguous array.

    >>> add(np.ones(2), np.full(2, 2.0), np.full(2, 3.0))
    array([6., 6.])
    """
    xs = _arrays(xs, "xs")
    if len(xs) < 2:
        raise ValueError(f"`add` needs at least two arrays; got {len(xs)}")
    for i, x in enumerate(xs[1:], start=1):
        _blocks.check_like(x, xs[0], f"xs[{i}]", "xs[0]")
    xs = [_blocks.contiguous(x) for x in xs]
    y = _blocks.output(out, xs[0], tuple(xs))

    def kernel(o, *blocks):
        *ins, _ = blocks
        np.add(ins[0], ins[1], out=o)
        for b in ins[2:]:
            np.add(o, b, out=o)

    return _blocks.map_blocks(kernel, tuple(xs), y)


def add_backward(dy, n: int = 2) -> tuple:
    """The gradients of the n inputs of `add`: dy itself, n times (not copies).

    >>> dy = np.ones(3)
    >>> all(g is dy for g in add_backward(dy, 2))
    True
    """
    _blocks.float_array(dy, "dy")
    if not _args.is_int(n) or n < 1:
        raise ValueError(f"`n` must be an int >= 1 (the number of summed arrays); got {n!r}")
    return (dy,) * int(n)


def _concat_axis(ndim: int, axis, data_format: str) -> int:
    """The concatenated axis: `axis` (negative counts from the end), else the channel axis."""
    if axis is None:
        _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        return ndim - 1 if data_format == "channels_last" else 1
    if not _args.is_int(axis) or not -ndim <= axis < ndim:
        raise ValueError(f"`axis` must be an int in [-{ndim}, {ndim}); got {axis!r}")
    return int(axis) % ndim


def concat(xs: Sequence, *, axis: int | None = None, data_format: str = "channels_last"):
    """Concatenate arrays along the channel axis (or `axis`), as torch.cat / Concatenate.

    Parameters
    ----------
    xs : sequence of ndarray
        Arrays of one dtype whose shapes agree except on the concatenated axis.
    axis : int, optional
        The axis; by default the channel axis of `data_format` (last or 1).

    Returns
    -------
    y : ndarray, the sizes on the axis added up

    >>> concat([np.zeros((1, 2, 1)), np.ones((1, 2, 2))]).shape
    (1, 2, 3)
    """
    xs = _arrays(xs, "xs")
    ax = _concat_axis(xs[0].ndim, axis, data_format)
    for i, x in enumerate(xs[1:], start=1):
        same = x.ndim == xs[0].ndim and all(
            a == b for d, (a, b) in enumerate(zip(x.shape, xs[0].shape)) if d != ax)
        if not same or x.dtype != xs[0].dtype:
            raise ValueError(f"`xs[{i}]` must match xs[0] {tuple(xs[0].shape)} {xs[0].dtype} "
                             f"except on axis {ax}; got {tuple(x.shape)} {x.dtype}")
    if ax == 0:                                                  # a batch: one plain copy
        return np.concatenate(xs, axis=0)
    shape = list(xs[0].shape)
    shape[ax] = sum(x.shape[ax] for x in xs)
    y = np.empty(shape, dtype=xs[0].dtype)
    offsets = np.cumsum([0] + [x.shape[ax] for x in xs])

    def task(images, _):
        for x, lo, hi in zip(xs, offsets[:-1], offsets[1:]):
            y[images][(slice(None),) * ax + (slice(lo, hi),)] = x[images]

    lead = math.prod(shape[1:]) * y.itemsize                     # bytes per leading index
    _blocks.run(task, _blocks.spans(shape[0], lead), y.nbytes)
    return y


def concat_backward(dy, sizes: Sequence[int], *, axis: int | None = None,
                    data_format: str = "channels_last") -> tuple:
    """The gradients of `concat`'s inputs: views of dy cut at `sizes` along the same axis.

    >>> [g.shape for g in concat_backward(np.zeros((1, 2, 3)), [1, 2])]
    [(1, 2, 1), (1, 2, 2)]
    """
    _blocks.float_array(dy, "dy")
    ax = _concat_axis(dy.ndim, axis, data_format)
    if (isinstance(sizes, (str, bytes)) or not isinstance(sizes, Sequence)
            or not all(_args.is_int(s) and s >= 0 for s in sizes)
            or sum(sizes) != dy.shape[ax]):
        raise ValueError(f"`sizes` must be non-negative ints adding up to dy's size "
                         f"{dy.shape[ax]} on axis {ax}; got {sizes!r}")
    offsets = np.cumsum([0, *sizes])
    return tuple(dy[(slice(None),) * ax + (slice(int(lo), int(hi)),)]
                 for lo, hi in itertools.pairwise(offsets))
