"""Per-(image, channel) statistics and scale-and-shift passes: the engine of batch and group
normalization.

An array x of shape (N, *S, C) (channels_last) or (N, C, *S) (channels_first) is viewed as
N * C series of S = prod(S) values, `ChannelLayout.view` giving (N, S, C) or (N, C, S). The
layout cuts it into blocks of about `_blocks.BLOCK_BYTES`: several whole images, or a range of
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

    def __init__(self, shape: tuple, data_format: str, itemsize: int) -> None:
        self.last = data_format == "channels_last"
        self.n = shape[0]
        self.c = shape[-1] if self.last else shape[1]
        self.s = math.prod(shape[1:-1] if self.last else shape[2:])
        self.r = _fold(self.s, self.c) if self.last else 1
        rows, row = self.s // self.r, self.r * self.c * itemsize  # per image, bytes per row
        if rows * row <= _blocks.BLOCK_BYTES:                    # several whole images
            parts = [slice(0, rows)]
            self.chunks = [(0, n, parts[0]) for n in _blocks.spans(self.n, max(rows * row, 1))]
        else:                                                    # pieces of one image
            parts = _blocks.spans(rows, row)
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
        return np.tile(v, (1, self.r)) if self.last and self.r > 1 else v

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

    def positions(self, b) -> int:
        """Positions per image in the block b."""
        return b.shape[1] * self.r if self.last else b.shape[2]

    def run(self, task, nbytes: int, make_state):
        """task(chunk, state) over every block, on the workers for large arrays."""
        return _blocks.run(task, self.chunks, nbytes, make_state)


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


