"""Hand-written layers for the checker's own tests: a correct im2col layer to mutate, and
layers that crash, hang, exit, take a channels_first layout or refuse per-axis arguments.

`Im2col` is the textbook im2col convolution a student writes: channels_last x (N, H, W, C),
w (kh, kw, C, F), the window matrix built by one strided slice per kernel offset, one GEMM, and
col2im by `+=` per kernel offset. tests/test_testing_mutations.py changes one line of it at a
time, as students get it wrong, and checks that each change is caught.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import sys
from types import ModuleType

import numpy as np

import npconv

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def load_example(name: str) -> ModuleType:
    """examples/`name` (a .py file) as a module, registered so that its classes pickle."""
    spec = importlib.util.spec_from_file_location(f"_npconv_example_{name[:-3]}",
                                                  EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _pads(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


class Im2col:
    """A correct conv layer by im2col: forward(x) -> y, backward(dy) -> dx, self.dw, self.db."""

    def __init__(self, w, b, stride=1, padding=0, dilation=1):
        self.w, self.b = w, b                                    # (kh, kw, C, F), (F,)
        self.stride, self.pads, self.dilation = _pair(stride), _pads(padding), _pair(dilation)

    def out_size(self, h, w):
        (kh, kw), (sh, sw), (dh, dw) = self.w.shape[:2], self.stride, self.dilation
        (t, bt), (lf, r) = self.pads
        return ((h + t + bt - dh * (kh - 1) - 1) // sh + 1,
                (w + lf + r - dw * (kw - 1) - 1) // sw + 1)

    def offsets(self):
        """(offset index, slice of the padded input read through it by every window)."""
        (kh, kw), (sh, sw), (dh, dw) = self.w.shape[:2], self.stride, self.dilation
        p, q = self.P
        for i, (a, b) in enumerate(np.ndindex(kh, kw)):
            yield i, (slice(None), slice(a * dh, a * dh + (p - 1) * sh + 1, sh),
                      slice(b * dw, b * dw + (q - 1) * sw + 1, sw))

    def pad(self, x):
        return np.pad(x, ((0, 0), *self.pads, (0, 0)))          # (N, Hp, Wp, C)

    def im2col(self, xp):
        n, c = xp.shape[0], xp.shape[3]
        k = self.w.shape[0] * self.w.shape[1]
        cols = np.zeros((n, *self.P, k, c))                      # (N, P, Q, kh*kw, C)
        for i, sl in self.offsets():
            cols[:, :, :, i] = xp[sl]
        return cols.reshape(n * self.P[0] * self.P[1], k * c)    # (N*P*Q, kh*kw*C)

    def forward(self, x):
        self.x_shape = x.shape
        self.P = self.out_size(*x.shape[1:3])
        self.cols = self.im2col(self.pad(x))
        f = self.w.shape[3]
        y = self.cols @ self.w.reshape(-1, f) + self.b           # (N*P*Q, F)
        return y.reshape(x.shape[0], *self.P, f)                 # (N, P, Q, F)

    def col2im(self, dcols):
        n, h, w, c = self.x_shape
        (t, bt), (lf, r) = self.pads
        dxp = np.zeros((n, h + t + bt, w + lf + r, c))           # (N, Hp, Wp, C)
        dcols = dcols.reshape(n, *self.P, -1, c)                 # (N, P, Q, kh*kw, C)
        for i, sl in self.offsets():
            dxp[sl] += dcols[:, :, :, i]
        return dxp

    def crop(self, dxp):
        (t, _), (lf, _) = self.pads
        h, w = self.x_shape[1:3]
        return dxp[:, t:t + h, lf:lf + w]                        # (N, H, W, C)

    def backward(self, dy):
        f = self.w.shape[3]
        dy2 = dy.reshape(-1, f)                                  # (N*P*Q, F)
        self.db = dy2.sum(axis=0)                                # (F,)
        self.dw = (self.cols.T @ dy2).reshape(self.w.shape)      # (kh, kw, C, F)
        dcols = dy2 @ self.w.reshape(-1, f).T                    # (N*P*Q, kh*kw*C)
        return self.crop(self.col2im(dcols))


class ChannelsFirst:
    """A correct layer in PyTorch's layout, x (N, C, H, W), w (F, C, kh, kw) (CS231n's): checked
    as channels_last, every configuration fails at its first reshape."""

    def __init__(self, w, b, stride=1, padding=0):
        self.w, self.b, self.stride, self.padding = w, b, stride, padding

    def forward(self, x):
        self.x = x
        f, c, kh, kw = self.w.shape
        self.w.reshape(f, c * kh * kw)                           # fails unless (F, C, kh, kw)
        if x.shape[1] != c:
            raise ValueError(f"x has {x.shape[1]} channels, w expects {c}")
        return npconv.conv(x, self.w, self.b, stride=self.stride, padding=self.padding,
                           data_format="channels_first")

    def backward(self, dy):
        dx, self.dw, self.db = npconv.conv_backward(
            dy, self.x, self.w, stride=self.stride, padding=self.padding,
            data_format="channels_first")
        return dx


class TorchStyle:
    """PyTorch's constructor, written for an int kernel_size, stride and padding: it draws its
    own weights (OIHW) with np.random.randn(out, in, k, k), which a tuple kernel_size breaks."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0):
        self.weight = np.random.randn(out_channels, in_channels, kernel_size, kernel_size)
        self.bias = np.zeros(out_channels)
        self.stride, self.padding = stride, padding

    def forward(self, x):
        self.x = x
        h = (x.shape[2] + 2 * self.padding - self.weight.shape[2]) // self.stride + 1
        assert h >= 1
        return npconv.conv(x, self.weight, self.bias, stride=self.stride,
                           padding=self.padding, data_format="channels_first")

    def backward(self, dy):
        dx, self.dweight, self.dbias = npconv.conv_backward(
            dy, self.x, self.weight, stride=self.stride, padding=self.padding,
            data_format="channels_first")
        return dx


class Annotated(Im2col):
    """Im2col with a signature that says one int per argument."""

    def __init__(self, w: np.ndarray, b: np.ndarray, stride: int = 1, padding: int = 0):
        super().__init__(w, b, stride, padding)


class Segfaults(Im2col):
    """For stride 2, reads through a view whose stride points a terabyte away: a segfault."""

    def backward(self, dy):
        if self.stride == (2, 2):
            far = np.lib.stride_tricks.as_strided(dy, shape=(2,), strides=(1 << 40,))
            dy = dy + far.sum()
        return super().backward(dy)


class Hangs(Im2col):
    """Loops forever on padding 2."""

    def forward(self, x):
        while self.pads[0] == (2, 2):
            pass
        return super().forward(x)


class Exits(Im2col):
    """Calls sys.exit(0) on stride 3."""

    def forward(self, x):
        if self.stride == (3, 3):
            sys.exit(0)
        return super().forward(x)


class EndsProcess(Im2col):
    """Ends the process with os._exit(0) (no exception, no cleanup) on padding 2."""

    def backward(self, dy):
        if self.pads[0] == (2, 2):
            os._exit(0)
        return super().backward(dy)


class Allocates(Im2col):
    """Asks for 8 PiB on stride 2."""

    def backward(self, dy):
        if self.stride == (2, 2):
            np.empty(1 << 50)
        return super().backward(dy)
