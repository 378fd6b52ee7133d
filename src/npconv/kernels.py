"""The convolution primitive and its two gradients, on channels_last arrays.

Internal layout: padded input xp (N, *Sp, C), weight w (*K, C/G, F), output y (N, *P, F); the
public ops convert the caller's layout and padding before calling in. With cols = unfold(xp),
the window matrix (N, *P, *K, C), and channel c = g * C/G + c' in group g:

    y[n, p, g*F/G + f] = sum_{k, c'} cols[n, p, k, g*C/G + c'] * w[k, c', g*F/G + f]

Differentiating this one sum gives both gradients:

    dw[k, c', g*F/G + f]  = sum_{n, p} cols[n, p, k, g*C/G + c'] * dy[n, p, g*F/G + f]
    dcols[n, p, k, c]     = sum_f dy[n, p, g*F/G + f] * w[k, c', g*F/G + f]
    dxp                   = fold(dcols)

so dw is a GEMM against the same window matrix as the forward pass, and dxp scatters dy @ w_k^T
onto the input pixels each offset read: xp[p * stride + k * dilation] for every kernel offset k.
That scatter is the "dilated dy, rotated kernel" rule written without building the dilated copy:
inserting stride - 1 zeros between rows of dy and correlating with the flipped kernel computes
exactly these sums, plus many products with those zeros. With stride 1 there are no zeros to
insert: dxp[i] = sum_k dy[i - k*d] @ w[k]^T is itself a forward convolution of dy (padded by
d * (K - 1)) with the flipped kernel, which gathers instead of scattering
(`algorithms._layout.full_correlation`).

These sums are computed by the algorithms of `npconv.algorithms` (chunked im2col, per-offset
GEMMs, pointwise GEMMs, depthwise products, Winograd, FFT), chosen per computation by shape or
forced with `algorithm=`, within the workspace limit in force or `workspace=` (bytes). Results
may be views of larger arrays (an odd-sized Winograd output, a channels_first pointwise one);
the public ops copy them into the caller's layout.
"""

from __future__ import annotations

from dataclasses import replace

from npconv import _backend, _config, algorithms, windows
from npconv.algorithms import _chunks
from npconv.spec import ConvSpec


def forward(xp_, w, spec: ConvSpec, *, bias=None, algorithm=None, workspace=None):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)) + bias (F,) when given.

    Algorithms whose module sets `ADDS_BIAS` add it chunk by chunk, while the output rows are
    still in cache and on every worker; for the others it is added here.
    """
    if spec.batch == 0:                                          # no images: nothing to chunk
        return _zeros(xp_, (0, *spec.out_size, spec.out_channels))
    settings = _settings(spec, workspace, xp_.itemsize)
    alg = algorithms.choose("forward", spec, algorithm, settings.workspace,
                            gpu=_backend.is_gpu(xp_), itemsize=xp_.itemsize)
    (xp_,) = _prepared(alg, xp_)
    if bias is not None and getattr(alg.module, "ADDS_BIAS", False):
        return alg.module.forward(xp_, w, spec, settings, bias=bias)
    y = alg.module.forward(xp_, w, spec, settings)
    if bias is not None:
        y += bias
    return y


def grad_weight(xp_, dy, spec: ConvSpec, *, algorithm=None, workspace=None):
    """dw (*K, C/G, F) from the padded input (N, *Sp, C) and dy (N, *P, F)."""
    if spec.batch == 0:                                          # an empty sum
        return _zeros(dy, (*spec.kernel_size, spec.group_in, spec.out_channels))
    settings = _settings(spec, workspace, dy.itemsize)
    alg = algorithms.choose("grad_weight", spec, algorithm, settings.workspace,
                            gpu=_backend.is_gpu(dy), itemsize=dy.itemsize)
    xp_, dy = _prepared(alg, xp_, dy)
    return alg.module.grad_weight(xp_, dy, spec, settings)


def grad_input(dy, w, spec: ConvSpec, *, algorithm=None, workspace=None, unpad=False):
    """dxp (N, *Sp, C): gradient with respect to the padded input, from dy (N, *P, F).

    With `unpad`, the gradient with respect to the unpadded input, dx (N, *S, C), i.e.
    `windows.pad_adjoint(dxp, spec.pads, spec.padding_mode)`; for zero padding, algorithms that
    can compute only the inner pixels do so. Pixels no window reads (the remainder rows when the
    output size was floored) keep a zero gradient.
    """
    if spec.batch == 0:
        size = spec.in_size if unpad else spec.padded_size
        return _zeros(dy, (0, *size, spec.in_channels))
    settings = _settings(spec, workspace, dy.itemsize)
    alg = algorithms.choose("grad_input", spec, algorithm, settings.workspace,
                            gpu=_backend.is_gpu(dy), itemsize=dy.itemsize)
    (dy,) = _prepared(alg, dy)
    if unpad and spec.padding_mode == "zeros" and alg.implements("grad_input_interior"):
        return alg.module.grad_input_interior(dy, w, spec, settings)
    dxp = alg.module.grad_input(dy, w, spec, settings)
    return windows.pad_adjoint(dxp, spec.pads, spec.padding_mode) if unpad else dxp


def _settings(spec: ConvSpec, workspace, itemsize: int):
    """The settings in force, on one worker for a small layer (`_chunks.serial_layer`)."""
    settings = _config.resolve(workspace)
    return replace(settings, threads=1) if _chunks.serial_layer(spec, itemsize) else settings


def _zeros(like, shape):
    """Zeros of `shape` with `like`'s dtype and array module (the empty-batch results)."""
    return _backend.namespace(like).zeros(shape, dtype=like.dtype)


def _prepared(alg, *arrays):
    """The arrays C-contiguous, unless the algorithm takes views as they come (pointwise reads
    a channels_first array, seen channels_last through a transposed view, without a copy)."""
    if getattr(alg.module, "TAKES_VIEWS", False):
        return arrays
    return tuple(algorithms.contiguous(a) for a in arrays)
