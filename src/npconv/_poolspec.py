"""Pooling geometry: argument checks, the output-size formula and the window-tap formula.

Every shape formula of pooling lives in this module (the integrator may move it next to the
convolution's in `npconv.spec`), and nothing here touches array data. Two formulas carry
everything:

    P = floor((S + lo + hi - eff) / stride) + 1, eff = dilation * (K - 1) + 1     (`pool_out_size`)
    tap k of window p reads the input coordinate p * stride + k * dilation - lo  (`PoolSpec.span`)

`ceil_mode` rounds P up, except that a window starting in the right padding is dropped. A tap
outside [0, S) reads padding; padding never enters a maximum (it acts as -inf, or the integer
dtype's minimum) and adds zeros to a sum. Any padding is accepted, as in ONNX: a window that reads
only padding has the maximum -inf, the sum 0, and the average 0 / divisor.
"""

from __future__ import annotations

import functools
import math
import sys
from dataclasses import dataclass

import numpy as np

from npconv import _args
from npconv.spec import Pads, out_size, resolve_padding

__all__ = ["PoolSpec", "check_flag", "pool_out_size", "pool_spec", "split_x"]


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


def layout_shape(n: int, size: tuple[int, ...], c: int, data_format: str) -> tuple[int, ...]:
    """(N, *size, C) or (N, C, *size)."""
    return (n, *size, c) if data_format == "channels_last" else (n, c, *size)


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


def split_x(x_shape, data_format: str, name: str = "x") -> tuple[int, tuple[int, ...], int]:
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


def check_flag(value, name: str) -> bool:
    """TypeError unless `value` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r}")
    return bool(value)


def _check_index_range(values: tuple[int, ...], name: str, given) -> None:
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
    (int, per-dim ints, (lo, hi) pairs, "valid", "same", "full"), of any size (ONNX allows
    padding wider than half the window; PyTorch does not).

    >>> pool_spec((8, 28, 28, 3), 3, stride=2, padding=1).out_size    # floor(27 / 2) + 1
    (14, 14)
    """
    _args.choice(data_format, _args.DATA_FORMATS, "data_format")
    n, s, c = split_x(x_shape, data_format)
    rank = len(s)
    k = _args.positive_tuple(kernel_size, rank, "kernel_size")
    stride_ = k if stride is None else _args.positive_tuple(stride, rank, "stride")
    dilation_ = _args.positive_tuple(dilation, rank, "dilation")
    for name, values, given in (("kernel_size", k, kernel_size), ("stride", stride_, stride),
                                ("dilation", dilation_, dilation)):
        _check_index_range(values, name, given)
    ceil_mode = check_flag(ceil_mode, "ceil_mode")
    pads = resolve_padding(padding, s, k, stride_, dilation_)
    if any(n + lo + hi > sys.maxsize for n, (lo, hi) in zip(s, pads)):
        raise ValueError(
            f"`padding` must keep the padded size S + lo + hi at most sys.maxsize "
            f"({sys.maxsize}), the largest NumPy index; got padding={padding!r} for input size {s}"
        )
    p = tuple(pool_out_size(*a, lo, hi, ceil_mode)
              for *a, (lo, hi) in zip(s, k, stride_, dilation_, pads))
    spec = PoolSpec(n, c, s, k, p, stride_, dilation_, pads, ceil_mode, data_format)
    _check_out_size(spec)
    return spec
