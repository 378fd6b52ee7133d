"""Padding, window views and their exact reverses, on channels_last arrays (N, *S, C).

- `pad` / `pad_adjoint`: add padding of any mode, and send the gradient of the padded array back
  to the pixels the padding copied (a reflected pixel's gradient goes to the pixel it mirrors).
- `unfold`: the read-only view (N, *P, *K, C) of every window, built on `sliding_window_view`
  (never `as_strided`, which reads foreign memory when a stride is wrong).
- `fold`: the reverse of `unfold`, a scatter-add of window values back onto the padded input; it
  loops over kernel offsets only, each step one strided-slice `+=` (Chainer's col2im).
"""

from __future__ import annotations

import itertools

import numpy as np

from npconv import _backend, _workspace
from npconv.algorithms import _chunks

_NUMPY_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
                   "circular": "wrap"}


def pad(x, pads, mode: str = "zeros"):
    """Pad the spatial axes of x (N, *S, C) -> (N, *(S + lo + hi), C).

    Returns x itself (not a copy) when every pad is zero. Zero padding writes into scratch
    memory (`_workspace.scratch`: pooled inside a convolution op, where the padded copy is a
    temporary; an ordinary array elsewhere): the inside is copied, the border zeroed.
    """
    if not any(lo or hi for lo, hi in pads):
        return x
    xp = _backend.namespace(x)
    if mode != "zeros":
        return xp.pad(x, ((0, 0), *pads, (0, 0)), mode=_NUMPY_PAD_MODE[mode])
    size = tuple(s + lo + hi for s, (lo, hi) in zip(x.shape[1:-1], pads))
    out = _workspace.scratch((x.shape[0], *size, x.shape[-1]), x.dtype, xp)  # (N, *Sp, C)
    inner = (slice(None), *(slice(lo, lo + s) for s, (lo, _) in zip(x.shape[1:-1], pads)))
    _chunks.copyto(out[inner], x)                                # on the workers
    for axis, (lo, hi) in enumerate(pads, start=1):              # the border: 0
        out[_along(axis, slice(0, lo))] = 0
        out[_along(axis, slice(out.shape[axis] - hi, None))] = 0
    return out


def pad_adjoint(dxp, pads, mode: str = "zeros"):
    """Reverse of `pad` for gradients: (N, *(S + lo + hi), C) -> (N, *S, C).

    Zero padding just crops: the result is a view of dxp (callers copy it into the caller's
    layout once, instead of twice for channels_first arrays). For the other modes each padded
    position along an axis is a copy of one source position (np.pad's index map, applied axis
    by axis), so its gradient is added to that source; the axes are independent, so the order
    does not matter. The loop runs over the padded positions only (lo + hi per axis), never
    over the image.
    """
    for axis, (lo, hi) in enumerate(pads, start=1):
        if not (lo or hi):
            continue
        size = dxp.shape[axis] - lo - hi
        inner = _along(axis, slice(lo, lo + size))
        if mode == "zeros":
            dxp = dxp[inner]
            continue
        dx = dxp[inner].copy()                                   # (N, ..., S, ..., C)
        source = np.pad(np.arange(size), (lo, hi), mode=_NUMPY_PAD_MODE[mode])
        for j in itertools.chain(range(lo), range(lo + size, lo + size + hi)):
            dx[_along(axis, source[j])] += dxp[_along(axis, j)]
        dxp = dx
    return dxp


def _along(axis: int, index) -> tuple:
    """Index tuple selecting `index` along `axis` and everything along the other axes."""
    return (slice(None),) * axis + (index,)


def unfold(xp_, kernel_size, stride, dilation, out_size):
    """Read-only window view of a padded x (N, *Sp, C) -> (N, *P, *K, C).

    Window p, offset k reads xp_[:, p * stride + k * dilation, :]. Only the first P windows per
    axis are kept, so callers may ask for fewer outputs than fit (transposed convolution does).
    """
    rank = len(kernel_size)
    xp = _backend.namespace(xp_)
    span = tuple(d * (k - 1) + 1 for k, d in zip(kernel_size, dilation))
    axes = tuple(range(1, rank + 1))
    win = _backend.sliding_window_view(xp, xp_, span, axes)    # (N, *Sw, C, *span)
    keep = tuple(slice(0, (p - 1) * s + 1, s) for p, s in zip(out_size, stride))
    taps = tuple(slice(None, None, d) for d in dilation)
    win = win[(slice(None), *keep, slice(None), *taps)]          # (N, *P, C, *K)
    return xp.moveaxis(win, rank + 1, -1)                        # (N, *P, *K, C)


def offsets(kernel_size, stride, dilation, out_size):
    """Yield (k, window) for every kernel offset k: `window` indexes the padded input at
    p * stride + k * dilation for all P output positions (a strided slice per axis)."""
    for k in itertools.product(*map(range, kernel_size)):
        window = tuple(
            slice(kk * d, kk * d + (p - 1) * s + 1, s)
            for kk, d, p, s in zip(k, dilation, out_size, stride)
        )
        yield k, (slice(None), *window)


def fold(cols, padded_size, stride, dilation):
    """Reverse of `unfold`: scatter-add cols (N, *P, *K, C) -> (N, *Sp, C).

    Every window value is added to the padded-input pixel it was read from, so
    fold(cols) is the adjoint of unfold: <fold(c), x> == <c, unfold(x)>.
    """
    rank = len(padded_size)
    n, *rest = cols.shape
    out_size, kernel_size, c = rest[:rank], rest[rank:2 * rank], rest[-1]
    xp = _backend.namespace(cols)
    out = xp.zeros((n, *padded_size, c), dtype=cols.dtype)      # (N, *Sp, C)
    for k, window in offsets(kernel_size, stride, dilation, out_size):
        out[window] += cols[(slice(None),) * (rank + 1) + k]     # (N, *P, C)
    return out
