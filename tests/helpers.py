"""Numerical helpers shared by the tests: relative error and central differences."""

import numpy as np


def rel_err(a, b, floor: float = 1e-300) -> float:
    """max |a - b| relative to max |b| (or to `floor`, for results that are ~0)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max(initial=0.0) / max(np.abs(b).max(initial=0.0), floor))


def central_difference(f, a, eps=1e-6):
    """d f / d a by central differences, f a scalar function of the array a (changed in place
    and restored)."""
    grad = np.zeros_like(a)
    for i in np.ndindex(a.shape):
        old = a[i]
        a[i] = old + eps
        plus = f()
        a[i] = old - eps
        minus = f()
        a[i] = old
        grad[i] = (plus - minus) / (2 * eps)
    return grad


def cupy_or_skip():
    """The cupy module, or skip the calling test module when CuPy or a GPU is missing."""
    import pytest

    cp = pytest.importorskip("cupy")
    try:
        if cp.cuda.runtime.getDeviceCount() < 1:
            pytest.skip("CuPy sees no GPU", allow_module_level=True)
    except Exception as exc:                                     # no driver, no device
        pytest.skip(f"CuPy sees no GPU: {exc}", allow_module_level=True)
    return cp
