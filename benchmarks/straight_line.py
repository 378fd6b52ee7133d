"""A straight-line NumPy program of an exported conv net: at batch 1, the least time that an
evaluator making these NumPy calls can take for it (at larger batches, cache-sized chunks on
several workers beat its whole-array calls). `benchmarks/onnx.py --floor` times it beside
npconv.onnx and onnxruntime.

`Program(model)` turns an ONNX graph into a list of closures over buffers allocated once per
input shape, and runs them with nothing in between: no checks, no dispatch, no allocation
after the first call. It works channels_last inside (the input is transposed once, the
weights beforehand). Per node:

- Conv is its product as one NumPy call, then its bias and its activation in place, one ufunc
  each:
  - a 1x1 stride-1 layer is one GEMM, x (N*P, C) @ w (C, F);
  - a depthwise layer is npconv's einsum (the expression and the window view of
    `npconv.algorithms.depthwise`), on its input copied into a zero-bordered buffer;
  - any other ungrouped layer copies its window matrix whole, then one GEMM.
- Clip (its bounds as inputs, or as attributes before opset 11) or Relu after a Conv whose
  output goes to it alone, and is not a graph output, is that Conv's activation; alone it is
  one np.clip.
- Add is one np.add. MaxPool is one np.maximum per kernel offset on a -inf-bordered copy.
- ReduceMean over the spatial axes and GlobalAveragePool are one np.mean.
- Flatten (axis 1) and Reshape to (N, C) of a 1x1 image are views.
- Gemm is one GEMM and an add.

An image output comes back in ONNX's layout, (N, C, H, W). Any other node, and what the nodes
above do not implement (auto_pad, ceil_mode, dilated or index-giving MaxPool, grouped Conv
other than depthwise, transA, alpha, beta, broadcasting adds), is refused with a ValueError
naming the node. The GEMMs use every
thread BLAS has; the einsums run on one, since two halves on two threads were slower at batch 1
(docs/onnx.md).

`Program(model, free_passes=True)` is a bound, not a program. It leaves out the depthwise
layers' padding copies and the 1x1 layers' bias additions, and so computes wrong logits. Its
time is what writing each output straight into the buffer its consumer reads, with the bias
folded into the GEMM, could save at most; only that time means anything.
"""

from __future__ import annotations

import math

import numpy as np
from onnx import helper, numpy_helper

import npconv
from npconv import _windows
from npconv.algorithms import depthwise, pointwise


def _attributes(node) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def _refuse(node, what: str) -> ValueError:
    return ValueError(f"straight_line: {node.op_type} node {node.name!r}: {what}")


def _pads(node, attrs: dict) -> tuple:
    """((top, bottom), (left, right)) from a node's explicit pads (auto_pad refused)."""
    if attrs.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        raise _refuse(node, f"auto_pad {attrs['auto_pad']!r}: explicit pads only")
    top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
    return (top, bottom), (left, right)


class Program:
    """Call with x (N, C, H, W) float32 to get the graph's first output as a new array (in
    ONNX's layout: (N, C, H, W) when it is an image); the program for each input shape is
    built on its first call."""

    def __init__(self, model, free_passes: bool = False) -> None:
        self.graph = model.graph
        self.free = free_passes
        self.consts = {t.name: numpy_helper.to_array(t) for t in self.graph.initializer}
        for node in self.graph.node:
            if node.op_type == "Constant":
                self.consts[node.output[0]] = numpy_helper.to_array(_attributes(node)["value"])
        self._built: dict = {}

    def __call__(self, x: np.ndarray) -> np.ndarray:
        key = (x.shape, x.dtype)
        if key not in self._built:
            self._built[key] = self._build(x.shape, x.dtype)
        steps, x_in, out = self._built[key]
        np.copyto(x_in, x.transpose(0, 2, 3, 1))                 # NCHW -> NHWC
        for step in steps:
            step()
        return out.transpose(0, 3, 1, 2).copy() if out.ndim == 4 else out.copy()

    # -- building ------------------------------------------------------------------------

    def _build(self, shape: tuple, dtype) -> tuple[list, np.ndarray, np.ndarray]:
        n, c, h, w = shape
        x_in = np.empty((n, h, w, c), dtype)
        values = {self.graph.input[0].name: x_in}
        nodes = list(self.graph.node)
        readers: dict = {}                                       # value -> reading nodes' indices
        for i, node in enumerate(nodes):
            for name in node.input:
                readers.setdefault(name, []).append(i)
        steps: list = []
        fused: set = set()                                       # activations done by their Conv
        for i, node in enumerate(nodes):
            if node.op_type == "Constant" or i in fused:
                continue
            build = getattr(self, f"_{node.op_type.lower()}", None)
            if build is None:
                raise _refuse(node, "not an operator this program knows")
            if node.op_type != "Conv":
                build(node, values, steps)
                continue
            after = readers.get(node.output[0], [])
            activation = None
            if len(after) == 1 and nodes[after[0]].op_type in ("Clip", "Relu") \
                    and node.output[0] not in {o.name for o in self.graph.output}:
                fused.add(after[0])
                activation = (nodes[after[0]], *self._bounds(nodes[after[0]]))
            build(node, values, steps, activation)
        return steps, x_in, values[self.graph.output[0].name]

    def _bounds(self, node) -> tuple[float, float]:
        """(lo, hi) of a Relu, or of a Clip: its min and max inputs (opset 11 on) or
        attributes (before), absent ones infinite."""
        if node.op_type == "Relu":
            return 0.0, math.inf
        given = [float(self.consts[name]) if name else None for name in node.input[1:3]]
        given += [None] * (2 - len(given))
        attrs = _attributes(node)
        lo, hi = (attrs.get(key, v) for key, v in zip(("min", "max"), given))
        return (-math.inf if lo is None else lo), (math.inf if hi is None else hi)

    def _conv(self, node, values: dict, steps: list, activation) -> None:
        x = values[node.input[0]]                                 # (N, H, W, C)
        w = self.consts[node.input[1]]                            # (F, C/G, kh, kw)
        if w.ndim != 4:
            raise _refuse(node, f"weights of shape {w.shape}: 2-D convolutions only")
        f = w.shape[0]
        bias = (self.consts[node.input[2]] if len(node.input) > 2 and node.input[2]
                else np.zeros(f, x.dtype)).astype(x.dtype)
        attrs = _attributes(node)
        groups = attrs.get("group", 1)
        spec = npconv.conv_spec(x.shape, (*w.shape[2:], w.shape[1], f),
                                stride=tuple(attrs.get("strides", (1, 1))),
                                padding=_pads(node, attrs),
                                dilation=tuple(attrs.get("dilations", (1, 1))), groups=groups)
        w_last = np.ascontiguousarray(w.transpose(2, 3, 1, 0))   # (kh, kw, C/G, F)
        y = np.empty((spec.batch, *spec.out_size, f), x.dtype)   # (N, *P, F)
        y2 = y.reshape(-1, f)
        out_name = node.output[0] if activation is None else activation[0].output[0]
        values[out_name] = y
        one_by_one = pointwise.applies(spec) and spec.pads == ((0, 0), (0, 0))
        if one_by_one:
            product = self._pointwise(x, w_last, y2)
        elif groups == x.shape[-1] == f and w.shape[1] == 1:
            product = self._depthwise(x, w_last, spec, y)
        elif groups == 1:
            product = self._im2col(x, w_last, spec, y2)
        else:
            raise _refuse(node, f"group {groups}: only 1 or depthwise (one filter a channel)")
        steps.append(product)
        if not (self.free and one_by_one):
            steps.append(lambda: np.add(y2, bias, out=y2))
        if activation is not None:
            lo, hi = activation[1:]
            steps.append(lambda: np.clip(y2, lo, hi, out=y2))

    def _pointwise(self, x, w_last, y2):
        x2, w2 = x.reshape(-1, x.shape[-1]), w_last.reshape(x.shape[-1], -1)
        return lambda: np.matmul(x2, w2, out=y2)

    def _padded(self, x, spec, fill: float = 0.0):
        """(a buffer of x padded by spec.pads, bordered with `fill`, and its interior)."""
        xp = np.full((x.shape[0], *spec.padded_size, x.shape[-1]), fill, x.dtype)
        return xp, xp[_windows.interior(spec.pads, spec.in_size)]

    def _depthwise(self, x, w_last, spec, y):
        xp, inner = self._padded(x, spec)
        win = depthwise._windows_view(xp, spec)
        rule, wk = depthwise.einsum_weights(w_last, spec)
        wk = wk.copy()                                           # tiles live in scratch
        if depthwise.merged(spec):                               # (N, P0, P1 * C)
            out = y.reshape(y.shape[0], y.shape[1], -1)
        else:                                                    # (N, P0, P1, G, 1)
            out = y.reshape(*y.shape[:-1], spec.groups, 1)
        if self.free:
            return lambda: np.einsum(rule, win, wk, out=out)

        def product():
            np.copyto(inner, x)
            np.einsum(rule, win, wk, out=out)
        return product

    def _im2col(self, x, w_last, spec, y2):
        xp, inner = self._padded(x, spec)
        win = _windows.unfold(xp, spec.kernel_size, spec.stride, spec.dilation,
                                     spec.out_size)              # (N, *P, *K, C)
        cols = np.empty(win.shape, x.dtype)
        cols2, w2 = cols.reshape(y2.shape[0], -1), w_last.reshape(-1, y2.shape[1])

        def product():
            np.copyto(inner, x)
            np.copyto(cols, win)
            np.matmul(cols2, w2, out=y2)
        return product

    def _clip(self, node, values: dict, steps: list) -> None:
        x, (lo, hi) = values[node.input[0]], self._bounds(node)
        y = values[node.output[0]] = np.empty_like(x)
        steps.append(lambda: np.clip(x, lo, hi, out=y))

    _relu = _clip

    def _add(self, node, values: dict, steps: list) -> None:
        a, b = (values[name] for name in node.input)
        if a.shape != b.shape:
            raise _refuse(node, f"shapes {a.shape} and {b.shape}: no broadcasting here")
        y = values[node.output[0]] = np.empty_like(a)
        steps.append(lambda: np.add(a, b, out=y))

    def _maxpool(self, node, values: dict, steps: list) -> None:
        x, attrs = values[node.input[0]], _attributes(node)
        if attrs.get("ceil_mode", 0) or any(d != 1 for d in attrs.get("dilations", (1, 1))) \
                or len(node.output) > 1:
            raise _refuse(node, "ceil_mode, dilations or indices")
        k = tuple(attrs["kernel_shape"])
        spec = npconv.conv_spec(x.shape, (*k, 1, x.shape[-1]), groups=x.shape[-1],
                                stride=tuple(attrs.get("strides", (1, 1))),
                                padding=_pads(node, attrs))
        xp, inner = self._padded(x, spec, -np.inf)
        win = _windows.unfold(xp, k, spec.stride, spec.dilation, spec.out_size)
        y = values[node.output[0]] = np.empty((x.shape[0], *spec.out_size, x.shape[-1]),
                                              x.dtype)
        offsets = [(i, j) for i in range(k[0]) for j in range(k[1])]

        def pool():
            np.copyto(inner, x)
            np.copyto(y, win[:, :, :, 0, 0])
            for i, j in offsets[1:]:
                np.maximum(y, win[:, :, :, i, j], out=y)
        steps.append(pool)

    def _reducemean(self, node, values: dict, steps: list) -> None:
        x, attrs = values[node.input[0]], _attributes(node)
        axes = attrs.get("axes")
        if axes is None and len(node.input) > 1:
            axes = self.consts[node.input[1]].tolist()
        if sorted(a % 4 for a in axes or ()) != [2, 3] or not attrs.get("keepdims", 1):
            raise _refuse(node, f"axes {axes}: the spatial axes, keepdims, only")
        self._mean(node, x, values, steps)

    def _globalaveragepool(self, node, values: dict, steps: list) -> None:
        self._mean(node, values[node.input[0]], values, steps)

    def _mean(self, node, x, values: dict, steps: list) -> None:
        y = values[node.output[0]] = np.empty((x.shape[0], 1, 1, x.shape[-1]), x.dtype)
        steps.append(lambda: np.mean(x, axis=(1, 2), keepdims=True, out=y))

    def _flatten(self, node, values: dict, steps: list) -> None:
        x = values[node.input[0]]
        if node.op_type == "Flatten" and _attributes(node).get("axis", 1) != 1:
            raise _refuse(node, "axis other than 1")
        if x.ndim == 4 and x.shape[1:3] != (1, 1):
            raise _refuse(node, f"input {x.shape} (N, H, W, C): only a 1x1 image flattens "
                                "alike in both layouts")
        values[node.output[0]] = x.reshape(x.shape[0], -1)

    def _reshape(self, node, values: dict, steps: list) -> None:
        target = self.consts[node.input[1]].tolist()
        x = values[node.input[0]]
        n, rest = x.shape[0], x.size // max(x.shape[0], 1)
        flat = len(target) == 2 and ((target[0] in (0, n) and target[1] in (-1, rest))
                                     or target == [-1, rest])
        if not flat:
            raise _refuse(node, f"shape {target}: only (N, -1)")
        self._flatten(node, values, steps)

    def _gemm(self, node, values: dict, steps: list) -> None:
        a, attrs = values[node.input[0]], _attributes(node)
        if attrs.get("transA", 0) or attrs.get("alpha", 1.0) != 1.0 \
                or attrs.get("beta", 1.0) != 1.0:
            raise _refuse(node, "transA, alpha or beta")
        b = self.consts[node.input[1]].astype(a.dtype)
        b = np.ascontiguousarray(b.T if attrs.get("transB", 0) else b)  # (K, M)
        c = self.consts[node.input[2]].astype(a.dtype) if len(node.input) > 2 else 0
        y = values[node.output[0]] = np.empty((a.shape[0], b.shape[1]), a.dtype)

        def gemm():
            np.matmul(a, b, out=y)
            np.add(y, c, out=y)
        steps.append(gemm)
