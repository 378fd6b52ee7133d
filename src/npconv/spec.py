"""Convolution and pooling geometry: every shape formula of npconv lives here and nowhere else.

A `ConvSpec` is the frozen, fully resolved description of one convolution: sizes, stride,
dilation, explicit `(lo, hi)` padding per spatial dimension, groups and layout. Public ops build
one with `conv_spec` (forward convolution) or `conv_transpose_spec` (transposed convolution, which
is described by the forward convolution whose input gradient it is) after checking every argument;
kernels then read sizes from the spec and never re-validate. The window index (output p reads
padded-input position p * stride + k * dilation for kernel offset k) is `taps` and `window`, and
the geometry of the transpose rule (the input gradient as a forward convolution) is
`ConvSpec.transposed`. A `PoolSpec` (from `pool_spec`) is the same for a pooling: its output
size is `pool_out_size`, and which input coordinate each tap of each window reads is
`PoolSpec.span`.

Shape letters: N batch, C in-channels, F out-channels (filters), G groups, S input spatial size,
K kernel size, P output spatial size.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass, replace
from typing import Any, NamedTuple

import numpy as np

from npconv import _args

Pads = tuple[tuple[int, int], ...]
Padding = int | str | tuple[int, ...] | tuple[tuple[int, int], ...] | list[Any]
"""Every accepted form of `padding`: an int, one per dim, (lo, hi) pairs, "valid"/"same"/"full"."""

MAX_ELEMENTS = sys.maxsize // 8
"""Arrays of more elements cannot exist (their bytes overflow the address space)."""


class ConvGrads(NamedTuple):
    """Gradients of a convolution's loss: dx like x, dw like w, db like the bias (or None)."""

    dx: Any
    dw: Any
    db: Any


@dataclass(frozen=True)
class ConvSpec:
    """Resolved geometry of a forward convolution x (N, *S, C) * w -> y (N, *P, F).

    Attributes
    ----------
    batch, in_channels, out_channels, groups : int
        N, C, F, G.
    in_size, kernel_size, out_size : tuple of int
        S, K, P (one entry per spatial dimension).
    stride, dilation : tuple of int
    pads : tuple of (lo, hi) pairs
        Explicit padding added before / after each spatial dimension.
    padding_mode : str
        "zeros", "reflect", "replicate" or "circular".
    data_format : str
        "channels_last" or "channels_first" (the caller's layout; kernels use channels_last).
    """

    batch: int
    in_channels: int
    out_channels: int
    groups: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    out_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    pads: Pads
    padding_mode: str = "zeros"
    data_format: str = "channels_last"

    @property
    def rank(self) -> int:
        """Number of spatial dimensions."""
        return len(self.in_size)

    @property
    def padded_size(self) -> tuple[int, ...]:
        """S + lo + hi per dimension."""
        return tuple(s + lo + hi for s, (lo, hi) in zip(self.in_size, self.pads))

    @property
    def group_in(self) -> int:
        """C / G, the input channels each filter sees."""
        return self.in_channels // self.groups

    @property
    def group_out(self) -> int:
        """F / G, the filters of one group."""
        return self.out_channels // self.groups

    def x_shape(self) -> tuple[int, ...]:
        """Input shape in the caller's layout."""
        return layout_shape(self.batch, self.in_size, self.in_channels, self.data_format)

    def y_shape(self) -> tuple[int, ...]:
        """Output shape in the caller's layout."""
        return layout_shape(self.batch, self.out_size, self.out_channels, self.data_format)

    def w_shape(self) -> tuple[int, ...]:
        """Weight shape: (*K, C/G, F) channels_last, (F, C/G, *K) channels_first."""
        if self.data_format == "channels_last":
            return (*self.kernel_size, self.group_in, self.out_channels)
        return (self.out_channels, self.group_in, *self.kernel_size)

    def window(self, p: tuple[int, ...]) -> tuple[slice, ...]:
        """The padded-input positions output position p reads, one slice per spatial axis."""
        return tuple(window(*a) for a in zip(p, self.kernel_size, self.stride, self.dilation))

    def taps(self, k: tuple[int, ...], rows: slice | None = None) -> tuple[slice, ...]:
        """The padded-input positions kernel offset k reads for every output position (only
        the output rows `rows` of the first spatial axis, when given)."""
        first = rows or slice(0, self.out_size[0])
        bounds = [(first.start, first.stop)] + [(0, p) for p in self.out_size[1:]]
        return tuple(taps(kk, d, s, start, stop) for kk, d, s, (start, stop)
                     in zip(k, self.dilation, self.stride, bounds))

    def transposed(self, interior: bool = False) -> tuple[ConvSpec, Pads]:
        """The transpose rule's geometry: the stride-1 input gradient as a forward convolution.

        With stride 1, dxp[i] = sum_k dy[i - k*d] @ w[k]^T over the k with 0 <= i - k*d < P: a
        correlation of dy, zero-padded by e = d * (K - 1) in front, with the kernel flipped and
        its channel axes swapped per group (docs/gradients.md). Padding Sp - P at the end makes
        its output size Sp (P is Sp - e, or less for the specs of transposed convolutions).
        With `interior`, only the input pixels inside the padding, i in [lo, lo + S), are
        computed: dy is padded by e - lo in front and S + lo - P at the end (negative amounts
        crop). Returns (spec of the correlation, its (lo, hi) pads of dy).
        """
        span = [effective_kernel(k, d) - 1 for k, d in zip(self.kernel_size, self.dilation)]
        if interior:
            pads = tuple((e - lo, s + lo - p) for e, (lo, _), s, p in
                         zip(span, self.pads, self.in_size, self.out_size))
            size = self.in_size
        else:
            pads = tuple((e, sp - p) for e, sp, p in zip(span, self.padded_size, self.out_size))
            size = self.padded_size
        corr = ConvSpec(self.batch, self.out_channels, self.in_channels, self.groups,
                        self.out_size, self.kernel_size, size, (1,) * self.rank, self.dilation,
                        pads)
        return corr, pads

    def rows(self, batch: slice, rows: slice) -> tuple[ConvSpec, tuple[slice, ...]]:
        """The convolution computing output rows `rows` of the images `batch` alone: its spec
        (on the padded input, so without padding) and the index of the padded input it reads."""
        k, s, d = self.kernel_size[0], self.stride[0], self.dilation[0]
        n, p0 = batch.stop - batch.start, rows.stop - rows.start
        first = slice(rows.start * s, (rows.stop - 1) * s + effective_kernel(k, d))
        size = (first.stop - first.start, *self.padded_size[1:])
        sub = replace(self, batch=n, in_size=size, out_size=(p0, *self.out_size[1:]),
                      pads=((0, 0),) * self.rank, padding_mode="zeros")
        return sub, (batch, first)

    def macs(self) -> int:
        """Multiply-accumulates of the forward pass: N * prod(P) * F * prod(K) * C/G."""
        return (
            self.batch
            * math.prod(self.out_size)
            * self.out_channels
            * math.prod(self.kernel_size)
            * self.group_in
        )


def layout_shape(n: int, size: tuple[int, ...], c: int, data_format: str) -> tuple[int, ...]:
    """(N, *size, C) or (N, C, *size)."""
    return (n, *size, c) if data_format == "channels_last" else (n, c, *size)


# ---------------------------------------------------------------------------------------------
# Size formulas
# ---------------------------------------------------------------------------------------------


def effective_kernel(k: int, d: int) -> int:
    """Extent of a dilated kernel: d * (k - 1) + 1."""
    return d * (k - 1) + 1


def taps(k: int, d: int, stride: int, start: int, stop: int) -> slice:
    """Positions p * stride + k * d of kernel offset k for the outputs p in [start, stop)."""
    return slice(start * stride + k * d, (stop - 1) * stride + k * d + 1, stride)


def inside(k: int, d: int, stride: int, lo: int, size: int, start: int, stop: int
           ) -> tuple[int, int]:
    """[first, last): the outputs p in [start, stop) whose position p * stride + k * d in the
    padded input (lo zeros in front of `size` values) lies inside the input; empty when
    last <= first."""
    return (max(start, -(-(lo - k * d) // stride)),
            min(stop, (lo + size - 1 - k * d) // stride + 1))


def whole(k: int, d: int, stride: int, lo: int, size: int, start: int, stop: int
          ) -> tuple[int, int]:
    """[first, last): the outputs p in [start, stop) whose every one of the k offsets lies
    inside the input (offset 0 from first on, offset k - 1 up to last); first <= last, both
    within [start, stop], so [start, first) and [last, stop) are the outputs that meet the
    padding."""
    first = min(inside(0, d, stride, lo, size, start, stop)[0], stop)
    return first, max(inside(k - 1, d, stride, lo, size, start, stop)[1], first)


def window(p: int, k: int, stride: int, d: int) -> slice:
    """Positions p * stride + j * d, j in [0, k), that output p reads with a kernel of k taps."""
    return slice(p * stride, p * stride + effective_kernel(k, d), d)


def out_size(s: int, k: int, stride: int, d: int, lo: int, hi: int) -> int:
    """Output size of a convolution, floored as PyTorch does.

    P = floor((S + lo + hi - d * (K - 1) - 1) / stride) + 1
    """
    return (s + lo + hi - effective_kernel(k, d)) // stride + 1


def same_pads(s: int, k: int, stride: int, d: int) -> tuple[int, int]:
    """TensorFlow's "SAME" rule, valid for any stride: P = ceil(S / stride).

    total = max((P - 1) * stride + d * (K - 1) + 1 - S, 0); the odd pixel goes at the end.
    """
    p = -(-s // stride)
    total = max((p - 1) * stride + effective_kernel(k, d) - s, 0)
    return total // 2, total - total // 2


def transpose_out_size(s: int, k: int, stride: int, d: int, lo: int, hi: int, extra: int) -> int:
    """Output size of a transposed convolution (PyTorch's ConvTransposeNd).

    O = (S - 1) * stride - lo - hi + d * (K - 1) + output_padding + 1
    """
    return (s - 1) * stride - lo - hi + effective_kernel(k, d) + extra


# ---------------------------------------------------------------------------------------------
# Argument resolution
# ---------------------------------------------------------------------------------------------


def resolve_padding(padding: Padding, in_size: tuple[int, ...], kernel_size: tuple[int, ...],
                    stride: tuple[int, ...], dilation: tuple[int, ...]) -> Pads:
    """Turn any accepted `padding` form into explicit (lo, hi) pairs.

    Accepted: an int; one int per dim; one (lo, hi) pair per dim; "valid"; "same"; "full".
    """
    rank = len(in_size)
    if isinstance(padding, str):
        _args.choice(padding, ("valid", "same", "full"), "padding")
        if padding == "valid":
            return ((0, 0),) * rank
        if padding == "full":
            return tuple((d * (k - 1),) * 2 for k, d in zip(kernel_size, dilation))
        return tuple(map(same_pads, in_size, kernel_size, stride, dilation))
    pairs = _pairs(padding, rank)
    if any(v < 0 for pair in pairs for v in pair):
        raise ValueError(f"`padding` must be >= 0; got {padding!r}")
    return pairs


def _pairs(padding: Any, rank: int) -> Pads:
    if _args.is_int(padding):
        return ((int(padding),) * 2,) * rank
    if isinstance(padding, (tuple, list)) and len(padding) == rank:
        if all(_args.is_int(p) for p in padding):
            return tuple((int(p), int(p)) for p in padding)
        if all(
            isinstance(p, (tuple, list)) and len(p) == 2 and all(map(_args.is_int, p))
            for p in padding
        ):
            return tuple((int(lo), int(hi)) for lo, hi in padding)
    raise TypeError(
        f"`padding` must be an int, a tuple of {rank} ints, a tuple of {rank} (lo, hi) pairs, "
        f"'valid', 'same' or 'full'; got {padding!r}"
    )


def _split_shapes(x_shape: tuple[int, ...], w_shape: tuple[int, ...], data_format: str,
                  names: tuple[str, str]) -> tuple[Any, ...]:
    """(N, S, C) of x and (K, C/G, F) of w, after checking ranks."""
    x_name, w_name = names
    if len(x_shape) < 3:
        raise ValueError(
            f"`{x_name}` must have at least 3 dimensions (batch, spatial..., channels); "
            f"got shape {tuple(x_shape)}"
        )
    if len(w_shape) != len(x_shape):
        layout = "(*K, C/groups, F)" if data_format == "channels_last" else "(F, C/groups, *K)"
        raise ValueError(
            f"`{w_name}` must have {len(x_shape)} dimensions {layout} to match `{x_name}` of "
            f"shape {tuple(x_shape)}; got shape {tuple(w_shape)}"
        )
    if data_format == "channels_last":
        n, *s, c = x_shape
        *k, cg, f = w_shape
    else:
        n, c, *s = x_shape
        f, cg, *k = w_shape
    if any(v < 1 for v in k):
        raise ValueError(f"`{w_name}` must have a kernel size >= 1; got shape {tuple(w_shape)}")
    return n, tuple(s), c, tuple(k), cg, f


def _check_groups(groups: Any, c: int, f: int, cg: int, c_name: str, f_name: str) -> int:
    if not _args.is_int(groups):
        raise TypeError(f"`groups` must be an int; got {groups!r}")
    if groups < 1:
        raise ValueError(f"`groups` must be >= 1; got {groups}")
    if c % groups or f % groups:
        raise ValueError(
            f"`groups` must divide {c_name} and {f_name}; got groups={groups}, "
            f"{c_name}={c}, {f_name}={f}"
        )
    if cg * groups != c:
        raise ValueError(
            f"channel mismatch: {c_name}={c} with groups={groups} needs a weight with "
            f"{c // groups} channels per group; got {cg}"
        )
    return int(groups)


def _check_padding_mode(mode: str, pads: Pads, in_size: tuple[int, ...]) -> None:
    for (lo, hi), s in zip(pads, in_size):
        if mode == "reflect" and max(lo, hi) >= s:
            raise ValueError(
                f"reflect padding must be < the input size in every dimension; got padding "
                f"{(lo, hi)} for input size {s}"
            )
        if mode == "circular" and max(lo, hi) > s:
            raise ValueError(
                f"circular padding must be <= the input size in every dimension; got padding "
                f"{(lo, hi)} for input size {s}"
            )


def conv_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
    padding_mode: str = "zeros",
    names: tuple[str, str] = ("x", "w"),
) -> ConvSpec:
    """Check every argument of a forward convolution and resolve its geometry.

    `names` are the names of the two shapes' arguments in error messages (conv_grad_input
    passes ("x_shape", "w")).

    Examples
    --------
    >>> from npconv import conv_spec
    >>> spec = conv_spec((8, 32, 32, 3), (3, 3, 3, 16), stride=2, padding="same")
    >>> spec.out_size, spec.pads
    ((16, 16), ((0, 1), (0, 1)))
    """
    key = (x_shape, w_shape, stride, padding, dilation, groups, data_format, padding_mode,
           names)
    plain = cache_key_safe(key)
    if plain and key in _SPECS:
        return _SPECS[key]
    spec = _conv_spec(x_shape, w_shape, stride, padding, dilation, groups, data_format,
                      padding_mode, names)
    if plain:
        _args.remember(_SPECS, key, spec)
    return spec


_SPECS: dict[tuple, ConvSpec] = {}
"""Checked geometries by their arguments: a layer asks for the same one call after call (the
checks took 10 of the 55 us a small 1x1 convolution's call costs)."""


def cache_key_safe(v: Any) -> bool:
    """Whether v is made of ints, strings and tuples only (not bools, floats or NumPy scalars,
    which compare equal to ints but are checked differently): a safe cache key."""
    t = type(v)
    if t is not tuple:
        return t is int or t is str
    for e in v:  # noqa: SIM110 (a loop: twice as fast as all() over a generator, per call)
        if type(e) is not int and not cache_key_safe(e):
            return False
    return True


def _conv_spec(x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: Any, padding: Any,
               dilation: Any, groups: Any, data_format: str, padding_mode: str,
               names: tuple[str, str]) -> ConvSpec:
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    _args.choice(padding_mode, _args.PADDING_MODES, "padding_mode")
    n, s, c, k, cg, f = _split_shapes(x_shape, w_shape, data_format, names)
    groups = _check_groups(groups, c, f, cg, "in_channels", "out_channels")
    rank = len(s)
    stride = _args.positive_tuple(stride, rank, "stride")
    dilation = _args.positive_tuple(dilation, rank, "dilation")
    pads = resolve_padding(padding, s, k, stride, dilation)
    _check_padding_mode(padding_mode, pads, s)
    p = tuple(out_size(si, ki, st, d, lo, hi)
              for si, ki, st, d, (lo, hi) in zip(s, k, stride, dilation, pads))
    if any(v < 1 for v in p):
        raise ValueError(
            f"output size must be >= 1; got output size {p} from input size {s}, kernel size "
            f"{k}, stride {stride}, dilation {dilation}, padding {pads}: the padded input is "
            f"smaller than the dilated kernel"
        )
    spec = ConvSpec(n, c, f, groups, s, k, p, stride, dilation, pads, padding_mode, data_format)
    _check_sizes(spec, "padded input", "output")
    return spec


def _check_sizes(spec: ConvSpec, inner: str, outer: str) -> None:
    """ValueError when the padded input or the output could never be allocated (a padding or
    a stride of 2**62), before anything is."""
    for what, shape in ((inner, (spec.batch, *spec.padded_size, spec.in_channels)),
                        (outer, (spec.batch, *spec.out_size, spec.out_channels))):
        if math.prod(shape) > MAX_ELEMENTS:
            raise ValueError(
                f"sizes too large: the {what} would have shape {shape}, more elements than "
                f"any array can hold; check `padding`, `stride` and `dilation`"
            )


def conv_transpose_spec(
    x_shape: tuple[int, ...],
    w_shape: tuple[int, ...],
    *,
    stride: int | tuple[int, ...] = 1,
    padding: Padding = 0,
    output_padding: int | tuple[int, ...] = 0,
    dilation: int | tuple[int, ...] = 1,
    groups: int = 1,
    data_format: str = "channels_last",
) -> ConvSpec:
    """Geometry of a transposed convolution, as the forward convolution it is the gradient of.

    The transposed convolution maps x (N, *S, C) to y (N, *O, F). It is the input gradient of a
    forward convolution from (N, *O, F) to (N, *S, C) with the same weight, stride, dilation and
    padding; the returned spec describes that forward convolution, so its `x_shape()` is the
    transposed output's shape and its `y_shape()` the transposed input's. Its out_size is S,
    which can be below the forward convolution's natural output size when output_padding >=
    stride (allowed while output_padding < dilation): the extra rows are never read.

    padding "same" gives O = S * stride (+ output_padding), padded by TensorFlow's rule for that
    forward convolution; "valid" and "full" are zero and d * (K - 1) per side.
    """
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    n, s, c, k, fg, f_conv = _split_shapes(x_shape, w_shape, data_format, ("x", "w"))
    if f_conv != c:
        raise ValueError(
            f"channel mismatch: a transposed-convolution weight must have in_channels={c} "
            f"(the channels of `x`) in its {'last' if data_format == 'channels_last' else 'first'}"
            f" axis; got weight shape {tuple(w_shape)}"
        )
    if not _args.is_int(groups):
        raise TypeError(f"`groups` must be an int; got {groups!r}")
    if groups < 1 or c % groups:
        raise ValueError(f"`groups` must be >= 1 and divide in_channels; got groups={groups}, "
                         f"in_channels={c}")
    f = fg * groups
    rank = len(s)
    stride = _args.positive_tuple(stride, rank, "stride")
    dilation = _args.positive_tuple(dilation, rank, "dilation")
    extra = _args.int_tuple(output_padding, rank, "output_padding")
    for e, st, d in zip(extra, stride, dilation):
        if e < 0 or e >= max(st, d):
            raise ValueError(
                f"`output_padding` must be >= 0 and < max(stride, dilation) in every dimension; "
                f"got output_padding={output_padding!r}, stride={stride}, dilation={dilation}"
            )
    if isinstance(padding, str) and padding == "same":
        o = tuple(si * st + e for si, st, e in zip(s, stride, extra))
        pads = tuple(map(same_pads, (si * st for si, st in zip(s, stride)), k, stride, dilation))
    else:
        pads = resolve_padding(padding, s, k, stride, dilation)
        o = tuple(transpose_out_size(si, ki, st, d, lo, hi, e)
                  for si, ki, st, d, (lo, hi), e in zip(s, k, stride, dilation, pads, extra))
    if any(v < 1 for v in o):
        raise ValueError(
            f"output size must be >= 1; got output size {o} from input size {s}, kernel size "
            f"{k}, stride {stride}, dilation {dilation}, padding {pads}"
        )
    spec = ConvSpec(n, f, c, groups, o, k, s, stride, dilation, pads, "zeros", data_format)
    _check_sizes(spec, "output", "input")
    return spec


def check_shape(a: Any, expected: tuple[int, ...], name: str) -> None:
    """ValueError unless `a.shape == expected`."""
    if tuple(a.shape) != tuple(expected):
        raise ValueError(f"`{name}` must have shape {tuple(expected)}; got {tuple(a.shape)}")


# =============================================================================================
# Pooling geometry
# =============================================================================================
#
# Two formulas carry every pooling:
#
#     P = floor((S + lo + hi - eff) / stride) + 1, eff = dilation * (K - 1) + 1  (`pool_out_size`)
#     tap k of window p reads the input coordinate p * stride + k * dilation - lo  (`PoolSpec.span`)
#
# `ceil_mode` rounds P up, except that a window starting in the right padding is dropped. A tap
# outside [0, S) reads padding; padding never enters a maximum (it acts as -inf, or the integer
# dtype's minimum) and adds zeros to a sum. Any padding is accepted, as in ONNX: a window that
# reads only padding has the maximum -inf, the sum 0, and the average 0 / divisor.


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
        The padding the caller asked for (window 0 starts at -lo).
    ceil_mode : bool
    data_format : str
        "channels_last" or "channels_first".
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

    def x_shape(self) -> tuple[int, ...]:
        """Input shape in the caller's layout."""
        return layout_shape(self.batch, self.in_size, self.channels, self.data_format)

    def y_shape(self) -> tuple[int, ...]:
        """Output shape in the caller's layout."""
        return layout_shape(self.batch, self.out_size, self.channels, self.data_format)

    def extent(self, dim: int) -> int:
        """Input coordinates one window spans along `dim`: dilation * (K - 1) + 1."""
        return effective_kernel(self.kernel_size[dim], self.dilation[dim])

    def overlaps(self, dim: int) -> bool:
        """Whether neighbouring windows along `dim` share input coordinates (stride < span)."""
        return self.stride[dim] < self.extent(dim)

    def span(self, dim: int, k: int, lo: int = 0, hi: int | None = None) -> tuple[int, int, int]:
        """The windows whose tap k along spatial dimension `dim` reads a coordinate in [lo, hi).

        Tap k of window p reads p * stride + k * dilation - pad_lo (the one window-tap formula
        of pooling). Returns (p0, p1, x0): windows p0 <= p < p1 (none when p1 == p0), window p
        reading x0 + (p - p0) * stride. [lo, hi) defaults to the input, [0, S).

        >>> spec = pool_spec((1, 5, 1), 3, stride=2, padding=1)      # windows at -1, 1, 3
        >>> spec.span(0, 0), spec.span(0, 2)      # tap 0 of window 0 and tap 2 of window 2: pad
        ((1, 3, 1), (0, 2, 1))
        """
        s, d, pad = self.stride[dim], self.dilation[dim], self.pads[dim][0]
        hi = self.in_size[dim] if hi is None else hi
        offset = k * d - pad                                     # window p, tap k: p*s + offset
        p0 = max(0, -((offset - lo) // s))                       # ceil((lo - offset) / s)
        p1 = min(self.out_size[dim], (hi - 1 - offset) // s + 1)
        return p0, max(p0, p1), p0 * s + offset

    def window_counts(self, include_pad: bool) -> np.ndarray:
        """Taps of each window inside the input, or inside the padded input [-lo, S + hi) when
        `include_pad` (the average's divisors; ceil_mode's extra taps never count), (*P)."""
        counts = []
        for dim, (n, (lo, hi)) in enumerate(zip(self.in_size, self.pads)):
            c = np.zeros(self.out_size[dim])                     # (P,)
            for k in range(self.kernel_size[dim]):
                p0, p1, _ = self.span(dim, k, *((-lo, n + hi) if include_pad else (0, n)))
                c[p0:p1] += 1
            counts.append(c)
        return functools.reduce(np.multiply.outer, counts)      # (*P)

    def index_parts(self) -> tuple[np.ndarray, np.ndarray]:
        """(base, offsets): PyTorch's flat index into *S of tap r of window p is base[p] +
        offsets[r], both int64.

        base (1, *P, 1) = sum_d (p_d * stride_d - lo_d) * M_d and offsets[r] = sum_d k_d *
        dilation_d * M_d, the tap formula weighted by M_d = prod(S[d+1:]). int64 arithmetic is
        exact modulo 2**64 and the index of a tap inside the input fits, so a base that wraps
        for a window deep in the padding still adds up to the right index."""
        m = [math.prod(self.in_size[d + 1:]) for d in range(self.rank)]
        base = np.zeros((1,) * (self.rank + 2), dtype=np.int64)  # broadcasts to (1, *P, 1)
        for d in range(self.rank):
            shape = [1] * (self.rank + 2)
            shape[d + 1] = -1
            p = np.arange(self.out_size[d], dtype=np.int64) * self.stride[d] - self.pads[d][0]
            base = base + (p * m[d]).reshape(shape)              # (1, *P, 1) after the loop
        ks = np.indices(self.kernel_size).reshape(self.rank, -1)  # (rank, prod(K))
        offsets = (sum(int(k) * d * w for k, d, w in zip(col, self.dilation, m)) for col in ks.T)
        return base, np.array([(v + 2**63) % 2**64 - 2**63 for v in offsets], dtype=np.int64)

    def live_windows(self, dim: int) -> int:
        """Windows along `dim` that read at least one input coordinate."""
        live = np.zeros(self.out_size[dim], dtype=bool)          # (P,)
        for k in range(self.kernel_size[dim]):
            p0, p1, _ = self.span(dim, k)
            live[p0:p1] = True
        return int(live.sum())


def pool_out_size(s: int, k: int, stride: int, d: int, lo: int, hi: int, ceil_mode: bool) -> int:
    """Output size of a pooling along one dimension (PyTorch's and ONNX's formula).

    Floor mode is `npconv.spec.out_size`. Ceil mode rounds up, which is the floor formula with
    stride - 1 more rows of padding at the end; a window that would then start at or past
    S + lo, entirely in the right padding, is dropped.
    """
    if not ceil_mode:
        return out_size(s, k, stride, d, lo, hi)
    p = out_size(s, k, stride, d, lo, hi + stride - 1)
    return p - 1 if (p - 1) * stride >= s + lo else p


def split_pool_shape(x_shape: tuple[int, ...], data_format: str, name: str = "x"
                     ) -> tuple[int, tuple[int, ...], int]:
    """(N, S, C) of an input shape, after checking its rank and that no spatial size is 0."""
    if len(x_shape) < 3:
        layout = "(N, *S, C)" if data_format == "channels_last" else "(N, C, *S)"
        raise ValueError(
            f"`{name}` must have at least 3 dimensions {layout}: batch, spatial..., channels; "
            f"got shape {tuple(x_shape)}"
        )
    if data_format == "channels_last":
        n, *s, c = x_shape
        first = 1
    else:
        n, c, *s = x_shape
        first = 2
    for axis, size in enumerate(s, start=first):
        if size < 1:
            raise ValueError(
                f"`{name}` must have spatial sizes >= 1 (a pooling window needs an input "
                f"pixel); got size {size} along axis {axis} of shape {tuple(x_shape)}"
            )
    return n, tuple(s), c


def _check_index_range(values: tuple[int, ...], name: str, given: Any) -> None:
    """ValueError for sizes no NumPy index can hold (a slice step beyond sys.maxsize raises
    OverflowError deep inside NumPy)."""
    if any(v > sys.maxsize for v in values):
        raise ValueError(
            f"`{name}` must be at most sys.maxsize ({sys.maxsize}), the largest NumPy index, "
            f"in every dimension; got {given!r}"
        )


def _check_out_size(spec: PoolSpec) -> None:
    if any(v < 1 for v in spec.out_size):
        raise ValueError(
            f"output size must be >= 1; got output size {spec.out_size} from input size "
            f"{spec.in_size}, kernel_size {spec.kernel_size}, stride {spec.stride}, dilation "
            f"{spec.dilation}, padding {spec.pads}: the padded input is smaller than the window"
        )


def pool_spec(
    x_shape: tuple[int, ...],
    kernel_size: int | tuple[int, ...],
    *,
    stride: int | tuple[int, ...] | None = None,
    padding: Padding = 0,
    dilation: int | tuple[int, ...] = 1,
    ceil_mode: bool = False,
    data_format: str = "channels_last",
    name: str = "x",
) -> PoolSpec:
    """Check every argument of a pooling and resolve its geometry.

    `stride=None` means stride = kernel_size. `padding` takes every form `npconv.conv` takes
    (int, per-dim ints, (lo, hi) pairs, "valid", "same", "full"), of any size (ONNX allows
    padding wider than half the window; PyTorch does not). `name` is the shape's argument in
    error messages (the backward ops given a shape pass "x_shape").

    >>> pool_spec((8, 28, 28, 3), 3, stride=2, padding=1).out_size    # floor(27 / 2) + 1
    (14, 14)
    """
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    n, s, c = split_pool_shape(x_shape, data_format, name)
    rank = len(s)
    k = _args.positive_tuple(kernel_size, rank, "kernel_size")
    stride_ = k if stride is None else _args.positive_tuple(stride, rank, "stride")
    dilation_ = _args.positive_tuple(dilation, rank, "dilation")
    for name, values, given in (("kernel_size", k, kernel_size), ("stride", stride_, stride),
                                ("dilation", dilation_, dilation)):
        _check_index_range(values, name, given)
    ceil_mode = _args.check_flag(ceil_mode, "ceil_mode")
    pads = resolve_padding(padding, s, k, stride_, dilation_)
    if any(n + lo + hi > sys.maxsize for n, (lo, hi) in zip(s, pads)):
        raise ValueError(
            f"`padding` must keep the padded size S + lo + hi at most sys.maxsize "
            f"({sys.maxsize}), the largest NumPy index; got padding={padding!r} for input size {s}"
        )
    p = tuple(pool_out_size(si, ki, st, di, lo, hi, ceil_mode)
              for si, ki, st, di, (lo, hi) in zip(s, k, stride_, dilation_, pads))
    spec = PoolSpec(n, c, s, k, p, stride_, dilation_, pads, ceil_mode, data_format)
    _check_out_size(spec)
    return spec
