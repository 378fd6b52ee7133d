"""Chunked im2col: the window matrix built one chunk at a time, each chunk one (batched) GEMM.

With cols = unfold(xp), the window matrix (N*prod(P), prod(K)*C), all three computations are
GEMMs against it (see `npconv.kernels`): y = cols @ w, dw = cols^T @ dy, dcols = dy @ w^T folded
back onto the input. Building cols whole costs prod(K) times the input's memory (4 GiB is easy to
reach), so each worker fills a buffer of a few MiB with the windows of one chunk of output
positions and multiplies it right away, while it is still in cache. Groups are a batch axis of
the GEMM: one `matmul` over (G, rows, prod(K)*C/G), no Python loop over groups.

3-D convolutions whose output planes each fill a chunk gather through a depth ring
(`_ring_task`): consecutive output planes share all but s of their Kd input planes, so each
plane copies in only the windows of the planes it adds.

Allocates, per worker: forward, one cols buffer (rows x prod(K)*C) plus, with groups, an output
buffer (rows x F; through the depth ring, one plane's output rows); weight gradient, one cols
buffer and a (prod(K)*C/G x F) accumulator; input gradient, one dcols buffer. The input
gradient also allocates the padded dx (the output); with stride 1 and at least
`GATHER_MIN_CHANNELS` channels it is computed instead as a forward convolution of dy,
zero-padded, with the flipped kernel (`_layout.full_correlation`), which gathers rather than
scatters and so runs on all workers; that allocates the padded dy.
"""

from __future__ import annotations

import math

import numpy as np

from npconv import _backend, windows
from npconv._workspace import scratch
from npconv.algorithms import _chunks
from npconv.algorithms._layout import (
    chunk_windows,
    flipped_w,
    full_correlation,
    grouped_rows,
    grouped_w,
    pad_or_crop,
    take,
    ungrouped_dw,
)
from npconv.spec import ConvSpec

NARROW_RUN = 16
"""Below this many contiguous elements per window row (K_last * C/G), windows are gathered into
the transposed window matrix, whose rows are whole output rows (`gather_t`)."""

STRIDE1_CHUNK_BYTES = 2**20
"""Chunk size of the stride-1 gathers (forward, weight gradient, and so the full-correlation
input gradient): window matrices of 1 MiB per chunk measured 5 to 9% faster than 4 MiB for each
ResNet 3x3 op on the benchmark machine, while strided ones ran 8 to 12% slower (more, smaller
GEMMs for the same output), so those keep `_chunks.CHUNK_BYTES`."""

ADDS_BIAS = True
"""`forward` takes the bias and adds it chunk by chunk (`npconv.kernels.forward`)."""

GATHER_MIN_CHANNELS = 8
"""Stride-1 input gradients of convolutions with at least this many input channels per group are
computed as a full correlation (a gather); below it, the scatter's GEMM output is wider."""


def _chunk_bytes(spec: ConvSpec) -> int | None:
    """1 MiB for stride-1 gathers of whole window rows; narrow windows (`gather_t`) keep the
    default, fewer chunks costing fewer Python calls (their dx scatters once per offset)."""
    stride1 = all(s == 1 for s in spec.stride)
    return STRIDE1_CHUNK_BYTES if stride1 and not _narrow(spec) else None


def _row_bytes(spec: ConvSpec, width: int, itemsize: int) -> int:
    return math.prod(spec.out_size[1:]) * width * itemsize


def gather(win, chunk, groups: int, kcg: int, buf):
    """Copy the chunk's windows (n, rows, *P', *K, C) into buf as (G, R, prod(K) * C/G)."""
    xp = _backend.namespace(buf)
    part = win[chunk]                                            # (n, rows, *P', *K, C) view
    if groups > 1:
        part = part.reshape(*part.shape[:-1], groups, -1)        # (..., *K, G, C/G) view
        part = xp.moveaxis(part, -2, 0)                          # (G, n, rows, ..., *K, C/G)
    cols = take(buf, part.shape)                                 # same shape, contiguous
    xp.copyto(cols, part)
    return cols.reshape(groups, -1, kcg)                         # (G, R, prodK*C/G)


def _narrow(spec: ConvSpec) -> bool:
    return spec.groups == 1 and spec.kernel_size[-1] * spec.in_channels < NARROW_RUN


def gather_t(win, spec: ConvSpec, chunk, buf):
    """The chunk's transposed window matrix (prod(K) * C, R), copied from the window view
    transposed to (*K, C, n, rows, *P'): one copy whose inner loop runs along output rows."""
    xp = _backend.namespace(buf)
    r = spec.rank
    part = win[chunk]                                            # (n, rows, *P', *K, C) view
    part = part.transpose(*range(r + 1, 2 * r + 2), *range(r + 1))  # (*K, C, n, rows, *P')
    cols_t = take(buf, part.shape)
    xp.copyto(cols_t, part)
    return cols_t.reshape(-1, _chunks.rows_of(chunk, spec.out_size))  # (prodK*C, R)


def gather_offsets(xp_, spec: ConvSpec, chunk, buf):
    """The chunk's window matrix (G, R, prod(K) * C/G), one strided copy per kernel offset: for
    array modules whose sliding-window view synchronizes with the host (CuPy checks the window
    shape on the device)."""
    xp = _backend.namespace(xp_)
    g, cg, nk = spec.groups, spec.group_in, math.prod(spec.kernel_size)
    batch, rows = chunk
    lead = (batch.stop - batch.start, rows.stop - rows.start, *spec.out_size[1:])
    cols = take(buf, (g, *lead, nk, cg))                         # (G, n, rows, *P', prodK, C/G)
    for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
        part = xp_[index].reshape(*lead, g, cg)                  # (n, rows, *P', G, C/G) view
        xp.copyto(cols[..., i, :], xp.moveaxis(part, -2, 0))
    return cols.reshape(g, -1, nk * cg)                          # (G, R, prodK*C/G)


def _unfold(xp_, spec: ConvSpec):
    """The read-only window view (N, *P, *K, C) on NumPy; None elsewhere (see gather_offsets)."""
    if _backend.namespace(xp_) is not np:
        return None
    return windows.unfold(xp_, spec.kernel_size, spec.stride, spec.dilation, spec.out_size)


def chunk_cols(xp_, win, spec: ConvSpec, chunk, buf):
    """The chunk's window matrix (G, R, prod(K) * C/G), copied into buf (a transposed view of
    it when window rows are narrow)."""
    if win is None:
        return gather_offsets(xp_, spec, chunk, buf)
    if _narrow(spec):
        return gather_t(win, spec, chunk, buf).T[None]           # (1, R, prodK*C) view
    kcg = math.prod(spec.kernel_size) * spec.group_in
    return gather(win, chunk, spec.groups, kcg, buf)             # (G, R, prodK*C/G)


def _multiply(cols, wg, y_rows, buf) -> None:
    """y_rows (R, F) = cols (G, R, prodK*C/G) @ wg (G, prodK*C/G, F/G), group by group."""
    xp = _backend.namespace(cols)
    g, r, fg = cols.shape[0], cols.shape[1], wg.shape[2]
    if g == 1:
        xp.matmul(cols[0], wg[0], out=y_rows)
        return
    out = take(buf, (g, r, fg))                                  # (G, R, F/G)
    xp.matmul(cols, wg, out=out)
    y_rows.reshape(r, g, fg)[...] = out.transpose(1, 0, 2)       # (R, G, F/G)


def forward(xp_, w, spec: ConvSpec, settings, bias=None):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) (+ bias (F,)), one GEMM per chunk."""
    xp = _backend.namespace(xp_, w)
    g, f = spec.groups, spec.out_channels
    kc = math.prod(spec.kernel_size) * spec.in_channels
    win = _unfold(xp_, spec)                                     # (N, *P, *K, C) view
    wg = grouped_w(w, spec)                                      # (G, prodK*C/G, F/G)
    y = xp.empty((spec.batch, *spec.out_size, f), dtype=xp_.dtype)  # (N, *P, F)
    if win is not None and _ring(spec, y.itemsize):
        return _ring_forward(win, w, y, spec, settings, bias)
    width = kc + (f if g > 1 else 0)
    chunks, workers = _chunks.plan(spec.batch, spec.out_size[0],
                                   _row_bytes(spec, width, y.itemsize), settings, xp=xp,
                                   chunk_bytes=_chunk_bytes(spec))
    most = max(_chunks.rows_of(c, spec.out_size) for c in chunks)

    def task(chunk, buf):
        cols = chunk_cols(xp_, win, spec, chunk, buf)            # (G, R, prodK*C/G)
        y_rows = y[chunk].reshape(-1, f)                         # (R, F) view
        _multiply(cols, wg, y_rows, buf[most * kc:])
        if bias is not None:
            y_rows += bias

    _chunks.run(task, chunks, workers, lambda: scratch((most * width,), y.dtype, xp))
    return y


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (*K, C/G, F): per chunk, dw += cols^T @ dy; workers' partial sums added at the end."""
    xp = _backend.namespace(xp_, dy)
    g, kcg = spec.groups, math.prod(spec.kernel_size) * spec.group_in
    win = _unfold(xp_, spec)                                     # (N, *P, *K, C) view
    if win is not None and _ring(spec, dy.itemsize):
        return _ring_grad_weight(win, dy, spec, settings)
    acc_bytes = g * kcg * spec.group_out * dy.itemsize
    chunks, workers = _chunks.plan(
        spec.batch, spec.out_size[0], _row_bytes(spec, g * kcg, dy.itemsize), settings, xp=xp,
        fixed_bytes=acc_bytes, chunk_bytes=_chunk_bytes(spec))
    most = max(_chunks.rows_of(c, spec.out_size) for c in chunks)

    def task(chunk, state):
        buf, acc = state
        cols = chunk_cols(xp_, win, spec, chunk, buf)            # (G, R, prodK*C/G)
        d = grouped_rows(dy[chunk], g)                           # (G, R, F/G) view
        acc += xp.matmul(cols.transpose(0, 2, 1), d)             # (G, prodK*C/G, F/G)

    def state():
        return (scratch((most * g * kcg,), dy.dtype, xp),        # (R * prodK * C,)
                xp.zeros((g, kcg, spec.group_out), dtype=dy.dtype))  # (G, prodK*C/G, F/G)

    dw = sum(acc for _, acc in _chunks.run(task, chunks, workers, state))
    return ungrouped_dw(dw, spec)


def _ring(spec: ConvSpec, itemsize: int) -> bool:
    """Whether a 3-D convolution gathers its windows through a depth ring (`_ring_forward`):
    ungrouped, wide window rows, several output planes, depth dilation 1 and depth stride below
    the kernel depth (so that neighbouring output planes share input planes), one output plane's
    window matrix at least a chunk (chunks would hold one plane each anyway, so the ring makes
    no more GEMM calls than they do), and at least F positions per plane (so that dw's product
    per plane, prod(K)*C x F, is no larger than the plane's window matrix)."""
    if spec.rank != 3 or spec.groups != 1 or _narrow(spec):
        return False
    kd, s, d = spec.kernel_size[0], spec.stride[0], spec.dilation[0]
    kc = math.prod(spec.kernel_size) * spec.in_channels
    plane = math.prod(spec.out_size[1:])
    return (d == 1 and s < kd and spec.out_size[0] > 1 and plane >= spec.out_channels
            and _row_bytes(spec, kc, itemsize) >= _chunks.target_bytes(_chunk_bytes(spec)))


def _ring_slots(spec: ConvSpec):
    """(P1, P2, Kd, K1, K2, C): the ring, one output plane's window matrix (P1*P2, prod(K)*C)
    with the windows of input plane i in depth slot i % Kd."""
    return (*spec.out_size[1:], *spec.kernel_size, spec.in_channels)


def _ring_task(win, spec: ConvSpec, step):
    """Task walking a chunk (one image, a run of output planes) through a depth ring.

    Output plane d reads input planes d*s .. d*s + Kd - 1, in slots (d*s + k) % Kd for depth
    offset k; the ring is filled with a chunk's first Kd planes, after which each output plane
    gathers only the s planes it adds. The windows of input plane i are win[n, j, :, :, i - j*s]
    for any output plane j that reads it. `step(n, d, cols, r, state)` then gets the plane's
    window matrix cols (P1*P2, Kd*K1*K2*C), whose depth blocks are rotated by r = d*s % Kd:
    block j holds depth offset (j - r) % Kd, so blocks r.. hold offsets 0.. Kd-r-1 and blocks
    ..r-1 the offsets Kd-r.. Kd-1.
    """
    kd, s, p0 = spec.kernel_size[0], spec.stride[0], spec.out_size[0]
    shape = _ring_slots(spec)
    rows = math.prod(shape[:2])

    def task(chunk, state):
        (batch, planes), buf = chunk, state[0]
        n = batch.start
        ring = take(buf, shape)                                  # (P1, P2, Kd, K1, K2, C)
        cols = ring.reshape(rows, -1)                            # (P1*P2, prodK*C)
        for d in range(planes.start, planes.stop):
            first = d * s if d == planes.start else (d - 1) * s + kd
            for i in range(first, d * s + kd):                   # the input planes d adds
                j = min(i // s, p0 - 1)
                ring[:, :, i % kd] = win[n, j, :, :, i - j * s]  # (P1, P2, K1, K2, C)
            step(n, d, cols, d * s % kd, state)

    return task


def _ring_forward(win, w, y, spec: ConvSpec, settings, bias):
    """y (N, *P, F) through the depth ring: per output plane, the ring's blocks r.. against the
    first Kd - r depth offsets of w, plus (when r > 0) its blocks ..r-1 against the last r, all
    views of w (`_ring_task`)."""
    xp = _backend.namespace(y)
    kd, f = spec.kernel_size[0], spec.out_channels
    w2 = w.reshape(-1, f)                                        # (Kd * B, F), B = K1*K2*C
    b = w2.shape[0] // kd
    rows, size = math.prod(spec.out_size[1:]), math.prod(_ring_slots(spec))

    def step(n, d, cols, r, state):
        y_rows = y[n, d].reshape(-1, f)                          # (P1*P2, F) view
        xp.matmul(cols[:, r * b:], w2[:(kd - r) * b], out=y_rows)
        if r:
            tmp = take(state[0][size:], y_rows.shape)
            xp.matmul(cols[:, :r * b], w2[(kd - r) * b:], out=tmp)
            y_rows += tmp
        if bias is not None:
            y_rows += bias

    chunks, workers = _chunks.plan_spans(spec.batch, spec.out_size[0],
                                         (size + rows * f) * y.itemsize, settings, xp=xp)
    _chunks.run(_ring_task(win, spec, step), chunks, workers,
                lambda: (scratch((size + rows * f,), y.dtype, xp),))
    return y


def _ring_grad_weight(win, dy, spec: ConvSpec, settings):
    """dw (*K, C, F) through the depth ring: per output plane, cols^T @ dy, whose block j is
    added to depth offset (j - r) % Kd of one accumulator (`_ring_task`)."""
    xp = _backend.namespace(dy)
    kd, f = spec.kernel_size[0], spec.out_channels
    size = math.prod(_ring_slots(spec))
    acc = (kd, math.prod(spec.kernel_size[1:]) * spec.in_channels, f)  # (Kd, B, F)

    def step(n, d, cols, r, state):
        part = (cols.T @ dy[n, d].reshape(-1, f)).reshape(acc)  # block j: offset (j - r) % Kd
        state[1][:kd - r] += part[r:]
        state[1][kd - r:] += part[:r]

    chunks, workers = _chunks.plan_spans(spec.batch, spec.out_size[0],
                                         (size + 2 * math.prod(acc)) * dy.itemsize, settings,
                                         xp=xp)
    states = _chunks.run(_ring_task(win, spec, step), chunks, workers,
                         lambda: (scratch((size,), dy.dtype, xp),
                                  xp.zeros(acc, dtype=dy.dtype)))
    dw = sum(state[1] for state in states)                       # (Kd, B, F)
    return dw.reshape(*spec.kernel_size, spec.in_channels, f)    # (*K, C, F)


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): stride 1 and enough channels, a full correlation; else a scatter."""
    if all(s == 1 for s in spec.stride) and spec.group_in >= GATHER_MIN_CHANNELS:
        return correlate_grad_input(dy, w, spec, settings, forward)
    return scatter_grad_input(dy, w, spec, settings)


def grad_input_interior(dy, w, spec: ConvSpec, settings):
    """dx (N, *S, C) for zero padding: gathers only the pixels inside the padding when it can."""
    if all(s == 1 for s in spec.stride) and spec.group_in >= GATHER_MIN_CHANNELS:
        return correlate_grad_input(dy, w, spec, settings, forward, interior=True)
    dxp = scatter_grad_input(dy, w, spec, settings)              # (N, *Sp, C)
    return windows.pad_adjoint(dxp, spec.pads)                   # (N, *S, C)


def correlate_grad_input(dy, w, spec: ConvSpec, settings, forward_fn, interior: bool = False):
    """Stride-1 dxp (N, *Sp, C) as `forward_fn` applied to dy padded by d * (K - 1) with the
    flipped kernel; with `interior`, dx (N, *S, C), the pixels inside the zero padding."""
    corr, pads = full_correlation(spec, interior)
    dyp = pad_or_crop(dy, pads)                                  # (N, *(P + 2d(K-1)), F)
    return forward_fn(dyp, flipped_w(w, spec), corr, settings)  # (N, *Sp or *S, C)


def scatter_grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C): per chunk, dcols = dy @ w^T (one GEMM), folded onto the input pixels
    each kernel offset read (one strided `+=` per offset). Chunks never share an image when
    several workers run, so their scatters never overlap."""
    xp = _backend.namespace(dy, w)
    g, c, kcg = spec.groups, spec.in_channels, math.prod(spec.kernel_size) * spec.group_in
    wt = grouped_w(w, spec).transpose(0, 2, 1)                   # (G, F/G, prodK*C/G)
    chunks, workers = _chunks.plan(spec.batch, spec.out_size[0],
                                   _row_bytes(spec, g * kcg, dy.itemsize), settings, xp=xp,
                                   whole_images=True)
    most = max(_chunks.rows_of(c_, spec.out_size) for c_ in chunks)

    if g == 1 and c < GATHER_MIN_CHANNELS:
        dxp_t = xp.zeros((c, spec.batch, *spec.padded_size), dtype=dy.dtype)  # (C, N, *Sp)
        task = _narrow_fold(dxp_t, dy, wt[0], spec)
        dxp = xp.moveaxis(dxp_t, 0, -1)                          # (N, *Sp, C) view
    else:
        dxp = xp.zeros((spec.batch, *spec.padded_size, c), dtype=dy.dtype)  # (N, *Sp, C)
        task = _wide_fold(dxp, dy, wt, spec)
    _chunks.run(task, chunks, workers, lambda: scratch((most * g * kcg,), dy.dtype, xp))
    return dxp


def _narrow_fold(dxp_t, dy, wt, spec: ConvSpec):
    """Fold task for few channels, into a channels-first dxp_t (C, N, *Sp): dcols^T = w
    (prodK*C, F) @ dy^T is contiguous over positions for each (offset, channel), so every `+=`
    runs along whole output rows rather than over C elements at a time."""
    xp = _backend.namespace(dy)
    c, kc = spec.in_channels, wt.shape[1]

    def task(chunk, buf):
        d = dy[chunk]                                            # (n, rows, *P', F)
        dcols = take(buf, (kc, math.prod(d.shape[:-1])))         # (prodK*C, R)
        xp.matmul(wt.T, d.reshape(-1, d.shape[-1]).T, out=dcols)
        dcols = dcols.reshape(-1, c, *d.shape[:-1])              # (prodK, C, n, rows, *P')
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            target = dxp_t[(slice(None), *index)]                # (C, n, rows, *P') view
            target += dcols[i]

    return task


def _wide_fold(dxp, dy, wt, spec: ConvSpec):
    """Fold task: dcols = dy @ w^T (G, R, prodK*C/G), then one `+=` per kernel offset."""
    xp = _backend.namespace(dy)
    g, kcg = spec.groups, wt.shape[2]

    def task(chunk, buf):
        d = grouped_rows(dy[chunk], g)                           # (G, R, F/G) view
        dcols = take(buf, (g, d.shape[1], kcg))                  # (G, R, prodK*C/G)
        xp.matmul(d, wt, out=dcols)
        lead = dy[chunk].shape[:-1]                              # (n, rows, *P')
        dcols = dcols.reshape(g, *lead, -1, spec.group_in)       # (G, n, rows, *P', prodK, C/G)
        dcols = xp.moveaxis(dcols, 0, -2)                        # (n, rows, *P', prodK, G, C/G)
        for i, (_, index) in enumerate(chunk_windows(spec, chunk)):
            target = dxp[index].reshape(*lead, g, spec.group_in)  # (n, rows, *P', G, C/G)
            target += dcols[..., i, :, :]

    return task
