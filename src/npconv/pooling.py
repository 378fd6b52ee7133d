"""Pooling for any spatial rank: max, average, Lp and global pools, forward and backward.

PyTorch's semantics where PyTorch has the op (MaxPoolNd, AvgPoolNd, LPPoolNd,
AdaptiveAvg/MaxPool to 1), ONNX's where it goes further (MaxPool, AveragePool, LpPool,
GlobalMaxPool): dilation for every pool, padding of any size, integer max pooling. The public
functions check their arguments once (`npconv.spec.pool_spec`, next to every other shape
formula) and run the kernels of `npconv._poolkernels`: loops over kernel offsets of vectorized
strided passes, chunked and on the worker threads. The gradient rules are derived in
docs/pooling.md.

Shapes, channels_last / channels_first: x (N, *S, C) / (N, C, *S) -> y (N, *P, C) / (N, C, *P),
P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1 (ceil with ceil_mode, dropping a
window that would start in the right padding). Global pools: y (N, C).
"""

from __future__ import annotations

import math

import numpy as np

from npconv import _args, _backend, _layout
from npconv import _poolkernels as kernels
from npconv._args import check_flag
from npconv._workspace import result
from npconv.spec import (
    PoolSpec,
    check_shape,
    pool_out_size,
    pool_spec,
    split_pool_shape,
)

Size = int | tuple[int, ...]
Padding = int | str | tuple[int, ...] | tuple[tuple[int, int], ...]

__all__ = [
    "PoolSpec",
    "avg_pool",
    "avg_pool_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "global_max_pool",
    "global_max_pool_backward",
    "lp_pool",
    "lp_pool_backward",
    "max_pool",
    "max_pool_backward",
    "max_pool_codes",
    "max_pool_codes_backward",
    "pool_out_size",
    "pool_spec",
]

# ---------------------------------------------------------------------------------------------
# Arguments and the kernels' layout
# ---------------------------------------------------------------------------------------------


def _max_array(x, name: str):
    """Max pooling takes float16/32/64 and every integer dtype (ONNX's MaxPool does)."""
    if not _backend.is_array(x):
        raise TypeError(f"`{name}` must be a numpy.ndarray; got {type(x).__name__}")
    if x.dtype not in _args.FLOAT_DTYPES and x.dtype.kind not in "iu":
        raise TypeError(
            f"`{name}` must have dtype float16, float32, float64 or an integer dtype; got dtype "
            f"{x.dtype}"
        )
    return x


def _x_shape(x, indices) -> tuple[int, ...]:
    """The shape of a max pool backward's `x`: the forward's input, or its shape alone when
    `indices` are given."""
    if _backend.is_array(x) or indices is None:
        if not _backend.is_array(x):
            raise TypeError(f"`x` must be the forward's input array (its shape will do only with "
                            f"`indices=`); got {type(x).__name__}")
        return _max_array(x, "x").shape
    return _args.shape_tuple(x, "x")


def _indices_arg(indices, shape: tuple[int, ...], name: str = "indices"):
    """Integer indices of the output's shape, as int64."""
    if not _backend.is_array(indices):
        raise TypeError(f"`{name}` must be a numpy.ndarray; got {type(indices).__name__}")
    if indices.dtype.kind not in "iu":
        raise TypeError(f"`{name}` must have an integer dtype; got dtype {indices.dtype}")
    check_shape(indices, shape, name)
    return indices.astype(np.int64, copy=False)


def _grad_dtype(dy, x) -> np.dtype:
    """dx's dtype: NumPy's promotion of dy and a float x; dy's own for an integer x or a shape."""
    if _backend.is_array(x) and x.dtype.kind == "f":
        return _args.result_dtype(dy, x)
    return dy.dtype


def _kernel_shape(spec: PoolSpec, size: tuple[int, ...]) -> tuple[int, ...]:
    """(B, *size, C) of the kernels' layout (`_layout.planes`)."""
    return _layout.planes_shape(spec.batch, size, spec.channels, spec.data_format)


def _row_bytes(spec: PoolSpec, itemsize: int, per_window: int = 0) -> int:
    """Bytes a chunk touches per output row along dim 0 (the forward's chunk size unit): the
    input rows it reads (the stride's new rows, or one window's rows when windows do not
    touch), one input row of temporaries, its output row and `per_window` more bytes for every
    window in the row."""
    c = spec.channels if spec.data_format == "channels_last" else 1
    in_row = math.prod(spec.in_size[1:]) * c * itemsize
    windows = math.prod(spec.out_size[1:]) * c
    read = min(spec.stride[0], spec.extent(0))
    return (read + 1) * in_row + windows * (itemsize + per_window)


def _in_row_bytes(spec: PoolSpec, itemsize: int, per_window: int = 0) -> int:
    """Bytes a backward chunk touches per input row along dim 0."""
    c = spec.channels if spec.data_format == "channels_last" else 1
    in_row = math.prod(spec.in_size[1:]) * c * itemsize
    windows = math.prod(spec.out_size[1:]) * c
    return 2 * in_row + windows * (itemsize + per_window) // spec.stride[0]


def _lowest(dtype: np.dtype):
    """What padding is in a maximum: -inf, or the integer dtype's minimum."""
    return -np.inf if dtype.kind == "f" else np.iinfo(dtype).min


def _chunk_input(xk, spec: PoolSpec, bs: slice, p_range, state, xp, split: bool):
    """(src, first row, phases): what a chunk's passes read for the windows p_range.

    The images as they are, except: float16 rows are widened to float32 (NumPy's float16 loops
    are 5-20x slower, and a max, a sum of float16 values are exact or better in float32); with
    `split`, when windows overlap along a strided last dimension (3x3 stride 2), the rows are
    phase-split so that the prod(K) equality passes stream (13% less time for the 3x3 stride-2
    max pool with indices, 15% in channels_first; a 2x2 stride-2 pool reads each column once,
    and the split cost 6% more there)."""
    s = spec.stride[-1]
    split = split and s > 1 and spec.out_size[-1] > 1 and spec.overlaps(spec.rank - 1)
    wide = np.float32 if xk.dtype == np.float16 else None
    if not (split or wide):
        return xk[bs], 0, 1
    xa, xb = kernels.input_rows(spec, p_range)
    rows = xk[bs, xa:max(xa, xb)]                                # (B', rows read, *S[1:], C)
    if split:
        return kernels.phase_split(rows, s, state, xp, wide), xa, s
    out = kernels.scratch(state, "wide", rows.shape, wide, xp)   # (B', rows read, *S[1:], C)
    xp.copyto(out, rows)
    return out, xa, 1


# ---------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------


def _codes_to_indices(codes, out, base, table, xp) -> None:
    """out = the flat index of the tap each code names (table[code] + base), -1 for code 0."""
    if xp is np:
        np.take(table, codes, out=out, mode="clip")             # "raise" is 10x slower
    else:
        out[...] = table[codes]
    xp.add(out, base, out=out)
    if xp is not np or not codes.all():
        xp.copyto(out, -1, where=codes == 0)


def _max_forward(xk, spec: PoolSpec, *, values: bool = True, argmax: str | None = None):
    """(y, argmax) in the kernels' layout, each None unless asked for (without `values` the
    maximum stays in per-chunk scratch); argmax "indices" gives PyTorch's int64 indices,
    "codes" the `argmax_codes` themselves (`kernels.code_dtype`)."""
    xp = _backend.namespace(xk)
    shape = _kernel_shape(spec, spec.out_size)                   # (B, *P, C)
    y = result(shape, xk.dtype, xp) if values else None          # (B, *P, C)
    ctype = kernels.code_dtype(spec)
    kept = None if argmax is None else xp.empty(shape, dtype=np.int64 if argmax == "indices"
                                                 else ctype)     # (B, *P, C)
    if argmax == "indices":
        base, table = (xp.asarray(a) for a in kernels.code_offsets(spec))
    lowest = _lowest(xk.dtype)

    def task(chunk, state):
        bs, rows = chunk
        p_range = (rows.start, rows.stop)
        src, xa, phases = _chunk_input(xk, spec, bs, p_range, state, xp, argmax is not None)
        part = (bs.stop - bs.start, rows.stop - rows.start, *shape[2:])  # (B', R, *P[1:], C)
        yc = y[bs, rows] if values else None
        out = yc if values and src.dtype == yc.dtype else kernels.scratch(state, "y", part,
                                                                          src.dtype, xp)
        kernels.reduce(src, out, spec, p_range, xa, xp.maximum, lowest, state, xp, phases)
        if argmax == "codes":
            kernels.argmax_codes(src, out, kept[bs, rows], spec, p_range, state, xp, xa, phases)
        elif argmax == "indices":
            codes = kernels.scratch(state, "codes", part, ctype, xp)  # (B', R, *P[1:], C)
            kernels.argmax_codes(src, out, codes, spec, p_range, state, xp, xa, phases)
            _codes_to_indices(codes, kept[bs, rows], base[:, rows], table, xp)
        if values and out is not yc:
            xp.copyto(yc, out, casting="same_kind")              # exact: a float16 value

    per_window = {None: 0, "codes": 3 * ctype.itemsize, "indices": 16}[argmax]  # codes, masks
    kernels.parallel(task, shape[0], spec.out_size[0], _row_bytes(spec, xk.itemsize, per_window),
                     xp)
    return y, kept


def max_pool(
    x: np.ndarray,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    return_indices: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """N-d max pooling (PyTorch's MaxPoolNd, ONNX's MaxPool).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first
        float16/32/64 or any integer dtype.
    kernel_size : int or tuple of int, one per spatial dimension
    stride : int or tuple of int, optional
        Defaults to kernel_size.
    padding : int, tuple of int, tuple of (lo, hi) pairs, "valid", "same" or "full"
        Implicit padding that never wins a maximum (-inf, or the integer dtype's minimum). Any
        size, as in ONNX; a window that reads only padding gives -inf (the integer minimum)
        and the index -1.
    dilation : int or tuple of int
    ceil_mode : bool
        Round the output size up (a window starting in the right padding is dropped).
    data_format : "channels_last" or "channels_first"
    return_indices : bool
        Also return, like PyTorch, the flat index into the input's spatial dimensions (*S) of
        each maximum, int64 of the output's shape: the first maximum of the window in raster
        order, or its last NaN. `max_pool_backward(..., indices=...)` takes them.

    Returns
    -------
    y : ndarray, (N, *P, C) or (N, C, *P), x's dtype
        P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1 (ceil with ceil_mode).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.arange(16.0).reshape(1, 4, 4, 1)      # (N, H, W, C)
    >>> npconv.max_pool(x, 2)[0, :, :, 0]
    array([[ 5.,  7.],
           [13., 15.]])
    >>> npconv.max_pool(x, 3, stride=2, ceil_mode=True).shape   # ceil((4 - 3) / 2) + 1 = 2
    (1, 2, 2, 1)
    """
    _max_array(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    return_indices = check_flag(return_indices, "return_indices")
    y, idx = _max_forward(_layout.planes(x, data_format), spec,
                          argmax="indices" if return_indices else None)
    if return_indices:
        return y.reshape(spec.y_shape()), idx.reshape(spec.y_shape())  # caller's layout
    return y.reshape(spec.y_shape())                             # caller's layout


def max_pool_backward(
    dy: np.ndarray,
    x: np.ndarray | tuple[int, ...],
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    indices: np.ndarray | None = None,
) -> np.ndarray:
    """dx = dL/dx of `max_pool`, given dy = dL/dy; same keywords as `max_pool`.

    Each window's dy goes to the input element its maximum came from (the first one in a tie,
    the last NaN); overlapping windows add up.

    Parameters
    ----------
    dy : ndarray of y's shape, float
    x : ndarray, or x's shape (a tuple of ints) when `indices` is given
        The forward's input. Without `indices` the argmax is recomputed from x.
    indices : ndarray of y's shape, integer, optional
        What `max_pool(..., return_indices=True)` returned with the same arguments: the
        backward then reads no x and recomputes nothing. An index outside [0, prod(S)) (other
        than -1, a window on padding) raises ValueError (checked on NumPy arrays): indices from
        another call can give a wrong gradient, but never write outside their image and channel.

    Returns
    -------
    dx : ndarray, x's shape; dtype numpy.result_type(dy, x) for float x, dy's dtype otherwise

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[1.0], [3.0], [3.0], [2.0]]])   # (N, S, C): a tie in window [3, 3]
    >>> npconv.max_pool_backward(np.ones((1, 3, 1)), x, 2, stride=1)[0, :, 0]
    array([0., 2., 1., 0.])
    >>> y, idx = npconv.max_pool(x, 2, stride=1, return_indices=True)
    >>> npconv.max_pool_backward(np.ones((1, 3, 1)), x.shape, 2, stride=1, indices=idx)[0, :, 0]
    array([0., 2., 1., 0.])
    """
    _args.float_array(dy, "dy")
    x_shape = _x_shape(x, indices)
    spec = pool_spec(x_shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    if indices is None:
        _, ik = _max_forward(_layout.planes(x, data_format), spec, values=False,
                             argmax="indices")
    else:
        ik = _layout.planes(_indices_arg(indices, spec.y_shape()), data_format)
    dyk = _layout.planes(dy, data_format)                          # (B, *P, C)
    xp = _backend.namespace(dyk, ik)
    dtype = _grad_dtype(dy, x)
    acc = _args.compute_dtype(dtype)
    scatter = _scatter_indices if xp is np else _scatter_offsets
    return scatter(dyk, ik, spec, acc, xp).astype(dtype, copy=False).reshape(x_shape)


def _scatter_indices(dyk, ik, spec: PoolSpec, acc, xp):
    """The max-pool gradient on NumPy: per chunk of windows, one `numpy.add.at` (a plain
    scatter when windows cannot overlap) of dy at the elements the indices name."""
    dx = np.empty(_kernel_shape(spec, spec.in_size), dtype=acc)  # (B, *S, C)
    size, plane = math.prod(spec.in_size), dx.shape[-1]
    overlap = any(map(spec.overlaps, range(spec.rank)))
    dead = any(spec.live_windows(d) < p for d, p in enumerate(spec.out_size))

    def task(chunk, state):
        bs, rows = chunk
        dx[bs, _fresh_rows(spec, rows)] = 0
        kernels.scatter_indices(dyk[bs, rows], ik[bs, rows], dx[bs], plane, size, overlap,
                                dead, state)

    kernels.parallel(task, dx.shape[0], spec.out_size[0], _row_bytes(spec, 4, 16),
                     whole_images=overlap)
    return dx


def _fresh_rows(spec: PoolSpec, rows: slice) -> slice:
    """The input rows (dim 0) a scatter chunk of windows `rows` zeroes before it writes: from
    the end of the rows that the windows before it read to the end of the rows that the
    windows up to its last read (to the last input row, for the last chunk). The chunks of an
    image cover its rows once, each before any write into them: earlier windows reach no
    further (a chunk's own writes start at or after its first row when windows do not overlap,
    and when they do, the chunks of an image run in order on one worker), so dx needs no
    zeroing pass of its own, and each chunk's zeros are written in cache just before its
    scatter."""
    start = kernels.input_rows(spec, (0, rows.start))[1] if rows.start else 0
    stop = spec.in_size[0] if rows.stop == spec.out_size[0] else \
        kernels.input_rows(spec, (0, rows.stop))[1]
    return slice(start, stop)


def _scatter_offsets(dyk, ik, spec: PoolSpec, acc, xp):
    """The max-pool gradient without `add.at` (CuPy): per kernel offset, the windows whose
    index minus its window's base equals that offset's add their dy into a strided view."""
    base, offsets = spec.index_parts()
    dx = xp.empty(_kernel_shape(spec, spec.in_size), dtype=acc)  # (B, *S, C)
    kernels.scatter_max(dyk, ik - xp.asarray(base), lambda r: offsets[r], dx, spec, 0,
                        (0, spec.in_size[0]), {}, xp)
    return dx


def max_pool_codes(
    x: np.ndarray,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> tuple[np.ndarray, np.ndarray]:
    """(y, codes): `max_pool`'s y and, for each window, which of its taps gave the maximum as
    a small code: what `nn.MaxPool` keeps for its backward (`max_pool_codes_backward`).

    The code of a window is prod(K) - r for the tap of raster index r that
    `max_pool(..., return_indices=True)` names (the first maximum in raster order, or the last
    NaN), and 0 for a window that reads only padding. It takes one byte per window (up to 255
    taps; `numpy.uint16` beyond) instead of an int64 index's eight, and the forward skips the
    pass that turns taps into flat indices: max pooling 2x2 stride 2, forward and backward, on
    32x56x56x64 float32 took 0.82-0.89x the time of the int64 pair (docs/pooling.md).

    Parameters and y as in `max_pool`; codes has y's shape.

    Examples
    --------
    >>> import numpy as np
    >>> from npconv import pooling
    >>> x = np.array([[[1.0], [3.0], [3.0], [2.0]]])   # (N, S, C)
    >>> y, codes = pooling.max_pool_codes(x, 2)        # windows [1, 3] and [3, 2]
    >>> y[0, :, 0], codes[0, :, 0]                     # taps 1 and 0 of 2
    (array([3., 3.]), array([1, 2], dtype=uint8))
    """
    _max_array(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    y, codes = _max_forward(_layout.planes(x, data_format), spec, argmax="codes")
    return y.reshape(spec.y_shape()), codes.reshape(spec.y_shape())  # caller's layout


def max_pool_codes_backward(
    dy: np.ndarray,
    codes: np.ndarray,
    x_shape: tuple[int, ...],
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> np.ndarray:
    """dx = dL/dx of max pooling from the codes `max_pool_codes` returned with the same
    arguments: the same gradient as `max_pool_backward(dy, x_shape, ..., indices=...)`, bit for
    bit, reading one byte per window.

    Parameters
    ----------
    dy : ndarray of y's shape, float
    codes : ndarray of y's shape, the dtype `max_pool_codes` gives for this kernel
        A code above prod(K), or one naming a tap past the end of the input, raises
        ValueError; other codes from another call can give a wrong gradient, but never write
        outside dx.
    x_shape : tuple of int
        The forward's input shape.

    Returns
    -------
    dx : ndarray of shape x_shape, dy's dtype

    Examples
    --------
    >>> import numpy as np
    >>> from npconv import pooling
    >>> x = np.array([[[1.0], [3.0], [3.0], [2.0]]])   # (N, S, C): a tie in window [3, 3]
    >>> _, codes = pooling.max_pool_codes(x, 2, stride=1)
    >>> pooling.max_pool_codes_backward(np.ones((1, 3, 1)), codes, x.shape, 2, stride=1)[0, :, 0]
    array([0., 2., 1., 0.])
    """
    _args.float_array(dy, "dy")
    spec = pool_spec(_args.shape_tuple(x_shape, "x_shape"), kernel_size, stride=stride,
                     padding=padding, dilation=dilation, ceil_mode=ceil_mode,
                     data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    ck = _layout.planes(_codes_arg(codes, spec), data_format)    # (B, *P, C)
    dyk = _layout.planes(dy, data_format)                        # (B, *P, C)
    xp = _backend.namespace(dyk, ck)
    acc = _args.compute_dtype(dy.dtype)
    scatter = _scatter_codes if xp is np else _scatter_code_offsets
    try:
        dx = scatter(dyk, ck, spec, acc, xp)
    except IndexError:                                           # NumPy's bounds check
        raise ValueError("`codes` name taps outside the input: they are not what "
                         "max_pool_codes gave for these arguments") from None
    return dx.astype(dy.dtype, copy=False).reshape(spec.x_shape())


def _codes_arg(codes, spec: PoolSpec):
    """Codes of y's shape and `kernels.code_dtype`, none above prod(K)."""
    if not _backend.is_array(codes):
        raise TypeError(f"`codes` must be a numpy.ndarray; got {type(codes).__name__}")
    dtype = kernels.code_dtype(spec)
    if codes.dtype != dtype:
        raise TypeError(f"`codes` must have dtype {dtype} (what max_pool_codes gives for this "
                        f"kernel); got dtype {codes.dtype}")
    check_shape(codes, spec.y_shape(), "codes")
    taps = math.prod(spec.kernel_size)
    if codes.size and int(codes.max()) > taps:
        raise ValueError(f"`codes` must be in [0, {taps}] (prod(kernel_size)); got values up "
                         f"to {int(codes.max())}")
    return codes


def _scatter_codes(dyk, ck, spec: PoolSpec, acc, xp):
    """The max-pool gradient from codes on NumPy: `_scatter_indices` with each chunk's flat
    targets read from a table of the taps' offsets (`kernels.scatter_codes`)."""
    dx = np.empty(_kernel_shape(spec, spec.in_size), dtype=acc)  # (B, *S, C)
    size, plane = math.prod(spec.in_size), dx.shape[-1]
    base, table = kernels.code_offsets(spec)                     # (1, *P, 1), (prod(K) + 1,)
    table = table * plane                                        # code -> offset * plane
    overlap = any(map(spec.overlaps, range(spec.rank)))

    def task(chunk, state):
        bs, rows = chunk
        dx[bs, _fresh_rows(spec, rows)] = 0
        c = ck[bs, rows]                                         # (B', R, *P[1:], C)
        starts = kernels.window_starts(c.shape, base, rows, plane, size, state)
        kernels.scatter_codes(dyk[bs, rows], c, dx[bs], table, starts, overlap, state)

    kernels.parallel(task, dx.shape[0], spec.out_size[0], _row_bytes(spec, 4, 9),
                     whole_images=overlap)
    return dx


def _scatter_code_offsets(dyk, ck, spec: PoolSpec, acc, xp):
    """`_scatter_offsets` with the codes as keys (CuPy): tap r is code prod(K) - r."""
    taps = math.prod(spec.kernel_size)
    dx = xp.empty(_kernel_shape(spec, spec.in_size), dtype=acc)  # (B, *S, C)
    kernels.scatter_max(dyk, ck, lambda r: taps - r, dx, spec, 0, (0, spec.in_size[0]), {}, xp)
    return dx


# ---------------------------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------------------------


def _divisor(spec: PoolSpec, count_include_pad: bool, dtype, xp, backward: bool = False):
    """Each window's divisor: a Python float when all are equal (the common case, one scalar
    division), else an array (1, *P, 1) that broadcasts against the kernels' (B, *P, C). The
    backward divides by inf instead of 0 (a window that reads no input, never spread)."""
    counts = spec.window_counts(include_pad=count_include_pad)   # (*P)
    if backward:
        counts[counts == 0] = np.inf
    if counts.min() == counts.max():
        return float(counts.flat[0])
    return xp.asarray(counts[None, ..., None], dtype=dtype)      # (1, *P, 1)


def _rows(div, rows: slice):
    return div if isinstance(div, float) else div[:, rows]


def avg_pool(
    x: np.ndarray,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
) -> np.ndarray:
    """N-d average pooling (PyTorch's AvgPoolNd, ONNX's AveragePool).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first, float16/32/64
    kernel_size, stride, padding, dilation, ceil_mode, data_format : as in `max_pool`
        The padding is zeros, of any size (ONNX's rule; PyTorch allows kernel_size // 2 and no
        dilation).
    count_include_pad : bool
        Divide by the window's taps inside the padded input [-lo, S + hi) (True, PyTorch's
        default) or inside the input only (False, ONNX's default and Keras' "same"). Taps that
        ceil_mode adds past the padding never count. A window that reads no input gives 0 with
        True and NaN (0 / 0) with False, as ONNX's reference evaluator does.

    Returns
    -------
    y : ndarray, (N, *P, C) or (N, C, *P), x's dtype (float16 is summed in float32)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 3, 3, 1))
    >>> float(npconv.avg_pool(x, 2, stride=1, padding=1)[0, 0, 0, 0])  # 1 one among 4 taps
    0.25
    >>> float(npconv.avg_pool(x, 2, stride=1, padding=1, count_include_pad=False)[0, 0, 0, 0])
    1.0
    """
    _args.float_array(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    count_include_pad = check_flag(count_include_pad, "count_include_pad")
    xk = _layout.planes(x, data_format)
    xp = _backend.namespace(xk)
    acc = _args.compute_dtype(x.dtype)
    div = _divisor(spec, count_include_pad, acc, xp)
    y = result(_kernel_shape(spec, spec.out_size), x.dtype, xp)  # (B, *P, C)

    def task(chunk, state):
        bs, rows = chunk
        out = y[bs, rows]
        total = out if acc == x.dtype else kernels.scratch(state, "sum", out.shape, acc, xp)
        p_range = (rows.start, rows.stop)
        src, xa, _ = _chunk_input(xk, spec, bs, p_range, state, xp, False)
        kernels.reduce(src, total, spec, p_range, xa, xp.add, 0, state, xp)
        with np.errstate(invalid="ignore"):                      # 0 / 0: a window on padding
            xp.divide(total, _rows(div, rows), out=out, casting="same_kind")

    kernels.parallel(task, y.shape[0], spec.out_size[0], _row_bytes(spec, acc.itemsize), xp)
    return y.reshape(spec.y_shape())                             # caller's layout


def avg_pool_backward(
    dy: np.ndarray,
    x_shape: tuple[int, ...],
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
) -> np.ndarray:
    """dx = dL/dx of `avg_pool`, from dy alone (the op is linear); `x_shape` is x's shape.

    Every input tap of window p receives dy[p] / divisor[p]; dx has dy's dtype.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dx = npconv.avg_pool_backward(np.ones((1, 2, 1)), (1, 3, 1), 2, stride=1)
    >>> dx[0, :, 0]                                   # the middle pixel is in both windows
    array([0.5, 1. , 0.5])
    """
    _args.float_array(dy, "dy")
    x_shape = _args.shape_tuple(x_shape, "x_shape")
    spec = pool_spec(x_shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format, name="x_shape")
    count_include_pad = check_flag(count_include_pad, "count_include_pad")
    check_shape(dy, spec.y_shape(), "dy")
    dyk = _layout.planes(dy, data_format)
    xp = _backend.namespace(dyk)
    acc = _args.compute_dtype(dy.dtype)
    div = _divisor(spec, count_include_pad, acc, xp, backward=True)
    dx = xp.empty(_kernel_shape(spec, spec.in_size), dtype=dy.dtype)  # (B, *S, C)

    def task(chunk, state):
        bs, rows = chunk
        pa, pb = kernels.window_rows(spec, (rows.start, rows.stop))
        part = dyk[bs, pa:pb]
        g = kernels.scratch(state, "g", part.shape, acc, xp)    # (B', R, *P[1:], C)
        xp.divide(part, _rows(div, slice(pa, pb)), out=g)
        _spread_into(g, dx[bs, rows], spec, pa, rows, state, xp)

    kernels.parallel(task, dx.shape[0], spec.in_size[0], _in_row_bytes(spec, acc.itemsize), xp)
    return dx.reshape(x_shape)                                   # caller's layout


def _spread_into(g, out, spec: PoolSpec, pa: int, rows: slice, state, xp, finish=None) -> None:
    """out = spread(g), then finish(out) if given, in g's dtype (a scratch when out is
    float16)."""
    acc = g.dtype
    dxc = out if out.dtype == acc else kernels.scratch(state, "dx", out.shape, acc, xp)
    kernels.spread(g, dxc, spec, pa, (rows.start, rows.stop), state, xp)
    if finish is not None:
        finish(dxc)
    if dxc is not out:
        xp.copyto(out, dxc, casting="same_kind")


# ---------------------------------------------------------------------------------------------
# Global pools
# ---------------------------------------------------------------------------------------------


def _global_view(a, data_format: str):
    """(B, L, C) of the kernels' layout, L = prod(S)."""
    ak = _layout.planes(a, data_format)
    return ak.reshape(ak.shape[0], math.prod(ak.shape[1:-1]), ak.shape[-1])  # (B, L, C)


def _global_shape(x_shape, data_format: str, name: str = "x"):
    """(N, S, C) of a global pool's input; ValueError for an empty spatial axis, whose mean or
    maximum does not exist (PyTorch's adaptive pools refuse it too)."""
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    return split_pool_shape(x_shape, data_format, name)


def global_avg_pool(x: np.ndarray, *, data_format: str = "channels_last") -> np.ndarray:
    """Mean over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C).

    Sums run in float32 for float16 input. An empty spatial axis raises ValueError.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.global_avg_pool(np.arange(8.0).reshape(1, 2, 2, 2))   # (N, H, W, C)
    array([[3., 4.]])
    """
    _args.float_array(x, "x")
    n, _, c = _global_shape(x.shape, data_format)
    x3 = _global_view(x, data_format)                            # (B, L, C)
    xp = _backend.namespace(x3)
    acc = _args.compute_dtype(x.dtype)
    y = xp.empty((x3.shape[0], x3.shape[2]), dtype=x.dtype)      # (B, C)

    def task(chunk, state):
        bs, _ = chunk
        total = kernels.scratch(state, "sum", y[bs].shape, acc, xp)  # (B', C)
        x3[bs].sum(axis=1, dtype=acc, out=total)
        xp.divide(total, x3.shape[1], out=y[bs], casting="same_kind")

    kernels.parallel(task, y.shape[0], 1, x3[:1].size * x.itemsize, xp)
    return y.reshape(n, c)                                       # (N, C)


def global_avg_pool_backward(dy: np.ndarray, x_shape: tuple[int, ...], *,
                             data_format: str = "channels_last") -> np.ndarray:
    """dx = dL/dx of `global_avg_pool`: dy (N, C) / prod(S), spread over x_shape.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.global_avg_pool_backward(np.ones((1, 1)), (1, 2, 2, 1))[0, :, :, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    _args.float_array(dy, "dy")
    x_shape = _args.shape_tuple(x_shape, "x_shape")
    n, s, c = _global_shape(x_shape, data_format, "x_shape")
    check_shape(dy, (n, c), "dy")
    xp = _backend.namespace(dy)
    dx = xp.empty(x_shape, dtype=dy.dtype)                       # x's shape
    dx3 = _global_view(dx, data_format)                          # (B, L, C) view of dx
    acc = _args.compute_dtype(dy.dtype)
    g = dy.reshape(dx3.shape[0], 1, dx3.shape[2]).astype(acc) / math.prod(s)  # (B, 1, C)

    def task(chunk, state):
        bs, _ = chunk
        xp.copyto(dx3[bs], g[bs], casting="same_kind")           # broadcast over L

    kernels.parallel(task, dx3.shape[0], 1, dx3[:1].size * dx.itemsize, xp)
    return dx


def _global_argmax(x3, y, idx, bs, xp) -> None:
    """idx[bs] = the first maximum of each (b, c) plane, or its last NaN (PyTorch's rule)."""
    xb = x3[bs]                                                  # (B', L, C)
    xp.argmax(xb, axis=1, out=idx[bs])                           # the first max, or first NaN
    if xb.dtype.kind == "f" and (xp is not np or xp.isnan(y[bs]).any()):
        last = xb.shape[1] - 1 - xp.argmax(xp.isnan(xb[:, ::-1]), axis=1)  # (B', C)
        xp.copyto(idx[bs], last, where=xp.isnan(y[bs]))


def global_max_pool(x: np.ndarray, *, data_format: str = "channels_last",
                    return_indices: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Maximum over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C) (ONNX's
    GlobalMaxPool, PyTorch's adaptive_max_pool to 1, flattened).

    x may be float16/32/64 or integer. NaN propagates. `return_indices=True` also returns the
    flat index into *S of each maximum (N, C) int64: the first maximum, or the last NaN.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[[1], [4]], [[4], [2]]]], dtype=np.uint8)    # (N, H, W, C): a tie
    >>> y, idx = npconv.global_max_pool(x, return_indices=True)
    >>> y, idx
    (array([[4]], dtype=uint8), array([[1]]))
    """
    _max_array(x, "x")
    n, _, c = _global_shape(x.shape, data_format)
    return_indices = check_flag(return_indices, "return_indices")
    x3 = _global_view(x, data_format)                            # (B, L, C)
    xp = _backend.namespace(x3)
    y = xp.empty((x3.shape[0], x3.shape[2]), dtype=x.dtype)      # (B, C)
    idx = xp.empty(y.shape, dtype=np.int64) if return_indices else None  # (B, C)

    def task(chunk, state):
        bs, _ = chunk
        x3[bs].max(axis=1, out=y[bs])
        if return_indices:
            _global_argmax(x3, y, idx, bs, xp)

    kernels.parallel(task, y.shape[0], 1, x3[:1].size * x.itemsize, xp)
    if idx is not None:
        return y.reshape(n, c), idx.reshape(n, c)                # (N, C) each
    return y.reshape(n, c)                                       # (N, C)


def global_max_pool_backward(dy: np.ndarray, x: np.ndarray | tuple[int, ...], *,
                             data_format: str = "channels_last",
                             indices: np.ndarray | None = None) -> np.ndarray:
    """dx = dL/dx of `global_max_pool`: dy (N, C) at each plane's maximum, zeros elsewhere.

    x is the forward's input, or only its shape when `indices` (from
    `global_max_pool(..., return_indices=True)`) is given. dx has x's shape; dtype
    numpy.result_type(dy, x) for float x, dy's dtype otherwise.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[[1.0], [4.0]], [[4.0], [2.0]]]])            # the first 4 wins
    >>> npconv.global_max_pool_backward(np.ones((1, 1)), x)[0, :, :, 0]
    array([[0., 1.],
           [0., 0.]])
    """
    _args.float_array(dy, "dy")
    x_shape = _x_shape(x, indices)
    n, s, c = _global_shape(x_shape, data_format)
    check_shape(dy, (n, c), "dy")
    if indices is None:
        _, indices = global_max_pool(_max_array(x, "x"), data_format=data_format,
                                     return_indices=True)
    indices = _indices_arg(indices, (n, c))
    xp = _backend.namespace(dy)
    size = math.prod(s)
    if xp is np and indices.size and not (indices.min() >= 0 and indices.max() < size):
        raise ValueError(
            f"`indices` must be flat indices into the spatial dimensions, in [0, {size}); "
            f"got values in [{indices.min()}, {indices.max()}]"
        )
    dx = xp.zeros(x_shape, dtype=_grad_dtype(dy, x))             # x's shape
    dx3 = _global_view(dx, data_format)                          # (B, L, C) view of dx
    b, cc = dx3.shape[0], dx3.shape[2]
    dx3[xp.arange(b)[:, None], indices.reshape(b, cc), xp.arange(cc)[None, :]] = (
        dy.reshape(b, cc))                                       # one element per (b, c)
    return dx


# ---------------------------------------------------------------------------------------------
# Lp pooling
# ---------------------------------------------------------------------------------------------


def _p_arg(p) -> float:
    if not isinstance(p, (int, float, np.integer, np.floating)) or isinstance(p, (bool, np.bool_)):
        raise TypeError(f"`p` must be a real number >= 1; got {p!r}")
    if not (np.isfinite(p) and p >= 1):
        raise ValueError(f"`p` must be a finite number >= 1 (a norm); got {p!r}")
    return float(p)


def _lp_window_sums(xk, out, spec: PoolSpec, p: float, bs, rows: slice, state, xp) -> None:
    """out (B', R, *P[1:], C) = (sum over each window of |x|^p)^(1/p), in out's dtype."""
    p_range = (rows.start, rows.stop)
    xa, xb = kernels.input_rows(spec, p_range)
    src = xk[bs, xa:max(xa, xb)]                                 # (B', rows read, *S[1:], C)
    powered = kernels.scratch(state, "pow", src.shape, out.dtype, xp)  # (B', rows read, *S[1:], C)
    if p == 2:
        xp.multiply(src, src, out=powered, dtype=out.dtype)
    else:
        xp.abs(src, out=powered, dtype=out.dtype)
        if p != 1:
            xp.power(powered, p, out=powered)
    kernels.reduce(powered, out, spec, p_range, xa, xp.add, 0, state, xp)
    if p == 2:
        xp.sqrt(out, out=out)
    elif p != 1:
        xp.power(out, 1 / p, out=out)


def lp_pool(
    x: np.ndarray,
    p: float,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> np.ndarray:
    """N-d power-average (Lp) pooling: y = (sum over the window of |x|^p)^(1/p).

    ONNX's LpPool (padding adds zeros to the sum) and PyTorch's LPPoolNd (no padding or
    dilation; for even p, or x >= 0, the same maths: PyTorch raises x, not |x|, to the power p,
    and scales a ceil_mode window that runs past the input by prod(K) / its taps).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first, float16/32/64
    p : float >= 1
        The norm's order (p = 1: the sum of |x|; p = 2: the Euclidean norm).
    kernel_size, stride, padding, dilation, ceil_mode, data_format : as in `max_pool`
        stride=None means stride = kernel_size, as in PyTorch (ONNX's default is 1).

    Returns
    -------
    y : ndarray, (N, *P, C) or (N, C, *P), x's dtype (float16 computed in float32)

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[3.0], [-4.0], [1.0], [0.0]]])                # (N, S, C)
    >>> npconv.lp_pool(x, 2, 2)[0, :, 0]                             # sqrt(9 + 16), sqrt(1)
    array([5., 1.])
    """
    _args.float_array(x, "x")
    p = _p_arg(p)
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    xk = _layout.planes(x, data_format)
    xp = _backend.namespace(xk)
    acc = _args.compute_dtype(x.dtype)
    y = result(_kernel_shape(spec, spec.out_size), x.dtype, xp)  # (B, *P, C)

    def task(chunk, state):
        bs, rows = chunk
        out = y[bs, rows]
        total = out if acc == x.dtype else kernels.scratch(state, "sum", out.shape, acc, xp)
        _lp_window_sums(xk, total, spec, p, bs, rows, state, xp)
        if total is not out:
            xp.copyto(out, total, casting="same_kind")

    kernels.parallel(task, y.shape[0], spec.out_size[0], _row_bytes(spec, 2 * acc.itemsize), xp)
    return y.reshape(spec.y_shape())                             # caller's layout


def lp_pool_backward(
    dy: np.ndarray,
    x: np.ndarray,
    p: float,
    kernel_size: Size,
    *,
    stride: Size | None = None,
    padding: Padding = 0,
    dilation: Size = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> np.ndarray:
    """dx = dL/dx of `lp_pool`, given dy = dL/dy; same arguments as `lp_pool`.

    dx[i] = sign(x[i]) |x[i]|^(p-1) * sum over windows q containing i of dy[q] / y[q]^(p-1); a
    window with y = 0 passes no gradient (the norm's subgradient 0 at 0, as
    torch.linalg.vector_norm; PyTorch's lp_pool gives NaN there). dtype numpy.result_type(dy, x).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[3.0], [-4.0]]])                              # y = 5
    >>> npconv.lp_pool_backward(np.ones((1, 1, 1)), x, 2, 2)[0, :, 0]   # x / y
    array([ 0.6, -0.8])
    """
    _args.float_array(dy, "dy")
    _args.float_array(x, "x")
    p = _p_arg(p)
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    xk, dyk = _layout.planes(x, data_format), _layout.planes(dy, data_format)
    xp = _backend.namespace(xk, dyk)
    dtype = _args.result_dtype(dy, x)
    acc = _args.compute_dtype(dtype)
    g = _lp_window_grads(xk, dyk, spec, p, acc, xp)              # (B, *P, C)
    dx = xp.empty(xk.shape, dtype=dtype)                         # (B, *S, C)

    def task(chunk, state):
        bs, rows = chunk
        pa, pb = kernels.window_rows(spec, (rows.start, rows.stop))
        _spread_into(g[bs, pa:pb], dx[bs, rows], spec, pa, rows, state, xp,
                     lambda d: _times_lp_factor(d, xk[bs, rows], p, state, xp))

    kernels.parallel(task, dx.shape[0], spec.in_size[0], _in_row_bytes(spec, 2 * acc.itemsize),
                     xp)
    return dx.reshape(x.shape)                                   # x's shape


def _times_lp_factor(d, xr, p: float, state, xp) -> None:
    """d *= sign(x) |x|^(p-1), the derivative of |x|^p / p (0 at x = 0)."""
    if p == 1:
        xp.multiply(d, xp.sign(xr), out=d)
    elif p == 2:
        xp.multiply(d, xr, out=d)
    else:
        f = kernels.scratch(state, "factor", xr.shape, d.dtype, xp)  # (B', rows, *S[1:], C)
        xp.abs(xr, out=f, dtype=d.dtype)
        xp.power(f, p - 1, out=f)
        xp.multiply(f, xp.sign(xr), out=f)
        xp.multiply(d, f, out=d)


def _lp_window_grads(xk, dyk, spec: PoolSpec, p: float, acc, xp):
    """g = dy / y^(p-1) per window (B, *P, C), 0 where y = 0 (for p > 1)."""
    g = xp.empty(dyk.shape, dtype=acc)                           # (B, *P, C)

    def task(chunk, state):
        bs, rows = chunk
        gc, dyc = g[bs, rows], dyk[bs, rows]
        if p == 1:                                               # d|x|_1 / dx: sign(x)
            xp.copyto(gc, dyc)
            return
        y = kernels.scratch(state, "y", gc.shape, acc, xp)       # (B', R, *P[1:], C)
        _lp_window_sums(xk, y, spec, p, bs, rows, state, xp)
        zero = xp.equal(y, 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            if p == 2:
                xp.divide(dyc, y, out=gc)
            else:
                xp.power(y, 1 - p, out=y)
                xp.multiply(dyc, y, out=gc)
        xp.copyto(gc, 0, where=zero)

    kernels.parallel(task, g.shape[0], spec.out_size[0], _row_bytes(spec, 2 * acc.itemsize), xp)
    return g
