"""Pooling for any spatial rank: max, average and global average, forward and backward.

PyTorch's semantics throughout (MaxPoolNd, AvgPoolNd, AdaptiveAvgPool to 1): padding that is at
most half the (dilated) kernel, `ceil_mode` windows that may run past the padding but must start
inside the input or the left padding, `count_include_pad` for the average's divisor, and a
max-pool gradient that goes to the first maximum of a window in raster order (a NaN wins).
All geometry lives in `PoolSpec`, built by `pool_spec` from the size formulas of `npconv.spec`;
the ops loop over kernel offsets only, each step one strided slice of the padded input
(`npconv.windows.offsets`), and send gradients back with `npconv.windows.fold`.

Shapes, channels_last / channels_first: x (N, *S, C) / (N, C, *S) -> y (N, *P, C) / (N, C, *P).
Output size per spatial dimension, eff = dilation * (K - 1) + 1:

    P = floor((S + lo + hi - eff) / stride) + 1                    ceil_mode=False
    P = ceil((S + lo + hi - eff) / stride) + 1, minus 1 if the last window would start at or
        past S + lo (entirely in the right padding)                ceil_mode=True

The gradient rules are derived in docs/pooling.md.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from npconv import _args, _backend
from npconv import _windows as windows
from npconv.spec import Pads, check_shape, effective_kernel, out_size, resolve_padding

__all__ = [
    "PoolSpec",
    "avg_pool",
    "avg_pool_backward",
    "global_avg_pool",
    "global_avg_pool_backward",
    "max_pool",
    "max_pool_backward",
    "pool_out_size",
    "pool_spec",
]


@dataclass(frozen=True)
class PoolSpec:
    """Resolved geometry of a pooling x (N, *S, C) -> y (N, *P, C).

    Attributes
    ----------
    batch, channels : int
        N, C.
    in_size, kernel_size, out_size : tuple of int
        S, K, P (one entry per spatial dimension).
    stride, dilation : tuple of int
    pads : tuple of (lo, hi) pairs
        The padding the caller asked for (the windows' coordinates start at -lo).
    ceil_mode : bool
    data_format : str
        "channels_last" or "channels_first" (the caller's layout; the ops use channels_last).
    """

    batch: int
    channels: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    out_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    ceil_mode: bool = False
    data_format: str = "channels_last"

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.in_size)

    @property
    def array_pads(self) -> Pads:
        """(lo, hi') per dimension: hi' >= hi also covers the rows a ceil_mode window reads
        past the padding, so every window is a plain strided slice of the padded array."""
        reach = ((p - 1) * s + effective_kernel(k, d)
                 for p, s, k, d in zip(self.out_size, self.stride, self.kernel_size, self.dilation))
        return tuple((lo, max(hi, r - lo - n))
                     for (lo, hi), r, n in zip(self.pads, reach, self.in_size))

    @property
    def padded_size(self) -> tuple[int, ...]:
        """S + lo + hi' per dimension (the size of the array the windows slice)."""
        return tuple(n + lo + hi for n, (lo, hi) in zip(self.in_size, self.array_pads))

    def x_shape(self) -> tuple[int, ...]:
        """Input shape in the caller's layout."""
        return _layout(self.batch, self.in_size, self.channels, self.data_format)

    def y_shape(self) -> tuple[int, ...]:
        """Output shape in the caller's layout."""
        return _layout(self.batch, self.out_size, self.channels, self.data_format)

    def taps(self, dim: int) -> np.ndarray:
        """Input coordinate p * stride + k * dilation - lo of every window p and offset k along
        spatial dimension `dim`, shape (P, K); it is outside [0, S) for padding."""
        p = np.arange(self.out_size[dim])[:, None]                 # (P, 1)
        k = np.arange(self.kernel_size[dim])[None, :]              # (1, K)
        return p * self.stride[dim] + k * self.dilation[dim] - self.pads[dim][0]  # (P, K)

    def window_counts(self, include_pad: bool) -> np.ndarray:
        """Taps of each window inside the input, or inside the padded input [-lo, S + hi) when
        `include_pad` (PyTorch's avg_pool divisors), shape (*P)."""
        counts = []
        for dim, (n, (lo, hi)) in enumerate(zip(self.in_size, self.pads)):
            start, stop = (-lo, n + hi) if include_pad else (0, n)
            t = self.taps(dim)                                     # (P, K)
            counts.append(((t >= start) & (t < stop)).sum(axis=1))  # (P,)
        return functools.reduce(np.multiply.outer, counts).astype(np.float64)  # (*P)

    def first_taps(self) -> np.ndarray:
        """Raster index (into the K grid) of each window's first tap inside the input, (*P)."""
        flat = np.zeros((1,) * self.rank, dtype=np.intp)           # (1, ..., 1)
        for dim, n in enumerate(self.in_size):
            t = self.taps(dim)                                     # (P, K)
            first = np.argmax((t >= 0) & (t < n), axis=1)          # (P,)
            shape = [1] * self.rank
            shape[dim] = -1
            flat = flat * self.kernel_size[dim] + first.reshape(shape)  # broadcasts to (*P)
        return flat


def _layout(n: int, size: tuple[int, ...], c: int, data_format: str) -> tuple[int, ...]:
    return (n, *size, c) if data_format == "channels_last" else (n, c, *size)


# ---------------------------------------------------------------------------------------------
# Geometry: argument checks and size formulas
# ---------------------------------------------------------------------------------------------


def pool_out_size(s: int, k: int, stride: int, d: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """Output size of a pooling along one dimension (PyTorch's `pooling_output_shape`).

    Floor mode is `npconv.spec.out_size`. Ceil mode rounds up, which is the floor formula with
    stride - 1 more rows of padding at the end; a window that would then start at or past
    S + lo, entirely in the right padding, is dropped.
    """
    if not ceil_mode:
        return out_size(s, k, stride, d, lo, hi)
    p = out_size(s, k, stride, d, lo, hi + stride - 1)
    return p - 1 if (p - 1) * stride >= s + lo else p


def _split_x(x_shape, data_format: str, name: str = "x"):
    """(N, S, C) of an input shape, after checking its rank."""
    if len(x_shape) < 3:
        layout = "(N, *S, C)" if data_format == "channels_last" else "(N, C, *S)"
        raise ValueError(
            f"`{name}` must have at least 3 dimensions {layout}: batch, spatial..., channels; "
            f"got shape {tuple(x_shape)}"
        )
    if data_format == "channels_last":
        n, *s, c = x_shape
    else:
        n, c, *s = x_shape
    return n, tuple(s), c


def check_flag(value, name: str) -> bool:
    """TypeError unless `value` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r}")
    return bool(value)


def _check_half_kernel(pads: Pads, kernel_size, dilation, padding) -> None:
    """PyTorch's rule: a window with more padding than half its extent could miss the input."""
    for (lo, hi), k, d in zip(pads, kernel_size, dilation):
        if max(lo, hi) > effective_kernel(k, d) // 2:
            raise ValueError(
                f"`padding` must be at most half the dilated kernel size, "
                f"dilation * (kernel_size - 1) + 1, in every dimension; got padding={padding!r} "
                f"(pads {pads}) with kernel_size={tuple(kernel_size)}, dilation={tuple(dilation)}"
            )


def _check_out_size(spec: PoolSpec) -> None:
    if any(v < 1 for v in spec.out_size):
        raise ValueError(
            f"output size must be >= 1; got output size {spec.out_size} from input size "
            f"{spec.in_size}, kernel_size {spec.kernel_size}, stride {spec.stride}, dilation "
            f"{spec.dilation}, padding {spec.pads}: the padded input is smaller than the window"
        )
    for dim, n in enumerate(spec.in_size):
        t = spec.taps(dim)                                         # (P, K)
        empty = np.flatnonzero(~((t >= 0) & (t < n)).any(axis=1))  # windows on padding only
        if empty.size:
            raise ValueError(
                f"every pooling window must read at least one input pixel; along spatial "
                f"dimension {dim} window {int(empty[0])} reads only padding (input size {n}, "
                f"kernel_size {spec.kernel_size[dim]}, dilation {spec.dilation[dim]}, padding "
                f"{spec.pads[dim]}): lower the padding or the dilation"
            )


def pool_spec(
    x_shape,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
) -> PoolSpec:
    """Check every argument of a pooling and resolve its geometry.

    `stride=None` means stride = kernel_size. `padding` takes every form `npconv.conv` takes
    (int, per-dim ints, (lo, hi) pairs, "valid", "same"); each side must stay <= eff // 2.
    """
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    n, s, c = _split_x(x_shape, data_format)
    rank = len(s)
    k = _args.positive_tuple(kernel_size, rank, "kernel_size")
    stride = k if stride is None else _args.positive_tuple(stride, rank, "stride")
    dilation = _args.positive_tuple(dilation, rank, "dilation")
    ceil_mode = check_flag(ceil_mode, "ceil_mode")
    pads = resolve_padding(padding, s, k, stride, dilation)
    _check_half_kernel(pads, k, dilation, padding)
    p = tuple(pool_out_size(*a, lo, hi, ceil_mode)
              for *a, (lo, hi) in zip(s, k, stride, dilation, pads))
    spec = PoolSpec(n, c, s, k, p, stride, dilation, pads, ceil_mode, data_format)
    _check_out_size(spec)
    return spec


# ---------------------------------------------------------------------------------------------
# Layout and padding
# ---------------------------------------------------------------------------------------------


def _x_in(x, data_format: str, dtype):
    xp = _backend.namespace(x)
    if data_format == "channels_first":
        x = xp.moveaxis(x, 1, -1)                                  # (N, *S, C) view
    return x.astype(dtype, copy=False)


def _x_out(y, data_format: str, dtype):
    xp = _backend.namespace(y)
    if data_format == "channels_first":
        y = xp.moveaxis(y, -1, 1)                                  # (N, *P, C) -> (N, C, *P)
    return xp.ascontiguousarray(y.astype(dtype, copy=False))


def _pad_with(x, pads: Pads, value: float):
    """Pad the spatial axes of x (N, *S, C) with a constant -> (N, *Sp, C)."""
    if value == 0:
        return windows.pad(x, pads)
    xp = _backend.namespace(x)
    return xp.pad(x, ((0, 0), *pads, (0, 0)), constant_values=value)  # (N, *Sp, C)


def _offsets(spec: PoolSpec):
    """(raster index, window slice) for every kernel offset, in raster order."""
    pairs = windows.offsets(spec.kernel_size, spec.stride, spec.dilation, spec.out_size)
    return ((i, window) for i, (_, window) in enumerate(pairs))


# ---------------------------------------------------------------------------------------------
# Max pooling
# ---------------------------------------------------------------------------------------------


def _max_forward(xp_, spec: PoolSpec):
    """Max and its offset over each window of the -inf padded x (N, *Sp, C).

    The running maximum starts at -inf with its offset at the window's first input tap, and an
    offset replaces it only if strictly greater or NaN: the first maximum in raster order wins
    a tie (and the last NaN, a NaN), the order of PyTorch's loop. Padding is never chosen.
    """
    xp = _backend.namespace(xp_)
    y_shape = (spec.batch, *spec.out_size, spec.channels)
    best = xp.full(y_shape, -xp.inf, dtype=xp_.dtype)              # (N, *P, C)
    arg = xp.empty(y_shape, dtype=xp.intp)                         # (N, *P, C)
    arg[...] = xp.asarray(spec.first_taps())[None, ..., None]      # (1, *P, 1) broadcast
    for i, window in _offsets(spec):
        v = xp_[window]                                            # (N, *P, C) view
        better = (v > best) | xp.isnan(v)                          # (N, *P, C)
        xp.copyto(best, v, where=better)
        xp.copyto(arg, i, where=better)
    return best, arg


def _input_indices(arg, spec: PoolSpec):
    """PyTorch's `return_indices`: flat index into the input's spatial dims (*S) of each
    chosen tap, from its raster offset index `arg` (N, *P, C)."""
    xp = _backend.namespace(arg)
    ks = xp.unravel_index(arg, spec.kernel_size)                   # rank x (N, *P, C)
    flat = xp.zeros(arg.shape, dtype=xp.int64)                     # (N, *P, C)
    for dim, (k, n) in enumerate(zip(ks, spec.in_size)):
        shape = [1] * arg.ndim
        shape[dim + 1] = -1
        p = xp.arange(spec.out_size[dim]).reshape(shape)           # (1, .., P, .., 1)
        pos = p * spec.stride[dim] + k * spec.dilation[dim] - spec.pads[dim][0]  # (N, *P, C)
        flat = flat * n + pos
    return flat


def max_pool(
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    return_indices: bool = False,
):
    """N-d max pooling (PyTorch's MaxPoolNd).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first, float16/32/64
    kernel_size : int or tuple of int, one per spatial dimension
    stride : int or tuple of int, optional
        Defaults to kernel_size.
    padding : int, tuple of int, tuple of (lo, hi) pairs, "valid" or "same"
        Implicit -inf padding, never chosen as a maximum. Each side at most half the dilated
        kernel, (dilation * (kernel_size - 1) + 1) // 2, as in PyTorch; "same" is Keras' rule.
    dilation : int or tuple of int
    ceil_mode : bool
        Round the output size up (see the module docstring for the formula).
    data_format : "channels_last" or "channels_first"
    return_indices : bool
        Also return, like PyTorch, the flat index into the input's spatial dimensions (*S) of
        each maximum, int64 of the output's shape.

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
    _args.float_array(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    return_indices = check_flag(return_indices, "return_indices")
    xp_ = _pad_with(_x_in(x, data_format, x.dtype), spec.array_pads, -np.inf)  # (N, *Sp, C)
    y, arg = _max_forward(xp_, spec)                               # (N, *P, C) twice
    y = _x_out(y, data_format, x.dtype)
    if return_indices:
        return y, _x_out(_input_indices(arg, spec), data_format, np.int64)
    return y


def max_pool_backward(
    dy,
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    dilation=1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
):
    """dx = dL/dx of `max_pool`, given dy = dL/dy; same keywords as `max_pool`.

    Each window's dy goes to the input pixel its maximum came from (the first one in a tie);
    overlapping windows add up. dx has x's shape, dtype numpy.result_type(dy, x).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.array([[[1.0], [3.0], [3.0], [2.0]]])   # (N, S, C): a tie in window [3, 3]
    >>> npconv.max_pool_backward(np.ones((1, 3, 1)), x, 2, stride=1)[0, :, 0]
    array([0., 2., 1., 0.])
    """
    _args.float_array(dy, "dy")
    _args.float_array(x, "x")
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.result_dtype(dy, x)
    xp_ = _pad_with(_x_in(x, data_format, x.dtype), spec.array_pads, -np.inf)  # (N, *Sp, C)
    _, arg = _max_forward(xp_, spec)                               # (N, *P, C)
    dy_ = _x_in(dy, data_format, _args.compute_dtype(dtype))       # (N, *P, C)
    xp = _backend.namespace(dy_)
    dxp = xp.zeros((spec.batch, *spec.padded_size, spec.channels), dtype=dy_.dtype)  # (N,*Sp,C)
    for i, window in _offsets(spec):
        dxp[window] += xp.where(arg == i, dy_, 0)                  # (N, *P, C)
    return _x_out(windows.pad_adjoint(dxp, spec.array_pads), data_format, dtype)


# ---------------------------------------------------------------------------------------------
# Average pooling
# ---------------------------------------------------------------------------------------------


def _divisors(spec: PoolSpec, count_include_pad: bool, xp, dtype):
    """Each window's divisor, shaped (1, *P, 1) to broadcast against (N, *P, C)."""
    counts = spec.window_counts(include_pad=count_include_pad)     # (*P)
    return xp.asarray(counts[None, ..., None], dtype=dtype)        # (1, *P, 1)


def avg_pool(
    x,
    kernel_size,
    *,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
):
    """N-d average pooling (PyTorch's AvgPoolNd).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first, float16/32/64
    kernel_size, stride, padding, ceil_mode, data_format : as in `max_pool` (no dilation)
        The padding is zeros; each side at most kernel_size // 2.
    count_include_pad : bool
        Divide by the window's taps inside the padded input [-lo, S + hi) (True, PyTorch's
        default) or inside the input only (False, Keras' "same"). Taps that ceil_mode adds past
        the padding are never counted.

    Returns
    -------
    y : ndarray, (N, *P, C) or (N, C, *P), x's dtype (float16 is summed in float32)
        P as in `max_pool` with dilation 1.

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
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                     data_format=data_format)
    count_include_pad = check_flag(count_include_pad, "count_include_pad")
    dtype = _args.compute_dtype(x.dtype)
    xp_ = windows.pad(_x_in(x, data_format, dtype), spec.array_pads)  # (N, *Sp, C)
    xp = _backend.namespace(xp_)
    total = xp.zeros((spec.batch, *spec.out_size, spec.channels), dtype=dtype)  # (N, *P, C)
    for _, window in _offsets(spec):
        total += xp_[window]                                       # (N, *P, C)
    y = total / _divisors(spec, count_include_pad, xp, dtype)      # (N, *P, C)
    return _x_out(y, data_format, x.dtype)


def avg_pool_backward(
    dy,
    x_shape,
    kernel_size,
    *,
    stride=None,
    padding=0,
    ceil_mode: bool = False,
    count_include_pad: bool = True,
    data_format: str = "channels_last",
):
    """dx = dL/dx of `avg_pool`, from dy alone (the op is linear); `x_shape` is x's shape.

    Every tap of window p receives dy[p] / divisor[p]; dx has dy's dtype.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dx = npconv.avg_pool_backward(np.ones((1, 2, 1)), (1, 3, 1), 2, stride=1)
    >>> dx[0, :, 0]                                   # the middle pixel is in both windows
    array([0.5, 1. , 0.5])
    """
    _args.float_array(dy, "dy")
    x_shape = _shape_arg(x_shape)
    spec = pool_spec(x_shape, kernel_size, stride=stride, padding=padding, ceil_mode=ceil_mode,
                     data_format=data_format)
    count_include_pad = check_flag(count_include_pad, "count_include_pad")
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.compute_dtype(dy.dtype)
    dy_ = _x_in(dy, data_format, dtype)                            # (N, *P, C)
    xp = _backend.namespace(dy_)
    g = dy_ / _divisors(spec, count_include_pad, xp, dtype)        # (N, *P, C)
    g = g.reshape(*g.shape[:-1], *(1,) * spec.rank, spec.channels)  # (N, *P, 1.., C)
    cols = xp.broadcast_to(g, (*g.shape[:spec.rank + 1], *spec.kernel_size, spec.channels))
    # cols: (N, *P, *K, C), a read-only broadcast view that fold only reads
    dxp = windows.fold(cols, spec.padded_size, spec.stride, spec.dilation)  # (N, *Sp, C)
    return _x_out(windows.pad_adjoint(dxp, spec.array_pads), data_format, dy.dtype)


def _shape_arg(shape, name: str = "x_shape") -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(map(_args.is_int, shape)):
        raise TypeError(f"`{name}` must be a tuple of ints; got {shape!r}")
    if any(v < 1 for v in shape):
        raise ValueError(f"`{name}` must have sizes >= 1; got {tuple(shape)}")
    return tuple(int(v) for v in shape)


# ---------------------------------------------------------------------------------------------
# Global average pooling
# ---------------------------------------------------------------------------------------------


def _spatial_axes(ndim: int, data_format: str) -> tuple[int, ...]:
    return tuple(range(1, ndim - 1)) if data_format == "channels_last" else tuple(range(2, ndim))


def global_avg_pool(x, *, data_format: str = "channels_last"):
    """Mean over every spatial dimension: (N, *S, C) or (N, C, *S) -> (N, C).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.global_avg_pool(np.arange(8.0).reshape(1, 2, 2, 2))   # (N, H, W, C)
    array([[3., 4.]])
    """
    _args.float_array(x, "x")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    _split_x(x.shape, data_format)
    axes = _spatial_axes(x.ndim, data_format)
    y = x.mean(axis=axes, dtype=_args.compute_dtype(x.dtype))      # (N, C)
    return y.astype(x.dtype, copy=False)


def global_avg_pool_backward(dy, x_shape, *, data_format: str = "channels_last"):
    """dx = dL/dx of `global_avg_pool`: dy (N, C) / prod(S), spread over x_shape.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> npconv.global_avg_pool_backward(np.ones((1, 1)), (1, 2, 2, 1))[0, :, :, 0]
    array([[0.25, 0.25],
           [0.25, 0.25]])
    """
    _args.float_array(dy, "dy")
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    x_shape = _shape_arg(x_shape)
    n, s, c = _split_x(x_shape, data_format, "x_shape")
    check_shape(dy, (n, c), "dy")
    xp = _backend.namespace(dy)
    size = int(np.prod(s))
    g = dy / size                                                  # (N, C)
    shape = (n, *(1,) * len(s), c) if data_format == "channels_last" else (n, c, *(1,) * len(s))
    dx = xp.empty(x_shape, dtype=dy.dtype)                         # (N, *S, C) or (N, C, *S)
    dx[...] = g.reshape(shape)                                     # broadcast over *S
    return dx
