"""Upsampling (PyTorch's `interpolate` / `nn.Upsample`): nearest, nearest-exact and
(bi/tri)linear with `align_corners`, any spatial rank, both layouts, forward and backward.

Every mode is separable: an output position reads, along each spatial axis, one input index
(nearest) or two with weights l0 + l1 = 1 (linear), computed per axis by `_axis_map` exactly as
PyTorch computes them (in float32 for float16/float32 data, float64 for float64). So the forward
is one gather per axis (nearest: one gather for all axes together), and the backward, the
adjoint, runs the axes in reverse: along each, the gradient of an input index is the sum of dy
over the output positions that read it, times their weights. Output indices that read one input
index form a run (the map is monotone), so that sum is one `np.add.reduceat` per weight: no loop
over pixels, no scatter with repeated indices. Blocks of whole images run on the worker threads.
The index rules and the adjoint are derived in docs/layer_ops.md.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass

import numpy as np

from npconv import _args
from npconv.nn import _blocks

__all__ = ["MODES", "upsample", "upsample_backward", "upsample_size"]

MODES = ("nearest", "nearest-exact", "linear", "bilinear", "trilinear")
_LINEAR_RANK = {"linear": 1, "bilinear": 2, "trilinear": 3}


@dataclass(frozen=True)
class _Axis:
    """One spatial axis: n_in input and n_out output positions; output p reads, for each term,
    one input position with a weight (nearest: one term, weight 1; linear: two). `terms` has
    the reads cut into `_Piece`s per term; `forward` and `backward` the same map as bands of
    its (n_out, n_in) matrix A, (destination, source, block) with y[dst] = block @ x[src]
    (forward: A's blocks, backward: A^T's), each covering its destination once."""

    n_in: int
    n_out: int
    terms: tuple
    forward: tuple
    backward: tuple


# ---------------------------------------------------------------------------------------------
# Geometry: output size and index maps
# ---------------------------------------------------------------------------------------------


def _spatial(shape: tuple, data_format: str) -> tuple:
    return tuple(shape[1:-1] if data_format == "channels_last" else shape[2:])


def _scales(scale_factor, rank: int):
    """scale_factor as a tuple of `rank` positive floats."""
    value = scale_factor if isinstance(scale_factor, (tuple, list)) else (scale_factor,) * rank
    ok = len(value) == rank and all(
        isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_)) for v in value)
    if not ok:
        raise TypeError(f"`scale_factor` must be a number or a tuple of {rank} numbers; "
                        f"got {scale_factor!r}")
    if not all(math.isfinite(v) and v > 0 for v in value):
        raise ValueError(f"`scale_factor` must be > 0 and finite; got {scale_factor!r}")
    return tuple(float(v) for v in value)


def upsample_size(in_size: tuple, size=None, scale_factor=None) -> tuple[int, ...]:
    """The output's spatial size: `size` (an int or a tuple), or floor(S * scale_factor)
    per axis (PyTorch's rule).

    >>> upsample_size((5, 4), scale_factor=1.5)
    (7, 6)
    """
    rank = len(in_size)
    if (size is None) == (scale_factor is None):
        raise ValueError("exactly one of `size` and `scale_factor` must be given; got "
                         f"size={size!r}, scale_factor={scale_factor!r}")
    if size is not None:
        out = _args.int_tuple(size, rank, "size")
    else:
        out = tuple(math.floor(s * f) for s, f in zip(in_size, _scales(scale_factor, rank)))
    if any(o < 1 for o in out):
        raise ValueError(f"the output size must be >= 1 in every dimension; got {out} "
                         f"from size={size!r}, scale_factor={scale_factor!r}, input {in_size}")
    return out


def _axis_map(n_in: int, n_out: int, scale, mode: str, align_corners: bool, dtype) -> _Axis:
    """The `_Axis` of one axis. `scale` is the user's scale factor for this axis (PyTorch
    then maps with 1 / scale) or None (it maps with n_in / n_out)."""
    work = np.dtype(dtype)                                       # PyTorch's opmath type
    dst = np.arange(n_out, dtype=work)                           # (P,)
    if mode.startswith("nearest"):
        ratio = np.float32(1 / scale) if scale else np.float32(n_in) / np.float32(n_out)
        if mode == "nearest-exact":
            src = np.floor((dst.astype(np.float32) + np.float32(0.5)) * ratio)
        else:
            src = np.floor(dst.astype(np.float32) * ratio)
        return _make_axis(n_in, [(np.minimum(src.astype(np.intp), n_in - 1), None)], work)
    if n_in == n_out:                                            # PyTorch: 1 * x + 0 * x
        i = np.arange(n_out)
        return _make_axis(n_in, [(i, np.ones(n_out, work)), (i, np.zeros(n_out, work))], work)
    if align_corners:
        ratio = work.type(n_in - 1) / work.type(n_out - 1) if n_out > 1 else work.type(0)
        src = ratio * dst
    else:
        ratio = work.type(1 / scale) if scale else work.type(n_in) / work.type(n_out)
        src = np.maximum(ratio * (dst + work.type(0.5)) - work.type(0.5), 0)
    i0 = np.minimum(np.floor(src).astype(np.intp), n_in - 1)
    l1 = np.clip(src - i0, 0, 1).astype(work)
    return _make_axis(n_in, [(i0, (1 - l1).astype(work)), (i0 + (i0 < n_in - 1), l1)], work)


BAND = 8
"""About how many positions a GEMM band of `_bands` reads: the band's matrix is dense, so a
wider band does more multiplications by zero; a narrower one makes more, smaller GEMM calls
(x2 bilinear on 8x28x28x64, one thread: 0.9 ms forward with 8, 1.1 with 16, 1.7 with 32)."""

CHUNK_BYTES = 4 * 2**20
"""Bytes per task (of the larger of the input and the output): whole images, batched into
each band's GEMM (smaller chunks only add calls; the GEMMs do not need the data in cache)."""


def _make_axis(n_in: int, terms: list, dtype) -> _Axis:
    """The `_Axis` of reads `terms` = [(index (P,), weight (P,) or None), ...]."""
    n_out = terms[0][0].size
    return _Axis(n_in, n_out, tuple(_pieces(i, w) for i, w in terms),
                 _bands(terms, n_in, dtype, transpose=False),
                 _bands(terms, n_in, dtype, transpose=True))


def _bands(terms: list, n_in: int, dtype, *, transpose: bool) -> tuple:
    """The map's matrix A (n_out, n_in) as dense bands of about `BAND` source positions:
    forward, bands of output rows (y[rows] = A[rows, cols] @ x[cols]); `transpose`, bands of
    input columns (dx[cols] = A[rows, cols]^T @ dy[rows]). The index maps are monotone, so a
    band's partners are a contiguous range (searchsorted)."""
    first, last = terms[0][0], terms[-1][0]                      # smallest, largest read
    n_out = first.size
    n_dst = n_in if transpose else n_out
    step = BAND if transpose else max(1, BAND * n_out // n_in)
    bands = []
    for lo in range(0, n_dst, step):                             # loop over bands (memory)
        hi = min(lo + step, n_dst)
        if transpose:
            rows = slice(int(np.searchsorted(last, lo)), int(np.searchsorted(first, hi)))
            cols = slice(lo, hi)
        else:
            rows, cols = slice(lo, hi), slice(int(first[lo]), int(last[hi - 1]) + 1)
        block = _block(terms, rows, cols, dtype)                 # (rows, cols)
        bands.append((cols, rows, block.T.copy()) if transpose else (rows, cols, block))
    return tuple(bands)


def _block(terms: list, rows: slice, cols: slice, dtype):
    """A[rows, cols] of the map's matrix, dense."""
    block = np.zeros((rows.stop - rows.start, cols.stop - cols.start), dtype=dtype)
    p = np.arange(rows.start, rows.stop)                         # (rows,)
    for index, weight in terms:
        i = index[p]
        inside = (i >= cols.start) & (i < cols.stop)
        w = np.ones(p.size, dtype) if weight is None else weight[p]
        np.add.at(block, (p[inside] - rows.start, i[inside] - cols.start), w[inside])
    return block


def _check(x_shape, size, scale_factor, mode, align_corners, recompute_scale_factor,
           data_format: str):
    """The per-axis maps and the output spatial size, after checking every option."""
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    _args.choice(mode, MODES, "mode")
    if len(x_shape) < 3:
        raise ValueError("upsample expects `x` of shape (N, *S, C) or (N, C, *S) with at least "
                         f"one spatial dimension; got shape {tuple(x_shape)}")
    in_size = _spatial(x_shape, data_format)
    rank = _LINEAR_RANK.get(mode)
    if rank is not None and rank != len(in_size):
        raise ValueError(f"mode={mode!r} needs {rank} spatial dimension(s); got x of shape "
                         f"{tuple(x_shape)} with {len(in_size)}")
    if align_corners is not None:
        if rank is None:
            raise ValueError("`align_corners` can only be set with the linear modes; got "
                             f"align_corners={align_corners!r} with mode={mode!r}")
        if not isinstance(align_corners, (bool, np.bool_)):
            raise TypeError(f"`align_corners` must be a bool or None; got {align_corners!r}")
    if recompute_scale_factor is not None and not isinstance(recompute_scale_factor, bool):
        raise TypeError("`recompute_scale_factor` must be a bool or None; "
                        f"got {recompute_scale_factor!r}")
    out_size = upsample_size(in_size, size, scale_factor)
    scales = (None,) * len(in_size) if scale_factor is None or recompute_scale_factor else \
        _scales(scale_factor, len(in_size))
    return in_size, out_size, scales


@functools.lru_cache(maxsize=64)
def _maps(in_size, out_size, scales, mode, align_corners, dtype) -> tuple[_Axis, ...]:
    """Every axis's `_Axis`, cached: a layer calls with the same geometry every step."""
    return tuple(_axis_map(i, o, s, mode, bool(align_corners), dtype)
                 for i, o, s in zip(in_size, out_size, scales))


# ---------------------------------------------------------------------------------------------
# Forward and backward
# ---------------------------------------------------------------------------------------------


def _images(a, data_format: str):
    """(B, *S, Cl): (N, *S, C) for channels_last, (N * C, *S, 1) for channels_first."""
    if data_format == "channels_last":
        return a
    return a.reshape(a.shape[0] * a.shape[1], *a.shape[2:], 1)


def _along(v, axis: int, ndim: int):
    """A per-position vector shaped to broadcast along `axis` of an ndim array."""
    shape = [1] * ndim
    shape[axis] = -1
    return v.reshape(shape)


@dataclass(frozen=True)
class _Piece:
    """Output positions `out` of one axis reading input positions `src` (one each, all
    distinct) with weights `weight` (None: 1). Selectors are slices where the positions are
    evenly spaced (strided views, no copies), else index arrays."""

    out: slice | np.ndarray
    src: slice | np.ndarray
    weight: np.ndarray | None


def _as_slice(idx: np.ndarray):
    """idx as an equivalent slice when it is evenly spaced and increasing, else None."""
    if idx.size == 1:
        return slice(int(idx[0]), int(idx[0]) + 1)
    step = int(idx[1] - idx[0])
    if step > 0 and np.all(np.diff(idx) == step):
        return slice(int(idx[0]), int(idx[-1]) + 1, step)
    return None


def _segments(out: np.ndarray, src: np.ndarray, weight) -> list[_Piece]:
    """Pieces for positions out -> src: one strided piece, or the first and last positions
    peeled off (borders clamp, breaking the spacing there) around one, or index arrays."""
    for lo, hi in ((0, 0), (1, 0), (0, 1), (1, 1)):
        parts = [(0, lo), (lo, out.size - hi), (out.size - hi, out.size)]
        slices = [(_as_slice(out[a:b]), _as_slice(src[a:b]), a, b) for a, b in parts if b > a]
        if all(o is not None and s is not None for o, s, _, _ in slices):
            return [_Piece(o, s, None if weight is None else weight[a:b])
                    for o, s, a, b in slices]
    return [_Piece(out, src, weight)]


def _pieces(index: np.ndarray, weight) -> list[_Piece]:
    """The reads of one term (index[p], weight[p]) cut into pieces whose source positions are
    distinct: the k-th output of every run of equal indices goes to piece k. Runs are at most
    ceil(P / S) + 1 long, so the pieces are bounded by the scale, not the image size."""
    starts = np.flatnonzero(np.diff(index, prepend=-1))          # first p of every run
    counts = np.diff(starts, append=index.size)                  # run lengths
    pieces = []
    for k in range(int(counts.max())):
        out = starts[counts > k] + k                             # the k-th output of each run
        pieces += _segments(out, index[out], None if weight is None else weight[out])
    return pieces


def _at(a, axis: int, sel):
    """a[..., sel, ...] along `axis`: a view for a slice, a copy for an index array."""
    return a[(slice(None),) * axis + (sel,)]


GEMM_MIN_INNER = 16
"""The banded GEMMs run as one batched matmul per band, one BLAS call per leading index of
the (pre, n, post) view; with fewer than this many entries per call (post) and post > 1
(a channels_first array's non-last axis) the calls cost more than the strided passes."""


def _gemm_ok(shape: tuple, axis: int) -> bool:
    post = math.prod(shape[axis + 1:])
    return post == 1 or post >= GEMM_MIN_INNER


def _gemm_axis(a, axis: int, bands: tuple, n_new: int, out=None):
    """a's `axis` mapped by the bands: y[dst] = block @ a[src] along `axis`, each band one
    GEMM over all the other axes (a (pre, n, post) view: post = 1 multiplies from the right)."""
    pre, post = math.prod(a.shape[:axis]), math.prod(a.shape[axis + 1:])
    a3 = a.reshape(pre, a.shape[axis], post)                     # (pre, n, post)
    shape = list(a.shape)
    shape[axis] = n_new
    y = np.empty(shape, dtype=a.dtype) if out is None else out
    y3 = y.reshape(pre, n_new, post)                             # (pre, n_new, post)
    for dst, src, block in bands:
        if post == 1:
            np.matmul(a3[:, src, 0], block.T, out=y3[:, dst, 0])  # (pre, dst)
        else:
            np.matmul(block, a3[:, src], out=y3[:, dst])         # (pre, dst, post)
    return y


def _forward_axis(a, axis: int, ax: _Axis, out=None, *, gemm: bool = False):
    """One axis of the map: y[p] = sum over terms of weight * a[src], p along `axis`; into
    `out` when given. `gemm`: a is finite, so its bands may run as GEMMs (a 0 * inf or
    0 * NaN in a band's zeros would spread a non-finite value to its neighbours)."""
    if gemm and _gemm_ok(a.shape, axis):
        return _gemm_axis(a, axis, ax.forward, ax.n_out, out)
    shape = list(a.shape)
    shape[axis] = ax.n_out
    y = np.empty(shape, dtype=a.dtype) if out is None else out
    for first, pieces in zip((True, False), ax.terms):
        for pc in pieces:
            src, dst = _at(a, axis, pc.src), _at(y, axis, pc.out)
            if pc.weight is None:
                dst[...] = src
            elif first:
                np.multiply(src, _along(pc.weight, axis, a.ndim), out=dst)
            else:
                dst += src * _along(pc.weight, axis, a.ndim)
            if not isinstance(pc.out, slice):                    # an index array's copy
                y[(slice(None),) * axis + (pc.out,)] = dst
    return y


def _backward_axis(g, axis: int, ax: _Axis, out=None, *, gemm: bool = False):
    """The adjoint of `_forward_axis`: r[src] += weight * g[p] over every piece (its source
    positions are distinct, so each += is a plain vectorized add); into `out` when given;
    `gemm` as in `_forward_axis`."""
    if gemm and _gemm_ok(g.shape, axis):
        return _gemm_axis(g, axis, ax.backward, ax.n_in, out)
    shape = list(g.shape)
    shape[axis] = ax.n_in
    r = np.zeros(shape, dtype=g.dtype) if out is None else out
    if out is not None:
        r[...] = 0
    for pieces in ax.terms:
        for pc in pieces:
            v = _at(g, axis, pc.out)
            if pc.weight is not None:
                v = v * _along(pc.weight, axis, g.ndim)
            if isinstance(pc.src, slice):
                _at(r, axis, pc.src)[...] += v
            else:
                r[(slice(None),) * axis + (pc.src,)] += v
    return r


def upsample(x, *, size=None, scale_factor=None, mode: str = "nearest",
             align_corners: bool | None = None, recompute_scale_factor: bool | None = None,
             data_format: str = "channels_last"):
    """Upsample (or resample) the spatial axes of x, as torch.nn.functional.interpolate.

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first, float16/32/64
    size : int or tuple of ints, optional
        The output's spatial size P.
    scale_factor : float or tuple of floats, optional
        P = floor(S * scale_factor); exactly one of size and scale_factor. Unless
        `recompute_scale_factor`, positions map with 1 / scale_factor (PyTorch), else with
        S / P.
    mode : "nearest", "nearest-exact", "linear" (1 spatial axis), "bilinear" (2) or
        "trilinear" (3)
        nearest: output p reads min(floor(p * S / P), S - 1); nearest-exact:
        min(floor((p + 1/2) S / P), S - 1); linear modes interpolate between the two nearest
        inputs of each axis.
    align_corners : bool, optional (linear modes; None means False)
        True: the corner pixels' centres align, src = p (S - 1) / (P - 1); False: src =
        (p + 1/2) S / P - 1/2, clamped at 0.

    Returns
    -------
    y : (N, *P, C) or (N, C, *P), x's dtype (float16 computed in float32)

    Examples
    --------
    >>> upsample(np.array([[[1.0], [2.0]]]), scale_factor=2)[0, :, 0]
    array([1., 1., 2., 2.])
    >>> upsample(np.array([[[1.0], [2.0]]]), scale_factor=2, mode="linear")[0, :, 0]
    array([1.  , 1.25, 1.75, 2.  ])
    """
    _blocks.float_array(x, "x")
    in_size, out_size, scales = _check(x.shape, size, scale_factor, mode, align_corners,
                                       recompute_scale_factor, data_format)
    work = _blocks.compute_dtype(x.dtype)
    maps = _maps(in_size, out_size, scales, mode, align_corners, work)
    y = np.empty(_with_spatial(x.shape, out_size, data_format), dtype=x.dtype)
    x3, y3 = _images(_blocks.contiguous(x), data_format), _images(y, data_format)

    nearest = mode.startswith("nearest")                        # copies: exact in any dtype
    gemm = not nearest and _finite(x)
    axes = [(axis, maps[axis - 1]) for axis in range(len(maps), 0, -1)]  # the innermost first
    _map_images(x3, y3, None if nearest else work, axes,
                lambda a, axis, ax, into: _forward_axis(a, axis, ax, into, gemm=gemm))
    return y


def upsample_backward(dy, x_shape: tuple, *, size=None, scale_factor=None,
                      mode: str = "nearest", align_corners: bool | None = None,
                      recompute_scale_factor: bool | None = None,
                      data_format: str = "channels_last"):
    """dx (x_shape) of `upsample(x, size=..., scale_factor=..., ...)` from dy and the same
    options.

    dx[i] = sum over the output positions p that read i of weight(p, i) * dy[p], per axis
    (nearest: weight 1).

    >>> upsample_backward(np.ones((1, 4, 1)), (1, 2, 1), scale_factor=2)[0, :, 0]
    array([2., 2.])
    """
    _blocks.float_array(dy, "dy")
    x_shape = tuple(x_shape)
    in_size, out_size, scales = _check(x_shape, size, scale_factor, mode, align_corners,
                                       recompute_scale_factor, data_format)
    expected = _with_spatial(x_shape, out_size, data_format)
    if tuple(dy.shape) != expected:
        raise ValueError(f"`dy` must have the output's shape {expected}; got {tuple(dy.shape)}")
    work = _blocks.compute_dtype(dy.dtype)
    maps = _maps(in_size, out_size, scales, mode, align_corners, work)
    dx = np.empty(x_shape, dtype=dy.dtype)
    dy3, dx3 = _images(_blocks.contiguous(dy), data_format), _images(dx, data_format)

    gemm = _finite(dy)                                           # nearest too: sums of dy
    axes = [(axis, maps[axis - 1]) for axis in range(1, len(maps) + 1)]  # the forward's, reversed
    _map_images(dy3, dx3, work, axes,
                lambda g, axis, ax, into: _backward_axis(g, axis, ax, into, gemm=gemm))
    return dx


def _map_images(src3, dst3, work, axes: list, apply) -> None:
    """dst3[images] = apply(..., axis, ax, into) over `axes` in turn, starting from
    src3[images] (cast to `work` unless None), for blocks of whole images on the workers; the
    last step writes into dst3 itself unless its result still needs rounding to float16."""

    def task(images, _):
        a = src3[images] if work is None else src3[images].astype(work, copy=False)
        for i, (axis, ax) in enumerate(axes):                    # a (k, *S or *P, Cl)
            into = dst3[images] if i == len(axes) - 1 and a.dtype == dst3.dtype else None
            a = apply(a, axis, ax, into)
        if a.dtype != dst3.dtype:
            dst3[images] = a                                     # float16: rounded once

    itemsize = dst3.itemsize if work is None else np.dtype(work).itemsize
    image = max(math.prod(src3.shape[1:]), math.prod(dst3.shape[1:]), 1) * itemsize
    _blocks.run(task, _blocks.spans(src3.shape[0], image, CHUNK_BYTES),
                max(src3.size, dst3.size) * itemsize)


def _finite(a) -> bool:
    """No inf or NaN in a: its sum is finite (a finite sum that overflows reads as not finite,
    which only costs the exact path)."""
    with np.errstate(over="ignore", invalid="ignore"):
        return bool(np.isfinite(a.sum(dtype=_blocks.compute_dtype(a.dtype))))


def _with_spatial(shape: tuple, spatial: tuple, data_format: str) -> tuple:
    if data_format == "channels_last":
        return (shape[0], *spatial, shape[-1])
    return (shape[0], shape[1], *spatial)
