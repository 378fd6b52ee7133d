"""Pointwise (1x1, stride 1, ungrouped) convolutions as direct GEMMs, without a window matrix.

A 1x1 kernel with stride 1 reads every pixel once: the padded input (N, *Sp, C) already is the
window matrix (N*prod(P), C), so y = x @ w and dw = x^T @ dy are GEMMs on reshaped views,
split into blocks of rows dealt to the workers (`_chunks`; dw adds one (C, F) partial sum per
worker). Arrays of a channels_first caller arrive as transposed views (`takes_views`); they are
multiplied in their own layout, y (N, F, S) = w^T @ x (N, C, S), blocks of images per worker,
with no copy in or out. Only the results and the per-worker (C, F) sums are allocated (and, for
dw of channels_first arrays, one (C, F) product per image of a block). Strided or grouped 1x1
kernels are im2col's: its window matrix for them is the subsampled grid.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from npconv import _backend, _chunks, _layout
from npconv._chunks import Chunk
from npconv._config import Settings
from npconv._workspace import result
from npconv.algorithms._common import PartialSum, finish
from npconv.spec import ConvSpec


def applies(spec: ConvSpec) -> bool:
    """A 1x1 kernel, stride 1, ungrouped."""
    return (spec.groups == 1 and all(k == 1 for k in spec.kernel_size)
            and all(s == 1 for s in spec.stride))


def _read(xp_: Any, spec: ConvSpec) -> Any:
    """The pixels the outputs read: xp (N, *Sp, C) itself, or its first P positions per axis
    (a view) for a transposed convolution's spec whose output stops short of Sp."""
    return xp_[(slice(None), *(slice(0, p) for p in spec.out_size))]


def _channels_first(a: Any) -> Any:
    """(N, C, prod(S)), a view, when a (N, *S, C) is a transposed C-contiguous (N, C, *S)."""
    if a.flags.c_contiguous and a.shape[-1] > 1 and math.prod(a.shape[1:-1]) > 1:
        return None                                              # channels_last: not both
    xp = _backend.namespace(a)
    a = xp.moveaxis(a, -1, 1)                                    # (N, C, *S) view
    if not a.flags.c_contiguous:
        return None
    return a.reshape(a.shape[0], a.shape[1], -1)                 # (N, C, prod(S)) view


def _rows(a: Any, settings: Settings) -> Any:
    """(N * prod(S), C), contiguous (a copy in scratch when `a` is not)."""
    no_pads = ((0, 0),) * (a.ndim - 2)
    return _layout.padded(a, no_pads, "zeros", a.dtype, settings).reshape(-1, a.shape[-1])


def _last(a: Any, shape: tuple[int, ...]) -> Any:
    """(N, C, prod(S)) -> (N, *S, C) view, the channels_last view of a channels_first result."""
    return _backend.namespace(a).moveaxis(a.reshape(shape[0], shape[-1], *shape[1:-1]), 1, -1)


def _blocks(n: int, row_bytes: int, settings: Settings, xp: ModuleType) -> _chunks.Plan:
    """Blocks of the leading axis (length n), a chunk's `rows`: `_chunks.plan` over n rows of
    `row_bytes` each (one "image"), with chunks of at most n / workers rows, so that every
    worker gets a share of the rows even when they would fit one chunk (a small layer in a
    network's pass on the workers, `_chunks.network_pass`)."""
    share = -(-n // _chunks.worker_count(settings, xp)) * row_bytes
    return _chunks.plan(1, n, settings, row_bytes=row_bytes, xp=xp,
                        chunk_bytes=min(settings.tuning.chunk_bytes, share))


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, bias: Any = None,
            clip: tuple | None = None) -> Any:
    """y (N, *P, F) = x (N*P, C) @ w (C, F), or w^T (F, C) @ x (N, C, P) channels_first
    (+ bias (F,), clipped to `clip`), a block of rows (or of images) per task."""
    xp = _backend.namespace(xp_, w)
    c, f = spec.in_channels, spec.out_channels
    w2 = w.reshape(c, f)                                         # (C, F)
    xp_ = _read(xp_, spec)                                       # (N, *P, C)
    x_cf = _channels_first(xp_)
    if x_cf is not None:                                         # per image: w^T @ x_n
        y = result((spec.batch, f, x_cf.shape[2]), x_cf.dtype, xp)  # (N, F, P)
        a, b, row_bytes = w2.T, x_cf, y[0].nbytes
        b_add = None if bias is None else bias[:, None]          # (F, 1)
    else:
        x2 = _rows(xp_, settings)                                # (N*P, C)
        y = result((x2.shape[0], f), x2.dtype, xp)              # (N*P, F)
        a, b, row_bytes, b_add = x2, w2, x2[0].nbytes + y[0].nbytes, bias

    def task(chunk: Chunk, _: None) -> None:
        rows = chunk.rows
        if x_cf is None:
            xp.matmul(a[rows], b, out=y[rows])
        else:
            xp.matmul(a, b[rows], out=y[rows])
        finish(y[rows], b_add, clip, xp)

    _chunks.run(task, _blocks(y.shape[0], row_bytes, settings, xp), lambda: None)
    shape = (spec.batch, *spec.out_size, f)
    return _last(y, shape) if x_cf is not None else y.reshape(shape)  # (N, *P, F)


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings) -> Any:
    """dw (1.., C, F) = x^T (C, N*P) @ dy (N*P, F), or sum_n x_n (C, P) @ dy_n^T channels_first;
    one partial sum per worker, added in worker order."""
    xp = _backend.namespace(xp_, dy)
    c, f = spec.in_channels, spec.out_channels
    xp_ = _read(xp_, spec)                                       # (N, *P, C)
    x_cf, dy_cf = _channels_first(xp_), _channels_first(dy)
    if x_cf is None or dy_cf is None:
        x2, dy2 = _rows(xp_, settings), _rows(dy, settings)      # (N*P, C), (N*P, F)
        blocks = _blocks(x2.shape[0], x2[0].nbytes + dy2[0].nbytes, settings, xp)

        def task(chunk: Chunk, dw: PartialSum) -> None:
            dw.add(x2[chunk.rows].T, dy2[chunk.rows])            # (C, F)
    else:
        product = c * f * dy.itemsize                            # one image's (C, F) product
        blocks = _blocks(spec.batch, x_cf[0].nbytes + dy_cf[0].nbytes + product, settings, xp)

        def task(chunk: Chunk, dw: PartialSum) -> None:          # sum_n x_n @ dy_n^T
            images = chunk.rows
            dw.add_array(xp.matmul(x_cf[images], dy_cf[images].transpose(0, 2, 1)).sum(axis=0))

    plan = blocks if x_cf is None or dy_cf is None else None    # add_array needs no buffer
    sums = _chunks.run(task, blocks, lambda: PartialSum((c, f), dy.dtype, xp, plan))
    dw = PartialSum.total(sums, (c, f), dy.dtype, xp)           # (C, F)
    return dw.reshape(*spec.kernel_size, c, f)                   # (1.., C, F)
