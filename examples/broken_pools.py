"""Hand-written 2-D pooling layers, and copies of them with one classic backward bug each.

`MaxPool2D` and `AvgPool2D` are what a user of ``npconv check --pool`` might write:
channels_last x (N, H, W, C), PyTorch's semantics (padding of at most half the kernel,
`ceil_mode`, `count_include_pad`, the max-pool gradient to the first maximum of a window),
windows gathered by one strided slice per kernel offset. They pass ``npconv check --pool``.

Every other class overrides one step with a mistake seen in hand-written CNN code; the test
suite checks that ``npconv check --pool`` catches and names each one::

    npconv check --pool max examples/broken_pools.py:MaxPool2D           # passes
    npconv check --pool max examples/broken_pools.py:OverlapsOverwrite   # "overwrite ..."

Test suites that only use stride == kernel size (windows that tile the input) pass most of
them.
"""

from __future__ import annotations

import math

import numpy as np


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


class MaxPool2D:
    """A correct max pooling: forward(x) -> y, backward(dy) -> dx."""

    fill = -np.inf                                             # padding never wins a max

    def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
        self.k = _pair(kernel_size)
        self.s = _pair(stride if stride is not None else kernel_size)
        self.p, self.d, self.ceil_mode = _pair(padding), _pair(dilation), ceil_mode

    def out_size(self, size, k, s, p, d):
        span = size + 2 * p - d * (k - 1) - 1
        if not self.ceil_mode:
            return span // s + 1
        out = math.ceil(span / s) + 1
        return out - 1 if (out - 1) * s >= size + p else out  # last window starts in the input

    def pad(self, x):
        """x padded by p on each side, plus what the last (ceil_mode) window reads past it."""
        self.x_shape = x.shape
        self.P = [self.out_size(n, k, s, p, d) for n, k, s, p, d in
                  zip(x.shape[1:3], self.k, self.s, self.p, self.d)]
        extra = [max(0, (q - 1) * s + d * (k - 1) + 1 - n - 2 * p) for q, n, k, s, p, d in
                 zip(self.P, x.shape[1:3], self.k, self.s, self.p, self.d)]
        widths = ((0, 0), *((p, p + e) for p, e in zip(self.p, extra)), (0, 0))
        return np.pad(x, widths, constant_values=self.fill)   # (N, Hp, Wp, C)

    def offsets(self):
        """(index, slice into the padded x) for every kernel offset."""
        (kh, kw), (sh, sw), (dh, dw) = self.k, self.s, self.d
        (ph, pw) = self.P
        for i, (a, b) in enumerate(np.ndindex(kh, kw)):
            yield i, (slice(None), slice(a * dh, a * dh + (ph - 1) * sh + 1, sh),
                      slice(b * dw, b * dw + (pw - 1) * sw + 1, sw), slice(None))

    def windows(self, xp):
        return np.stack([xp[sl] for _, sl in self.offsets()], axis=3)   # (N, P, Q, K, C)

    def forward(self, x):
        self.xp = self.pad(x)
        cols = self.windows(self.xp)
        self.arg = cols.argmax(axis=3)                         # (N, P, Q, C): first maximum
        return cols.max(axis=3)                                # (N, P, Q, C)

    def backward(self, dy):
        dxp = np.zeros(self.xp.shape)                          # (N, Hp, Wp, C)
        for i, sl in self.offsets():
            dxp[sl] += np.where(self.arg == i, dy, 0)
        return self.crop(dxp)

    def crop(self, dxp):
        (ph, pw), (h, w) = self.p, self.x_shape[1:3]
        return dxp[:, ph:ph + h, pw:pw + w]                    # (N, H, W, C)


class AvgPool2D(MaxPool2D):
    """A correct average pooling (PyTorch's count_include_pad=True by default)."""

    fill = 0.0

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False,
                 count_include_pad=True):
        super().__init__(kernel_size, stride, padding, 1, ceil_mode)
        self.count_include_pad = count_include_pad

    def divisors(self):
        """Each window's divisor: its taps inside the padded (or the unpadded) input."""
        counts = []
        for n, k, s, p, q in zip(self.x_shape[1:3], self.k, self.s, self.p, self.P):
            start = np.arange(q) * s - p                       # (P,) first tap of each window
            lo, hi = (-p, n + p) if self.count_include_pad else (0, n)
            counts.append(np.minimum(start + k, hi) - np.maximum(start, lo))
        return np.multiply.outer(*counts)[None, :, :, None]    # (1, P, Q, 1)

    def forward(self, x):
        self.xp = self.pad(x)
        with np.errstate(invalid="ignore", divide="ignore"):  # a window wholly in the padding
            return self.windows(self.xp).sum(axis=3) / self.divisors()  # 0 / 0: NaN

    def backward(self, dy):
        with np.errstate(invalid="ignore", divide="ignore"):
            g = dy / self.divisors()                           # (N, P, Q, C)
        dxp = np.zeros(self.xp.shape)
        for _, sl in self.offsets():
            dxp[sl] += g
        return self.crop(dxp)


class TiesToAll(MaxPool2D):
    """The gradient goes to every input equal to the window's maximum (a mask x == max)."""

    def backward(self, dy):
        dxp = np.zeros(self.xp.shape)
        top = self.windows(self.xp).max(axis=3)                # (N, P, Q, C)
        for _, sl in self.offsets():
            dxp[sl] += np.where(self.xp[sl] == top, dy, 0)
        return self.crop(dxp)


class OverlapsOverwrite(MaxPool2D):
    """A loop over the windows that assigns each window's gradient (`=`), as if windows never
    overlap: where they do, the later window overwrites the earlier one's gradient."""

    def backward(self, dy):
        dxp = np.zeros(self.xp.shape)
        (kh, kw), (sh, sw), (dh, dw) = self.k, self.s, self.d
        for i, j in np.ndindex(*self.P):
            rows = slice(i * sh, i * sh + (kh - 1) * dh + 1, dh)
            cols = slice(j * sw, j * sw + (kw - 1) * dw + 1, dw)
            first = self.arg[:, i, j, :]                       # (N, C): offset of the max
            mask = np.arange(kh * kw).reshape(1, kh, kw, 1) == first[:, None, None, :]
            dxp[:, rows, cols, :] = mask * dy[:, i:i + 1, j:j + 1, :]  # should be +=
        return self.crop(dxp)


class ZeroPadded(MaxPool2D):
    """Pads with zeros (like an im2col written for convolutions) instead of -inf: where every
    input of a window is negative, the padding's 0 is the maximum."""

    fill = 0.0


class DropsCeilWindows(MaxPool2D):
    """Takes ceil_mode but computes the output size as if it were False: the last, partial
    windows are missing."""

    def out_size(self, size, k, s, p, d):
        return (size + 2 * p - d * (k - 1) - 1) // s + 1


class ReshapeTrick(MaxPool2D):
    """The forward pass by reshaping into non-overlapping k x k blocks and the backward by
    np.repeat: right only when the stride equals the kernel size and divides the input."""

    def forward(self, x):
        self.xp = self.pad(x)
        n, h, w, c = self.xp.shape
        (kh, kw) = self.k
        blocks = self.xp[:, :h // kh * kh, :w // kw * kw]
        blocks = blocks.reshape(n, h // kh, kh, w // kw, kw, c)    # (N, P, kh, Q, kw, C)
        self.y = blocks.max(axis=(2, 4))                           # (N, P, Q, C)
        return self.y

    def backward(self, dy):
        (kh, kw) = self.k
        up = np.repeat(np.repeat(dy, kh, axis=1), kw, axis=2)      # (N, P*kh, Q*kw, C)
        top = np.repeat(np.repeat(self.y, kh, axis=1), kw, axis=2)
        region = self.xp[:, :up.shape[1], :up.shape[2]]
        return self.crop(np.pad(up * (region == top), ((0, 0), (0, self.xp.shape[1] -
                                up.shape[1]), (0, self.xp.shape[2] - up.shape[2]), (0, 0))))


class DividesByInputTaps(AvgPool2D):
    """Divides each window by the taps inside the input (count_include_pad=False) although it
    does not take the argument: PyTorch's default counts the padding."""

    def __init__(self, kernel_size, stride=None, padding=0, ceil_mode=False):
        super().__init__(kernel_size, stride, padding, ceil_mode, count_include_pad=False)


class NotDivided(AvgPool2D):
    """The backward spreads dy over each window without dividing it by the window's size."""

    def backward(self, dy):
        dxp = np.zeros(self.xp.shape)
        for _, sl in self.offsets():
            dxp[sl] += dy
        return self.crop(dxp)


class FullWindowDivisor(AvgPool2D):
    """Divides every window by kh * kw, also the partial windows of ceil_mode that run past
    the padding (PyTorch never counts those taps)."""

    def divisors(self):
        return self.k[0] * self.k[1]


def max_pool_forward(x, pool_param):
    """CS231n style: x (N, C, H, W), pool_param {"pool_height", "pool_width", "stride"}."""
    layer = MaxPool2D((pool_param["pool_height"], pool_param["pool_width"]),
                      pool_param["stride"])
    y = layer.forward(x.transpose(0, 2, 3, 1))                 # (N, P, Q, C)
    return y.transpose(0, 3, 1, 2), layer


def max_pool_backward(dout, cache):
    """CS231n style: dout (N, C, P, Q) -> dx (N, C, H, W)."""
    return cache.backward(dout.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
