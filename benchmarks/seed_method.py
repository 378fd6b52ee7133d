"""The seed answer's method as plain functions: the baseline users have today, for benchmarks.

The seed StackOverflow answer ("vectorized way to multiply ... specific axis (convolutional layer
backprop)") computes a strided 2-D conv and its gradients with stride tricks: forward and dW
contract a strided window view of the padded input; dx zero-dilates dY with repeated
``np.insert``, pads it by ``k - 1``, takes stride-1 windows and contracts them with the filters
rotated by 180 degrees, then crops the padding. That algorithm, and so its cost (the dilated,
padded copy of dY, and the copies ``tensordot`` makes of the window views), is kept here. Only
the defects that stop it running on the benchmark shapes are fixed:

- the crop is ``pad : pad + H`` (the answer's ``pad : -pad`` is empty when ``pad == 0``);
- kh and kw are used separately (the answer pads dY by ``fw - 1`` on both axes and takes the
  bottom/right remainder from ``fh`` and the image height, so it needs square filters);
- the rows/columns the forward pass skips when ``(S + 2 pad - K) % stride != 0`` are added back
  as zeros, per axis, so dx has the input's size.

One deliberate departure in form, not cost: the answer builds its windows with
``np.lib.stride_tricks.as_strided``; here ``sliding_window_view`` plus a step slice and a
transpose build a view with the same shape, strides and memory, without raw ``as_strided``.
Layouts are channels_last: x (N, H, W, C), w (kh, kw, C, F), y (N, P_h, P_w, F).
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

__all__ = ["seed_backward", "seed_forward"]


def seed_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> np.ndarray:
    """Conv forward as in the seed answer: window view of padded x, tensordot with w, add b.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
    w : ndarray, shape (kh, kw, C, F)
    b : ndarray, shape (F,)
    stride : int
        Stride on both spatial axes, >= 1.
    pad : int
        Symmetric zero padding on both spatial axes, >= 0.

    Returns
    -------
    y : ndarray, shape (N, P_h, P_w, F)
        ``P = (S + 2 * pad - K) // stride + 1`` on each axis.
    """
    _check_geometry(x.shape, w.shape, stride, pad)
    kh, kw = w.shape[:2]
    cols = _windows(_pad(x, pad, pad), kh, kw, stride)  # (N, P_h, P_w, kh, kw, C)
    return np.tensordot(cols, w, axes=([3, 4, 5], [0, 1, 2])) + b  # (N, P_h, P_w, F)


def seed_backward(
    x: np.ndarray, w: np.ndarray, dy: np.ndarray, stride: int, pad: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Gradients of `seed_forward` by the seed answer's method.

    Parameters
    ----------
    x : ndarray, shape (N, H, W, C)
        The forward input.
    w : ndarray, shape (kh, kw, C, F)
        The filters.
    dy : ndarray, shape (N, P_h, P_w, F)
        Gradient of the loss with respect to the forward output.
    stride, pad : int
        As in the forward call.

    Returns
    -------
    dx : ndarray, shape (N, H, W, C)
    dw : ndarray, shape (kh, kw, C, F)
    db : ndarray, shape (F,)
    """
    _check_geometry(x.shape, w.shape, stride, pad)
    kh, kw, C, F = w.shape
    expected = (x.shape[0], *_out_size(x.shape, w.shape, stride, pad), F)
    if dy.shape != expected:
        raise ValueError(f"`dy` must have shape {expected}; got {dy.shape}")
    db = dy.sum(axis=(0, 1, 2))  # (F,)
    cols = _windows(_pad(x, pad, pad), kh, kw, stride)  # (N, P_h, P_w, kh, kw, C)
    # the answer's "column approach": windows as rows, one GEMM with dY
    dw = cols.reshape(-1, kh * kw * C).T @ dy.reshape(-1, F)  # (kh * kw * C, F)
    dx = _input_grad(dy, w, x.shape[1:3], stride, pad)  # (N, H, W, C)
    return dx, dw.reshape(kh, kw, C, F), db  # (kh, kw, C, F)


def _input_grad(
    dy: np.ndarray, w: np.ndarray, in_size: tuple[int, int], stride: int, pad: int
) -> np.ndarray:
    """Compute dx: stride-1 full correlation of the dilated dY with the filters rotated 180 deg.

    y[p] = sum_k xp[s*p + k] w[k], so dxp[i] = sum_{p, k: s*p + k = i} dy[p] w[k]. Dilating dY by
    s (zeros between entries) puts dy[p] at index s*p; padding by K-1 and correlating with w
    reversed gives dxp[i] = sum_j dyd[i - K + 1 + j] w[K - 1 - j] = sum_k dyd[i - k] w[k]. The
    dilated dY must reach index S + 2 pad - K (the last row the forward could have used), hence
    the (S + 2 pad - K) % s trailing zeros; then dxp has S + 2 pad rows and the crop removes pad.
    """
    kh, kw = w.shape[:2]
    H, W = in_size
    extra = ((H + 2 * pad - kh) % stride, (W + 2 * pad - kw) % stride)
    dyd = _dilate(dy, stride, extra)  # (N, H + 2p - kh + 1, W + 2p - kw + 1, F)
    dyd = np.pad(dyd, ((0, 0), (kh - 1, kh - 1), (kw - 1, kw - 1), (0, 0)))  # (N, H+2p+kh-1, ..)
    cols = _windows(dyd, kh, kw, 1)  # (N, H + 2p, W + 2p, kh, kw, F)
    w_rot = np.rot90(w, 2, axes=(0, 1))  # (kh, kw, C, F), rotated 180 degrees
    dxp = np.tensordot(cols, w_rot, axes=([3, 4, 5], [0, 1, 3]))  # (N, H + 2p, W + 2p, C)
    return dxp[:, pad : pad + H, pad : pad + W, :]  # (N, H, W, C)


def _dilate(dy: np.ndarray, stride: int, extra: tuple[int, int]) -> np.ndarray:
    """Zero-dilate axes 1 and 2 by `stride` with the answer's np.insert loop; append `extra` zeros.

    Pass m of the loop turns spacing m + 1 into m + 2 by inserting one zero after every original
    entry, so after stride - 1 passes entries sit stride apart: (P - 1) * stride + 1 per axis.
    """
    for m in range(stride - 1):
        dy = np.insert(dy, range(1, dy.shape[1], m + 1), 0, axis=1)  # (N, grows, ., F)
        dy = np.insert(dy, range(1, dy.shape[2], m + 1), 0, axis=2)  # (N, ., grows, F)
    for _ in range(extra[0]):
        dy = np.insert(dy, dy.shape[1], 0, axis=1)  # (N, +1, ., F)
    for _ in range(extra[1]):
        dy = np.insert(dy, dy.shape[2], 0, axis=2)  # (N, ., +1, F)
    return dy


def _pad(array: np.ndarray, pad_h: int, pad_w: int) -> np.ndarray:
    """Zero-pad axes 1 and 2 symmetrically (the answer's ``_pad``)."""
    return np.pad(array, ((0, 0), (pad_h, pad_h), (pad_w, pad_w), (0, 0)))  # (N, H+2ph, W+2pw, C)


def _windows(array: np.ndarray, kh: int, kw: int, stride: int) -> np.ndarray:
    """Read-only window view (N, P_h, P_w, kh, kw, C): the answer's as_strided view, built safely.

    Same shape and strides as the answer's ``as_strided(array, shape=(N, P_h, P_w, kh, kw, C),
    strides=(s0, s1*stride, s2*stride, s1, s2, s3))``.
    """
    view = sliding_window_view(array, (kh, kw), axis=(1, 2))  # (N, H-kh+1, W-kw+1, C, kh, kw)
    return view[:, ::stride, ::stride].transpose(0, 1, 2, 4, 5, 3)  # (N, P_h, P_w, kh, kw, C)


def _out_size(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, pad: int
) -> tuple[int, int]:
    """Output height and width, ``(S + 2 * pad - K) // stride + 1`` per axis."""
    return tuple(
        (s + 2 * pad - k) // stride + 1 for s, k in zip(x_shape[1:3], w_shape[:2], strict=True)
    )


def _check_geometry(
    x_shape: tuple[int, ...], w_shape: tuple[int, ...], stride: int, pad: int
) -> None:
    """Raise ValueError unless x, w, stride and pad describe a valid, non-empty conv."""
    if len(x_shape) != 4 or len(w_shape) != 4 or x_shape[3] != w_shape[2]:
        raise ValueError(
            f"`x` must be (N, H, W, C) and `w` (kh, kw, C, F) with the same C; "
            f"got x.shape={x_shape}, w.shape={w_shape}"
        )
    if stride < 1 or pad < 0:
        raise ValueError(f"`stride` must be >= 1 and `pad` >= 0; got stride={stride}, pad={pad}")
    if any(s + 2 * pad < k for s, k in zip(x_shape[1:3], w_shape[:2], strict=True)):
        raise ValueError(
            f"kernel larger than padded input: x spatial {x_shape[1:3]}, pad={pad}, "
            f"kernel {w_shape[:2]}"
        )
