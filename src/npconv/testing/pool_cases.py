"""The poolings `check_pool` runs: fixed configurations from easy to hard, random ones, tags.

A `PoolCase` is one small max- or average-pooling geometry with PyTorch's semantics (padding at
most half the dilated kernel, `ceil_mode`, `count_include_pad`, a max-pool gradient that goes
to the first maximum of a window). The fixed sweep starts with what hand-written pooling layers
are usually tested on, windows that tile the input (stride == kernel size), then goes where
they break: overlapping windows (stride < kernel size), gaps, padding, a partial last window
(`ceil_mode`), dilation, ties between maxima (inputs drawn from a few integers), divisors with
and without the padding. Tags and `PoolOptions.vary` work as for `Case` (see `cases`).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from functools import cached_property

import numpy as np

import npconv
from npconv.spec import effective_kernel, out_size
from npconv.testing.cases import (
    INT_ARG_ORDER,
    Sweep,
    _check_int,
    _minus,
    _replaced,
    _simplest,
    _size,
    _unique,
    nearest_variation,
    tuple_reason,
)
from npconv.testing.layout import Layout

POOL_OPS = ("max", "avg")

POOL_TAGS = (
    "stride == kernel",
    "overlapping windows",
    "gaps between windows",
    "padding 0",
    "padding > 0",
    "ceil_mode",
    "remainder",
    "non-square kernel",
    "1x1 kernel",
    "non-square input",
    "per-axis stride",
    "per-axis padding",
    "dilation",
    "ties",
    "padding excluded",
    "batch 1",
    "batch > 1",
    "one channel",
)

POOL_TAG_TEXT = {
    "stride == kernel": "windows that tile the input (stride == kernel size)",
    "overlapping windows": "overlapping windows (stride < kernel size)",
    "gaps between windows": "gaps between windows (stride > kernel size)",
    "padding 0": "padding 0",
    "padding > 0": "padding > 0",
    "ceil_mode": "a partial last window (ceil_mode=True)",
    "remainder": "remainder rows that no window reads",
    "non-square kernel": "a non-square kernel",
    "1x1 kernel": "a 1x1 window",
    "non-square input": "a non-square input",
    "per-axis stride": "a different stride per axis",
    "per-axis padding": "a different padding per axis",
    "dilation": "dilation > 1",
    "ties": "tied maxima in a window",
    "padding excluded": "count_include_pad=False",
    "batch 1": "batch size 1",
    "batch > 1": "batch size > 1",
    "one channel": "one channel",
}

_WINDOW_TAGS = {"stride == kernel", "overlapping windows", "gaps between windows"}

POOL_RELATED = {
    **{t: _WINDOW_TAGS - {t} for t in _WINDOW_TAGS},
    "padding 0": {"padding > 0", "padding excluded"},
    "padding > 0": {"padding 0", "padding excluded"},
    "ceil_mode": {"remainder", "padding excluded"},
    "remainder": {"ceil_mode"},
    "non-square kernel": _WINDOW_TAGS,
    "1x1 kernel": _WINDOW_TAGS | {"non-square kernel"},
    "per-axis stride": _WINDOW_TAGS,
    "batch 1": {"batch > 1"},
    "batch > 1": {"batch 1"},
}


@dataclass(frozen=True)
class PoolCase:
    """One pooling geometry, channels_last: x (N, *S, C) -> y (N, *P, C).

    Examples
    --------
    >>> case = PoolCase("max", 2, 3, (5, 5), (3, 3), (2, 2), ((1, 1), (1, 1)), (1, 1))
    >>> case.out_size, case.tags
    ((3, 3), ('overlapping windows', 'padding > 0', 'batch > 1'))
    """

    op: str
    batch: int
    channels: int
    in_size: tuple[int, ...]
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    pads: tuple[tuple[int, int], ...]
    dilation: tuple[int, ...]
    ceil_mode: bool = False
    count_include_pad: bool = True
    ties: bool = False

    kind = "pool"
    transposed = False

    @cached_property
    def spec(self) -> npconv.PoolSpec:
        """npconv's resolved geometry (raises ValueError for an impossible case)."""
        return npconv.pool_spec(self.x_shape, self.kernel_size, stride=self.stride,
                                padding=self.pads, dilation=self.dilation,
                                ceil_mode=self.ceil_mode)

    @property
    def rank(self) -> int:
        return len(self.in_size)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.in_size, self.channels)              # (N, *S, C)

    @property
    def y_shape(self) -> tuple[int, ...]:
        return (self.batch, *self.out_size, self.channels)             # (N, *P, C)

    @property
    def out_channels(self) -> int:
        return self.channels

    @property
    def out_size(self) -> tuple[int, ...]:
        return self.spec.out_size

    @property
    def floor_size(self) -> tuple[int, ...]:
        """The output size with ceil_mode=False (0 where no whole window fits)."""
        return tuple(max(0, out_size(s, k, st, d, lo, hi)) for s, k, st, d, (lo, hi) in
                     zip(self.in_size, self.kernel_size, self.stride, self.dilation, self.pads))

    @property
    def effective_kernel(self) -> tuple[int, ...]:
        return tuple(effective_kernel(k, d) for k, d in zip(self.kernel_size, self.dilation))

    @property
    def remainders(self) -> tuple[int, ...]:
        """Rows after the last window that no window reads, per axis (0 where ceil_mode adds
        a partial window)."""
        return tuple(0 if p > f else (s + lo + hi - e) % st for s, (lo, hi), e, st, p, f in
                     zip(self.in_size, self.pads, self.effective_kernel, self.stride,
                         self.out_size, self.floor_size))

    def tie_data(self) -> np.ndarray:
        """x (N, *S, C) drawn from {0, 1, 2}, so that windows have tied maxima; it depends on
        the case only (not on the check's seed), so that the "ties" tag can look at it."""
        rng = np.random.default_rng([7, *self.x_shape, *self.kernel_size, *self.stride,
                                     *(p for pair in self.pads for p in pair), *self.dilation,
                                     self.ceil_mode])
        return rng.integers(0, 3, self.x_shape).astype(float)       # (N, *S, C)

    @cached_property
    def has_tied_maxima(self) -> bool:
        """Whether some window of `tie_data` has its maximum at two taps or more."""
        if not self.ties:
            return False
        cols = Windows.of(self).gather(self.tie_data(), -np.inf)     # (N, nP, nK, C)
        return bool(((cols == cols.max(axis=2, keepdims=True)).sum(axis=2) > 1).any())

    def arguments(self) -> dict[str, object]:
        """The hyperparameters a user's code may ask for, by canonical name."""
        k, stride = _simplest(self.kernel_size), _simplest(self.stride)
        padding = _padding_arg(self.pads)
        values = {"kernel_size": k, "stride": stride, "padding": padding,
                  "dilation": _simplest(self.dilation), "ceil_mode": self.ceil_mode,
                  "count_include_pad": self.count_include_pad,
                  "kernel_h": self.kernel_size[0], "kernel_w": self.kernel_size[-1]}
        values["param"] = {"pool_height": self.kernel_size[0],
                           "pool_width": self.kernel_size[-1], "stride": stride,
                           "pad": padding, "padding": padding, "kernel_size": k}
        return values

    def tuple_args(self) -> set[str]:
        """Arguments passed as a tuple in this case (one int would not do)."""
        args = self.arguments()
        return {n for n in ("kernel_size", "stride", "padding", "dilation")
                if isinstance(args[n], tuple)}

    @cached_property
    def tags(self) -> tuple[str, ...]:
        present = {tag for tag, test in _POOL_TAG_TESTS.items() if test(self)}
        return tuple(tag for tag in POOL_TAGS if tag in present)

    @property
    def size(self) -> int:
        return math.prod(self.x_shape)

    @property
    def complexity(self) -> tuple[int, int]:
        extra = sum(self.kernel_size) + sum(self.stride) + sum(map(sum, self.pads)) + \
            sum(self.dilation) + self.ceil_mode
        return self.size, extra

    def describe(self, layout: Layout | None = None) -> str:
        x = self.x_shape
        if layout is not None:
            x = tuple(x[i] for i in layout.perm("x", self.rank))
        parts = [f"x {x}", f"kernel_size={_simplest(self.kernel_size)!r}",
                 f"stride={_simplest(self.stride)!r}", f"padding={_padding_arg(self.pads)!r}"]
        if any(d > 1 for d in self.dilation):
            parts.append(f"dilation={_simplest(self.dilation)!r}")
        if self.ceil_mode:
            parts.append("ceil_mode=True")
        if self.op == "avg" and not self.count_include_pad:
            parts.append("count_include_pad=False")
        if self.ties:
            parts.append("x with ties")
        return ", ".join(parts)

    def columns(self) -> dict[str, str]:
        return {"input": _size(self.in_size), "kernel": _size(self.kernel_size),
                "stride": str(_simplest(self.stride)), "padding": str(_padding_arg(self.pads)),
                "dil": str(_simplest(self.dilation)), "ceil": "yes" if self.ceil_mode else "no",
                "incl pad": "yes" if self.count_include_pad else "no",
                "ties": "yes" if self.ties else "no", "N": str(self.batch),
                "C": str(self.channels)}

    def with_(self, **changes) -> PoolCase:
        return replace(self, **changes)

    def smaller(self) -> Iterator[PoolCase]:
        """Candidates one step smaller or simpler than this case (some may be invalid)."""
        yield self.with_(batch=1)
        yield self.with_(channels=1)
        yield self.with_(in_size=tuple(s - 1 for s in self.in_size))
        for name in ("kernel_size", "stride", "dilation"):
            yield self.with_(**{name: tuple(max(1, v - 1) for v in getattr(self, name))})
        yield self.with_(pads=tuple((max(0, lo - 1), max(0, hi - 1)) for lo, hi in self.pads))
        for a in range(self.rank):
            yield self.with_(in_size=_minus(self.in_size, a))
            yield self.with_(kernel_size=_minus(self.kernel_size, a))
            yield self.with_(stride=_minus(self.stride, a))
            yield self.with_(dilation=_minus(self.dilation, a))
            lo, hi = self.pads[a]
            if lo and hi:
                yield self.with_(pads=_replaced(self.pads, a, (lo - 1, hi - 1)))
        if self.ceil_mode:
            yield self.with_(ceil_mode=False)

    def valid(self) -> bool:
        try:
            _ = self.spec
        except ValueError:
            return False
        return self.op == "max" or max(self.dilation) == 1


@dataclass(frozen=True)
class Windows:
    """Which input pixel every tap of every window of a `PoolCase` reads (index arrays)."""

    taps: np.ndarray          # (prod(P), prod(K)) flat index into prod(S); -1 outside the input
    padded: np.ndarray        # (prod(P), prod(K)) True inside the padded input [-lo, S + hi)
    in_count: int             # prod(S)

    @classmethod
    def of(cls, case) -> Windows:
        rank, size = case.rank, case.in_size
        flat = np.zeros((1,) * 2 * rank, dtype=np.intp)                  # broadcasts up
        inside = np.ones((1,) * 2 * rank, dtype=bool)
        padded = np.ones((1,) * 2 * rank, dtype=bool)
        for a, (s, k, st, d, (lo, hi), p) in enumerate(zip(
                size, case.kernel_size, case.stride, case.dilation, case.pads, case.out_size)):
            shape = [1] * 2 * rank
            shape[a], shape[rank + a] = p, k
            t = (np.arange(p)[:, None] * st + np.arange(k)[None, :] * d - lo).reshape(shape)
            flat = flat * s + np.clip(t, 0, s - 1)                       # (*P, *K) eventually
            inside = inside & (t >= 0) & (t < s)
            padded = padded & (t >= -lo) & (t < s + hi)
        n_p, n_k = int(np.prod(case.out_size)), int(np.prod(case.kernel_size))
        taps = np.where(inside, flat, -1).reshape(n_p, n_k)              # (nP, nK)
        return cls(taps, np.broadcast_to(padded, inside.shape).reshape(n_p, n_k),
                   int(np.prod(size)))

    def gather(self, x: np.ndarray, fill: float) -> np.ndarray:
        """x (N, *S, C) -> every window's taps (N, nP, nK, C), `fill` outside the input."""
        xf = x.reshape(x.shape[0], -1, x.shape[-1])                      # (N, prod(S), C)
        cols = xf[:, np.maximum(self.taps, 0)]                           # (N, nP, nK, C)
        return np.where((self.taps >= 0)[None, :, :, None], cols, fill)

    def scatter(self, contrib: np.ndarray, x_shape: tuple[int, ...]) -> np.ndarray:
        """Add every tap's contribution (N, nP, nK, C) to the pixel it reads: (N, *S, C)."""
        dx = np.zeros((x_shape[0], self.in_count, x_shape[-1]))          # (N, prod(S), C)
        for k in range(self.taps.shape[1]):
            ok = self.taps[:, k] >= 0
            np.add.at(dx, (slice(None), self.taps[ok, k]),  # type: ignore[arg-type]
                      contrib[:, ok, k])
        return dx.reshape(x_shape)

    def last_writer(self) -> np.ndarray:
        """(prod(S),) the last window, in raster order, that covers each pixel (-1: none)."""
        last = np.full(self.in_count, -1)
        order = np.arange(self.taps.shape[0])
        for k in range(self.taps.shape[1]):
            ok = self.taps[:, k] >= 0
            np.maximum.at(last, self.taps[ok, k], order[ok])
        return last



POOL_COLUMNS = ("input", "kernel", "stride", "padding", "dil", "ceil", "incl pad", "ties", "N",
                "C")
POOL_COLUMN_DEFAULTS = {"dil": "1", "ceil": "no", "incl pad": "yes", "ties": "no"}


def _padding_arg(pads):
    if all(lo == hi for lo, hi in pads):
        return _simplest(tuple(lo for lo, _ in pads))
    return pads


_POOL_TAG_TESTS = {
    "stride == kernel": lambda c: c.stride == c.effective_kernel,
    "overlapping windows": lambda c: any(s < e and p > 1 for s, e, p in
                                         zip(c.stride, c.effective_kernel, c.out_size)),
    "gaps between windows": lambda c: any(s > e and p > 1 for s, e, p in
                                          zip(c.stride, c.effective_kernel, c.out_size)),
    "padding 0": lambda c: all(lo == hi == 0 for lo, hi in c.pads),
    "padding > 0": lambda c: any(lo or hi for lo, hi in c.pads),
    "ceil_mode": lambda c: c.out_size != c.floor_size,
    "remainder": lambda c: any(c.remainders),
    "non-square kernel": lambda c: len(set(c.kernel_size)) > 1,
    "1x1 kernel": lambda c: max(c.kernel_size) == 1,
    "non-square input": lambda c: len(set(c.in_size)) > 1,
    "per-axis stride": lambda c: len(set(c.stride)) > 1,
    "per-axis padding": lambda c: len(set(c.pads)) > 1,
    "dilation": lambda c: max(c.dilation) > 1,
    "ties": lambda c: c.op == "max" and c.ties and c.has_tied_maxima,
    "padding excluded": lambda c: c.op == "avg" and not c.count_include_pad and (
        any(map(any, c.pads)) or c.out_size != c.floor_size),
    "batch 1": lambda c: c.batch == 1,
    "batch > 1": lambda c: c.batch > 1,
    "one channel": lambda c: c.channels == 1,
}

# 2-D recipes: (input, kernel, stride, padding, dilation, ceil_mode, count_include_pad, ties,
# (N, C)); dilation only for max, count_include_pad=False only for avg.
_POOL_RECIPES = (
    ((4, 4), 2, 2, 0, 1, False, True, False, (2, 3)),     # windows tile the input
    ((5, 5), 2, 2, 0, 1, False, True, False, (2, 3)),     # remainder
    ((4, 4), 2, 2, 0, 1, False, True, True, (2, 3)),      # ties
    ((5, 5), 3, 1, 0, 1, False, True, False, (2, 3)),     # overlapping windows
    ((7, 7), 3, 2, 0, 1, False, True, False, (2, 3)),
    ((5, 5), 3, 1, 0, 1, False, True, True, (2, 3)),      # overlapping windows and ties
    ((7, 7), 2, 3, 0, 1, False, True, False, (2, 3)),     # gaps between windows
    ((5, 5), 3, 2, 1, 1, False, True, False, (2, 3)),     # padding
    ((6, 6), 3, 2, 1, 1, False, True, False, (2, 3)),
    ((4, 4), 2, 2, 1, 1, False, True, False, (2, 3)),
    ((5, 5), 2, 2, 0, 1, True, True, False, (2, 3)),      # ceil_mode: a partial window
    ((6, 6), 3, 2, 1, 1, True, True, False, (2, 3)),
    ((5, 7), 3, 2, 0, 1, False, True, False, (2, 3)),     # non-square input
    ((6, 6), (2, 3), (2, 1), 0, 1, False, True, False, (2, 3)),   # non-square kernel
    ((6, 7), (3, 2), 2, (1, 0), 1, False, True, False, (2, 3)),
    ((7, 7), 3, 1, 0, 2, False, True, False, (2, 3)),     # dilation
    ((8, 8), 2, 2, 1, 2, False, True, False, (2, 3)),
    ((5, 5), 3, 2, 1, 1, False, False, False, (2, 3)),    # padding left out of the divisor
    ((6, 6), 3, 2, 1, 1, True, False, False, (2, 3)),
    ((4, 4), 2, 2, 0, 1, False, True, False, (1, 1)),     # batch 1, one channel
    ((5, 5), 3, 2, 1, 1, False, True, False, (1, 1)),
)


def _expand(value, rank: int) -> tuple:
    pair = value if isinstance(value, tuple) else (value, value)
    return (pair[1],) if rank == 1 else (pair[0],) * (rank - 1) + (pair[1],)


def _recipe(op: str, recipe, rank: int) -> PoolCase:
    s, k, stride, pad, d, ceil, cip, ties, (n, c) = recipe
    pads = tuple((p, p) for p in _expand(pad, rank))
    return PoolCase(op, n, c, _expand(s, rank), _expand(k, rank), _expand(stride, rank), pads,
                    _expand(d, rank), ceil, cip if op == "avg" else True,
                    ties and op == "max")


@dataclass(frozen=True)
class PoolOptions(Sweep[PoolCase]):
    """Which poolings to check: leave out what the code under test does not support.

    Parameters
    ----------
    op : "max" or "avg"
    rank : int
        Spatial dimensions (1, 2 or 3).
    max_stride : int
        Largest stride checked.
    stride, padding, ceil_mode, dilation : bool
        False leaves out stride != kernel size, padding > 0, ceil_mode=True, dilation > 1.
    count_include_pad : tuple of bool
        The divisor conventions the average is checked with: (True,) for PyTorch's default
        (padding counted), (False,) for Keras' "same" pooling, both for code that takes the
        argument.
    int_only : frozenset of str
        Arguments the code takes as one int ("kernel_size", "stride", "padding", "dilation").

    Examples
    --------
    >>> len(PoolOptions(op="max").cases()) > len(PoolOptions(op="max", padding=False).cases())
    True
    """

    op: str = "max"
    rank: int = 2
    max_stride: int = 3
    stride: bool = True
    padding: bool = True
    ceil_mode: bool = True
    dilation: bool = True
    count_include_pad: tuple[bool, ...] = (True,)
    int_only: frozenset[str] = field(default_factory=frozenset)

    def __post_init__(self) -> None:
        if self.op not in POOL_OPS:
            raise ValueError(f"`op` must be one of {POOL_OPS}; got {self.op!r}")
        _check_int(self.rank, "rank", 1, 3)
        _check_int(self.max_stride, "max_stride", 1, None)
        for name in ("stride", "padding", "ceil_mode", "dilation"):
            if not isinstance(getattr(self, name), bool):
                raise TypeError(f"`{name}` must be True or False; got {getattr(self, name)!r}")
        cip = self.count_include_pad
        if not isinstance(cip, tuple) or not cip or not all(isinstance(v, bool) for v in cip):
            raise TypeError(f"`count_include_pad` must be a non-empty tuple of bools; got "
                            f"{cip!r}")
        object.__setattr__(self, "int_only", frozenset(self.int_only))

    def skip_reason(self, case: PoolCase) -> str | None:
        tags = set(case.tags)
        tuples = [a for a in INT_ARG_ORDER if a in case.tuple_args() & self.int_only]
        reasons = (
            (case.op != self.op, "another op"),
            (max(case.stride) > self.max_stride, f"stride > {self.max_stride}"),
            (not self.stride and case.stride != case.kernel_size, "stride != kernel size"),
            (not self.padding and "padding > 0" in tags, "padding"),
            (not self.ceil_mode and case.ceil_mode, "ceil_mode"),
            (not self.dilation and "dilation" in tags, "dilation"),
            (case.count_include_pad not in self.count_include_pad,
             f"count_include_pad={case.count_include_pad}"),
            (bool(tuples), tuple_reason(tuples[0]) if tuples else ""),
        )
        return next((text for hit, text in reasons if hit), None)

    def fixed_cases(self) -> list[PoolCase]:
        cases = [_recipe(self.op, r, self.rank) for r in _POOL_RECIPES]
        if len(self.count_include_pad) == 1:
            cases = [c.with_(count_include_pad=self.count_include_pad[0]) for c in cases]
        return _unique(c for c in cases if c.valid())

    def _draw(self, rng: np.random.Generator) -> PoolCase:
        rank = self.rank

        def free(name: str) -> bool:
            return name not in self.int_only and rng.random() < 0.4

        kernel = _axes(rng, rank, 1, 4, free("kernel_size"))
        stride = _axes(rng, rank, 1, self.max_stride, free("stride")) if self.stride \
            else kernel
        dilation = _axes(rng, rank, 1, 2, free("dilation")) \
            if self.op == "max" and self.dilation and rng.random() < 0.25 else (1,) * rank
        eff = [effective_kernel(k, d) for k, d in zip(kernel, dilation)]
        pads = ((0, 0),) * rank
        if self.padding and rng.random() < 0.5:
            p = _axes(rng, rank, 0, max(eff) // 2, free("padding"))
            pads = tuple((min(v, e // 2),) * 2 for v, e in zip(p, eff))
        ceil = self.ceil_mode and rng.random() < 0.3
        sizes = []
        for s, e, (lo, hi) in zip(stride, eff, pads):
            out, r = int(rng.integers(1, 5)), int(rng.integers(0, s))
            sizes.append(max(e, (out - 1) * s + e + r - lo - hi))
        cip = bool(rng.choice(self.count_include_pad))
        return PoolCase(self.op, int(rng.integers(1, 4)), int(rng.integers(1, 4)),
                        tuple(sizes), kernel, stride, pads, dilation, ceil, cip,
                        self.op == "max" and rng.random() < 0.3)

    def vary(self, case: PoolCase, tag: str, present: bool) -> PoolCase | None:
        """As `SweepOptions.vary`, for pooling tags."""
        found = nearest_variation(case, tag, present, _variations(case, tag, present),
                                  POOL_RELATED.get(tag, set()), self.skip_reason)
        return found if isinstance(found, PoolCase) else None


def _axes(rng, rank: int, low: int, high: int, per_axis: bool) -> tuple[int, ...]:
    if per_axis:
        return tuple(int(v) for v in rng.integers(low, high + 1, size=rank))
    return (int(rng.integers(low, high + 1)),) * rank


def _variations(case: PoolCase, tag: str, present: bool) -> Iterator[PoolCase]:
    for base in _POOL_CHANGES.get(tag, lambda c, on: ())(case, present):
        yield base
        for delta in (1, -1, 2, -2, 3):
            yield base.with_(in_size=tuple(max(1, s + delta) for s in base.in_size))
        for axis, delta in itertools.product(range(case.rank), (1, -1, 2)):
            yield base.with_(in_size=tuple(max(1, s + delta * (i == axis))
                                           for i, s in enumerate(base.in_size)))


def _all(values: tuple, value) -> tuple:
    return tuple(value for _ in values)


def _window_step(relation: str):
    """Stride relative to the (dilated) kernel: "==", "<" or ">"."""
    def change(c: PoolCase, on: bool) -> list[PoolCase]:
        eff = c.effective_kernel
        if relation == "==":
            steps = [eff] if on else [tuple(max(1, e - 1) for e in eff),
                                      tuple(e + 1 for e in eff)]
        elif relation == "<":
            steps = [tuple(max(1, e - 1) for e in eff)] if on else [eff]
        else:
            steps = [tuple(e + 1 for e in eff)] if on else [eff]
        return [c.with_(stride=s) for s in steps]
    return change


def _pool_padding(c: PoolCase, on: bool) -> list[PoolCase]:
    if not on:
        return [c.with_(pads=_all(c.pads, (0, 0)))]
    return [c.with_(pads=tuple((e // 2, e // 2) for e in c.effective_kernel)),
            c.with_(pads=tuple((min(1, e // 2),) * 2 for e in c.effective_kernel))]


def _pool_ceil(c: PoolCase, on: bool) -> list[PoolCase]:
    if not on:
        return [c.with_(ceil_mode=False)]
    return [c.with_(ceil_mode=True), c.with_(ceil_mode=True, in_size=tuple(
        s + 1 for s in c.in_size))]


def _pool_remainder(c: PoolCase, on: bool) -> list[PoolCase]:
    if not on:
        return [c.with_(in_size=tuple(s - r for s, r in zip(c.in_size, c.remainders)))]
    return [c.with_(in_size=tuple(s + 1 for s in c.in_size), ceil_mode=False)]


def _pool_kernel_shape(c: PoolCase, on: bool) -> list[PoolCase]:
    k = c.kernel_size
    if not on:
        return [c.with_(kernel_size=_all(k, k[0])), c.with_(kernel_size=_all(k, k[-1]))]
    return [c.with_(kernel_size=(*k[:-1], k[-1] + 1))]


def _pool_input_shape(c: PoolCase, on: bool) -> list[PoolCase]:
    s = c.in_size
    if not on:
        return [c.with_(in_size=_all(s, s[0])), c.with_(in_size=_all(s, s[-1]))]
    return [c.with_(in_size=(*s[:-1], s[-1] + d)) for d in (1, -1, 2)]


def _pool_stride_per_axis(c: PoolCase, on: bool) -> list[PoolCase]:
    if not on:
        return [c.with_(stride=_all(c.stride, c.stride[0]))]
    return [c.with_(stride=(*c.stride[:-1], c.stride[-1] % 2 + 1))]


_POOL_CHANGES = {
    "stride == kernel": _window_step("=="),
    "overlapping windows": _window_step("<"),
    "gaps between windows": _window_step(">"),
    "padding 0": lambda c, on: _pool_padding(c, not on),
    "padding > 0": _pool_padding,
    "ceil_mode": _pool_ceil,
    "remainder": _pool_remainder,
    "non-square kernel": _pool_kernel_shape,
    "non-square input": _pool_input_shape,
    "per-axis stride": _pool_stride_per_axis,
    "per-axis padding": lambda c, on: [c.with_(pads=_all(c.pads, c.pads[0]) if not on else
                                               (*c.pads[:-1], (c.pads[-1][0] ^ 1,) * 2))],
    "1x1 kernel": lambda c, on: [c.with_(kernel_size=_all(c.kernel_size, 1 if on else 2))],
    "dilation": lambda c, on: [c.with_(dilation=_all(c.dilation, 2 if on else 1))],
    "ties": lambda c, on: [c.with_(ties=on)],
    "padding excluded": lambda c, on: [c.with_(count_include_pad=not on)],
    "batch 1": lambda c, on: [c.with_(batch=1 if on else 2)],
    "batch > 1": lambda c, on: [c.with_(batch=2 if on else 1)],
    "one channel": lambda c, on: [c.with_(channels=1 if on else 2)],
}


def all_pool_cases(op: str = "max", rank: int = 2) -> list[PoolCase]:
    """Every case of the fixed pooling sweep for `op` and `rank`, PyTorch's defaults.

    Examples
    --------
    >>> all_pool_cases("max")[0].describe()
    'x (2, 4, 4, 3), kernel_size=2, stride=2, padding=0'
    """
    return PoolOptions(op=op, rank=rank).cases()
