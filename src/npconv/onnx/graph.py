"""An ONNX model read as data: its nodes, its constants and its interface.

`read_graph` parses a model file (or a ModelProto) into a `Graph` of plain Python and NumPy
values, for the importer to map onto npconv layers. Nothing in the file is executed: the file
is a protobuf message parsed by the `onnx` package; initializers and Constant nodes become
arrays; tensors stored in external data files are read only from files inside the model's
folder, after their declared size is checked against the file and against the tensor's shape.
Shapes come from ONNX's shape inference where it can tell them.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

__all__ = ["Graph", "Node", "read_graph"]


@dataclass(frozen=True)
class Node:
    """One ONNX node: `op_type`, its name (may be empty), the value names it reads and writes
    (an empty name is an omitted optional input) and its attributes as Python values (ints,
    floats, str, lists of those, ndarrays)."""

    op_type: str
    name: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict[str, Any]
    domain: str = ""

    def describe(self) -> str:
        """'Conv node "conv1" (inputs x, conv1.weight)' for error messages."""
        name = f' "{self.name}"' if self.name else ""
        return f"{self.op_type} node{name} (inputs {', '.join(self.inputs) or 'none'})"


@dataclass
class Graph:
    """The main graph of an ONNX model.

    Attributes
    ----------
    nodes : list of Node
        In the file's (topological) order, Constant nodes folded into `constants`.
    constants : dict of str -> ndarray
        Initializers and Constant outputs.
    inputs : dict of str -> tuple or None
        The graph inputs that are not initializers, with their declared shapes (an int per
        known dimension, None or the symbol's name for a dynamic one; None for no shape).
    outputs : list of str
    shapes : dict of str -> tuple
        Every value's shape that shape inference could give (same convention as `inputs`).
    opset : int
        The version of the default ("ai.onnx") operator set.
    """

    nodes: list[Node]
    constants: dict[str, np.ndarray]
    inputs: dict[str, tuple | None]
    outputs: list[str]
    shapes: dict[str, tuple] = field(default_factory=dict)
    opset: int = 1

    def readers(self, name: str) -> list[Node]:
        """The nodes that read value `name`."""
        return [node for node in self.nodes if name in node.inputs]

    def producer(self, name: str) -> Node | None:
        """The node that writes value `name` (None for inputs and constants)."""
        return next((node for node in self.nodes if name in node.outputs), None)

    def rank(self, name: str) -> int | None:
        """The number of dimensions of value `name`, when known."""
        if name in self.constants:
            return self.constants[name].ndim
        shape = self.shapes.get(name, self.inputs.get(name))
        return None if shape is None else len(shape)


def _shape(type_proto) -> tuple | None:
    tensor = type_proto.tensor_type
    if not tensor.HasField("shape"):
        return None
    return tuple(d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
                 for d in tensor.shape.dim)


def _attribute(attr) -> Any:
    value = helper.get_attribute_value(attr)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _constant_value(node: Node) -> np.ndarray:
    """The output of a Constant node, whichever of its attributes holds it."""
    (key, value), = node.attrs.items()
    if key == "value":
        return value
    if key in ("value_float", "value_floats"):
        return np.array(value, dtype=np.float32)
    if key in ("value_int", "value_ints"):
        return np.array(value, dtype=np.int64)
    raise ValueError(f"{node.describe()}: a Constant given as `{key}` is not supported "
                     f"(value, value_float(s) and value_int(s) are)")


def _external_tensor(tensor, folder: Path) -> np.ndarray:
    """A tensor whose bytes live in a file next to the model: the file must be inside the
    model's folder and hold the bytes that the tensor's shape and dtype declare."""
    info = {e.key: e.value for e in tensor.external_data}
    path = (folder / info.get("location", "")).resolve()
    if folder.resolve() not in path.parents:
        raise ValueError(f"initializer {tensor.name!r}: external data location "
                         f"{info.get('location')!r} is outside the model's folder {folder}")
    dtype = np.dtype(helper.tensor_dtype_to_np_dtype(tensor.data_type)).newbyteorder("<")
    count = math.prod(tensor.dims)
    offset = int(info.get("offset", 0))
    length = int(info.get("length", count * dtype.itemsize))
    size = path.stat().st_size if path.is_file() else -1
    if length != count * dtype.itemsize or offset < 0 or offset + length > size:
        raise ValueError(
            f"initializer {tensor.name!r}: external data in {path.name} declares {length} bytes "
            f"at offset {offset}, shape {list(tensor.dims)} of {dtype.name} needs "
            f"{count * dtype.itemsize}, and the file has {max(size, 0)} bytes")
    return np.fromfile(path, dtype=dtype, count=count, offset=offset).reshape(tensor.dims)


def _initializer(tensor, folder: Path | None) -> np.ndarray:
    if tensor.data_location == onnx.TensorProto.EXTERNAL:
        if folder is None:
            raise ValueError(f"initializer {tensor.name!r} is stored in an external file: load "
                             f"the model from its path")
        return _external_tensor(tensor, folder)
    return numpy_helper.to_array(tensor)


def _load(model_or_path) -> tuple[onnx.ModelProto, Path | None]:
    if isinstance(model_or_path, onnx.ModelProto):
        return model_or_path, None
    if not isinstance(model_or_path, (str, os.PathLike)):
        raise TypeError(f"`model` must be an onnx.ModelProto or a path to a .onnx file; got "
                        f"{type(model_or_path).__name__}")
    path = Path(model_or_path)
    if not path.is_file():
        raise ValueError(f"no ONNX model file at {str(path)!r}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:                     # protobuf's DecodeError and friends
        raise ValueError(f"{str(path)!r} is not an ONNX model: {exc}") from exc
    return model, path.parent


def read_graph(model_or_path) -> Graph:
    """Parse an ONNX model (a ModelProto, or the path of a .onnx file) into a `Graph`.

    >>> import onnx.helper as oh, onnx
    >>> node = oh.make_node("Relu", ["x"], ["y"])
    >>> info = oh.make_tensor_value_info
    >>> model = oh.make_model(oh.make_graph([node], "g", [info("x", 1, ["N", 3])],
    ...                                    [info("y", 1, None)]))
    >>> g = read_graph(model)
    >>> g.nodes[0].op_type, g.inputs, g.shapes["y"]
    ('Relu', {'x': ('N', 3)}, ('N', 3))
    """
    model, folder = _load(model_or_path)
    g = model.graph
    constants = {t.name: _initializer(t, folder) for t in g.initializer}
    nodes = []
    for proto in g.node:
        node = Node(proto.op_type, proto.name, tuple(proto.input), tuple(proto.output),
                    {a.name: _attribute(a) for a in proto.attribute}, proto.domain)
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            constants[node.outputs[0]] = _constant_value(node)
        else:
            nodes.append(node)
    inputs = {v.name: _shape(v.type) for v in g.input if v.name not in constants}
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 1)
    return Graph(nodes, constants, inputs, [v.name for v in g.output], _inferred_shapes(model),
                 opset)


def _inferred_shapes(model: onnx.ModelProto) -> dict[str, tuple]:
    """Shapes of every value ONNX's shape inference can tell (none if it fails)."""
    try:
        inferred = onnx.shape_inference.infer_shapes(model)
    except Exception:                            # an exotic model: shapes stay unknown
        return {}
    g = inferred.graph
    values = [*g.input, *g.value_info, *g.output]
    return {v.name: s for v in values if (s := _shape(v.type)) is not None}
