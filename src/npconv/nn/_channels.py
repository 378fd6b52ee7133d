"""Per-(image, channel) statistics and scale-and-shift passes: the engine of batch and group
normalization.

An array x of shape (N, *S, C) (channels_last) or (N, C, *S) (channels_first) is viewed as
N * C series of S = prod(S) values, `ChannelLayout.view` giving (N, S, C) or (N, C, S). The
layout cuts it into blocks of about `_blocks.block_bytes()`: several whole images, or a range of
one image's positions (a "piece") when an image is larger. On each block the sums over its
positions are BLAS matrix-vector products with a vector of ones (one memory pass, vectorized
across channels), and every other pass over the block runs while it is in cache. Three
operations cover batch norm and group norm, forward and backward, both layouts:

- `moments`: per (n, c) mean and sum of squared deviations (m2). Each block is centred on its
  own mean (sum, subtract, sum again for the rounding left in that mean, square, sum), so
  float32 keeps the two-pass accuracy when |mean| >> std, and the blocks are merged in float64
  with Chan's formula for combining (count, mean, m2) triples.
- `sums`: per (n, c), sum(dy) and sum(dy * (x - center)), float64 across blocks.
- `affine`: out = (x - center) * scale + shift (+ dy * dscale), coefficients per (n, c);
  without a center, the one fused pass x * scale + shift of evaluation mode. Subtracting the
  mean first costs a pass and halves the float32 error when |mean| >> std (x ~ N(1e3, 1):
  y 3e-5 against 1.1e-4 fused, dx 5e-6 relative against 2.6e-5; PyTorch's 5e-5 and 5e-6).

float16 blocks are copied to float32 first (NumPy has no float16 BLAS) and rounded once at the
end. Each op allocates only its result and per-worker block-sized temporaries.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from npconv.nn import _blocks

FOLD_WIDTH = 16384
"""channels_last rows are folded to about this many values (`ChannelLayout`). A ufunc of an
array and a broadcast row runs slower the shorter the row (one pass over 25 MiB of float32,
one thread: 2.9 ms with 64-value rows, 2.6 with 2K, 1.9 with 8K, 1.75 with 64K; 1.7 with a
scalar)."""


def _fold(s: int, c: int) -> int:
    """The largest divisor r of s with r * c <= max(c, FOLD_WIDTH)."""
    most = max(1, FOLD_WIDTH // c)
    return max(r for r in range(1, min(s, most) + 1) if s % r == 0) if s else 1


class ChannelLayout:
    """How an (N, *S, C) / (N, C, *S) array is viewed and cut into blocks.

    channels_first is viewed as (N, C, S), where a per-channel coefficient is a scalar to
    each row of S values; channels_last as (N, S / r, r * C), r positions folded into one row
    (`_fold`), where a per-channel coefficient broadcasts as a row of r * C values, tiled
    (`expand`): long rows keep NumPy's inner loops long (`FOLD_WIDTH`).

    Attributes
    ----------
    n, c, s : int
        Images, channels and positions per image (prod(S); 1 for an (N, C) array).
    last : bool
        channels_last.
    r : int
        Positions folded into one row (1 for channels_first).
    chunks : list of (int, slice, slice)
        (piece index, images, rows of the view) of every block.
    pieces : list of int
        The number of positions in each piece of an image (one piece: whole images).
    """

    def __init__(self, shape: tuple, data_format: str, itemsize: int,
                 block: int | None = None) -> None:
        block = block or _blocks.block_bytes()
        self.last = data_format == "channels_last"
        self.n = shape[0]
        self.c = shape[-1] if self.last else shape[1]
        self.s = math.prod(shape[1:-1] if self.last else shape[2:])
        self.r = _fold(self.s, self.c) if self.last else 1
        rows, row = self.s // self.r, self.r * self.c * itemsize  # per image, bytes per row
        if rows * row <= block:                                  # several whole images
            parts = [slice(0, rows)]
            self.chunks = [(0, n, parts[0])
                           for n in _blocks.spans(self.n, max(rows * row, 1), block)]
        else:                                                    # pieces of one image
            parts = _blocks.spans(rows, row, block)
            self.chunks = [(i, slice(n, n + 1), p) for n in range(self.n)
                           for i, p in enumerate(parts)]
        self.pieces = [(p.stop - p.start) * self.r for p in parts]
        self.most = max(len(range(self.n)[ch[1]]) * (ch[2].stop - ch[2].start)
                        for ch in self.chunks) * self.r * self.c  # elements of the largest block

    def view(self, a):
        """(N, S / r, r * C) or (N, C, S), a view of the C-contiguous a."""
        if self.last:
            return a.reshape(self.n, self.s // self.r, self.r * self.c)
        return a.reshape(self.n, self.c, self.s)

    def block(self, a3, chunk):
        """The block of a3 = view(a) for `chunk`: (k, rows, r * C) or (k, C, s)."""
        _, images, pos = chunk
        return a3[images, pos] if self.last else a3[images, :, pos]

    def expand(self, v):
        """Coefficients v (N or 1, C) as `per_channel` takes them: tiled r times."""
        if not self.last or self.r == 1:
            return v
        out = np.empty((v.shape[0], self.r * self.c), dtype=v.dtype)  # np.tile, 4x faster
        out.reshape(v.shape[0], self.r, self.c)[...] = v[:, None, :]
        return out

    def per_channel(self, v, chunk=None):
        """Expanded coefficients v for the images of `chunk` (or all of v), shaped to broadcast
        against the block: (k or 1, 1, r * C) or (k or 1, C, 1)."""
        if chunk is not None and v.shape[0] != 1:
            v = v[chunk[1]]                                      # (k, r * C) / (k, C)
        return v[:, None, :] if self.last else v[:, :, None]

    def sum_positions(self, b, ones):
        """(k, C): b's sums over its positions, as BLAS products with `ones`."""
        if self.last:
            sums = _blocks.sum_rows(b, ones)                     # (k, r * C)
            return sums.reshape(-1, self.r, self.c).sum(axis=1) if self.r > 1 else sums
        return _blocks.sum_last(b, ones)                         # (k, C)

    def total(self, b, ones):
        """(C,) float64: b's sums over its images and positions."""
        return self.sum_positions(b, ones).sum(axis=0, dtype=np.float64)

    def dot(self, a, b):
        """(C,) float64: the sums of a * b over the block's images and positions, in one pass
        (no product array)."""
        if self.last:
            return np.einsum("krj,krj->j", a, b).reshape(self.r, self.c).sum(
                axis=0, dtype=np.float64)
        return np.einsum("kcs,kcs->c", a, b).astype(np.float64)

    def positions(self, b) -> int:
        """Positions per image in the block b."""
        return b.shape[1] * self.r if self.last else b.shape[2]

    def run(self, task, nbytes: int, make_state):
        """task(chunk, state) over every block, on the workers for large arrays."""
        return _blocks.run(task, self.chunks, nbytes, make_state)


@functools.lru_cache(maxsize=128)
def _cached(shape: tuple, data_format: str, itemsize: int, block: int) -> ChannelLayout:
    return ChannelLayout(shape, data_format, itemsize, block)


def layout(shape: tuple, data_format: str, itemsize: int) -> ChannelLayout:
    """The ChannelLayout of an array shape, built once per shape and block size (a layer
    calls its forward and backward on the same shapes step after step)."""
    return _cached(tuple(shape), data_format, itemsize, _blocks.block_bytes())


class _State(_blocks.Scratch):
    """A worker's scratch plus a vector of ones for the sums over positions."""

    def __init__(self, layout: ChannelLayout, dtype) -> None:
        super().__init__(dtype, layout.most)
        self.ones = np.ones(max(layout.pieces), dtype=dtype)     # (s,)

    def like(self, i, b):
        """Float temporary i shaped like the block b."""
        return self.float(i, b.size).reshape(b.shape)

    def load(self, i, b):
        """b itself, or a float32 copy of a float16 block."""
        return b if b.dtype == self.dtype else super().load(i, b)


def _nbytes(layout: ChannelLayout, dtype) -> int:
    return layout.n * layout.s * layout.c * np.dtype(dtype).itemsize


def moments(layout: ChannelLayout, x):
    """Per (n, c) mean and m2 = sum((x - mean)^2) over the S positions, float64 (N, C) each."""
    work = _blocks.compute_dtype(x.dtype)
    x3 = layout.view(x)
    shape = (layout.n, len(layout.pieces), layout.c)
    means, m2s = np.empty(shape), np.empty(shape)                # (N, P, C) float64 each

    def task(chunk, st):
        xb = st.load(0, layout.block(x3, chunk))                 # (k, rows, rC) / (k, C, s)
        count = layout.positions(xb)
        center = layout.sum_positions(xb, st.ones) / count       # (k, C), block mean
        d = st.like(1, xb)
        np.subtract(xb, layout.per_channel(layout.expand(center)), out=d)
        rest = layout.sum_positions(d, st.ones).astype(np.float64)  # rounding left in center
        np.multiply(d, d, out=d)
        q = layout.sum_positions(d, st.ones)
        means[chunk[1], chunk[0]] = center + rest / count
        m2s[chunk[1], chunk[0]] = q - rest * rest / count

    layout.run(task, _nbytes(layout, work), lambda: _State(layout, work))
    return combine(np.array(layout.pieces, dtype=np.float64)[:, None], means, m2s, axis=1)


def channel_moments(layout: ChannelLayout, x):
    """Per-channel mean and m2 = sum((x - mean)^2) over images and positions, float64 (C,)
    each (batch norm's statistics; `moments` keeps each image apart, for group norm).

    Each block is shifted by the mean of its first row (r positions of each channel,
    channels_last; up to 64 positions of the first image's channels, channels_first), so the
    sums of (x - shift) and (x - shift)^2 keep float32's two-pass accuracy whenever |mean|
    >> std, without the block-mean pass of `moments`; the blocks are merged in float64 with
    Chan's formula."""
    work = _blocks.compute_dtype(x.dtype)
    x3 = layout.view(x)
    stats = np.empty((len(layout.chunks), 4, layout.c))           # count, shift, s1, s2

    def task(item, st):
        i, chunk = item
        xb = st.load(0, layout.block(x3, chunk))                 # (k, rows, rC) / (k, C, s)
        if layout.last:
            shift = xb[0, 0].reshape(layout.r, layout.c).mean(axis=0)  # (C,)
            row = np.tile(shift, layout.r)[None, None]           # (1, 1, rC)
        else:
            shift = xb[0, :, :64].mean(axis=-1)                  # (C,)
            row = shift[None, :, None]                           # (1, C, 1)
        d = st.like(1, xb)
        np.subtract(xb, row, out=d)
        stats[i, 0] = xb.shape[0] * layout.positions(xb)
        stats[i, 1] = shift
        stats[i, 2] = layout.sum_positions(d, st.ones).sum(axis=0, dtype=np.float64)
        np.square(d, out=d)
        stats[i, 3] = layout.sum_positions(d, st.ones).sum(axis=0, dtype=np.float64)

    _blocks.run(task, list(enumerate(layout.chunks)), _nbytes(layout, work),
                lambda: _State(layout, work))
    counts, shifts, s1, s2 = stats.transpose(1, 0, 2)            # (B, C) each
    return combine(counts, shifts + s1 / counts, s2 - s1 * s1 / counts, axis=0)


def shifted_moments(layout: ChannelLayout, x, d):
    """Batch norm's statistics, writing d = x - shift (d like x: y's buffer, or x itself)
    block by block; `shifted_affine` then turns d into y in place. The shift of a block is
    the mean of its first row, as in `channel_moments` (same accuracy), and d is what y needs:
    one subtraction serves both. Returns mean, m2 (C,) and the shifts (B, C), float64."""
    x3, d3 = layout.view(x), layout.view(d)
    stats = np.empty((len(layout.chunks), 4, layout.c))           # count, shift, s1, s2

    def task(item, st):
        i, chunk = item
        xb, db = layout.block(x3, chunk), layout.block(d3, chunk)  # (k, rows, rC) / (k, C, s)
        shift = _first_row_mean(layout, xb)                      # (C,)
        np.subtract(xb, layout.per_channel(layout.expand(shift[None])), out=db)
        stats[i, 0] = xb.shape[0] * layout.positions(xb)
        stats[i, 1] = shift
        stats[i, 2] = layout.total(db, st.ones)
        stats[i, 3] = layout.dot(db, db)

    _blocks.run(task, list(enumerate(layout.chunks)), _nbytes(layout, x.dtype),
                lambda: _State(layout, x.dtype))
    counts, shifts, s1, s2 = stats.transpose(1, 0, 2)            # (B, C) each
    mean, m2 = combine(counts, shifts + s1 / counts, s2 - s1 * s1 / counts, axis=0)
    return mean, m2, shifts


def _first_row_mean(layout: ChannelLayout, xb):
    """(C,) in xb's dtype: the mean of the block's first row per channel (r positions,
    channels_last; up to 64 positions of the first image, channels_first)."""
    if layout.last:
        return xb[0, 0].reshape(layout.r, layout.c).mean(axis=0)
    return xb[0, :, :64].mean(axis=-1)


def shifted_affine(layout: ChannelLayout, y, scale, shifts):
    """y = y * scale + shifts[block] in place, per channel: scale (C,), shifts (B, C), one row
    per block of `layout.chunks` (what `shifted_moments` left in y becomes batch norm's
    output)."""
    y3 = layout.view(y)
    scale = layout.per_channel(layout.expand(np.asarray(scale, y.dtype)[None]))
    rows = layout.expand(shifts.astype(y.dtype))                 # (B, rC) / (B, C)

    def task(item, _):
        i, chunk = item
        yb = layout.block(y3, chunk)
        np.multiply(yb, scale, out=yb)
        np.add(yb, layout.per_channel(rows[i:i + 1]), out=yb)

    _blocks.run(task, list(enumerate(layout.chunks)), _nbytes(layout, y.dtype), lambda: None)
    return y


def centered_sums(layout: ChannelLayout, dy, x, center, t=None):
    """Per channel sum(dy) and sum(dy * (x - center)), float64 (C,) each, center (C,). With
    `t` (like x, sharing no memory with dy: dx's buffer, or x itself), x - center is left
    there for `centered_affine`."""
    dy3, x3 = layout.view(dy), layout.view(x)
    t3 = None if t is None else layout.view(t)
    row = layout.per_channel(layout.expand(np.asarray(center, x.dtype)[None]))
    sums = np.empty((len(layout.chunks), 2, layout.c))

    def task(item, st):
        i, chunk = item
        dyb, xb = layout.block(dy3, chunk), layout.block(x3, chunk)
        tb = st.like(0, xb) if t3 is None else layout.block(t3, chunk)
        np.subtract(xb, row, out=tb)
        sums[i, 0] = layout.total(dyb, st.ones)
        sums[i, 1] = layout.dot(dyb, tb)

    _blocks.run(task, list(enumerate(layout.chunks)), 2 * _nbytes(layout, x.dtype),
                lambda: _State(layout, x.dtype))
    return sums[:, 0].sum(axis=0), sums[:, 1].sum(axis=0)


def centered_affine(layout: ChannelLayout, dx, dy, k, g, c, x=None, center=None):
    """dx = t * k + dy * g + c per channel (C,) each, where t is x - center when x is given
    (dx may then be dy: each block is read before it is written), else what
    `centered_sums` left in dx (in place). Both give the same bits."""
    dx3, dy3 = layout.view(dx), layout.view(dy)
    x3 = None if x is None else layout.view(x)
    k, g, c, center = (None if v is None else
                       layout.per_channel(layout.expand(np.asarray(v, dx.dtype)[None]))
                       for v in (k, g, c, center))

    def task(chunk, st):
        dxb, dyb = layout.block(dx3, chunk), layout.block(dy3, chunk)
        t = dxb
        if x3 is not None:
            t = st.like(1, dxb)
            np.subtract(layout.block(x3, chunk), center, out=t)
        r = st.like(0, dyb)
        np.multiply(t, k, out=t)
        np.multiply(dyb, g, out=r)
        np.add(t, r, out=t)
        np.add(t, c, out=dxb)

    layout.run(task, 3 * _nbytes(layout, dx.dtype), lambda: _State(layout, dx.dtype))
    return dx


def combine(counts, means, m2s, axis: int):
    """Merge (count, mean, m2) statistics of disjoint parts along `axis` (Chan et al.):
    mean = sum(n_i mean_i) / n, m2 = sum(m2_i) + sum(n_i (mean_i - mean)^2). `counts`
    broadcasts against means. Returns (mean, m2) with `axis` removed, float64."""
    counts = np.broadcast_to(counts, means.shape)
    total = counts.sum(axis=axis, keepdims=True)
    mean = (counts * means).sum(axis=axis, keepdims=True) / total
    m2 = m2s.sum(axis=axis) + (counts * (means - mean) ** 2).sum(axis=axis)
    return mean.squeeze(axis), m2


def sums(layout: ChannelLayout, dy, x, center):
    """Per (n, c): sum(dy) and sum(dy * (x - center)) over the S positions, float64 (N, C)
    each; center (N or 1, C)."""
    work = _blocks.compute_dtype(x.dtype)
    dy3, x3 = layout.view(dy), layout.view(x)
    center = layout.expand(center.astype(work))
    shape = (layout.n, len(layout.pieces), layout.c)
    s1, s2 = np.empty(shape), np.empty(shape)                    # (N, P, C) float64 each

    def task(chunk, st):
        dyb = st.load(0, layout.block(dy3, chunk))               # (k, rows, rC) / (k, C, s)
        xb = st.load(1, layout.block(x3, chunk))
        d = st.like(2, xb)
        np.subtract(xb, layout.per_channel(center, chunk), out=d)
        np.multiply(d, dyb, out=d)
        s1[chunk[1], chunk[0]] = layout.sum_positions(dyb, st.ones)
        s2[chunk[1], chunk[0]] = layout.sum_positions(d, st.ones)

    layout.run(task, 2 * _nbytes(layout, work), lambda: _State(layout, work))
    return s1.sum(axis=1), s2.sum(axis=1)


def affine(layout: ChannelLayout, out, x, scale, shift=None, dy=None, dscale=None, *,
           center=None):
    """out = (x - center) * scale + shift (+ dy * dscale), coefficients (N or 1, C) (shift,
    center None: 0); out may be x or dy (each block is read before it is written). Returns
    out."""
    work = _blocks.compute_dtype(x.dtype)
    coefs = [None if v is None else layout.expand(np.asarray(v).astype(work))
             for v in (scale, shift, dscale, center)]
    x3, o3 = layout.view(x), layout.view(out)
    dy3 = None if dy is None else layout.view(dy)

    def task(chunk, st):
        scale_b, shift_b, dscale_b, center_b = (
            None if v is None else layout.per_channel(v, chunk) for v in coefs)
        xb, ob = layout.block(x3, chunk), layout.block(o3, chunk)
        half = ob.dtype != work
        t = st.like(0, ob) if half or dy is not None else ob
        if center_b is None:
            np.multiply(xb, scale_b, out=t)
        else:
            np.subtract(xb, center_b, out=t)
            np.multiply(t, scale_b, out=t)
        if shift_b is not None:
            np.add(t, shift_b, out=t)
        if dy is not None:                                       # read dy, then write out
            r = st.like(1, ob) if half else ob
            np.multiply(layout.block(dy3, chunk), dscale_b, out=r)
            np.add(r, t, out=r)
            t = r
        if half:
            ob[...] = t                                          # float16: rounded once

    layout.run(task, (2 + (dy is not None)) * _nbytes(layout, work),
               lambda: _State(layout, work))
    return out


