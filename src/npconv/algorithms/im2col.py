"""Chunked im2col: the window matrix built one chunk at a time, each chunk one (batched) GEMM.

With cols = unfold(xp), the window matrix (N*prod(P), prod(K)*C), the forward pass and the
weight gradient are GEMMs against it: y = cols @ w, dw = cols^T @ dy. Building cols whole costs
prod(K) times the input's memory (4 GiB is easy to reach), so each worker fills a buffer of a
few MiB with the windows of one chunk of output positions and multiplies it right away, while
it is still in cache. Groups are a batch axis of the GEMM: one `matmul` over
(G, rows, prod(K)*C/G), no Python loop over groups. When one output row's windows exceed a
worker's share of the workspace, a chunk holds a block of that row's kernel offsets, and the
blocks' products are added up.

Allocates per worker one cols buffer (rows x prod(K)*C) plus, with groups or blocks of kernel
offsets, the chunk's output rows (rows x F); the weight gradient a (prod(K)*C/G x F)
accumulator.
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

import numpy as np

from npconv import _backend, _chunks, _windows
from npconv._chunks import Chunk, Plan
from npconv._config import Settings
from npconv._workspace import result, scratch
from npconv.algorithms._common import (
    PartialSum,
    chunk_taps,
    finish,
    grouped_rows,
    grouped_w,
    take,
    ungrouped_dw,
)
from npconv.spec import ConvSpec


def plan(spec: ConvSpec, itemsize: int, settings: Settings, xp: ModuleType, *,
         out_width: int = 0, fixed_bytes: int = 0, by_image: bool = False) -> Plan:
    """Chunks for buffers of C values per output position and kernel offset plus `out_width`
    per output position (one GEMM output row), and the number of workers."""
    row = math.prod(spec.out_size[1:]) * itemsize
    return _chunks.plan(spec.batch, spec.out_size[0], settings, row_bytes=row * out_width,
                        tap_bytes=row * spec.in_channels, taps=math.prod(spec.kernel_size),
                        fixed_bytes=fixed_bytes,
                        chunk_bytes=_chunk_bytes(spec, itemsize, settings),
                        by_image=by_image, xp=xp)


def _chunk_bytes(spec: ConvSpec, itemsize: int, settings: Settings) -> int:
    """The chunk target. A layer small enough to run serially (`_chunks.serial_layer`: its
    window matrix is below `Tuning.min_parallel_bytes`) with `Tuning.serial_min_filters`
    filters per group or more is one chunk, one GEMM that BLAS's own threads share: many small
    GEMMs each wake and wait for BLAS's threads (ResNet-18's 14x14x128 3x3 layer, batch 16,
    fwd+bwd on two threads of a busy machine: 50 ms in one chunk, 65 to 155 in 1 MiB ones).
    Else smaller chunks for stride-1 gathers of whole window rows, of at least
    `Tuning.gemm_min_rows` rows; narrow windows (`_narrow`) and strided gathers keep
    `Tuning.chunk_bytes`, fewer chunks costing fewer Python calls."""
    tuning = settings.tuning
    if spec.group_out >= tuning.serial_min_filters and \
            _chunks.serial_layer(spec, itemsize, settings):
        return max(tuning.min_parallel_bytes, 1)
    if not all(s == 1 for s in spec.stride) or _narrow(spec, settings):
        return tuning.chunk_bytes
    rows = tuning.gemm_min_rows * math.prod(spec.kernel_size) * spec.in_channels
    return min(max(tuning.stride1_chunk_bytes, rows * itemsize), tuning.chunk_bytes)


def _narrow(spec: ConvSpec, settings: Settings) -> bool:
    return spec.groups == 1 and spec.kernel_size[-1] * spec.in_channels < settings.tuning.narrow_run


def _unfold(xp_: Any, spec: ConvSpec) -> Any:
    """The read-only window view (N, *P, *K, C) on NumPy; None elsewhere (CuPy checks a
    sliding window's shape on the device, which synchronizes: `_gather_offsets` instead)."""
    if _backend.namespace(xp_) is not np:
        return None
    return _windows.unfold(xp_, spec.kernel_size, spec.stride, spec.dilation, spec.out_size)


def windows(xp_: Any, win: Any, spec: ConvSpec, settings: Settings, chunk: Chunk,
            buf: Any) -> Any:
    """The chunk's window matrix (G, R, taps * C/G), copied into buf (a transposed view of it
    when window rows are narrow)."""
    if win is None or chunk.taps.stop - chunk.taps.start < math.prod(spec.kernel_size):
        return _gather_offsets(xp_, spec, chunk, buf)
    if _narrow(spec, settings):
        return _gather_t(win, spec, chunk, buf).T[None]          # (1, R, prodK*C) view
    return _gather(win, spec, chunk, buf)


def _gather(win: Any, spec: ConvSpec, chunk: Chunk, buf: Any) -> Any:
    """Copy the chunk's windows (n, rows, *P', *K, C) into buf as (G, R, prod(K) * C/G)."""
    xp = _backend.namespace(buf)
    g = spec.groups
    part = win[chunk.batch, chunk.rows]                          # (n, rows, *P', *K, C) view
    if g > 1:
        part = part.reshape(*part.shape[:-1], g, -1)             # (..., *K, G, C/G) view
        part = xp.moveaxis(part, -2, 0)                          # (G, n, rows, ..., *K, C/G)
    cols = take(buf, part.shape)                                 # same shape, contiguous
    xp.copyto(cols, part)
    return cols.reshape(g, -1, math.prod(spec.kernel_size) * spec.group_in)  # (G, R, prodK*C/G)


def _gather_t(win: Any, spec: ConvSpec, chunk: Chunk, buf: Any) -> Any:
    """The chunk's transposed window matrix (prod(K) * C, R), copied from the window view
    transposed to (*K, C, n, rows, *P'): one copy whose inner loop runs along output rows."""
    xp = _backend.namespace(buf)
    r = spec.rank
    part = win[chunk.batch, chunk.rows]                          # (n, rows, *P', *K, C) view
    part = part.transpose(*range(r + 1, 2 * r + 2), *range(r + 1))  # (*K, C, n, rows, *P')
    cols_t = take(buf, part.shape)                               # (*K, C, n, rows, *P')
    xp.copyto(cols_t, part)
    return cols_t.reshape(-1, chunk.positions(spec.out_size))    # (prodK*C, R)


def _gather_offsets(xp_: Any, spec: ConvSpec, chunk: Chunk, buf: Any) -> Any:
    """The chunk's window matrix (G, R, taps * C/G), one strided copy per kernel offset."""
    xp = _backend.namespace(xp_)
    g, cg, nt = spec.groups, spec.group_in, chunk.taps.stop - chunk.taps.start
    lead = (chunk.batch.stop - chunk.batch.start, chunk.rows.stop - chunk.rows.start,
            *spec.out_size[1:])
    cols = take(buf, (g, *lead, nt, cg))                         # (G, n, rows, *P', taps, C/G)
    for i, index in enumerate(chunk_taps(spec, chunk)):
        part = xp_[index].reshape(*lead, g, cg)                  # (n, rows, *P', G, C/G) view
        xp.copyto(cols[..., i, :], xp.moveaxis(part, -2, 0))
    return cols.reshape(g, -1, nt * cg)                          # (G, R, taps*C/G)


def _multiply(cols: Any, wg: Any, y_rows: Any, buf: Any) -> None:
    """y_rows (R, F) = cols (G, R, m) @ wg (G, m, F/G), group by group."""
    xp = _backend.namespace(cols)
    g, r, fg = cols.shape[0], cols.shape[1], wg.shape[2]
    if g == 1:
        xp.matmul(cols[0], wg[0], out=y_rows)
        return
    out = take(buf, (g, r, fg))                                  # (G, R, F/G)
    xp.matmul(cols, wg, out=out)
    y_rows.reshape(r, g, fg)[...] = out.transpose(1, 0, 2)       # (R, G, F/G)


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, bias: Any = None,
            clip: tuple | None = None) -> Any:
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) (+ bias (F,), clipped to `clip`),
    one GEMM per chunk (blocks of kernel offsets of one row add their products)."""
    xp = _backend.namespace(xp_, w)
    g, f, nk, cg = spec.groups, spec.out_channels, math.prod(spec.kernel_size), spec.group_in
    win = _unfold(xp_, spec)                                     # (N, *P, *K, C) view
    wg = grouped_w(w, spec)                                      # (G, prodK*C/G, F/G)
    y = result((spec.batch, *spec.out_size, f), xp_.dtype, xp)  # (N, *P, F)
    width = f if g > 1 else 0
    chunks = plan(spec, y.itemsize, settings, xp, out_width=width)
    if chunks.most_taps() < nk:                                  # blocks: add products up
        width += f
        chunks = plan(spec, y.itemsize, settings, xp, out_width=width)
    cols_size = chunks.most(spec.out_size) * chunks.most_taps() * spec.in_channels
    size = cols_size + chunks.most(spec.out_size) * width

    def task(chunk: Chunk, buf: Any) -> None:
        cols = windows(xp_, win, spec, settings, chunk, buf)     # (G, R, taps*C/G)
        y_rows = y[chunk.batch, chunk.rows].reshape(-1, f)       # (R, F) view
        wb = wg[:, chunk.taps.start * cg:chunk.taps.stop * cg]   # (G, taps*C/G, F/G)
        rest = buf[cols_size:]
        if chunk.taps.start == 0:
            _multiply(cols, wb, y_rows, rest)
        else:
            part = take(rest, y_rows.shape)                      # (R, F)
            _multiply(cols, wb, part, rest[part.size:])
            y_rows += part
        if chunk.taps.stop == nk:
            finish(y_rows, bias, clip, xp)

    _chunks.run(task, chunks, lambda: scratch((size,), y.dtype, xp))
    return y


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings) -> Any:
    """dw (*K, C/G, F): per chunk, dw += cols^T @ dy (a block of dw's rows for a block of
    kernel offsets); workers' partial sums (`PartialSum`) added at the end."""
    xp = _backend.namespace(xp_, dy)
    g, cg, nk = spec.groups, spec.group_in, math.prod(spec.kernel_size)
    win = _unfold(xp_, spec)                                     # (N, *P, *K, C) view
    acc_shape = (g, nk * cg, spec.group_out)                     # (G, prodK*C/G, F/G)
    chunks = plan(spec, dy.itemsize, settings, xp,
                  fixed_bytes=2 * math.prod(acc_shape) * dy.itemsize)
    size = chunks.most(spec.out_size) * chunks.most_taps() * spec.in_channels

    def task(chunk: Chunk, state: tuple[Any, PartialSum]) -> None:
        buf, dw = state
        cols = windows(xp_, win, spec, settings, chunk, buf)     # (G, R, taps*C/G)
        d = grouped_rows(dy[chunk.batch, chunk.rows], g)         # (G, R, F/G) view
        dw.add(cols.transpose(0, 2, 1), d, slice(chunk.taps.start * cg, chunk.taps.stop * cg))

    def state() -> tuple[Any, PartialSum]:
        return scratch((size,), dy.dtype, xp), PartialSum(acc_shape, dy.dtype, xp, chunks)

    sums = [dw for _, dw in _chunks.run(task, chunks, state)]
    return ungrouped_dw(PartialSum.total(sums, acc_shape, dy.dtype, xp), spec)
