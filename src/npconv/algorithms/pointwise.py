"""Pointwise (1x1) convolutions as direct GEMMs, without a window matrix.

A 1x1 kernel with stride 1 reads every pixel once: the padded input (N, *Sp, C) already is the
window matrix (N*prod(P), C), so y = x @ w, dx = dy @ w^T and dw = x^T @ dy are GEMMs on
reshaped views, split into blocks of rows dealt to the workers (`_chunks`; dw adds one (C, F)
partial sum per worker). Arrays of a channels_first caller arrive as transposed views; they are
multiplied in their own layout, y (N, F, S) = w^T @ x (N, C, S), blocks of images per worker,
with no copy in or out. Only the results and the per-worker (C, F) sums are allocated (and, for
dw of channels_first arrays, one (C, F) product per image of a block). Strided 1x1 kernels,
which read a subsampled grid, and grouped ones go through chunked im2col, whose window matrix
for a 1x1 kernel is just that grid.
"""

from __future__ import annotations

from npconv import _backend
from npconv.algorithms import _chunks, im2col
from npconv.spec import ConvSpec

TAKES_VIEWS = True
"""`kernels` passes inputs as they come (channels_first arrays as transposed views)."""

ADDS_BIAS = True
"""`forward` takes the bias and adds it block by block (`npconv.kernels.forward`)."""


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
    return _chunks.contiguous(a).reshape(-1, a.shape[-1])


def _last(a, shape):
    """(N, C, prod(S)) -> (N, *S, C) view, the channels_last view of a channels_first result."""
    return _backend.namespace(a).moveaxis(a.reshape(shape[0], shape[-1], *shape[1:-1]), 1, -1)


def _blocks(n: int, row_bytes: int, settings, xp):
    """Blocks of the leading axis (length n) and the number of workers: `_chunks.plan` over
    n rows of `row_bytes` each (one "image"), so every worker gets a share of the rows."""
    chunks, workers = _chunks.plan(1, n, row_bytes, settings, xp=xp)
    return [rows for _, rows in chunks], workers


def _matmul_blocks(a, b, out, settings, bias=None):
    """out (M, F) = a (M, K) @ b (K, F) (+ bias (F,)), a block of rows per task."""
    xp = _backend.namespace(a, b)
    blocks, workers = _blocks(out.shape[0], a[0].nbytes + out[0].nbytes, settings, xp)

    def task(rows, _):
        xp.matmul(a[rows], b, out=out[rows])
        if bias is not None:
            out[rows] += bias

    _chunks.run(task, blocks, workers, lambda: None)
    return out


def forward(xp_, w, spec: ConvSpec, settings, bias=None):
    """y (N, *P, F) = x (N*P, C) @ w (C, F), or w^T (F, C) @ x (N, C, P) channels_first
    (+ bias (F,))."""
    if not _direct(spec):
        return im2col.forward(xp_, w, spec, settings, bias)
    xp = _backend.namespace(xp_, w)
    c, f = spec.in_channels, spec.out_channels
    w2 = w.reshape(c, f)                                         # (C, F)
    shape = (spec.batch, *spec.out_size, f)
    x_cf = _channels_first(xp_)
    if x_cf is not None:
        y = xp.empty((spec.batch, f, x_cf.shape[2]), dtype=x_cf.dtype)  # (N, F, P)

        def product(n):
            xp.matmul(w2.T, x_cf[n], out=y[n])
            if bias is not None:
                y[n] += bias[:, None]

        _batched(product, spec.batch, y[0].nbytes, settings, xp)
        return _last(y, shape)                                   # (N, *P, F) view
    x2 = _rows(xp_)                                              # (N*P, C)
    y = xp.empty((x2.shape[0], f), dtype=x2.dtype)               # (N*P, F)
    return _matmul_blocks(x2, w2, y, settings, bias).reshape(shape)


def grad_input(dy, w, spec: ConvSpec, settings):
    """dxp (N, *Sp, C) = dy (N*P, F) @ w^T (F, C) (Sp == P), or w @ dy channels_first."""
    if not _direct(spec):
        return im2col.scatter_grad_input(dy, w, spec, settings)
    xp = _backend.namespace(dy, w)
    c = spec.in_channels
    w2 = w.reshape(c, spec.out_channels)                         # (C, F)
    shape = (spec.batch, *spec.padded_size, c)
    dy_cf = _channels_first(dy)
    if dy_cf is not None:
        dx = xp.empty((spec.batch, c, dy_cf.shape[2]), dtype=dy_cf.dtype)  # (N, C, P)
        _batched(lambda n: xp.matmul(w2, dy_cf[n], out=dx[n]), spec.batch, dx[0].nbytes,
                 settings, xp)
        return _last(dx, shape)                                  # (N, *P, C) view
    dy2 = _rows(dy)                                              # (N*P, F)
    dx = xp.empty((dy2.shape[0], c), dtype=dy2.dtype)            # (N*P, C)
    return _matmul_blocks(dy2, w2.T, dx, settings).reshape(shape)


def grad_weight(xp_, dy, spec: ConvSpec, settings):
    """dw (1.., C, F) = x^T (C, N*P) @ dy (N*P, F), or sum_n x_n (C, P) @ dy_n^T channels_first;
    one partial sum per worker, added in worker order."""
    if not _direct(spec):
        return im2col.grad_weight(xp_, dy, spec, settings)
    xp = _backend.namespace(xp_, dy)
    c, f = spec.in_channels, spec.out_channels
    x_cf, dy_cf = _channels_first(xp_), _channels_first(dy)
    if x_cf is None or dy_cf is None:
        x2, dy2 = _rows(xp_), _rows(dy)                          # (N*P, C), (N*P, F)
        blocks, workers = _blocks(x2.shape[0], x2[0].nbytes + dy2[0].nbytes, settings, xp)

        def task(rows, acc):
            acc += x2[rows].T @ dy2[rows]                        # (C, F)
    else:
        product = c * f * dy.itemsize                            # one image's (C, F) product
        blocks, workers = _blocks(spec.batch, x_cf[0].nbytes + dy_cf[0].nbytes + product,
                                  settings, xp)

        def task(images, acc):                                   # sum_n x_n @ dy_n^T
            acc += xp.matmul(x_cf[images], dy_cf[images].transpose(0, 2, 1)).sum(axis=0)

    accs = _chunks.run(task, blocks, workers, lambda: xp.zeros((c, f), dtype=dy.dtype))
    return sum(accs).reshape(*spec.kernel_size, c, f)            # (1.., C, F)


def _batched(product, n: int, image_bytes: int, settings, xp) -> None:
    """Call product(images) (a slice) on blocks of the batch, dealt to the workers."""
    blocks, workers = _blocks(n, image_bytes, settings, xp)
    _chunks.run(lambda images, _: product(images), blocks, workers, lambda: None)
