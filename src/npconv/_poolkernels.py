"""Pooling kernels: loops over kernel offsets, each step one vectorized strided pass.

Arrays here are in the kernels' layout (B, *S, C): a channels_last x (N, *S, C) as it is, a
channels_first x (N, C, *S) viewed as (N * C, *S, 1), so both layouts run the same code and
neither is ever transposed. Which input coordinate a window's tap reads comes from
`PoolSpec.span` alone; taps outside the input are never read (no padded copy is made).

- `reduce`: the max or the sum over every window, one spatial dimension at a time: both are
  separable (a window's max is the max over dim 0 of the maxima over dims 1..r-1), so a 3x3
  window costs 3 + 3 passes instead of 9. Dim 0 goes first: its passes read whole input rows
  (long contiguous runs), and the last dimension, whose passes step through the channels only,
  is reduced last, when the array is smallest.
- `argmax_codes`: which tap holds each window's maximum, as a small code (`K - r` for the tap of
  raster index r, 0 for none): one equality pass per kernel offset against the finished maximum,
  keeping the first match in raster order (PyTorch's first maximum); NaN windows take their last
  NaN tap, PyTorch's rule, in a second loop run only when a NaN is present. `phase_split` first
  makes the strided taps of the last dimension contiguous, where that pays.
- `scatter_indices`, `scatter_codes`: the max-pool gradient from PyTorch-style indices or from
  the codes themselves (what `nn.MaxPool` keeps: one byte per window), one `numpy.add.at` (or a
  plain scatter, for windows that cannot overlap) per chunk; `scatter_max` is its form for other
  array modules (CuPy): per kernel offset, the windows whose index names that tap add their dy
  into a strided view of dx.
- `spread`: the transpose of the separable sum (average and Lp backward), last dimension first.

Work is cut into chunks of a few output rows (forward) or input rows (backward) so that one
chunk's passes stay in the cache, and the chunks run on npconv's worker threads: NumPy releases
the GIL inside ufunc loops, and one pass holds one core. No two workers write one element: a
`spread` chunk owns its rows of dx (it reads the dy rows of every window that reaches them), and
the max-pool scatter, chunked by windows, keeps all chunks of an image on one worker when windows
overlap. `parallel` is the one place that talks to the worker pool.
"""

from __future__ import annotations

import itertools
import math
from dataclasses import replace

import numpy as np

from npconv import _chunks, _config

# ---------------------------------------------------------------------------------------------
# Worker threads and scratch buffers
# ---------------------------------------------------------------------------------------------


def parallel(task, n: int, rows: int, row_bytes: int, xp=np, *, whole_images: bool = False
             ) -> list:
    """Call task(chunk, state) on chunks (batch slice, row slice) of the (n, rows) grid and
    return the per-worker states (dicts, for scratch buffers). With `whole_images` all chunks
    of an image go to one worker (for tasks whose writes spill across row chunks).

    The adapter to npconv's worker pool (`_chunks`: `plan` sizes the chunks within the
    workspace limit and `Tuning.pool_chunk_bytes`, `run` deals them to the workers).
    """
    if n * rows == 0:
        return []
    settings = _config.resolve(None)
    tuning = settings.tuning
    if n * rows * row_bytes < tuning.pool_parallel_bytes:
        settings = replace(settings, threads=1)
    plan = _chunks.plan(n, rows, settings, row_bytes=max(row_bytes, 1), by_image=whole_images,
                        chunk_bytes=tuning.pool_chunk_bytes, xp=xp)
    return _chunks.run(lambda c, state: task((c.batch, c.rows), state), plan, dict)


def scratch(state: dict, key, shape, dtype, xp=np):
    """A per-worker buffer of `shape` (contents undefined), reusing the worker's memory."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    buf = state.get(key)
    if buf is None or buf.nbytes < nbytes:
        buf = state[key] = xp.empty(max(nbytes, 1), dtype=np.uint8)
    return buf[:nbytes].view(dtype).reshape(shape)


# ---------------------------------------------------------------------------------------------
# Kernel offsets: per-dimension spans and the N-d boxes they make
# ---------------------------------------------------------------------------------------------


def dim_spans(spec, dim: int, p_range=None, x_range=None) -> list[tuple[int, int, int, int]]:
    """(k, p0, p1, x0) for every tap k along `dim` that some window in `p_range` reads from the
    input rows `x_range` (defaults: every window, the whole input); see `PoolSpec.span`."""
    lo, hi = x_range if x_range is not None else (0, spec.in_size[dim])
    a, b = p_range if p_range is not None else (0, spec.out_size[dim])
    s = spec.stride[dim]
    spans = []
    for k in range(spec.kernel_size[dim]):
        p0, p1, x0 = spec.span(dim, k, lo, hi)
        q0, q1 = max(p0, a), min(p1, b)
        if q1 > q0:
            spans.append((k, q0, q1, x0 + (q0 - p0) * s))
    return spans


def _slices(p0: int, p1: int, x0: int, step: int, p_base: int, x_base: int, phases: int = 1):
    """(window slice, input index) of one span, relative to arrays starting at p_base, x_base.

    The input index is a tuple: (slice,), or (phase, slice) into a `phase_split` array (phases
    = stride), where the span's rows x0, x0 + stride, ... are contiguous."""
    x0 -= x_base
    n = p1 - p0
    window = slice(p0 - p_base, p1 - p_base)
    if phases > 1:
        return window, (x0 % phases, slice(x0 // phases, x0 // phases + n))
    step = step if n > 1 else 1                                  # any step reads one row
    return window, (slice(x0, x0 + (n - 1) * step + 1, step),)


def phase_split(src, phases: int, state: dict, xp=np, dtype=None):
    """src (B', R, ..., S_last, C) -> (B', R, ..., phases, ceil(S_last / phases), C) with
    [..., f, j, :] = src[..., j * phases + f, :], in `dtype` (default src's): the strided taps
    of the last dimension become contiguous runs, so every later pass streams (one strided copy
    instead of one per offset). Entries past the last row of a phase stay undefined; no tap
    reads them."""
    size = src.shape[-2]
    shape = (*src.shape[:-2], phases, -(-size // phases), src.shape[-1])  # (..., f, j, C)
    out = scratch(state, "phases", shape, src.dtype if dtype is None else dtype, xp)
    for f in range(min(phases, size)):
        part = src[..., f::phases, :]                            # (..., rows of phase f, C)
        xp.copyto(out[..., f, :part.shape[-2], :], part)
    return out


def offsets(spec, p_range0=None, x_range0=None, p_base0: int = 0, x_base0: int = 0,
            phases: int = 1):
    """Yield (r, box, view) for every kernel offset, r its raster index, in raster order: `box`
    indexes the windows (B, *P, C) whose tap r reads the input, `view` (B, *S, C) what they
    read. Along dim 0 only windows in p_range0 and input rows in x_range0 count, and both
    indexes are relative to arrays starting at window p_base0 and input row x_base0. With
    `phases`, views index a `phase_split` input."""
    per_dim = []
    for dim in range(spec.rank):
        spans = dim_spans(spec, dim, *((p_range0, x_range0) if dim == 0 else (None, None)))
        bases = (p_base0, x_base0) if dim == 0 else (0, 0)
        split = phases if dim == spec.rank - 1 else 1
        per_dim.append([(k, *_slices(p0, p1, x0, spec.stride[dim], *bases, split))
                        for k, p0, p1, x0 in spans])
    every = slice(None)
    raster = [math.prod(spec.kernel_size[d + 1:]) for d in range(spec.rank)]
    for combo in itertools.product(*per_dim):
        r = sum(k * m for (k, _, _), m in zip(combo, raster))
        yield (r, (every, *(p for _, p, _ in combo), every),
               (every, *itertools.chain.from_iterable(x for _, _, x in combo), every))


def window_rows(spec, x_range) -> tuple[int, int]:
    """[pa, pb): the windows along dim 0 that read some input row in x_range."""
    spans = dim_spans(spec, 0, x_range=x_range)
    if not spans:
        return 0, 0
    return min(p0 for _, p0, _, _ in spans), max(p1 for _, _, p1, _ in spans)


def input_rows(spec, p_range) -> tuple[int, int]:
    """[xa, xb): the input rows along dim 0 that the windows p_range read."""
    spans = dim_spans(spec, 0, p_range=p_range)
    if not spans:
        return 0, 0
    s = spec.stride[0]
    return (min(x0 for _, _, _, x0 in spans),
            max(x0 + (p1 - p0 - 1) * s + 1 for _, p0, p1, x0 in spans))


# ---------------------------------------------------------------------------------------------
# Separable reduction (max, sum) and its transpose (spread)
# ---------------------------------------------------------------------------------------------


def _along(axis: int, index: tuple) -> tuple:
    return (slice(None),) * axis + index


def _fold_axis(src, dst, axis: int, spans, op, identity, xp) -> None:
    """dst = op over the taps `spans` of src: pairs (dst slice, src index tuple) along `axis`,
    in tap order.

    The first pass writes dst instead of updating it: op of the first two taps when both
    cover all of dst, or when one does (over the other's windows; a copy of the covering one
    elsewhere), a copy when the first tap alone covers dst, else a fill. Every window then
    combines its taps in tap order whatever the chunk, so a sum is the same to the last bit
    however the rows are split. Sums run in dst's dtype (float16 input, float32 sums)."""
    kw = {"dtype": dst.dtype} if op is xp.add else {}
    size = dst.shape[axis]
    covers = [p.start == 0 and p.stop == size for p, _ in spans]
    if len(spans) >= 2 and covers[0] and covers[1]:              # the later tap first: on a
        (_, x0), (_, x1) = spans[:2]                             # tie np.maximum keeps the
        op(src[_along(axis, x1)], src[_along(axis, x0)], out=dst, **kw)  # second, the earlier
        rest = spans[2:]
    elif len(spans) >= 2 and covers[0] != covers[1]:             # e.g. 3 taps, stride 1, pad 1
        (_, xf), (p, x) = spans[:2] if covers[0] else spans[1::-1]
        op(src[_along(axis, x)], src[_along(axis, _windows(xf, p.start, p.stop))],
           out=dst[_along(axis, (p,))], **kw)
        for a, b in ((0, p.start), (p.stop, size)):
            if b > a:
                xp.copyto(dst[_along(axis, (slice(a, b),))],
                          src[_along(axis, _windows(xf, a, b))], casting="same_kind")
        rest = spans[2:]
    elif spans and covers[0]:
        xp.copyto(dst, src[_along(axis, spans[0][1])], casting="same_kind")
        rest = spans[1:]
    else:
        dst[...] = identity
        rest = spans
    for p, x in rest:
        part = dst[_along(axis, (p,))]
        op(src[_along(axis, x)], part, out=part, **kw)


def _windows(index: tuple, a: int, b: int) -> tuple:
    """The part of a span's src index (from `_slices`) that windows a..b-1 of it read."""
    *lead, rows = index
    step = rows.step or 1
    return (*lead, slice(rows.start + a * step, rows.start + (b - 1) * step + 1, step))


def reduce(src, dst, spec, p_range0, x_base0: int, op, identity, state: dict, xp=np,
           phases: int = 1) -> None:
    """dst (B', R, *P[1:], C) = op over the windows p_range0 (along dim 0) of src (B', rows
    from x_base0, *S[1:], C), or of its `phase_split` with `phases`), one spatial dimension at
    a time (dim 0 first)."""
    cur, rank = src, spec.rank
    nb, rows = dst.shape[0], p_range0[1] - p_range0[0]
    for dim in range(rank):
        if dim == rank - 1:
            out = dst
        else:                                                    # (B', R, P1..Pd, Sd+1.., C)
            shape = (nb, rows, *spec.out_size[1:dim + 1], *cur.shape[dim + 2:])
            out = scratch(state, ("reduce", dim), shape, dst.dtype, xp)
        p_range, bases = (p_range0, (p_range0[0], x_base0)) if dim == 0 else (None, (0, 0))
        split = phases if dim == rank - 1 else 1
        spans = [_slices(p0, p1, x0, spec.stride[dim], bases[0], bases[1], split)
                 for _, p0, p1, x0 in dim_spans(spec, dim, p_range)]
        _fold_axis(cur, out, dim + 1, spans, op, identity, xp)
        cur = out


def _spread_axis(src, dst, axis: int, spans, xp) -> None:
    """dst = the transpose of a sum over `spans` along `axis`: every src row added to the dst
    row its tap reads, taps in order. When one of the first two taps reads every dst row with
    step 1 (stride 1: every tap then has step 1), it starts dst: its rows plus the other's
    where that one reads, copies elsewhere; otherwise dst starts at zero. Either way every dst
    row adds its taps in tap order whatever the chunk (bit-identical sums)."""
    size = dst.shape[axis]
    covers = [x.start == 0 and x.stop == size and x.step == 1 for _, x in spans]
    if len(spans) >= 2 and (covers[0] or covers[1]):
        (f, _), (p, x) = spans[:2] if covers[0] else spans[1::-1]  # dst row i <- f.start + i
        xp.add(src[_along(axis, (slice(f.start + x.start, f.start + x.stop),))],
               src[_along(axis, (p,))], out=dst[_along(axis, (x,))])
        for a, b in ((0, x.start), (x.stop, size)):
            if b > a:
                xp.copyto(dst[_along(axis, (slice(a, b),))],
                          src[_along(axis, (slice(f.start + a, f.start + b),))])
        rest = spans[2:]
    elif spans and covers[0]:
        xp.copyto(dst, src[_along(axis, (spans[0][0],))])
        rest = spans[1:]
    else:
        dst[...] = 0
        rest = spans
    for p, x in rest:
        part = dst[_along(axis, (x,))]
        xp.add(part, src[_along(axis, (p,))], out=part)


def spread(src, dst, spec, p_base0: int, x_range0, state: dict, xp=np) -> None:
    """dst (B', input rows x_range0, *S[1:], C) = the sum over every window reaching them of
    src (B', windows from p_base0, *P[1:], C): the transpose of `reduce` with a sum, last
    dimension first."""
    cur, rank = src, spec.rank
    nb, c = dst.shape[0], dst.shape[-1]
    for dim in reversed(range(rank)):
        if dim == 0:
            out = dst
        else:                                                    # (B', R, P1..Pd-1, Sd.., C)
            shape = (nb, cur.shape[1], *spec.out_size[1:dim], *spec.in_size[dim:], c)
            out = scratch(state, ("spread", dim), shape, dst.dtype, xp)
        x_range, bases = (x_range0, (p_base0, x_range0[0])) if dim == 0 else (None, (0, 0))
        p_range = (p_base0, p_base0 + cur.shape[1]) if dim == 0 else None
        spans = [(p, x) for p, (x,) in (_slices(p0, p1, x0, spec.stride[dim], *bases)
                                         for _, p0, p1, x0 in dim_spans(spec, dim, p_range,
                                                                        x_range))]
        _spread_axis(cur, out, dim + 1, spans, xp)
        cur = out


# ---------------------------------------------------------------------------------------------
# Max: argmax codes and the scatter of dy
# ---------------------------------------------------------------------------------------------


def code_dtype(spec) -> np.dtype:
    """The smallest unsigned dtype holding the codes 0..prod(K)."""
    taps = math.prod(spec.kernel_size)
    return np.dtype(next(t for t in (np.uint8, np.uint16, np.uint32, np.uint64)
                         if taps <= np.iinfo(t).max))


def code_offsets(spec) -> tuple[np.ndarray, np.ndarray]:
    """(base, table): a window's flat index into *S of the tap its code names is base[p] +
    table[code] (`PoolSpec.index_parts`; code prod(K) - r names tap r, code 0 none: table[0]
    is 0, a placeholder the callers mask). base (1, *P, 1), table (prod(K) + 1,), int64."""
    base, offsets = spec.index_parts()
    return base, np.concatenate([[0], offsets[::-1]])


def argmax_codes(x, y, codes, spec, p_range0, state: dict, xp=np, x_base0: int = 0,
                 phases: int = 1) -> None:
    """codes (B', R, *P[1:], C) = prod(K) - r for the first tap r (raster order) of each window
    whose value equals the window's max y; a NaN window's last NaN tap; 0 for a window that
    reads no input. x: (B', input rows from x_base0, *S[1:], C), or its `phase_split`."""
    taps, dtype = math.prod(spec.kernel_size), codes.dtype
    codes[...] = 0
    eq = scratch(state, "eq", y.shape, np.bool_, xp)             # (B', R, *P[1:], C)
    hit = scratch(state, "hit", y.shape, dtype, xp)              # (B', R, *P[1:], C)
    where = (p_range0, None, p_range0[0], x_base0, phases)
    for r, box, view in offsets(spec, *where):
        e = xp.equal(x[view], y[box], out=eq[box])               # (B', *box) the tap is the max
        h = xp.multiply(e.view(np.uint8), dtype.type(taps - r), out=hit[box])
        xp.maximum(codes[box], h, out=codes[box])                # the first tap keeps the max
    if x.dtype.kind == "f" and (xp is not np or not codes.all()):
        for r, box, view in offsets(spec, *where):
            xp.copyto(codes[box], dtype.type(taps - r), where=xp.isnan(x[view]))  # last NaN


def scatter_indices(dy, idx, dx, plane: int, size: int, overlap: bool, dead: bool,
                    state: dict) -> None:
    """dx.flat[plane_of(b, c) + idx[b, .., c]] += dy[b, .., c] for every window: the max-pool
    gradient from PyTorch-style indices (flat into *S, -1 for none). `dead`: some windows read
    no input (index -1). dy, idx: (B', *P', C); dx: (B', *S, C), C-contiguous, zeros where
    written; `size` = prod(S); `plane` = C (channels_last) or 1."""
    if dead:
        lo, hi = int(idx.min()), int(idx.max())
    else:                                                        # -1 wraps to 2**64 - 1
        lo, hi = 0, int(idx.view(np.uint64).max()) if idx.size else 0
    if lo < -1 or hi >= size:
        lo, hi = int(idx.min()), int(idx.max())
        raise ValueError(
            f"`indices` must be flat indices into the spatial dimensions, in [0, {size}) (or -1 "
            f"for a window that reads only padding); got values in [{lo}, {hi}]"
        )
    where = scratch(state, "where", idx.shape, np.int64)        # (B', *P', C): idx * C
    np.multiply(idx, plane, out=where)                           # + b * prod(S) * C + c
    np.add(where, _plane_starts(idx.shape, plane, size, state), out=where)
    _scatter(dy, where, idx >= 0 if lo == -1 else None, dx, overlap)


def scatter_codes(dy, codes, dx, table, starts, overlap: bool, state: dict) -> None:
    """The max-pool gradient from `argmax_codes`: dx.flat[starts + table[code]] += dy for
    every window whose code is not 0. table (prod(K) + 1,) int64: code -> the tap's flat offset
    into dx's image (times the plane); starts (B', *P', C) int64: each window's base, image and
    channel. dy, codes: (B', *P', C); dx: (B', *S, C), C-contiguous, zeros where written."""
    where = scratch(state, "where", codes.shape, np.int64)      # (B', *P', C)
    np.take(table, codes, out=where, mode="clip")               # "raise" is 10x slower
    np.add(where, starts, out=where)
    _scatter(dy, where, None if codes.all() else codes != 0, dx, overlap)


def _scatter(dy, where, keep, dx, overlap: bool) -> None:
    """dx.flat[where] += dy (where `keep`, if given): by `numpy.add.at` when windows overlap
    (it adds every contribution), else by a plain scatter (faster); either way a NaN in dy
    reaches only its element."""
    values = dy.astype(dx.dtype, copy=False)                    # add.at casts 10x slower
    if keep is not None:                                         # windows on padding only
        where, values = where[keep], values[keep]
    if overlap:
        np.add.at(dx.reshape(-1), where.reshape(-1), values.reshape(-1))
    else:
        dx.reshape(-1)[where.reshape(-1)] = values.reshape(-1)


def _plane_starts(shape, plane: int, size: int, state: dict):
    """b * prod(S) * C + c for every element of a (B', *P', C) chunk, kept per worker and shape
    (adding a contiguous array is twice as fast as a broadcast one)."""
    key = ("planes", shape)
    if key not in state:
        nb, c = shape[0], shape[-1]
        start = np.arange(nb, dtype=np.int64)[:, None] * size * plane + np.arange(c)  # (B', C)
        state[key] = np.ascontiguousarray(                       # (B', *P', C)
            np.broadcast_to(start.reshape(nb, *(1,) * (len(shape) - 2), c), shape))
    return state[key]


def window_starts(shape, base, rows: slice, plane: int, size: int, state: dict):
    """`_plane_starts` plus base[:, rows] * plane, base (1, *P, 1) from `PoolSpec.index_parts`:
    the flat index in dx (B', *S, C) of tap 0 of every window of a chunk (B', rows, *P[1:], C),
    kept per worker for the last row range of each shape (a plan's chunks repeat them)."""
    key = ("starts", shape)
    held = state.get(key)
    if held is None or held[0] != rows.start:
        starts = _plane_starts(shape, plane, size, state) + base[:, rows] * plane
        held = state[key] = (rows.start, starts)
    return held[1]


def scatter_max(dy, keys, key_of, dx, spec, p_base0: int, x_range0, state: dict, xp) -> None:
    """dx (B', rows x_range0, *S[1:], C) = the dy of every window whose key (index minus its
    window's base) says it chose that element; dy and keys: (B', windows from p_base0, *P[1:],
    C). The array-module path (CuPy) of `scatter_indices`: one strided, exact `where` per
    kernel offset, and no atomics."""
    dx[...] = 0
    for r, box, view in offsets(spec, None, x_range0, p_base0, x_range0[0]):
        part = xp.where(xp.equal(keys[box], key_of(r)), dy[box], 0)  # windows that chose r
        xp.add(dx[view], part, out=dx[view])
