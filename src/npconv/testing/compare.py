"""Compare one output of the code under test with npconv's: status, errors, worst element.

An `OutputCheck` records, for one of y, dx, dw, db of one configuration: whether it matches,
the maximum absolute error and the error relative to the largest expected value, the worst
element (index in the user's layout, got and expected values), and the wrong-element mask that
`locate` and `diagnosis` explain. Arrays are tested with

    |got - expected| <= atol + rtol * max|expected|

element-wise, one scale per output, so that an error is judged against the output's size and
not against an element that happens to be near zero.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from numpy.typing import ArrayLike

from npconv.testing.layout import Layout

KIND = {"y": "x", "dx": "x", "dy": "x", "x": "x", "dw": "w", "w": "w", "db": "b", "b": "b"}
STATUSES = ("ok", "wrong", "shape", "not finite", "missing", "type")


@dataclass(frozen=True)
class Opaque:
    """An output that is not an array of numbers, described in a few words."""

    text: str


def portable(raw):
    """A copy of a user's output that can cross processes: an ndarray, None, or `Opaque`.

    Examples
    --------
    >>> portable([[1.0, 2.0]]).shape, portable(None), portable("dx")
    ((1, 2), None, Opaque(text="a str ('dx')"))
    """
    if raw is None:
        return None
    try:
        a = np.array(raw)                         # a copy, detached from the code's memory
    except (TypeError, ValueError):               # ragged lists, odd objects
        a = None
    if a is None or not (np.issubdtype(a.dtype, np.number) or a.dtype == bool):
        text = repr(raw) if len(repr(raw)) <= 40 else repr(raw)[:37] + "..."
        return Opaque(f"a {type(raw).__name__} ({text})")
    return a


@dataclass(frozen=True)
class Tolerance:
    """|got - expected| <= atol + rtol * max|expected|, element-wise.

    Examples
    --------
    >>> import numpy as np
    >>> Tolerance().close(np.ones(3) + 1e-9, np.ones(3))
    True
    """

    rtol: float = 1e-5
    atol: float = 1e-6

    def __post_init__(self) -> None:
        for name in ("rtol", "atol"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise TypeError(f"`{name}` must be a float; got {value!r}")
            if not value >= 0:
                raise ValueError(f"`{name}` must be >= 0; got {value}")

    def bad(self, got: np.ndarray, expected: np.ndarray) -> np.ndarray:
        """Mask of the elements that differ by more than the tolerance (same shapes)."""
        scale = float(np.abs(expected).max(initial=0.0))
        return ~(np.abs(got - expected) <= self.atol + self.rtol * scale)

    def close(self, got: ArrayLike, expected: ArrayLike) -> bool:
        """Same shape and every element within tolerance."""
        got, expected = np.asarray(got, dtype=float), np.asarray(expected, dtype=float)
        return got.shape == expected.shape and not self.bad(got, expected).any()


@dataclass
class OutputCheck:
    """The verdict on one output (y, dx, dw or db) of one configuration."""

    name: str
    status: str                               # one of STATUSES
    shape: tuple[int, ...] | None             # what the user's code returned
    expected_shape: tuple[int, ...]           # in the user's layout
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    worst: tuple[int, ...] | None = None      # index in the user's layout
    got: float = float("nan")
    want: float = float("nan")
    where: str = ""                           # `locate.describe`
    causes: tuple[str, ...] = ()              # keys of the hypotheses that matched
    diagnosis: tuple[str, ...] = ()           # their explanations
    bad: np.ndarray | None = field(default=None, repr=False)   # canonical mask

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    def headline(self) -> str:
        """One line: "dx: shape (2, 0, 0, 3), expected (2, 5, 5, 3)", "dw: wrong at ..."."""
        if self.status == "ok":
            return f"{self.name}: ok (max abs error {self.max_abs:.1e})"
        if self.status == "missing":
            return f"{self.name}: not returned (and no attribute found)"
        if self.status == "shape":
            return f"{self.name}: shape {self.shape}, expected {self.expected_shape}"
        if self.status == "not finite":
            return f"{self.name}: contains NaN or inf ({self.where})"
        if self.status == "type":
            return f"{self.name}: not an array of numbers: {self.where}"
        idx = ", ".join(map(str, self.worst or ()))
        return (f"{self.name}: wrong {self.where}; max abs error {self.max_abs:.3g}, "
                f"max rel error {self.max_rel:.3g}, worst at {self.name}[{idx}]: "
                f"got {self.got:.6g}, expected {self.want:.6g}")

    def short(self) -> str:
        """A few words for the summary table."""
        if self.status == "shape":
            return f"{self.name} shape {self.shape}"
        if self.status == "wrong":
            return f"{self.name} {'wrong' if self.where == 'everywhere' else 'partly wrong'}"
        if self.status == "type":
            return f"{self.name} not an array"
        return f"{self.name} {self.status}"


def as_canonical(raw, name: str, expected: np.ndarray, layout: Layout):
    """The user's output as a canonical float64 array, or None when its shape is wrong.

    A bias gradient of any shape with F elements and size-1 other axes (such as the seed's
    (1, 1, 1, F)) counts as (F,).
    """
    kind = KIND[name]
    a = np.asarray(raw, dtype=np.float64)
    if kind == "b":                               # (F,), (1, 1, 1, F), (F, 1), ...
        return a.reshape(-1) if a.size == expected.size and max(a.shape, default=1) == \
            a.size else None
    user_shape = expected.transpose(layout.perm(kind, expected.ndim - 2)).shape
    return layout.from_user(kind, a) if a.shape == user_shape else None


def compare(name: str, raw, expected: np.ndarray, layout: Layout, tol: Tolerance):
    """(OutputCheck, canonical got or None) for one output; `expected` is canonical."""
    kind = KIND[name]
    rank = expected.ndim - 2 if kind != "b" else 0
    user_shape = expected.transpose(layout.perm(kind, rank)).shape
    if raw is None:
        return OutputCheck(name, "missing", None, user_shape), None
    if isinstance(raw, Opaque):
        return OutputCheck(name, "type", None, user_shape, where=raw.text), None
    try:
        got = as_canonical(raw, name, expected, layout)
    except (TypeError, ValueError):               # not convertible to a float array
        got = None
    shape = _shape_of(raw)
    if got is None:
        return OutputCheck(name, "shape", shape, user_shape), None
    bad = tol.bad(got, expected)
    err = np.abs(got - expected)
    if not np.isfinite(got).all():
        return OutputCheck(name, "not finite", shape, user_shape, bad=bad,
                           where=f"{int((~np.isfinite(got)).sum())} of {got.size} elements"), got
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
    scale = float(np.abs(expected).max(initial=0.0))
    check = OutputCheck(name, "wrong" if bad.any() else "ok", shape, user_shape,
                        max_abs=float(err.max(initial=0.0)),
                        max_rel=_relative(float(err.max(initial=0.0)), scale),
                        worst=layout.user_index(kind, tuple(int(i) for i in worst)),
                        got=float(got[worst]) + 0.0 if err.size else float("nan"),  # no -0
                        want=float(expected[worst]) + 0.0 if err.size else float("nan"),
                        bad=bad)
    return check, got


def _shape_of(raw) -> tuple[int, ...] | None:
    try:
        return tuple(np.shape(raw))
    except ValueError:                            # ragged nested lists
        return None


def _relative(err: float, scale: float) -> float:
    if err == 0:
        return 0.0
    return err / scale if scale else float("inf")
