"""Layers that imported ONNX graphs need and `npconv.nn` does not have (yet): Softmax.

The importer takes a layer from `npconv.nn` when it has one of the name and from here
otherwise, so these step aside as soon as `npconv.nn` grows its own. A layer calls a forward
function and a backward function written with its gradient rule, and follows the `npconv.nn`
layer contract (`forward(x, training)`, `backward(dy)`, `config()`). Each registers in
`npconv.nn.layers.LAYERS` (where it is not taken), as Module subclasses register in
`npconv.nn.MODULES`, so that `npconv.nn.load` rebuilds imported models once `npconv.onnx` is
imported.
"""

from __future__ import annotations

from typing import cast

from npconv import _args
from npconv.nn import Layer
from npconv.nn import functional as F
from npconv.nn.layers import LAYERS

__all__ = ["Softmax", "softmax_backward"]


def softmax_backward(dy, y, axis: int):
    """dx of y = softmax(x) along `axis`: y * (dy - sum(dy * y)), from dx_i = sum_j dy_j
    dy_j/dx_i with dy_j/dx_i = y_j (delta_ij - y_i)."""
    return y * (dy - (dy * y).sum(axis=axis, keepdims=True))


class Softmax(Layer):
    """softmax along `axis` (None: the channel axis of `data_format`; PyTorch's nn.Softmax(dim)
    with dim renumbered for channels_last)."""

    def __init__(self, axis: int | None = None, *, data_format: str = "channels_last") -> None:
        if axis is not None and not _args.is_int(axis):
            raise TypeError(f"`axis` must be None (the channel axis) or an int; got {axis!r}")
        self.axis = axis
        self.data_format = _args.choice(data_format, _args.DATA_FORMATS, "data_format")
        super().__init__()

    def config(self) -> dict:
        return dict(axis=self.axis, data_format=self.data_format)

    def _resolved(self, ndim: int) -> int:
        if self.axis is not None:
            return self.axis
        return ndim - 1 if self.data_format == "channels_last" or ndim == 2 else 1

    def forward(self, x, training: bool = False):
        _args.float_array(x, "x")
        axis = self._resolved(x.ndim)
        y = F.softmax(x, axis=axis)
        self._start(training, (y, axis))
        return y

    def backward(self, dy):
        y, axis = self._saved()
        return softmax_backward(dy, y, axis)


for _layer in (Softmax,):
    cast(dict, LAYERS).setdefault(_layer.__name__, _layer)
