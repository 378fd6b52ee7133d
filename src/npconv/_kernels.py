"""The convolution primitive, its weight gradient, and the transpose rule for its input gradient.

Internal layout: padded input xp (N, *Sp, C), weight w (*K, C/G, F), output y (N, *P, F); the
public ops convert the caller's layout and padding before calling in. With cols = unfold(xp),
the window matrix (N, *P, *K, C), and channel c = g * C/G + c' in group g:

    y[n, p, g*F/G + f] = sum_{k, c'} cols[n, p, k, g*C/G + c'] * w[k, c', g*F/G + f]

`forward` computes this sum and `grad_weight` its derivative in w, each by the algorithm that
`npconv.algorithms.choose` picks (or the caller forces). The derivative in x is derived here,
once, for every algorithm (docs/gradients.md has the index algebra):

    dxp[i] = sum over (p, k) with p * stride + k * dilation = i of dy[p] @ w[k]^T

- *Gather* (stride 1): dxp[i] = sum_k dy[i - k d] @ w[k]^T is itself a forward convolution of
  dy, zero-padded by d (K - 1), with the kernel flipped and its channel axes swapped per group
  (`ConvSpec.transposed`): the same primitive, so it runs on whichever algorithm is chosen for
  that geometry (Winograd, depthwise, pointwise, im2col).
- *Scatter* (stride > 1, an im2col GEMM with fewer than `Tuning.gather_min_channels` output
  channels, or a weight with a NaN or inf, which the gather would multiply by the zeros padding
  dy): per chunk dcols = dy @ w^T, one GEMM, then one strided `+=` per kernel offset onto
  the pixels that offset read (Chainer's col2im), never a zero-dilated copy of dy. Measured
  against a polyphase split of the strided gradient into stride-1 forwards (ResNet 3x3 s2,
  float32: 33 against 55 ms) and against the gather for narrow outputs (LeNet), it wins both.
- *Phases* (stride > 1, one input and one output channel per group, finite weights): there
  the scatter's GEMM degenerates to elementwise products, two passes per offset, and the
  polyphase split wins instead: each phase of the input is a stride-1 correlation of dy with
  the offsets that reach it, one merged einsum (`depthwise.grad_input`; MobileNetV2's stride-2
  layers 0.51-0.76x the scatter's time).

Every computation runs inside a nested `_workspace.scope`, so its chunk buffers are back in the
pool before the next computation of the op starts.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from npconv import _args, _backend, _chunks, _layout, _windows, _workspace, algorithms
from npconv._chunks import Chunk
from npconv._config import Settings
from npconv._workspace import scratch
from npconv.algorithms import Algorithm, depthwise, im2col
from npconv.algorithms._common import chunk_taps, grouped_rows, grouped_w, take
from npconv.spec import ConvSpec, whole


def forward(xp_: Any, w: Any, spec: ConvSpec, settings: Settings, *,
            algorithm: str | None = None, bias: Any = None, clip: tuple | None = None,
            unpadded: bool = False) -> Any:
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) (+ bias (F,)), clipped to `clip`
    ((lo, hi) from `_args.clip_bounds`) chunk by chunk; with `unpadded`, from the input x
    (N, *S, C) itself (depthwise only: `reads_unpadded`)."""
    if _empty(spec):
        y = _zeros(w, (spec.batch, *spec.out_size, spec.out_channels))
        y = y if bias is None else y + bias
        return y if clip is None else _backend.namespace(y).clip(y, *clip)
    alg = _choose(spec, algorithm, w, settings)
    with _workspace.scope(settings):
        if unpadded:
            return depthwise.forward(xp_, w, spec, settings, bias, clip, unpadded=True)
        return alg.forward(_prepared(alg, xp_, settings), w, spec, settings, bias, clip)


def grad_weight(xp_: Any, dy: Any, spec: ConvSpec, settings: Settings, *,
                algorithm: str | None = None, unpadded: bool = False) -> Any:
    """dw (*K, C/G, F) from the padded input (N, *Sp, C) and dy (N, *P, F); with `unpadded`,
    from the input x (N, *S, C) itself (depthwise only: `reads_unpadded`)."""
    if _empty(spec):
        return _zeros(dy, (*spec.kernel_size, spec.group_in, spec.out_channels))
    alg = _choose(spec, algorithm, dy, settings)
    with _workspace.scope(settings):
        xp_, dy = (_prepared(alg, a, settings) for a in (xp_, dy))
        if unpadded:
            return depthwise.grad_weight(xp_, dy, spec, settings, unpadded=True)
        return alg.grad_weight(xp_, dy, spec, settings)


def reads_unpadded(spec: ConvSpec, algorithm: str | None, x: Any, dtype: Any,
                   settings: Settings, dy: Any = None) -> bool:
    """Whether `forward`, or with dy `grad_weight`, reads the caller's channels_last x as it
    is (`unpadded`): a depthwise layer on NumPy, zero padding (none cropped), x C-contiguous
    in the compute dtype; for the weight gradient, dy finite wherever a kernel offset meets
    the padding (there the definition adds 0 * dy, NaN for an infinite or NaN dy, which
    skipping the padding would drop); for the forward, where that is faster: window rows not
    merged with the channels and x of at least `Tuning.unpadded_min_bytes` (its border boxes
    multiply the padding's zeros by the weights, as the definition does)."""
    return (spec.group_in == 1 and type(x) is np.ndarray and x.dtype == dtype
            and x.flags.c_contiguous and spec.padding_mode == "zeros"
            and all(lo >= 0 and hi >= 0 for lo, hi in spec.pads)
            and (dy is not None or (not depthwise.merged(spec)
                                    and x.nbytes >= settings.tuning.unpadded_min_bytes))
            and _choose(spec, algorithm, x, settings).name == "depthwise"
            and (dy is None or _finite_border(dy, spec)))


def _finite_border(dy: Any, spec: ConvSpec) -> bool:
    """Whether dy (N, *P, F) is finite at every output position where some kernel offset reads
    the padding (outside the box of positions whose whole window lies in x)."""
    for axis, (k, d, s, (lo, _), size, p) in enumerate(zip(
            spec.kernel_size, spec.dilation, spec.stride, spec.pads, spec.in_size,
            spec.out_size)):
        first, last = whole(k, d, s, lo, size, 0, p)
        for part in (slice(0, first), slice(last, p)):
            if part.stop > part.start and not np.isfinite(dy[(slice(None),) * (axis + 1)
                                                             + (part,)]).all():
                return False
    return True


def grad_input(dy: Any, w: Any, spec: ConvSpec, settings: Settings, *,
               algorithm: str | None = None, unpad: bool = False) -> Any:
    """dxp (N, *Sp, C), the gradient with respect to the padded input, from dy (N, *P, F) (any
    strides and float dtype: converted to w's dtype on the way).

    With `unpad`, dx (N, *S, C) with respect to the unpadded input (the padding's gradient sent
    back to the pixels it copied); for zero padding the gather computes only those pixels.
    Pixels no window reads (remainder rows when the output size was floored) get zero.
    """
    size = spec.in_size if unpad else spec.padded_size
    if _empty(spec):
        return _zeros(w, (spec.batch, *size, spec.in_channels))
    alg = gather_algorithm(spec, algorithm, w.itemsize, _backend.is_gpu(w), settings)
    zeros = unpad and spec.padding_mode == "zeros"              # dx of the pixels inside
    phases = alg is None and _phases_apply(spec, algorithm, _backend.is_gpu(w), w.itemsize,
                                           settings, zeros)
    if (alg is not None or phases) and not _finite(w):
        alg, phases = None, False  # the zero padding of dy times an inf weight would be NaN
    interior = zeros and (alg is not None or phases)
    with _workspace.scope(settings):
        if alg is not None:
            corr, pads = spec.transposed(interior)
            dyp = _layout.padded(dy, pads, "zeros", w.dtype, settings,
                                 not alg.takes_views)            # (N, *(P + 2e), F)
            dx = forward(dyp, flipped_w(w, spec), corr, settings, algorithm=alg.name)
        elif phases:
            dy = _layout.padded(dy, ((0, 0),) * spec.rank, "zeros", w.dtype, settings)
            dx = depthwise.grad_input(dy, w, spec, settings, interior)  # (N, *S or *Sp, C)
        else:
            dy = _layout.padded(dy, ((0, 0),) * spec.rank, "zeros", w.dtype, settings)
            dx = _scatter(dy, w, spec, settings)                 # (N, *Sp, C)
    if unpad and not interior:
        dx = _windows.pad_adjoint(dx, spec.pads, spec.padding_mode)  # (N, *S, C)
    return dx


def _phases_apply(spec: ConvSpec, algorithm: str | None, gpu: bool, itemsize: int,
                  settings: Settings, interior: bool = True) -> bool:
    """Whether a strided input gradient runs as `depthwise.grad_input`'s stride-1 phases (with
    finite weights): one input and one output channel per group, NumPy, the depthwise
    algorithm (chosen or forced), and one image's temporaries within the workspace (its
    chunks are whole images; the scatter's are rows)."""
    return (spec.group_in == spec.group_out == 1 and spec.groups > 1
            and algorithm in (None, "depthwise") and not gpu
            and depthwise.phase_bytes(spec, itemsize, interior) <= settings.workspace)


def gather_algorithm(spec: ConvSpec, algorithm: str | None, itemsize: int, gpu: bool,
                     settings: Settings) -> Algorithm | None:
    """The algorithm that computes the input gradient as a forward correlation (stride 1), or
    None for the scatter: strided, a forced algorithm that cannot run the correlation's
    geometry, or an im2col GEMM with too few output channels (the scatter's is wider)."""
    if any(s != 1 for s in spec.stride):
        return None
    corr, _ = spec.transposed()
    if algorithm is not None and not algorithms.ALGORITHMS[algorithm].applies(corr):
        return None
    alg = algorithms.choose(corr, algorithm, itemsize=itemsize, settings=settings, gpu=gpu)
    if alg.name == "im2col" and corr.out_channels // corr.groups < \
            settings.tuning.gather_min_channels:
        return None
    return alg


def flipped_w(w: Any, spec: ConvSpec) -> Any:
    """Weight of the transposed correlation: (*K, C/G, F) -> (*K, F/G, C), flipped in every
    spatial axis, w'[k, f, g*C/G + c] = w[K - 1 - k, c, g*F/G + f].

    A view of one copy laid out (G, C/G, *K, F/G): the copy moves whole runs of F/G values,
    and the GEMMs take the matrices (prod(K) F/G, C/G) it gives as transposed operands. A
    C-contiguous w' would be a transposing copy of single values (5.6 ms for a 3x3x512x512
    float32 weight on the development machine, against 0.9 ms this way, for every backward
    of such a layer)."""
    r, g = spec.rank, spec.groups
    xp = _backend.namespace(w)
    w = w[(slice(None, None, -1),) * r]                          # (*K, C/G, F) flipped view
    w = w.reshape(*spec.kernel_size, spec.group_in, g, spec.group_out)  # (*K, C/G, G, F/G)
    m = xp.ascontiguousarray(w.transpose(r + 1, r, *range(r), r + 2))  # (G, C/G, *K, F/G)
    w = m.transpose(*range(2, r + 2), r + 2, 0, 1)               # (*K, F/G, G, C/G) view
    return w.reshape(*spec.kernel_size, spec.group_out, spec.in_channels)  # a view of m


def grad_bias(dy: Any, dtype: Any) -> Any:
    """Bias gradient: dy (N, *P, F) summed over batch and space -> (F,), as `dtype`.

    A contiguous dy in the compute dtype sums as a matrix-vector product, ones @ dy
    (N*prod(P), F): BLAS is 2 to 8 times faster than NumPy's reduction over the rows of a
    narrow matrix. Any other dy (a channels_first view, float16) reduces in its own memory
    order, accumulating in the compute dtype.
    """
    xp = _backend.namespace(dy)
    f, compute = dy.shape[-1], _args.compute_dtype(dtype)
    if dy.size == 0:
        return xp.zeros(f, dtype=dtype)                          # (F,)
    if dy.flags.c_contiguous and dy.dtype == compute:
        with _chunks.single_blas(xp):   # memory-bound; spinning BLAS threads would slow the next op
            db = xp.ones(dy.size // f, dtype=dy.dtype) @ dy.reshape(-1, f)  # (F,)
    else:
        db = dy.sum(axis=tuple(range(dy.ndim - 1)), dtype=compute)  # (F,)
    return db.astype(dtype, copy=False)


def choices(spec: ConvSpec, itemsize: int, settings: Settings,
            algorithm: str | None = None) -> dict[str, str]:
    """Which algorithm runs each computation on NumPy, e.g. {"forward": "winograd",
    "grad_weight": "winograd", "grad_input": "winograd (transposed)"} (benchmarks report it)."""
    name = algorithms.choose(spec, algorithm, itemsize=itemsize, settings=settings).name
    gather = gather_algorithm(spec, algorithm, itemsize, False, settings)
    strided = "phases" if _phases_apply(spec, algorithm, False, itemsize, settings) \
        else "scatter"                                           # (for finite weights)
    return {"forward": name, "grad_weight": name,
            "grad_input": strided if gather is None else f"{gather.name} (transposed)"}


def _choose(spec: ConvSpec, algorithm: str | None, like: Any, settings: Settings) -> Algorithm:
    return algorithms.choose(spec, algorithm, itemsize=like.itemsize, settings=settings,
                             gpu=_backend.is_gpu(like))


def _prepared(alg: Algorithm, a: Any, settings: Settings) -> Any:
    """`a` C-contiguous (a scratch copy when it is not), unless the algorithm takes views as
    they come (pointwise reads a channels_first array, seen channels_last, without a copy)."""
    if alg.takes_views:
        return a
    return _layout.padded(a, ((0, 0),) * (a.ndim - 2), "zeros", a.dtype, settings)


def _finite(w: Any) -> bool:
    """Whether every weight is finite (assumed on CuPy, where asking would wait for the device).

    The gather multiplies every weight by the zeros padding dy, terms the definition does not
    have: a NaN or inf weight would turn them into NaN where dx has a number. The scatter
    multiplies only the terms of the definition, so it takes non-finite weights."""
    return _backend.namespace(w) is not np or bool(np.isfinite(w).all())


def _empty(spec: ConvSpec) -> bool:
    """A zero-size dimension (no images, channels or output positions): every result is zero
    or empty, and nothing is chunked."""
    return 0 in (spec.batch, spec.in_channels, spec.out_channels, *spec.out_size)


def _zeros(like: Any, shape: tuple[int, ...]) -> Any:
    """Zeros of `shape` with `like`'s dtype and array module (the zero-size results)."""
    return _backend.namespace(like).zeros(shape, dtype=like.dtype)


# ---------------------------------------------------------------------------------------------
# The scatter
# ---------------------------------------------------------------------------------------------


def _scatter(dy: Any, w: Any, spec: ConvSpec, settings: Settings) -> Any:
    """dxp (N, *Sp, C): per chunk, dcols = dy @ w^T (one GEMM), folded onto the input pixels
    each kernel offset read (one strided `+=` per offset). Chunks never share an image across
    workers, so their scatters never overlap."""
    xp = _backend.namespace(dy, w)
    g, c = spec.groups, spec.in_channels
    wt = grouped_w(w, spec).transpose(0, 2, 1)                   # (G, F/G, prodK*C/G)
    chunks = im2col.plan(spec, dy.itemsize, settings, xp, by_image=True)
    size = chunks.most(spec.out_size) * chunks.most_taps() * c
    if g == 1 and c < settings.tuning.gather_min_channels:
        dxp_t = xp.zeros((c, spec.batch, *spec.padded_size), dtype=dy.dtype)  # (C, N, *Sp)
        task = _narrow_fold(dxp_t, dy, wt[0], spec)
        dxp = xp.moveaxis(dxp_t, 0, -1)                          # (N, *Sp, C) view
    elif spec.group_in == spec.group_out == 1:
        dxp = xp.zeros((spec.batch, *spec.padded_size, c), dtype=dy.dtype)  # (N, *Sp, C)
        task = _depthwise_fold(dxp, dy, w, spec)
    else:
        dxp = xp.zeros((spec.batch, *spec.padded_size, c), dtype=dy.dtype)  # (N, *Sp, C)
        task = _wide_fold(dxp, dy, wt, spec)
    _chunks.run(task, chunks, lambda: scratch((size,), dy.dtype, xp))
    return dxp


def _narrow_fold(dxp_t: Any, dy: Any, wt: Any, spec: ConvSpec) -> Any:
    """Fold task for few channels, into a channels-first dxp_t (C, N, *Sp): dcols^T = w
    (taps*C, F) @ dy^T is contiguous over positions for each (offset, channel), so every `+=`
    runs along whole output rows rather than over C elements at a time."""
    xp = _backend.namespace(dy)
    c = spec.in_channels

    def task(chunk: Chunk, buf: Any) -> None:
        d = dy[chunk.batch, chunk.rows]                          # (n, rows, *P', F)
        block = wt[:, chunk.taps.start * c:chunk.taps.stop * c]  # (F, taps*C)
        dcols = take(buf, (block.shape[1], math.prod(d.shape[:-1])))  # (taps*C, R)
        xp.matmul(block.T, d.reshape(-1, d.shape[-1]).T, out=dcols)
        dcols = dcols.reshape(-1, c, *d.shape[:-1])              # (taps, C, n, rows, *P')
        for i, index in enumerate(chunk_taps(spec, chunk)):
            target = dxp_t[(slice(None), *index)]                # (C, n, rows, *P') view
            target += dcols[i]

    return task


def _depthwise_fold(dxp: Any, dy: Any, w: Any, spec: ConvSpec) -> Any:
    """Fold task for one input and one output channel per group, where the GEMM dy @ w^T
    degenerates to products: per kernel offset, dy * w[k] (the offset's weights repeated
    along the output's last axis: long contiguous loops) added onto the pixels it read
    (ResNet-style stride-2 depthwise dx, 56x56x96 float32: 32 ms as a grouped GEMM, 7 here)."""
    xp = _backend.namespace(dy)
    tiles = depthwise.tiles(w, spec)                             # (prodK, P_last, C, 1)

    def task(chunk: Chunk, buf: Any) -> None:
        d = dy[chunk.batch, chunk.rows]                          # (n, rows, *P', C)
        prod = take(buf, d.shape)
        for i, index in enumerate(chunk_taps(spec, chunk), chunk.taps.start):
            xp.multiply(d, tiles[i, ..., 0], out=prod)
            dxp[index] += prod

    return task


def _wide_fold(dxp: Any, dy: Any, wt: Any, spec: ConvSpec) -> Any:
    """Fold task: dcols = dy @ w^T (G, R, taps*C/G), then one `+=` per kernel offset."""
    xp = _backend.namespace(dy)
    g, cg = spec.groups, spec.group_in

    def task(chunk: Chunk, buf: Any) -> None:
        part = dy[chunk.batch, chunk.rows]                       # (n, rows, *P', F)
        d = grouped_rows(part, g)                                # (G, R, F/G) view
        block = wt[:, :, chunk.taps.start * cg:chunk.taps.stop * cg]  # (G, F/G, taps*C/G)
        dcols = take(buf, (g, d.shape[1], block.shape[2]))       # (G, R, taps*C/G)
        xp.matmul(d, block, out=dcols)
        lead = part.shape[:-1]                                   # (n, rows, *P')
        dcols = dcols.reshape(g, *lead, -1, cg)                  # (G, n, rows, *P', taps, C/G)
        dcols = xp.moveaxis(dcols, 0, -2)                        # (n, rows, *P', taps, G, C/G)
        for i, index in enumerate(chunk_taps(spec, chunk)):
            target = dxp[index].reshape(*lead, g, cg)            # (n, rows, *P', G, C/G) view
            target += dcols[..., i, :, :]

    return task
