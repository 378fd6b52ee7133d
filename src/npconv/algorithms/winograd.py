"""Winograd F(2x2, 3x3): 3x3 stride-1 2-D convolutions with fewer multiplications.

Each 2x2 block of outputs (a tile) reads a 4x4 block d of the padded input; with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the tile is Y = A^T [sum_c (G g_c G^T) * (B^T d_c B)] A (Lavin & Gray, 2015): 16 products per
tile and channel pair instead of 36. Per chunk of tile rows (whole images, or tile rows of one
image), the input transform V = B^T d B is eight adds or subtracts of strided slices (rows
first, on whole image rows so that overlapping tiles share the work, then columns); the channel
sums are one batched GEMM (16, G, tiles, C/G) @ (16, G, C/G, F/G); the output transform writes
the 2x2 results straight into y. The weight gradient is the forward pass's adjoint in the
weights: dU = sum over tiles of V^T (A dy A^T), dw = G^T dU G.

Exactness: each output's arithmetic reads only the pixels of its own window, but an infinite
pixel meets inf - inf in the transforms (NaN where the definition has inf), and the transforms
can overflow where the direct sum does not. With finite inputs and no overflow every value is
finite, so on NumPy a chunk whose output has a non-finite value (and a weight gradient with
one) is recomputed by im2col: NaN and inf land where the definition puts them. Its float32
error is a small multiple of the GEMM's (docs/algorithms.md), which is why `auto` picks it in
float64 only.

Allocates per worker, for a chunk of R output tiles (T1 per tile row): the column-transformed
slab (4 x the input rows read x T1 x C), V (16 x R x C), the GEMM output M (16 x R x F) and the
row sums of the output transform (8 x R x F); for dw, dM and its row sums (24 x R x F) in M's
place and dU (16 x C/G x F). Odd output sizes add a padded copy of the input (and of dy for dw)
and an output one row or column larger, returned cropped as a view.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from types import ModuleType
from typing import Any

import numpy as np

from npconv import _backend, _chunks, _layout
from npconv._chunks import Chunk, Plan
from npconv._config import Settings
from npconv._workspace import result, scratch
from npconv.algorithms import im2col
from npconv.algorithms._common import PartialSum, split, take
from npconv.spec import ConvSpec

FORWARD_WIDTH, WEIGHT_WIDTH = 24, 24
"""Temporaries per output tile and output channel: M (16) and the output transform's row sums
(8) for the forward pass, dM (16) and its row sums (8) for dw."""


def applies(spec: ConvSpec) -> bool:
    """A 2-D 3x3 kernel, stride 1, dilation 1."""
    return (spec.rank == 2 and spec.kernel_size == (3, 3) and spec.stride == (1, 1)
            and spec.dilation == (1, 1))


def worthwhile(spec: ConvSpec, itemsize: int, settings: Settings) -> bool:
    """Whether `auto` should prefer Winograd to im2col: float64 only, wide enough layers. In
    float32 the GEMM it saves runs twice as fast as in float64 while the transforms cost as
    much, and forward plus backward measured no faster than im2col (docs/algorithms.md,
    "Calibration")."""
    c, f = spec.group_in, spec.group_out
    return (itemsize >= 8 and c * f / (c + f) >= settings.tuning.winograd_min_width
            and min(spec.out_size) >= 8)


def transform_w(w, spec: ConvSpec):
    """U = G g G^T per (c, f): (3, 3, C/G, F) -> (16, G, C/G, F/G), component 4 * i + j."""
    xp = _backend.namespace(w)
    gm = xp.asarray([[1, 0, 0], [.5, .5, .5], [.5, -.5, .5], [0, 0, 1]], dtype=w.dtype)  # (4, 3)
    u = xp.tensordot(gm, w, axes=(1, 1))                         # (4j, 3, C/G, F)
    u = xp.tensordot(gm, u, axes=(1, 1))                         # (4i, 4j, C/G, F)
    u = u.reshape(16, spec.group_in, spec.groups, spec.group_out)  # (16, C/G, G, F/G)
    return xp.ascontiguousarray(u.transpose(0, 2, 1, 3))         # (16, G, C/G, F/G)


def _input_transform(slab, t1: int, u_buf, v_buf):
    """V = B^T d B for the tiles of a slab of 2 R0 + 2 input rows (n, 2R0+2, Wp, C).

    Columns first: their slices are strided by tile (inner loops of C elements), so they run on
    the slab's 2 R0 + 2 rows rather than on the 4 R0 rows of the tiles; the row transform then
    runs on contiguous runs of T1 * C elements. Returns V (16, n, R0, T1, C), component 4i + j.
    """
    n, rows, _, c = slab.shape
    r0 = (rows - 2) // 2
    col = [slab[:, :, j:j + 2 * t1 - 1:2] for j in range(4)]     # 4 x (n, rows, T1, C) views
    u = take(u_buf, (4, n, rows, t1, c))                         # (4j, n, rows, T1, C)
    _b_transform(col, u)
    row = [u[:, :, i:i + 2 * r0 - 1:2] for i in range(4)]        # 4 x (4j, n, R0, T1, C) views
    v = take(v_buf, (4, 4, n, r0, t1, c))                        # (4i, 4j, n, R0, T1, C)
    _b_transform(row, v)
    return v.reshape(16, n, r0, t1, c)                           # (16, n, R0, T1, C)


def _b_transform(d, out) -> None:
    """out[i] = (B^T d)[i] for four equally shaped slices d[0..3]."""
    xp = _backend.namespace(out)
    xp.subtract(d[0], d[2], out=out[0])
    xp.add(d[1], d[2], out=out[1])
    xp.subtract(d[2], d[1], out=out[2])
    xp.subtract(d[1], d[3], out=out[3])


def _output_transform(m, y6, buf) -> None:
    """Y = A^T M A: m (4i, 4j, n, R0, T1, G, F/G) into y6 (n, R0, 2a, T1, 2b, G, F/G).

    Rows first, on whole components (long inner loops); the column sums then write the
    interleaved 2x2 tiles of y.
    """
    xp = _backend.namespace(m)
    s = take(buf, (2, 4, *m.shape[2:]))                          # (2a, 4j, n, R0, T1, G, F/G)
    _a_transform(m, s)                                           # s[a, j]: sums over i
    out = xp.moveaxis(y6, (4, 2), (0, 1))                        # (2b, 2a, n, R0, T1, G, F/G)
    _a_transform(s.swapaxes(0, 1), out)                          # y[a, b]: sums over j


def _a_transform(m, out) -> None:
    """out[a] = (A^T m)[a] for four equally shaped slices m[0..3]."""
    xp = _backend.namespace(out)
    xp.add(m[0], m[1], out=out[0])
    out[0] += m[2]
    xp.subtract(m[1], m[2], out=out[1])
    out[1] -= m[3]


def _quiet(task: Callable[..., None]) -> Callable[..., None]:
    """The task without NumPy's overflow and invalid-value warnings (set in the thread that
    runs it): a chunk whose transforms overflow is recomputed by im2col, which warns where the
    definition's arithmetic does."""
    @functools.wraps(task)
    def quiet(*args: Any) -> None:
        with np.errstate(over="ignore", invalid="ignore"):
            task(*args)

    return quiet


def _tiles(spec: ConvSpec) -> tuple[int, int]:
    """(T0, T1): tile rows and columns."""
    return -(-spec.out_size[0] // 2), -(-spec.out_size[1] // 2)


def _even(a: Any, size: tuple[int, int], settings: Settings) -> Any:
    """a (N, H, W, C) zero-padded at the end of its spatial axes to `size` (a when it fits)."""
    extra = tuple((0, t - s) for t, s in zip(size, a.shape[1:3]))
    return _layout.padded(a, extra, "zeros", a.dtype, settings)


def _plan(spec: ConvSpec, itemsize: int, settings: Settings, xp: ModuleType, out_width: int,
          fixed_bytes: int = 0) -> tuple[Plan, int]:
    """Chunks of tile rows, and the largest chunk's temporaries (in elements). `out_width`:
    temporaries per output tile and output channel."""
    t0, t1 = _tiles(spec)
    c, f = spec.in_channels, spec.out_channels

    def elements(n: int, nr: int) -> int:                        # n images, nr tile rows
        return n * t1 * (c * (4 * (2 * nr + 2) + 16 * nr) + nr * f * out_width)

    chunks = _chunks.plan(spec.batch, t0, settings, row_bytes=elements(1, 1) * itemsize,
                          fixed_bytes=fixed_bytes, xp=xp)
    most = max(elements(ch.batch.stop - ch.batch.start, ch.rows.stop - ch.rows.start)
               for ch in chunks.chunks)
    return chunks, most


def _slab_transform(x: Any, chunk: Chunk, t1: int, ub: Any, vb: Any) -> Any:
    """V (16, n, R0, T1, C) of the input rows a chunk of tile rows reads."""
    rows = chunk.rows
    return _input_transform(x[chunk.batch, 2 * rows.start:2 * rows.stop + 2], t1, ub, vb)


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, bias: Any = None,
            clip: tuple | None = None) -> Any:
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (3, 3, C/G, F)) (+ bias (F,)), tile by tile; then
    clipped to `clip` in one pass (after the check for non-finite tiles, which a clip would
    hide)."""
    xp = _backend.namespace(xp_, w)
    g, c, f, cg, fg = (spec.groups, spec.in_channels, spec.out_channels, spec.group_in,
                       spec.group_out)
    t0, t1 = _tiles(spec)
    x = _even(xp_, (2 * t0 + 2, 2 * t1 + 2), settings)           # (N, 2T0+2, 2T1+2, C)
    u = transform_w(w, spec)                                     # (16, G, C/G, F/G)
    y = result((spec.batch, 2 * t0, 2 * t1, f), xp_.dtype, xp)  # (N, 2T0, 2T1, F)
    chunks, most = _plan(spec, y.itemsize, settings, xp, FORWARD_WIDTH)

    @_quiet
    def task(chunk: Chunk, state: tuple[Any, list[Chunk]]) -> None:
        (batch, rows, _), (buf, bad) = chunk, state
        n, nr = batch.stop - batch.start, rows.stop - rows.start
        ub, vb, mb, sb = split(buf, 4 * n * (2 * nr + 2) * t1 * c, 16 * n * nr * t1 * c,
                               16 * n * nr * t1 * f)
        v = _slab_transform(x, chunk, t1, ub, vb)                # (16, n, R0, T1, C)
        v = v.reshape(16, -1, g, cg).transpose(0, 2, 1, 3)       # (16, G, R, C/G) view
        m = take(mb, (16, g, n * nr * t1, fg))                   # (16, G, R, F/G)
        xp.matmul(v, u, out=m)
        m = xp.moveaxis(m.reshape(4, 4, g, n, nr, t1, fg), 2, -2)  # (4i, 4j, n, R0, T1, G, F/G)
        out = y[batch, 2 * rows.start:2 * rows.stop]             # (n, 2R0, 2T1, F) view
        _output_transform(m, out.reshape(n, nr, 2, t1, 2, g, fg), sb)
        if bias is not None:
            out += bias
        if xp is np and not math.isfinite(out.sum()):
            bad.append(chunk)

    states = _chunks.run(task, chunks, lambda: (scratch((most,), y.dtype, xp), []))
    y = y[:, :spec.out_size[0], :spec.out_size[1]]               # (N, *P, F)
    for chunk in (c_ for _, bad in states for c_ in bad):        # non-finite: the definition
        rows = slice(2 * chunk.rows.start, min(2 * chunk.rows.stop, spec.out_size[0]))
        sub, index = spec.rows(chunk.batch, rows)
        y[chunk.batch, rows] = im2col.forward(xp_[index], w, sub, settings, bias)
    if clip is not None:
        xp.clip(y, *clip, out=y)
    return y


def _dy_transform(dy6, buf):
    """dM = A dy A^T for the 2x2 tiles of dy6 (n, R0, 2a, T1, 2b, G, F/G): the adjoint of the
    output transform. Returns (16, n, R0, T1, G, F/G), component 4i + j, in buf."""
    xp = _backend.namespace(dy6)
    rows = [xp.moveaxis(dy6[:, :, a], 3, 0) for a in range(2)]   # 2 x (2b, n, R0, T1, G, F/G)
    s = take(buf, (4, *rows[0].shape))                           # (4i, 2b, n, R0, T1, G, F/G)
    _at_transform(rows, s)
    dm = take(buf[s.size:], (4, 4, *rows[0].shape[1:]))          # (4i, 4j, n, R0, T1, G, F/G)
    _at_transform([s[:, 0], s[:, 1]], dm.swapaxes(0, 1))
    return dm.reshape(16, *dm.shape[2:])                         # (16, n, R0, T1, G, F/G)


def _at_transform(d, out) -> None:
    """out[i] = (A d)[i] for two equally shaped slices d[0..1], A = [[1,0],[1,1],[1,-1],[0,-1]]."""
    xp = _backend.namespace(out)
    out[0] = d[0]
    xp.add(d[0], d[1], out=out[1])
    xp.subtract(d[0], d[1], out=out[2])
    xp.negative(d[1], out=out[3])


def _untransform_dw(du, spec: ConvSpec):
    """dw = G^T dU G, the adjoint of the weight transform: (16, G, C/G, F/G) -> (3, 3, C/G, F)."""
    xp = _backend.namespace(du)
    gt = xp.asarray([[1, .5, .5, 0], [0, .5, -.5, 0], [0, .5, .5, 1]], dtype=du.dtype)  # (3, 4)
    du = du.reshape(4, 4, spec.groups, spec.group_in, spec.group_out)  # (4i, 4j, G, C/G, F/G)
    du = du.transpose(0, 1, 3, 2, 4).reshape(4, 4, spec.group_in, -1)  # (4i, 4j, C/G, F)
    dw = xp.tensordot(gt, du, axes=(1, 0))                       # (3k, 4j, C/G, F)
    dw = xp.tensordot(gt, dw, axes=(1, 1))                       # (3l, 3k, C/G, F)
    return xp.ascontiguousarray(dw.transpose(1, 0, 2, 3))        # (3k, 3l, C/G, F)


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings) -> Any:
    """dw (3, 3, C/G, F): the adjoint of `forward` in the weights. Per chunk of tiles,
    dU += V^T dM with V = B^T d B and dM = A dy A^T (16 batched GEMMs); dw = G^T dU G. When dw
    has a non-finite value, im2col's (the definition's) instead."""
    xp = _backend.namespace(xp_, dy)
    g, c, cg, fg = spec.groups, spec.in_channels, spec.group_in, spec.group_out
    t0, t1 = _tiles(spec)
    x = _even(xp_, (2 * t0 + 2, 2 * t1 + 2), settings)           # (N, 2T0+2, 2T1+2, C)
    dy_ = _even(dy, (2 * t0, 2 * t1), settings)                  # (N, 2T0, 2T1, F)
    acc = (16, g, cg, fg)
    chunks, most = _plan(spec, dy.itemsize, settings, xp, WEIGHT_WIDTH,
                         fixed_bytes=2 * math.prod(acc) * dy.itemsize)

    @_quiet
    def task(chunk: Chunk, state: tuple[Any, PartialSum]) -> None:
        (batch, rows, _), (buf, du) = chunk, state
        n, nr = batch.stop - batch.start, rows.stop - rows.start
        ub, vb, mb = split(buf, 4 * n * (2 * nr + 2) * t1 * c, 16 * n * nr * t1 * c)
        v = _slab_transform(x, chunk, t1, ub, vb)                # (16, n, R0, T1, C)
        v = v.reshape(16, -1, g, cg).transpose(0, 2, 3, 1)       # (16, G, C/G, R) view
        dy6 = dy_[batch, 2 * rows.start:2 * rows.stop].reshape(
            n, nr, 2, t1, 2, g, fg)                              # (n, R0, 2a, T1, 2b, G, F/G)
        dm = _dy_transform(dy6, mb).reshape(16, -1, g, fg)       # (16, R, G, F/G)
        du.add(v, dm.transpose(0, 2, 1, 3))                      # (16, G, C/G, F/G)

    def state() -> tuple[Any, PartialSum]:
        return scratch((most,), dy.dtype, xp), PartialSum(acc, dy.dtype, xp, chunks)

    sums = [du for _, du in _chunks.run(task, chunks, state)]
    with np.errstate(over="ignore", invalid="ignore"):
        dw = _untransform_dw(PartialSum.total(sums, acc, dy.dtype, xp), spec)
    if xp is np and not math.isfinite(dw.sum()):
        return im2col.grad_weight(xp_, dy, spec, settings)
    return dw
