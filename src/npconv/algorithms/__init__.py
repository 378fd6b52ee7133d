"""Convolution algorithms behind one interface, and the automatic choice between them.

Each algorithm is a module with up to three functions on channels_last arrays, all with the
signatures of `npconv.kernels`, plus the resolved settings (workspace limit, threads):

    forward(xp, w, spec, settings)       -> y   (N, *P, F)
    grad_input(dy, w, spec, settings)    -> dxp (N, *Sp, C)
    grad_weight(xp, dy, spec, settings)  -> dw  (*K, C/G, F)

and a rule saying which geometries it handles. `choose` picks one per computation: the caller's
`algorithm` when given (it must handle the geometry), else `auto`, whose rules come from
measurements on the benchmark machine (docs/algorithms.md explains each algorithm and the
rules; docs/benchmarks.md holds the numbers). `op` is the computation's name; its argument is
accepted by every rule so that a rule may tell the three apart.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType

from npconv._config import DEFAULT_WORKSPACE
from npconv.algorithms import depthwise, fft, im2col, offsets, pointwise, winograd
from npconv.algorithms._chunks import contiguous, single_blas
from npconv.spec import ConvSpec

OPS = ("forward", "grad_input", "grad_weight")


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: its module, and the rule for the geometries it handles."""

    name: str
    module: ModuleType
    rule: str
    applies: Callable[[ConvSpec], bool]

    def implements(self, op: str) -> bool:
        """Whether the algorithm's module defines `op` (e.g. "grad_input_interior")."""
        return hasattr(self.module, op)


def _ones(values) -> bool:
    return all(v == 1 for v in values)


ALGORITHMS = {
    a.name: a for a in (
        Algorithm("im2col", im2col, "any convolution", lambda s: True),
        Algorithm("offsets", offsets, "any convolution", lambda s: True),
        Algorithm("pointwise", pointwise, "a 1x1 kernel (kernel_size all 1)",
                  lambda s: _ones(s.kernel_size)),
        Algorithm("depthwise", depthwise, "one input channel per group (groups == in_channels)",
                  lambda s: s.group_in == 1),
        Algorithm("winograd", winograd, "a 3x3 or 3x3x3 kernel with stride 1 and dilation 1",
                  winograd.applies),
        Algorithm("fft", fft, "stride 1 in every dimension", lambda s: _ones(s.stride)),
    )
}
"""Every algorithm, by name."""


def check_name(algorithm) -> None:
    """TypeError / ValueError unless `algorithm` is None or a known name."""
    if algorithm is None:
        return
    if not isinstance(algorithm, str):
        raise TypeError(f"`algorithm` must be a str or None; got {algorithm!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"`algorithm` must be one of {tuple(ALGORITHMS)} or None; got "
                         f"{algorithm!r}")


def check_applies(algorithm, spec: ConvSpec) -> None:
    """ValueError when the forced `algorithm` cannot handle this geometry."""
    if algorithm is None or ALGORITHMS[algorithm].applies(spec):
        return
    raise ValueError(
        f"`algorithm`={algorithm!r} needs {ALGORITHMS[algorithm].rule}; got kernel_size="
        f"{spec.kernel_size}, stride={spec.stride}, dilation={spec.dilation}, groups="
        f"{spec.groups}, in_channels={spec.in_channels}"
    )


def choose(op: str, spec: ConvSpec, algorithm: str | None = None,
           workspace: int = DEFAULT_WORKSPACE, *, gpu: bool = False,
           itemsize: int = 8) -> Algorithm:
    """The algorithm that runs `op` ("forward", "grad_input" or "grad_weight") for `spec`: the
    forced one (already checked by `check_applies`), else the automatic choice.

    On a GPU (CuPy arrays) the CPU-measured rules do not hold: there a few large GEMMs beat
    many small kernel launches, so the choice is "pointwise" for 1x1 kernels and "im2col" for
    everything else (docs/engines.md has the measurements).
    """
    if algorithm is not None:
        return ALGORITHMS[algorithm]
    if gpu:
        return ALGORITHMS["pointwise" if _ones(spec.kernel_size) else "im2col"]
    return ALGORITHMS[auto(op, spec, workspace, itemsize)]


def auto(op: str, spec: ConvSpec, workspace: int = DEFAULT_WORKSPACE, itemsize: int = 8) -> str:
    """The automatic choice, by shape and element size (rules measured on the benchmark
    machine), for a given workspace limit in bytes."""
    if _ones(spec.kernel_size):
        return "pointwise"
    if spec.group_in == 1 and spec.groups > 1:
        return "depthwise"
    if winograd.applies(spec) and winograd.worthwhile(spec, itemsize):
        return "winograd"
    if fft.worthwhile(spec, workspace):
        return "fft"
    if offsets.worthwhile(spec):
        return "offsets"
    return "im2col"


__all__ = [
    "ALGORITHMS",
    "OPS",
    "Algorithm",
    "auto",
    "check_applies",
    "check_name",
    "choose",
    "contiguous",
    "single_blas",
]
