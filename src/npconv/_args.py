"""Argument checks shared by every public op.

Public functions call these once, at the boundary; everything below (geometry, kernels, windows)
trusts its inputs. Each error names the argument, the rule, and what was received, in the style
"`stride` must be an int or a tuple of 2 ints; got (1, 2, 3)".
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from typing import Any

import numpy as np

from npconv import _backend

DATA_FORMATS = ("channels_last", "channels_first")
PADDING_MODES = ("zeros", "reflect", "replicate", "circular")
FLOAT_DTYPES = (np.float16, np.float32, np.float64)


def is_int(value: object) -> bool:
    """True for Python and NumPy integers, False for bools (a bool stride is a bug, not a 1)."""
    return isinstance(value, numbers.Integral) and not isinstance(value, (bool, np.bool_))


def int_tuple(value: Any, rank: int, name: str) -> tuple[int, ...]:
    """Expand an int, or check a sequence of `rank` ints, into a tuple of `rank` ints."""
    if is_int(value):
        return (int(value),) * rank
    if (isinstance(value, Sequence) and not isinstance(value, str) and len(value) == rank
            and all(is_int(v) for v in value)):
        return tuple(int(v) for v in value)
    raise TypeError(f"`{name}` must be an int or a tuple of {rank} ints; got {value!r}")


def shape_tuple(value: Any, name: str) -> tuple[int, ...]:
    """Check a shape argument (`x_shape`, `w_shape`): a tuple or list of ints >= 0."""
    if not isinstance(value, (tuple, list)) or not all(map(is_int, value)):
        raise TypeError(f"`{name}` must be a tuple of ints; got {value!r}")
    if any(v < 0 for v in value):
        raise ValueError(f"`{name}` must have sizes >= 0; got {tuple(value)}")
    return tuple(int(v) for v in value)


def positive_tuple(value: Any, rank: int, name: str) -> tuple[int, ...]:
    """`int_tuple` whose entries must all be >= 1 (stride, dilation, kernel_size)."""
    out = int_tuple(value, rank, name)
    if any(v < 1 for v in out):
        raise ValueError(f"`{name}` must be >= 1 in every dimension; got {value!r}")
    return out


def choice(value: object, options: tuple[str, ...], name: str) -> str:
    """Check that `value` is one of the allowed strings (TypeError for a non-string)."""
    if not isinstance(value, str):
        raise TypeError(f"`{name}` must be one of {options}; got {value!r}")
    if value not in options:
        raise ValueError(f"`{name}` must be one of {options}; got {value!r}")
    return value


def float_array(x: Any, name: str) -> Any:
    """Check that `x` is an array (NumPy or CuPy) of float16, float32 or float64."""
    if not _backend.is_array(x):
        raise TypeError(f"`{name}` must be a numpy.ndarray; got {type(x).__name__}")
    if x.dtype not in FLOAT_DTYPES:
        raise TypeError(
            f"`{name}` must have dtype float16, float32 or float64; got dtype {x.dtype}"
        )
    return x


def result_dtype(*arrays: Any) -> np.dtype[Any]:
    """NumPy's promotion of the inputs' dtypes (float32 with float64 gives float64)."""
    return np.result_type(*(a.dtype for a in arrays if a is not None))


def compute_dtype(dtype: np.dtype[Any]) -> np.dtype[Any]:
    """float16 is computed in float32 (no BLAS for half precision), then cast back."""
    return np.dtype(np.float32) if dtype == np.float16 else np.dtype(dtype)


def clip_bounds(clip: Any, dtype: np.dtype[Any], cdt: np.dtype[Any]) -> tuple | None:
    """`npconv.conv`'s `clip` as (lo, hi) scalars of the compute dtype, each rounded to y's
    dtype first (so that clipping before y is rounded to float16 gives the same bits as
    after), an absent bound as -inf or inf; None for no clip.

    The same values come out (NaN stays NaN), but np.clip(y, 0, inf) runs about 3.5x faster
    than np.clip(y, 0, None), which NumPy computes as maximum(y, 0) with a broadcast scalar
    (float32, 12544 x 96: 128 against 445 us). Zero's sign is the one difference: -0.0 stays
    -0.0, as in `nn.ReLU`, where maximum gave 0.0."""
    if clip is None:
        return None
    plain = clip_key(clip)
    if plain is None:
        return _clip_bounds(clip, dtype, cdt)
    key = (plain, dtype, cdt)
    got = _BOUNDS.get(key, _BOUNDS)                              # a layer's (0, 6) every call
    if got is _BOUNDS:                               # (another thread may empty the cache)
        got = _clip_bounds(clip, dtype, cdt)
        remember(_BOUNDS, key, got)
    return got


_BOUNDS: dict = {}


def clip_key(clip: Any) -> tuple | None:
    """A cache key for `clip` when it is a tuple of Python ints, floats and Nones (by repr:
    -0.0 is not 0, and 0 == 0.0 == False would merge bounds checked differently); None for
    anything else, which is checked afresh."""
    if type(clip) is not tuple or not all(type(v) in (int, float, type(None)) for v in clip):
        return None
    return tuple(map(repr, clip))


def remember(cache: dict, key: Any, value: Any, most: int = 256) -> None:
    """cache[key] = value, emptying the cache first when it holds `most` entries: the small
    per-call caches of checked arguments (a layer asks for the same ones call after call)."""
    if len(cache) >= most:
        cache.clear()
    cache[key] = value


def _clip_bounds(clip: Any, dtype: np.dtype[Any], cdt: np.dtype[Any]) -> tuple | None:
    if not isinstance(clip, (tuple, list)) or len(clip) != 2:
        raise TypeError(f"`clip` must be None or a pair (lo, hi) of numbers or None; got "
                        f"{clip!r:.80}")
    bounds = []
    for name, v in zip(("lo", "hi"), clip):
        if v is not None and (isinstance(v, bool) or np.ndim(v) or
                              np.asarray(v).dtype.kind not in "iuf"):
            raise TypeError(f"`clip` {name} must be a real number or None; got {v!r:.80}")
        if v is not None and np.isnan(v):
            raise ValueError(f"`clip` {name} must not be NaN")
        bounds.append(None if v is None else cdt.type(dtype.type(v)))
    if bounds == [None, None]:
        return None
    lo, hi = bounds
    return (cdt.type(-np.inf) if lo is None else lo, cdt.type(np.inf) if hi is None else hi)


def check_flag(value: Any, name: str) -> bool:
    """TypeError unless `value` is True or False."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be True or False; got {value!r}")
    return bool(value)
