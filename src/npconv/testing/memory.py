"""Memory tricks that expose reads outside an array: placements, poisoned memory, view checks.

A result must not depend on where its inputs lie in memory. The checker runs a configuration
with its inputs placed three ways (`place`):

- "plain": fresh C-contiguous arrays, the memory the code is about to allocate zero-filled
  beforehand (as fresh memory from the system is);
- "guarded": each input a view into the middle of a larger buffer of NaN, at an offset that
  varies with the configuration, and the memory the code is about to allocate filled with NaN
  beforehand (`poison_heap`: blocks of the sizes it is likely to ask for are filled and freed,
  so that the allocator hands the same memory back), what ``np.empty`` / ``np.empty_like``
  return too (`filled_empty`: the allocator may hand back a block the code itself just freed,
  the same on every run): a read past the end of an input, or of a buffer the code allocated
  and did not fill, then brings NaN into the result;
- "strided": each input a non-contiguous view (every other element of a NaN buffer) holding
  the same values: code that assumes C-contiguous memory (strides computed from the shape)
  reads the NaN between the elements.

Where the guarded result differs from the plain one, the code depends on memory outside its
arrays; where the strided one differs from the guarded one (same poisoned memory, other
layout), it depends on their layout. `ViewWatch` also checks every
``numpy.lib.stride_tricks.as_strided`` call made while the code runs: a view that reaches
outside the memory its array owns is reported with the file and line of the call, whether or
not the result happened to come out right, and is made over a copy of the array surrounded by
NaN (`padded_view`), so that what it reads outside is the same on every run; a view reaching
gigabytes away is left as asked (it usually crashes the process, which the child process
running the code turns into a finding).

Everything here runs in the process that runs the user's code (a child process by default).
"""

from __future__ import annotations

import ctypes
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import numpy as np

from npconv.testing.adapters import user_frame

try:
    from numpy.lib.array_utils import byte_bounds
except ImportError:                           # NumPy < 2
    byte_bounds = np.byte_bounds              # type: ignore[attr-defined]

PLACEMENTS = ("plain", "guarded", "strided")
GUARD = 64                                    # elements of NaN before and after a guarded array
PADDED_LIMIT = 1 << 26                        # bytes: larger out-of-bounds views are left alone
_POISON_COPIES = 2


def place(arrays: dict[str, np.ndarray], how: str, offset: int = 0) -> dict[str, np.ndarray]:
    """Copies of `arrays` (same values, shapes and dtypes) placed in memory `how`.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.arange(6.0).reshape(2, 3)
    >>> g = place({"x": x}, "guarded")["x"]
    >>> bool((g == x).all()), g.flags.c_contiguous, bool(np.isnan(g.base).any())
    (True, True, True)
    >>> place({"x": x}, "strided")["x"].flags.c_contiguous
    False
    """
    if how not in PLACEMENTS:
        raise ValueError(f"`how` must be one of {PLACEMENTS}; got {how!r}")
    return {name: _placed(a, how, offset) for name, a in arrays.items()}


def _placed(a: np.ndarray, how: str, offset: int) -> np.ndarray:
    if how == "plain":
        return np.array(a, order="C")
    if how == "guarded":
        start = GUARD + offset % 16
        buf = np.full(a.size + start + GUARD, np.nan, dtype=a.dtype)     # (size + guards,)
        view = buf[start:start + a.size].reshape(a.shape)                # a's shape, inside
        view[...] = a
        return view
    buf = np.full(2 * a.size + 1, np.nan, dtype=a.dtype)                 # (2 * size + 1,)
    view = buf[1::2][:a.size].reshape(a.shape) if a.ndim <= 1 else \
        buf[1:2 * a.size + 1].reshape(*a.shape[:-1], 2 * a.shape[-1])[..., ::2]
    view[...] = a                                                        # a's shape, gaps
    return view


def poison_heap(nbytes: int, value: float = np.nan) -> None:
    """Fill blocks of memory of the sizes code working on `nbytes`-byte arrays is likely to
    allocate with `value`, then free them, so that the next allocations reuse that memory."""
    sizes = {*_geometric(64, max(1 << 12, 4 * nbytes)), *(nbytes * m // 2 for m in (1, 2, 3, 4, 8))}
    blocks = [np.full(max(1, s // 8), value) for s in sorted(sizes)
              for _ in range(_POISON_COPIES)]
    del blocks


@contextmanager
def filled_empty(value: float, namespaces: list[dict]) -> Iterator[None]:
    """Within the block, ``numpy.empty`` and ``numpy.empty_like`` (and the names the code's
    `namespaces` bind to them) fill the float arrays they return with `value`: what the code
    leaves unwritten then holds `value` on every run, whatever the allocator hands back.

    >>> with filled_empty(np.nan, []):
    ...     bool(np.isnan(np.empty(3)).all())
    True
    """
    makers = (np.empty, np.empty_like)
    replaced = [(space, name, v) for space in [vars(np), *namespaces]
                for name, v in list(space.items()) if any(v is m for m in makers)]
    for space, name, make in replaced:
        space[name] = _filling(make, value)
    try:
        yield
    finally:
        for space, name, make in replaced:
            space[name] = make


def _filling(make: Callable, value: float) -> Callable:
    """`make` (np.empty or np.empty_like), its float and complex arrays filled with `value`."""
    def allocate(*args: Any, **kwargs: Any) -> Any:
        out = make(*args, **kwargs)
        if isinstance(out, np.ndarray) and out.dtype.kind in "fc":
            out.fill(value)
        return out
    return allocate


def _geometric(low: int, high: int) -> Iterator[int]:
    size = low
    while size <= high:
        yield size
        size *= 2


def _allocation(a: np.ndarray) -> tuple[int, int] | None:
    """(first, last + 1) byte address of the memory block that `a`'s data lies in, when an
    array owning it can be found through the `base` chain; None otherwise."""
    obj: Any = a
    for _ in range(64):
        if isinstance(obj, np.ndarray) and obj.flags.owndata:
            return byte_bounds(obj)
        obj = getattr(obj, "base", None)
        if obj is None:
            return None
    return None


@dataclass(frozen=True)
class Reach:
    """The bytes a view would read, [low, high), and the memory block of its array."""

    low: int
    high: int
    block: tuple[int, int]

    def __str__(self) -> str:
        parts = []
        if self.low < self.block[0]:
            parts.append(f"{self.block[0] - self.low} bytes before the start")
        if self.high > self.block[1]:
            parts.append(f"{self.high - self.block[1]} bytes past the end")
        size = self.block[1] - self.block[0]
        return f"reaches {' and '.join(parts)} of its array ({size} bytes)"


def overreach(a, shape, strides) -> Reach | None:
    """Where a view of `a` with `shape` and `strides` reaches outside the memory block that
    `a` lies in (None when it stays inside, or when that block is unknown).

    Examples
    --------
    >>> import numpy as np
    >>> a = np.zeros(10)
    >>> overreach(a, (3, 4), (24, 8)) is None
    True
    >>> str(overreach(a, (3, 4), (32, 8)))
    'reaches 16 bytes past the end of its array (80 bytes)'
    """
    a = np.asarray(a)
    shape = a.shape if shape is None else tuple(int(n) for n in shape)
    strides = a.strides if strides is None else tuple(int(s) for s in strides)
    if len(shape) != len(strides) or any(n <= 0 for n in shape):
        return None
    block = _allocation(a)
    if block is None:
        return None
    start = a.__array_interface__["data"][0]
    low = start + sum(min(0, (n - 1) * s) for n, s in zip(shape, strides))
    high = start + sum(max(0, (n - 1) * s) for n, s in zip(shape, strides)) + a.itemsize
    if low >= block[0] and high <= block[1]:
        return None
    return Reach(low, high, block)


def padded_view(a: np.ndarray, shape, strides, reach: Reach, make_view) -> np.ndarray:
    """The view of `a` with `shape` and `strides` (`make_view` is NumPy's as_strided) made over
    a copy of `a`'s memory block that NaN (for other dtypes, 0xFF bytes) surrounds: what lies
    outside the block reads the same on every run, and nothing outside it can be overwritten
    (the view is read-only)."""
    first, last = min(reach.low, reach.block[0]), max(reach.high, reach.block[1])
    nbytes = last - first
    if a.dtype.kind in "fc":
        items = -(-nbytes // a.itemsize) + 1
        buf = np.full(items, np.nan, dtype=a.dtype).view(np.uint8)      # (items * size,)
    else:
        buf = np.full(nbytes + a.itemsize, 0xFF, dtype=np.uint8)        # (nbytes + size,)
    base = buf.__array_interface__["data"][0]
    block = reach.block[1] - reach.block[0]
    ctypes.memmove(base + reach.block[0] - first, reach.block[0], block)
    offset = a.__array_interface__["data"][0] - first
    anchor = np.ndarray((1,), dtype=a.dtype, buffer=buf, offset=offset)  # a[0] in the copy
    return make_view(anchor, shape=shape, strides=strides, writeable=False)


class ViewWatch:
    """Checks every ``as_strided`` call made while installed; reports views that overreach.

    `install` replaces ``numpy.lib.stride_tricks.as_strided`` and every name bound to it in
    the given namespaces (the globals of the user's code, where ``from numpy.lib.stride_tricks
    import as_strided`` put it) by a checking wrapper; it is meant for the child process that
    runs user code and is never undone there.
    In the checker's own process use `watching`, which restores everything.
    """

    def __init__(self, report: Callable[[str], None]) -> None:
        import numpy.lib.stride_tricks as tricks

        self.report = report
        self.tricks = tricks
        self.original = tricks.as_strided

    def checked(self, x, shape=None, strides=None, subok=False, writeable=True):
        """``numpy.lib.stride_tricks.as_strided``, reporting a view outside x's memory and
        making it over a NaN-surrounded copy instead (`padded_view`)."""
        reach = overreach(x, shape, strides)
        if reach is None:
            return self.original(x, shape=shape, strides=strides, subok=subok,
                                 writeable=writeable)
        where = user_frame(traceback.extract_stack()[:-1])
        self.report(f"an as_strided view made at {where or 'an unknown place'} {reach}")
        if max(reach.high, reach.block[1]) - min(reach.low, reach.block[0]) > PADDED_LIMIT:
            return self.original(x, shape=shape, strides=strides, subok=subok,
                                 writeable=writeable)                # wild strides: as asked
        x = np.asarray(x)
        return padded_view(x, x.shape if shape is None else shape,
                           x.strides if strides is None else strides, reach, self.original)

    def install(self, namespaces: list[dict]) -> list[tuple[dict, str]]:
        """Put the checking wrapper in place; returns what was replaced, for `uninstall`."""
        replaced = []
        for space in [vars(self.tricks), *namespaces]:
            for name, value in list(space.items()):
                if value is self.original:
                    space[name] = self.checked
                    replaced.append((space, name))
        return replaced

    def uninstall(self, replaced: list[tuple[dict, str]]) -> None:
        for space, name in replaced:
            space[name] = self.original


@contextmanager
def watching(report: Callable[[str], None], namespaces: list[dict]) -> Iterator[None]:
    """`ViewWatch` installed for the duration of a block."""
    watch = ViewWatch(report)
    replaced = watch.install(namespaces)
    try:
        yield
    finally:
        watch.uninstall(replaced)
