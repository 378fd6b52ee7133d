"""ONNX models in npconv: an evaluator that runs them fast, and an importer into npconv models.

    >>> from npconv.onnx import Evaluator                      # doctest: +SKIP
    >>> outputs = Evaluator("model.onnx").run(None, {"input": x})   # doctest: +SKIP

`Evaluator` is `onnx.reference.ReferenceEvaluator` with npconv computing the conv-net operators
(`npconv.onnx.evaluator`); `npconv.onnx.ops` holds those operators' ONNX semantics on npconv's
functions. Needs the `onnx` package (`pip install 'npconv[onnx]'`); `import npconv` never
imports it.
"""

try:
    import onnx as _onnx  # noqa: F401
except ImportError as exc:                      # pragma: no cover - exercised without onnx
    raise ImportError(
        "npconv.onnx needs the `onnx` package: pip install 'npconv[onnx]' (or pip install onnx)"
    ) from exc

from npconv.onnx import ops
from npconv.onnx.evaluator import NPCONV_OPERATORS, Evaluator

__all__ = ["NPCONV_OPERATORS", "Evaluator", "ops"]
