"""Depthwise convolutions (one input channel per group) as elementwise products per offset.

With C/G == 1 each output channel g*m + j (m = F/G filters per group) reads input channel g only,
so the GEMMs of im2col degenerate to length-prod(K) dot products. Instead, per kernel offset k,
with xs_k = xp[p * stride + k * dilation] (a strided slice, shape (..., G)):

    y[..., g, j]   = sum_k xs_k[..., g] * w[k, g, j]
    dw[k, g, j]    = sum_{n, p} xs_k[..., g] * dy[..., g, j]

all vectorized over channels and positions: there is no loop over groups. Work runs in chunks
so each product stays in cache; per worker it allocates one product buffer the size of the
chunk's output (rows x F) and, for the weight gradient, a (prod(K), F) accumulator and a vector
of ones; the weights are repeated along the last output axis once (prod(K) x P_last x F).
"""

from __future__ import annotations

import math
from types import ModuleType
from typing import Any

from npconv import _backend, _chunks
from npconv._chunks import Chunk, Plan
from npconv._config import Settings
from npconv._workspace import scratch
from npconv.algorithms._common import chunk_taps, take
from npconv.spec import ConvSpec


def applies(spec: ConvSpec) -> bool:
    """One input channel per group."""
    return spec.group_in == 1


def _plan(spec: ConvSpec, itemsize: int, settings: Settings, xp: ModuleType,
          fixed_bytes: int = 0) -> Plan:
    row = math.prod(spec.out_size[1:]) * 2 * spec.out_channels * itemsize
    return _chunks.plan(spec.batch, spec.out_size[0], settings, row_bytes=row,
                        taps=math.prod(spec.kernel_size), fixed_bytes=fixed_bytes, xp=xp)


def tiles(w: Any, spec: ConvSpec) -> Any:
    """(*K, 1, F) -> (prod(K), P_last, G, m): each offset's weights repeated along the last
    output axis (rank >= 2), so that products with a slice run over whole contiguous rows
    instead of restarting every G * m elements (3x faster than broadcasting a (G, m) row)."""
    xp = _backend.namespace(w)
    width = spec.out_size[-1] if spec.rank > 1 else 1
    wk = w.reshape(-1, 1, spec.groups, spec.group_out)           # (prodK, 1, G, m)
    return xp.ascontiguousarray(xp.broadcast_to(wk, (wk.shape[0], width, *wk.shape[2:])))


def _times(a: Any, b: Any, out: Any, m: int) -> None:
    """out = a * b over (..., G, m) arrays, without the m axis when m == 1 (longer loops)."""
    xp = _backend.namespace(out)
    if m == 1:
        xp.multiply(a[..., 0], b[..., 0], out=out[..., 0])
    else:
        xp.multiply(a, b, out=out)


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, bias: Any = None) -> Any:
    """y (N, *P, F) (+ bias (F,)): per chunk, y += xs_k[..., None] * w[k] over kernel offsets."""
    xp = _backend.namespace(xp_, w)
    g, m = spec.groups, spec.group_out
    tiles_ = tiles(w, spec)                                      # (prodK, P_last, G, m)
    y = xp.empty((spec.batch, *spec.out_size, spec.out_channels), dtype=xp_.dtype)  # (N,*P,F)
    chunks = _plan(spec, y.itemsize, settings, xp)
    b = None if bias is None else bias.reshape(g, m)             # (G, m)

    def task(chunk: Chunk, buf: Any) -> None:
        part = y[chunk.batch, chunk.rows]                        # (n, rows, *P', F) view
        out = part.reshape(*part.shape[:-1], g, m)               # (n, rows, *P', G, m) view
        prod = take(buf, out.shape)                              # (n, rows, *P', G, m)
        for i, index in enumerate(chunk_taps(spec, chunk)):
            xs = xp_[index][..., None]                           # (n, rows, *P', G, 1) view
            _times(xs, tiles_[i], out if i == 0 else prod, m)
            if i:
                out += prod
        if b is not None:
            out += b

    most = chunks.most(spec.out_size)
    _chunks.run(task, chunks, lambda: scratch((most * spec.out_channels,), y.dtype, xp))
    return y


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings) -> Any:
    """dw (*K, 1, F): per chunk and offset, the sum over positions of xs_k * dy (as a
    matrix-vector product with ones: faster than NumPy's sum over rows)."""
    xp = _backend.namespace(xp_, dy)
    g, m, f = spec.groups, spec.group_out, spec.out_channels
    nk = math.prod(spec.kernel_size)
    chunks = _plan(spec, dy.itemsize, settings, xp, fixed_bytes=nk * f * dy.itemsize)
    most = chunks.most(spec.out_size)

    def task(chunk: Chunk, state: tuple[Any, Any, Any]) -> None:
        buf, ones, acc = state
        part = dy[chunk.batch, chunk.rows]                       # (n, rows, *P', F) view
        d = part.reshape(*part.shape[:-1], g, m)                 # (n, rows, *P', G, m) view
        prod = take(buf, d.shape)                                # (n, rows, *P', G, m)
        rows = prod.size // f
        for i, index in enumerate(chunk_taps(spec, chunk)):
            _times(xp_[index][..., None], d, prod, m)
            acc[i] += ones[:rows] @ prod.reshape(rows, f)        # (F,)

    def state() -> tuple[Any, Any, Any]:
        return (scratch((most * f,), dy.dtype, xp), xp.ones(most, dtype=dy.dtype),
                xp.zeros((nk, f), dtype=dy.dtype))

    dw = sum(acc for _, _, acc in _chunks.run(task, chunks, state))  # (prodK, F)
    return dw.reshape(*spec.kernel_size, 1, f)                   # (*K, 1, F)
