"""Convolution algorithms as explicit objects, and the automatic choice between them.

An `Algorithm` is a forward pass and a weight gradient on channels_last arrays, with the
resolved settings (workspace limit, threads, tuning):

    forward(xp, w, spec, settings, bias)  -> y   (N, *P, F)
    grad_weight(xp, dy, spec, settings)   -> dw  (*K, C/G, F)

and the rule for the geometries it handles. There is no input gradient here: `npconv._kernels`
derives it once for all of them from the forward pass (the transpose rule). `choose` picks one
for a geometry: the caller's `algorithm` when given (it must handle the geometry), else the
automatic rule, measured on the benchmark machine (docs/algorithms.md explains each algorithm
and rule; docs/benchmarks.md holds the numbers).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from npconv._config import Settings
from npconv.algorithms import depthwise, im2col, pointwise, winograd
from npconv.spec import ConvSpec


@dataclass(frozen=True)
class Algorithm:
    """One algorithm: its computations, and the rule for the geometries it handles.

    `takes_views`: its computations read arrays as they come (channels_first arrays as
    transposed views) instead of C-contiguous copies.
    """

    name: str
    rule: str
    applies: Callable[[ConvSpec], bool]
    forward: Callable[..., Any]
    grad_weight: Callable[..., Any]
    takes_views: bool = False


ALGORITHMS = {
    a.name: a for a in (
        Algorithm("im2col", "any convolution", lambda spec: True, im2col.forward,
                  im2col.grad_weight),
        Algorithm("pointwise", "a 1x1 kernel, stride 1 and groups 1", pointwise.applies,
                  pointwise.forward, pointwise.grad_weight, takes_views=True),
        Algorithm("depthwise", "one input channel per group (groups == in_channels)",
                  depthwise.applies, depthwise.forward, depthwise.grad_weight),
        Algorithm("winograd", "a 2-D 3x3 kernel with stride 1 and dilation 1",
                  winograd.applies, winograd.forward, winograd.grad_weight),
    )
}
"""Every algorithm, by name."""


def check_name(algorithm: object) -> None:
    """TypeError / ValueError unless `algorithm` is None or a known name."""
    if algorithm is None:
        return
    if not isinstance(algorithm, str):
        raise TypeError(f"`algorithm` must be a str or None; got {algorithm!r}")
    if algorithm not in ALGORITHMS:
        raise ValueError(f"`algorithm` must be one of {tuple(ALGORITHMS)} or None; got "
                         f"{algorithm!r}")


def check_applies(algorithm: str | None, spec: ConvSpec) -> None:
    """ValueError when the forced `algorithm` cannot handle this geometry."""
    if algorithm is None or ALGORITHMS[algorithm].applies(spec):
        return
    raise ValueError(
        f"`algorithm`={algorithm!r} needs {ALGORITHMS[algorithm].rule}; got kernel_size="
        f"{spec.kernel_size}, stride={spec.stride}, dilation={spec.dilation}, groups="
        f"{spec.groups}, in_channels={spec.in_channels}"
    )


def choose(spec: ConvSpec, algorithm: str | None = None, *, itemsize: int, settings: Settings,
           gpu: bool = False) -> Algorithm:
    """The algorithm for `spec`: the forced one (already checked by `check_applies`), else the
    automatic choice by shape and element size.

    On a GPU (CuPy arrays) the CPU-measured rules do not hold: there a few large GEMMs beat
    many small kernel launches, so the choice is "pointwise" where it applies and "im2col"
    for everything else (docs/engines.md has the measurements).
    """
    if algorithm is not None:
        return ALGORITHMS[algorithm]
    if pointwise.applies(spec):
        return ALGORITHMS["pointwise"]
    if gpu:
        return ALGORITHMS["im2col"]
    if depthwise.applies(spec) and spec.groups > 1:
        return ALGORITHMS["depthwise"]
    if winograd.applies(spec) and winograd.worthwhile(spec, itemsize, settings):
        return ALGORITHMS["winograd"]
    return ALGORITHMS["im2col"]
