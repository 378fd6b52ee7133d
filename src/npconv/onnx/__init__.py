"""ONNX models in npconv: an evaluator that runs them fast, and an importer into npconv models.

    >>> from npconv.onnx import Evaluator, to_model                 # doctest: +SKIP
    >>> outputs = Evaluator("model.onnx").run(None, {"input": x})   # doctest: +SKIP
    >>> model = to_model("model.onnx")                              # doctest: +SKIP

`Evaluator` is `onnx.reference.ReferenceEvaluator` with npconv computing the conv-net operators
(`npconv.onnx.evaluator`); `npconv.onnx.ops` holds those operators' ONNX semantics on npconv's
functions. `to_model` (`npconv.onnx.model`) turns an ONNX graph into a trainable
`npconv.nn.Module`, through `npconv.onnx.graph` (the file read as data) and
`npconv.onnx.mapping` (nodes as layers). Needs the `onnx` package
(`pip install 'npconv[onnx]'`); `import npconv` never imports it.
"""

try:
    import onnx as _onnx  # noqa: F401
except ImportError as exc:                      # pragma: no cover - exercised without onnx
    raise ImportError(
        "npconv.onnx needs the `onnx` package: pip install 'npconv[onnx]' (or pip install onnx)"
    ) from exc

from npconv.onnx import ops
from npconv.onnx.evaluator import NPCONV_OPERATORS, Evaluator
from npconv.onnx.mapping import UnsupportedOperator
from npconv.onnx.model import GraphModel, to_model

__all__ = ["NPCONV_OPERATORS", "Evaluator", "GraphModel", "UnsupportedOperator", "ops",
           "to_model"]
