"""Where an output is wrong, in words: "only in the last row and the last column: ...".

Given the boolean mask of wrong elements of one output (canonical layout), these functions
reduce it to the spatial positions, channels and batch items that are wrong, describe the
spatial part by its shape (whole rows and columns, a band along the edges, scattered), and name
the region it lies in when that region means something: input pixels that no window reads (their
gradient must be 0), pixels within the padding distance of the edge, output positions whose
windows overlap the padding. A small ASCII map shows 1-D and 2-D masks.
"""

from __future__ import annotations

import itertools

import numpy as np

from npconv.spec import effective_kernel
from npconv.testing.cases import Case
from npconv.testing.layout import axis_nouns
from npconv.testing.pool_cases import PoolCase


def read_mask(case: Case | PoolCase) -> np.ndarray:
    """(*S,) True where some window reads the input pixel (ignoring zero padding)."""
    axes = []
    for s, k, st, d, (lo, _), p in zip(case.in_size, case.kernel_size, case.stride,
                                       case.dilation, case.pads, case.out_size):
        read = np.zeros(s, dtype=bool)
        taps = (np.arange(p)[:, None] * st + np.arange(k)[None, :] * d - lo).ravel()  # (P*K,)
        read[taps[(taps >= 0) & (taps < s)]] = True
        axes.append(read)
    return _outer_and(axes)


def padding_band(case: Case | PoolCase) -> np.ndarray:
    """(*S,) True for input pixels within the padding distance of a padded edge."""
    axes = []
    for s, (lo, hi) in zip(case.in_size, case.pads):
        i = np.arange(s)
        axes.append((i < lo) | (i >= s - hi))
    return _outer_or(axes)


def overlaps_padding(case: Case | PoolCase) -> np.ndarray:
    """(*P,) True for output positions whose window reads some padding."""
    axes = []
    for s, k, st, d, (lo, _), p in zip(case.in_size, case.kernel_size, case.stride,
                                       case.dilation, case.pads, case.out_size):
        start = np.arange(p) * st - lo
        axes.append((start < 0) | (start + effective_kernel(k, d) > s))
    return _outer_or(axes)


def _outer_and(axes: list[np.ndarray]) -> np.ndarray:
    out = np.ones([len(a) for a in axes], dtype=bool)
    for i, a in enumerate(axes):
        out &= a.reshape([-1 if j == i else 1 for j in range(len(axes))])
    return out


def _outer_or(axes: list[np.ndarray]) -> np.ndarray:
    out = np.zeros([len(a) for a in axes], dtype=bool)
    for i, a in enumerate(axes):
        out |= a.reshape([-1 if j == i else 1 for j in range(len(axes))])
    return out


def index_phrase(indices: list[int], size: int, noun: str) -> str:
    """"the last row", "the first 2 columns", "the first and last rows", "rows 0-2, 5".

    Examples
    --------
    >>> index_phrase([7], 8, "row"), index_phrase([0, 1], 8, "column")
    ('the last row', 'the first 2 columns')
    >>> index_phrase([0, 7], 8, "row"), index_phrase([0, 1, 2, 5], 8, "row")
    ('the first and last rows', 'rows 0-2, 5')
    """
    n = len(indices)
    plural = noun + "s"
    if indices == list(range(size - n, size)):
        return f"the last {noun}" if n == 1 else f"the last {n} {plural}"
    if indices == list(range(n)):
        return f"the first {noun}" if n == 1 else f"the first {n} {plural}"
    if indices == [0, size - 1]:
        return f"the first and last {plural}"
    return f"{noun if n == 1 else plural} {ranges(indices)}"


def ranges(indices) -> str:
    """[0, 1, 2, 5] -> "0-2, 5"."""
    parts = []
    for _, group in itertools.groupby(enumerate(indices), lambda t: t[1] - t[0]):
        run = [v for _, v in group]
        parts.append(str(run[0]) if len(run) == 1 else f"{run[0]}-{run[-1]}")
    return ", ".join(parts)


def spatial_phrase(mask: np.ndarray, nouns: tuple[str, ...]) -> str:
    """Describe a spatial mask (not all True, not all False) by its shape."""
    slabs = [[i for i in range(n) if np.take(mask, i, axis=a).all()]
             for a, n in enumerate(mask.shape)]
    union = _outer_or([np.isin(np.arange(n), s) for n, s in zip(mask.shape, slabs)])
    if union.any() and (union == mask).all():
        parts = [index_phrase(s, n, noun) for s, n, noun in zip(slabs, mask.shape, nouns) if s]
        return "only in " + " and ".join(parts)
    hit = [sorted(set(np.nonzero(mask.any(axis=tuple(b for b in range(mask.ndim) if b != a)))[0]))
           for a in range(mask.ndim)]
    spans = ", ".join(f"{noun}{'s' if len(h) > 1 else ''} {ranges(h)}"
                      for h, noun in zip(hit, nouns))
    edge = _edge_distance(mask)
    where = f"within {edge} of the edge" if edge is not None else spans
    return f"at {int(mask.sum())} of {mask.size} positions ({where})"


def _edge_distance(mask: np.ndarray) -> int | None:
    """Smallest e with every True pixel within e of the edge, when e is a narrow band."""
    idx = np.argwhere(mask)                                       # (n, rank)
    dist = np.minimum(idx, np.array(mask.shape) - 1 - idx).min(axis=1)
    e = int(dist.max()) + 1
    return e if 2 * e < min(mask.shape) else None


def _region_reason(mask: np.ndarray, name: str, case: Case | PoolCase) -> str:
    """Why the wrong positions matter, when they all lie in a meaningful region."""
    nouns = axis_nouns(case.rank)
    if case.transposed:
        return ""
    if name == "dx" and not (mask & read_mask(case)).any():
        tail = any(r for r in case.remainders)
        what = f"the remainder {nouns[0]}s/{nouns[-1]}s" if tail else "the pixels"
        if case.rank == 1:
            what = "the remainder positions" if tail else "the positions"
        return f": {what} the forward never reads (their gradient must be 0)"
    if name == "dx" and case.kind == "conv" and not (mask & ~padding_band(case)).any():
        return ": pixels within the padding distance of the edge"
    if name == "y" and not (mask & ~overlaps_padding(case)).any():
        return ": output positions whose windows overlap the padding"
    return ""


def describe(bad: np.ndarray, name: str, case: Case | PoolCase) -> str:
    """One sentence on where `bad` (canonical mask of output `name`) is True.

    Examples
    --------
    >>> import numpy as np
    >>> case = Case(1, 1, 1, (8, 8), (3, 3), (2, 2), ((0, 0), (0, 0)), (1, 1))
    >>> bad = np.zeros((1, 8, 8, 1), dtype=bool); bad[:, 7, :] = bad[:, :, 7] = True
    >>> describe(bad, "dx", case).split(": ")[0]
    'only in the last row and the last column'
    """
    if bad.all():
        return "everywhere"
    if name == "db":
        return f"in filters {ranges(np.nonzero(bad)[0].tolist())} of {bad.size}"
    spatial_axes, channel_axis, other = _axes(name, case.rank)
    spatial = np.asarray(bad.any(axis=tuple(a for a in range(bad.ndim)
                                            if a not in spatial_axes)))
    parts = []
    if not spatial.all():
        nouns = axis_nouns(case.rank)
        if name == "dw":
            nouns = tuple(f"kernel {n}" for n in nouns)
        parts.append(spatial_phrase(spatial, nouns) + _region_reason(spatial, name, case))
    parts += _channel_phrases(bad, name, case, channel_axis, other)
    return "; ".join(parts) if parts else "everywhere"


def _axes(name: str, rank: int):
    """(spatial axes, channel axis, batch-or-other axis) of a canonical output."""
    if name == "dw":
        return tuple(range(rank)), rank + 1, rank       # (*K, C/G, F): F, then C/G
    return tuple(range(1, rank + 1)), rank + 1, 0       # (N, *S, C)


def _channel_phrases(bad, name: str, case: Case | PoolCase, channel_axis: int,
                     other: int) -> list[str]:
    out = []
    filters = name == "dw" or (name == "y" and case.kind == "conv")
    for axis, noun in ((channel_axis, "filters" if filters else "channels"),
                       (other, "input channels" if name == "dw" else "batch items")):
        hit = bad.any(axis=tuple(a for a in range(bad.ndim) if a != axis))
        if not hit.all():
            out.append(f"only {noun} {ranges(np.nonzero(hit)[0].tolist())} of {hit.size}"
                       + _group_note(hit, case, noun))
    return out


def _group_note(hit: np.ndarray, case: Case | PoolCase, noun: str) -> str:
    groups = getattr(case, "groups", 1)
    if groups == 1 or noun not in ("filters", "channels"):
        return ""
    per = hit.size // groups
    hit_groups = sorted({int(i) // per for i in np.nonzero(hit)[0]})
    whole = all(hit[g * per:(g + 1) * per].all() for g in hit_groups)
    return f" (group {ranges(hit_groups)} of {groups})" if whole else ""


def ascii_map(mask: np.ndarray, max_size: int = 16) -> list[str]:
    """Rows of "X" (wrong) and "." (right) for a 1-D or 2-D mask; [] when too big or N-d.

    Examples
    --------
    >>> import numpy as np
    >>> ascii_map(np.eye(2, dtype=bool))
    ['X .', '. X']
    """
    if mask.ndim > 2 or max(mask.shape) > max_size:
        return []
    rows = mask.reshape(1, -1) if mask.ndim == 1 else mask
    return [" ".join("X" if v else "." for v in row) for row in rows]
