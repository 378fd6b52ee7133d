"""Shared layout helpers of the algorithms: grouped views, chunk windows, the full correlation.

Arrays are channels_last: padded input xp (N, *Sp, C), weight w (*K, C/G, F), output and dy
(N, *P, F). A chunk is a pair (batch slice, row slice) over the output's leading axes (N, P0)
(Winograd's are triples, see `algorithms.winograd`).
"""

from __future__ import annotations

import functools
import itertools
import math

from npconv import windows
from npconv.spec import ConvSpec


def grouped_w(w, spec: ConvSpec):
    """(*K, C/G, F) -> (G, prod(K) * C/G, F/G)."""
    g = spec.groups
    w = w.reshape(-1, spec.group_in, g, spec.group_out)          # (prodK, C/G, G, F/G)
    w = w.transpose(2, 0, 1, 3)                                  # (G, prodK, C/G, F/G)
    return w.reshape(g, -1, spec.group_out)                      # (G, prodK*C/G, F/G)


def ungrouped_dw(dw, spec: ConvSpec):
    """(G, prod(K) * C/G, F/G) -> (*K, C/G, F), the layout of w."""
    dw = dw.reshape(spec.groups, -1, spec.group_in, spec.group_out)  # (G, prodK, C/G, F/G)
    dw = dw.transpose(1, 2, 0, 3)                                # (prodK, C/G, G, F/G)
    return dw.reshape(*spec.kernel_size, spec.group_in, spec.out_channels)  # (*K, C/G, F)


def grouped_rows(a, groups: int):
    """(..., G * m) -> (G, R, m), a view when a is contiguous (R: product of leading axes)."""
    a = a.reshape(-1, groups, a.shape[-1] // groups)             # (R, G, m)
    return a.transpose(1, 0, 2)                                  # (G, R, m)


def take(buf, shape):
    """A view of the first prod(shape) elements of a flat buffer, shaped `shape`."""
    return buf[:math.prod(shape)].reshape(shape)


def split(buf, *sizes):
    """Consecutive views of a flat buffer: the given sizes, then the rest."""
    views, start = [], 0
    for size in sizes:
        views.append(buf[start:start + size])
        start += size
    return (*views, buf[start:])


def chunk_windows(spec: ConvSpec, chunk):
    """Yield (k, index) for every kernel offset k: `index` selects, in the padded input, the
    pixels that offset reads for the chunk's output positions: p * stride + k * dilation."""
    batch, rows = chunk
    s0 = spec.stride[0]
    for k, start, rest in _offset_slices(spec.kernel_size, spec.dilation, spec.stride,
                                         spec.out_size):
        first = slice(rows.start * s0 + start, (rows.stop - 1) * s0 + start + 1, s0)
        yield k, (batch, first, *rest)


@functools.lru_cache(maxsize=64)
def _offset_slices(kernel_size, d, s, p):
    """Per kernel offset k: (k, k0 * d0, the slices of the other spatial axes), built once per
    geometry (LeNet-sized layers spent 6% of their time rebuilding them chunk by chunk)."""
    return tuple(
        (k, k[0] * d[0], tuple(slice(kk * dd, kk * dd + (pp - 1) * ss + 1, ss)
                               for kk, dd, pp, ss in zip(k[1:], d[1:], p[1:], s[1:])))
        for k in itertools.product(*map(range, kernel_size)))


def full_correlation(spec: ConvSpec, interior: bool = False):
    """The stride-1 input gradient as a forward convolution of the padded dy.

    With stride 1, dxp[i] = sum_k dy[i - k*d] @ w[k]^T over the k with 0 <= i - k*d < P: a
    correlation of dy, zero-padded by e = d * (K - 1) in front, with the kernel flipped and its
    channel axes swapped per group; padding Sp - P at the end makes its output size Sp (P is
    Sp - e, or less for the specs of transposed convolutions). With `interior`, only the input
    pixels inside the padding, i in [lo, lo + S), are computed: dy is padded by e - lo in front
    and S + lo - P at the end (negative amounts crop). Returns (spec of the correlation, its
    (lo, hi) pads of dy).
    """
    span = [d * (k - 1) for k, d in zip(spec.kernel_size, spec.dilation)]
    if interior:
        pads = tuple((e - lo, s + lo - p) for e, (lo, _), s, p in
                     zip(span, spec.pads, spec.in_size, spec.out_size))
        size = spec.in_size
    else:
        pads = tuple((e, sp - p) for e, sp, p in zip(span, spec.padded_size, spec.out_size))
        size = spec.padded_size
    corr = ConvSpec(spec.batch, spec.out_channels, spec.in_channels, spec.groups,
                    spec.out_size, spec.kernel_size, size, (1,) * spec.rank, spec.dilation,
                    pads)
    return corr, pads


def pad_or_crop(a, pads):
    """Zero-pad (N, *S, C) by (lo, hi) per spatial axis; negative amounts crop (a view)."""
    a = windows.pad(a, tuple((max(lo, 0), max(hi, 0)) for lo, hi in pads))
    crop = tuple(slice(max(-lo, 0), a.shape[i + 1] - max(-hi, 0))
                 for i, (lo, hi) in enumerate(pads))
    return a[(slice(None), *crop)]


def flipped_w(w, spec: ConvSpec):
    """Weight of the full correlation: (*K, C/G, F) -> (*K, F/G, C), flipped in every spatial
    axis, w'[k, f, g*C/G + c] = w[K - 1 - k, c, g*F/G + f]."""
    r, g = spec.rank, spec.groups
    w = w[(slice(None, None, -1),) * r]                          # (*K, C/G, F) flipped view
    w = w.reshape(*spec.kernel_size, spec.group_in, g, spec.group_out)  # (*K, C/G, G, F/G)
    w = w.transpose(*range(r), r + 2, r + 1, r)                  # (*K, F/G, G, C/G)
    return w.reshape(*spec.kernel_size, spec.group_out, spec.in_channels)  # copy
