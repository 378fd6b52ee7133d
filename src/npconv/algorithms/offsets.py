"""Per-kernel-offset accumulation: one GEMM per kernel offset, no window matrix.

For kernel offset k the windows read xs_k = xp[p * stride + k * dilation] (a strided slice), so

    y = sum_k xs_k @ w[k],   dw[k] = xs_k^T @ dy,   dxp[p * stride + k * dilation] += dy @ w[k]^T.

Each GEMM has C/G as its inner dimension instead of prod(K) * C/G, which keeps the temporaries
prod(K) times smaller than im2col's for the same chunk; it pays off when C/G alone is wide
enough for an efficient GEMM. Per chunk and worker it allocates one slice buffer
(rows x C), one product buffer (rows x F) and, for the weight gradient, a (prod(K), C/G x F)
accumulator; the input gradient scatters (chunks of whole images when several workers run).
Groups are the batch axis of each `matmul`.
"""

from __future__ import annotations

import math

from npconv import _backend
from npconv._workspace import scratch
from npconv.algorithms import _chunks
from npconv.algorithms._layout import chunk_windows, grouped_rows, take
from npconv.spec import ConvSpec

MIN_CHANNELS = 256
"""`auto` picks this algorithm when C/G and F/G are at least this wide (and the kernel is not
1x1): its GEMMs are then about as efficient as im2col's, with a far smaller buffer."""


def worthwhile(spec: ConvSpec) -> bool:
    """Whether `auto` should prefer this algorithm over im2col."""
    return min(spec.group_in, spec.group_out) >= MIN_CHANNELS


def _w_offsets(w, spec: ConvSpec):
    """(*K, C/G, F) -> (prod(K), G, C/G, F/G)."""
    w = w.reshape(-1, spec.group_in, spec.groups, spec.group_out)  # (prodK, C/G, G, F/G)
    return w.transpose(0, 2, 1, 3)                               # (prodK, G, C/G, F/G)


def _plan(spec: ConvSpec, itemsize: int, settings, xp, **kw):
    width = spec.in_channels + 2 * spec.out_channels
    row = math.prod(spec.out_size[1:]) * width * itemsize
    chunks, workers = _chunks.plan(spec.batch, spec.out_size[0], row, settings, xp=xp, **kw)
    return chunks, workers, max(_chunks.rows_of(c, spec.out_size) for c in chunks)


def _slice_rows(xp_, index, groups: int, buf):
    """Copy the strided slice xp[index] (n, rows, *P', C) into buf as (G, R, C/G)."""
    xp = _backend.namespace(xp_)
    part = xp_[index]                                            # (n, rows, *P', C) view
    xs = take(buf, part.shape)                                   # (n, rows, *P', C)
    xp.copyto(xs, part)
    return grouped_rows(xs, groups)                              # (G, R, C/G) view


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F) = sum over kernel offsets of xs_k @ w[k], per chunk."""
    xp = _backend.namespace(xp_, w)
    g, c, f = spec.groups, spec.in_channels, spec.out_channels
    wk = _w_offsets(w, spec)                                     # (prodK, G, C/G, F/G)
    y = xp.empty((spec.batch, *spec.out_size, f), dtype=xp_.dtype)  # (N, *P, F)
    chunks, workers, most = _plan(spec, y.itemsize, settings, xp)

    def task(chunk, buf):
        out = grouped_rows(y[chunk], g)                          # (G, R, F/G) view of y
        prod = take(buf[most * c:], out.shape)                   # (G, R, F/G)
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            xs = _slice_rows(xp_, index, g, buf)                 # (G, R, C/G)
            xp.matmul(xs, wk[i], out=prod)
            if i == 0:
                out[...] = prod
            else:
                out += prod

    _chunks.run(task, chunks, workers, lambda: scratch((most * (c + f),), y.dtype, xp))
    return y


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw[k] (C/G, F) = sum over chunks of xs_k^T @ dy, per kernel offset."""
    xp = _backend.namespace(xp_, dy)
    g, c = spec.groups, spec.in_channels
    nk = math.prod(spec.kernel_size)
    shape = (nk, g, spec.group_in, spec.group_out)
    chunks, workers, most = _plan(spec, dy.itemsize, settings, xp,
                                  fixed_bytes=math.prod(shape) * dy.itemsize)

    def task(chunk, state):
        buf, acc = state
        d = grouped_rows(dy[chunk], g)                           # (G, R, F/G) view
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            xs = _slice_rows(xp_, index, g, buf)                 # (G, R, C/G)
            acc[i] += xp.matmul(xs.transpose(0, 2, 1), d)        # (G, C/G, F/G)

    def state():
        return scratch((most * c,), dy.dtype, xp), xp.zeros(shape, dtype=dy.dtype)

    dw = sum(acc for _, acc in _chunks.run(task, chunks, workers, state))  # (prodK, G, C/G, F/G)
    dw = dw.transpose(0, 2, 1, 3)                                # (prodK, C/G, G, F/G)
    return dw.reshape(*spec.kernel_size, spec.group_in, spec.out_channels)  # (*K, C/G, F)


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): per chunk and offset, dy @ w[k]^T added onto the slice k read."""
    xp = _backend.namespace(dy, w)
    g, c = spec.groups, spec.in_channels
    wt = _w_offsets(w, spec).transpose(0, 1, 3, 2)               # (prodK, G, F/G, C/G)
    dxp = xp.zeros((spec.batch, *spec.padded_size, c), dtype=dy.dtype)  # (N, *Sp, C)
    chunks, workers, most = _plan(spec, dy.itemsize, settings, xp, whole_images=True)

    def task(chunk, buf):
        d = grouped_rows(dy[chunk], g)                           # (G, R, F/G) view
        lead = dy[chunk].shape[:-1]                              # (n, rows, *P')
        part = take(buf, (g, d.shape[1], spec.group_in))         # (G, R, C/G)
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            xp.matmul(d, wt[i], out=part)
            target = dxp[index].reshape(*lead, g, spec.group_in)  # (n, rows, *P', G, C/G)
            target += xp.moveaxis(part.reshape(g, *lead, -1), 0, -2)

    _chunks.run(task, chunks, workers, lambda: scratch((most * c,), dy.dtype, xp))
    return dxp
