"""Padding and window views on channels_last arrays (N, *S, C), and the padding's reverse.

- `fill_border` / `pad_adjoint`: write padding of any mode around an interior (`interior`),
  and send the gradient of the padded array back to the pixels the padding copied (a reflected
  pixel's gradient goes to the pixel it mirrors).
- `unfold`: the read-only view (N, *P, *K, C) of every window, built on `sliding_window_view`
  (never `as_strided`, which reads foreign memory when a stride is wrong). Its reverse, the
  scatter-add of window values back onto the padded input, is the input gradient's scatter
  (`npconv._kernels`), run chunk by chunk.

Nothing here allocates a padded copy: which memory it lives in (pooled scratch inside an op)
is the caller's choice (`_layout.padded`).
"""

from __future__ import annotations

import itertools
from typing import Any

import numpy as np

from npconv import _backend
from npconv.spec import Pads, effective_kernel, taps

_NUMPY_PAD_MODE = {"replicate": "edge", "circular": "wrap", "reflect": "reflect"}


def interior(pads: Pads, size: tuple[int, ...]) -> tuple[slice, ...]:
    """Index of the unpadded pixels (N, *S, C) inside a padded array (N, *Sp, C)."""
    return (slice(None), *(slice(lo, lo + s) for s, (lo, _) in zip(size, pads)))


def fill_border(out: Any, pads: Pads, mode: str = "zeros") -> None:
    """Write the padding of `out` (N, *Sp, C), whose interior already holds x, in place.

    Axis by axis, as NumPy's `pad` does, so the corners of later axes copy the borders of
    earlier ones. Zeros for "zeros", and for every mode along an empty axis (S = 0: there is
    no pixel to copy; the reference does the same).
    """
    for axis, (lo, hi) in enumerate(pads, start=1):
        s = out.shape[axis] - lo - hi
        if not (lo or hi):
            continue
        if mode == "zeros" or s == 0:
            out[_along(axis, slice(0, lo))] = 0
            out[_along(axis, slice(lo + s, None))] = 0
            continue
        source = _source_index(s, lo, hi, mode) + lo              # padded position it copies
        for j in itertools.chain(range(lo), range(lo + s, lo + s + hi)):
            out[_along(axis, j)] = out[_along(axis, int(source[j]))]


def _source_index(s: int, lo: int, hi: int, mode: str) -> np.ndarray:
    """For every padded position along an axis of size s, the input pixel it copies."""
    return np.pad(np.arange(s), (lo, hi), mode=_NUMPY_PAD_MODE[mode])  # type: ignore[call-overload]


def pad_adjoint(dxp: Any, pads: Pads, mode: str = "zeros") -> Any:
    """Reverse of the padding for gradients: (N, *(S + lo + hi), C) -> (N, *S, C).

    Zero padding just crops: the result is a view of dxp (callers copy it into the caller's
    layout once, instead of twice for channels_first arrays). For the other modes each padded
    position along an axis is a copy of one source position, so its gradient is added to that
    source; the axes are independent, so the order does not matter. The loop runs over the
    padded positions only (lo + hi per axis), never over the image.
    """
    for axis, (lo, hi) in enumerate(pads, start=1):
        if not (lo or hi):
            continue
        size = dxp.shape[axis] - lo - hi
        inner = _along(axis, slice(lo, lo + size))
        if mode == "zeros" or size == 0:
            dxp = dxp[inner]
            continue
        dx = dxp[inner].copy()                                   # (N, ..., S, ..., C)
        source = _source_index(size, lo, hi, mode)
        for j in itertools.chain(range(lo), range(lo + size, lo + size + hi)):
            dx[_along(axis, int(source[j]))] += dxp[_along(axis, j)]
        dxp = dx
    return dxp


def _along(axis: int, index: Any) -> tuple[Any, ...]:
    """Index tuple selecting `index` along `axis` and everything along the other axes."""
    return (slice(None),) * axis + (index,)


def unfold(xp_: Any, kernel_size: tuple[int, ...], stride: tuple[int, ...],
           dilation: tuple[int, ...], out_size: tuple[int, ...],
           origin: tuple[int, ...] | None = None) -> Any:
    """Read-only window view of a padded x (N, *Sp, C) -> (N, *P, *K, C).

    Window p, offset k reads xp_[:, origin + p * stride + k * dilation, :] (origin 0 by
    default; a positive origin views the windows of a box of outputs in an unpadded x). Only
    the first P windows per axis are kept, so callers may ask for fewer outputs than fit
    (transposed convolution does).
    """
    rank = len(kernel_size)
    xp = _backend.namespace(xp_)
    origin = origin or (0,) * rank
    if min(origin, default=0) < 0:
        raise ValueError(f"`origin` must be >= 0 per axis; got {origin}")
    if xp is np and xp_.flags.c_contiguous:                     # one view, no helper calls
        sn, *ss, sc = xp_.strides
        shape = (xp_.shape[0], *out_size, *kernel_size, xp_.shape[-1])
        strides = (sn, *(a * b for a, b in zip(ss, stride)),
                   *(a * b for a, b in zip(ss, dilation)), sc)
        if all(p > 0 and o + (p - 1) * s + (k - 1) * d < n for p, s, k, d, n, o in
               zip(out_size, stride, kernel_size, dilation, xp_.shape[1:-1], origin)) \
                and xp_.size:
            win = np.ndarray(shape, xp_.dtype, buffer=xp_, strides=strides,
                             offset=sum(o * a for o, a in zip(origin, ss)))
            win.flags.writeable = False
            return win
    xp_ = xp_[(slice(None), *(slice(o, None) for o in origin))]  # (N, *(Sp - origin), C)
    span = tuple(map(effective_kernel, kernel_size, dilation))
    axes = tuple(range(1, rank + 1))
    win = _backend.sliding_window_view(xp, xp_, span, axes)    # (N, *Sw, C, *span)
    keep = tuple(taps(0, 1, s, 0, p) for p, s in zip(out_size, stride))  # window starts
    step = tuple(slice(None, None, d) for d in dilation)
    win = win[(slice(None), *keep, slice(None), *step)]          # (N, *P, C, *K)
    return xp.moveaxis(win, rank + 1, -1)                        # (N, *P, *K, C)
