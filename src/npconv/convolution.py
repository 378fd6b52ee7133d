"""Public convolution ops: forward, backward and transposed, for any spatial rank.

Each function checks its arguments once, resolves them into a `ConvSpec`, converts the caller's
layout to channels_last (`_layout`) and calls the kernels (`_kernels`); `conv` keeps what it
checked and decided per layer (`_forward_key`), for the next call with arguments of the same
types, shapes, strides and dtypes under the same settings. Shapes, channels_last /
channels_first:

    x   (N, *S, C)        / (N, C, *S)
    w   (*K, C/G, F)      / (F, C/G, *K)        conv weight (Keras HWIO / PyTorch OIHW)
    w   (*K, F/G, C)      / (C, F/G, *K)        conv_transpose weight, x having C channels
    y   (N, *P, F)        / (N, F, *P)
    b   (F,)

Output size per spatial dimension:

    conv:            P = floor((S + lo + hi - dilation * (K - 1) - 1) / stride) + 1
    conv_transpose:  O = (S - 1) * stride - lo - hi + dilation * (K - 1) + output_padding + 1

The bias: the backward ops (`conv_backward`, `conv_transpose_backward`) take the forward op's
arguments with dy in front, `bias` included: the forward's bias array (F,) or None, as given to
`conv`, returns db or None. They need no value of it, so True and False (the bias exists or
not; True is the default) are accepted too, for callers that do not hold the array.

Algorithms and memory: every op takes `algorithm=None` (automatic choice by shape) or the name
of one of `npconv.ALGORITHMS` ("im2col", "pointwise", "depthwise", "winograd";
docs/algorithms.md), and `workspace=None` (the limit in force, 256 MiB by default, see
`npconv.set_config`) or a limit in bytes for this call. Besides its inputs and outputs, an op
allocates one converted copy of each array it reads (channels_last, padded, in the compute
dtype; dy of an input gradient may get a second, padded one), the results in that layout when
the caller's differs, and at most `workspace` bytes of temporaries: window matrices and
transforms are built chunk by chunk and consumed at once, one chunk per worker thread
(docs/algorithms.md, "Workspace"). float16 is computed in float32 and returned as float16.
Dask arrays have their own front end, `npconv.dask`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any, NamedTuple

from npconv import _args, _backend, _chunks, _config, _kernels, _layout, _workspace, algorithms
from npconv._backend import Array
from npconv._config import Settings
from npconv.spec import (
    ConvGrads,
    ConvSpec,
    Padding,
    cache_key_safe,
    check_shape,
    conv_spec,
    conv_transpose_spec,
)

__all__ = ["ConvGrads", "conv", "conv_backward", "conv_grad_input", "conv_grad_weight",
           "conv_transpose", "conv_transpose_backward"]


def _check_arrays(op: str, **arrays: Any) -> None:
    """TypeError unless every array is a float NumPy (or CuPy) array; dask arrays are pointed
    to their front end."""
    for name, a in arrays.items():
        if _backend.is_dask(a):
            raise TypeError(f"`{name}` is a dask array: call npconv.dask.{op}, which computes "
                            f"dask arrays chunk by chunk")
        _args.float_array(a, name)


def _check_bias(bias: Any, channels: int) -> None:
    if bias is None:
        return
    _args.float_array(bias, "bias")
    check_shape(bias, (channels,), "bias")


def wants_db(bias: Any, channels: int) -> bool:
    """Whether a backward op returns db: its `bias` is the forward's bias array (checked like
    the forward op checks it) or None, or True / False."""
    if isinstance(bias, bool):
        return bias
    if bias is not None and not _backend.is_array(bias):
        raise TypeError(f"`bias` must be the bias array of shape ({channels},), None, True or "
                        f"False; got {type(bias).__name__}")
    _check_bias(bias, channels)
    return bias is not None


def check_options(algorithm: Any, workspace: Any, spec: ConvSpec) -> None:
    """Check the `algorithm` and `workspace` keywords against a geometry."""
    algorithms.check_name(algorithm)
    _config.check(workspace)
    algorithms.check_applies(algorithm, spec)


@contextlib.contextmanager
def _call(spec: ConvSpec, algorithm: Any, workspace: Any, dtype: Any) -> Iterator[Settings]:
    """Check the options, resolve this call's settings (`_settings`) and run the op in them
    (`_run`)."""
    settings, one_core = _settings(spec, algorithm, workspace, dtype)
    with _run(settings, one_core):
        yield settings


def _settings(spec: ConvSpec, algorithm: Any, workspace: Any, dtype: Any
              ) -> tuple[Settings, bool]:
    """Check the options; this call's settings (serial for a small layer) and whether it runs
    on one core (`threads=1`)."""
    check_options(algorithm, workspace, spec)
    settings = _config.resolve(workspace)
    one_core = settings.threads == 1
    if _chunks.serial_layer(spec, dtype.itemsize, settings):
        settings = _config.serial(settings)
    return settings, one_core


@contextlib.contextmanager
def _run(settings: Settings, one_core: bool) -> Iterator[None]:
    """Run the op inside a `_workspace.scope`: its copies and chunk buffers are reused from
    call to call instead of page-faulted afresh. With `one_core`, BLAS is held to one thread
    for the whole op: one core in all. An op on the workers tells the network pass in force,
    if any (`_chunks.on_the_workers`)."""
    if _chunks.worker_count(settings) > 1:
        _chunks.on_the_workers()
    blas = _chunks.single_blas() if one_core else contextlib.nullcontext()
    with _workspace.scope(settings), blas:
        yield


def _x_in(x: Any, spec: ConvSpec, dtype: Any, settings: Settings, views: bool) -> Any:
    """The caller's x as the padded channels_last input (N, *Sp, C) of `dtype` (one copy), or,
    for an algorithm that reads `views`, a transposed view when there is nothing to pad."""
    x = _layout.to_last(x, spec.data_format)                     # (N, *S, C) view
    return _layout.padded(x, spec.pads, spec.padding_mode, dtype, settings, not views)


def _grad_weight(x: Any, dy_: Any, spec: ConvSpec, dtype: Any, settings: Settings,
                 views: bool, algorithm: str | None) -> Any:
    """dw (*K, C/G, F) from the caller's x and the converted dy: a depthwise layer's reads x
    where it lies, the others its padded copy (`_x_in`)."""
    x_last = _layout.to_last(x, spec.data_format)               # (N, *S, C) view
    if _kernels.reads_unpadded(spec, algorithm, x_last, dtype, settings, dy_):
        return _kernels.grad_weight(x_last, dy_, spec, settings, algorithm=algorithm,
                                    unpadded=True)
    return _kernels.grad_weight(_x_in(x, spec, dtype, settings, views), dy_, spec, settings,
                                algorithm=algorithm)


def _dy_in(dy: Any, spec: ConvSpec, dtype: Any, settings: Settings, views: bool) -> Any:
    """The caller's dy as a channels_last (N, *P, F) of `dtype`: converted once, shared by the
    computations that read it (a view for an algorithm that reads `views`)."""
    dy = _layout.to_last(dy, spec.data_format)                   # (N, *P, F) view
    return _layout.padded(dy, ((0, 0),) * spec.rank, "zeros", dtype, settings, not views)


def _views(spec: ConvSpec, algorithm: str | None, like: Any, dtype: Any,
           settings: Settings) -> bool:
    """Whether the op's algorithm reads channels_first arrays as transposed views, so that
    no converted copy is made for it (pointwise)."""
    alg = algorithms.choose(spec, algorithm, itemsize=dtype.itemsize, settings=settings,
                            gpu=_backend.is_gpu(like))
    return alg.takes_views


# ---------------------------------------------------------------------------------------------
# Forward convolution
# ---------------------------------------------------------------------------------------------


def conv(
    x: Array,
    w: Array,
    bias: Array | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
    clip: tuple | None = None,
) -> Array:
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
        Force one of `npconv.ALGORITHMS` ("im2col", "pointwise", "depthwise", "winograd")
        instead of the automatic choice, for the forward pass, the weight gradient and the
        input gradient's forward correlation (docs/algorithms.md); ValueError if it cannot run
        this geometry. Every op of this module takes `algorithm` and `workspace`.
    workspace : int, optional
        Bytes of temporaries this call may allocate (default: `npconv.get_config()`).
    clip : (lo, hi), optional
        Clip y to [lo, hi] (a bound None: none), as np.clip does with an infinite bound for
        an absent one (NaN stays NaN; lo > hi gives hi; -0.0 stays -0.0 under (0, None), as
        in `nn.ReLU`, where np.clip(y, 0, None) gives 0.0), chunk by chunk: a ReLU (0, None)
        or ReLU6 (0, 6) after the convolution without a pass of its own (`nn.Sequential`
        fuses them in `eval()`, `npconv.onnx.Evaluator` a Conv whose only reader is a Relu or
        Clip).

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
    >>> float(npconv.conv(x, w, padding="same", clip=(0, 3)).max())   # a fused ReLU-like clip
    3.0
    """
    key = _forward_key(x, w, bias, (stride, padding, dilation, groups, data_format,
                                    padding_mode), algorithm, workspace, clip)
    plan = _FORWARDS.get(key) if key is not None else None
    if plan is None:
        plan = _forward_plan(x, w, bias, stride=stride, padding=padding, dilation=dilation,
                             groups=groups, data_format=data_format,
                             padding_mode=padding_mode, algorithm=algorithm,
                             workspace=workspace, clip=clip)
        if key is not None:
            _args.remember(_FORWARDS, key, plan)
    spec, cdt = plan.spec, plan.cdt
    with _run(plan.settings, plan.one_core):
        b = None if bias is None else bias.astype(cdt, copy=False)
        x_last = _layout.to_last(x, data_format)                 # (N, *S, C) view
        xp_ = x_last if plan.unpadded else _x_in(x, spec, cdt, plan.settings, plan.views)
        y = _kernels.forward(xp_, _layout.weight(w, data_format, cdt), spec, plan.settings,
                             algorithm=algorithm, bias=b, clip=plan.bounds,
                             unpadded=plan.unpadded)             # (N, *P, F)
        return _layout.result(y, data_format, plan.dtype, plan.settings)


class _Forward(NamedTuple):
    """What `conv` decides from its arguments' types, shapes, strides and dtypes and the
    settings in force, before it computes anything (`_forward_plan`)."""

    spec: ConvSpec
    dtype: Any                                                   # y's
    cdt: Any                                                     # the compute dtype
    bounds: tuple | None                                         # clip's, `_args.clip_bounds`
    settings: Settings                                           # this layer's (`_call`)
    one_core: bool
    unpadded: bool                                               # `_kernels.reads_unpadded`
    views: bool                                                  # `_views`


_FORWARDS: dict = {}
"""`conv`'s plans by `_forward_key`: a layer calls it with the same geometry call after call,
and checking and deciding afresh cost more than a small layer's arithmetic (a 1x1 layer of
8x8x32 to 16 channels: 66-67 us a call deciding afresh, 51-53 with its plan kept; a 3x3
depthwise one: 93-134 against 79-113, per-call medians of interleaved rounds)."""


def _forward_key(x: Any, w: Any, bias: Any, geometry: tuple, algorithm: Any, workspace: Any,
                 clip: Any) -> tuple | None:
    """Everything `_forward_plan` reads: the arrays' types, shapes, strides and dtypes, the
    keyword arguments and the settings in force. None, and the plan made (and its error
    raised) afresh, unless every argument is of a type that compares equal only to values that
    get the same plan: the geometry of ints, strings and tuples (`cache_key_safe`: 2.0, True
    or a NumPy integer are checked, and refused or accepted, on their own), the algorithm a
    string, the workspace an int, clip's bounds Python numbers (`_args.clip_key`)."""
    if not (cache_key_safe(geometry) and (algorithm is None or type(algorithm) is str)
            and (workspace is None or type(workspace) is int)):
        return None
    if clip is not None:
        clip = _args.clip_key(clip)
        if clip is None:
            return None
    try:
        key = (type(x), x.shape, x.strides, x.dtype, type(w), w.shape, w.dtype,
               None if bias is None else (type(bias), bias.shape, bias.dtype),
               geometry, algorithm, workspace, clip, _config.resolve())
        hash(key)
    except (AttributeError, TypeError):                          # not arrays: checked anew
        return None
    return key


def _forward_plan(x: Any, w: Any, bias: Any, *, stride: Any, padding: Any, dilation: Any,
                  groups: Any, data_format: Any, padding_mode: Any, algorithm: Any,
                  workspace: Any, clip: Any) -> _Forward:
    """`conv`'s checks (each error raised here) and decisions."""
    _check_arrays("conv", x=x, w=w)
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    _check_bias(bias, spec.out_channels)
    dtype = _args.result_dtype(x, w, bias)
    cdt = _args.compute_dtype(dtype)
    bounds = _args.clip_bounds(clip, dtype, cdt)
    settings, one_core = _settings(spec, algorithm, workspace, cdt)
    x_last = _layout.to_last(x, data_format)                     # (N, *S, C) view
    unpadded = _kernels.reads_unpadded(spec, algorithm, x_last, cdt, settings)
    views = not unpadded and _views(spec, algorithm, x, cdt, settings)
    return _Forward(spec, dtype, cdt, bounds, settings, one_core, unpadded, views)


def conv_backward(
    dy: Array,
    x: Array,
    w: Array,
    bias: Array | bool | None = True,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
    input_grad: bool = True,
) -> ConvGrads:
    """Gradients of `conv(x, w, bias, ...)` with respect to x, w and the bias, given dy = dL/dy.

    Takes `conv`'s arguments with dy in front. dx has x's shape (zero at pixels the forward
    pass never read, such as remainder rows when P was floored), dw has w's, db is (F,), or
    None when `bias` is None or False. Padding of any mode is differentiated too: a reflected,
    replicated or wrapped pixel sends its gradient back to the pixel it copies. With
    `input_grad` False, dx is not computed (None): a network's first layer in training.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w, b = np.ones((2, 7, 7, 3)), np.ones((2, 2, 3, 4)), np.zeros(4)
    >>> dy = np.ones((2, 3, 3, 4))                # y is 3x3: 7 = 2*3 + 1 leaves a remainder
    >>> dx, dw, db = npconv.conv_backward(dy, x, w, b, stride=2)
    >>> float(dx[0, 6, 6, 0]), dw.shape, db.shape  # the last row is never read
    (0.0, (2, 2, 3, 4), (4,))
    >>> npconv.conv_backward(dy, x, w, None, stride=2).db is None
    True
    """
    _check_arrays("conv_backward", dy=dy, x=x, w=w)
    input_grad = _args.check_flag(input_grad, "input_grad")
    spec = conv_spec(x.shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode)
    check_shape(dy, spec.y_shape(), "dy")
    with_db = wants_db(bias, spec.out_channels)
    dtype = _args.result_dtype(dy, x, w)
    cdt = _args.compute_dtype(dtype)
    with _call(spec, algorithm, workspace, cdt) as settings:
        views = _views(spec, algorithm, x, cdt, settings)
        dy_ = _dy_in(dy, spec, cdt, settings, views)             # (N, *P, F)
        w_ = _layout.weight(w, data_format, cdt)                 # (*K, C/G, F)
        dx = None
        if input_grad:
            dx = _kernels.grad_input(dy_, w_, spec, settings, algorithm=algorithm, unpad=True)
            dx = _layout.result(dx, data_format, dtype, settings)   # (N, *S, C) caller's layout
        dw = _grad_weight(x, dy_, spec, cdt, settings, views, algorithm)  # (*K, C/G, F)
        db = _kernels.grad_bias(dy_, dtype) if with_db else None
        return ConvGrads(dx, _layout.weight_result(dw, data_format, dtype), db)


def conv_grad_input(
    dy: Array,
    w: Array,
    x_shape: tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
) -> Array:
    """dx = dL/dx of `conv`, from dy and w alone; `x_shape` is the input's shape.

    This is the adjoint of `conv` in x: <dy, conv(x, w)> == <conv_grad_input(dy, w, x.shape), x>.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dx = npconv.conv_grad_input(np.ones((1, 2, 2, 1)), np.ones((3, 3, 1, 1)), (1, 4, 4, 1))
    >>> dx[0, :, :, 0].astype(int).tolist()       # how many windows read each pixel
    [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]]
    """
    _check_arrays("conv_grad_input", dy=dy, w=w)
    x_shape = _args.shape_tuple(x_shape, "x_shape")
    spec = conv_spec(x_shape, w.shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode,
                     names=("x_shape", "w"))
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.result_dtype(dy, w)
    cdt = _args.compute_dtype(dtype)
    with _call(spec, algorithm, workspace, cdt) as settings:
        dx = _kernels.grad_input(_layout.to_last(dy, data_format),
                                 _layout.weight(w, data_format, cdt), spec, settings,
                                 algorithm=algorithm, unpad=True)  # (N, *S, C)
        return _layout.result(dx, data_format, dtype, settings)


def conv_grad_weight(
    dy: Array,
    x: Array,
    w_shape: tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    algorithm: str | None = None,
    workspace: int | None = None,
) -> Array:
    """dw = dL/dw of `conv`, from dy and x alone; `w_shape` is the weight's shape.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> dw = npconv.conv_grad_weight(np.ones((1, 2, 2, 1)), np.ones((1, 4, 4, 1)), (3, 3, 1, 1))
    >>> dw.shape, float(dw.sum())                 # each of 9 taps sums 4 products
    ((3, 3, 1, 1), 36.0)
    """
    _check_arrays("conv_grad_weight", dy=dy, x=x)
    w_shape = _args.shape_tuple(w_shape, "w_shape")
    spec = conv_spec(x.shape, w_shape, stride=stride, padding=padding, dilation=dilation,
                     groups=groups, data_format=data_format, padding_mode=padding_mode,
                     names=("x", "w_shape"))
    check_shape(dy, spec.y_shape(), "dy")
    dtype = _args.result_dtype(dy, x)
    cdt = _args.compute_dtype(dtype)
    with _call(spec, algorithm, workspace, cdt) as settings:
        views = _views(spec, algorithm, x, cdt, settings)
        dw = _grad_weight(x, _dy_in(dy, spec, cdt, settings, views), spec, cdt, settings,
                          views, algorithm)                      # (*K, C/G, F)
        return _layout.weight_result(dw, data_format, dtype)


# ---------------------------------------------------------------------------------------------
# Transposed convolution: the input gradient of a forward convolution, as an op of its own
# ---------------------------------------------------------------------------------------------


def conv_transpose(
    x: Array,
    w: Array,
    bias: Array | None = None,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    output_padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    algorithm: str | None = None,
    workspace: int | None = None,
) -> Array:
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
    dy = x: it is computed by the same transpose rule as `conv_backward`'s dx.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> y = npconv.conv_transpose(np.ones((1, 3, 3, 4)), np.ones((3, 3, 2, 4)), stride=2,
    ...                           padding=1, output_padding=1)
    >>> y.shape                                   # (3 - 1)*2 - 2 + 3 + 1 = 6
    (1, 6, 6, 2)
    """
    _check_arrays("conv_transpose", x=x, w=w)
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    _check_bias(bias, spec.in_channels)
    dtype = _args.result_dtype(x, w, bias)
    cdt = _args.compute_dtype(dtype)
    with _call(spec, algorithm, workspace, cdt) as settings:
        y = _kernels.grad_input(_layout.to_last(x, data_format),
                                _layout.weight(w, data_format, cdt), spec, settings,
                                algorithm=algorithm, unpad=True)  # (N, *O, F), a new array
        if bias is not None:
            y += bias.astype(cdt, copy=False)
        return _layout.result(y, data_format, dtype, settings)


def conv_transpose_backward(
    dy: Array,
    x: Array,
    w: Array,
    bias: Array | bool | None = True,
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    output_padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    algorithm: str | None = None,
    workspace: int | None = None,
) -> ConvGrads:
    """Gradients of `conv_transpose(x, w, bias, ...)` with respect to x, w and the bias, given
    dy = dL/dy; db is (F,), or None when `bias` is None or False.

    The transposed convolution's input gradient is a forward convolution of dy, and its weight
    gradient is the forward convolution's weight gradient with the roles of x and dy swapped.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x, w, b = np.ones((1, 3, 3, 4)), np.ones((3, 3, 2, 4)), np.zeros(2)
    >>> dx, dw, db = npconv.conv_transpose_backward(np.ones((1, 7, 7, 2)), x, w, b, stride=2)
    >>> dx.shape, dw.shape, db.shape
    ((1, 3, 3, 4), (3, 3, 2, 4), (2,))
    """
    _check_arrays("conv_transpose_backward", dy=dy, x=x, w=w)
    spec = conv_transpose_spec(x.shape, w.shape, stride=stride, padding=padding,
                               output_padding=output_padding, dilation=dilation, groups=groups,
                               data_format=data_format)
    check_shape(dy, spec.x_shape(), "dy")
    with_db = wants_db(bias, spec.in_channels)
    dtype = _args.result_dtype(dy, x, w)
    cdt = _args.compute_dtype(dtype)
    with _call(spec, algorithm, workspace, cdt) as settings:
        views = _views(spec, algorithm, x, cdt, settings)
        dyp = _x_in(dy, spec, cdt, settings, views)              # (N, *Op, F)
        w_ = _layout.weight(w, data_format, cdt)                 # (*K, F/G, C)
        dx = _kernels.forward(dyp, w_, spec, settings, algorithm=algorithm)  # (N, *S, C)
        dx = _layout.result(dx, data_format, dtype, settings)
        dw = _kernels.grad_weight(dyp, _dy_in(x, spec, cdt, settings, views), spec, settings,
                                  algorithm=algorithm)           # (*K, F/G, C)
        db = _kernels.grad_bias(_layout.to_last(dy, data_format), dtype) if with_db else None
        return ConvGrads(dx, _layout.weight_result(dw, data_format, dtype), db)
