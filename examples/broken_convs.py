"""A hand-written 2-D conv layer, and copies of it with one classic backward bug each.

`Conv2D` is what a user of ``npconv check`` might write: channels_last x (N, H, W, C), weights
(kh, kw, C/G, F), any stride, padding (int, per-axis ints or (lo, hi) pairs), dilation and
groups, forward by windows and einsum, backward the textbook way: dy dilated by the stride,
padded by the dilated kernel size - 1, correlated with the rotated kernel, then the remainder
rows filled with zeros and the padding cropped. It passes ``npconv check``.

Every other class overrides one step with a mistake seen in the wild (the seed question and its
answer among them); the test suite checks that ``npconv check`` catches and names each one::

    npconv check examples/broken_convs.py:Conv2D            # passes
    npconv check examples/broken_convs.py:NoDilation        # "dy was not dilated ..."

`PaddedConv2D` adds PyTorch's padding modes (reflect, replicate, circular), and
`ConvTranspose2D` is a transposed convolution; each has broken copies too.

`conv_forward` / `conv_backward` wrap `Conv2D` in the CS231n function style (channels_first,
``conv_param``, a cache), for the `FunctionsAdapter`.
"""

from __future__ import annotations

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view


def _pair(value) -> tuple[int, int]:
    return (value, value) if isinstance(value, int) else tuple(value)


def _pads(padding) -> tuple[tuple[int, int], tuple[int, int]]:
    if isinstance(padding, int):
        return ((padding, padding),) * 2
    return tuple((p, p) if isinstance(p, int) else tuple(p) for p in padding)


def correlate(a, w, stride, dilation, groups):
    """Grouped cross-correlation of a padded a (N, Hp, Wp, C) with w (kh, kw, C/G, F)."""
    kh, kw, cg, f = w.shape
    (sh, sw), (dh, dw_) = stride, dilation
    win = sliding_window_view(a, ((kh - 1) * dh + 1, (kw - 1) * dw_ + 1), axis=(1, 2))
    cols = win[:, ::sh, ::sw, :, ::dh, ::dw_]                    # (N, P, Q, C, kh, kw)
    n, p, q = cols.shape[:3]
    cols = cols.reshape(n, p, q, groups, cg, kh, kw)             # (N, P, Q, G, C/G, kh, kw)
    wg = w.reshape(kh, kw, cg, groups, f // groups)              # (kh, kw, C/G, G, F/G)
    y = np.einsum("npqgcij,ijcgf->npqgf", cols, wg)              # (N, P, Q, G, F/G)
    return y.reshape(n, p, q, f), cols


class Conv2D:
    """A correct conv layer: forward(x) -> y, backward(dy) -> dx, and self.dw, self.db."""

    def __init__(self, w, b, stride=1, padding=0, dilation=1, groups=1):
        self.w, self.b = w, b                                    # (kh, kw, C/G, F), (F,)
        self.stride, self.dilation = _pair(stride), _pair(dilation)
        self.pads, self.groups = _pads(padding), groups

    def kernel(self):
        """The kernel the layer correlates with."""
        return self.w

    def forward(self, x):
        self.x_shape = x.shape
        xp = self.pad_input(x)                                   # (N, Hp, Wp, C)
        y, self.cols = correlate(xp, self.kernel(), self.stride, self.dilation, self.groups)
        return y + self.b                                        # (N, P, Q, F)

    def pad_input(self, x):
        return np.pad(x, ((0, 0), *self.pads, (0, 0)))           # (N, Hp, Wp, C)

    def backward(self, dy):
        self.db = self.bias_grad(dy)                             # (F,)
        self.dw = self.weight_grad(dy)                           # (kh, kw, C/G, F)
        dyd = self.dilate(dy)                                    # (N, (P-1)*s+1, ..., F)
        ekh, ekw = ((k - 1) * d + 1 for k, d in zip(self.w.shape[:2], self.dilation))
        dyp = np.pad(dyd, ((0, 0), (ekh - 1,) * 2, (ekw - 1,) * 2, (0, 0)))
        dxp, _ = correlate(dyp, self.rotated_kernel(), (1, 1), self.dilation, self.groups)
        return self.unpad(self.fit(dxp))                         # (N, H, W, C)

    def unpad(self, dxp):
        """The gradient of the input from the gradient of the padded input."""
        return self.crop(dxp)

    def bias_grad(self, dy):
        return dy.sum(axis=(0, 1, 2))

    def weight_grad(self, dy):
        n, p, q, g, cg, kh, kw = self.cols.shape
        dyg = dy.reshape(n, p, q, g, -1)                         # (N, P, Q, G, F/G)
        dw = np.einsum("npqgcij,npqgf->ijcgf", self.cols, dyg)   # (kh, kw, C/G, G, F/G)
        return dw.reshape(kh, kw, cg, -1)

    def dilate(self, dy):
        """Insert stride - 1 zeros between the rows and the columns of dy."""
        (sh, sw), (n, p, q, f) = self.stride, dy.shape
        out = np.zeros((n, (p - 1) * sh + 1, (q - 1) * sw + 1, f))
        out[:, ::sh, ::sw] = dy
        return out

    def rotated_kernel(self):
        """The kernel rotated by 180 degrees, in- and out-channels swapped within each group."""
        kh, kw, cg, f = self.w.shape
        w = self.kernel()[::-1, ::-1].reshape(kh, kw, cg, self.groups, f // self.groups)
        return w.transpose(0, 1, 4, 3, 2).reshape(kh, kw, f // self.groups, -1)

    def fit(self, dxp):
        """Zero rows and columns for the remainder that no window reaches."""
        hp, wp = (s + lo + hi for s, (lo, hi) in zip(self.x_shape[1:3], self.pads))
        extra = ((0, 0), (0, hp - dxp.shape[1]), (0, wp - dxp.shape[2]), (0, 0))
        return np.pad(dxp, extra)

    def crop(self, dxp):
        (t, _), (left, _) = self.pads
        h, w = self.x_shape[1:3]
        return dxp[:, t:t + h, left:left + w]


class NoDilation(Conv2D):
    """The seed question's first bug: dy not dilated for stride > 1."""

    def dilate(self, dy):
        return dy


class NoRotation(Conv2D):
    """The input gradient correlates dy with the kernel as it is, not rotated."""

    def rotated_kernel(self):
        kh, kw, cg, f = self.w.shape
        w = self.kernel().reshape(kh, kw, cg, self.groups, f // self.groups)
        return w.transpose(0, 1, 4, 3, 2).reshape(kh, kw, f // self.groups, -1)


class MinusZeroCrop(Conv2D):
    """The seed answer's crop: dxp[:, p:-p], empty when the padding is 0."""

    def crop(self, dxp):
        (t, bottom), (left, right) = self.pads
        return dxp[:, t:-bottom, left:-right]


class SwappedChannels(Conv2D):
    """dw returned as (kh, kw, F, C/G): in- and out-channel axes swapped."""

    def weight_grad(self, dy):
        return super().weight_grad(dy).transpose(0, 1, 3, 2)


class BiasOverWrongAxes(Conv2D):
    """db summed over H and W but not over the batch: (N, F) instead of (F,)."""

    def bias_grad(self, dy):
        return dy.sum(axis=(1, 2))


class RemainderNotZero(Conv2D):
    """The remainder rows get copies of the last computed row instead of zeros."""

    def fit(self, dxp):
        hp, wp = (s + lo + hi for s, (lo, hi) in zip(self.x_shape[1:3], self.pads))
        extra = ((0, 0), (0, hp - dxp.shape[1]), (0, wp - dxp.shape[2]), (0, 0))
        return np.pad(dxp, extra, mode="edge")


class MeanOverBatch(Conv2D):
    """dw averaged over the batch instead of summed."""

    def weight_grad(self, dy):
        return super().weight_grad(dy) / dy.shape[0]


class ForgetsBias(Conv2D):
    """The forward pass never adds the bias."""

    def forward(self, x):
        return super().forward(x) - self.b


class TrueConvolution(Conv2D):
    """A true convolution (kernel flipped) with a matching backward: only the forward is off."""

    def kernel(self):
        return self.w[::-1, ::-1]

    def weight_grad(self, dy):
        return super().weight_grad(dy)[::-1, ::-1]


class RemainderFromHeight(Conv2D):
    """dx the seed answer's way, with its crop fixed: the dilated dy gets the zero rows of the
    remainder counted on the height and added to both axes, then `as_strided` windows, one per
    padded-input pixel. When the width leaves the larger remainder, the last windows of each
    image read past the end of the padded dy: into the next image's zero padding, and past
    the end of the buffer for the last image. With padding, what they read lands in the
    border that the crop removes; with padding 0 it lands in dx."""

    def backward(self, dy):
        self.db, self.dw = self.bias_grad(dy), self.weight_grad(dy)
        (kh, kw), (dh, dw_), g = self.w.shape[:2], self.dilation, self.groups
        hp, wp = (s + lo + hi for s, (lo, hi) in zip(self.x_shape[1:3], self.pads))
        rest = (hp - (kh - 1) * dh - 1) % self.stride[0]            # the height's remainder
        dyd = np.pad(self.dilate(dy), ((0, 0), (0, rest), (0, rest), (0, 0)))
        ekh, ekw = (kh - 1) * dh + 1, (kw - 1) * dw_ + 1
        dyp = np.pad(dyd, ((0, 0), (ekh - 1,) * 2, (ekw - 1,) * 2, (0, 0)))
        sn, sh, sw, sc = dyp.strides
        n, f = dy.shape[0], dy.shape[3]
        windows = np.lib.stride_tricks.as_strided(               # (N, Hp, Wp, kh, kw, F)
            dyp, shape=(n, hp, wp, kh, kw, f),
            strides=(sn, sh, sw, sh * dh, sw * dw_, sc), writeable=False)
        windows = windows.reshape(n, hp, wp, kh, kw, g, f // g)   # (N, Hp, Wp, kh, kw, G, F/G)
        wr = self.rotated_kernel().reshape(kh, kw, f // g, g, -1)  # (kh, kw, F/G, G, C/G)
        dxp = np.einsum("nhwijgf,ijfgc->nhwgc", windows, wr)      # (N, Hp, Wp, G, C/G)
        return self.crop(dxp.reshape(n, hp, wp, -1))               # (N, H, W, C)


_NUMPY_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "edge",
               "circular": "wrap"}


class PaddedConv2D(Conv2D):
    """Conv2D with PyTorch's padding modes: the input is padded by np.pad in the matching mode,
    and the padded gradient is sent back to the pixels the padding copied (np.add.at)."""

    def __init__(self, w, b, stride=1, padding=0, dilation=1, groups=1,
                 padding_mode="zeros"):
        super().__init__(w, b, stride, padding, dilation, groups)
        self.padding_mode = padding_mode

    def numpy_mode(self):
        return _NUMPY_MODE[self.padding_mode]

    def pad_input(self, x):
        return np.pad(x, ((0, 0), *self.pads, (0, 0)), mode=self.numpy_mode())

    def unpad(self, dxp):
        n, h, w, c = self.x_shape
        mode = self.numpy_mode()
        fill = {"constant_values": -1} if mode == "constant" else {}
        source = np.pad(np.arange(h * w).reshape(h, w), self.pads, mode=mode, **fill)
        keep = source.ravel() >= 0                               # (Hp * Wp,)
        dx = np.zeros((n, h * w, c))
        np.add.at(dx, (slice(None), source.ravel()[keep]), dxp.reshape(n, -1, c)[:, keep])
        return dx.reshape(n, h, w, c)


class SymmetricForReflect(PaddedConv2D):
    """padding_mode='reflect' done with np.pad(mode='symmetric'), which repeats the edge pixel
    (PyTorch's reflect mirrors without repeating it: numpy's 'reflect')."""

    def numpy_mode(self):
        mode = super().numpy_mode()
        return "symmetric" if mode == "reflect" else mode


class DropsPaddingGradient(PaddedConv2D):
    """Crops the padded gradient as for zero padding: the gradient that reaches the mirrored,
    repeated or wrapped border never gets back to the pixels it copies."""

    def unpad(self, dxp):
        return self.crop(dxp)


class ConvTranspose2D:
    """A correct transposed convolution (PyTorch's ConvTranspose2d, channels_last): x (N, H, W,
    C), w (kh, kw, F, C) (Keras' layout), y (N, O, O', F) with O = (H - 1) * stride - 2 *
    padding + dilation * (kh - 1) + output_padding + 1. Each input pixel is scattered into the
    output through the kernel, one kernel offset at a time; the padding is then cropped."""

    def __init__(self, w, b, stride=1, padding=0, output_padding=0, dilation=1):
        self.w, self.b = w, b                                    # (kh, kw, F, C), (F,)
        self.stride, self.pads = _pair(stride), _pads(padding)
        self.output_padding, self.dilation = _pair(output_padding), _pair(dilation)

    def kernel(self):
        return self.w

    def full_size(self, h, w):
        """The output before cropping: every position some input pixel reaches, plus the
        output_padding rows."""
        return tuple((n - 1) * s + d * (k - 1) + 1 + o for n, s, d, k, o in zip(
            (h, w), self.stride, self.dilation, self.w.shape[:2], self.output_padding))

    def offsets(self, h, w):
        """(kernel offset, slice of the full output that input pixels reach through it)."""
        (sh, sw), (dh, dw_) = self.stride, self.dilation
        for a, b in np.ndindex(*self.w.shape[:2]):
            yield (a, b), (slice(None), slice(a * dh, a * dh + (h - 1) * sh + 1, sh),
                           slice(b * dw_, b * dw_ + (w - 1) * sw + 1, sw))

    def forward(self, x):
        self.x = x
        n, h, w, _ = x.shape
        full = np.zeros((n, *self.full_size(h, w), self.w.shape[2]))   # (N, Of, Of', F)
        for (a, b), sl in self.offsets(h, w):
            full[sl] += x @ self.kernel()[a, b].T                     # (N, H, W, F)
        return self.crop(full) + self.b

    def crop(self, full):
        (top, bottom), (left, right) = self.pads
        return full[:, top:full.shape[1] - bottom, left:full.shape[2] - right]

    def backward(self, dy):
        n, h, w, _ = self.x.shape
        full = np.zeros((n, *self.full_size(h, w), dy.shape[3]))    # (N, Of, Of', F)
        (top, _), (left, _) = self.pads
        full[:, top:top + dy.shape[1], left:left + dy.shape[2]] = dy
        self.dx = np.zeros(self.x.shape)
        self.dw = np.zeros(self.w.shape)
        for (a, b), sl in self.offsets(h, w):
            self.dx += full[sl] @ self.kernel()[a, b]                  # (N, H, W, C)
            self.dw[a, b] = np.einsum("nhwf,nhwc->fc", full[sl], self.x)
        self.db = dy.sum(axis=(0, 1, 2))
        return self.dx


class TransposedNoCrop(ConvTranspose2D):
    """Never crops the padding: y is the full scatter output."""

    def crop(self, full):
        return full


class IgnoresOutputPadding(ConvTranspose2D):
    """Takes output_padding but leaves the extra rows out of the output."""

    def full_size(self, h, w):
        return tuple(f - o for f, o in zip(super().full_size(h, w), self.output_padding))


class TransposedFlipsKernel(ConvTranspose2D):
    """Scatters with the kernel rotated by 180 degrees (a true convolution's habit)."""

    def kernel(self):
        return self.w[::-1, ::-1]

    def backward(self, dy):
        dx = super().backward(dy)
        self.dw = self.dw[::-1, ::-1]
        return dx


def conv_forward(x, w, b, conv_param):
    """CS231n style: x (N, C, H, W), w (F, C, kh, kw) -> (y (N, F, P, Q), cache)."""
    layer = Conv2D(w.transpose(2, 3, 1, 0), b, conv_param["stride"], conv_param["pad"])
    y = layer.forward(x.transpose(0, 2, 3, 1))                   # (N, P, Q, F)
    return y.transpose(0, 3, 1, 2), layer


def conv_backward(dout, cache):
    """CS231n style: dout (N, F, P, Q) -> dx (N, C, H, W), dw (F, C, kh, kw), db (F,)."""
    dx = cache.backward(dout.transpose(0, 2, 3, 1))              # (N, H, W, C)
    return dx.transpose(0, 3, 1, 2), cache.dw.transpose(3, 2, 0, 1), cache.db
