"""The seed answer's convolution layer, reproduced with its defects on purpose.

Source: the self-answer to the StackOverflow question "vectorized way to multiply ... specific
axis (convolutional layer backprop)" (2025), whose class is copied here method by method. It is
third-party code kept as a worked example for ``npconv check``: the checker should find what the
answer gets wrong, so the defects are NOT fixed here. Do not use this class for real work; use
npconv's own ops.

Known defects, kept as written:

- ``backward`` crops ``self.dout[:, p:-p, p:-p, :]``; with ``pad=0`` the slice ``0:-0`` is empty,
  so dx has zero height and width.
- ``_dilate`` and the padding of dY assume a square filter (it pads dY by ``fw - 1`` on both
  axes and computes the bottom/right remainder from ``fh`` and the image *height* only), so
  fh != fw, or non-square inputs whose remainders differ, give wrong results.

What changed from the answer: the answer shows only the methods, so ``__init__`` is ours (it sets
the attributes the methods read), ``forward``/``backward`` also *return* what they store, and the
lines are wrapped to 100 columns. ``_windows`` calls ``np.lib.stride_tricks.as_strided`` exactly
as the answer does (npconv's own code never does); one addition there is a bounds check, because
in the square-filter defect cases above the answer's view reaches past the end of the array and
would read foreign memory: this reproduction raises ValueError instead of returning garbage.
"""

from __future__ import annotations

import numpy as np


class SeedConv2D:
    """Conv layer from the seed answer: channels_last x, w (fh, fw, Cin, Cout), symmetric pad.

    Parameters
    ----------
    w : ndarray, shape (fh, fw, Cin, Cout)
        Filters.
    b : ndarray, shape (Cout,) or (1, 1, 1, Cout)
        Bias, added to the output by broadcasting.
    stride : int
        Stride on both spatial axes.
    pad : int
        Zero padding on all four sides.
    """

    def __init__(self, w: np.ndarray, b: np.ndarray, stride: int, pad: int) -> None:
        self.w = w  # (fh, fw, Cin, Cout)
        self.b = b  # (Cout,) or (1, 1, 1, Cout)
        self.stride = stride
        self.pad_size = pad
        self.pad_val = 0
        self.fh, self.fw, self.Cin, self.Cout = w.shape

    def _pad(self, array, pad_size, pad_val):
        """Only symmetric padding is implemented."""
        return np.pad(  # (N, H + 2p, W + 2p, C)
            array,
            ((0, 0), (pad_size, pad_size), (pad_size, pad_size), (0, 0)),
            "constant",
            constant_values=(pad_val, pad_val),
        )

    def _dilate(self, array, stride_size, pad_size, symmetric_filter_shape, output_image_size):
        # on dilation for backprop with stride>1,
        # see: https://medium.com/@mayank.utexas/backpropagation-for-convolution-with-strides-8137e4fc2710
        # see also: https://leimao.github.io/blog/Transposed-Convolution-As-Convolution/
        pad_bottom_and_right = (
            output_image_size + 2 * pad_size - symmetric_filter_shape
        ) % stride_size
        for m in range(stride_size - 1):
            array = np.insert(array, range(1, array.shape[1], m + 1), 0, axis=1)  # rows grow
            array = np.insert(array, range(1, array.shape[2], m + 1), 0, axis=2)  # cols grow

        for _ in range(pad_bottom_and_right):
            array = np.insert(array, array.shape[1], 0, axis=1)  # one more zero row
            array = np.insert(array, array.shape[2], 0, axis=2)  # one more zero column
        return array

    def _windows(self, array, stride_size, filter_shapes, out_height, out_width):
        """Windows of `array`, shape (N, out_height, out_width, fh, fw, C), as in the answer.

        inputs:
            array to create windows of
            stride_size: int
            filter_shapes: tuple(int): tuple of filter height and width
            out_height and out_width: int, respectively: output sizes for the windows
        returns:
            windows of array with shape (excl. dilation):
                array.shape[0], out_height, out_width, filter_shapes[0], filter_shapes[1],
                array.shape[3]
        """
        # Added (not in the answer): refuse a view that would reach past the array's end.
        for axis, out_size, k in (
            (1, out_height, filter_shapes[0]),
            (2, out_width, filter_shapes[1]),
        ):
            needed = (out_size - 1) * stride_size + k
            if needed > array.shape[axis]:
                raise ValueError(
                    f"seed answer's _windows would read outside the array on axis {axis}: "
                    f"needs {needed} elements, array has {array.shape[axis]} "
                    f"(a defect of the seed answer, see this module's docstring)"
                )
        strides = (
            array.strides[0],
            array.strides[1] * stride_size,
            array.strides[2] * stride_size,
            array.strides[1],
            array.strides[2],
            array.strides[3],
        )
        return np.lib.stride_tricks.as_strided(  # (N, out_h, out_w, fh, fw, C)
            array,
            shape=(
                array.shape[0],
                out_height,
                out_width,
                filter_shapes[0],
                filter_shapes[1],
                array.shape[3],
            ),
            strides=strides,
            writeable=False,
        )

    def forward(self, x):
        """Run the layer; x has shape [batchsize, height, width, channel in]; returns self.out.

        after init, filter_shapes are: [fh, fw, channel in, channel out]
        """
        self.input_shape = x.shape
        x_pad = self._pad(x, self.pad_size, self.pad_val)  # (N, h + 2p, w + 2p, Cin)
        self.input_pad_shape = x_pad.shape
        # get the shapes
        batch_size, h, w, Cin = self.input_shape  # noqa: RUF059 (as in the answer)
        # calculate output sizes; only symmetric padding is possible
        self.Hout = (h + 2 * self.pad_size - self.fh) // self.stride + 1
        self.Wout = (w + 2 * self.pad_size - self.fw) // self.stride + 1
        x_windows = self._windows(  # (batch_size, Hout, Wout, fh, fw, Cin)
            array=x_pad,
            stride_size=self.stride,
            filter_shapes=(self.fh, self.fw),
            out_width=self.Wout,
            out_height=self.Hout,
        )
        # (N, Hout, Wout, Cout)
        self.out = np.tensordot(x_windows, self.w, axes=([3, 4, 5], [0, 1, 2])) + self.b
        self.inputs = x_windows
        ## alternative 1: einsum approach, slower than other alternatives
        # self.out = np.einsum('noufvc,fvck->nouk', x_windows, self.w) + self.b
        ## alternative 2: column approach with simple dot product
        # z = x_windows.reshape(-1, self.fh * self.fw * Cin) @ \
        #     self.W.reshape(self.fh*self.fw*Cin, Cout) + self.b
        #     # 2D matrix with shape (batch_size * Hout * Wout, Cout)
        # self.dout = z.reshape(batch_size, Hout, Wout, Cout)
        return self.out

    def backward(self, dout_descendant):
        """Backprop dout_descendant (batch_size, Hout, Wout, Cout); returns self.dout (dx)."""
        # get shapes
        batch_size, h, w, Cin = self.input_shape  # noqa: RUF059 (as in the answer)
        # we want to sum everything but the filters for b
        self.db = np.sum(dout_descendant, axis=(0, 1, 2), keepdims=True)  # shape (1,1,1, Cout)
        # for dW we'll use the column approach with ordinary dot product for variety ;)
        # tensordot does the same without all the reshaping
        # new shape (batch_size * Hout * Wout, Cout)
        dout_descendant_flat = dout_descendant.reshape(-1, self.Cout)
        # shape (batch_size * Hout * Wout, fh * fw * Cin)
        x_flat = self.inputs.reshape(-1, self.fh * self.fw * Cin)
        dw = x_flat.T @ dout_descendant_flat  # shape (fh * fw * Cin, Cout)
        self.dw = dw.reshape(self.fh, self.fw, Cin, self.Cout)  # (fh, fw, Cin, Cout)
        del dout_descendant_flat  # free memory
        # for dinputs: we'll get padded and dilated windows of dout_descendant and perform the
        # tensordot with 180 rotated W
        # for details, see
        # https://medium.com/@mayank.utexas/backpropagation-for-convolution-with-strides-8137e4fc2710
        # also: https://pavisj.medium.com/convolutions-and-backpropagations-46026a8f5d2c ;
        # also: https://youtu.be/Lakz2MoHy6o?t=835
        Wrot180 = np.rot90(self.w, 2, axes=(0, 1))  # (fh, fw, Cin, Cout); or self.w[::-1, ::-1]
        # backprop for forward with stride > 1 is done on windowed dout that's padded and
        # dilated with stride 1
        dout_descendant = self._dilate(  # (N, h + 2p - fh + 1, ..., Cout) for square inputs
            dout_descendant,
            stride_size=self.stride,
            pad_size=self.pad_size,
            symmetric_filter_shape=self.fh,
            output_image_size=h,
        )
        # pad dout_descendant to dim: fh-1 (or fw-1); only symmetrical filters are supported
        dout_descendant = self._pad(dout_descendant, pad_size=self.fw - 1, pad_val=self.pad_val)
        dout_descendant = self._windows(  # (N, h + 2p, w + 2p, fh, fw, Cout)
            array=dout_descendant,
            stride_size=1,
            filter_shapes=(self.fh, self.fw),
            out_height=h + 2 * self.pad_size,
            out_width=w + 2 * self.pad_size,
        )
        # (N, h + 2p, w + 2p, Cin)
        self.dout = np.tensordot(dout_descendant, Wrot180, axes=([3, 4, 5], [0, 1, 3]))
        # (N, h, w, Cin), but (N, 0, 0, Cin) when pad_size == 0: the seed's crop defect
        self.dout = self.dout[:, self.pad_size : -self.pad_size, self.pad_size : -self.pad_size, :]
        ## einsum alternative, but slower:
        # dinput = np.einsum('nhwfvk,fvck->nhwc', dout_windows, self.W)
        return self.dout


if __name__ == "__main__":
    # Demo: correct on a square filter with pad >= 1, empty dx when pad == 0.
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 7, 7, 3))  # (N, H, W, Cin)
    w = rng.standard_normal((3, 3, 3, 4))  # (fh, fw, Cin, Cout)
    for pad in (1, 0):
        layer = SeedConv2D(w, np.zeros(4), stride=2, pad=pad)
        y = layer.forward(x)  # (N, Hout, Wout, Cout)
        dx = layer.backward(np.ones_like(y))  # (N, H, W, Cin), or (N, 0, 0, Cin) when pad == 0
        print(f"pad={pad}: y {y.shape}, dx {dx.shape}, dw {layer.dw.shape}")
