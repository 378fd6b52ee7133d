"""ONNX nodes as npconv layers: the table the importer builds models from.

`plan(graph)` walks a `Graph` (`npconv.onnx.graph`) in order and turns every node into a
`LayerSpec`: the name of an `npconv.nn` layer class (PyTorch's names: Conv2d, Linear,
BatchNorm2d, ReLU6, Add, Concat...), its constructor keywords, its parameters and buffers in
PyTorch's layout and under PyTorch's keys (weight, bias, running_mean, running_var), the values
it reads and the one it writes. A few node patterns become one layer (MatMul + Add as Linear,
global pooling + Flatten as GlobalAvgPool); Identity and inference-time shape-only nodes become
aliases. A node the table cannot express raises `UnsupportedOperator` naming it: nothing is
skipped.

Layout: an ONNX graph is channels_first. With `data_format="channels_last"` (npconv's default
and its fast path) the layers take (N, *S, C) activations: the model's input is the ONNX input
transposed once, and the layers that care about axes get `data_format` (Concat on channels,
Flatten in PyTorch's (C, H, W) order) or a renumbered axis. With "channels_first" every layer
keeps ONNX's layout. Parameters stay in PyTorch's layout and names either way.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from npconv.onnx import ops
from npconv.onnx.graph import Graph, Node

__all__ = ["SUPPORTED", "LayerSpec", "Plan", "UnsupportedOperator", "plan"]


class UnsupportedOperator(ValueError):
    """An ONNX node (or attribute, or pattern) that has no npconv layer."""


@dataclass
class LayerSpec:
    """One npconv layer of an imported model.

    layer : str
        Class name in `npconv.nn` (PyTorch's: "Conv2d", "Linear", "BatchNorm2d", "ReLU6", ...).
    kwargs : dict
        Constructor keywords.
    inputs, output : the value names it reads (in order) and writes.
    name : str
        Its name in the model, from its parameters' names when it has any ("layer1.0.conv1"
        for "layer1.0.conv1.weight"), so that the model's state_dict keys are PyTorch's.
    params, buffers : dict of str -> ndarray
        PyTorch's layout and keys (a Conv2d weight is (F, C/G, kh, kw)).
    nodes : tuple of str
        The ONNX nodes it comes from (for messages).
    """

    layer: str
    kwargs: dict
    inputs: tuple[str, ...]
    output: str
    name: str = ""
    params: dict[str, np.ndarray] = field(default_factory=dict)
    buffers: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: tuple[str, ...] = ()


@dataclass
class Plan:
    """The layers of a graph in execution order, plus the names that are other names
    (`aliases`: Identity, Flatten of an (N, C) value...), the graph's inputs and outputs."""

    layers: list[LayerSpec]
    aliases: dict[str, str]
    inputs: list[str]
    outputs: list[str]
    data_format: str

    def resolve(self, name: str) -> str:
        while name in self.aliases:
            name = self.aliases[name]
        return name


class _Context:
    """What the builders share: the graph, the layout, the nodes already folded into an
    earlier layer, and the names taken."""

    def __init__(self, graph: Graph, data_format: str) -> None:
        self.graph, self.data_format = graph, data_format
        self.last = data_format == "channels_last"
        self.folded: set[int] = set()
        self.aliases: dict[str, str] = {}
        self.names: set[str] = set()

    def constant(self, node: Node, i: int, what: str) -> np.ndarray:
        name = node.inputs[i] if i < len(node.inputs) else ""
        if name not in self.graph.constants:
            raise UnsupportedOperator(f"{node.describe()}: its {what} (input {i}) must be a "
                                      f"constant (an initializer) to become a layer parameter")
        return self.graph.constants[name]

    def optional(self, node: Node, i: int) -> np.ndarray | None:
        name = node.inputs[i] if i < len(node.inputs) else ""
        return self.graph.constants.get(name) if name else None

    def spatial(self, node: Node) -> tuple[int, ...] | None:
        """The spatial size of the node's first input, when shape inference knows it."""
        shape = self.graph.shapes.get(node.inputs[0], self.graph.inputs.get(node.inputs[0]))
        if shape is None or not all(isinstance(v, int) for v in shape[2:]):
            return None
        return tuple(shape[2:])

    def name_for(self, node: Node, param: str | None) -> str:
        """"layer1.0.conv1" from a parameter "layer1.0.conv1.weight", else the node's name,
        else op_type and a number; unique."""
        base = param.rsplit(".", 1)[0] if param and "." in param else (node.name or "")
        base = base.strip("/").replace("/", "_").replace("::", "_").replace(":", "_") or \
            node.op_type.lower()
        name, k = base, 1
        while name in self.names:
            name, k = f"{base}_{k}", k + 1
        self.names.add(name)
        return name


def _rank(node: Node, w: np.ndarray) -> int:
    if not 1 <= w.ndim - 2 <= 3:
        raise UnsupportedOperator(f"{node.describe()}: npconv's layers are 1-, 2- or 3-d; the "
                                  f"weight has shape {tuple(w.shape)}")
    return w.ndim - 2


def _pairs_or_same(ctx: _Context, node: Node, k, strides, dilations, rank: int):
    """Explicit (lo, hi) pairs for Conv and the pools: NOTSET/VALID directly, SAME_* from the
    input's spatial size (SAME_UPPER is npconv's "same" when the size is unknown)."""
    auto_pad = ops._auto_pad(node.attrs.get("auto_pad"), node.op_type)
    size = ctx.spatial(node)
    if auto_pad in ("NOTSET", "VALID") or size is not None:
        size = size or (1,) * rank
        return ops.conv_pads(auto_pad, node.attrs.get("pads"), size, k, strides, dilations,
                             node.op_type)
    if auto_pad == "SAME_UPPER":
        return "same"
    raise UnsupportedOperator(f"{node.describe()}: auto_pad=SAME_LOWER needs the input's "
                              f"spatial size, which shape inference could not tell")


def _geometry(node: Node, rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
    op = node.op_type
    return (ops._ints(node.attrs.get("strides"), rank, "strides", op, 1),
            ops._ints(node.attrs.get("dilations"), rank, "dilations", op, 1))


# ---------------------------------------------------------------------------------------------
# Convolutions and batch normalization
# ---------------------------------------------------------------------------------------------


class _Weighted(NamedTuple):
    """What Conv and ConvTranspose nodes share: the constant weight and bias in PyTorch's
    layout, the rank, kernel size, strides, dilations and groups."""

    params: dict
    w: np.ndarray
    rank: int
    kernel_size: tuple[int, ...]
    stride: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int


def _weighted(ctx: _Context, node: Node) -> _Weighted:
    w = ctx.constant(node, 1, "weight W")
    b = ctx.optional(node, 2)
    rank = _rank(node, w)
    k = ops._kernel_from_weight(w, node.attrs.get("kernel_shape"), node.op_type)
    params = {"weight": w, **({"bias": b} if b is not None else {})}
    return _Weighted(params, w, rank, k, *_geometry(node, rank), int(node.attrs.get("group", 1)))


def _conv(ctx: _Context, i: int, node: Node) -> LayerSpec:
    c = _weighted(ctx, node)
    padding = _pairs_or_same(ctx, node, c.kernel_size, c.stride, c.dilation, c.rank)
    kwargs = dict(in_channels=c.w.shape[1] * c.groups, out_channels=c.w.shape[0],
                  kernel_size=c.kernel_size, stride=c.stride, padding=padding,
                  dilation=c.dilation, groups=c.groups, bias="bias" in c.params,
                  data_format=ctx.data_format)
    return LayerSpec(f"Conv{c.rank}d", kwargs, node.inputs[:1], node.outputs[0],
                     ctx.name_for(node, node.inputs[1]), c.params, nodes=(node.describe(),))


def _conv_transpose_padding(ctx: _Context, node: Node, k, rank: int):
    """PyTorch's (padding pairs, output_padding) for an ONNX ConvTranspose."""
    attrs = node.attrs
    auto_pad = ops._auto_pad(attrs.get("auto_pad"), node.op_type)
    extra = ops._ints(attrs.get("output_padding"), rank, "output_padding", node.op_type, 0)
    if attrs.get("output_shape") is None and auto_pad in ("NOTSET", "VALID"):
        pads = attrs.get("pads") if auto_pad == "NOTSET" else None
        return ops._pad_pairs(pads, rank, node.op_type), extra
    size = ctx.spatial(node)
    if size is None:
        raise UnsupportedOperator(f"{node.describe()}: output_shape or auto_pad needs the "
                                  f"input's spatial size, which shape inference could not tell")
    _, crops = ops.conv_transpose_geometry(
        size, k, auto_pad=attrs.get("auto_pad"), dilations=attrs.get("dilations"),
        output_padding=extra, output_shape=attrs.get("output_shape"), strides=attrs.get("strides"))
    if any(lo < 0 for lo, _ in crops):
        raise UnsupportedOperator(f"{node.describe()}: an output that starts before the "
                                  f"transposed convolution's extent has no npconv layer")
    return tuple((lo, max(hi, 0)) for lo, hi in crops), tuple(max(-hi, 0) for _, hi in crops)


def _conv_transpose(ctx: _Context, i: int, node: Node) -> LayerSpec:
    c = _weighted(ctx, node)
    padding, output_padding = _conv_transpose_padding(ctx, node, c.kernel_size, c.rank)
    kwargs = dict(in_channels=c.w.shape[0], out_channels=c.w.shape[1] * c.groups,
                  kernel_size=c.kernel_size, stride=c.stride, padding=padding,
                  output_padding=output_padding, dilation=c.dilation, groups=c.groups,
                  bias="bias" in c.params, data_format=ctx.data_format)
    return LayerSpec(f"ConvTranspose{c.rank}d", kwargs, node.inputs[:1], node.outputs[0],
                     ctx.name_for(node, node.inputs[1]), c.params, nodes=(node.describe(),))


def _batch_norm(ctx: _Context, i: int, node: Node) -> LayerSpec:
    scale, bias, mean, var = (ctx.constant(node, j, what) for j, what in
                              enumerate(("scale", "B", "mean", "var"), start=1))
    if len([o for o in node.outputs if o]) > 1 or node.attrs.get("spatial", 1) != 1:
        raise UnsupportedOperator(f"{node.describe()}: only inference-form batch normalization "
                                  f"(one output, spatial) becomes a BatchNorm layer")
    rank = ctx.graph.rank(node.inputs[0])
    layer = "BatchNorm1d" if rank in (2, 3) else f"BatchNorm{(rank or 4) - 2}d"
    kwargs = dict(num_features=scale.shape[0], eps=float(node.attrs.get("epsilon", 1e-5)),
                  momentum=1 - float(node.attrs.get("momentum", 0.9)))
    if rank != 2:
        kwargs["data_format"] = ctx.data_format
    return LayerSpec(layer, kwargs, node.inputs[:1], node.outputs[0],
                     ctx.name_for(node, node.inputs[1]), {"weight": scale, "bias": bias},
                     {"running_mean": mean, "running_var": var}, nodes=(node.describe(),))


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------


def _pool(ctx: _Context, node: Node, layer: str, **extra) -> LayerSpec:
    rank = ctx.graph.rank(node.inputs[0])
    k = node.attrs.get("kernel_shape")
    if k is None or rank is None or len(k) != rank - 2:
        raise UnsupportedOperator(f"{node.describe()}: needs `kernel_shape` and an input of "
                                  f"known rank (N, C, *S) with len(S) == len(kernel_shape)")
    k = tuple(k)
    strides, dilations = _geometry(node, len(k))
    padding = _pairs_or_same(ctx, node, k, strides, dilations, len(k))
    auto = ops._auto_pad(node.attrs.get("auto_pad"), node.op_type) != "NOTSET"
    kwargs = dict(kernel_size=k, stride=strides, padding=padding,
                  ceil_mode=bool(node.attrs.get("ceil_mode", 0)) and not auto, **extra,
                  data_format=ctx.data_format)
    if any(d != 1 for d in dilations):
        kwargs["dilation"] = dilations
    return LayerSpec(f"{layer}{len(k)}d", kwargs, node.inputs[:1], node.outputs[0],
                     ctx.name_for(node, None), nodes=(node.describe(),))


def _max_pool(ctx: _Context, i: int, node: Node) -> LayerSpec:
    if len(node.outputs) > 1 and node.outputs[1] and ctx.graph.readers(node.outputs[1]):
        raise UnsupportedOperator(f"{node.describe()}: MaxPool's Indices output has no "
                                  f"npconv layer")
    return _pool(ctx, node, "MaxPool")


def _average_pool(ctx: _Context, i: int, node: Node) -> LayerSpec:
    return _pool(ctx, node, "AvgPool",
                 count_include_pad=bool(node.attrs.get("count_include_pad", 0)))


def _flattens_channels(ctx: _Context, node: Node) -> Node | None:
    """The Flatten(axis=1) or Reshape to (N, C) that is the only reader of a globally pooled
    (N, C, 1, ..., 1) value, if there is one."""
    readers = ctx.graph.readers(node.outputs[0])
    if len(readers) != 1 or node.outputs[0] in ctx.graph.outputs:
        return None
    r = readers[0]
    if r.op_type == "Flatten" and r.attrs.get("axis", 1) == 1:
        return r
    if r.op_type == "Reshape" and r.inputs[1] in ctx.graph.constants:
        target = ctx.graph.constants[r.inputs[1]].tolist()
        return r if _flattens(target, ctx.graph.shapes.get(node.outputs[0])) else None
    return None


def _flattens(target: list[int], shape: tuple | None) -> bool:
    """Whether Reshape(target) of a value of `shape` is a Flatten(axis=1): (N, K) with N
    kept (0, -1 or N itself) and K = -1 or the product of the other sizes."""
    if len(target) != 2 or target.count(-1) > 1:
        return False
    if shape is None:
        return target[0] in (0, -1) and target[1] == -1
    batch = target[0] in (0, -1) or target[0] == shape[0]
    known = all(isinstance(v, int) for v in shape[1:])
    return batch and (target[1] == -1 or (known and target[1] == math.prod(shape[1:])))


def _global_pool(ctx: _Context, i: int, node: Node, layer: str) -> LayerSpec:
    """GlobalAveragePool / GlobalMaxPool / ReduceMean over space, (N, C, *S) -> (N, C) when
    a Flatten or Reshape to (N, C) follows (folded in), or when ReduceMean drops the axes."""
    flat = _flattens_channels(ctx, node)
    keeps = node.op_type != "ReduceMean" or node.attrs.get("keepdims", 1)
    if keeps and flat is None:
        raise UnsupportedOperator(f"{node.describe()}: a global pooling whose (N, C, 1, 1) "
                                  f"output is used as a map (not flattened to (N, C)) has no "
                                  f"npconv layer")
    output = node.outputs[0]
    if flat is not None:
        ctx.folded.add(ctx.graph.nodes.index(flat))
        output = flat.outputs[0]
    kwargs = {"data_format": ctx.data_format}
    nodes = (node.describe(), *((flat.describe(),) if flat else ()))
    return LayerSpec(layer, kwargs, node.inputs[:1], output, ctx.name_for(node, None),
                     nodes=nodes)


def _global_average_pool(ctx: _Context, i: int, node: Node) -> LayerSpec:
    return _global_pool(ctx, i, node, "GlobalAvgPool")


def _global_max_pool(ctx: _Context, i: int, node: Node) -> LayerSpec:
    return _global_pool(ctx, i, node, "GlobalMaxPool")


def _reduce_mean(ctx: _Context, i: int, node: Node) -> LayerSpec:
    rank = ctx.graph.rank(node.inputs[0])
    axes = node.attrs.get("axes")
    if axes is None and len(node.inputs) > 1 and node.inputs[1]:
        axes = ctx.constant(node, 1, "axes").tolist()
    if rank is None or axes is None or sorted(a % rank for a in axes) != list(range(2, rank)):
        raise UnsupportedOperator(f"{node.describe()}: only a mean over every spatial axis "
                                  f"(a global average pool) has an npconv layer; got axes "
                                  f"{axes} of a rank-{rank} value")
    return _global_pool(ctx, i, node, "GlobalAvgPool")


# ---------------------------------------------------------------------------------------------
# Linear layers and reshaping
# ---------------------------------------------------------------------------------------------


def _linear(ctx: _Context, node: Node, x: str, weight: np.ndarray, bias, output: str,
            nodes: tuple[str, ...], param: str | None) -> LayerSpec:
    """Linear from a PyTorch-layout weight (out, in)."""
    kwargs = dict(in_features=weight.shape[1], out_features=weight.shape[0],
                  bias=bias is not None)
    params = {"weight": weight, **({"bias": bias} if bias is not None else {})}
    return LayerSpec("Linear", kwargs, (x,), output, ctx.name_for(node, param), params,
                     nodes=nodes)


def _gemm(ctx: _Context, i: int, node: Node) -> LayerSpec:
    a = node.attrs
    if a.get("transA", 0):
        raise UnsupportedOperator(f"{node.describe()}: Gemm with transA=1 has no npconv layer")
    w = ctx.constant(node, 1, "B") * float(a.get("alpha", 1.0))
    w = w if a.get("transB", 0) else w.T                          # (out, in)
    c = ctx.optional(node, 2)
    if c is not None:
        c = np.broadcast_to(c * float(a.get("beta", 1.0)), (w.shape[0],)).copy()
    return _linear(ctx, node, node.inputs[0], w, c, node.outputs[0], (node.describe(),),
                   node.inputs[1])


def _matmul(ctx: _Context, i: int, node: Node) -> LayerSpec:
    w = ctx.constant(node, 1, "second operand").T                  # (out, in)
    if w.ndim != 2:
        raise UnsupportedOperator(f"{node.describe()}: only a MatMul by a 2-d constant is a "
                                  f"Linear layer")
    add = _bias_add(ctx, node)
    if add is None:
        return _linear(ctx, node, node.inputs[0], w, None, node.outputs[0], (node.describe(),),
                       node.inputs[1])
    ctx.folded.add(ctx.graph.nodes.index(add))
    (other,) = (n for n in add.inputs if n != node.outputs[0])
    bias = np.broadcast_to(ctx.graph.constants[other], (w.shape[0],)).copy()
    return _linear(ctx, node, node.inputs[0], w, bias, add.outputs[0],
                   (node.describe(), add.describe()), node.inputs[1])


def _bias_add(ctx: _Context, node: Node) -> Node | None:
    """The Add of a constant that alone reads a MatMul's output, if there is one."""
    readers = ctx.graph.readers(node.outputs[0])
    if len(readers) != 1 or readers[0].op_type != "Add" or node.outputs[0] in ctx.graph.outputs:
        return None
    other = [n for n in readers[0].inputs if n != node.outputs[0]]
    return readers[0] if len(other) == 1 and other[0] in ctx.graph.constants else None


def _flatten_like(ctx: _Context, node: Node) -> LayerSpec | None:
    """Flatten (N, C, *S) -> (N, C * prod(S)) in ONNX's (PyTorch's) order, whatever the
    model's layout (npconv's Flatten takes `data_format`); an alias for an (N, F) value."""
    x, y = node.inputs[0], node.outputs[0]
    if ctx.graph.rank(x) == 2:
        ctx.aliases[y] = x
        return None
    return LayerSpec("Flatten", {"data_format": ctx.data_format}, (x,), y,
                     ctx.name_for(node, None), nodes=(node.describe(),))


def _flatten(ctx: _Context, i: int, node: Node) -> LayerSpec | None:
    if node.attrs.get("axis", 1) != 1:
        raise UnsupportedOperator(f"{node.describe()}: only Flatten(axis=1) has an npconv layer")
    return _flatten_like(ctx, node)


def _reshape(ctx: _Context, i: int, node: Node) -> LayerSpec | None:
    target = ctx.constant(node, 1, "shape").tolist()
    shape = ctx.graph.shapes.get(node.inputs[0], ctx.graph.inputs.get(node.inputs[0]))
    if _flattens(target, shape):
        return _flatten_like(ctx, node)
    if shape is not None and len(target) == len(shape) and all(
            t in (0, s) or (t == -1 and isinstance(s, int)) for t, s in zip(target, shape)):
        ctx.aliases[node.outputs[0]] = node.inputs[0]
        return None
    raise UnsupportedOperator(f"{node.describe()}: only a Reshape to (N, -1) or to the same "
                              f"shape has an npconv layer; got shape {target}")


# ---------------------------------------------------------------------------------------------
# Activations, merges and the rest
# ---------------------------------------------------------------------------------------------


def _simple(layer: str, **kwargs) -> Callable:
    def build(ctx: _Context, i: int, node: Node) -> LayerSpec:
        return LayerSpec(layer, dict(kwargs), node.inputs[:1], node.outputs[0],
                         ctx.name_for(node, None), nodes=(node.describe(),))
    return build


def _clip(ctx: _Context, i: int, node: Node) -> LayerSpec:
    bounds = [node.attrs.get("min"), node.attrs.get("max")]          # opset < 11
    for j in (1, 2):
        if len(node.inputs) > j and node.inputs[j]:
            bounds[j - 1] = float(ctx.constant(node, j, ("min", "max")[j - 1]))
    if bounds == [0.0, 6.0]:
        return _simple("ReLU6")(ctx, i, node)
    if bounds[0] == 0.0 and bounds[1] is None:
        return _simple("ReLU")(ctx, i, node)
    raise UnsupportedOperator(f"{node.describe()}: only Clip(0, 6) (ReLU6) and Clip(0) (ReLU) "
                              f"have npconv layers; got min={bounds[0]}, max={bounds[1]}")


def _leaky_relu(ctx: _Context, i: int, node: Node) -> LayerSpec:
    return _simple("LeakyReLU", negative_slope=float(node.attrs.get("alpha", 0.01)))(ctx, i, node)


def _hard_sigmoid(ctx: _Context, i: int, node: Node) -> LayerSpec:
    """ONNX's max(0, min(1, alpha * x + beta)) is PyTorch's Hardsigmoid for alpha = 1/6,
    beta = 0.5 (ONNX's defaults are 0.2 and 0.5)."""
    alpha, beta = node.attrs.get("alpha", 0.2), node.attrs.get("beta", 0.5)
    if not (np.isclose(alpha, 1 / 6, rtol=1e-6) and beta == 0.5):
        raise UnsupportedOperator(f"{node.describe()}: only HardSigmoid(alpha=1/6, beta=0.5) "
                                  f"(PyTorch's) has an npconv layer; got alpha={alpha}, "
                                  f"beta={beta}")
    return _simple("Hardsigmoid")(ctx, i, node)


def _axis(ctx: _Context, node: Node, axis: int) -> int | None:
    """An ONNX axis of the node's first input in the model's layout; None for the channel
    axis of a map (N, C, *S), which npconv's layers find from their `data_format`."""
    rank = ctx.graph.rank(node.inputs[0])
    if rank is None:
        raise UnsupportedOperator(f"{node.describe()}: needs its input's rank, which shape "
                                  f"inference could not tell")
    axis %= rank
    if rank > 2 and axis == 1:
        return None
    return axis - 1 if ctx.last and rank > 2 and axis > 1 else axis


def _add(ctx: _Context, i: int, node: Node) -> LayerSpec:
    if any(name in ctx.graph.constants for name in node.inputs):
        raise UnsupportedOperator(f"{node.describe()}: adding a constant has no npconv layer "
                                  f"(a MatMul + Add of a bias vector becomes Linear)")
    return LayerSpec("Add", {"inplace": True}, tuple(node.inputs), node.outputs[0],
                     ctx.name_for(node, None), nodes=(node.describe(),))


def _concat(ctx: _Context, i: int, node: Node) -> LayerSpec:
    if any(name in ctx.graph.constants for name in node.inputs):
        raise UnsupportedOperator(f"{node.describe()}: concatenating a constant has no npconv "
                                  f"layer")
    kwargs = {"axis": _axis(ctx, node, node.attrs["axis"]), "data_format": ctx.data_format}
    return LayerSpec("Concat", kwargs, tuple(node.inputs), node.outputs[0],
                     ctx.name_for(node, None), nodes=(node.describe(),))


def _softmax(ctx: _Context, i: int, node: Node) -> LayerSpec:
    default = -1 if ctx.graph.opset >= 13 else 1
    kwargs = {"axis": _axis(ctx, node, node.attrs.get("axis", default)),
              "data_format": ctx.data_format}
    return LayerSpec("Softmax", kwargs, node.inputs[:1], node.outputs[0],
                     ctx.name_for(node, None), nodes=(node.describe(),))


def _dropout(ctx: _Context, i: int, node: Node) -> LayerSpec:
    p = node.attrs.get("ratio", 0.5)
    if len(node.inputs) > 1 and node.inputs[1]:
        p = float(ctx.constant(node, 1, "ratio"))
    return _simple("Dropout", p=float(p))(ctx, i, node)


def _identity(ctx: _Context, i: int, node: Node) -> None:
    ctx.aliases[node.outputs[0]] = node.inputs[0]


NEAREST_MODES = {("asymmetric", "floor"), ("half_pixel", "round_prefer_floor"),
                 ("pytorch_half_pixel", "round_prefer_floor")}


def _resize(ctx: _Context, i: int, node: Node) -> LayerSpec:
    a = node.attrs
    modes = (a.get("coordinate_transformation_mode", "half_pixel"),
             a.get("nearest_mode", "round_prefer_floor"))
    scales = ctx.optional(node, 2)
    if a.get("mode", "nearest") != "nearest" or modes not in NEAREST_MODES or scales is None \
            or scales.size < 3 or any(s != 1 for s in scales[:2]) or \
            any(s != round(s) or s < 1 for s in scales[2:]):
        raise UnsupportedOperator(
            f"{node.describe()}: only a nearest-neighbour Resize by integer `scales` of the "
            f"spatial axes (coordinate/nearest modes {sorted(NEAREST_MODES)}) has an npconv "
            f"layer; got mode={a.get('mode')!r}, modes {modes}, scales {scales}")
    factor = tuple(int(s) for s in scales[2:])
    return _simple("Upsample", scale_factor=factor, mode="nearest",
                   data_format=ctx.data_format)(ctx, i, node)


SUPPORTED: dict[str, Callable] = {
    "Add": _add,
    "AveragePool": _average_pool,
    "BatchNormalization": _batch_norm,
    "Clip": _clip,
    "Concat": _concat,
    "Conv": _conv,
    "ConvTranspose": _conv_transpose,
    "Dropout": _dropout,
    "Flatten": _flatten,
    "Gemm": _gemm,
    "GlobalAveragePool": _global_average_pool,
    "GlobalMaxPool": _global_max_pool,
    "HardSigmoid": _hard_sigmoid,
    "HardSwish": _simple("Hardswish"),
    "Identity": _identity,
    "LeakyRelu": _leaky_relu,
    "MatMul": _matmul,
    "MaxPool": _max_pool,
    "ReduceMean": _reduce_mean,
    "Relu": _simple("ReLU"),
    "Reshape": _reshape,
    "Resize": _resize,
    "Sigmoid": _simple("Sigmoid"),
    "Softmax": _softmax,
    "Tanh": _simple("Tanh"),
}
"""ONNX op_type -> builder(context, node index, node) -> LayerSpec, or None for an alias."""


def plan(graph: Graph, data_format: str = "channels_last") -> Plan:
    """The npconv layers of `graph`, in order; `UnsupportedOperator` names the first node
    that has none (every unsupported op type is listed in the message)."""
    if data_format not in ("channels_last", "channels_first"):
        raise ValueError(f"`data_format` must be 'channels_last' or 'channels_first'; got "
                         f"{data_format!r}")
    missing = sorted({n.op_type for n in graph.nodes
                      if n.op_type not in SUPPORTED or n.domain not in ("", "ai.onnx")})
    if missing:
        first = next(n for n in graph.nodes if n.op_type in missing)
        raise UnsupportedOperator(
            f"no npconv layer for ONNX operator(s) {', '.join(missing)} (first: "
            f"{first.describe()}); supported: {', '.join(sorted(SUPPORTED))}")
    ctx = _Context(graph, data_format)
    layers = []
    for i, node in enumerate(graph.nodes):
        if i not in ctx.folded and (spec := SUPPORTED[node.op_type](ctx, i, node)) is not None:
            layers.append(spec)
    plan_ = Plan(layers, ctx.aliases, list(graph.inputs), list(graph.outputs), data_format)
    for spec in layers:
        spec.inputs = tuple(plan_.resolve(name) for name in spec.inputs)
    return plan_
