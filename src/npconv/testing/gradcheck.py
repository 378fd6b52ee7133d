"""Central-difference gradient checks in float64, for any function of arrays.

`numerical_grad` differentiates L = sum(dy * f(*arrays)) by central differences, one element at a
time (the one place where npconv loops over elements: that is what a finite difference is).
`gradcheck` compares those with analytic gradients and returns a `GradcheckResult` that is truthy
when every gradient agrees and prints as a short report: the maximum absolute error, the error
relative to the largest numerical gradient, and the worst element, per array. It is meant for a
user's own tests::

    result = gradcheck(layer_forward, x, w, grad=layer_backward)
    assert result, result

For a bilinear function such as a convolution, central differences are exact up to rounding, so
the default tolerances are tight. Cost: two evaluations of f per checked element.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class ArrayCheck:
    """Analytic vs numerical gradient of one array."""

    name: str
    passed: bool
    max_abs: float = float("nan")
    max_rel: float = float("nan")
    worst: tuple[int, ...] = ()
    analytic: float = float("nan")
    numeric: float = float("nan")
    problem: str = ""                 # a wrong shape or a missing gradient

    def __str__(self) -> str:
        if self.problem:
            return f"{self.name}: FAILED, {self.problem}"
        head = f"{self.name}: {'ok' if self.passed else 'FAILED'}, max abs error " \
               f"{self.max_abs:.3g}, max rel error {self.max_rel:.3g}"
        if self.passed:
            return head
        return (f"{head}, worst at {self.name}[{', '.join(map(str, self.worst))}]: analytic "
                f"{self.analytic:.6g}, numeric {self.numeric:.6g}")


@dataclass(frozen=True)
class GradcheckResult:
    """The result of `gradcheck`: truthy when every array passed; prints as a report."""

    checks: tuple[ArrayCheck, ...]
    eps: float
    rtol: float
    atol: float

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.checks)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = (f"gradcheck {'passed' if self.passed else 'FAILED'} (eps={self.eps:g}; "
                f"|analytic - numeric| <= {self.atol:g} + {self.rtol:g} * max|numeric|)")
        return "\n".join([head, *(f"  {c}" for c in self.checks)])


def _float_arrays(arrays, what: str) -> list[np.ndarray]:
    out = []
    for i, a in enumerate(arrays):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"`{what}[{i}]` must be a numpy.ndarray; got {type(a).__name__}")
        out.append(np.array(a, dtype=np.float64))           # a private float64 copy
    return out


def _check_args(f, eps: float, wrt, count: int) -> list[int]:
    if not callable(f):
        raise TypeError(f"`f` must be callable; got {type(f).__name__}")
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"`eps` must be a number > 0; got {eps!r}")
    if count == 0:
        raise ValueError("`arrays` must hold at least one array; got none")
    wrt = list(range(count)) if wrt is None else list(wrt)
    if not all(isinstance(i, int) and 0 <= i < count for i in wrt):
        raise ValueError(f"`wrt` must hold indices of `arrays` in [0, {count}); got {wrt!r}")
    return wrt


def numerical_grad(f: Callable, *arrays: np.ndarray, dy: np.ndarray | None = None,
                   eps: float = 1e-6, wrt: Sequence[int] | None = None) -> list:
    """Gradients of L = sum(dy * f(*arrays)) by central differences, in float64.

    Parameters
    ----------
    f : callable
        f(*arrays) -> array (or scalar). Called with float64 copies; the inputs are never
        modified.
    dy : ndarray, optional
        Weights of f's output in L; default all ones.
    eps : float
        Step of the central difference.
    wrt : sequence of int, optional
        Indices of the arrays to differentiate (default all); the others get None.

    Examples
    --------
    >>> import numpy as np
    >>> g, = numerical_grad(lambda a: a ** 2, np.array([1.0, -2.0]))
    >>> np.round(g, 6).tolist()
    [2.0, -4.0]
    """
    wrt = _check_args(f, eps, wrt, len(arrays))
    xs = _float_arrays(arrays, "arrays")
    y = np.asarray(f(*xs), dtype=np.float64)
    dy = np.ones_like(y) if dy is None else np.asarray(dy, dtype=np.float64)
    if dy.shape != y.shape:
        raise ValueError(f"`dy` must have the shape of f's output {y.shape}; got {dy.shape}")
    grads: list = [None] * len(xs)
    for i in wrt:
        grads[i] = _central(f, xs, i, dy, eps)
    return grads


def _central(f, xs: list[np.ndarray], i: int, dy: np.ndarray, eps: float) -> np.ndarray:
    a = xs[i]
    g = np.zeros_like(a)
    flat, gflat = a.reshape(-1), g.reshape(-1)               # views of a and g
    for j in range(flat.size):
        old = flat[j]
        flat[j] = old + eps
        plus = float(np.sum(dy * np.asarray(f(*xs), dtype=np.float64)))
        flat[j] = old - eps
        minus = float(np.sum(dy * np.asarray(f(*xs), dtype=np.float64)))
        flat[j] = old
        gflat[j] = (plus - minus) / (2 * eps)
    return g


def gradcheck(f: Callable, *arrays: np.ndarray, grad: Callable, dy: np.ndarray | None = None,
              eps: float = 1e-6, rtol: float = 1e-5, atol: float = 1e-6,
              wrt: Sequence[int] | None = None, names: Sequence[str] | None = None,
              seed: int = 0) -> GradcheckResult:
    """Compare analytic gradients of f with central differences, in float64.

    Parameters
    ----------
    f : callable
        f(*arrays) -> array.
    grad : callable
        grad(dy, *arrays) -> one gradient per array (a single array when there is one input);
        None for an array that is not checked.
    dy : ndarray, optional
        The output gradient; default a seeded standard normal array shaped like f's output
        (random, so that a gradient summed over the wrong axes cannot pass by symmetry).
    rtol, atol : float
        An element passes when |analytic - numeric| <= atol + rtol * max|numeric|.
    wrt, names : sequences, optional
        Which arrays to check (indices) and what to call them (default "arrays[i]").
    seed : int
        Seed of the default dy.

    Returns
    -------
    GradcheckResult
        Truthy when every checked gradient passes; ``print(result)`` shows, per array, the max
        absolute and relative errors and the worst index.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> x = np.random.default_rng(0).normal(size=(1, 5, 5, 2))    # (N, H, W, C)
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 2, 3))    # (kh, kw, C, F)
    >>> result = gradcheck(lambda x, w: npconv.conv(x, w, stride=2), x, w,
    ...                    grad=lambda dy, x, w: npconv.conv_backward(dy, x, w, stride=2)[:2],
    ...                    names=("x", "w"))
    >>> bool(result), result.checks[0].max_abs < 1e-8
    (True, True)
    """
    wrt = _check_args(f, eps, wrt, len(arrays))
    names = _names(names, len(arrays))
    xs = _float_arrays(arrays, "arrays")
    y = np.asarray(f(*[a.copy() for a in xs]), dtype=np.float64)
    if dy is None:
        dy = np.random.default_rng(seed).standard_normal(y.shape)
    numeric = numerical_grad(f, *xs, dy=dy, eps=eps, wrt=wrt)
    analytic = grad(np.array(dy, dtype=np.float64), *[a.copy() for a in xs])
    analytic = [analytic] if len(xs) == 1 and not isinstance(analytic, (tuple, list)) else \
        list(analytic)
    if len(analytic) != len(xs):
        raise ValueError(f"`grad` must return {len(xs)} gradients (one per array); "
                         f"got {len(analytic)}")
    checks = tuple(_compare(names[i], analytic[i], numeric[i], rtol, atol) for i in wrt)
    return GradcheckResult(checks, float(eps), rtol, atol)


def _names(names, count: int) -> list[str]:
    if names is None:
        return [f"arrays[{i}]" for i in range(count)]
    if isinstance(names, str) or len(names) != count:
        raise ValueError(f"`names` must hold {count} names (one per array); got {names!r}")
    return list(names)


def _compare(name: str, analytic, numeric: np.ndarray, rtol: float, atol: float) -> ArrayCheck:
    if analytic is None:
        return ArrayCheck(name, False, problem="no analytic gradient (grad returned None)")
    a = np.asarray(analytic, dtype=np.float64)
    if a.shape != numeric.shape:
        return ArrayCheck(name, False, problem=f"gradient has shape {a.shape}, expected "
                                               f"{numeric.shape}")
    err = np.abs(a - numeric)                                  # same shape as the array
    scale = float(np.abs(numeric).max(initial=0.0))
    worst = np.unravel_index(int(np.argmax(err)), err.shape) if err.size else ()
    max_abs = float(err.max(initial=0.0))
    return ArrayCheck(name, bool(np.all(err <= atol + rtol * scale)), max_abs,
                      max_abs / scale if scale else (0.0 if max_abs == 0 else float("inf")),
                      tuple(int(i) for i in worst), float(a[worst]) if err.size else 0.0,
                      float(numeric[worst]) if err.size else 0.0)
