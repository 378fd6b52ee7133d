"""The convolutions `check_conv` runs: fixed configurations from easy to hard, random ones, tags.

A `Case` is one small convolution geometry (batch, channels, sizes, stride, padding, dilation,
groups, padding mode; transposed or not). `SweepOptions.cases` lists the fixed sweep in the
order a hand-written layer usually breaks: stride 1, then stride > 1; padding 0, symmetric,
asymmetric; square, then non-square; sizes that divide evenly, then sizes that leave a
remainder; dilation; groups; batch 1. `SweepOptions.random_case` draws a geometry by
construction (stride, kernel, padding, output size and remainder per axis, then the input
size), so that every combination of per-axis remainders and paddings turns up.

Each case carries tags ("padding 0", "non-square kernel", ...) computed from its geometry, so
that a report can say *when* an implementation fails; `SweepOptions.vary` builds a case that
differs from another in one tag only, to test whether that tag is the cause.

Shapes are tiny (inputs of at most 2 x 9 x 9 x 4 in the fixed sweep) so that even loop-based
implementations run in milliseconds.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Generic, TypeVar

import numpy as np

import npconv
from npconv.spec import effective_kernel
from npconv.testing.layout import Layout

_C = TypeVar("_C")
PADDING_KINDS = ("zero", "symmetric", "asymmetric")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
PER_AXIS_ARGS = frozenset({"stride", "padding", "dilation", "output_padding"})
INT_ARG_ORDER = ("stride", "padding", "dilation", "output_padding", "kernel_size")


def tuple_reason(arg: str) -> str:
    """How a report names the configurations that need a tuple for `arg`."""
    return "a non-square `kernel_size`" if arg == "kernel_size" else f"a tuple `{arg}`"

# Tag order: the order in which "when it fails" lines are tried and printed.
TAGS = (
    "padding 0",
    "padding > 0",
    "stride > 1",
    "remainder",
    "overlapping windows",
    "output padding",
    "non-square kernel",
    "non-square input",
    "non-square output",
    "per-axis stride",
    "per-axis padding",
    "asymmetric padding",
    "even kernel",
    "1x1 kernel",
    "output size 1",
    "padding > kernel // 2",
    "dilation",
    "groups",
    "reflect padding",
    "replicate padding",
    "circular padding",
    "batch 1",
    "batch > 1",
    "one channel",
)

TAG_TEXT = {
    "padding 0": "padding 0",
    "padding > 0": "padding > 0",
    "stride > 1": "stride > 1",
    "remainder": "remainder rows that no window reads",
    "overlapping windows": "overlapping windows (stride < kernel size)",
    "output padding": "output_padding > 0",
    "non-square kernel": "a non-square kernel",
    "non-square input": "a non-square input",
    "non-square output": "a non-square output",
    "per-axis stride": "a different stride per axis",
    "per-axis padding": "a different padding per axis",
    "asymmetric padding": "asymmetric padding (lo != hi)",
    "even kernel": "an even kernel size",
    "1x1 kernel": "a 1x1 kernel",
    "output size 1": "an output of size 1",
    "padding > kernel // 2": "padding larger than kernel // 2",
    "dilation": "dilation > 1",
    "groups": "groups > 1",
    "reflect padding": "padding_mode='reflect'",
    "replicate padding": "padding_mode='replicate'",
    "circular padding": "padding_mode='circular'",
    "batch 1": "batch size 1",
    "batch > 1": "batch size > 1",
    "one channel": "one input and one output channel",
}

# Tags that may change together with a tag when a case is varied in that tag alone: its
# complement, and the tags that cannot exist without it (a remainder needs stride > 1).
RELATED = {
    "padding 0": {"padding > 0", "padding > kernel // 2", "per-axis padding",
                  "asymmetric padding", "reflect padding", "replicate padding",
                  "circular padding"},
    "padding > 0": {"padding 0", "padding > kernel // 2", "per-axis padding",
                    "asymmetric padding", "reflect padding", "replicate padding",
                    "circular padding"},
    "stride > 1": {"remainder", "per-axis stride", "output padding", "overlapping windows"},
    "overlapping windows": {"stride > 1", "remainder", "per-axis stride", "1x1 kernel",
                            "even kernel"},
    "non-square input": {"non-square output"},
    "non-square output": {"non-square input"},
    "1x1 kernel": {"even kernel", "overlapping windows", "padding > kernel // 2",
                   "non-square kernel"},
    "even kernel": {"overlapping windows"},
    "non-square kernel": {"overlapping windows", "even kernel"},
    "dilation": {"overlapping windows"},
    "batch 1": {"batch > 1"},
    "batch > 1": {"batch 1"},
}


DERIVED = {"non-square output", "output size 1"}
"""Tags of the output's shape, which follow from the others: they may change along with any."""


@dataclass(frozen=True)
class Case:
    """One convolution geometry, channels_last: x (N, *S, C) -> y (N, *P, F).

    w is (*K, C/G, F) for a convolution and (*K, F/G, C) for a transposed convolution (npconv's
    and Keras' layouts; a report shows the user's). `pads` are (lo, hi) per axis.

    Examples
    --------
    >>> case = Case(2, 3, 4, (8, 8), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    >>> case.out_size, case.stride_arg, case.padding_arg
    ((4, 4), 2, 1)
    >>> case.tags
    ('padding > 0', 'stride > 1', 'remainder', 'overlapping windows', 'batch > 1')
    """

    batch: int
    in_channels: int
    out_channels: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    groups: int = 1
    padding_mode: str = "zeros"
    transposed: bool = False
    output_padding: tuple[int, ...] = ()

    kind = "conv"

    @cached_property
    def spec(self) -> npconv.ConvSpec:
        """npconv's resolved geometry (raises ValueError for an impossible case).

        For a transposed case this is the forward convolution it is the gradient of: its
        in_size is this case's output size.
        """
        if self.transposed:
            return npconv.conv_transpose_spec(
                self.x_shape, self.w_shape, stride=self.stride, padding=self.pads,
                output_padding=self.output_padding or 0, dilation=self.dilation,
                groups=self.groups)
        return npconv.conv_spec(self.x_shape, self.w_shape, stride=self.stride,
                                padding=self.pads, dilation=self.dilation, groups=self.groups,
                                padding_mode=self.padding_mode)

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_size, self.in_channels)           # (N, *S, C)

    @property
    def w_shape(self) -> tuple[int, ...]:
        if self.transposed:
            return (*self.kernel_size, self.out_channels // self.groups, self.in_channels)
        return (*self.kernel_size, self.in_channels // self.groups, self.out_channels)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_size, self.out_channels)         # (N, *P, F)

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.spec.in_size if self.transposed else self.spec.out_size

    @property
    def padded_size(self) -> tuple[int, ...]:
        return self.spec.padded_size

    @property
    def stride_arg(self) -> int | tuple[int, ...]:
        """The stride in its simplest form: one int when equal on every axis, else a tuple."""
        return _simplest(self.stride)

    @property
    def dilation_arg(self) -> int | tuple[int, ...]:
        return _simplest(self.dilation)

    @property
    def kernel_size_arg(self) -> int | tuple[int, ...]:
        return _simplest(self.kernel_size)

    @property
    def output_padding_arg(self) -> int | tuple[int, ...]:
        return _simplest(self.output_padding or (0,) * self.rank)

    @property
    def padding_arg(self) -> int | tuple:
        """One int, one int per axis, or one (lo, hi) pair per axis: the simplest that fits."""
        if all(lo == hi for lo, hi in self.pads):
            return _simplest(tuple(lo for lo, _ in self.pads))
        return self.pads

    def arguments(self) -> dict[str, object]:
        """The hyperparameters a user's code may ask for, by canonical name."""
        values: dict[str, object] = {"stride": self.stride_arg, "padding": self.padding_arg,
                  "dilation": self.dilation_arg, "groups": self.groups,
                  "in_channels": self.in_channels, "out_channels": self.out_channels,
                  "kernel_size": self.kernel_size_arg, "padding_mode": self.padding_mode,
                  "output_padding": self.output_padding_arg}
        values["param"] = {"stride": self.stride_arg, "pad": self.padding_arg,
                           "padding": self.padding_arg, "dilation": self.dilation_arg,
                           "groups": self.groups}
        return values

    def tuple_args(self) -> set[str]:
        """Arguments passed as a tuple in this case (one int would not do)."""
        args = {"stride": self.stride_arg, "padding": self.padding_arg,
                "dilation": self.dilation_arg, "kernel_size": self.kernel_size_arg,
                "output_padding": self.output_padding_arg}
        return {name for name, value in args.items() if isinstance(value, tuple)}

    @property
    def effective_stride(self) -> tuple[int, ...]:
        """The stride where it matters: 1 on an axis with a single window (a single input
        position, transposed)."""
        steps = self.in_size if self.transposed else self.out_size
        return tuple(s if p > 1 else 1 for s, p in zip(self.stride, steps))

    @property
    def remainders(self) -> tuple[int, ...]:
        """Rows of the padded input after the last window, per axis (never read)."""
        if self.transposed:
            return (0,) * self.rank
        return tuple((sp - effective_kernel(k, d)) % s for sp, k, d, s in
                     zip(self.padded_size, self.kernel_size, self.dilation, self.stride))

    @cached_property
    def tags(self) -> tuple[str, ...]:
        """The features of this case, in `TAGS` order."""
        present = {tag for tag, test in _TAG_TESTS.items() if test(self)}
        return tuple(tag for tag in TAGS if tag in present)

    @property
    def size(self) -> int:
        """Elements of x plus w: the measure that shrinking makes smaller."""
        return math.prod(self.x_shape) + math.prod(self.w_shape)

    @property
    def complexity(self) -> tuple[int, int]:
        """(size, sum of the other hyperparameters): shrinking goes down this order."""
        extra = sum(self.stride) + sum(map(sum, self.pads)) + sum(self.dilation) + \
            self.groups + sum(self.output_padding) + (self.padding_mode != "zeros")
        return self.size, extra

    def describe(self, layout: Layout | None = None) -> str:
        """One line: shapes (in `layout`, default channels_last) and the arguments."""
        x, w = self.x_shape, self.w_shape
        if layout is not None:
            x = tuple(x[i] for i in layout.perm("x", self.rank))
            w = tuple(w[i] for i in layout.perm("w", self.rank))
        parts = [f"x {x}", f"w {w}", f"stride={self.stride_arg!r}",
                 f"padding={self.padding_arg!r}"]
        if any(self.output_padding):
            parts.append(f"output_padding={self.output_padding_arg!r}")
        if any(d > 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation_arg!r}")
        if self.groups > 1:
            parts.append(f"groups={self.groups}")
        if self.padding_mode != "zeros":
            parts.append(f"padding_mode={self.padding_mode!r}")
        return ", ".join(parts)

    def columns(self) -> dict[str, str]:
        """This case's cells in a report's table, by column name."""
        return {"input": _size(self.in_size), "kernel": _size(self.kernel_size),
                "stride": str(self.stride_arg), "padding": str(self.padding_arg),
                "out pad": str(self.output_padding_arg), "dil": str(self.dilation_arg),
                "groups": str(self.groups), "mode": self.padding_mode, "N": str(self.batch),
                "C": str(self.in_channels), "F": str(self.out_channels)}

    def with_(self, **changes) -> Case:
        """A copy with some fields changed."""
        return replace(self, **changes)

    def smaller(self) -> Iterator[Case]:
        """Candidates one step smaller or simpler than this case, most promising first
        (some may be invalid)."""
        g, rank = self.groups, self.rank
        yield self.with_(batch=1)
        yield self.with_(in_channels=g, out_channels=g)
        yield self.with_(in_channels=g)
        yield self.with_(out_channels=g)
        yield self.with_(in_size=tuple(s - 1 for s in self.in_size))
        for name in ("kernel_size", "stride", "dilation"):
            yield self.with_(**{name: tuple(max(1, v - 1) for v in getattr(self, name))})
        yield self.with_(pads=tuple((max(0, lo - 1), max(0, hi - 1)) for lo, hi in self.pads))
        for a in range(rank):
            yield self.with_(in_size=_minus(self.in_size, a))
            yield self.with_(kernel_size=_minus(self.kernel_size, a))
            yield self.with_(stride=_minus(self.stride, a))
            yield self.with_(dilation=_minus(self.dilation, a))
            if self.output_padding:
                yield self.with_(output_padding=_minus(self.output_padding, a, low=0))
            lo, hi = self.pads[a]
            for pair in ((lo - 1, hi - 1), (lo - 1, hi), (lo, hi - 1)):
                if min(pair) >= 0:
                    yield self.with_(pads=_replaced(self.pads, a, pair))
        if g > 1:
            yield self.with_(groups=1)

    def valid(self) -> bool:
        """A possible case whose input holds a whole (dilated) kernel without padding, and
        whose windows each read some input."""
        try:
            _ = self.spec
        except ValueError:
            return False
        eff = [effective_kernel(k, d) for k, d in zip(self.kernel_size, self.dilation)]
        if any(max(pair) >= e for pair, e in zip(self.pads, eff)):
            return False                            # a window entirely in the padding
        if self.transposed:
            return min(self.out_size) >= 1
        return all(s >= e for s, e in zip(self.in_size, eff))


TABLE_COLUMNS = ("input", "kernel", "stride", "padding", "out pad", "dil", "groups", "mode",
                 "N", "C", "F")
"""Columns of a report's table; a column whose cells are all default is left out."""

COLUMN_DEFAULTS = {"out pad": "0", "dil": "1", "groups": "1", "mode": "zeros"}


def _minus(values: tuple[int, ...], axis: int, low: int = 1) -> tuple[int, ...]:
    """`values` with one less on `axis` (never below `low`)."""
    return tuple(max(low, v - (i == axis)) for i, v in enumerate(values))


def _replaced(values: tuple, axis: int, value) -> tuple:
    return tuple(value if i == axis else v for i, v in enumerate(values))


def _size(values) -> str:
    return "x".join(map(str, values))


def _simplest(values: tuple[int, ...]) -> int | tuple[int, ...]:
    return values[0] if len(set(values)) == 1 else values


def _conv_only(test):
    return lambda c: not c.transposed and test(c)


_TAG_TESTS = {
    "padding 0": lambda c: all(lo == hi == 0 for lo, hi in c.pads),
    "padding > 0": lambda c: any(lo or hi for lo, hi in c.pads),
    "stride > 1": lambda c: any(s > 1 for s in c.effective_stride),
    "remainder": _conv_only(lambda c: any(c.remainders)),
    "overlapping windows": lambda c: any(
        s < effective_kernel(k, d) and p > 1 for s, k, d, p in
        zip(c.stride, c.kernel_size, c.dilation, c.in_size if c.transposed else c.out_size)),
    "output padding": lambda c: any(c.output_padding),
    "non-square kernel": lambda c: len(set(c.kernel_size)) > 1,
    "non-square input": lambda c: len(set(c.in_size)) > 1,
    "non-square output": lambda c: len(set(c.out_size)) > 1,
    "per-axis stride": lambda c: len(set(c.effective_stride)) > 1,
    "per-axis padding": lambda c: len({lo + hi for lo, hi in c.pads}) > 1,
    "asymmetric padding": lambda c: any(lo != hi for lo, hi in c.pads),
    "even kernel": lambda c: any(k % 2 == 0 for k in c.kernel_size),
    "1x1 kernel": lambda c: max(c.kernel_size) == 1,
    "output size 1": _conv_only(lambda c: min(c.out_size) == 1),
    "padding > kernel // 2": _conv_only(lambda c: any(
        max(p) > effective_kernel(k, d) // 2
        for p, k, d in zip(c.pads, c.kernel_size, c.dilation))),
    "dilation": lambda c: any(d > 1 and k > 1 for d, k in zip(c.dilation, c.kernel_size)),
    "groups": lambda c: c.groups > 1,
    "reflect padding": lambda c: c.padding_mode == "reflect" and any(map(any, c.pads)),
    "replicate padding": lambda c: c.padding_mode == "replicate" and any(map(any, c.pads)),
    "circular padding": lambda c: c.padding_mode == "circular" and any(map(any, c.pads)),
    "batch 1": lambda c: c.batch == 1,
    "batch > 1": lambda c: c.batch > 1,
    "one channel": lambda c: c.in_channels == c.out_channels == 1,
}

# 2-D recipes: (input, kernel, stride, padding, dilation, groups, (N, C, F)). Padding is an int,
# a per-axis pair of ints, or per-axis (lo, hi) pairs. Ranks 1 and 3 are derived in `_expand`.
_RECIPES = (
    ((5, 5), (3, 3), 1, 0, 1, 1, (2, 3, 4)),          # stride 1: no padding
    ((5, 5), (3, 3), 1, 1, 1, 1, (2, 3, 4)),          # "same" padding
    ((5, 5), (3, 3), 1, 2, 1, 1, (2, 3, 4)),          # padding > K // 2
    ((5, 5), (2, 2), 1, 0, 1, 1, (2, 3, 4)),          # even kernel
    ((5, 5), (2, 2), 1, 1, 1, 1, (2, 3, 4)),
    ((4, 4), (1, 1), 1, 0, 1, 1, (2, 3, 4)),          # 1x1 kernel
    ((3, 3), (3, 3), 1, 0, 1, 1, (2, 3, 4)),          # output size 1
    ((7, 7), (3, 3), 2, 0, 1, 1, (2, 3, 4)),          # stride 2, sizes divide evenly
    ((7, 7), (3, 3), 2, 1, 1, 1, (2, 3, 4)),
    ((8, 8), (3, 3), 2, 0, 1, 1, (2, 3, 4)),          # remainder 1: last row never read
    ((8, 8), (3, 3), 2, 1, 1, 1, (2, 3, 4)),
    ((6, 6), (2, 2), 2, 0, 1, 1, (2, 3, 4)),          # stride == kernel
    ((9, 9), (3, 3), 3, 1, 1, 1, (2, 3, 4)),          # stride 3, remainder 2
    ((5, 7), (3, 3), 1, 1, 1, 1, (2, 3, 4)),          # non-square input
    ((7, 8), (3, 3), 2, 1, 1, 1, (2, 3, 4)),
    ((8, 7), (3, 3), 2, 1, 1, 1, (2, 3, 4)),
    ((5, 5), (2, 3), 1, 1, 1, 1, (2, 3, 4)),          # non-square kernel
    ((5, 5), (3, 2), 1, 1, 1, 1, (2, 3, 4)),
    ((7, 7), (3, 2), 2, 1, 1, 1, (2, 3, 4)),
    ((7, 7), (3, 3), (2, 1), 1, 1, 1, (2, 3, 4)),     # per-axis stride
    ((6, 6), (3, 3), 1, (1, 0), 1, 1, (2, 3, 4)),     # per-axis padding
    ((6, 6), (3, 3), 1, ((1, 0), (0, 1)), 1, 1, (2, 3, 4)),   # asymmetric padding
    ((8, 8), (3, 3), 2, ((0, 1), (1, 2)), 1, 1, (2, 3, 4)),
    ((7, 7), (3, 3), 1, 0, 2, 1, (2, 3, 4)),          # dilation
    ((7, 7), (3, 3), 1, 2, 2, 1, (2, 3, 4)),
    ((8, 8), (3, 3), 2, 1, 2, 1, (2, 3, 4)),
    ((5, 5), (3, 3), 1, 1, 1, 2, (2, 4, 6)),          # groups
    ((6, 6), (3, 3), 2, 1, 1, 3, (2, 3, 3)),          # depthwise
    ((5, 5), (3, 3), 1, 1, 1, 1, (1, 1, 1)),          # batch 1, one channel
    ((7, 7), (3, 3), 2, 0, 1, 1, (1, 3, 4)),
)

# Padding modes other than zeros, for code that takes `padding_mode`: symmetric padding per axis
# (PyTorch's rule), each side smaller than the input.
_MODE_RECIPES = (
    ((5, 5), (3, 3), 1, 1, 1, 1, (2, 3, 4)),
    ((8, 8), (3, 3), 2, 1, 1, 1, (2, 3, 4)),          # remainder
    ((5, 7), (3, 3), 1, (1, 2), 1, 1, (2, 3, 4)),     # per-axis padding, non-square input
    ((6, 6), (2, 2), 1, 2, 1, 1, (1, 2, 3)),          # padding > K // 2, even kernel
)

# Transposed convolutions: (input, kernel, stride, padding, output_padding, dilation, groups,
# (N, C, F)); x is (N, *S, C), the output (N, *O, F).
_TRANSPOSED_RECIPES = (
    ((3, 3), (3, 3), 1, 0, 0, 1, 1, (2, 3, 4)),
    ((3, 3), (3, 3), 1, 1, 0, 1, 1, (2, 3, 4)),
    ((3, 3), (3, 3), 2, 0, 0, 1, 1, (2, 3, 4)),
    ((3, 3), (3, 3), 2, 1, 0, 1, 1, (2, 3, 4)),
    ((3, 3), (3, 3), 2, 1, 1, 1, 1, (2, 3, 4)),       # output padding
    ((4, 4), (2, 2), 2, 0, 0, 1, 1, (2, 3, 4)),       # stride == kernel
    ((4, 4), (1, 1), 1, 0, 0, 1, 1, (2, 3, 4)),       # 1x1 kernel
    ((3, 4), (3, 3), 2, 1, 1, 1, 1, (2, 3, 4)),       # non-square input
    ((3, 3), (2, 3), 2, 1, 0, 1, 1, (2, 3, 4)),       # non-square kernel
    ((3, 3), (3, 3), (2, 1), 1, (1, 0), 1, 1, (2, 3, 4)),    # per-axis stride
    ((3, 3), (3, 3), 1, (1, 0), 0, 1, 1, (2, 3, 4)),  # per-axis padding
    ((4, 4), (3, 3), 2, ((1, 0), (0, 1)), 0, 1, 1, (2, 3, 4)),   # asymmetric padding
    ((3, 3), (3, 3), 1, 1, 0, 2, 1, (2, 3, 4)),       # dilation
    ((3, 3), (3, 3), 2, 1, 1, 2, 1, (2, 3, 4)),
    ((3, 3), (3, 3), 1, 1, 0, 1, 2, (2, 4, 6)),       # groups
    ((3, 3), (3, 3), 2, 1, 0, 1, 1, (1, 1, 1)),       # batch 1, one channel
)


def _expand(value, rank: int) -> tuple:
    """A 2-D per-axis recipe value as `rank` axes: rank 1 keeps the last, rank 3 repeats the
    first."""
    pair = value if isinstance(value, tuple) else (value, value)
    if rank == 1:
        return (pair[1],)
    return (pair[0],) * (rank - 1) + (pair[1],)


def _padding_pairs(padding, rank: int) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        return _expand(padding, rank)
    return tuple((p, p) for p in _expand(padding, rank))


def _recipe_case(recipe, rank: int, mode: str = "zeros") -> Case:
    s, k, stride, padding, dilation, groups, (n, c, f) = recipe
    return Case(n, c, f, _expand(s, rank), _expand(k, rank), _expand(stride, rank),
                _padding_pairs(padding, rank), _expand(dilation, rank), groups, mode)


def _transposed_case(recipe, rank: int) -> Case:
    s, k, stride, padding, out_pad, dilation, groups, (n, c, f) = recipe
    return Case(n, c, f, _expand(s, rank), _expand(k, rank), _expand(stride, rank),
                _padding_pairs(padding, rank), _expand(dilation, rank), groups,
                transposed=True, output_padding=_expand(out_pad, rank))


class Sweep(Generic[_C]):
    """What the options of a convolution sweep and of a pooling sweep share: the checked fixed
    cases, what is left out and why, random draws. Subclasses give `fixed_cases`,
    `skip_reason` and `_draw`; `HIDDEN` are reasons not reported (another kind of op)."""

    HIDDEN: tuple[str, ...] = ()

    def fixed_cases(self) -> list[_C]:
        raise NotImplementedError

    def skip_reason(self, case: _C) -> str | None:
        raise NotImplementedError

    def _draw(self, rng: np.random.Generator) -> _C:
        raise NotImplementedError

    def cases(self) -> list[_C]:
        """The checked cases, easy to hard, without duplicates."""
        return [c for c in self.fixed_cases() if self.skip_reason(c) is None]

    def skipped(self) -> dict[str, int]:
        """How many cases each reason leaves out: {"dilation": 3, ...}, in sweep order."""
        counts: dict[str, int] = {}
        for case in self.fixed_cases():
            reason = self.skip_reason(case)
            if reason is not None and not reason.startswith(self.HIDDEN):
                counts[reason] = counts.get(reason, 0) + 1
        return counts

    def random_case(self, rng: np.random.Generator) -> _C:
        """A random case that these options allow, built valid by construction."""
        while True:
            case = self._draw(rng)
            if case.valid() and self.skip_reason(case) is None:     # type: ignore[attr-defined]
                return case


@dataclass(frozen=True)
class SweepOptions(Sweep[Case]):
    """Which convolutions to check: leave out what the code under test does not support.

    Parameters
    ----------
    rank : int
        Spatial dimensions (1, 2 or 3).
    max_stride : int
        Largest stride checked (1 checks stride 1 only).
    padding : tuple of str
        Padding kinds to check, from "zero", "symmetric" and "asymmetric" (lo != hi).
    square_only : bool
        Skip non-square kernels and inputs.
    per_axis : bool
        False skips configurations whose stride, padding or dilation differ between axes (for
        code that takes one int for all axes); asymmetric padding needs it too.
    dilation, groups : bool
        False skips configurations with dilation > 1 / groups > 1.
    int_only : frozenset of str
        Arguments the code takes as one int only ("stride", "padding", "dilation",
        "output_padding", "kernel_size"): configurations that need a tuple for one of them are
        left out. ``per_axis=False`` is the same as the first four.
    transposed : bool
        Check a transposed convolution (x (N, *S, C) -> y (N, *O, F)) instead.
    padding_modes : tuple of str
        Padding modes besides "zeros" to check ("reflect", "replicate", "circular").

    Examples
    --------
    >>> opts = SweepOptions(padding=("zero", "symmetric"), per_axis=False, groups=False)
    >>> len(opts.cases()) < len(SweepOptions().cases())
    True
    """

    rank: int = 2
    max_stride: int = 3
    padding: tuple[str, ...] = PADDING_KINDS
    square_only: bool = False
    per_axis: bool = True
    dilation: bool = True
    groups: bool = True
    int_only: frozenset[str] = field(default_factory=frozenset)
    transposed: bool = False
    padding_modes: tuple[str, ...] = ()

    HIDDEN = ("transposed", "a forward", "padding_mode")

    def __post_init__(self) -> None:
        _check_int(self.rank, "rank", 1, 3)
        _check_int(self.max_stride, "max_stride", 1, None)
        _check_kinds(self.padding, "padding", PADDING_KINDS, empty=False)
        object.__setattr__(self, "padding", tuple(self.padding))
        _check_kinds(self.padding_modes, "padding_modes", PADDING_MODES[1:], empty=True)
        object.__setattr__(self, "padding_modes", tuple(self.padding_modes))
        for name in ("square_only", "per_axis", "dilation", "groups", "transposed"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}")
        unknown = set(self.int_only) - PER_AXIS_ARGS - {"kernel_size"}
        if unknown:
            raise ValueError(f"`int_only` must hold argument names from "
                             f"{sorted(PER_AXIS_ARGS | {'kernel_size'})}; got {sorted(unknown)}")
        int_only = set(self.int_only) | (set() if self.per_axis else PER_AXIS_ARGS)
        object.__setattr__(self, "int_only", frozenset(int_only))

    def skip_reason(self, case: Case) -> str | None:
        """Why `case` is left out under these options, or None when it is checked."""
        tags = set(case.tags)
        tuples = [a for a in INT_ARG_ORDER if a in case.tuple_args() & self.int_only]
        reasons = (
            (case.transposed != self.transposed, "transposed" if case.transposed
             else "a forward convolution"),
            (case.padding_mode not in ("zeros", *self.padding_modes),
             f"padding_mode={case.padding_mode!r}"),
            (max(case.stride) > self.max_stride, f"stride > {self.max_stride}"),
            (_padding_kind(case) not in self.padding, f"{_padding_kind(case)} padding"),
            (self.square_only and bool(tags & {"non-square kernel", "non-square input"}),
             "non-square"),
            (bool(tuples), tuple_reason(tuples[0]) if tuples else ""),
            (not self.dilation and "dilation" in tags, "dilation"),
            (not self.groups and "groups" in tags, "groups"),
        )
        return next((text for hit, text in reasons if hit), None)

    def fixed_cases(self) -> list[Case]:
        """Every fixed case of this kind and rank, checked or not, easy to hard."""
        if self.transposed:
            return _unique(_transposed_case(r, self.rank) for r in _TRANSPOSED_RECIPES)
        modes = [_recipe_case(r, self.rank, m) for m in PADDING_MODES[1:]
                 for r in _MODE_RECIPES]
        return _unique([*(_recipe_case(r, self.rank) for r in _RECIPES), *modes])

    def _draw(self, rng: np.random.Generator) -> Case:
        def per_axis(name: str) -> bool:
            return name not in self.int_only and rng.random() < 0.4

        stride = _axes(rng, self.rank, 1, self.max_stride, per_axis("stride"))
        square_k = self.square_only or "kernel_size" in self.int_only or rng.random() < 0.6
        kernel = _axes(rng, self.rank, 1, 4, not square_k)
        dilation = _axes(rng, self.rank, 1, 2, per_axis("dilation")) \
            if self.dilation and rng.random() < 0.25 else (1,) * self.rank
        mode = "zeros"
        if self.padding_modes and not self.transposed and rng.random() < 0.5:
            mode = str(rng.choice(self.padding_modes))
        eff = tuple(effective_kernel(k, d) for k, d in zip(kernel, dilation))
        pads = _draw_pads(rng, self, eff, mode != "zeros")
        groups, (c, f) = _draw_channels(rng, self.groups)
        batch = int(rng.integers(1, 4))
        if self.transposed:
            return _draw_transposed(rng, self, batch, c, f, kernel, stride, pads, dilation,
                                    groups)
        size = _draw_sizes(rng, stride, eff, pads, self.square_only)
        return Case(batch, c, f, size, kernel, stride, pads, dilation, groups, mode)

    def vary(self, case: Case, tag: str, present: bool) -> Case | None:
        """A case allowed by these options that differs from `case` in `tag` alone (or in
        tags that cannot change without it, `RELATED`), with `tag` present or not; None when
        there is none nearby."""
        found = nearest_variation(case, tag, present, _variations(case, tag, present),
                                  RELATED.get(tag, set()), self.skip_reason)
        return found if isinstance(found, Case) else None


def nearest_variation(case, tag: str, present: bool, candidates, related: set[str],
                      skip_reason) -> object | None:
    """The first of `candidates` that is valid, allowed (`skip_reason` None), has `tag` as
    `present` says and changes no tag but `tag`, `related` ones and those of the output's shape
    (fewest changes win; one that changes only `tag` and its complement ends the search)."""
    allowed, best = {tag} | related | (DERIVED - {tag}), None
    for cand in candidates:
        if cand == case or not cand.valid() or (tag in cand.tags) != present:
            continue
        changed = set(cand.tags) ^ set(case.tags)
        if changed <= allowed and skip_reason(cand) is None and \
                (best is None or len(changed) < best[0]):
            best = (len(changed), cand)
            if len(changed) <= 2:
                break
    return best[1] if best else None


def _axes(rng, rank: int, low: int, high: int, per_axis: bool) -> tuple[int, ...]:
    if per_axis:
        return tuple(int(v) for v in rng.integers(low, high + 1, size=rank))
    return (int(rng.integers(low, high + 1)),) * rank


def _draw_pads(rng, options: SweepOptions, eff: tuple[int, ...],
               symmetric: bool) -> tuple[tuple[int, int], ...]:
    kinds = [k for k in options.padding if not (symmetric and k == "asymmetric")] or ["zero"]
    kind = str(rng.choice(kinds))
    rank = len(eff)
    if kind == "zero" and not symmetric:
        return ((0, 0),) * rank
    top = max(eff) - 1
    if top < 1:
        return ((0, 0),) * rank
    if kind == "asymmetric" and "padding" not in options.int_only:
        pads = [(int(rng.integers(0, top + 1)), int(rng.integers(0, top + 1)))
                for _ in range(rank)]
        if all(lo == hi for lo, hi in pads):
            pads[-1] = (pads[-1][0], pads[-1][0] + 1)
        return tuple(pads)
    if "padding" not in options.int_only and rng.random() < 0.5:    # per axis, some 0
        p = [int(rng.integers(1, top + 1)) if rng.random() < 0.5 else 0 for _ in range(rank)]
        if not any(p):
            p[int(rng.integers(rank))] = int(rng.integers(1, top + 1))
    else:
        p = [int(rng.integers(1, top + 1))] * rank
    return tuple((v, v) for v in p)


def _draw_channels(rng, groups: bool) -> tuple[int, tuple[int, int]]:
    if groups and rng.random() < 0.2:
        g = int(rng.integers(2, 4))
        return g, (g * int(rng.integers(1, 3)), g * int(rng.integers(1, 3)))
    return 1, (int(rng.integers(1, 5)), int(rng.integers(1, 5)))


def _draw_sizes(rng, stride, eff, pads, square: bool) -> tuple[int, ...]:
    """Input sizes from an output size and a remainder per axis: S = (P-1)*s + eff + r - pads."""
    sizes = []
    for s, e, (lo, hi) in zip(stride, eff, pads):
        p = int(rng.integers(1, 5))
        r = int(rng.integers(0, s))
        sizes.append(max(e, (p - 1) * s + e + r - lo - hi))
    if square:
        sizes = [sizes[0]] * len(sizes)
    return tuple(sizes)


def _draw_transposed(rng, options, batch, c, f, kernel, stride, pads, dilation, groups) -> Case:
    rank = options.rank
    size = tuple(int(v) for v in rng.integers(1, 5, size=rank))
    if options.square_only:
        size = (size[0],) * rank
    top = [max(s, d) - 1 for s, d in zip(stride, dilation)]
    out_pad = tuple(int(rng.integers(0, t + 1)) for t in top) \
        if rng.random() < 0.4 else (0,) * rank
    if "output_padding" in options.int_only:
        out_pad = (min(out_pad),) * rank
    return Case(batch, c, f, size, kernel, stride, pads, dilation, groups, transposed=True,
                output_padding=out_pad)


def _variations(case: Case, tag: str, present: bool) -> Iterator[Case]:
    """Candidate cases with `tag` set or cleared, each also with nearby input sizes."""
    for base in _TAG_CHANGES.get(tag, lambda c, on: ())(case, present):
        yield base
        for size in _nearby_sizes(base.in_size):
            yield base.with_(in_size=size)


def _nearby_sizes(size: tuple[int, ...]) -> Iterator[tuple[int, ...]]:
    for delta in (1, -1, 2, -2, 3):
        yield tuple(max(1, s + delta) for s in size)
    for axis, delta in itertools.product(range(len(size)), (1, -1, 2, -2)):
        yield tuple(max(1, s + delta * (i == axis)) for i, s in enumerate(size))


def _per_axis(values: tuple, value) -> tuple:
    return tuple(value for _ in values)


def _last_changed(values: tuple, value) -> tuple:
    return (*values[:-1], value)


def _change_padding(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(pads=_per_axis(c.pads, (0, 0)), padding_mode="zeros")]
    return [c.with_(pads=_per_axis(c.pads, (p, p))) for p in (1, 2)]


def _change_stride(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(stride=_per_axis(c.stride, 1), output_padding=())]
    return [c.with_(stride=_per_axis(c.stride, 2)), c.with_(stride=_per_axis(c.stride, 3))]


def _change_remainder(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(in_size=tuple(s - r for s, r in zip(c.in_size, c.remainders)))]
    return [c.with_(in_size=tuple(s + 1 for s in c.in_size))]


def _change_kernel_shape(c: Case, on: bool) -> list[Case]:
    k = c.kernel_size
    if not on:
        return [c.with_(kernel_size=_per_axis(k, k[0])), c.with_(kernel_size=_per_axis(k, k[-1]))]
    return [c.with_(kernel_size=_last_changed(k, k[-1] + 1)),
            c.with_(kernel_size=_last_changed(k, max(1, k[-1] - 1)))]


def _change_input_shape(c: Case, on: bool) -> list[Case]:
    s = c.in_size
    if not on:
        return [c.with_(in_size=_per_axis(s, s[0])), c.with_(in_size=_per_axis(s, s[-1]))]
    return [c.with_(in_size=_last_changed(s, s[-1] + d)) for d in (1, -1, 2)]


def _change_stride_per_axis(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(stride=_per_axis(c.stride, max(c.stride)))]
    return [c.with_(stride=_last_changed(c.stride, c.stride[-1] % 2 + 1))]


def _change_padding_per_axis(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(pads=_per_axis(c.pads, c.pads[0]))]
    lo, hi = c.pads[-1]
    return [c.with_(pads=_last_changed(c.pads, (lo + 1, hi + 1))),
            c.with_(pads=_last_changed(c.pads, (max(0, lo - 1), max(0, hi - 1))))]


def _change_asymmetry(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(pads=tuple((lo, lo) for lo, _ in c.pads)),
                c.with_(pads=tuple((hi, hi) for _, hi in c.pads))]
    lo, hi = c.pads[-1]
    return [c.with_(pads=_last_changed(c.pads, (lo, hi + 1))),
            c.with_(pads=_last_changed(c.pads, (lo + 1, hi)))]


def _change_even(c: Case, on: bool) -> list[Case]:
    k = c.kernel_size
    if not on:
        return [c.with_(kernel_size=tuple(v + (v % 2 == 0) for v in k)),
                c.with_(kernel_size=tuple(v - (v % 2 == 0) for v in k))]
    return [c.with_(kernel_size=_per_axis(k, k[-1] + 1)),
            c.with_(kernel_size=_last_changed(k, k[-1] + 1))]


def _change_one_by_one(c: Case, on: bool) -> list[Case]:
    k = c.kernel_size
    return [c.with_(kernel_size=_per_axis(k, 1))] if on else \
        [c.with_(kernel_size=_per_axis(k, 3)), c.with_(kernel_size=_per_axis(k, 2))]


def _change_output_one(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(in_size=tuple(s + st for s, st in zip(c.in_size, c.stride)))]
    eff = [effective_kernel(k, d) for k, d in zip(c.kernel_size, c.dilation)]
    return [c.with_(in_size=tuple(max(1, e - lo - hi) for e, (lo, hi) in zip(eff, c.pads)))]


def _change_wide_padding(c: Case, on: bool) -> list[Case]:
    eff = [effective_kernel(k, d) for k, d in zip(c.kernel_size, c.dilation)]
    p = [e // 2 + 1 if on else e // 2 for e in eff]
    return [c.with_(pads=tuple((v, v) for v in p))]


def _change_dilation(c: Case, on: bool) -> list[Case]:
    return [c.with_(dilation=_per_axis(c.dilation, 2 if on else 1))]


def _change_groups(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(groups=1)]
    return [c.with_(groups=2, in_channels=2 * c.in_channels, out_channels=2 * c.out_channels),
            c.with_(groups=2, in_channels=2, out_channels=2)]


def _change_mode(mode: str):
    def change(c: Case, on: bool) -> list[Case]:
        if not on:
            return [c.with_(padding_mode="zeros")]
        pads = c.pads if any(map(any, c.pads)) else _per_axis(c.pads, (1, 1))
        return [c.with_(padding_mode=mode, pads=tuple((lo, lo) for lo, _ in pads))]
    return change


def _change_batch(one: bool):
    return lambda c, on: [c.with_(batch=1 if on == one else 2)]


def _change_channels(c: Case, on: bool) -> list[Case]:
    if on:
        return [c.with_(in_channels=1, out_channels=1, groups=1)]
    return [c.with_(in_channels=2, out_channels=2), c.with_(out_channels=2)]


def _change_output_padding(c: Case, on: bool) -> list[Case]:
    if not on:
        return [c.with_(output_padding=())]
    return [c.with_(output_padding=_per_axis(c.stride, 1))]


_TAG_CHANGES = {
    "padding 0": lambda c, on: _change_padding(c, not on),
    "padding > 0": _change_padding,
    "stride > 1": _change_stride,
    "remainder": _change_remainder,
    "overlapping windows": lambda c, on: [
        c.with_(stride=tuple(max(1, effective_kernel(k, d) - 1) if on else
                             effective_kernel(k, d) for k, d in zip(c.kernel_size, c.dilation)))],
    "output padding": _change_output_padding,
    "non-square kernel": _change_kernel_shape,
    "non-square input": _change_input_shape,
    "non-square output": _change_input_shape,
    "per-axis stride": _change_stride_per_axis,
    "per-axis padding": _change_padding_per_axis,
    "asymmetric padding": _change_asymmetry,
    "even kernel": _change_even,
    "1x1 kernel": _change_one_by_one,
    "output size 1": _change_output_one,
    "padding > kernel // 2": _change_wide_padding,
    "dilation": _change_dilation,
    "groups": _change_groups,
    "reflect padding": _change_mode("reflect"),
    "replicate padding": _change_mode("replicate"),
    "circular padding": _change_mode("circular"),
    "batch 1": _change_batch(True),
    "batch > 1": _change_batch(False),
    "one channel": _change_channels,
}


def _unique(cases: Iterable[_C]) -> list[_C]:
    out: list[_C] = []
    for case in cases:
        if case not in out:
            out.append(case)
    return out


def _padding_kind(case: Case) -> str:
    if any(lo != hi for lo, hi in case.pads):
        return "asymmetric"
    return "zero" if all(lo == 0 for lo, _ in case.pads) else "symmetric"


def _check_int(value, name: str, low: int, high: int | None) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be an int; got {value!r}")
    if value < low or (high is not None and value > high):
        bounds = f"between {low} and {high}" if high is not None else f">= {low}"
        raise ValueError(f"`{name}` must be {bounds}; got {value}")


def _check_kinds(value, name: str, kinds: tuple[str, ...], empty: bool) -> None:
    if isinstance(value, str) or not isinstance(value, (tuple, list)):
        raise TypeError(f"`{name}` must be a tuple of names from {kinds}; got {value!r}")
    unknown = [v for v in value if v not in kinds]
    if unknown or (not value and not empty):
        raise ValueError(f"`{name}` must be a {'' if empty else 'non-empty '}tuple of names "
                         f"from {kinds}; got {tuple(value)!r}")


def all_cases(rank: int = 2) -> list[Case]:
    """Every zero-padded forward case of the fixed sweep for `rank` spatial dimensions.

    Examples
    --------
    >>> cases = all_cases(2)
    >>> cases[0].describe()
    'x (2, 5, 5, 3), w (3, 3, 3, 4), stride=1, padding=0'
    """
    return SweepOptions(rank=rank).cases()
