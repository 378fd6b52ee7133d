"""ONNX's convolution, pooling and batch-normalization operators on npconv's functions.

Each function here is one ONNX operator: it takes the operator's inputs as NumPy arrays in
ONNX's shapes (x (N, C, *S), conv weight (F, C/G, *K), transposed-conv weight (C, F/G, *K)) and
its attributes under their ONNX names, turns the attributes into npconv's arguments (explicit
(lo, hi) padding pairs) and calls the public npconv function. The ONNX-only geometry lives here
and nowhere else: `auto_pad` (SAME_UPPER / SAME_LOWER / VALID), the flat `pads` list,
ConvTranspose's `output_shape` and negative implicit padding, MaxPool's flat `Indices` with
`storage_order`. The semantics follow `onnx.defs.get_schema(op).doc`; where it is silent,
ONNX's backend node tests decide.

Memory layout: npconv computes channels_last, so each op here hands npconv the (N, *S, C) view
of x (a transpose, no copy) and returns the (N, C, *P) view of npconv's channels_last result.
The shapes are ONNX's; the memory stays channels_last from one op to the next (NumPy's
elementwise ops keep their input's memory order), so a chain of convolutions, pools and
activations transposes nothing (measured: npconv's channels_first path, which converts x and
w on every call, was 3 to 25 times slower on ResNet-18's layers at batch 1). Weights are
converted to npconv's (*K, C/G, F) layout by `weight_last`, which a caller with constant
weights runs once and passes as `w_last`.

Nothing here imports the `onnx` package: the evaluator (`npconv.onnx.evaluator`) and the model
importer both call these functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

import npconv
from npconv.nn import functional as F

__all__ = [
    "AUTO_PADS",
    "average_pool",
    "batch_normalization",
    "conv",
    "conv_pads",
    "conv_transpose",
    "conv_transpose_geometry",
    "global_average_pool",
    "global_max_pool",
    "lp_pool",
    "max_pool",
    "weight_last",
]

AUTO_PADS = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")
Pads = tuple[tuple[int, int], ...]


# ---------------------------------------------------------------------------------------------
# Attributes
# ---------------------------------------------------------------------------------------------


def _ints(value, rank: int, name: str, op: str, default: int) -> tuple[int, ...]:
    """An ONNX list-of-ints attribute with one entry per spatial dimension (None: default)."""
    if value is None:
        return (default,) * rank
    value = tuple(int(v) for v in value)
    if len(value) != rank:
        raise ValueError(f"{op}: `{name}` must have {rank} entries, one per spatial dimension; "
                         f"got {list(value)}")
    return value


def _spatial_rank(x, op: str, what: str = "X") -> int:
    if x.ndim < 3:
        raise ValueError(f"{op}: `{what}` must have shape (N, C, D1, ..., Dn) with at least one "
                         f"spatial dimension; got shape {tuple(x.shape)}")
    return x.ndim - 2


def _pad_pairs(pads, rank: int, op: str) -> Pads:
    """ONNX's [x1_begin, x2_begin, ..., x1_end, x2_end, ...] as ((x1_begin, x1_end), ...)."""
    if pads is None:
        return ((0, 0),) * rank
    pads = [int(p) for p in pads]
    if len(pads) != 2 * rank:
        raise ValueError(f"{op}: `pads` must have 2 * {rank} = {2 * rank} entries [x1_begin, ..., "
                         f"x1_end, ...]; got {pads}")
    if min(pads) < 0:
        raise ValueError(f"{op}: `pads` must be >= 0; got {pads}")
    return tuple(zip(pads[:rank], pads[rank:]))


def _auto_pad(auto_pad, op: str = "") -> str:
    """The attribute as a str ("NOTSET" when absent; bytes as some files store strings)."""
    if isinstance(auto_pad, bytes):
        auto_pad = auto_pad.decode()
    auto_pad = auto_pad or "NOTSET"
    if auto_pad not in AUTO_PADS:
        where = f"{op}: " if op else ""
        raise ValueError(f"{where}`auto_pad` must be one of {AUTO_PADS}; got {auto_pad!r}")
    return auto_pad


def _same_pair(total: int, auto_pad: str) -> tuple[int, int]:
    """Split a total padding: the odd pixel goes at the end (SAME_UPPER) or the start."""
    lo = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
    return lo, total - lo


def conv_pads(auto_pad, pads, in_size: Sequence[int], kernel_size: Sequence[int],
              strides: Sequence[int], dilations: Sequence[int], op: str = "Conv") -> Pads:
    """(lo, hi) per spatial dimension for Conv and the pools.

    SAME_UPPER / SAME_LOWER give P = ceil(S / stride) with a total padding of
    max(0, (P - 1) * stride + dilation * (K - 1) + 1 - S), its odd pixel at the end (UPPER) or
    the start (LOWER); VALID is no padding; NOTSET takes `pads`.

    >>> conv_pads("SAME_LOWER", None, (5,), (4,), (1,), (1,))     # total 3: 2 before, 1 after
    ((2, 1),)
    """
    auto_pad = _auto_pad(auto_pad, op)
    rank = len(in_size)
    if auto_pad == "NOTSET":
        return _pad_pairs(pads, rank, op)
    if auto_pad == "VALID":
        return ((0, 0),) * rank
    out = []
    for s, k, st, d in zip(in_size, kernel_size, strides, dilations):
        p = -(-s // st)                                            # ceil(S / stride)
        out.append(_same_pair(max(0, (p - 1) * st + d * (k - 1) + 1 - s), auto_pad))
    return tuple(out)


def _kernel_from_weight(w, kernel_shape, op: str) -> tuple[int, ...]:
    k = tuple(w.shape[2:])
    if kernel_shape is not None and tuple(int(v) for v in kernel_shape) != k:
        raise ValueError(f"{op}: `kernel_shape` {list(kernel_shape)} does not match the weight's "
                         f"spatial shape {list(k)} (W of shape {tuple(w.shape)})")
    return k


def _check_group(group, op: str) -> int:
    if int(group) < 1:
        raise ValueError(f"{op}: `group` must be >= 1; got {group}")
    return int(group)


def _last(x):
    return x.transpose(0, *range(2, x.ndim), 1)                    # (N, *S, C) view


def _first(y):
    return y.transpose(0, y.ndim - 1, *range(1, y.ndim - 1))       # (N, C, *P) view


# ---------------------------------------------------------------------------------------------
# Conv and ConvTranspose
# ---------------------------------------------------------------------------------------------


def weight_last(w):
    """A Conv weight (F, C/G, *K), or a ConvTranspose weight (C, F/G, *K), as the C-contiguous
    (*K, C/G, F), or (*K, F/G, C), of npconv's channels_last layout (a copy).

    >>> weight_last(np.zeros((8, 3, 5, 5))).shape
    (5, 5, 3, 8)
    """
    return np.ascontiguousarray(w.transpose(*range(2, w.ndim), 1, 0))   # (*K, C/G, F)


def conv(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1, kernel_shape=None,
         pads=None, strides=None, w_last=None, clip=None):
    """ONNX Conv: x (N, C, *S), w (F, C/group, *K), b (F,) -> y (N, F, *P), x's dtype.

    P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1, the (lo, hi) pairs from
    `pads` or `auto_pad` (see `conv_pads`). `w_last`, if given, is `weight_last(w)`; `clip`
    (lo, hi) fuses a Relu or Clip after the Conv (`npconv.conv(..., clip=)`).

    >>> import numpy as np
    >>> conv(np.ones((1, 1, 5, 5)), np.ones((2, 1, 3, 3)), auto_pad="SAME_UPPER").shape
    (1, 2, 5, 5)
    """
    rank = _spatial_rank(x, "Conv")
    k = _kernel_from_weight(w, kernel_shape, "Conv")
    strides = _ints(strides, rank, "strides", "Conv", 1)
    dilations = _ints(dilations, rank, "dilations", "Conv", 1)
    pairs = conv_pads(auto_pad, pads, x.shape[2:], k, strides, dilations)
    y = npconv.conv(_last(x), weight_last(w) if w_last is None else w_last, b, stride=strides,
                    padding=pairs, dilation=dilations, groups=_check_group(group, "Conv"),
                    clip=clip)
    return _first(y.astype(x.dtype, copy=False))                   # (N, F, *P)


def conv_transpose_geometry(in_size: Sequence[int], kernel_size: Sequence[int], *,
                            auto_pad="NOTSET", dilations=None, output_padding=None,
                            output_shape=None, pads=None, strides=None):
    """The output size O of an ONNX ConvTranspose and where it lies in the full extent.

    The transposed convolution reaches T = stride * (S - 1) + dilation * (K - 1) + 1 rows per
    dimension (its full extent). The output is rows lo .. lo + O - 1 of it, rows outside
    [0, T) being zero: a negative crop extends the output. Without `output_shape`,
    O = T + output_padding - begin - end with `pads` (NOTSET) or no padding (VALID), and
    lo = begin. With `output_shape` (or O = S * stride under SAME_*), the operator's doc splits
    total = T + output_padding - O: lo = total // 2 for SAME_UPPER, total - total // 2
    otherwise (floor division: a negative total extends the end).

    Returns
    -------
    out_size : tuple of int
        O per spatial dimension.
    crops : tuple of (lo, T - lo - O) pairs
        Rows cut from the start and the end of the full extent, negative where the output
        extends past it.

    >>> conv_transpose_geometry((3, 3), (3, 3), strides=(3, 2), output_shape=(10, 8))
    ((10, 8), ((0, -1), (0, -1)))
    """
    rank = len(in_size)
    op = "ConvTranspose"
    auto_pad = _auto_pad(auto_pad, op)
    strides = _ints(strides, rank, "strides", op, 1)
    dilations = _ints(dilations, rank, "dilations", op, 1)
    extra = _ints(output_padding, rank, "output_padding", op, 0)
    full = [st * (s - 1) + d * (k - 1) + 1
            for s, k, st, d in zip(in_size, kernel_size, strides, dilations)]      # T
    if output_shape is None and auto_pad in ("NOTSET", "VALID"):
        pairs = _pad_pairs(pads if auto_pad == "NOTSET" else None, rank, op)
        out = tuple(t + e - lo - hi for t, e, (lo, hi) in zip(full, extra, pairs))
        starts = [lo for lo, _ in pairs]
    else:
        out = (tuple(s * st for s, st in zip(in_size, strides)) if output_shape is None
               else _ints(list(output_shape)[-rank:], rank, "output_shape", op, 1))
        split = "SAME_UPPER" if auto_pad == "SAME_UPPER" else "SAME_LOWER"
        starts = [_same_pair(t + e - o, split)[0] for t, e, o in zip(full, extra, out)]
    if min(out) < 1:
        raise ValueError(f"{op}: the output size must be >= 1; got {list(out)} from input size "
                         f"{list(in_size)}, kernel {list(kernel_size)}, strides {list(strides)}")
    return out, tuple((lo, t - lo - o) for lo, t, o in zip(starts, full, out))


def conv_transpose(x, w, b=None, *, auto_pad="NOTSET", dilations=None, group=1,
                   kernel_shape=None, output_padding=None, output_shape=None, pads=None,
                   strides=None, w_last=None):
    """ONNX ConvTranspose: x (N, C, *S), w (C, F/group, *K), b (F,) -> y (N, F, *O).

    O and the crops come from `conv_transpose_geometry`. npconv computes the rows of the full
    extent that the output keeps (the non-negative part of each crop is its padding); rows
    past the full extent, which no kernel tap reaches, are zeros plus the bias. `w_last`, if
    given, is `weight_last(w)`.

    >>> import numpy as np
    >>> conv_transpose(np.ones((1, 1, 3, 3)), np.ones((1, 2, 3, 3)), strides=(3, 2),
    ...                output_padding=(1, 1)).shape              # 3 * 2 + 3 + 1, 2 * 2 + 3 + 1
    (1, 2, 10, 8)
    """
    rank = _spatial_rank(x, "ConvTranspose")
    k = _kernel_from_weight(w, kernel_shape, "ConvTranspose")
    _, crops = conv_transpose_geometry(
        x.shape[2:], k, auto_pad=auto_pad, dilations=dilations, output_padding=output_padding,
        output_shape=output_shape, pads=pads, strides=strides)
    y = npconv.conv_transpose(
        _last(x), weight_last(w) if w_last is None else w_last, None,
        stride=_ints(strides, rank, "strides", "", 1),
        padding=tuple((max(lo, 0), max(hi, 0)) for lo, hi in crops),
        dilation=_ints(dilations, rank, "dilations", "", 1),
        groups=_check_group(group, "ConvTranspose"))              # (N, *O', F), O' <= O
    extend = tuple((max(-lo, 0), max(-hi, 0)) for lo, hi in crops)
    if any(e for pair in extend for e in pair):
        y = np.pad(y, ((0, 0), *extend, (0, 0)))                   # (N, *O, F)
    if b is not None:
        y += b.astype(y.dtype, copy=False)                         # (F,) along the last axis
    return _first(y.astype(x.dtype, copy=False))                   # (N, F, *O)


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def _pool_args(op: str, x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode) -> dict:
    """npconv's pooling keywords from ONNX's attributes.

    With `auto_pad` other than NOTSET the output size is the operator doc's (ceil(S / stride)
    for SAME_*, floor((S - eff) / stride) + 1 for VALID, whatever `ceil_mode` says), which is
    the floor formula on the resolved padding, so ceil_mode is passed on only with NOTSET.
    """
    rank = _spatial_rank(x, op)
    if kernel_shape is None:
        raise ValueError(f"{op}: the `kernel_shape` attribute is required")
    k = _ints(kernel_shape, rank, "kernel_shape", op, 1)
    strides = _ints(strides, rank, "strides", op, 1)
    dilations = _ints(dilations, rank, "dilations", op, 1)
    pairs = conv_pads(auto_pad, pads, x.shape[2:], k, strides, dilations, op)
    notset = _auto_pad(auto_pad, op) == "NOTSET"
    return dict(kernel_size=k, stride=strides, padding=pairs, dilation=dilations,
                ceil_mode=bool(ceil_mode) and notset)


def _onnx_indices(idx, x_shape: tuple[int, ...], storage_order: int):
    """ONNX's MaxPool Indices from npconv's: (n * C + c) * prod(S) + the flat spatial index,
    that index in row-major order (storage_order 0) or column-major order (1)."""
    n, c, *s = x_shape
    if storage_order:
        coords = np.unravel_index(idx, s)                           # rank x (N, C, *P)
        idx = np.ravel_multi_index(coords, s, order="F")            # (N, C, *P)
    plane = np.arange(n * c, dtype=np.int64).reshape(n, c, *(1,) * len(s)) * math.prod(s)
    return (plane + idx).astype(np.int64, copy=False)              # (N, C, *P)


def max_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, pads=None,
             storage_order=0, strides=None, indices: bool = False):
    """ONNX MaxPool: x (N, C, *S) -> y (N, C, *P), x's dtype, and optionally Indices.

    Padding is never chosen. Indices (int64, like y) are flat indices into x,
    (n * C + c) * prod(S) + the spatial index in row-major (storage_order 0) or column-major
    (1) order. A window's first maximum in raster order wins a tie; a NaN wins over numbers.

    >>> import numpy as np
    >>> y, i = max_pool(np.arange(16.0).reshape(1, 1, 4, 4), kernel_shape=(2, 2),
    ...                 strides=(2, 2), indices=True)
    >>> y[0, 0], i[0, 0]
    (array([[ 5.,  7.],
           [13., 15.]]), array([[ 5,  7],
           [13, 15]]))
    """
    kw = _pool_args("MaxPool", x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    if not indices:
        return _first(npconv.max_pool(_last(x), **kw))             # (N, C, *P)
    if int(storage_order) not in (0, 1):
        raise ValueError(f"MaxPool: `storage_order` must be 0 or 1; got {storage_order}")
    y, idx = npconv.max_pool(_last(x), **kw, return_indices=True)  # (N, *P, C) twice
    return _first(y), _onnx_indices(_first(idx), x.shape, int(storage_order))


def average_pool(x, *, auto_pad="NOTSET", ceil_mode=0, count_include_pad=0, dilations=None,
                 kernel_shape=None, pads=None, strides=None):
    """ONNX AveragePool: x (N, C, *S) -> y (N, C, *P), x's dtype.

    Each window's sum over its taps inside the input, divided by the taps inside the padded
    input (count_include_pad=1) or inside the input (0). Taps that ceil_mode adds past the
    padding are never counted.
    """
    kw = _pool_args("AveragePool", x, kernel_shape, auto_pad, pads, strides, dilations,
                    ceil_mode)
    y = npconv.avg_pool(_last(x), **kw, count_include_pad=bool(count_include_pad))
    return _first(y)                                               # (N, C, *P)


def lp_pool(x, *, auto_pad="NOTSET", ceil_mode=0, dilations=None, kernel_shape=None, p=2,
            pads=None, strides=None):
    """ONNX LpPool: x (N, C, *S) -> y (N, C, *P), (sum over a window of |x| ** p) ** (1 / p),
    zero padding."""
    kw = _pool_args("LpPool", x, kernel_shape, auto_pad, pads, strides, dilations, ceil_mode)
    return _first(npconv.lp_pool(_last(x), p, **kw))              # (N, C, *P)


def global_average_pool(x):
    """ONNX GlobalAveragePool: x (N, C, *S) -> y (N, C, 1, ..., 1), the mean over *S."""
    rank = _spatial_rank(x, "GlobalAveragePool")
    y = npconv.global_avg_pool(x, data_format="channels_first")    # (N, C)
    return y.reshape(*y.shape, *(1,) * rank)                       # (N, C, 1, ..., 1)


def global_max_pool(x):
    """ONNX GlobalMaxPool: x (N, C, *S) -> y (N, C, 1, ..., 1), the maximum over *S."""
    rank = _spatial_rank(x, "GlobalMaxPool")
    y = npconv.global_max_pool(x, data_format="channels_first")    # (N, C)
    return y.reshape(*y.shape, *(1,) * rank)                       # (N, C, 1, ..., 1)


# ---------------------------------------------------------------------------------------------
# BatchNormalization
# ---------------------------------------------------------------------------------------------


def batch_normalization(x, scale, bias, mean, var, *, epsilon=1e-5, momentum=0.9,
                        training_mode=0):
    """ONNX BatchNormalization: x (N, C, *S) or (N, C); scale, bias, mean, var (C,).

    Inference (training_mode=0): y = (x - mean) / sqrt(var + epsilon) * scale + bias, returned
    alone. Training: normalized by the batch's mean and population variance over every axis
    but C, and returned with the running statistics momentum * input + (1 - momentum) * batch.
    """
    if x.ndim < 2:
        raise ValueError(f"BatchNormalization: `X` must have shape (N, C, ...); got shape "
                         f"{tuple(x.shape)}")
    if training_mode:
        axes = (0, *range(2, x.ndim))
        wide = x.astype(np.float32, copy=False) if x.dtype == np.float16 else x
        batch_mean, batch_var = wide.mean(axis=axes), wide.var(axis=axes)   # (C,) twice
    else:
        batch_mean, batch_var = mean, var
    y, _, _ = F.batch_norm(x, scale, bias, batch_mean, batch_var, training=False,
                           eps=float(epsilon), data_format="channels_first")
    if not training_mode:
        return y
    m = float(momentum)
    running = (mean * m + batch_mean * (1 - m), var * m + batch_var * (1 - m))
    return y, *(r.astype(mean.dtype, copy=False) for r in running)
