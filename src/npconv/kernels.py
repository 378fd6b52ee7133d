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
exactly these sums, plus many products with those zeros.
"""

from __future__ import annotations

import math

from npconv import _backend, windows
from npconv.spec import ConvSpec


def _grouped_cols(xp_, spec: ConvSpec):
    """Window matrix, one copy: (N, *Sp, C) -> (G, N * prod(P), prod(K) * C/G)."""
    r, g = spec.rank, spec.groups
    cols = windows.unfold(xp_, spec.kernel_size, spec.stride, spec.dilation, spec.out_size)
    if g == 1:
        return cols.reshape(1, -1, math.prod(spec.kernel_size) * spec.in_channels)
    cols = cols.reshape(*cols.shape[:-1], g, spec.group_in)     # (N, *P, *K, G, C/G) view
    cols = cols.transpose(2 * r + 1, *range(2 * r + 1), 2 * r + 2)  # (G, N, *P, *K, C/G) view
    return cols.reshape(g, -1, math.prod(spec.kernel_size) * spec.group_in)  # copy


def _grouped_w(w, spec: ConvSpec):
    """(*K, C/G, F) -> (G, prod(K) * C/G, F/G)."""
    g = spec.groups
    w = w.reshape(-1, spec.group_in, g, spec.group_out)          # (prodK, C/G, G, F/G)
    w = w.transpose(2, 0, 1, 3)                                  # (G, prodK, C/G, F/G)
    return w.reshape(g, -1, spec.group_out)                      # (G, prodK*C/G, F/G)


def _grouped_dy(dy, spec: ConvSpec):
    """(N, *P, F) -> (G, N * prod(P), F/G), a view."""
    dy = dy.reshape(-1, spec.groups, spec.group_out)            # (NP, G, F/G)
    return dy.transpose(1, 0, 2)                                 # (G, NP, F/G)


def forward(xp_, w, spec: ConvSpec):
    """y (N, *P, F) = conv(xp (N, *Sp, C), w (*K, C/G, F)), no bias."""
    xp = _backend.namespace(xp_, w)
    cols = _grouped_cols(xp_, spec)                              # (G, NP, KC/G)
    y = xp.matmul(cols, _grouped_w(w, spec))                     # (G, NP, F/G)
    y = y.transpose(1, 0, 2)                                     # (NP, G, F/G)
    return y.reshape(spec.batch, *spec.out_size, spec.out_channels)  # (N, *P, F)


def grad_weight(xp_, dy, spec: ConvSpec):
    """dw (*K, C/G, F) from the padded input (N, *Sp, C) and dy (N, *P, F)."""
    xp = _backend.namespace(xp_, dy)
    cols = _grouped_cols(xp_, spec)                              # (G, NP, KC/G)
    dw = xp.matmul(cols.transpose(0, 2, 1), _grouped_dy(dy, spec))  # (G, KC/G, F/G)
    dw = dw.reshape(spec.groups, -1, spec.group_in, spec.group_out)  # (G, prodK, C/G, F/G)
    dw = dw.transpose(1, 2, 0, 3)                                # (prodK, C/G, G, F/G)
    return dw.reshape(*spec.kernel_size, spec.group_in, spec.out_channels)  # (*K, C/G, F)


def grad_input(dy, w, spec: ConvSpec):
    """dxp (N, *Sp, C): gradient with respect to the padded input, from dy (N, *P, F).

    One GEMM per kernel offset, (G, NP, F/G) @ (G, F/G, C/G), scattered with `+=` onto the
    strided slice that offset read. Pixels no window reads (the remainder rows when the
    output size was floored) keep a zero gradient.
    """
    xp = _backend.namespace(dy, w)
    n, g = spec.batch, spec.groups
    dxp = xp.zeros((n, *spec.padded_size, spec.in_channels), dtype=dy.dtype)  # (N, *Sp, C)
    dy_g = _grouped_dy(dy, spec)                                 # (G, NP, F/G)
    w_t = w.reshape(*spec.kernel_size, spec.group_in, g, spec.group_out)  # (*K, C/G, G, F/G)
    for k, window in windows.offsets(spec.kernel_size, spec.stride, spec.dilation,
                                     spec.out_size):
        w_k = w_t[k].transpose(1, 2, 0)                          # (G, F/G, C/G)
        part = xp.matmul(dy_g, w_k)                              # (G, NP, C/G)
        part = part.transpose(1, 0, 2)                           # (NP, G, C/G)
        dxp[window] += part.reshape(n, *spec.out_size, spec.in_channels)  # (N, *P, C)
    return dxp
