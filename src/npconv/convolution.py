"""Public convolution ops: forward, backward and transposed, for any spatial rank.

Each function checks its arguments once, resolves them into a `ConvSpec`, converts the caller's
layout to channels_last and calls the kernels. Shapes, channels_last / channels_first:

    x   (N, *S, C)        / (N, C, *S)
    w   (*K, C/G, F)      / (F, C/G, *K)        conv weight (Keras HWIO / PyTorch OIHW)
    w   (*K, F/G, C)      / (C, F/G, *K)        conv_transpose weight, x having C channels
    y   (N, *P, F)        / (N, F, *P)
    b   (F,)

Output size per spatial dimension:

    conv:            P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1
    conv_transpose:  O = (S - 1) * stride - lo - hi + dilation * (K - 1) + output_padding + 1

Algorithms and memory: every op takes `algorithm=None` (automatic choice by shape) or the name
of one of `npconv.ALGORITHMS` ("im2col", "offsets", "pointwise", "depthwise", "winograd",
"fft"; docs/algorithms.md), and `workspace=None` (the limit in force, 256 MiB by default, see
`npconv.set_config`) or a limit in bytes for this call. Besides the output, an op allocates
padded copies of its input (and, for input gradients, of dy) and at most `workspace` bytes of
temporaries: window matrices and transforms are built chunk by chunk (whole images, or output
rows of one image) and consumed at once, one chunk per worker thread. float16 is computed in
float32 and returned as float16.
"""

from __future__ import annotations

import functools
from contextlib import nullcontext
from typing import NamedTuple

from npconv import _args, _backend, _config, _workspace, algorithms, kernels, windows
from npconv.spec import ConvSpec, check_shape, conv_spec, conv_transpose_spec


class ConvGrads(NamedTuple):
    """Gradients of a convolution's loss: dx like x, dw like w, db like the bias (or None)."""

    dx: object
    dw: object
    db: object


# ---------------------------------------------------------------------------------------------
# Layout conversion: kernels see x (N, *S, C) and w (*K, C/G, F)
# ---------------------------------------------------------------------------------------------


def _x_in(x, spec: ConvSpec, dtype):
    xp = _backend.namespace(x)
    if spec.data_format == "channels_first":
        x = xp.moveaxis(x, 1, -1)                                # (N, *S, C) view
    return x.astype(_args.compute_dtype(dtype), copy=False)


def _w_in(w, spec: ConvSpec, dtype):
    if spec.data_format == "channels_first":
        r = spec.rank
        w = w.transpose(*range(2, r + 2), 1, 0)                  # (F, C/G, *K) -> (*K, C/G, F)
    return w.astype(_args.compute_dtype(dtype), copy=False)


def _x_out(y, spec: ConvSpec, dtype):
    xp = _backend.namespace(y)
    if spec.data_format == "channels_first":
        y = xp.moveaxis(y, -1, 1)                                # (N, *P, F) -> (N, F, *P)
    return algorithms.contiguous(y.astype(dtype, copy=False))   # copied by the workers


def _w_out(dw, spec: ConvSpec, dtype):
    xp = _backend.namespace(dw)
    if spec.data_format == "channels_first":
        r = spec.rank
        dw = dw.transpose(r + 1, r, *range(r))                   # (*K, C/G, F) -> (F, C/G, *K)
    return xp.ascontiguousarray(dw.astype(dtype, copy=False))


def _db(dy, spec: ConvSpec, dtype):
    """Bias gradient: dy (N, *P, F) summed over batch and space -> (F,).

    Contiguous channels_last dy sums as a matrix-vector product, ones @ dy (N*prod(P), F): BLAS
    is 2 to 8 times faster than NumPy's reduction over the rows of a narrow matrix. A
    channels_first dy (a transposed view) reduces in its own memory order.
    """
    xp = _backend.namespace(dy)
    f = dy.shape[-1]
    if dy.flags.c_contiguous:
        with algorithms.single_blas(xp):       # memory-bound; spinning BLAS threads would slow
            db = xp.ones(dy.size // f, dtype=dy.dtype) @ dy.reshape(-1, f)  # the next op (F,)
    else:
        db = dy.sum(axis=tuple(range(spec.rank + 1)))            # (F,)
    return db.astype(dtype, copy=False)


# ---------------------------------------------------------------------------------------------
# Argument checks specific to this module
# ---------------------------------------------------------------------------------------------


def _check_bias(bias, channels: int) -> None:
    if bias is None:
        return
    _args.float_array(bias, "bias")
    check_shape(bias, (channels,), "bias")


def _check_bias_flag(bias) -> bool:
    if not isinstance(bias, bool):
        raise TypeError(f"`bias` must be True or False (whether to return db); got {bias!r}")
    return bias


def _shape_arg(shape, name: str) -> tuple[int, ...]:
    if not isinstance(shape, (tuple, list)) or not all(map(_args.is_int, shape)):
        raise TypeError(f"`{name}` must be a tuple of ints; got {shape!r}")
    if any(v < 0 for v in shape):
        raise ValueError(f"`{name}` must not have negative sizes; got {tuple(shape)}")
    return tuple(int(v) for v in shape)


def _as_dask(a, like, name: str):
    """`a` as a dask array chunked along the batch like `like` (a NumPy dy with a dask x)."""
    if _backend.is_dask(a):
        return a
    import dask.array as da

    _args.float_array(a, name)
    return da.from_array(a, chunks=(like.chunks[0], *(-1,) * (a.ndim - 1)))


def _pad_x(x, spec: ConvSpec, dtype):
    """Padded channels_last input (N, *Sp, C); a view of x when there is no padding."""
    return windows.pad(_x_in(x, spec, dtype), spec.pads, spec.padding_mode)


def _scoped(op):
    """Run the op inside a `_workspace.scope`: its padded copies and chunk buffers are reused
    from call to call instead of page-faulted afresh (the results never come from there). With
    `threads=1`, BLAS is held to one thread for the whole op: one core in all."""
    @functools.wraps(op)
    def call(*args, **kwargs):
        one_core = _config.resolve(None).threads == 1
        with _workspace.scope(), algorithms.single_blas() if one_core else nullcontext():
            return op(*args, **kwargs)

    return call


def _options(algorithm, workspace, spec: ConvSpec) -> dict:
    """Check the `algorithm` and `workspace` keywords; the keyword arguments of the kernels."""
    algorithms.check_name(algorithm)
    _config.check(workspace, None)
    algorithms.check_applies(algorithm, spec)
    return {"algorithm": algorithm, "workspace": workspace}


# ---------------------------------------------------------------------------------------------
# Forward convolution
# ---------------------------------------------------------------------------------------------


@_scoped
def conv(
    x,
    w,
    bias=None,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
):
    """N-d convolution (cross-correlation, as in PyTorch, JAX and Keras).

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first
        Input; the number of spatial dimensions (1, 2, 3, ...) is x.ndim - 2.
    w : ndarray, (*K, C/G, F) channels_last or (F, C/G, *K) channels_first
        Filters: Keras' HWIO layout, or PyTorch's OIHW.
    bias : ndarray of shape (F,), optional
    stride, dilation : int or tuple of int, one per spatial dimension
    padding : int, tuple of int, tuple of (lo, hi) pairs, "valid", "same" or "full"
        "same" is TensorFlow's rule for any stride: P = ceil(S / stride), the odd pixel of
        padding at the end. "full" pads dilation * (K - 1) on both sides.
    groups : int
        Divides C and F; groups == C is a depthwise convolution.
    data_format : "channels_last" or "channels_first"
    padding_mode : "zeros", "reflect", "replicate" or "circular" (PyTorch's semantics)
    algorithm : str, optional
        Force one of `npconv.ALGORITHMS` ("im2col", "offsets", "pointwise", "depthwise",
        "winograd", "fft") for every computation of the call instead of the automatic choice;
        ValueError if it cannot run this geometry. Every op of this module takes `algorithm`
        and `workspace`.
    workspace : int, optional
        Bytes of temporaries this call may allocate (default: `npconv.get_config()`).

    Returns
    -------
    y : ndarray, (N, *P, F) or (N, F, *P), dtype numpy.result_type(x, w, bias)
        P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.ones((1, 5, 5, 1))                 # one 5x5 single-channel image
    >>> w = np.ones((3, 3, 1, 2))                 # two 3x3 filters
    >>> npconv.conv(x, w, stride=2).shape
    (1, 2, 2, 2)
    >>> float(npconv.conv(x, w, padding="same")[0, 0, 0, 0])   # corner window sees 2x2 ones
    4.0
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    data_format=data_format, padding_mode=padding_mode)
    if _backend.is_dask(x):                     # lazy, chunk by chunk (npconv.chunked)
        from npconv import chunked

        return chunked.conv(x, w, bias, **geometry)
    _args.float_array(x, "x")
    _args.float_array(w, "w")
    spec = conv_spec(x.shape, w.shape, **geometry)
    opts = _options(algorithm, workspace, spec)
    _check_bias(bias, spec.out_channels)
    dtype = _args.result_dtype(x, w, bias)
    b = None if bias is None else bias.astype(_args.compute_dtype(dtype), copy=False)
    y = kernels.forward(_pad_x(x, spec, dtype), _w_in(w, spec, dtype), spec, bias=b,
                        **opts)                                  # (N, *P, F)
    return _x_out(y, spec, dtype)


@_scoped
def conv_backward(
    dy,
    x,
    w,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    bias: bool = True,
    algorithm: str | None = None,
    workspace: int | None = None,
) -> ConvGrads:
    """Gradients of `conv` with respect to x, w and the bias, given dy = dL/dy.

    Takes the same keywords as `conv`; `bias=False` returns db = None. dx has x's shape (zero at
    pixels the forward pass never read, such as remainder rows when P was floored), dw has w's,
    db is (F,). Padding of any mode is differentiated too: a reflected, replicated or wrapped
    pixel sends its gradient back to the pixel it copies.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((2, 7, 7, 3)), np.ones((2, 2, 3, 4))
    >>> dy = np.ones((2, 3, 3, 4))                # y is 3x3: 7 = 2*3 + 1 leaves a remainder
    >>> dx, dw, db = npconv.conv_backward(dy, x, w, stride=2)
    >>> float(dx[0, 6, 6, 0]), dw.shape, db.shape  # the last row is never read
    (0.0, (2, 2, 3, 4), (4,))
    """
    geometry = dict(stride=stride, padding=padding, dilation=dilation, groups=groups,
                    data_format=data_format, padding_mode=padding_mode)
    if _backend.is_dask(x) or _backend.is_dask(dy):   # lazy, chunk by chunk (npconv.chunked)
        from npconv import chunked

        return chunked.conv_backward(_as_dask(dy, x, "dy"), _as_dask(x, dy, "x"), w,
                                     bias=bias, **geometry)
    for a, name in ((dy, "dy"), (x, "x"), (w, "w")):
        _args.float_array(a, name)
    spec = conv_spec(x.shape, w.shape, **geometry)
    opts = _options(algorithm, workspace, spec)
    check_shape(dy, spec.y_shape(), "dy")
    bias = _check_bias_flag(bias)
    dtype = _args.result_dtype(dy, x, w)
    dy_ = _x_in(dy, spec, dtype)                                 # (N, *P, F)
    w_ = _w_in(w, spec, dtype)                                   # (*K, C/G, F)
    dx = kernels.grad_input(dy_, w_, spec, unpad=True, **opts)   # (N, *S, C)
    dw = kernels.grad_weight(_pad_x(x, spec, dtype), dy_, spec, **opts)  # (*K, C/G, F)
    db = _db(dy_, spec, dtype) if bias else None
    return ConvGrads(_x_out(dx, spec, dtype), _w_out(dw, spec, dtype), db)


@_scoped
def conv_grad_input(
    dy,
    w,
    x_shape,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
):
    """dx = dL/dx of `conv`, from dy and w alone; `x_shape` is the input's shape.

    This is the adjoint of `conv` in x: <dy, conv(x, w)> == <conv_grad_input(dy, w, x.shape), x>.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dx = npconv.conv_grad_input(np.ones((1, 2, 2, 1)), np.ones((3, 3, 1, 1)), (1, 4, 4, 1))
    >>> dx[0, :, :, 0].astype(int).tolist()       # how many windows read each pixel
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    """
    _args.float_array(dy, "dy")
    _args.float_array(w, "w")
    x_shape = _shape_arg(x_shape, "x_shape")
    spec = conv_spec(x_shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    opts = _options(algorithm, workspace, spec)
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.result_dtype(dy, w)
    dx = kernels.grad_input(_x_in(dy, spec, dtype), _w_in(w, spec, dtype), spec, unpad=True,
                            **opts)                              # (N, *S, C)
    return _x_out(dx, spec, dtype)


@_scoped
def conv_grad_weight(
    dy,
    x,
    w_shape,
    *,
    stride=1,
    padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
):
    """dw = dL/dw of `conv`, from dy and x alone; `w_shape` is the weight's shape.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dw = npconv.conv_grad_weight(np.ones((1, 2, 2, 1)), np.ones((1, 4, 4, 1)), (3, 3, 1, 1))
    >>> dw.shape, float(dw.sum())                 # each of 9 taps sums 4 products
    ((3, 3, 1, 1), 36.0)
    """
    _args.float_array(dy, "dy")
    _args.float_array(x, "x")
    w_shape = _shape_arg(w_shape, "w_shape")
    spec = conv_spec(x.shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    opts = _options(algorithm, workspace, spec)
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.result_dtype(dy, x)
    dw = kernels.grad_weight(_pad_x(x, spec, dtype), _x_in(dy, spec, dtype), spec, **opts)
    return _w_out(dw, spec, dtype)


# ---------------------------------------------------------------------------------------------
# Transposed convolution: the input gradient of a forward convolution, as an op of its own
# ---------------------------------------------------------------------------------------------


@_scoped
def conv_transpose(
    x,
    w,
    bias=None,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    algorithm: str | None = None,
    workspace: int | None = None,
):
    """N-d transposed convolution with PyTorch's ConvTransposeNd semantics.

    Parameters
    ----------
    x : ndarray, (N, *S, C) channels_last or (N, C, *S) channels_first
    w : ndarray, (*K, F/G, C) channels_last (Keras' ConvTranspose) or (C, F/G, *K)
        channels_first (PyTorch's)
    bias : ndarray of shape (F,), optional
    stride, dilation, padding, groups, data_format : as in `conv`; padding crops the output
        (int, per-dim ints or (lo, hi) pairs; "valid"; "same" gives O = S * stride; "full").
    output_padding : int or tuple of int
        Extra rows added at the end of each dimension, >= 0 and < max(stride, dilation); it
        picks one of the input sizes that a strided convolution maps to the same output size.

    Returns
    -------
    y : ndarray, (N, *O, F) or (N, F, *O), where
        O = (S - 1) * stride - lo - hi + dilation * (K - 1) + output_padding + 1.

    Notes
    -----
    conv_transpose(x, w) is the gradient of conv(., w) with respect to its input, evaluated at
    dy = x: it is computed by the same scatter-add kernel as `conv_backward`'s dx.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> y = npconv.conv_transpose(np.ones((1, 3, 3, 4)), np.ones((3, 3, 2, 4)), stride=2,
    ...                           padding=1, output_padding=1)
    >>> y.shape                                   # (3 - 1)*2 - 2 + 3 + 1 = 6
    (1, 6, 6, 2)
    """
    _args.float_array(x, "x")
    _args.float_array(w, "w")
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    opts = _options(algorithm, workspace, spec)
    _check_bias(bias, spec.in_channels)
    dtype = _args.result_dtype(x, w, bias)
    y = kernels.grad_input(_x_in(x, spec, dtype), _w_in(w, spec, dtype), spec, unpad=True,
                           **opts)                               # (N, *O, F)
    if bias is not None:
        y += bias.astype(y.dtype, copy=False)
    return _x_out(y, spec, dtype)


@_scoped
def conv_transpose_backward(
    dy,
    x,
    w,
    *,
    stride=1,
    padding=0,
    output_padding=0,
    dilation=1,
    groups=1,
    data_format: str = "channels_last",
    bias: bool = True,
    algorithm: str | None = None,
    workspace: int | None = None,
) -> ConvGrads:
    """Gradients of `conv_transpose` with respect to x, w and the bias, given dy = dL/dy.

    The transposed convolution's input gradient is a forward convolution of dy, and its weight
    gradient is the forward convolution's weight gradient with the roles of x and dy swapped.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w = np.ones((1, 3, 3, 4)), np.ones((3, 3, 2, 4))
    >>> dx, dw, db = npconv.conv_transpose_backward(np.ones((1, 7, 7, 2)), x, w, stride=2)
    >>> dx.shape, dw.shape, db.shape
    ((1, 3, 3, 4), (3, 3, 2, 4), (2,))
    """
    for a, name in ((dy, "dy"), (x, "x"), (w, "w")):
        _args.float_array(a, name)
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    opts = _options(algorithm, workspace, spec)
    check_shape(dy, spec.x_shape(), "dy")
    bias = _check_bias_flag(bias)
    dtype = _args.result_dtype(dy, x, w)
    dyp = _pad_x(dy, spec, dtype)                                # (N, *Op, F)
    w_ = _w_in(w, spec, dtype)
    dx = kernels.forward(dyp, w_, spec, **opts)                          # (N, *S, C)
    dw = kernels.grad_weight(dyp, _x_in(x, spec, dtype), spec, **opts)   # (*K, F/G, C)
    db = _db(_x_in(dy, spec, dtype), spec, dtype) if bias else None
    return ConvGrads(_x_out(dx, spec, dtype), _w_out(dw, spec, dtype), db)
