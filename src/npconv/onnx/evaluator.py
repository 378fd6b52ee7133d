"""`Evaluator`: ONNX's reference evaluator with npconv computing the conv-net operators.

`onnx.reference.ReferenceEvaluator` runs any ONNX model in NumPy, one Python class per operator;
its pooling loops over output positions in Python and its ConvTranspose over images and
channels. `Evaluator` is that evaluator with the classes of Conv, ConvTranspose, MaxPool,
AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool and BatchNormalization replaced through
its `new_ops` hook by classes that call `npconv.onnx.ops`; every other operator, subgraph and
function runs as in ONNX's evaluator. A node that npconv does not cover (an opset's semantics it
does not implement, or an input dtype npconv does not compute, such as bfloat16) is handed to
ONNX's own class for that node, and `Evaluator.delegated` says which and why.
"""

from __future__ import annotations

import contextvars
import os
from typing import Any, ClassVar

import numpy as np
from onnx.reference import ReferenceEvaluator
from onnx.reference.op_run import OpRun
from onnx.reference.ops import load_op

from npconv import _args, _chunks, _config, _workspace
from npconv.onnx import ops

__all__ = ["NPCONV_OPERATORS", "Evaluator"]

FLOATS = (np.dtype(np.float16), np.dtype(np.float32), np.dtype(np.float64))
_FRESH_ONNX = frozenset({"Add", "Sub", "Mul", "Div", "Relu"})   # ONNX's: always new arrays
MAX_POOL_DTYPES = (*FLOATS, np.dtype(np.int8), np.dtype(np.uint8))


class _NpconvOp(OpRun):
    """An ONNX operator computed by npconv, or by ONNX's own class where npconv does not cover
    the node. Subclasses are named after the operator (the `new_ops` hook keys on the class
    name) and define `_run` with the operator's inputs and attributes."""

    op_domain = ""
    dtypes: ClassVar[tuple[np.dtype, ...]] = FLOATS

    def __init__(self, onnx_node, run_params: dict[str, Any], schema: Any = None) -> None:
        super().__init__(onnx_node, run_params, schema)
        self._opset = int(run_params["opsets"].get(onnx_node.domain, 1))
        self._static_reason = self._unsupported()
        self._reason: str | None = self._static_reason
        self._onnx_impl: OpRun | None = None

    def _unsupported(self) -> str | None:
        """Why npconv does not compute this node whatever its inputs (None: it does)."""
        return None

    def _dtype_reason(self, args) -> str | None:
        x = args[0] if args else None
        if isinstance(x, np.ndarray) and x.dtype not in self.dtypes:
            return f"input dtype {x.dtype}"
        return None

    def _onnx(self) -> OpRun:
        if self._onnx_impl is None:
            cls = load_op(self.onnx_node.domain, self.onnx_node.op_type, self._opset)
            self._onnx_impl = cls(self.onnx_node, self.run_params)
        return self._onnx_impl

    def run(self, *args, **kwargs):
        self._reason = self._static_reason or self._dtype_reason(args)
        if self._reason is not None:
            return self._onnx().run(*args, **kwargs)
        return super().run(*args, **kwargs)

    @property
    def wants_indices(self) -> bool:
        """Whether the node asks for its second output (MaxPool's Indices)."""
        return len(self.output) > 1 and self.output[1] != ""


class _WeightedOp(_NpconvOp):
    """Conv and ConvTranspose: a weight that is a graph constant (an initializer) is converted
    to npconv's layout once, when the evaluator loads the model, instead of on every run."""

    _weight: tuple[np.ndarray, np.ndarray] | None = None

    def prepare(self, constants: dict[str, Any]) -> None:
        w = constants.get(self.input[1]) if len(self.input) > 1 else None
        if isinstance(w, np.ndarray) and w.ndim >= 3 and w.dtype in self.dtypes:
            self._weight = (w, ops.weight_last(w))               # (the initializer, its copy)

    def w_last(self, w) -> np.ndarray | None:
        """The converted weight, if `w` is the very initializer it was converted from (a feed
        may override an initializer's name)."""
        return self._weight[1] if self._weight is not None and self._weight[0] is w else None


_CLIP: contextvars.ContextVar[tuple | None] = contextvars.ContextVar("npconv_onnx_clip",
                                                                     default=None)
"""The fused Relu or Clip of the Conv that `Conv.run_clipped` runs (per thread: two runs of one
evaluator at once may fuse differently)."""


class Conv(_WeightedOp):
    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             pads=None, strides=None):
        return (ops.conv(x, w, b, auto_pad=auto_pad, dilations=dilations, group=group or 1,
                         kernel_shape=kernel_shape, pads=pads, strides=strides,
                         w_last=self.w_last(w), clip=_CLIP.get()),)

    def run_clipped(self, clip: tuple, *args):
        """`run`, the output clipped to clip = (lo, hi) (None: no bound) as np.clip does: by
        npconv chunk by chunk, or after ONNX's class computed the node."""
        token = _CLIP.set(clip)
        try:
            (y,) = self.run(*args)
        finally:
            _CLIP.reset(token)
        return (y,) if self._reason is None else (np.clip(y, *clip).astype(y.dtype, copy=False),)


class ConvTranspose(_WeightedOp):
    def _run(self, x, w, b=None, auto_pad=None, dilations=None, group=None, kernel_shape=None,
             output_padding=None, output_shape=None, pads=None, strides=None):
        return (ops.conv_transpose(x, w, b, auto_pad=auto_pad, dilations=dilations,
                                   group=group or 1, kernel_shape=kernel_shape,
                                   output_padding=output_padding, output_shape=output_shape,
                                   pads=pads, strides=strides, w_last=self.w_last(w)),)


class MaxPool(_NpconvOp):
    dtypes = MAX_POOL_DTYPES

    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None,
             pads=None, storage_order=None, strides=None):
        out = ops.max_pool(x, auto_pad=auto_pad, ceil_mode=ceil_mode or 0, dilations=dilations,
                           kernel_shape=kernel_shape, pads=pads,
                           storage_order=storage_order or 0, strides=strides,
                           indices=self.wants_indices)
        return out if isinstance(out, tuple) else (out,)


class AveragePool(_NpconvOp):
    def _run(self, x, auto_pad=None, ceil_mode=None, count_include_pad=None, dilations=None,
             kernel_shape=None, pads=None, strides=None):
        return (ops.average_pool(x, auto_pad=auto_pad, ceil_mode=ceil_mode or 0,
                                 count_include_pad=count_include_pad or 0, dilations=dilations,
                                 kernel_shape=kernel_shape, pads=pads, strides=strides),)


class LpPool(_NpconvOp):
    def _run(self, x, auto_pad=None, ceil_mode=None, dilations=None, kernel_shape=None, p=None,
             pads=None, strides=None):
        return (ops.lp_pool(x, auto_pad=auto_pad, ceil_mode=ceil_mode or 0, dilations=dilations,
                            kernel_shape=kernel_shape, p=2 if p is None else p, pads=pads,
                            strides=strides),)


class GlobalAveragePool(_NpconvOp):
    def _run(self, x):
        return (ops.global_average_pool(x),)


class GlobalMaxPool(_NpconvOp):
    def _run(self, x):
        return (ops.global_max_pool(x),)


class BatchNormalization(_NpconvOp):
    """Opsets 14 and later as their doc says; before 14, the inference form (one output,
    spatial statistics, is_test set where the opset has it); other forms go to ONNX's class."""

    def _unsupported(self) -> str | None:
        if self._opset >= 14:
            return None
        if len([o for o in self.output if o]) > 1:
            return f"training outputs of opset {self._opset}"
        if getattr(self, "spatial", 1) != 1:
            return "spatial=0"
        if self._opset < 7 and not getattr(self, "is_test", 0):
            return f"is_test=0 in opset {self._opset}"
        return None

    def _run(self, x, scale, bias, mean, var, epsilon=None, momentum=None, training_mode=None,
             **legacy):
        out = ops.batch_normalization(
            x, scale, bias, mean, var, epsilon=1e-5 if epsilon is None else epsilon,
            momentum=0.9 if momentum is None else momentum, training_mode=training_mode or 0)
        return out if isinstance(out, tuple) else (out,)


NPCONV_OPERATORS: tuple[type[OpRun], ...] = (
    AveragePool, BatchNormalization, Conv, ConvTranspose, GlobalAveragePool, GlobalMaxPool,
    LpPool, MaxPool,
)
"""The operator classes `Evaluator` passes to ONNX's evaluator as `new_ops`."""


class Evaluator(ReferenceEvaluator):
    """Run an ONNX model like `onnx.reference.ReferenceEvaluator`, with npconv computing Conv,
    ConvTranspose, MaxPool, AveragePool, LpPool, GlobalAveragePool, GlobalMaxPool and
    BatchNormalization.

    Outputs have ONNX's shapes and dtypes; those of npconv's operators are views of
    channels_last memory (see `npconv.onnx.ops`), writable, not always C-contiguous. Constant
    Conv and ConvTranspose weights are kept a second time, in npconv's layout.

    Parameters
    ----------
    proto : onnx.ModelProto, GraphProto, FunctionProto or NodeProto, a path or bytes
        What `ReferenceEvaluator` takes; a path may also be a `pathlib.Path`.
    opsets, functions, verbose, **kwargs
        Passed to `ReferenceEvaluator`.
    new_ops : list of OpRun classes, optional
        Your own operator classes; they take precedence over npconv's.

    Examples
    --------
    >>> import numpy as np, onnx.helper as oh, onnx
    >>> node = oh.make_node("MaxPool", ["X"], ["Y"], kernel_shape=[2, 2], strides=[2, 2])
    >>> graph = oh.make_graph([node], "g",
    ...     [oh.make_tensor_value_info("X", onnx.TensorProto.FLOAT, [1, 1, 4, 4])],
    ...     [oh.make_tensor_value_info("Y", onnx.TensorProto.FLOAT, None)])
    >>> ev = Evaluator(oh.make_model(graph))
    >>> ev.run(None, {"X": np.arange(16, dtype=np.float32).reshape(1, 1, 4, 4)})[0][0, 0]
    array([[ 5.,  7.],
           [13., 15.]], dtype=float32)
    >>> ev.delegated
    {}
    """

    def __init__(self, proto: Any, opsets: dict[str, int] | None = None,
                 functions: list | None = None, verbose: int = 0,
                 new_ops: list[type[OpRun]] | None = None, **kwargs: Any) -> None:
        if isinstance(proto, os.PathLike):
            proto = os.fspath(proto)
        super().__init__(proto, opsets=opsets, functions=functions, verbose=verbose,
                         new_ops=[*(new_ops or []), *NPCONV_OPERATORS], **kwargs)
        for node in self.rt_nodes_:
            if isinstance(node, _WeightedOp):
                node.prepare(self.rt_inits_)
        self._last_uses = self._find_last_uses()
        self._fused = self._find_fusions()
        self._recyclables: dict[tuple, frozenset[str]] = {}     # (fused, wanted) -> names

    def run(self, output_names, feed_inputs: dict[str, Any],
            attributes: dict[str, Any] | None = None, intermediate: bool = False,
            check_shape_annotations: bool | None = None, _bindings: Any = None,
            ) -> dict[str, Any] | list[Any]:
        """`ReferenceEvaluator.run`: the requested outputs (None: all) for `feed_inputs`.

        ONNX's loop keeps every intermediate value until the end; for a plain run of a graph
        (no function attributes, no intermediates asked for, no shape-annotation checks, no
        node that reads the enclosing scope) this one drops each value after its last use, so
        that memory peaks at a few activations. The memory of a dropped value that only
        npconv's operators (and ONNX's Add, Sub, Mul, Div and Relu) made and read goes to
        npconv's workspace pool, where the results of later nodes, and of the next run, take
        it instead of page-faulting fresh memory (MobileNetV2 at batch 8: 2,650-3,160 faults a
        run before, 4-5 after). Between runs the pool keeps at most the workspace limit
        (`npconv.config(workspace=)`); `npconv.release_workspace()` frees it. Other runs are
        ONNX's own.
        """
        passed = {"check_shape_annotations": check_shape_annotations, "_bindings": _bindings}
        extra: dict[str, Any] = {k: v for k, v in passed.items() if v is not None}
        if (attributes is not None or intermediate or extra or self.onnx_graph_ is None
                or getattr(self, "check_shape_annotations_", False)
                or any(node.need_context() for node in self.rt_nodes_)):
            return super().run(output_names, feed_inputs, attributes=attributes,
                               intermediate=intermediate, **extra)
        wanted = self.output_names if output_names is None else list(output_names)
        results = {"": None, **self.rt_inits_, **feed_inputs}
        with _chunks.network_pass(next(iter(feed_inputs.values()), None)), \
                _workspace.pooled_results(_config.resolve()):
            self._run_nodes(results, wanted, sorted(feed_inputs))
        missing = [name for name in wanted if name not in results]
        if missing:
            raise RuntimeError(f"Unable to find output name {missing[0]!r}: the graph has "
                               f"outputs {self.output_names}")
        return [results[name] for name in wanted]

    def _run_nodes(self, results: dict[str, Any], wanted: list[str], feeds: list[str]) -> None:
        """Every node in order, its outputs into `results`, each value dropped after its last
        reader unless it is `wanted`."""
        fed = set(feeds)
        fused = {i: bounds for i, (bounds, j) in self._fused.items()      # not if the Conv's
                 if self.rt_nodes_[i].output[0] not in wanted               # output is asked for
                 and fed.isdisjoint(self.rt_nodes_[j].input[1:])}           # or a bound is fed
        clipped = {self._fused[i][1] for i in fused}
        key = (tuple(fused), tuple(wanted))
        if key not in self._recyclables:
            _args.remember(self._recyclables, key, frozenset(self._recyclable(fused, wanted)),
                           most=16)
        recyclable = set(self._recyclables[key])
        for i, node in enumerate(self.rt_nodes_):
            missing = [name for name in node.input if name not in results]
            if missing:
                raise RuntimeError(f"Unable to find input {missing[0]!r} of node "
                                   f"{node.op_type!r}: neither a feed, an initializer nor the "
                                   f"output of an earlier node (feeds: {feeds})")
            args = [results[name] for name in node.input]
            if i in clipped:                             # the Conv before applied this node
                outputs = (args[0],)
            elif i in fused:
                outputs = node.run_clipped(fused[i], *args)
            else:
                outputs = node.run(*args)
            results.update((name, v) for name, v in zip(node.output, outputs) if name)
            if isinstance(node, _NpconvOp) and (node._static_reason
                                                or node._dtype_reason(args)) is not None:
                recyclable.difference_update((*node.input, *node.output))  # ONNX's class ran
            for name in self._last_uses.get(i, ()):
                if name not in wanted:
                    value = results.pop(name, None)
                    if name in recyclable:
                        _workspace.recycle(value)

    def _recyclable(self, fused: dict[int, tuple], wanted: list[str]) -> set[str]:
        """The values whose memory nothing can read once they are dropped: made by one of
        npconv's operators (its first output) or by ONNX's Add, Sub, Mul, Div or Relu (NumPy
        ufuncs: new arrays), read only by such nodes (none of which returns or keeps a view of an
        input), and not asked for. A Conv with a fused activation counts as the maker of the
        activation's output, the same array, and its own output, which that name outlives, is
        never recycled. `_run_nodes` drops the names of a node that ONNX's class ran instead."""
        def fresh(node) -> bool:
            return isinstance(node, _NpconvOp) or (
                node.op_type in _FRESH_ONNX and not node.domain
                and type(node).__module__.startswith("onnx.reference.ops."))

        skipped = {j: i for i, (_, j) in self._fused.items() if i in fused}
        made: dict[str, int] = {}
        readers: dict[str, list[int]] = {}
        for j, node in enumerate(self.rt_nodes_):
            for name in node.input:
                readers.setdefault(name, []).append(j)
            if node.output and node.output[0]:
                made[node.output[0]] = skipped.get(j, j)
        aliased = {self.rt_nodes_[i].output[0] for i in skipped.values()}
        return {name for name, j in made.items()
                if name not in wanted and name not in aliased
                and fresh(self.rt_nodes_[j])
                and all(fresh(self.rt_nodes_[r]) for r in readers.get(name, ()))}

    def _find_last_uses(self) -> dict[int, list[str]]:
        """Node index -> the values whose last reader it is (node outputs that nothing reads
        are dropped after the node that makes them)."""
        final: dict[str, int] = {}
        for i, node in enumerate(self.rt_nodes_):
            for name in (*node.input, *node.output):
                final[name] = i
        last: dict[int, list[str]] = {}
        for name, i in final.items():
            if name:
                last.setdefault(i, []).append(name)
        return last

    def _find_fusions(self) -> dict[int, tuple[tuple, int]]:
        """{Conv node index: ((lo, hi), the activation node's index)} for every Conv of
        npconv's whose output one Relu, or one Clip with constant bounds, reads and nothing
        else (no other node, not the graph's outputs): `run` has the Conv clip its output in
        cache (`npconv.conv(..., clip=)`, the bits of ONNX's np.clip) and skips the activation
        node, unless the run asks for the Conv's output by name or feeds a value for a bound
        (a feed may override an initializer). ONNX's own loop (intermediate values, function
        attributes) runs both as written."""
        readers: dict[str, list[int]] = {}
        for j, node in enumerate(self.rt_nodes_):
            for name in node.input:
                readers.setdefault(name, []).append(j)
        fused: dict[int, tuple[tuple, int]] = {}
        for i, node in enumerate(self.rt_nodes_):
            if not isinstance(node, Conv) or node._static_reason is not None:
                continue
            out = node.output[0]
            if out in self.output_names or len(readers.get(out, ())) != 1:
                continue
            j = readers[out][0]
            bounds = self._clip_bounds(self.rt_nodes_[j], out)
            if bounds is not None and j > i:
                fused[i] = (bounds, j)
        return fused

    def _clip_bounds(self, node, x_name: str) -> tuple | None:
        """(lo, hi) of a Relu or of a Clip (opset >= 11) whose bounds are absent or scalar
        initializers, reading x_name first, as Python numbers (hashable: `npconv.conv` keeps
        its plan by its arguments); None for any other node."""
        if node.domain or not node.input or node.input[0] != x_name:
            return None
        if node.op_type == "Relu":
            return (0, None)
        if node.op_type != "Clip" or int(self.opsets.get("", 1)) < 11:
            return None
        bounds = []
        for name in (*node.input[1:3], "", "")[:2]:
            value = self.rt_inits_.get(name) if name else None
            if name and (not isinstance(value, np.ndarray) or value.size != 1
                         or value.dtype.kind not in "iuf" or np.isnan(value).any()):
                return None                                # computed, or not a number
            bounds.append(None if value is None else value.reshape(()).item())
        return tuple(bounds)

    @property
    def delegated(self) -> dict[str, str]:
        """Nodes of npconv's operators that ONNX's own classes ran, `name or op_type#index` ->
        reason: the nodes npconv never covers, plus those whose inputs of the last `run` it did
        not (only this graph's nodes, not those of subgraphs or functions)."""
        out = {}
        for i, node in enumerate(self.rt_nodes_):
            if isinstance(node, _NpconvOp) and node._reason is not None:
                out[node.onnx_node.name or f"{node.op_type}#{i}"] = node._reason
        return out
