"""Winograd F(2x2, 3x3): 2-D 3x3 stride-1 convolutions with 2.25x fewer multiplications.

Each 2x2 block of outputs (a tile) reads a 4x4 block d of the padded input; with

    B^T = [[1, 0, -1, 0], [0, 1, 1, 0], [0, -1, 1, 0], [0, 1, 0, -1]]
    G   = [[1, 0, 0], [1/2, 1/2, 1/2], [1/2, -1/2, 1/2], [0, 0, 1]]
    A^T = [[1, 1, 1, 0], [0, 1, -1, -1]]

the tile is Y = A^T [sum_c (G g_c G^T) * (B^T d_c B)] A (Lavin & Gray, 2015): 16 products per
tile and channel pair instead of 36. Per chunk of tiles, the input transform V = B^T d B is eight
adds or subtracts of strided slices (rows first, on whole image rows so that overlapping tiles
share the work, then columns); the channel sums are one batched GEMM (16, G, tiles, C/G) @
(16, G, C/G, F/G); the output transform writes the 2x2 results straight into y. The input
gradient of a stride-1 convolution is a full correlation of dy with the flipped kernel
(`_layout.full_correlation`), so it runs through the same code. The weight gradient is the
forward pass's adjoint in the weights: dU = sum over tiles of V^T (A dy A^T), dw = G^T dU G.

Accuracy: the transforms only add, subtract and halve, so the float32 error stays a small multiple
of the direct method's; docs/algorithms.md states the measured bound and tests/test_algorithms.py
checks it against a float64 ground truth.

Allocates per worker, for a chunk of R tiles of width T1: the column-transformed slab
(4 x (R/T1 + 1) x 2 T1 x C), V (16 x R x C), the GEMM output M (16 x R x F) and the row sums of
the output transform (8 x R x F); for dw, dM (16 x R x F) in M's place and dU (16 x C/G x F).
Odd output sizes add a padded copy of the input (and of dy for dw) and an output one row or
column larger, returned cropped as a view.
"""

from __future__ import annotations

from npconv import _backend, windows
from npconv._workspace import scratch
from npconv.algorithms import _chunks, im2col
from npconv.algorithms._layout import split, take
from npconv.spec import ConvSpec

MIN_WIDTH = 24
"""`auto` picks Winograd when C/G * F/G / (C/G + F/G) reaches this: the GEMM it saves scales with
C * F, the transforms it adds with C + F (measured: docs/benchmarks.md)."""


def applies(spec: ConvSpec) -> bool:
    """A 2-D 3x3 kernel, stride 1, dilation 1."""
    return (spec.rank == 2 and spec.kernel_size == (3, 3) and spec.stride == (1, 1)
            and spec.dilation == (1, 1))


def worthwhile(spec: ConvSpec, itemsize: int) -> bool:
    """Whether `auto` should prefer Winograd to im2col: float64 only. In float32 the GEMM it
    saves runs twice as fast as in float64 while the transforms cost as much, and forward plus
    backward measured no faster than im2col (docs/algorithms.md, "Calibration")."""
    c, f = spec.group_in, spec.group_out
    return itemsize >= 8 and c * f / (c + f) >= MIN_WIDTH and min(spec.out_size) >= 8


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


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (3, 3, C/G, F)) with stride 1, tile by tile."""
    xp = _backend.namespace(xp_, w)
    g, c, f, cg, fg = (spec.groups, spec.in_channels, spec.out_channels, spec.group_in,
                       spec.group_out)
    t0, t1 = (-(-p // 2) for p in spec.out_size)
    extra = tuple(2 * t - p for t, p in zip((t0, t1), spec.out_size))
    if any(extra):
        xp_ = windows.pad(xp_, tuple((0, e) for e in extra))     # (N, 2T0 + 2, 2T1 + 2, C)
    u = transform_w(w, spec)                                     # (16, G, C/G, F/G)
    y = xp.empty((spec.batch, 2 * t0, 2 * t1, f), dtype=xp_.dtype)  # (N, 2T0, 2T1, F)
    width = 8 * 2 * t1 * c + t1 * (16 * c + 24 * f)              # per tile row, at most
    chunks, workers = _chunks.plan(spec.batch, t0, width * y.itemsize, settings, xp=xp)
    most = max((b.stop - b.start) * (r.stop - r.start) for b, r in chunks) * width

    def task(chunk, buf):
        batch, rows = chunk
        nr = (batch.stop - batch.start) * (rows.stop - rows.start)  # tile rows in the chunk
        ub, vb, mb, sb = split(buf, 4 * (nr + batch.stop - batch.start) * 2 * t1 * c,
                               16 * nr * t1 * c,
                               16 * nr * t1 * f)
        slab = xp_[batch, 2 * rows.start:2 * rows.stop + 2]      # (n, 2R0 + 2, Wp, C) view
        v = _input_transform(slab, t1, ub, vb)                   # (16, n, R0, T1, C)
        lead = v.shape[1:4]                                      # (n, R0, T1)
        v = v.reshape(16, -1, g, cg).transpose(0, 2, 1, 3)       # (16, G, R, C/G) view
        m = take(mb, (16, g, v.shape[2], fg))                    # (16, G, R, F/G)
        xp.matmul(v, u, out=m)
        m = xp.moveaxis(m.reshape(4, 4, g, *lead, fg), 2, -2)    # (4i, 4j, n, R0, T1, G, F/G)
        y6 = y[batch, 2 * rows.start:2 * rows.stop].reshape(*lead[:2], 2, t1, 2, g, fg)
        _output_transform(m, y6, sb)                             # fills y6, a view of y

    _chunks.run(task, chunks, workers, lambda: scratch((most,), y.dtype, xp))
    return y[:, :spec.out_size[0], :spec.out_size[1]]            # (N, *P, F)


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


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (3, 3, C/G, F): the adjoint of `forward` in the weights. Per chunk of tiles,
    dU += V^T dM with V = B^T d B and dM = A dy A^T (16 batched GEMMs); dw = G^T dU G."""
    xp = _backend.namespace(xp_, dy)
    g, c, f, cg, fg = (spec.groups, spec.in_channels, spec.out_channels, spec.group_in,
                       spec.group_out)
    t0, t1 = (-(-p // 2) for p in spec.out_size)
    extra = tuple((0, 2 * t - p) for t, p in zip((t0, t1), spec.out_size))
    if any(e for _, e in extra):
        xp_ = windows.pad(xp_, extra)                            # (N, 2T0 + 2, 2T1 + 2, C)
        dy = windows.pad(dy, extra)                              # (N, 2T0, 2T1, F)
    width = 8 * 2 * t1 * c + t1 * (16 * c + 24 * f)              # per tile row, at most
    acc = (16, g, cg, fg)
    chunks, workers = _chunks.plan(spec.batch, t0, width * dy.itemsize, settings, xp=xp,
                                   fixed_bytes=16 * cg * f * dy.itemsize)
    most = max((b.stop - b.start) * (r.stop - r.start) for b, r in chunks) * width

    def task(chunk, state):
        (batch, rows), (buf, du) = chunk, state
        nr = (batch.stop - batch.start) * (rows.stop - rows.start)  # tile rows in the chunk
        ub, vb, mb = split(buf, 4 * (nr + batch.stop - batch.start) * 2 * t1 * c,
                           16 * nr * t1 * c)
        v = _input_transform(xp_[batch, 2 * rows.start:2 * rows.stop + 2], t1, ub, vb)
        v = v.reshape(16, -1, g, cg).transpose(0, 2, 3, 1)       # (16, G, C/G, R) view
        dy6 = dy[batch, 2 * rows.start:2 * rows.stop].reshape(
            -1, rows.stop - rows.start, 2, t1, 2, g, fg)         # (n, R0, 2a, T1, 2b, G, F/G)
        dm = _dy_transform(dy6, mb).reshape(16, -1, g, fg)       # (16, R, G, F/G)
        du += xp.matmul(v, dm.transpose(0, 2, 1, 3))             # (16, G, C/G, F/G)

    def state():
        return scratch((most,), dy.dtype, xp), xp.zeros(acc, dtype=dy.dtype)

    du = sum(d for _, d in _chunks.run(task, chunks, workers, state))
    return _untransform_dw(du, spec)


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): the full correlation of dy with the flipped kernel, by Winograd."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward)


def grad_input_interior(dy, w, spec: ConvSpec, settings):
    """dx (N, *S, C) for zero padding: only the pixels inside the padding."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward, interior=True)


