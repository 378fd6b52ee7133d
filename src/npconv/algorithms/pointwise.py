"""Pointwise (1x1) convolutions as one direct GEMM, without a window matrix.

A 1x1 kernel with stride 1 reads every pixel once: the padded input (N, *Sp, C) already is the
window matrix (N*prod(P), C), so y = x @ w, dx = dy @ w^T and dw = x^T @ dy are single GEMMs on
reshaped views, run by BLAS on all its threads. Arrays of a channels_first caller arrive as
transposed views; they are multiplied in their own layout, y (N, F, S) = w^T @ x (N, C, S), with
no copy in or out. Only the results are allocated (and, for dw of channels_first arrays, one
(C, F) product per image of a batch chunk within the workspace). Strided 1x1 kernels, which
read a subsampled grid, and grouped ones go through chunked im2col, whose window matrix for a
1x1 kernel is just that grid.
"""

from __future__ import annotations

from npconv import _backend
from npconv.algorithms import im2col
from npconv.spec import ConvSpec

PARALLEL = False
"""Its GEMMs run unchunked, threaded by BLAS (strided and grouped cases use im2col's setting)."""

TAKES_VIEWS = True
"""`kernels` passes inputs as they come (channels_first arrays as transposed views)."""


def _direct(spec: ConvSpec) -> bool:
    """Ungrouped, and every padded pixel is read once (stride 1, not a transposed convolution's
    spec whose output stops short)."""
    return spec.groups == 1 and spec.padded_size == spec.out_size


def _channels_first(a):
    """(N, C, prod(S)), a view, when a (N, *S, C) is a transposed C-contiguous (N, C, *S)."""
    xp = _backend.namespace(a)
    a = xp.moveaxis(a, -1, 1)                                    # (N, C, *S) view
    return a.reshape(a.shape[0], a.shape[1], -1) if a.flags.c_contiguous else None


def _rows(a):
    """(N * prod(S), C), contiguous."""
    return _backend.namespace(a).ascontiguousarray(a).reshape(-1, a.shape[-1])


def _last(a, shape):
    """(N, C, prod(S)) -> (N, *S, C) view, the channels_last view of a channels_first result."""
    return _backend.namespace(a).moveaxis(a.reshape(shape[0], shape[-1], *shape[1:-1]), 1, -1)


def forward(xp_, w, spec: ConvSpec, settings):
    """y (N, *P, F) = x (N*P, C) @ w (C, F), or w^T (F, C) @ x (N, C, P) channels_first."""
    if not _direct(spec):
        return im2col.forward(xp_, w, spec, settings)
    xp = _backend.namespace(xp_, w)
    w2 = w.reshape(spec.in_channels, spec.out_channels)          # (C, F)
    shape = (spec.batch, *spec.out_size, spec.out_channels)
    x_cf = _channels_first(xp_)
    if x_cf is not None:
        return _last(xp.matmul(w2.T, x_cf), shape)               # (N, F, P) -> (N, *P, F) view
    return xp.matmul(_rows(xp_), w2).reshape(shape)              # (N*P, F) -> (N, *P, F)


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C) = dy (N*P, F) @ w^T (F, C) (Sp == P), or w @ dy channels_first."""
    if not _direct(spec):
        return im2col.scatter_grad_input(dy, w, spec, settings)
    xp = _backend.namespace(dy, w)
    w2 = w.reshape(spec.in_channels, spec.out_channels)          # (C, F)
    shape = (spec.batch, *spec.padded_size, spec.in_channels)
    dy_cf = _channels_first(dy)
    if dy_cf is not None:
        return _last(xp.matmul(w2, dy_cf), shape)                # (N, C, P) -> (N, *P, C) view
    return xp.matmul(_rows(dy), w2.T).reshape(shape)             # (N*P, C) -> (N, *P, C)


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (1.., C, F) = x^T (C, N*P) @ dy (N*P, F), or sum_n x_n (C, P) @ dy_n^T channels_first."""
    if not _direct(spec):
        return im2col.grad_weight(xp_, dy, spec, settings)
    xp = _backend.namespace(xp_, dy)
    x_cf, dy_cf = _channels_first(xp_), _channels_first(dy)
    if x_cf is None or dy_cf is None:
        dw = xp.matmul(_rows(xp_).T, _rows(dy))                  # (C, F)
    else:
        dw = _batched_sum(x_cf, dy_cf, settings)                 # (C, F)
    return dw.reshape(*spec.kernel_size, spec.in_channels, spec.out_channels)  # (1.., C, F)


def _batched_sum(x_cf, dy_cf, settings):
    """sum_n x_n (C, P) @ dy_n^T (P, F), a batch chunk at a time within the workspace."""
    xp = _backend.namespace(x_cf)
    n, c, f = x_cf.shape[0], x_cf.shape[1], dy_cf.shape[1]
    step = max(1, min(n, settings.workspace // (c * f * x_cf.itemsize)))
    dw = xp.zeros((c, f), dtype=x_cf.dtype)                      # (C, F)
    for i in range(0, n, step):                                  # memory chunks of the batch
        dw += xp.matmul(x_cf[i:i + step], dy_cf[i:i + step].transpose(0, 2, 1)).sum(axis=0)
    return dw
