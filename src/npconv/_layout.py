"""Layout conversion: the caller's arrays to the kernels' channels_last ones, and back.

Kernels see x (N, *S, C), w (*K, C/G, F) and y (N, *P, F), in the compute dtype (float16 is
computed in float32). A caller's channels_first arrays (N, C, *S) and weights (F, C/G, *K)
are seen channels_last through transposed views (`to_last`, `w_to_last`); `padded` turns a view
into the contiguous, padded array a kernel reads with ONE copy that converts layout and dtype
and pads at once (or none, when the view already is that array), and `result` turns a kernel's
output into the caller's layout and dtype with at most one copy. These are the conversions the
workspace bound counts (docs/algorithms.md, "Workspace"). Pooling, which treats every channel
alike, sees a channels_first array as N * C single-channel images instead (`planes`): no copy.
"""

from __future__ import annotations

from typing import Any

from npconv import _backend, _chunks, _windows, _workspace
from npconv._config import Settings
from npconv.spec import Pads


def to_last(a: Any, data_format: str) -> Any:
    """(N, C, *S) -> (N, *S, C) view for channels_first; `a` itself for channels_last."""
    return _backend.namespace(a).moveaxis(a, 1, -1) if data_format == "channels_first" else a


def from_last(a: Any, data_format: str) -> Any:
    """(N, *S, C) -> (N, C, *S) view for channels_first; `a` itself for channels_last."""
    return _backend.namespace(a).moveaxis(a, -1, 1) if data_format == "channels_first" else a


def w_to_last(w: Any, data_format: str) -> Any:
    """A weight (F, C/G, *K) -> (*K, C/G, F) view for channels_first; `w` for channels_last."""
    if data_format == "channels_last":
        return w
    r = w.ndim - 2
    return w.transpose(*range(2, r + 2), 1, 0)                   # (*K, C/G, F)


def w_from_last(w: Any, data_format: str) -> Any:
    """A weight (*K, C/G, F) -> (F, C/G, *K) view for channels_first; `w` for channels_last."""
    if data_format == "channels_last":
        return w
    r = w.ndim - 2
    return w.transpose(r + 1, r, *range(r))                      # (F, C/G, *K)


def planes(a: Any, data_format: str) -> Any:
    """The layout of ops that treat every channel alike (pooling): (B, *S, C), a channels_last
    (N, *S, C) as it is and a channels_first (N, C, *S) as (N * C, *S, 1), so that neither is
    ever transposed (a copy only when a channels_first `a` is not C-contiguous)."""
    if data_format == "channels_last":
        return a
    n, c, *s = a.shape
    return a.reshape(n * c, *s, 1)                               # (N*C, *S, 1)


def planes_shape(n: int, size: tuple[int, ...], c: int, data_format: str) -> tuple[int, ...]:
    """(B, *size, C) of `planes`: (N, *size, C), or (N * C, *size, 1) for channels_first."""
    return (n, *size, c) if data_format == "channels_last" else (n * c, *size, 1)


def padded(a: Any, pads: Pads, mode: str, dtype: Any, settings: Settings,
           contiguous: bool = True) -> Any:
    """a (N, *S, C), any strides, padded by (lo, hi) per axis (negative amounts crop), as a
    C-contiguous array of `dtype`: `a` itself when it already is one (or, without
    `contiguous`, when there is nothing to pad or convert), else one copy in pooled scratch
    (`_workspace`), made by the workers."""
    xp = _backend.namespace(a)
    if any(lo < 0 or hi < 0 for lo, hi in pads):
        crop = tuple(slice(max(-lo, 0), s - max(-hi, 0)) for s, (lo, hi) in zip(a.shape[1:], pads))
        a = a[(slice(None), *crop)]                              # (N, *S', C) view
        pads = tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads)
    if not any(lo or hi for lo, hi in pads) and a.dtype == dtype and (
            a.flags.c_contiguous or not contiguous):
        return a
    size = tuple(s + lo + hi for s, (lo, hi) in zip(a.shape[1:-1], pads))
    out = _workspace.scratch((a.shape[0], *size, a.shape[-1]), dtype, xp)  # (N, *Sp, C)
    _chunks.copyto(out[_windows.interior(pads, a.shape[1:-1])], a, settings)
    _windows.fill_border(out, pads, mode)
    return out


def result(a: Any, data_format: str, dtype: Any, settings: Settings) -> Any:
    """A kernel's result (N, *P, F) in the caller's layout and dtype, C-contiguous and
    writeable: `a` (or its transposed view) when it already is, else one copy."""
    out = from_last(a, data_format)
    if out.dtype == dtype and out.flags.c_contiguous and out.flags.writeable:
        return out
    copy = _backend.namespace(a).empty(out.shape, dtype=dtype)   # (N, *P, F) or (N, F, *P)
    _chunks.copyto(copy, out, settings)
    return copy


def weight(w: Any, data_format: str, dtype: Any) -> Any:
    """A caller's weight as (*K, C/G, F) of `dtype` (a view when the dtype matches)."""
    return w_to_last(w, data_format).astype(dtype, copy=False)


def weight_result(dw: Any, data_format: str, dtype: Any) -> Any:
    """A weight gradient (*K, C/G, F) in the caller's layout and dtype, C-contiguous."""
    xp = _backend.namespace(dw)
    return xp.ascontiguousarray(w_from_last(dw, data_format).astype(dtype, copy=False))

