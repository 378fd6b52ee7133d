"""Weight initializers: He (Kaiming) and Glorot (Xavier), normal and uniform, plus zeros.

Every random initializer takes an explicit `numpy.random.Generator`, so a model is a function of
its seed and nothing else. Draws are made in float64 and cast, so the same generator state gives
the same weights (up to rounding) for every dtype. The fans are passed in by the layer, which
knows its layout: for a convolution fan_in = C/G * prod(K) and fan_out = F/G * prod(K).

    he_normal       N(0, 2 / fan_in)                 for ReLU networks (He et al., 2015)
    he_uniform      U(-a, a), a = sqrt(6 / fan_in)
    glorot_normal   N(0, 2 / (fan_in + fan_out))     for tanh / sigmoid (Glorot & Bengio, 2010)
    glorot_uniform  U(-a, a), a = sqrt(6 / (fan_in + fan_out))
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["INITIALIZERS", "get", "glorot_normal", "glorot_uniform", "he_normal", "he_uniform",
           "zeros"]


def _check(shape, fan_in: int, fan_out: int, rng) -> None:
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"`rng` must be a numpy.random.Generator (e.g. np.random.default_rng(0)); "
            f"got {type(rng).__name__}"
        )
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fans must be >= 1; got fan_in={fan_in}, fan_out={fan_out}")


def he_normal(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator, dtype=np.float32):
    """Normal with standard deviation sqrt(2 / fan_in).

    >>> w = he_normal((3, 3, 1, 8), 9, 72, rng=np.random.default_rng(0))
    >>> w.shape, w.dtype
    ((3, 3, 1, 8), dtype('float32'))
    """
    _check(shape, fan_in, fan_out, rng)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / fan_in)).astype(dtype)


def he_uniform(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator, dtype=np.float32):
    """Uniform on [-a, a], a = sqrt(6 / fan_in) (variance 2 / fan_in)."""
    _check(shape, fan_in, fan_out, rng)
    a = math.sqrt(6.0 / fan_in)
    return rng.uniform(-a, a, size=shape).astype(dtype)


def glorot_normal(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator,
                  dtype=np.float32):
    """Normal with standard deviation sqrt(2 / (fan_in + fan_out))."""
    _check(shape, fan_in, fan_out, rng)
    return (rng.standard_normal(shape) * math.sqrt(2.0 / (fan_in + fan_out))).astype(dtype)


def glorot_uniform(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator,
                   dtype=np.float32):
    """Uniform on [-a, a], a = sqrt(6 / (fan_in + fan_out)) (Keras' default)."""
    _check(shape, fan_in, fan_out, rng)
    a = math.sqrt(6.0 / (fan_in + fan_out))
    return rng.uniform(-a, a, size=shape).astype(dtype)


def zeros(shape, fan_in: int = 1, fan_out: int = 1, *, rng=None, dtype=np.float32):
    """All zeros (biases); takes the same arguments as the others and ignores them."""
    return np.zeros(shape, dtype=dtype)                            # (*shape)


INITIALIZERS = {
    "he_normal": he_normal,
    "he_uniform": he_uniform,
    "glorot_normal": glorot_normal,
    "glorot_uniform": glorot_uniform,
    "zeros": zeros,
}


def get(name: str):
    """The initializer called `name`; ValueError listing the choices otherwise."""
    if not isinstance(name, str) or name not in INITIALIZERS:
        raise ValueError(f"`init` must be one of {tuple(INITIALIZERS)}; got {name!r}")
    return INITIALIZERS[name]
