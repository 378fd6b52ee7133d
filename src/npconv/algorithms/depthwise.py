"""Depthwise convolutions (one input channel per group) as elementwise products per offset.

With C/G == 1 each output channel g*m + j (m = F/G filters per group) reads input channel g only,
so the GEMMs of im2col degenerate to length-prod(K) dot products. Instead, per kernel offset k,
with xs_k = xp[p * stride + k * dilation] (a strided slice, shape (..., G)):

    y[..., g, j]   = sum_k xs_k[..., g] * w[k, g, j]
    dxp[k-slice]  += sum_j dy[..., g, j] * w[k, g, j]
    dw[k, g, j]    = sum_{n, p} xs_k[..., g] * dy[..., g, j]

all vectorized over channels and positions: there is no loop over groups. Work runs in chunks
(whole images when several workers scatter) so each product stays in cache; per worker it
allocates one product buffer the size of the chunk's output (rows x F) and, for the weight
gradient, a (prod(K), F) accumulator and a vector of ones; the weights are repeated along
the last output axis once (prod(K) x P_last x F).
"""

from __future__ import annotations

import math

from npconv import _backend
from npconv._workspace import scratch
from npconv.algorithms import _chunks
from npconv.algorithms._layout import chunk_windows, take
from npconv.spec import ConvSpec


def _plan(spec: ConvSpec, itemsize: int, settings, xp, **kw):
    row = math.prod(spec.out_size[1:]) * 2 * spec.out_channels * itemsize
    chunks, workers = _chunks.plan(spec.batch, spec.out_size[0], row, settings, xp=xp, **kw)
    return chunks, workers, max(_chunks.rows_of(c, spec.out_size) for c in chunks)


def _tiles(w, spec: ConvSpec):
    """(*K, 1, F) -> (prod(K), P_last, G, m): each offset's weights repeated along the last
    output axis (rank >= 2), so that products with a slice run over whole contiguous rows
    instead of restarting every G * m elements (3x faster than broadcasting a (G, m) row)."""
    xp = _backend.namespace(w)
    width = spec.out_size[-1] if spec.rank > 1 else 1
    wk = w.reshape(-1, 1, spec.groups, spec.group_out)           # (prodK, 1, G, m)
    return xp.ascontiguousarray(xp.broadcast_to(wk, (wk.shape[0], width, *wk.shape[2:])))


def _times(a, b, out, m: int) -> None:
    """out = a * b over (..., G, m) arrays, without the m axis when m == 1 (longer loops)."""
    xp = _backend.namespace(out)
    if m == 1:
        xp.multiply(a[..., 0], b[..., 0], out=out[..., 0])
    else:
        xp.multiply(a, b, out=out)


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F): per chunk, y += xs_k[..., None] * w[k] over kernel offsets."""
    xp = _backend.namespace(xp_, w)
    g, m = spec.groups, spec.group_out
    tiles = _tiles(w, spec)                                      # (prodK, P_last, G, m)
    y = xp.empty((spec.batch, *spec.out_size, spec.out_channels), dtype=xp_.dtype)  # (N,*P,F)
    chunks, workers, most = _plan(spec, y.itemsize, settings, xp)

    def task(chunk, buf):
        out = y[chunk].reshape(*y[chunk].shape[:-1], g, m)       # (n, rows, *P', G, m) view
        prod = take(buf, out.shape)                              # (n, rows, *P', G, m)
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            xs = xp_[index][..., None]                           # (n, rows, *P', G, 1) view
            _times(xs, tiles[i], out if i == 0 else prod, m)
            if i:
                out += prod

    _chunks.run(task, chunks, workers, lambda: scratch((most * spec.out_channels,), y.dtype, xp))
    return y


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): per chunk and offset, sum_j dy[..., g, j] * w[k, g, j] scattered."""
    xp = _backend.namespace(dy, w)
    g, m = spec.groups, spec.group_out
    tiles = _tiles(w, spec)                                      # (prodK, P_last, G, m)
    dxp = xp.zeros((spec.batch, *spec.padded_size, g), dtype=dy.dtype)  # (N, *Sp, C)
    chunks, workers, most = _plan(spec, dy.itemsize, settings, xp, whole_images=True)

    def task(chunk, buf):
        d = dy[chunk].reshape(*dy[chunk].shape[:-1], g, m)       # (n, rows, *P', G, m) view
        prod = take(buf, d.shape)                                # (n, rows, *P', G, m)
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            _times(d, tiles[i], prod, m)
            target = dxp[index]                                  # (n, rows, *P', G) view
            target += prod[..., 0] if m == 1 else prod.sum(axis=-1)

    _chunks.run(task, chunks, workers, lambda: scratch((most * spec.out_channels,), dy.dtype, xp))
    return dxp


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (*K, 1, F): per chunk and offset, the sum over positions of xs_k * dy (as a
    matrix-vector product with ones: faster than NumPy's sum over rows)."""
    xp = _backend.namespace(xp_, dy)
    g, m, f = spec.groups, spec.group_out, spec.out_channels
    nk = math.prod(spec.kernel_size)
    chunks, workers, most = _plan(spec, dy.itemsize, settings, xp, fixed_bytes=nk * f * 8)

    def task(chunk, state):
        buf, ones, acc = state
        d = dy[chunk].reshape(*dy[chunk].shape[:-1], g, m)       # (n, rows, *P', G, m) view
        prod = take(buf, d.shape)                                # (n, rows, *P', G, m)
        rows = prod.size // f
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            _times(xp_[index][..., None], d, prod, m)
            acc[i] += ones[:rows] @ prod.reshape(rows, f)        # (F,)

    def state():
        return (scratch((most * f,), dy.dtype, xp), xp.ones(most, dtype=dy.dtype),
                xp.zeros((nk, f), dtype=dy.dtype))

    dw = sum(acc for _, _, acc in _chunks.run(task, chunks, workers, state))  # (prodK, F)
    return dw.reshape(*spec.kernel_size, 1, f)                   # (*K, 1, F)
