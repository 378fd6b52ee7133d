"""The configurations `check_conv` sweeps, from easy to hard, and the tags that describe them.

A `Case` is one small convolution geometry (batch, channels, sizes, stride, padding, dilation,
groups). `sweep` lists them in the order a hand-written layer usually breaks: stride 1, then
stride > 1; padding 0, symmetric, asymmetric; square, then non-square; sizes that divide evenly,
then sizes that leave a remainder; dilation; groups; batch 1. Each case carries tags ("padding 0",
"non-square kernel", ...) computed from its geometry, so the report can say *when* an
implementation fails ("every configuration with padding 0 fails") instead of listing cases.

Shapes are tiny (inputs of at most 2 x 9 x 9 x 4) so that even loop-based implementations run in
milliseconds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import cached_property

from npconv.spec import ConvSpec, conv_spec, effective_kernel
from npconv.testing.layout import Layout

PADDING_KINDS = ("zero", "symmetric", "asymmetric")
FEATURES = ("dilation", "groups")

# Tag order: the order in which "when it fails" lines are tried and printed.
TAGS = (
    "padding 0",
    "padding > 0",
    "stride > 1",
    "remainder",
    "non-square kernel",
    "non-square input",
    "per-axis stride",
    "per-axis padding",
    "asymmetric padding",
    "even kernel",
    "1x1 kernel",
    "output size 1",
    "padding > kernel // 2",
    "dilation",
    "groups",
    "batch 1",
    "one channel",
)

TAG_TEXT = {
    "padding 0": "padding 0",
    "padding > 0": "padding > 0",
    "stride > 1": "stride > 1",
    "remainder": "remainder rows that no window reads",
    "non-square kernel": "a non-square kernel",
    "non-square input": "a non-square input",
    "per-axis stride": "a different stride per axis",
    "per-axis padding": "a different padding per axis",
    "asymmetric padding": "asymmetric padding (lo != hi)",
    "even kernel": "an even kernel size",
    "1x1 kernel": "a 1x1 kernel",
    "output size 1": "an output of size 1",
    "padding > kernel // 2": "padding larger than kernel // 2",
    "dilation": "dilation > 1",
    "groups": "groups > 1",
    "batch 1": "batch size 1",
    "one channel": "one input and one output channel",
}


@dataclass(frozen=True)
class Case:
    """One convolution geometry, channels_last: x (N, *S, C), w (*K, C/G, F), y (N, *P, F).

    Examples
    --------
    >>> case = Case(2, 3, 4, (8, 8), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    >>> case.out_size, case.stride_arg, case.padding_arg
    ((4, 4), 2, 1)
    >>> case.tags
    ('padding > 0', 'stride > 1', 'remainder')
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

    @cached_property
    def spec(self) -> ConvSpec:
        """npconv's resolved geometry (raises ValueError for an impossible case)."""
        return conv_spec(self.x_shape, self.w_shape, stride=self.stride, padding=self.pads,
                         dilation=self.dilation, groups=self.groups)

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_size, self.in_channels)           # (N, *S, C)

    @property
    def w_shape(self) -> tuple[int, ...]:
        group_in = self.in_channels // self.groups
        return (*self.kernel_size, group_in, self.out_channels)         # (*K, C/G, F)

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.spec.out_size

    @property
    def padded_size(self) -> tuple[int, ...]:
        return self.spec.padded_size

    @property
    def stride_arg(self):
        """The stride in its simplest form: one int when equal on every axis, else a tuple."""
        return _simplest(self.stride)

    @property
    def dilation_arg(self):
        return _simplest(self.dilation)

    @property
    def padding_arg(self):
        """One int, one int per axis, or one (lo, hi) pair per axis: the simplest that fits."""
        if all(lo == hi for lo, hi in self.pads):
            return _simplest(tuple(lo for lo, _ in self.pads))
        return self.pads

    @property
    def remainders(self) -> tuple[int, ...]:
        """Rows of the padded input after the last window, per axis (never read)."""
        return tuple((sp - effective_kernel(k, d)) % s for sp, k, d, s in
                     zip(self.padded_size, self.kernel_size, self.dilation, self.stride))

    @property
    def tags(self) -> tuple[str, ...]:
        """The features of this case, in `TAGS` order."""
        present = {tag for tag, test in _TAG_TESTS.items() if test(self)}
        return tuple(tag for tag in TAGS if tag in present)

    @property
    def size(self) -> int:
        """Elements of x plus w: the measure that shrinking makes smaller."""
        return math.prod(self.x_shape) + math.prod(self.w_shape)

    def describe(self, layout: Layout | None = None) -> str:
        """One line: shapes (in `layout`, default channels_last) and the arguments."""
        x, w = self.x_shape, self.w_shape
        if layout is not None:
            x = tuple(x[i] for i in layout.perm("x", self.rank))
            w = tuple(w[i] for i in layout.perm("w", self.rank))
        parts = [f"x {x}", f"w {w}", f"stride={self.stride_arg!r}",
                 f"padding={self.padding_arg!r}"]
        if any(d > 1 for d in self.dilation):
            parts.append(f"dilation={self.dilation_arg!r}")
        if self.groups > 1:
            parts.append(f"groups={self.groups}")
        return ", ".join(parts)

    def with_(self, **changes) -> Case:
        """A copy with some fields changed."""
        return replace(self, **changes)


def _simplest(values: tuple[int, ...]):
    return values[0] if len(set(values)) == 1 else values


_TAG_TESTS = {
    "padding 0": lambda c: all(lo == hi == 0 for lo, hi in c.pads),
    "padding > 0": lambda c: any(lo or hi for lo, hi in c.pads),
    "stride > 1": lambda c: max(c.stride) > 1,
    "remainder": lambda c: any(c.remainders),
    "non-square kernel": lambda c: len(set(c.kernel_size)) > 1,
    "non-square input": lambda c: len(set(c.in_size)) > 1,
    "per-axis stride": lambda c: len(set(c.stride)) > 1,
    "per-axis padding": lambda c: len({lo + hi for lo, hi in c.pads}) > 1,
    "asymmetric padding": lambda c: any(lo != hi for lo, hi in c.pads),
    "even kernel": lambda c: any(k % 2 == 0 for k in c.kernel_size),
    "1x1 kernel": lambda c: max(c.kernel_size) == 1,
    "output size 1": lambda c: min(c.out_size) == 1,
    "padding > kernel // 2": lambda c: any(
        max(p) > effective_kernel(k, d) // 2
        for p, k, d in zip(c.pads, c.kernel_size, c.dilation)),
    "dilation": lambda c: max(c.dilation) > 1,
    "groups": lambda c: c.groups > 1,
    "batch 1": lambda c: c.batch == 1,
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


def _expand(value, rank: int) -> tuple:
    """A 2-D per-axis recipe value as `rank` axes: rank 1 keeps the last, rank 3 repeats the first."""
    pair = value if isinstance(value, tuple) else (value, value)
    if rank == 1:
        return (pair[1],)
    return (pair[0],) * (rank - 1) + (pair[1],)


def _padding_pairs(padding, rank: int) -> tuple[tuple[int, int], ...]:
    if isinstance(padding, tuple) and isinstance(padding[0], tuple):
        return _expand(padding, rank)
    return tuple((p, p) for p in _expand(padding, rank))


def _recipe_case(recipe, rank: int) -> Case:
    s, k, stride, padding, dilation, groups, (n, c, f) = recipe
    return Case(n, c, f, _expand(s, rank), _expand(k, rank), _expand(stride, rank),
                _padding_pairs(padding, rank), _expand(dilation, rank), groups)


@dataclass(frozen=True)
class SweepOptions:
    """Which configurations to check: leave out what the code under test does not support.

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

    def __post_init__(self) -> None:
        _check_int(self.rank, "rank", 1, 3)
        _check_int(self.max_stride, "max_stride", 1, None)
        if isinstance(self.padding, str) or not isinstance(self.padding, (tuple, list)):
            raise TypeError(f"`padding` must be a tuple of padding kinds from {PADDING_KINDS}; "
                            f"got {self.padding!r}")
        unknown = [p for p in self.padding if p not in PADDING_KINDS]
        if unknown or not self.padding:
            raise ValueError(f"`padding` must be a non-empty tuple of kinds from "
                             f"{PADDING_KINDS}; got {tuple(self.padding)!r}")
        object.__setattr__(self, "padding", tuple(self.padding))
        for name in ("square_only", "per_axis", "dilation", "groups"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}")

    def skip_reason(self, case: Case) -> str | None:
        """Why `case` is left out under these options, or None when it is checked."""
        tags = set(case.tags)
        reasons = (
            (max(case.stride) > self.max_stride, f"stride > {self.max_stride}"),
            (_padding_kind(case) not in self.padding, f"{_padding_kind(case)} padding"),
            (self.square_only and bool(tags & {"non-square kernel", "non-square input"}),
             "non-square"),
            (not self.per_axis and bool(tags & _PER_AXIS_TAGS), "per-axis values"),
            (not self.dilation and "dilation" in tags, "dilation"),
            (not self.groups and "groups" in tags, "groups"),
        )
        return next((text for hit, text in reasons if hit), None)

    def cases(self) -> list[Case]:
        """The checked cases, easy to hard, without duplicates."""
        return [c for c in all_cases(self.rank) if self.skip_reason(c) is None]

    def skipped(self) -> dict[str, int]:
        """How many cases each reason leaves out: {"dilation": 3, ...}, in sweep order."""
        counts: dict[str, int] = {}
        for case in all_cases(self.rank):
            reason = self.skip_reason(case)
            if reason is not None:
                counts[reason] = counts.get(reason, 0) + 1
        return counts


_PER_AXIS_TAGS = {"per-axis stride", "per-axis padding", "asymmetric padding"}


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


def all_cases(rank: int = 2) -> list[Case]:
    """Every case of the sweep for `rank` spatial dimensions, easy to hard, deduplicated.

    Examples
    --------
    >>> cases = all_cases(2)
    >>> cases[0].describe()
    'x (2, 5, 5, 3), w (3, 3, 3, 4), stride=1, padding=0'
    """
    out: list[Case] = []
    for recipe in _RECIPES:
        case = _recipe_case(recipe, rank)
        if case not in out:
            out.append(case)
    return out
