"""Helpers shared by the algorithms: grouped views of weights and rows, flat buffers, the
weight gradients' per-worker partial sums, and the input pixels each kernel offset reads for
a chunk.

Arrays are channels_last: padded input xp (N, *Sp, C), weight w (*K, C/G, F), output and dy
(N, *P, F). A chunk is a `_chunks.Chunk` (batch, rows, taps) over the output's leading axes.
"""

from __future__ import annotations

import functools
import itertools
import math
from collections.abc import Iterator
from typing import Any

import numpy as np

from npconv._chunks import Chunk, Plan
from npconv._workspace import scratch
from npconv.spec import ConvSpec, taps


def grouped_w(w: Any, spec: ConvSpec) -> Any:
    """(*K, C/G, F) -> (G, prod(K) * C/G, F/G)."""
    g = spec.groups
    w = w.reshape(-1, spec.group_in, g, spec.group_out)          # (prodK, C/G, G, F/G)
    w = w.transpose(2, 0, 1, 3)                                  # (G, prodK, C/G, F/G)
    return w.reshape(g, -1, spec.group_out)                      # (G, prodK*C/G, F/G)


def ungrouped_dw(dw: Any, spec: ConvSpec) -> Any:
    """(G, prod(K) * C/G, F/G) -> (*K, C/G, F), the layout of w."""
    dw = dw.reshape(spec.groups, -1, spec.group_in, spec.group_out)  # (G, prodK, C/G, F/G)
    dw = dw.transpose(1, 2, 0, 3)                                # (prodK, C/G, G, F/G)
    return dw.reshape(*spec.kernel_size, spec.group_in, spec.out_channels)  # (*K, C/G, F)


def grouped_rows(a: Any, groups: int) -> Any:
    """(..., G * m) -> (G, R, m), a view when a is contiguous (R: product of leading axes)."""
    a = a.reshape(-1, groups, a.shape[-1] // groups)             # (R, G, m)
    return a.transpose(1, 0, 2)                                  # (G, R, m)


def finish(part: Any, bias: Any, clip: tuple | None, xp: Any) -> None:
    """The end of a forward chunk, in place: part += bias (broadcast against part,
    `add_bias`), then part clipped to clip = (lo, hi) (the fused ReLU or ReLU6
    of `npconv.conv(..., clip=)`; `_args.clip_bounds` makes an absent bound infinite)."""
    if bias is not None:
        add_bias(part, bias, xp)
    if clip is not None:
        xp.clip(part, *clip, out=part)


BIAS_ROW = 8192
"""Elements per row of `add_bias`'s tiled additions. NumPy adds a broadcast (F,) vector F
elements at a time, restarting its inner loop every row; rows of 8192 or more run 2-4x
faster on data in cache (float32, 12544 x 96: 361 us broadcast, 257-272 us in rows of
1024-4096, 119-121 us in rows of 8192-16384; 3136 x 144: 87 against 41-43). In a network
most of a chunk has left the cache when its bias comes, and memory sets the pace: the
biases of npconv.onnx's MobileNetV2 (every convolution has one, batch norm folded in) took
19.0 ms of a batch-8 run broadcast and 18.1 tiled, 2.5 and 2.4 at batch 1."""


def add_bias(part: Any, bias: Any, xp: Any) -> None:
    """part += bias, bias (F,) along part's last axis (any other bias: broadcast as it is).

    A C-contiguous NumPy part of at least four `BIAS_ROW` rows is added in rows of r * F
    values against bias repeated r times (r * F >= `BIAS_ROW`); the rows left over, fewer
    than r, against bias itself. Every element gets the same single addition either way."""
    f = part.shape[-1] if part.ndim else 0
    reps = -(-BIAS_ROW // max(f, 1))
    if (xp is not np or bias.ndim != 1 or bias.shape[0] != f or not part.flags.c_contiguous
            or part.size < 4 * reps * f):
        part += bias
        return
    rows = part.reshape(-1, f)                                   # (R, F) view
    whole = rows.shape[0] // reps * reps
    tiled = rows[:whole].reshape(-1, reps * f)                   # (R / r, r * F) view
    tiled += np.tile(bias, reps)
    rows[whole:] += bias


class PartialSum:
    """One worker's partial sum of matrix products for a weight gradient, in pooled scratch
    (`_workspace.scratch`: memory already faulted in, reused from call to call; a new
    accumulator and product per call page-faulted up to 9 MiB each, ResNet-18's 4x4x512
    layer at batch 16). The first product of the whole accumulator is written straight into
    it; later ones, or a block of its rows, go through a product buffer, allocated when the
    `plan` gives some worker more than one chunk (none without a plan: `add_array` only)."""

    def __init__(self, shape: tuple[int, ...], dtype: Any, xp: Any,
                 plan: Plan | None = None) -> None:
        self.xp, self.started = xp, False
        self.acc = scratch(shape, dtype, xp)
        adds = plan is not None and len(set(plan.owners)) < len(plan.owners)
        self.product: Any = scratch(shape, dtype, xp) if adds else None

    def add(self, a: Any, b: Any, rows: slice | None = None) -> None:
        """acc += a @ b, or acc[..., rows, :] += a @ b (a block of the accumulator's rows)."""
        whole = rows is None or rows.stop - rows.start == self.acc.shape[-2]
        target = self.acc if rows is None else self.acc[..., rows, :]
        if whole and not self.started:
            self.xp.matmul(a, b, out=target)
        else:
            if not self.started:
                self.acc[...] = 0
            part = self.product[..., :target.shape[-2], :]
            self.xp.matmul(a, b, out=part)
            target += part
        self.started = True

    def add_array(self, p: Any) -> None:
        """acc += p, for a product computed elsewhere."""
        if self.started:
            self.acc += p
        else:
            self.acc[...] = p
        self.started = True

    @staticmethod
    def total(sums: list[PartialSum], shape: tuple[int, ...], dtype: Any, xp: Any) -> Any:
        """The workers' sums added in worker order, as a new array (zeros when no worker had
        a chunk: an empty batch)."""
        started = [s.acc for s in sums if s.started]
        if not started:
            return xp.zeros(shape, dtype=dtype)
        out = started[0].copy()                                  # a new array, not scratch
        for acc in started[1:]:
            out += acc
        return out


def take(buf: Any, shape: tuple[int, ...]) -> Any:
    """A view of the first prod(shape) elements of a flat buffer, shaped `shape`."""
    return buf[:math.prod(shape)].reshape(shape)


def split(buf: Any, *sizes: int) -> tuple[Any, ...]:
    """Consecutive views of a flat buffer: the given sizes, then the rest."""
    views, start = [], 0
    for size in sizes:
        views.append(buf[start:start + size])
        start += size
    return (*views, buf[start:])


def chunk_taps(spec: ConvSpec, chunk: Chunk) -> Iterator[tuple[Any, ...]]:
    """For every kernel offset k of the chunk's taps, the index of the padded input (N, *Sp, C)
    that k reads for the chunk's output positions: p * stride + k * dilation (`spec.taps`)."""
    s0, d0 = spec.stride[0], spec.dilation[0]
    offsets = _offset_slices(spec.kernel_size, spec.dilation, spec.stride, spec.out_size)
    for k0, rest in offsets[chunk.taps]:
        yield (chunk.batch, taps(k0, d0, s0, chunk.rows.start, chunk.rows.stop), *rest)


@functools.lru_cache(maxsize=64)
def _offset_slices(kernel_size: tuple[int, ...], d: tuple[int, ...], s: tuple[int, ...],
                   p: tuple[int, ...]) -> tuple[tuple[int, tuple[slice, ...]], ...]:
    """Per kernel offset k, in raster order: k0 and the slices of the other spatial axes, built
    once per geometry (LeNet-sized layers spent 6% of their time rebuilding them per chunk)."""
    return tuple((k[0], tuple(map(taps, k[1:], d[1:], s[1:], [0] * len(p[1:]), p[1:])))
                 for k in itertools.product(*map(range, kernel_size)))
