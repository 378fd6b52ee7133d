"""Depthwise convolutions (one input channel per group) as sums of products over the window view.

With C/G == 1 each output channel g*m + j (m = F/G filters per group) reads input channel g only,
so the GEMMs of im2col degenerate to length-prod(K) dot products, one per output value:

    y[n, p, g, j]  = sum_k  win[n, p, g, k] * w[k, g, j]
    dw[k, g, j]    = sum_{n, p} win[n, p, g, k] * dy[n, p, g, j]

where win[n, p, g, k] = xp[n, p * stride + k * dilation, g] is the read-only window view of the
padded input (no copy). Each is one `einsum` per chunk of output rows (the forward) or per kernel
offset and chunk (the weight gradient): NumPy's sum-of-products loop multiplies and accumulates
in one pass, with no product array, where a multiply and an add per offset cost two passes
each (MobileNetV2's layers, float32, one thread: 2 to 3 times faster). Its inner loop runs
over the last axis, so where the last spatial axis has stride 1 (and m == 1) it is merged with
the channels, as window rows of P_last * C values against the weights repeated along that axis
(`tiles`): long runs whatever C is.

Allocates the output (and, for the weight gradient, one (prod(K), P_last * F) accumulator per
worker) and the weights repeated P_last times; a forward reading x unpadded, zero-padded copies
of the few border rows and columns of each chunk; on array modules without a window view (CuPy),
one product buffer of a chunk's output per worker instead (a multiply and an add per offset).
"""

from __future__ import annotations

import functools
import itertools
import math
import string
from collections.abc import Iterator
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from npconv import _backend, _chunks, _windows
from npconv._chunks import Chunk, Plan
from npconv._config import Settings
from npconv._workspace import result, scratch
from npconv.algorithms._common import chunk_taps, finish, take
from npconv.spec import ConvSpec, inside, taps, whole


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
    instead of restarting every G * m elements (3x faster than broadcasting a (G, m) row).
    In scratch (`_workspace.scratch`): the op's computation uses them and ends first."""
    xp = _backend.namespace(w)
    width = spec.out_size[-1] if spec.rank > 1 else 1
    wk = w.reshape(-1, 1, spec.groups, spec.group_out)           # (prodK, 1, G, m)
    out = scratch((wk.shape[0], width, *wk.shape[2:]), w.dtype, xp)
    out[...] = wk
    return out


def merged(spec: ConvSpec) -> bool:
    """Whether the last spatial axis (not the first: chunks cut that one) and the channels
    form one axis of the window view and of the output: stride 1 there, one filter per group."""
    return spec.rank > 1 and spec.stride[-1] == 1 and spec.group_out == 1


def _windows_view(xp_: Any, spec: ConvSpec, out_size: tuple[int, ...] | None = None,
                  origin: tuple[int, ...] | None = None) -> Any:
    """The window view (N, *P, G, *K), or (N, *P[:-1], P_last * G, *K) when `merged`; of the
    box of `out_size` outputs whose first window starts at `origin` (`_windows.unfold`), when
    given."""
    xp = _backend.namespace(xp_)
    out_size = out_size or spec.out_size
    win = _windows.unfold(xp_, spec.kernel_size, spec.stride, spec.dilation, out_size,
                          origin)                                # (N, *P, *K, G)
    win = xp.moveaxis(win, -1, spec.rank + 1)                    # (N, *P, G, *K) view
    if merged(spec):                                             # strides (G, 1): a view
        win = win.reshape(*win.shape[:spec.rank], -1, *spec.kernel_size)
    return win


def _boxes(spec: ConvSpec, rows: slice) -> list[tuple[tuple[slice, ...], bool]]:
    """The outputs of rows `rows` (and all of the other axes) as boxes, each with whether
    its windows meet the padding: per axis in turn, the positions before and after those
    whose every tap lies inside x are a box each (a slab across the later axes), and the
    positions in between go on to the next axis; what is left at the end is the box of
    windows wholly inside x (for a 3x3 kernel with padding 1 on a 2-D image: the top and
    bottom rows, the first and last columns of the others, and the rest)."""
    bounds = [(rows.start, rows.stop), *((0, p) for p in spec.out_size[1:])]
    boxes: list[tuple[tuple[slice, ...], bool]] = []
    lead: tuple[slice, ...] = ()
    for axis, ((start, stop), k, d, s, (lo, _), size) in enumerate(zip(
            bounds, spec.kernel_size, spec.dilation, spec.stride, spec.pads, spec.in_size)):
        first, last = whole(k, d, s, lo, size, start, stop)
        later = tuple(slice(0, p) for p in spec.out_size[axis + 1:])
        boxes += [((*lead, part, *later), True) for part in (slice(start, first),
                                                             slice(last, stop))
                  if part.stop > part.start]
        if last <= first:
            return boxes
        lead += (slice(first, last),)
    return [*boxes, (lead, False)]


def _box_windows(x: Any, spec: ConvSpec, box: tuple[slice, ...], padded: bool) -> Any:
    """The window view of a box of outputs, from the unpadded x (n, *S, C): a view of x for
    windows inside it, else of a zero-padded copy of the part of x the box reads (a few rows
    or columns)."""
    sizes = tuple(b.stop - b.start for b in box)
    geometry = list(zip(box, spec.kernel_size, spec.dilation, spec.stride, spec.pads))
    first = tuple(taps(0, d, s, b.start, b.stop).start - lo
                  for b, _, d, s, (lo, _) in geometry)           # x's first row read, per axis
    if not padded:
        return _windows_view(x, spec, sizes, first)
    stop = tuple(taps(k - 1, d, s, b.start, b.stop).stop - lo
                 for b, k, d, s, (lo, _) in geometry)            # one past the last
    slab = np.zeros((x.shape[0], *(z - a for a, z in zip(first, stop)), x.shape[-1]),
                    dtype=x.dtype)                               # (n, *extent, C)
    read = tuple(slice(max(a, 0), min(z, n)) for a, z, n in zip(first, stop, spec.in_size))
    if all(r.stop > r.start for r in read):
        slab[(slice(None), *(slice(r.start - a, r.stop - a) for r, a in zip(read, first)))] \
            = x[(slice(None), *read)]
    return _windows_view(slab, spec, sizes)


def _in_bounds(spec: ConvSpec, chunk: Chunk) -> Iterator[tuple[tuple, tuple] | None]:
    """For every kernel offset k of the chunk's taps (in `chunk_taps`' order): the index of the
    unpadded x (N, *S, C) that k reads for the chunk's output positions p whose padded
    position p * stride + k * dilation lies inside x, and the index of those p in dy; None
    where k reads only padding for this chunk."""
    offsets = list(itertools.product(*map(range, spec.kernel_size)))[chunk.taps]
    for k in offsets:
        x_index, dy_index = [chunk.batch], [chunk.batch]
        for axis, (kk, d, s, (lo, _), size, p) in enumerate(zip(
                k, spec.dilation, spec.stride, spec.pads, spec.in_size, spec.out_size)):
            first, last = inside(kk, d, s, lo, size, *((chunk.rows.start, chunk.rows.stop)
                                                        if axis == 0 else (0, p)))
            if last <= first:
                break
            padded = taps(kk, d, s, first, last)                 # in the padded input
            x_index.append(slice(padded.start - lo, padded.stop - lo, s))
            dy_index.append(slice(first, last))
        else:
            yield tuple(x_index), tuple(dy_index)
            continue
        yield None


def einsum_weights(w: Any, spec: ConvSpec) -> tuple[str, Any]:
    """(rule, weights) of the forward's einsum of the window view (`_windows_view`) with w
    (*K, 1, F): the weights (*K, P_last * G) tiled in scratch (`tiles`) when `merged`, else a
    (*K, G, m) view; the output is y (N, *P, F) viewed as (N, *P[:-1], P_last * F) or
    (N, *P, G, m)."""
    if merged(spec):
        wk = tiles(w, spec).reshape(*spec.kernel_size, -1)       # (*K, P_last * G)
    else:
        wk = w.reshape(*spec.kernel_size, spec.groups, spec.group_out)  # (*K, G, m)
    return "{},{}->{}".format(*_subscripts(spec)), wk


@functools.lru_cache(maxsize=256)
def _subscripts(spec: ConvSpec) -> tuple[str, str, str]:
    """einsum letters of the window view, of the weights and of the output: positions
    (n, *P), channel g (or the merged x), filter j, kernel offsets *K."""
    letters = iter(string.ascii_letters)
    pos = "".join(next(letters) for _ in range(spec.rank + (0 if merged(spec) else 1)))
    ks = "".join(next(letters) for _ in range(spec.rank))
    if merged(spec):
        return pos + "X" + ks, ks + "X", pos + "X"               # X = P_last * G
    return pos + "G" + ks, ks + "GJ", pos + "GJ"


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, bias: Any = None,
            clip: tuple | None = None, unpadded: bool = False) -> Any:
    """y (N, *P, F) (+ bias (F,), clipped to `clip`): per chunk of output rows, one einsum of
    the window view with the weights (summing over kernel offsets while it multiplies).

    With `unpadded` (NumPy), xp_ is the input x (N, *S, C) itself, not its zero-padded copy:
    the outputs whose windows lie inside x read it in place, and the border boxes (`_boxes`)
    read zero-padded copies of the few rows or columns they need. The border boxes multiply
    the padding's zeros by the weights as the definition does (0 * inf is NaN). Callers ask
    for it where it is faster (`_kernels.reads_unpadded`): a strided layer skips a padded
    copy four times its output (MobileNetV2's stride-2 layers from 2.4 MiB of x: 0.74-0.94x
    the time), where a merged layer's two column boxes per chunk cost more than the copy."""
    xp = _backend.namespace(xp_, w)
    g, m = spec.groups, spec.group_out
    y = result((spec.batch, *spec.out_size, spec.out_channels), xp_.dtype, xp)  # (N, *P, F)
    chunks = _plan(spec, y.itemsize, settings, xp)
    if xp is not np:
        return _forward_offsets(xp_, w, spec, y, bias, clip, chunks)
    rule, wk = einsum_weights(w, spec)

    def product(win: Any, out: Any) -> None:
        """out (n, *P', F), a box of y = the einsum of its window view with the weights."""
        if merged(spec):                                         # (n, *P'[:-1], P'_last * F)
            width = out.shape[-2] * out.shape[-1]
            np.einsum(rule, win, wk[..., :width], out=_reshaped(out, (*out.shape[:-2], width)))
        else:                                                    # (n, *P', G, m)
            np.einsum(rule, win, wk, out=_reshaped(out, (*out.shape[:-1], g, m)))

    win: Any = None if unpadded else _windows_view(xp_, spec)    # (N, *P, G, *K), maybe merged

    def task(chunk: Chunk, _: None) -> None:
        part = y[chunk.batch, chunk.rows]                        # (n, rows, *P', F) view
        if unpadded:
            for box, padded in _boxes(spec, chunk.rows):
                product(_box_windows(xp_[chunk.batch], spec, box, padded),
                        y[(chunk.batch, *box)])
        else:
            product(win[chunk.batch, chunk.rows], part)
        finish(part, bias, clip, np)

    _chunks.run(task, chunks, lambda: None)
    return y


def _reshaped(a: Any, shape: tuple[int, ...]) -> Any:
    """A view of a with `shape` (AttributeError where that needs a copy: an einsum writing
    into a copy would be lost)."""
    view = a.view()
    view.shape = shape
    return view


def _forward_offsets(xp_: Any, w: Any, spec: ConvSpec, y: Any, bias: Any, clip: tuple | None,
                     chunks: Plan) -> Any:
    """The forward without a window view (CuPy): per chunk, y += xs_k * w[k] over kernel
    offsets, into a product buffer."""
    xp = _backend.namespace(xp_, w)
    g, m = spec.groups, spec.group_out
    wt = tiles(w, spec)                                          # (prodK, P_last, G, m)
    b = None if bias is None else bias.reshape(g, m)             # (G, m)

    def task(chunk: Chunk, buf: Any) -> None:
        part = y[chunk.batch, chunk.rows]                        # (n, rows, *P', F) view
        out = part.reshape(*part.shape[:-1], g, m)               # (n, rows, *P', G, m) view
        prod = take(buf, out.shape)                              # (n, rows, *P', G, m)
        for i, index in enumerate(chunk_taps(spec, chunk)):
            xs = xp_[index][..., None]                           # (n, rows, *P', G, 1) view
            xp.multiply(xs, wt[i], out=out if i == 0 else prod)
            if i:
                out += prod
        finish(out, b, clip, xp)

    most = chunks.most(spec.out_size)
    _chunks.run(task, chunks, lambda: scratch((most * spec.out_channels,), y.dtype, xp))
    return y


class _Phase(NamedTuple):
    """One phase of one axis of a strided input gradient (`grad_input`): the input positions
    i = t * stride + rho - lo, t in [t0, t0 + size), as a slice of x; the kernel offsets that
    reach them, in decreasing order, their spacing in dy, and `lead` = c - t0 for the first of
    them (it reads dy[t - c]: `lead` zeros before dy cover its first read)."""

    x: slice
    taps: tuple[int, ...]
    size: int
    dilation: int
    lead: int


def _phases(k: int, d: int, s: int, lo: int, size: int) -> list[_Phase]:
    """The phases of one axis with an input position in them.

    Input position i (padded position i + lo) is read by output p through offset k where
    p * s + k * d = i + lo: only offsets with k * d = rho (mod s), rho = (i + lo) mod s, and
    then p = t - c_k with t = (i + lo - rho) / s and c_k = (k * d - rho) / s. So the phase
    rho of the input is a stride-1 correlation of dy with those offsets, flipped: offset k
    reads dy[t - c_k], and consecutive offsets k - s' and k (s' = s / gcd(s, d)) read
    d / gcd(s, d) apart in dy."""
    phases = []
    for rho in range(s):
        # the t whose padded position t * s + rho lies in x
        t0, t1 = inside(rho, 1, s, lo, size, lo // s - 1, (lo + size) // s + 1)
        if t1 <= t0:
            continue                                             # no input position in it
        padded = taps(rho, 1, s, t0, t1)
        ks = tuple(j for j in reversed(range(k)) if j * d % s == rho)
        c = [(j * d - rho) // s for j in ks]                     # decreasing
        phases.append(_Phase(slice(padded.start - lo, padded.stop - lo, s), ks, t1 - t0,
                             c[0] - c[1] if len(c) > 1 else 1, c[0] - t0 if ks else 0))
    return phases


def _phase_geometry(spec: ConvSpec, interior: bool):
    """What `grad_input` computes on: the phases of each axis, dy's zeros in front per axis,
    dy's padded size, and dx's size (S with `interior`, else Sp)."""
    los, sizes = (tuple(lo for lo, _ in spec.pads), spec.in_size) if interior else \
        ((0,) * spec.rank, spec.padded_size)
    axes = [_phases(*a) for a in zip(spec.kernel_size, spec.dilation, spec.stride, los, sizes)]
    fronts = tuple(max([0, *(ph.lead for ph in phases if ph.taps)]) for phases in axes)
    ends = [max((front - ph.lead + ph.size + (len(ph.taps) - 1) * ph.dilation
                 for ph in phases if ph.taps), default=0)
            for phases, front in zip(axes, fronts)]
    padded = tuple(max(p + f, e) for p, f, e in zip(spec.out_size, fronts, ends))  # dy's
    return axes, fronts, padded, sizes


def phase_bytes(spec: ConvSpec, itemsize: int, interior: bool) -> int:
    """The bytes of `grad_input`'s temporaries for one image: dy with its zeros around it and
    the largest phase's result."""
    axes, _, padded, _ = _phase_geometry(spec, interior)
    phase = math.prod(max((ph.size for ph in phases), default=0) for phases in axes)
    return (math.prod(padded) + phase) * spec.in_channels * itemsize


def grad_input(dy: Any, w: Any, spec: ConvSpec, settings: Settings, interior: bool) -> Any:
    """dx (N, *S, C) with `interior` (zero padding), else dxp (N, *Sp, C): the strided input
    gradient of a depthwise layer (one filter per group) as stride-1 correlations, one per
    phase of the input (`_phases`, every combination of one phase per axis: 4 for stride 2 in
    2-D), each one einsum over a window view of dy, zero-padded once per chunk of images, with
    the phase's offsets of w, merged along the last axis; its result is copied into the
    phase's positions of dx. A phase no offset reaches is zero (remainder rows).

    The definition's sum has only products of dy; the padding's zeros here multiply weights
    too, so the caller passes finite weights (else the scatter). MobileNetV2's stride-2
    layers, float32, two workers: 0.51-0.76x the time of the scatter's per-offset products and
    strided adds (a zeroed dxp, two passes per offset, and its unpadding), 16x56x56x96
    7.4 -> 4.3 ms. Allocates dx, the weights of each combination of phases repeated along its
    last axis, and per worker the padded dy of a chunk and one phase's result."""
    n, c, rank = spec.batch, spec.in_channels, spec.rank
    axes, fronts, padded, sizes = _phase_geometry(spec, interior)
    image = phase_bytes(spec, dy.itemsize, interior)
    chunks = _chunks.plan(n, 1, settings, row_bytes=image, xp=np)
    wk = w.reshape(*spec.kernel_size, c)                         # (*K, C)
    dx = np.empty((n, *sizes, c), dtype=dy.dtype)                # (N, *S or *Sp, C)
    inner = tuple(slice(f, f + p) for f, p in zip(fronts, spec.out_size))
    rule = f"{string.ascii_lowercase[:rank]}X{string.ascii_uppercase[:rank]}," \
           f"{string.ascii_uppercase[:rank]}X->{string.ascii_lowercase[:rank]}X"  # n, *T, K
    work = []                         # per combination of phases: its einsum's operands
    for combo in itertools.product(*axes):
        t, k = tuple(ph.size for ph in combo), tuple(len(ph.taps) for ph in combo)
        wt = None if 0 in k else np.broadcast_to(
            wk[np.ix_(*(ph.taps for ph in combo))][..., None, :], (*k, t[-1], c)
        ).reshape(*k, t[-1] * c)                                 # (*k, T_last * C), a copy
        work.append((tuple(ph.x for ph in combo), t, k, tuple(ph.dilation for ph in combo),
                     tuple(f - ph.lead for f, ph in zip(fronts, combo)), wt))

    def task(chunk: Chunk, buf: Any) -> None:
        images = chunk.batch.stop - chunk.batch.start
        dyp = take(buf, (images, *padded, c))                    # (n, *(P + pads), C)
        _fill_around(dyp, inner, dy[chunk.batch])
        out = buf[dyp.size:]
        for index, t, k, dilation, origin, wt in work:
            target = dx[(chunk.batch, *index)]                   # (n, *T, C) view
            if wt is None:                                       # no offset reaches it
                target[...] = 0
                continue
            win = _windows.unfold(dyp, k, (1,) * rank, dilation, t, origin)  # (n, *T, *k, C)
            win = np.moveaxis(win, -1, rank + 1).reshape(images, *t[:-1], t[-1] * c, *k)
            res = take(out, (images, *t[:-1], t[-1] * c))        # (n, *T[:-1], T_last * C)
            np.einsum(rule, win, wt, out=res)
            target[...] = res.reshape(target.shape)

    _chunks.run(task, chunks, lambda: scratch((chunks.most((1,)) * image // dy.itemsize,),
                                              dy.dtype, np))
    return dx


def _fill_around(dst: Any, inner: tuple[slice, ...], src: Any) -> None:
    """dst[:, inner] = src, and zeros in the rest of dst (the slabs around inner)."""
    for axis, part in enumerate(inner, start=1):
        index = (slice(None),) * axis
        dst[(*index, slice(0, part.start))] = 0
        dst[(*index, slice(part.stop, None))] = 0
    dst[(slice(None), *inner)] = src


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings,
                unpadded: bool = False) -> Any:
    """dw (*K, 1, F): per chunk and kernel offset, one einsum of the offset's input slice with
    dy, summed over positions (with the last spatial axis kept and summed at the end when
    `merged`: the einsum's inner loop then runs along whole rows).

    With `unpadded`, xp_ is the input x (N, *S, C) itself, not its zero-padded copy: each
    offset reads only the part of x it meets, against the matching part of dy (the padding
    adds nothing to dw), so the backward of a padded depthwise layer makes no padded copy
    of x (MobileNetV2's training step made 17, 7.6 ms of its time)."""
    xp = _backend.namespace(xp_, dy)
    g, m, f = spec.groups, spec.group_out, spec.out_channels
    nk = math.prod(spec.kernel_size)
    merge = merged(spec) and xp is np
    chunks = _plan(spec, dy.itemsize, settings, xp, fixed_bytes=nk * f * dy.itemsize)
    lead = string.ascii_lowercase[:spec.rank]                    # n, rows, *P'[:-1]

    def task(chunk: Chunk, acc: Any) -> None:
        d = dy[chunk.batch, chunk.rows]                          # (n, rows, *P', F) view
        reads = _in_bounds(spec, chunk) if unpadded else chunk_taps(spec, chunk)
        for i, index in enumerate(reads, chunk.taps.start):
            if unpadded:
                if index is None:                                # the offset reads padding
                    continue
                index, d = index[0], dy[index[1]]                # x's part and dy's
            xs = xp_[index]                                      # (n, rows, *P', G) view
            if merge:                                            # rows of P_last * F: views
                sums = np.einsum(lead + "X," + lead + "X->X", xs.reshape(*d.shape[:-2], -1),
                                 d.reshape(*d.shape[:-2], -1))   # (P_last * F,)
                acc[i] += sums.reshape(-1, f).sum(axis=0)
            else:
                acc[i] += xp.einsum(lead + "AG," + lead + "AGJ->GJ", xs,
                                    d.reshape(*d.shape[:-1], g, m)).reshape(f)

    def state() -> Any:
        return xp.zeros((nk, f), dtype=dy.dtype)

    dw = sum(_chunks.run(task, chunks, state))                   # (prodK, F)
    return dw.reshape(*spec.kernel_size, 1, f)                   # (*K, 1, F)
