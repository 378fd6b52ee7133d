"""Layers that route arrays rather than transform them: Identity, Add, Concat and ZeroPad, with
`add` and `concat`, the same as functions recorded on a Module's tape.

They are what forward code uses to merge branches (a residual sum, a U-Net skip connection),
so that the merge is a recorded call and its gradient follows: Add's backward gives dy to every
input (the same array, no copy), Concat's gives each input its slice of dy (views, no copies).
The maths is npconv.nn.merge's (threaded for NumPy arrays); CuPy arrays take array-module ops.
With inplace=True (PyTorch's `out += identity`), Add writes its sum into one of its inputs when
the running forward made that array and no recorded call has used it (`npconv.nn.can_overwrite`):
a residual block's sum then costs no new activation. Like PyTorch's in-place ops, that input
then holds the sum: ask for it only where the forward code does not read the input again.

>>> import numpy as np
>>> from npconv import nn
>>> a, b = np.ones((2, 3, 3, 4), np.float32), np.zeros((2, 3, 3, 2), np.float32)
>>> nn.Concat()(a, b).shape, float(nn.add(a, a).max())            # channels_last: axis -1
((2, 3, 3, 6), 2.0)
"""

from __future__ import annotations

import numpy as np

from npconv import _args, _backend
from npconv.nn import merge
from npconv.nn.module import Layer, can_overwrite
from npconv.spec import check_shape

__all__ = ["Add", "Concat", "Identity", "ZeroPad", "add", "concat"]


def _check_inputs(layer: Layer, xs: tuple, same_shape: bool, axis: int | None = None) -> None:
    """Two or more float arrays of one dtype and rank, of one shape (but along `axis`)."""
    if len(xs) < 2:
        raise TypeError(f"{layer!r} takes two or more arrays; got {len(xs)}")
    for i, x in enumerate(xs):
        _args.float_array(x, f"x{i}")
    first = xs[0]
    for i, x in enumerate(xs[1:], 1):
        shape, want = list(x.shape), list(first.shape)
        if axis is not None and x.ndim == first.ndim:
            shape[axis] = want[axis] = -1
        if x.dtype != first.dtype or shape != want or (same_shape and x.shape != first.shape):
            rule = "one shape" if same_shape else f"one shape but along axis {axis}"
            raise ValueError(f"{layer!r} takes arrays of {rule} and one dtype; x0 is "
                             f"{first.dtype} {tuple(first.shape)}, x{i} is {x.dtype} "
                             f"{tuple(x.shape)}")


class Identity(Layer):
    """y = x, the same array (PyTorch's nn.Identity): a placeholder, e.g. for a removed head
    (`model.fc = nn.Identity()`)."""

    def forward(self, x, training: bool = False):
        self._start(training, True)
        return x

    def backward(self, dy):
        self._saved()
        return dy


class Add(Layer):
    """Elementwise sum of two or more arrays of one shape and dtype (no broadcasting).

    Backward returns dy itself for every input (a tuple). Memory: one new array; with
    inplace=True the sum is written into an input that the running Module forward made and no
    recorded call has used (`can_overwrite`) when there is one, and that input holds the sum
    afterwards (PyTorch's `out += identity`): use it only at the input's last use.

    >>> Add()(np.ones((2, 3)), np.full((2, 3), 2.0))
    array([[3., 3., 3.],
           [3., 3., 3.]])
    """

    def __init__(self, inplace: bool = False) -> None:
        self.inplace = _args.check_flag(inplace, "inplace")
        super().__init__()

    def config(self) -> dict:
        return dict(inplace=True) if self.inplace else {}

    def forward(self, *xs, training: bool = False):
        _check_inputs(self, xs, same_shape=True)
        self._start(training, (xs[0].shape, len(xs)))
        into = next((x for x in xs if can_overwrite(x)), None) if self.inplace else None
        if all(isinstance(x, np.ndarray) for x in xs):
            return merge.add(*xs, out=into)                        # threaded; like x0
        xp = _backend.namespace(*xs)                               # CuPy
        y = xp.add(xs[0], xs[1], out=into)                         # like x0
        for x in xs[2:]:
            xp.add(y, x, out=y)
        return y

    def backward(self, dy):
        shape, n = self._saved()
        _args.float_array(dy, "dy")
        check_shape(dy, shape, "dy")
        return (dy,) * n                                           # merge.add_backward's rule


class Concat(Layer):
    """Concatenation along the channel axis (`axis=None`: the last axis for channels_last, 1
    for channels_first, as torch.cat(xs, dim=1) for NCHW) or along a given `axis`.

    Backward returns each input's slice of dy (views, a tuple).

    >>> Concat(data_format="channels_first")(np.ones((1, 2, 3)), np.ones((1, 1, 3))).shape
    (1, 3, 3)
    """

    def __init__(self, axis: int | None = None, *, data_format: str = "channels_last") -> None:
        if axis is not None and not _args.is_int(axis):
            raise TypeError(f"`axis` must be None (the channel axis) or an int; got {axis!r}")
        self.axis = None if axis is None else int(axis)
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(axis=self.axis, data_format=self.data_format)

    def _resolve_axis(self, ndim: int) -> int:
        if self.axis is None:
            return ndim - 1 if self.data_format == "channels_last" else 1
        if not -ndim <= self.axis < ndim:
            raise ValueError(f"{self!r}: `axis` must be in [-{ndim}, {ndim}) for arrays of "
                             f"{ndim} dimensions; got {self.axis}")
        return self.axis % ndim

    def forward(self, *xs, training: bool = False):
        axis = self._resolve_axis(xs[0].ndim) if xs and _backend.is_array(xs[0]) else None
        _check_inputs(self, xs, same_shape=False, axis=axis)
        sizes = tuple(x.shape[axis] for x in xs)
        self._start(training, (axis, sizes, xs[0].shape))
        if all(isinstance(x, np.ndarray) for x in xs):
            return merge.concat(list(xs), axis=axis)               # threaded per image
        return _backend.namespace(*xs).concatenate(xs, axis=axis)   # (.., sum(sizes), ..)

    def backward(self, dy):
        axis, sizes, shape = self._saved()
        _args.float_array(dy, "dy")
        want = list(shape)
        want[axis] = sum(sizes)
        check_shape(dy, tuple(want), "dy")
        if isinstance(dy, np.ndarray):
            return merge.concat_backward(dy, list(sizes), axis=axis)       # views of dy
        edges = np.cumsum(sizes)[:-1].tolist()
        return tuple(_backend.namespace(dy).split(dy, edges, axis=axis))   # views of dy


class ZeroPad(Layer):
    """Zeros around the spatial dimensions (PyTorch's ZeroPad1d/2d/3d, F.pad with zeros).

    `padding`: an int (every side), or one (lo, hi) pair per spatial dimension, in the order
    of the dimensions (note: PyTorch's F.pad lists the last dimension first). Output size per
    dimension: S + lo + hi. Backward returns the matching slice of dy (a view).

    >>> ZeroPad(((0, 1), (2, 0)))(np.ones((1, 2, 2, 3))).shape                # (N, H, W, C)
    (1, 3, 4, 3)
    """

    def __init__(self, padding, *, data_format: str = "channels_last") -> None:
        self.padding = _pairs(padding)
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(padding=self.padding, data_format=self.data_format)

    def _pads(self, ndim: int) -> list:
        """np.pad's per-axis pairs for an array of `ndim` dimensions."""
        rank = ndim - 2
        pads = self.padding * rank if _args.is_int(self.padding[0]) else list(self.padding)
        if len(pads) != rank:
            raise ValueError(f"{self!r} has {len(pads)} (lo, hi) pairs for an input with "
                             f"{rank} spatial dimensions")
        if _args.is_int(pads[0]):
            pads = [(p, p) for p in pads]
        if self.data_format == "channels_last":
            return [(0, 0), *pads, (0, 0)]
        return [(0, 0), (0, 0), *pads]

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        if x.ndim < 3:
            raise ValueError(f"{self!r} expects `x` with a batch, a channel and at least one "
                             f"spatial axis; got shape {tuple(x.shape)}")
        pads = self._pads(x.ndim)
        self._start(training, (pads, x.shape))
        return _backend.namespace(x).pad(x, pads)                  # (N, *(S + lo + hi), C)

    def backward(self, dy):
        pads, shape = self._saved()
        _args.float_array(dy, "dy")
        check_shape(dy, tuple(s + lo + hi for s, (lo, hi) in zip(shape, pads)), "dy")
        return dy[tuple(slice(lo, lo + s) for s, (lo, _) in zip(shape, pads))]   # like x


def _pairs(padding):
    """padding as (p,) for an int or a tuple of (lo, hi) int pairs, all >= 0."""
    if _args.is_int(padding):
        pairs = (int(padding),)
    elif isinstance(padding, (tuple, list)) and padding and all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(map(_args.is_int, p))
            for p in padding):
        pairs = tuple((int(lo), int(hi)) for lo, hi in padding)
    else:
        raise TypeError(f"`padding` must be an int or a tuple of (lo, hi) int pairs, one per "
                        f"spatial dimension; got {padding!r}")
    flat = pairs if _args.is_int(pairs[0]) else sum(pairs, ())
    if min(flat) < 0:
        raise ValueError(f"`padding` must be >= 0 everywhere; got {padding!r}")
    return pairs


def add(*xs, inplace: bool = False, training: bool | None = None):
    """The sum of two or more arrays as a recorded call (`Add`): what forward code writes for
    a residual connection, `out = nn.add(out, identity)`; `inplace=True` where `out` is not
    read again (torchvision's `out += identity`, see `Add`)."""
    return Add(inplace)(*xs, training=training)


def concat(*xs, axis: int | None = None, data_format: str = "channels_last",
           training: bool | None = None):
    """Concatenation along the channel axis (or `axis`) as a recorded call (`Concat`)."""
    return Concat(axis, data_format=data_format)(*xs, training=training)

