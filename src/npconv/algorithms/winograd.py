"""Winograd F(2x2, 3x3): 3x3 and 3x3x3 stride-1 convolutions with fewer multiplications.

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

A 3x3x3 kernel is three 3x3 kernels, one per depth offset k: output plane d is
sum_k conv2d(input plane d + k, w[k]). Every input plane is transformed once and serves the
three output planes that read it, and the depth sum joins the channel sum: M(d) = sum_k
V(d + k) U(k), three batched GEMMs per chunk of planes; 12 products per output and channel
pair instead of 27. Internally a 2-D convolution is the 3-D one with one plane and one depth
offset. Chunks are (images, planes, tile rows): for 2-D, whole images or tile rows of one
image (`_chunks.plan`); for 3-D, one image's output planes, or tile rows of one plane when a
plane does not fit.

Accuracy: the transforms only add, subtract and halve, so the float32 error stays a small multiple
of the direct method's; docs/algorithms.md states the measured bound and tests/test_algorithms.py
checks it against a float64 ground truth.

Allocates per worker, for a chunk of R output tiles (T1 per tile row) that reads Ri input tiles
(R plus, for 3-D, the tiles of the two halo planes): the column-transformed slab (4 x the input
rows read x T1 x C), V (16 x Ri x C), the GEMM output M (16 x R x F) and the row sums of the
output transform (8 x R x F), plus for 3-D a second M to add each depth offset's product into;
for dw, dM and its row sums (24 x R x F) in M's place and dU (K_depth x 16 x C/G x F). Odd
output sizes add a padded copy of the input (and of dy for dw) and an output one row or column
larger, returned cropped as a view.
"""

from __future__ import annotations

import math

from npconv import _backend, windows
from npconv._workspace import scratch
from npconv.algorithms import _chunks, im2col
from npconv.algorithms._layout import split, take
from npconv.spec import ConvSpec

MIN_WIDTH = 24
"""`auto` picks Winograd when C/G * F/G / (C/G + F/G) reaches this: the GEMM it saves scales with
C * F, the transforms it adds with C + F (measured: docs/benchmarks.md)."""

DEPTH_CHUNK_BYTES = 16 * 2**20
"""Target temporaries of a 3-D chunk: a chunk of nd output planes transforms nd + 2 input
planes, so small chunks repeat work (one plane per chunk: three times); 16 MiB holds a whole
4x8x28x28x32 float32 image, 10 to 13% faster forward plus backward than 4 MiB chunks."""


def applies(spec: ConvSpec) -> bool:
    """A 2-D 3x3 or 3-D 3x3x3 kernel, stride 1, dilation 1."""
    return (spec.rank in (2, 3) and spec.kernel_size == (3,) * spec.rank
            and spec.stride == (1,) * spec.rank and spec.dilation == (1,) * spec.rank)


def worthwhile(spec: ConvSpec, itemsize: int) -> bool:
    """Whether `auto` should prefer Winograd to im2col: 2-D float64 only. In float32 the GEMM
    it saves runs twice as fast as in float64 while the transforms cost as much, and forward
    plus backward measured no faster than im2col; 3-D (4x8x28x28x32, 3x3x3 -> 32) measured 10
    to 20% slower than im2col in both dtypes, its transforms costing more than the GEMM work
    they save (docs/algorithms.md, "Calibration")."""
    c, f = spec.group_in, spec.group_out
    return (spec.rank == 2 and itemsize >= 8 and c * f / (c + f) >= MIN_WIDTH
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


def _planes(a, spec: ConvSpec):
    """(N, *S, C) as (N, D, H, W, C): a 2-D array gets a depth axis of one plane (a view)."""
    return a if spec.rank == 3 else a[:, None]


def _depth_taps(spec: ConvSpec) -> int:
    return 3 if spec.rank == 3 else 1


def _tiles(spec: ConvSpec):
    """(D, T0, T1): output planes, and tile rows and columns per plane."""
    d = spec.out_size[0] if spec.rank == 3 else 1
    return d, -(-spec.out_size[-2] // 2), -(-spec.out_size[-1] // 2)


def _even(a, spec: ConvSpec, size):
    """a (N, *S, C) zero-padded at the end of its last two axes to `size` (a when it fits)."""
    extra = tuple((0, t - s) for t, s in zip(size, a.shape[-3:-1]))
    if not any(e for _, e in extra):
        return a
    return windows.pad(a, ((0, 0),) * (spec.rank - 2) + extra)


FORWARD_WIDTH, WEIGHT_WIDTH = 24, 24
"""Temporaries per output tile and output channel: M (16) and the output transform's row sums
(8) for the forward pass, dM (16) and its row sums (8) for dw; a 3-D forward adds a second M
(16) to accumulate the depth offsets in (`_out_width`)."""


def _out_width(spec: ConvSpec) -> int:
    return FORWARD_WIDTH + 16 * (_depth_taps(spec) > 1)


def _plan(spec: ConvSpec, itemsize: int, settings, xp, out_width: int, fixed_bytes: int = 0):
    """Chunks (images, planes, tile rows), workers, and the largest chunk's temporaries (in
    elements). `out_width`: temporaries per output tile and output channel."""
    d, t0, t1 = _tiles(spec)
    kd, c, f = _depth_taps(spec), spec.in_channels, spec.out_channels

    def elements(nd, nr):                                        # one image's chunk
        inputs = (nd + kd - 1) * t1 * c * (4 * (2 * nr + 2) + 16 * nr)
        return inputs + nd * nr * t1 * f * out_width

    if spec.rank == 2:                                           # whole images or tile rows
        chunks, workers = _chunks.plan(spec.batch, t0, elements(1, 1) * itemsize, settings,
                                       xp=xp, fixed_bytes=fixed_bytes)
        chunks = [(batch, slice(0, 1), rows) for batch, rows in chunks]
    else:
        chunks, workers = _plan_planes(spec, d, t0, elements, itemsize, settings, xp,
                                       fixed_bytes)
    most = max(elements(p.stop - p.start, r.stop - r.start) * (b.stop - b.start)
               for b, p, r in chunks)
    return chunks, workers, most


def _plan_planes(spec: ConvSpec, d: int, t0: int, elements, itemsize: int, settings, xp,
                 fixed_bytes: int):
    """3-D chunks, one image each: as many whole output planes as fit in DEPTH_CHUNK_BYTES and
    the worker's share of the workspace, else tile rows of one plane; split further when there
    are fewer chunks than workers."""
    smallest = elements(1, 1) * itemsize + fixed_bytes
    workers = max(1, min(_chunks.worker_count(settings, xp), settings.workspace // smallest))
    share = max(settings.workspace // workers - fixed_bytes, 0)
    target = _chunks.chunk_target(DEPTH_CHUNK_BYTES, share, xp) // itemsize
    need = -(-workers // spec.batch)                             # chunks per image, at least
    nd = max((n for n in range(1, d + 1) if elements(n, t0) <= target), default=0)
    nd = min(nd, -(-d // need))
    if nd:
        nr = t0 if -(-d // nd) >= need else -(-t0 // need)
    else:
        nd, nr = 1, max((r for r in range(1, t0 + 1) if elements(1, r) <= target), default=1)
    chunks = [(slice(i, i + 1), slice(p, min(p + nd, d)), slice(r, min(r + nr, t0)))
              for i in range(spec.batch) for p in range(0, d, nd) for r in range(0, t0, nr)]
    return chunks, max(1, min(workers, len(chunks)))


def _slab_transform(x3, chunk, kd: int, t1: int, ub, vb):
    """V (16, n * (nd + kd - 1), R0, T1, C) of the input planes and rows a chunk reads."""
    batch, planes, rows = chunk
    slab = x3[batch, planes.start:planes.stop + kd - 1, 2 * rows.start:2 * rows.stop + 2]
    return _input_transform(slab.reshape(-1, *slab.shape[2:]), t1, ub, vb)


def _depth_slices(v, chunk, kd: int):
    """Per depth offset k, V of the planes read by the chunk's output planes: (16, R, C) views.
    They (and the chunk's output planes, written through a reshaped view of y) stay views
    because a chunk holds one image, or whole images of one plane (kd == 1)."""
    n, nd = chunk[0].stop - chunk[0].start, chunk[1].stop - chunk[1].start
    assert n == 1 or kd == 1, "a 3-D chunk must hold one image"
    per_image = v.reshape(16, n, nd + kd - 1, -1)                # (16, n, planes, R0*T1*C)
    c = v.shape[-1]
    return [per_image[:, :, k:k + nd].reshape(16, -1, c) for k in range(kd)]


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) with stride 1, tile by tile."""
    xp = _backend.namespace(xp_, w)
    g, c, f, cg, fg = (spec.groups, spec.in_channels, spec.out_channels, spec.group_in,
                       spec.group_out)
    d, t0, t1 = _tiles(spec)
    kd = _depth_taps(spec)
    x3 = _planes(_even(xp_, spec, (2 * t0 + 2, 2 * t1 + 2)), spec)  # (N, Dp, 2T0+2, 2T1+2, C)
    w3 = w if spec.rank == 3 else w[None]                        # (kd, 3, 3, C/G, F)
    u = [transform_w(w3[k], spec) for k in range(kd)]            # kd x (16, G, C/G, F/G)
    y = xp.empty((spec.batch, d, 2 * t0, 2 * t1, f), dtype=xp_.dtype)  # (N, D, 2T0, 2T1, F)
    chunks, workers, most = _plan(spec, y.itemsize, settings, xp, _out_width(spec))

    def task(chunk, buf):
        batch, planes, rows = chunk
        n = batch.stop - batch.start
        nd, nr = planes.stop - planes.start, rows.stop - rows.start
        depth = n * (nd + kd - 1)                                # planes transformed
        ub, vb, mb, tb, sb = split(buf, 4 * depth * (2 * nr + 2) * t1 * c,
                                   16 * depth * nr * t1 * c, 16 * n * nd * nr * t1 * f,
                                   16 * n * nd * nr * t1 * f * (kd > 1))
        v = _slab_transform(x3, chunk, kd, t1, ub, vb)           # (16, depth, R0, T1, C)
        lead = (n * nd, nr, t1)                                  # output (planes, R0, T1)
        m = take(mb, (16, g, math.prod(lead), fg))               # (16, G, R, F/G)
        for k, vk in enumerate(_depth_slices(v, chunk, kd)):
            vk = vk.reshape(16, -1, g, cg).transpose(0, 2, 1, 3)  # (16, G, R, C/G) view
            if k == 0:
                xp.matmul(vk, u[k], out=m)
            else:
                tmp = take(tb, m.shape)
                xp.matmul(vk, u[k], out=tmp)
                m += tmp
        m = xp.moveaxis(m.reshape(4, 4, g, *lead, fg), 2, -2)    # (4i, 4j, ..., G, F/G)
        y6 = y[batch, planes, 2 * rows.start:2 * rows.stop].reshape(
            *lead[:2], 2, t1, 2, g, fg)                          # (planes, R0, 2a, T1, 2b, ..)
        _output_transform(m, y6, sb)                             # fills y6, a view of y

    _chunks.run(task, chunks, workers, lambda: scratch((most,), y.dtype, xp))
    y = y[:, :, :spec.out_size[-2], :spec.out_size[-1]]          # (N, D, *P[-2:], F)
    return y if spec.rank == 3 else y[:, 0]                      # (N, *P, F)


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
    """dw (*K, C/G, F): the adjoint of `forward` in the weights. Per chunk of tiles and depth
    offset k, dU[k] += V(d + k)^T dM(d) with V = B^T d B and dM = A dy A^T (16 batched GEMMs);
    dw[k] = G^T dU[k] G."""
    xp = _backend.namespace(xp_, dy)
    g, c, cg, fg = spec.groups, spec.in_channels, spec.group_in, spec.group_out
    _, t0, t1 = _tiles(spec)
    kd = _depth_taps(spec)
    x3 = _planes(_even(xp_, spec, (2 * t0 + 2, 2 * t1 + 2)), spec)  # (N, Dp, 2T0+2, 2T1+2, C)
    dy3 = _planes(_even(dy, spec, (2 * t0, 2 * t1)), spec)      # (N, D, 2T0, 2T1, F)
    acc = (kd, 16, g, cg, fg)
    chunks, workers, most = _plan(spec, dy.itemsize, settings, xp, WEIGHT_WIDTH,
                                  fixed_bytes=math.prod(acc) * dy.itemsize)

    def task(chunk, state):
        (batch, planes, rows), (buf, du) = chunk, state
        n = batch.stop - batch.start
        nd, nr = planes.stop - planes.start, rows.stop - rows.start
        depth = n * (nd + kd - 1)
        ub, vb, mb = split(buf, 4 * depth * (2 * nr + 2) * t1 * c, 16 * depth * nr * t1 * c)
        v = _slab_transform(x3, chunk, kd, t1, ub, vb)           # (16, depth, R0, T1, C)
        dy6 = dy3[batch, planes, 2 * rows.start:2 * rows.stop].reshape(
            n * nd, nr, 2, t1, 2, g, fg)                         # (planes, R0, 2a, T1, 2b, ..)
        dm = _dy_transform(dy6, mb).reshape(16, -1, g, fg)       # (16, R, G, F/G)
        dm = dm.transpose(0, 2, 1, 3)                            # (16, G, R, F/G)
        for k, vk in enumerate(_depth_slices(v, chunk, kd)):
            vk = vk.reshape(16, -1, g, cg).transpose(0, 2, 3, 1)  # (16, G, C/G, R) view
            du[k] += xp.matmul(vk, dm)                           # (16, G, C/G, F/G)

    def state():
        return scratch((most,), dy.dtype, xp), xp.zeros(acc, dtype=dy.dtype)

    du = sum(d_ for _, d_ in _chunks.run(task, chunks, workers, state))
    dw = xp.stack([_untransform_dw(du[k], spec) for k in range(kd)])  # (kd, 3, 3, C/G, F)
    return dw if spec.rank == 3 else dw[0]


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): the full correlation of dy with the flipped kernel, by Winograd."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward)


def grad_input_interior(dy, w, spec: ConvSpec, settings):
    """dx (N, *S, C) for zero padding: only the pixels inside the padding."""
    return im2col.correlate_grad_input(dy, w, spec, settings, forward, interior=True)


