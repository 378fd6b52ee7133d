"""Which array module an op runs on: NumPy, or CuPy when the inputs live on a GPU.

Kernels ask `namespace(*arrays)` for the module and call `xp.pad`, `xp.matmul`, ... on it, so one
source serves both. CuPy is never imported unless a CuPy array is passed in.
"""

from __future__ import annotations

import sys
from types import ModuleType
from typing import Any, TypeAlias

import numpy as np
import numpy.typing as npt

Array: TypeAlias = npt.NDArray[Any]
"""An array npconv computes on: a numpy.ndarray (or, on a GPU, a cupy.ndarray) of floats."""


def _is_cupy(a: object) -> bool:
    return type(a).__module__.split(".")[0] == "cupy"


def is_dask(a: object) -> bool:
    """True for a dask.array.Array (without importing dask)."""
    return type(a).__module__.split(".")[0] == "dask"


def is_gpu(a: object) -> bool:
    """True for a CuPy array."""
    return _is_cupy(a)


def is_array(a: object) -> bool:
    """True for numpy.ndarray and cupy.ndarray (not for lists, scalars or numpy.matrix)."""
    if isinstance(a, np.ndarray):
        return not isinstance(a, np.matrix)
    return _is_cupy(a) and hasattr(a, "__cuda_array_interface__")


def namespace(*arrays: Any) -> ModuleType:
    """numpy, or cupy if any of `arrays` is a CuPy array (all must then be CuPy arrays)."""
    if all(type(a) is np.ndarray or a is None for a in arrays):  # the common case, first
        return np
    kinds = {_is_cupy(a) for a in arrays if a is not None}
    if kinds == {True}:
        return sys.modules["cupy"]
    if kinds == {True, False}:
        raise TypeError("all arrays must be NumPy arrays or all CuPy arrays; got a mix of both")
    return np


def to_numpy(a: Any) -> Any:
    """A NumPy copy of a CuPy array (a device-to-host copy), or `a` itself for NumPy arrays.

    Only for leaving the device on purpose (saving a model, printing); kernels never call it.
    """
    return a.get() if _is_cupy(a) else a


def sliding_window_view(xp: ModuleType, x: Any, window_shape: tuple[int, ...],
                        axis: tuple[int, ...]) -> Any:
    """xp's read-only `sliding_window_view` (NumPy and CuPy keep it in lib.stride_tricks)."""
    return xp.lib.stride_tricks.sliding_window_view(x, window_shape, axis=axis)
