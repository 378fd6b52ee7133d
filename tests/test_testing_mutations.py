"""The checker's own test: a correct im2col layer passes every phase, and every realistic
one-line mistake in it is caught, by the right output and, where a known pattern fits, with the
right diagnosis.

Each mutation below is a subclass of `student_layers.Im2col` that changes one method the way
students get it wrong. The check runs in this process without the random phase (the layer is
vectorized and well behaved), except where the mistake needs the memory placements.
"""

import numpy as np
import pytest
import student_layers

from npconv.testing import check_conv

Im2col = student_layers.Im2col
QUICK = {"random": 0, "isolate": False, "shrink": False}


def test_the_correct_im2col_layer_passes_every_phase():
    report = check_conv(Im2col, random=60, random_seed=11)
    assert report, report
    assert len(report.results) == 28 and len(report.random_results) == 60
    assert "Left out: 2 configurations with groups (Im2col takes no `groups` argument)." in \
        str(report)


class AssignsInCol2im(Im2col):
    """col2im with `=`: overlapping windows overwrite each other's gradient."""

    def col2im(self, dcols):
        n, h, w, c = self.x_shape
        (t, bt), (lf, r) = self.pads
        dxp = np.zeros((n, h + t + bt, w + lf + r, c))
        dcols = dcols.reshape(n, *self.P, -1, c)
        for i, sl in self.offsets():
            dxp[sl] = dcols[:, :, :, i]
        return dxp


class MeanOverBatch(Im2col):
    def backward(self, dy):
        dx = super().backward(dy)
        self.dw = self.dw / dy.shape[0]
        return dx


class BiasPerImage(Im2col):
    def backward(self, dy):
        dx = super().backward(dy)
        self.db = dy.sum(axis=(1, 2))
        return dx


class MinusCrop(Im2col):
    def crop(self, dxp):
        (t, bt), (lf, r) = self.pads
        return dxp[:, t:-bt, lf:-r]


class NoBias(Im2col):
    def forward(self, x):
        return super().forward(x) - self.b


class KernelAxesSwapped(Im2col):
    """The window matrix's columns in (kw, kh) order (np.ndindex over (kw, kh)) against w
    reshaped in (kh, kw) order: the kernel is applied transposed."""

    def offsets(self):
        (kh, kw), (sh, sw), (dh, dw) = self.w.shape[:2], self.stride, self.dilation
        p, q = self.P
        for i, (b, a) in enumerate(np.ndindex(kw, kh)):
            yield i, (slice(None), slice(a * dh, a * dh + (p - 1) * sh + 1, sh),
                      slice(b * dw, b * dw + (q - 1) * sw + 1, sw))


class HeightPaddingEverywhere(Im2col):
    def pad(self, x):
        return np.pad(x, ((0, 0), self.pads[0], self.pads[0], (0, 0)))


class OneStride(Im2col):
    def __init__(self, w, b, stride=1, padding=0, dilation=1):
        super().__init__(w, b, stride, padding, dilation)
        self.stride = (self.stride[0],) * 2


class ChannelsBeforeKernel(Im2col):
    """The window matrix's columns in (C, kh, kw) order, against w reshaped in (kh, kw, C)."""

    def im2col(self, xp):
        cols = super().im2col(xp)                                # (N*P*Q, kh*kw*C)
        k, c = self.w.shape[0] * self.w.shape[1], xp.shape[3]
        return cols.reshape(-1, k, c).transpose(0, 2, 1).reshape(cols.shape)


class OutputWidthFromHeight(Im2col):
    def out_size(self, h, w):
        return super().out_size(h, h)


class UninitializedBuffer(Im2col):
    """col2im into np.empty: what the buffer held before stays where no window writes."""

    def col2im(self, dcols):
        n, h, w, c = self.x_shape
        (t, bt), (lf, r) = self.pads
        dxp = np.empty((n, h + t + bt, w + lf + r, c))
        dxp[:, :, :, :] = 0 if h == w else dxp
        dcols = dcols.reshape(n, *self.P, -1, c)
        for i, sl in self.offsets():
            dxp[sl] += dcols[:, :, :, i]
        return dxp


class ScalesInput(Im2col):
    """Normalizes x in place before use."""

    def forward(self, x):
        x *= 1.0 + (x.shape[0] > 1)
        return super().forward(x / (1.0 + (x.shape[0] > 1)))


class ContiguousStrides(Im2col):
    """Windows by as_strided with strides computed from the shape, as if x were C-contiguous."""

    def pad(self, x):
        if not any(map(any, self.pads)):
            return x                                             # no copy when there is no padding
        return super().pad(x)

    def im2col(self, xp):
        _, h, w, c = xp.shape
        item = xp.itemsize
        strides = (h * w * c * item, w * c * item, c * item, item)   # wrong unless contiguous
        view = np.lib.stride_tricks.as_strided(xp, shape=xp.shape, strides=strides)
        return super().im2col(view)


MUTATIONS = [
    (AssignsInCol2im, "dx", "overlapping windows"),
    (MeanOverBatch, "dw", "divided by the batch size"),
    (BiasPerImage, "db", "db is dy summed over (H, W)"),
    (MinusCrop, "dx", "padding cropped with `-0`"),
    (NoBias, "y", "y lacks the bias"),
    (KernelAxesSwapped, "y", "every configuration without a 1x1 kernel fails"),
    (HeightPaddingEverywhere, "y", "a different padding per axis"),
    (OneStride, "y", "a different stride per axis"),
    (ChannelsBeforeKernel, "y", "fails"),
    (OutputWidthFromHeight, "y", "non-square input"),
    (UninitializedBuffer, "dx", "dx depends on memory outside your arrays"),
    (ScalesInput, "x", "the code modified its input `x` in place"),
    (ContiguousStrides, "y", "depends on how the inputs are laid out in memory"),
]


@pytest.mark.parametrize("mutant, output, words", MUTATIONS,
                         ids=[m.__name__ for m, _, _ in MUTATIONS])
def test_every_mutation_is_caught(mutant, output, words):
    report = check_conv(mutant, **QUICK)
    assert not report and report.findings
    words_in = " ".join(str(report).split())
    assert words in words_in, words_in
    failing = {o for r in report.failures for o in r.outputs if not r.outputs[o].ok} | \
        {m.output or "x" for r in report.failures for m in r.memory} | \
        {name for r in report.failures for name in r.modified}
    assert output in failing


def test_at_least_ten_mutations():
    assert len(MUTATIONS) >= 10
