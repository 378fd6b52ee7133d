"""The seed question's four nested loops: the ground-truth backward pass of a strided conv.

Source: the StackOverflow question "vectorized way to multiply ... specific axis (convolutional
layer backprop)" (2025). The question hard-codes stride 1, a 2x2 filter and padding 2 and marks
them "just as an example"; here they become the arguments ``stride``, ``w.shape[:2]`` and ``pad``,
and nothing else is generalized: same channels_last layout, same symmetric zero padding, same
loop order (image, output row, output column, filter), one scalar of dZ per innermost step.

Two lines differ from the question, both because the question's text is a toy, not a choice:

- the question accumulates dW from ``dA_prev`` (the gradient being built, all zeros at first);
  the intended operand is the padded forward input ``A_prev``, which the question's own
  vectorized dW reproduces, so here it is ``xp`` (x padded);
- the question stops at the padded gradient; here the padding is cut off at the end so that dx
  has x's shape (the slice ``pad : pad + H`` is also right for ``pad == 0``).

This is a loop over output positions, slow on purpose: use it as an oracle on small shapes only.
"""

from __future__ import annotations

import numpy as np


def seed_loops_backward(
    x: np.ndarray, w: np.ndarray, dz: np.ndarray, pad: int, stride: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gradients of ``z = conv(x, w)`` (no bias) by the question's quadruple loop.

    Parameters
    ----------
    x : ndarray, shape (m, H, W, Cin)
        The forward input (the question's ``A_prev``), channels_last.
    w : ndarray, shape (fh, fw, Cin, C)
        Filters, HWIO layout (the question's ``W``).
    dz : ndarray, shape (m, H_dim, W_dim, C)
        Gradient of the loss with respect to the conv output (the question's ``dZ``).
    pad : int
        Symmetric zero padding on height and width.
    stride : int
        Stride on height and width.

    Returns
    -------
    dx : ndarray, shape (m, H, W, Cin)
        Gradient with respect to `x` (the question's ``dA_prev``, padding removed).
    dw : ndarray, shape (fh, fw, Cin, C)
        Gradient with respect to `w` (the question's ``dW``).
    """
    fh, fw = w.shape[:2]
    (m, H_dim, W_dim, C) = dz.shape
    H, W = x.shape[1:3]
    expected = (x.shape[0], (H + 2 * pad - fh) // stride + 1, (W + 2 * pad - fw) // stride + 1, C)
    if dz.shape != expected:
        raise ValueError(
            f"`dz` must have shape {expected} for these x, w, pad, stride; got {dz.shape}"
        )
    dW = np.zeros(w.shape)  # (fh, fw, Cin, C)
    A_prev = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))  # (m, H + 2p, W + 2p, Cin)
    dA_prev = np.zeros(A_prev.shape)  # (m, H + 2p, W + 2p, Cin)
    # loop over images
    for i in range(m):
        # loop over height
        for h in range(H_dim):
            # loop over width
            for w_ in range(W_dim):  # the question's `w`; renamed so it does not hide the filters
                # loop over channels/filters
                for c in range(C):
                    vert_start = stride * h
                    vert_end = vert_start + fh
                    horiz_start = stride * w_
                    horiz_end = horiz_start + fw
                    # (fh, fw, Cin): the question reads dA_prev here, see the module docstring
                    window = A_prev[i, vert_start:vert_end, horiz_start:horiz_end, :]
                    dW[:, :, :, c] += window * dz[i, h, w_, c]
                    dA_prev[i, vert_start:vert_end, horiz_start:horiz_end, :] += (
                        w[:, :, :, c] * dz[i, h, w_, c]  # dZ[i, h, w, c] is a scalar
                    )
    dx = dA_prev[:, pad : pad + H, pad : pad + W, :].copy()  # (m, H, W, Cin)
    return dx, dW
