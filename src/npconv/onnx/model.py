"""`to_model`: an ONNX graph as a trainable npconv model.

`to_model(path)` reads the file as data (`npconv.onnx.graph`), maps its nodes onto npconv
layers (`npconv.onnx.mapping`), builds each layer with its ONNX weights (loaded through
`load_state_dict`, in PyTorch's layout and names) and returns a `GraphModel`: an
`npconv.nn.Module` whose forward calls those layers in the graph's order. Its backward is the
Module's, derived from the recorded layer calls, so the model fine-tunes with
`npconv.training.fit` like any npconv model, and its `state_dict()` has the names the exporter
gave the weights (PyTorch's, for a model exported by torch.onnx.export).
"""

from __future__ import annotations

import inspect
from collections import Counter

from npconv import nn
from npconv.onnx import layers as onnx_layers
from npconv.onnx.graph import read_graph
from npconv.onnx.mapping import LayerSpec, Plan, UnsupportedOperator, plan

__all__ = ["GraphModel", "to_model"]


class _Copy(nn.Layer):
    """y = a copy of x; dy passes through (see `GraphModel.forward`)."""

    def forward(self, x, training: bool = False):
        self._start(training, True)
        return x.copy()

    def backward(self, dy):
        self._saved()
        return dy


def _may_overwrite(layer) -> bool:
    """Whether the layer may write its output into an input array that the running forward
    made (`nn.can_overwrite`): those built with inplace=True (the importer's Adds)."""
    return bool(getattr(layer, "inplace", False))


class GraphModel(nn.Module):
    """A Module that runs a fixed graph of its children: `steps` lists, in order, each call as
    [child name, [names of the values it reads], name of the value it writes]; `inputs` names
    forward's arguments and `output` the value it returns.

    Children have the dotted names of their weights ("layer1.0.conv1"): reach one with
    `getattr(model, "layer1.0.conv1")`, replace a head with `setattr(model, "fc", layer)`.

    Forward code written by hand passes a value to a layer with inplace=True (the importer's
    Adds, see `npconv.nn.can_overwrite`) only at its last use; a graph may read a value after
    such a layer did, so such a layer gets a copy of any value that is read again later
    (exported conv nets have none: their Adds come last).
    """

    def __init__(self, steps: list, inputs: list, output: str) -> None:
        super().__init__()
        self.steps = [(str(name), tuple(reads), str(writes)) for name, reads, writes in steps]
        self.inputs, self.output = [str(name) for name in inputs], str(output)
        self._shared = self._shared_reads()

    def config(self) -> dict:
        return dict(steps=[[n, list(r), w] for n, r, w in self.steps], inputs=self.inputs,
                    output=self.output)

    def _shared_reads(self) -> list[tuple[bool, ...]]:
        """Per step and argument: whether the value is read again later (or returned), by a
        later step or later in the same call."""
        last = {self.output: len(self.steps)}
        shared = []
        for i in reversed(range(len(self.steps))):
            flags = []
            for name in reversed(self.steps[i][1]):
                flags.append(name in last)
                last.setdefault(name, i)
            shared.append(tuple(reversed(flags)))
        return shared[::-1]

    def forward(self, *xs):
        if len(xs) != len(self.inputs):
            raise TypeError(f"GraphModel.forward takes {len(self.inputs)} array(s) "
                            f"({', '.join(self.inputs)}); got {len(xs)}")
        values = dict(zip(self.inputs, xs))
        copy = _Copy()
        for (name, reads, writes), shared in zip(self.steps, self._shared):
            layer = getattr(self, name)
            guard = _may_overwrite(layer)
            args = (copy(values[r]) if guard and later else values[r]
                    for r, later in zip(reads, shared))
            values[writes] = layer(*args)
        return values[self.output]


def _layer_class(spec: LayerSpec) -> type:
    cls = getattr(nn, spec.layer, None) or getattr(onnx_layers, spec.layer, None)
    if cls is None:
        raise UnsupportedOperator(f"no npconv layer {spec.layer!r} for {', '.join(spec.nodes)}")
    return cls


def _build(spec: LayerSpec):
    """The layer of `spec` with its weights."""
    cls = _layer_class(spec)
    kwargs = dict(spec.kwargs)
    weights = {**spec.params, **spec.buffers}
    if weights and "dtype" in inspect.signature(cls).parameters:
        kwargs["dtype"] = next(iter(weights.values())).dtype.name
    layer = cls(**kwargs)
    missing, unexpected = layer.load_state_dict(weights, strict=False)
    if unexpected or [k for k in missing if k != "num_batches_tracked"]:
        raise ValueError(f"{spec.layer} for {', '.join(spec.nodes)}: weights {sorted(weights)} "
                         f"do not fit its state_dict {sorted(layer.state_dict())}")
    return layer


def _children_order(p: Plan) -> list[LayerSpec]:
    """The layers in the order they become children. `eval()` folds a BatchNorm into the
    convolution registered just before it, which is right only when the batch norm is that
    convolution's only reader; a BatchNorm that would follow another convolution goes first
    instead (the order of children changes nothing else but the state_dict's key order)."""
    readers = Counter(name for spec in p.layers for name in spec.inputs)
    readers.update(p.resolve(name) for name in p.outputs)
    front: list[LayerSpec] = []
    order: list[LayerSpec] = []
    for spec in p.layers:
        after_conv = order and order[-1].layer.startswith("Conv")
        if spec.layer.startswith("BatchNorm") and after_conv and not (
                spec.inputs[0] == order[-1].output and readers[order[-1].output] == 1):
            front.append(spec)
        else:
            order.append(spec)
    return front + order


def to_model(model_or_path, *, data_format: str = "channels_last") -> GraphModel:
    """An npconv model computing what an ONNX model computes, trainable.

    Parameters
    ----------
    model_or_path : str, os.PathLike or onnx.ModelProto
        One output (the graph's inputs become forward's arguments, in order); its operators
        those `npconv.onnx.mapping.SUPPORTED` lists.
    data_format : "channels_last" or "channels_first"
        The layout of the model's activations. channels_last (npconv's fast path) takes the
        ONNX input transposed once, (N, *S, C) for ONNX's (N, C, *S).

    Raises
    ------
    UnsupportedOperator (a ValueError)
        Naming every operator, attribute or pattern that has no npconv layer.
    """
    p = plan(read_graph(model_or_path), data_format)
    if len(p.outputs) != 1:
        raise UnsupportedOperator(f"an npconv model returns one array; the graph has "
                                  f"{len(p.outputs)} outputs {p.outputs}")
    model = GraphModel([(s.name, s.inputs, s.output) for s in p.layers], p.inputs,
                       p.resolve(p.outputs[0]))
    for spec in _children_order(p):
        setattr(model, spec.name, _build(spec))
    return model
