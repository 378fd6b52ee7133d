"""Naive convolutions written straight from the definitions: the oracle for tests and tools.

Slow on purpose. Every function loops over output elements one at a time (the seed question's
nested loops, generalized to every option) and shares nothing with the fast kernels except the
argument checks, size and window formulas of `npconv.spec` and the layout views of
`npconv._layout` (both pinned by hand-computed cases and PyTorch's NCHW). Padding is applied
through an explicit index map (which source pixel each padded position copies), and the
transposed convolution is written in its own scatter form, so a bug in the kernels cannot hide
in the oracle. It imports no fast convolution op.

Same signatures and layouts as `npconv.conv`, `conv_backward`, `conv_transpose` and
`conv_transpose_backward`; results are float64 and cast to the inputs' dtype at the end.
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from npconv import _args, _layout
from npconv._backend import Array
from npconv.spec import (
    ConvGrads,
    ConvSpec,
    Padding,
    check_shape,
    conv_spec,
    conv_transpose_spec,
    pool_spec,
)


def _db(bias: Array | bool | None) -> bool:
    """Whether a backward op returns db (`npconv.conv_backward`'s `bias`)."""
    return bias if isinstance(bias, bool) else bias is not None


def source_index(i: int, size: int, lo: int, mode: str) -> int:
    """The input pixel that padded position i copies, or -1 for a zero.

    reflect mirrors about the edge pixel (no repeat), replicate repeats the edge pixel,
    circular wraps around: for size 4 and lo 2, positions 0, 1 map to 2, 1 / 0, 0 / 2, 3.
    """
    j = i - lo
    if 0 <= j < size:
        return j
    if mode == "zeros":
        return -1
    if mode == "replicate":
        return min(max(j, 0), size - 1)
    if mode == "circular":
        return j % size
    return -j if j < 0 else 2 * (size - 1) - j                   # reflect


def _to_last(a, spec):
    return _layout.to_last(np.asarray(a, dtype=np.float64), spec.data_format)


def _w_to_last(w, spec: ConvSpec):
    return _layout.w_to_last(np.asarray(w, dtype=np.float64), spec.data_format)


def _from_last(a, spec, dtype):
    return np.ascontiguousarray(_layout.from_last(a, spec.data_format), dtype=dtype)


def _w_from_last(w, spec: ConvSpec, dtype):
    return np.ascontiguousarray(_layout.w_from_last(w, spec.data_format), dtype=dtype)


def _padded(x: Any, spec: ConvSpec) -> Any:
    """x (N, *S, C) -> (N, *Sp, C) by the index map of `source_index`."""
    out: Any = np.zeros((x.shape[0], *spec.padded_size, x.shape[-1]))
    for pos in itertools.product(*map(range, spec.padded_size)):
        src = [source_index(i, s, lo, spec.padding_mode)
               for i, s, (lo, _) in zip(pos, spec.in_size, spec.pads)]
        if min(src) >= 0:
            out[(slice(None), *pos)] = x[(slice(None), *src)]
    return out


def _unpadded_grad(dxp: Any, spec: ConvSpec) -> Any:
    """Send each padded position's gradient to the input pixel it copied."""
    dx: Any = np.zeros((dxp.shape[0], *spec.in_size, dxp.shape[-1]))
    for pos in itertools.product(*map(range, spec.padded_size)):
        src = [source_index(i, s, lo, spec.padding_mode)
               for i, s, (lo, _) in zip(pos, spec.in_size, spec.pads)]
        if min(src) >= 0:
            dx[(slice(None), *src)] += dxp[(slice(None), *pos)]
    return dx


def _window(spec: ConvSpec, p) -> tuple:
    """Index of the window that output position p reads from the padded input."""
    return spec.window(tuple(p))


def _group_channels(spec: ConvSpec, f: int) -> slice:
    g = f // spec.group_out
    return slice(g * spec.group_in, (g + 1) * spec.group_in)


def _forward(xp, w, spec: ConvSpec):
    """y[n, p, f] = sum_{k, c in f's group} xp[n, p*stride + k*dilation, c] * w[k, c, f]."""
    y = np.zeros((spec.batch, *spec.out_size, spec.out_channels))
    for n, *p, f in itertools.product(range(spec.batch), *map(range, spec.out_size),
                                      range(spec.out_channels)):
        patch = xp[(n, *_window(spec, p), _group_channels(spec, f))]   # (*K, C/G)
        y[(n, *p, f)] = np.sum(patch * w[..., f])
    return y


def _backward(dy, xp, w, spec: ConvSpec):
    """The seed question's loops: every output element pushes dy back into its window."""
    dxp = np.zeros_like(xp)
    dw = np.zeros_like(w)
    for n, *p, f in itertools.product(range(spec.batch), *map(range, spec.out_size),
                                      range(spec.out_channels)):
        window = (n, *_window(spec, p), _group_channels(spec, f))
        g = dy[(n, *p, f)]
        dw[..., f] += xp[window] * g
        dxp[window] += w[..., f] * g
    return dxp, dw


def conv(x: Array, w: Array, bias: Array | None = None, *, stride: int | tuple[int, ...] = 1,
         padding: Padding = 0, dilation: int | tuple[int, ...] = 1, groups: int = 1,
         data_format: str = "channels_last", padding_mode: str = "zeros") -> Array:
    """Naive `npconv.conv`."""
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    y = _forward(_padded(_to_last(x, spec), spec), _w_to_last(w, spec), spec)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return _from_last(y, spec, _args.result_dtype(x, w, bias))


def conv_backward(dy: Array, x: Array, w: Array, bias: Array | bool | None = True, *,
                  stride: int | tuple[int, ...] = 1, padding: Padding = 0,
                  dilation: int | tuple[int, ...] = 1, groups: int = 1,
                  data_format: str = "channels_last", padding_mode: str = "zeros") -> ConvGrads:
    """Naive `npconv.conv_backward`."""
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    check_shape(dy, spec.y_shape(), "dy")
    dy_ = _to_last(dy, spec)
    dxp, dw = _backward(dy_, _padded(_to_last(x, spec), spec), _w_to_last(w, spec), spec)
    dtype = _args.result_dtype(dy, x, w)
    db = dy_.sum(axis=tuple(range(spec.rank + 1))).astype(dtype) if _db(bias) else None
    dx = _unpadded_grad(dxp, spec)
    return ConvGrads(_from_last(dx, spec, dtype), _w_from_last(dw, spec, dtype), db)


def _transpose_scatter(x, w, spec: ConvSpec):
    """PyTorch's definition of ConvTranspose, one input element at a time:

    y[n, i*stride + k*dilation - lo, f] += x[n, i, c] * w[k, f', c] for f in c's group,
    with output positions outside [0, O) dropped.
    """
    y = np.zeros((spec.batch, *spec.padded_size, spec.in_channels))  # (N, *Op, F)
    for n, *i, c in itertools.product(range(spec.batch), *map(range, spec.out_size),
                                      range(spec.out_channels)):
        window = (n, *_window(spec, i), _group_channels(spec, c))
        y[window] += w[..., c] * x[(n, *i, c)]
    lo_hi = tuple(slice(lo, lo + s) for (lo, _), s in zip(spec.pads, spec.in_size))
    return y[(slice(None), *lo_hi)]


def conv_transpose(x: Array, w: Array, bias: Array | None = None, *,
                   stride: int | tuple[int, ...] = 1, padding: Padding = 0,
                   output_padding: int | tuple[int, ...] = 0,
                   dilation: int | tuple[int, ...] = 1, groups: int = 1,
                   data_format: str = "channels_last") -> Array:
    """Naive `npconv.conv_transpose`, written in scatter form (not as a conv gradient)."""
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    y = _transpose_scatter(_to_last(x, spec), _w_to_last(w, spec), spec)
    if bias is not None:
        y = y + np.asarray(bias, dtype=np.float64)
    return _from_last(y, spec, _args.result_dtype(x, w, bias))


def conv_transpose_backward(dy: Array, x: Array, w: Array, bias: Array | bool | None = True, *,
                            stride: int | tuple[int, ...] = 1, padding: Padding = 0,
                            output_padding: int | tuple[int, ...] = 0,
                            dilation: int | tuple[int, ...] = 1, groups: int = 1,
                            data_format: str = "channels_last") -> ConvGrads:
    """Naive `npconv.conv_transpose_backward`: the scatter loop run backwards."""
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    check_shape(dy, spec.x_shape(), "dy")
    x_, w_, dy_ = _to_last(x, spec), _w_to_last(w, spec), _to_last(dy, spec)
    dyp = _padded(dy_, spec)                                     # zeros outside [0, O)
    dx, dw = np.zeros_like(x_), np.zeros_like(w_)
    for n, *i, c in itertools.product(range(spec.batch), *map(range, spec.out_size),
                                      range(spec.out_channels)):
        window = (n, *_window(spec, i), _group_channels(spec, c))
        dx[(n, *i, c)] = np.sum(dyp[window] * w_[..., c])
        dw[..., c] += dyp[window] * x_[(n, *i, c)]
    dtype = _args.result_dtype(dy, x, w)
    db = dy_.sum(axis=tuple(range(spec.rank + 1))).astype(dtype) if _db(bias) else None
    return ConvGrads(_from_last(dx, spec, dtype), _w_from_last(dw, spec, dtype), db)


# =============================================================================================
# Pooling: naive loops written from the definitions (PyTorch's MaxPoolNd, AvgPoolNd, LPPoolNd,
# ONNX's MaxPool, AveragePool, LpPool, GlobalMaxPool)
# =============================================================================================
#
# Window p of a pooling reads, along each dimension, the input coordinates
# p * stride + k * dilation - lo for k in range(K); coordinates outside [0, S) are padding.
# Only the argument checks and output sizes come from `npconv.spec.pool_spec`; which taps a
# window reads, its maximum, its sum and its divisor are recomputed here one output element at a
# time. A window that reads no input has the maximum -inf (the integer minimum) and index -1.


def _pool_taps(spec, p) -> list[tuple[int, ...]]:
    """Every tap of window p, in raster order, as input coordinates (padding included)."""
    per_dim = [[pi * s + k * d - lo for k in range(kk)]
               for pi, s, d, kk, (lo, _) in zip(p, spec.stride, spec.dilation, spec.kernel_size,
                                                spec.pads)]
    return list(itertools.product(*per_dim))


def _inside(pos, lows, highs) -> bool:
    return all(lo <= i < hi for i, lo, hi in zip(pos, lows, highs))


def _input_taps(spec, p) -> list[tuple[int, ...]]:
    """The taps of window p that fall inside the input, in raster order."""
    return [pos for pos in _pool_taps(spec, p) if _inside(pos, [0] * spec.rank, spec.in_size)]


def _argmax_tap(plane, spec, p) -> tuple[int, ...] | None:
    """PyTorch's scan: start at -inf, take a tap if strictly greater or NaN (first max wins);
    None for a window without input taps."""
    best, arg = None, None
    for pos in _input_taps(spec, p):
        v = plane[pos]
        if arg is None or v > best or np.isnan(v):
            best, arg = v, pos
    return arg


def _pool_outputs(spec):
    return itertools.product(range(spec.batch), *map(range, spec.out_size), range(spec.channels))


def _pool_in(a, data_format):
    """An array in channels_last order, keeping its dtype (integers stay exact)."""
    return _layout.to_last(np.asarray(a), data_format)


def _pool_out(a, data_format, dtype):
    return np.ascontiguousarray(_layout.from_last(a, data_format), dtype=dtype)


def _last_shape(x_shape, data_format) -> tuple[int, ...]:
    """(N, *S, C) of an input shape in either layout."""
    shape = tuple(x_shape)
    return (shape[0], *shape[2:], shape[1]) if data_format == "channels_first" else shape


def _max_grad_dtype(dy, x):
    """dx's dtype of a max pool's backward: the promotion of dy and a float x, else dy's."""
    float_x = isinstance(x, np.ndarray) and x.dtype.kind == "f"
    return _args.result_dtype(dy, x) if float_x else dy.dtype


def _lowest(dtype):
    return -np.inf if np.dtype(dtype).kind == "f" else np.iinfo(dtype).min


def max_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
             data_format="channels_last", return_indices=False):
    """Naive `npconv.max_pool`, one output element per iteration."""
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    x_ = _pool_in(x, data_format)
    y = np.full((spec.batch, *spec.out_size, spec.channels), _lowest(x.dtype), dtype=x.dtype)
    idx = np.full(y.shape, -1, dtype=np.int64)
    for n, *p, c in _pool_outputs(spec):
        arg = _argmax_tap(x_[n, ..., c], spec, p)
        if arg is not None:
            y[(n, *p, c)] = x_[(n, *arg, c)]
            idx[(n, *p, c)] = np.ravel_multi_index(arg, spec.in_size)
    if return_indices:
        return _pool_out(y, data_format, x.dtype), _pool_out(idx, data_format, np.int64)
    return _pool_out(y, data_format, x.dtype)


def max_pool_backward(dy, x, kernel_size, *, stride=None, padding=0, dilation=1,
                      ceil_mode=False, data_format="channels_last", indices=None):
    """Naive `npconv.max_pool_backward`: each dy element goes to its window's argmax (or to the
    element its index names)."""
    x_shape = tuple(x.shape) if isinstance(x, np.ndarray) else tuple(x)
    spec = pool_spec(x_shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    dy_ = _to_last(dy, spec)
    dx = np.zeros((spec.batch, *spec.in_size, spec.channels))
    for n, *p, c in _pool_outputs(spec):
        if indices is not None:
            i = _pool_in(indices, data_format)[(n, *p, c)]
            arg = None if i < 0 else np.unravel_index(i, spec.in_size)
        else:
            arg = _argmax_tap(_pool_in(x, data_format)[n, ..., c], spec, p)
        if arg is not None:
            dx[(n, *arg, c)] += dy_[(n, *p, c)]
    return _from_last(dx, spec, _max_grad_dtype(dy, x))


def _divisor(spec, p, count_include_pad: bool) -> int:
    if not count_include_pad:
        return len(_input_taps(spec, p))
    lows = [-lo for lo, _ in spec.pads]
    highs = [s + hi for s, (_, hi) in zip(spec.in_size, spec.pads)]
    return sum(_inside(pos, lows, highs) for pos in _pool_taps(spec, p))


def avg_pool(x, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
             count_include_pad=True, data_format="channels_last"):
    """Naive `npconv.avg_pool`: the sum of the input taps over the divisor (0 / 0 is NaN)."""
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    x_ = _to_last(x, spec)
    y = np.zeros((spec.batch, *spec.out_size, spec.channels))
    for n, *p, c in _pool_outputs(spec):
        total = np.float64(sum(x_[(n, *pos, c)] for pos in _input_taps(spec, p)))
        with np.errstate(invalid="ignore"):
            y[(n, *p, c)] = total / _divisor(spec, p, count_include_pad)
    return _from_last(y, spec, x.dtype)


def avg_pool_backward(dy, x_shape, kernel_size, *, stride=None, padding=0, dilation=1,
                      ceil_mode=False, count_include_pad=True, data_format="channels_last"):
    """Naive `npconv.avg_pool_backward`: each input tap of window p gets dy[p] / divisor."""
    spec = pool_spec(tuple(x_shape), kernel_size, stride=stride, padding=padding,
                     dilation=dilation, ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    dy_ = _to_last(dy, spec)
    dx = np.zeros((spec.batch, *spec.in_size, spec.channels))
    for n, *p, c in _pool_outputs(spec):
        for pos in _input_taps(spec, p):
            dx[(n, *pos, c)] += dy_[(n, *p, c)] / _divisor(spec, p, count_include_pad)
    return _from_last(dx, spec, dy.dtype)


def lp_pool(x, p, kernel_size, *, stride=None, padding=0, dilation=1, ceil_mode=False,
            data_format="channels_last"):
    """Naive `npconv.lp_pool`: (sum over the input taps of |x|^p)^(1/p); padding adds 0."""
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    x_ = _to_last(x, spec)
    y = np.zeros((spec.batch, *spec.out_size, spec.channels))
    for n, *q, c in _pool_outputs(spec):
        total = sum(abs(x_[(n, *pos, c)]) ** p for pos in _input_taps(spec, q))
        y[(n, *q, c)] = total ** (1 / p)
    return _from_last(y, spec, x.dtype)


def lp_pool_backward(dy, x, p, kernel_size, *, stride=None, padding=0, dilation=1,
                     ceil_mode=False, data_format="channels_last"):
    """Naive `npconv.lp_pool_backward`: d y[q] / d x[i] = sign(x[i]) |x[i]|^(p-1) / y[q]^(p-1)
    for each input tap i of window q, and 0 for a window with y[q] = 0."""
    spec = pool_spec(x.shape, kernel_size, stride=stride, padding=padding, dilation=dilation,
                     ceil_mode=ceil_mode, data_format=data_format)
    check_shape(dy, spec.y_shape(), "dy")
    x_, dy_ = _to_last(x, spec), _to_last(dy, spec)
    dx = np.zeros_like(x_)
    for n, *q, c in _pool_outputs(spec):
        taps = _input_taps(spec, q)
        y = sum(abs(x_[(n, *pos, c)]) ** p for pos in taps) ** (1 / p)
        if y == 0:
            continue
        for pos in taps:
            v = x_[(n, *pos, c)]
            dx[(n, *pos, c)] += dy_[(n, *q, c)] * np.sign(v) * abs(v) ** (p - 1) / y ** (p - 1)
    return _from_last(dx, spec, _args.result_dtype(dy, x))


def global_avg_pool(x, *, data_format="channels_last"):
    """Naive `npconv.global_avg_pool`: the mean of each (n, c) plane."""
    x_ = _pool_in(np.asarray(x, dtype=np.float64), data_format)
    y = np.zeros((x_.shape[0], x_.shape[-1]))
    for n, c in itertools.product(range(y.shape[0]), range(y.shape[1])):
        y[n, c] = x_[n, ..., c].sum() / x_[n, ..., c].size
    return y.astype(x.dtype)


def global_avg_pool_backward(dy, x_shape, *, data_format="channels_last"):
    """Naive `npconv.global_avg_pool_backward`: dy[n, c] / prod(S) at every pixel of the plane."""
    last = _last_shape(x_shape, data_format)
    dx = np.zeros(last)
    for n, c in itertools.product(range(last[0]), range(last[-1])):
        dx[n, ..., c] = dy[n, c] / dx[n, ..., c].size
    return _pool_out(dx, data_format, dy.dtype)


def _global_argmax(plane) -> int:
    """The flat index of the plane's first maximum in raster order, or of its last NaN."""
    values = plane.ravel()
    best, arg = values[0], 0
    for i, v in enumerate(values):
        if v > best or np.isnan(v):
            best, arg = v, i
    return arg


def global_max_pool(x, *, data_format="channels_last", return_indices=False):
    """Naive `npconv.global_max_pool`: each (n, c) plane's maximum (NaN wins) and its index."""
    x_ = _pool_in(x, data_format)
    y = np.zeros((x_.shape[0], x_.shape[-1]), dtype=x.dtype)
    idx = np.zeros(y.shape, dtype=np.int64)
    for n, c in itertools.product(range(y.shape[0]), range(y.shape[1])):
        plane = x_[n, ..., c]
        idx[n, c] = _global_argmax(plane)
        y[n, c] = plane.ravel()[idx[n, c]]
    return (y, idx) if return_indices else y


def global_max_pool_backward(dy, x, *, data_format="channels_last", indices=None):
    """Naive `npconv.global_max_pool_backward`: dy[n, c] at each plane's maximum."""
    last = _last_shape(x.shape if isinstance(x, np.ndarray) else x, data_format)
    dx = np.zeros(last)
    for n, c in itertools.product(range(last[0]), range(last[-1])):
        if indices is None:
            i = _global_argmax(_pool_in(x, data_format)[n, ..., c])
        else:
            i = indices[n, c]
        dx[(n, *np.unravel_index(i, last[1:-1]), c)] += dy[n, c]
    return _pool_out(dx, data_format, _max_grad_dtype(dy, x))
