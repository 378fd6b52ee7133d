"""Weight initializers with PyTorch's names and formulas (`torch.nn.init`), and the default
random generator of `npconv.nn`.

Every random initializer takes `rng`, a `numpy.random.Generator`, or None for npconv's default
generator (`default_generator()`, seeded from the operating system; `manual_seed(seed)` reseeds
it, as `torch.manual_seed` does). Draws are made in float64 and cast, so the same generator state
gives the same weights (up to rounding) for every dtype. The fans are passed in by the layer,
which knows its layout: for a convolution fan_in = C/G * prod(K) and fan_out = F/G * prod(K);
for a transposed convolution, whose weight holds F/G outputs per input channel, the two swap.

    kaiming_normal   N(0, gain^2 / fan_in), gain = sqrt(2 / (1 + a^2))     (He et al., 2015)
    kaiming_uniform  U(-bound, bound), bound = gain * sqrt(3 / fan_in)      (same variance)
    xavier_normal    N(0, 2 / (fan_in + fan_out))                   (Glorot & Bengio, 2010)
    xavier_uniform   U(-bound, bound), bound = sqrt(6 / (fan_in + fan_out))
    zeros            0

`default_parameters` is what Conv*, ConvTranspose* and Linear layers draw when no `init` is named:
PyTorch's `reset_parameters`, a weight from kaiming_uniform with a = sqrt(5), which is
U(-1/sqrt(fan_in), 1/sqrt(fan_in)), and a bias from the same interval.

Inside `with meta():` layers are built without memory (PyTorch's meta device): every array a
layer makes through `default_parameters`, `full` and `zeros_like` is a read-only zero-stride
placeholder of the right shape and dtype, and nothing is drawn. `npconv.nn.load` builds a file's
architecture this way to check its shapes against the stored arrays before allocating anything.
"""

from __future__ import annotations

import contextlib
import contextvars
import math

import numpy as np

from npconv import _args

__all__ = [
    "INITIALIZERS",
    "default_generator",
    "default_parameters",
    "full",
    "generator",
    "get",
    "is_meta",
    "kaiming_normal",
    "kaiming_uniform",
    "manual_seed",
    "meta",
    "xavier_normal",
    "xavier_uniform",
    "zeros",
    "zeros_like",
]

_default: np.random.Generator | None = None
_meta = contextvars.ContextVar("npconv_nn_meta", default=False)
# [placeholders left, max_arrays] inside meta(max_arrays=...)
_meta_left: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "npconv_nn_meta_left", default=None)


@contextlib.contextmanager
def meta(max_arrays: int | None = None):
    """Build layers without memory inside this block: their params, grads and buffers are
    read-only zero-stride placeholders of the right shapes and dtypes (to be replaced before
    use), and no random numbers are drawn. With `max_arrays`, making more placeholders than
    that is a ValueError: a model file's Module config (ResNet's `layers`, say) can ask its
    constructor for millions of layers, which cost time and memory even without arrays.

    >>> from npconv import nn
    >>> with meta():
    ...     big = nn.Linear(2**20, 2**20)                            # 4 TiB if it were real
    >>> big.params["weight"].shape, big.params["weight"].strides
    ((1048576, 1048576), (0, 0))
    """
    if max_arrays is not None and not (_args.is_int(max_arrays) and max_arrays >= 0):
        raise ValueError(f"`max_arrays` must be None or an int >= 0; got {max_arrays!r}")
    token = _meta.set(True)
    left = _meta_left.set(None if max_arrays is None else [max_arrays, max_arrays])
    try:
        yield
    finally:
        _meta_left.reset(left)
        _meta.reset(token)


def is_meta() -> bool:
    """True inside `meta()`: a layer or model that initializes its own weights draws nothing."""
    return _meta.get()


def _placeholder(shape, dtype) -> np.ndarray:
    left = _meta_left.get()
    if left is not None:
        left[0] -= 1
        if left[0] < 0:
            raise ValueError(f"the architecture makes more than {left[1]} arrays "
                             f"(meta(max_arrays={left[1]}))")
    shape = tuple(shape) if isinstance(shape, (tuple, list)) else (shape,)
    if math.prod(shape) * np.dtype(dtype).itemsize >= 2**63:
        raise ValueError(f"an array of shape {shape} is too large for any machine")
    return np.broadcast_to(np.zeros((), dtype), shape)                    # (*shape), no memory


def full(shape, value, dtype) -> np.ndarray:
    """np.full(shape, value, dtype), or its placeholder inside `meta()`."""
    return _placeholder(shape, dtype) if _meta.get() else np.full(shape, value, dtype)


def zeros_like(a) -> np.ndarray:
    """np.zeros_like(a), or a placeholder inside `meta()`."""
    return _placeholder(a.shape, a.dtype) if _meta.get() else np.zeros_like(a)


def default_generator() -> np.random.Generator:
    """The generator that layers draw from when given rng=None (seeded from the operating
    system on first use, or by `manual_seed`)."""
    global _default
    if _default is None:
        _default = np.random.default_rng()
    return _default


def manual_seed(seed: int) -> np.random.Generator:
    """Reseed the default generator (as torch.manual_seed), so that layers built and dropout
    masks drawn with rng=None repeat; returns the new generator.

    >>> a = (manual_seed(0), default_generator().random())[1]
    >>> b = (manual_seed(0), default_generator().random())[1]
    >>> a == b
    True
    """
    global _default
    if not _args.is_int(seed) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; got {seed!r}")
    _default = np.random.default_rng(int(seed))
    return _default


def generator(rng) -> np.random.Generator:
    """`rng` itself, or the default generator for None; TypeError for anything else."""
    if rng is None:
        return default_generator()
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator (e.g. np.random.default_rng(0)) "
                        f"or None; got {type(rng).__name__}")
    return rng


def _check_fans(fan_in: int, fan_out: int) -> None:
    if fan_in < 1 or fan_out < 1:
        raise ValueError(f"fans must be >= 1; got fan_in={fan_in}, fan_out={fan_out}")


def _gain(a: float) -> float:
    """PyTorch's gain for leaky_relu with negative slope a (a = 0: ReLU, sqrt(2))."""
    return math.sqrt(2.0 / (1 + a * a))


def kaiming_normal(shape, fan_in: int, fan_out: int, *, a: float = 0.0,
                   rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """Normal with standard deviation gain / sqrt(fan_in), gain = sqrt(2 / (1 + a^2)).

    >>> w = kaiming_normal((3, 3, 1, 8), 9, 72, rng=np.random.default_rng(0))
    >>> w.shape, w.dtype
    ((3, 3, 1, 8), dtype('float32'))
    """
    _check_fans(fan_in, fan_out)
    std = _gain(a) / math.sqrt(fan_in)
    return (generator(rng).standard_normal(shape) * std).astype(dtype)     # (*shape)


def kaiming_uniform(shape, fan_in: int, fan_out: int, *, a: float = 0.0,
                    rng: np.random.Generator | None = None, dtype=np.float32) -> np.ndarray:
    """Uniform on [-bound, bound], bound = gain * sqrt(3 / fan_in) (variance gain^2 / fan_in);
    a = sqrt(5) gives bound = 1 / sqrt(fan_in), PyTorch's default for Conv and Linear."""
    _check_fans(fan_in, fan_out)
    bound = _gain(a) * math.sqrt(3.0 / fan_in)
    return generator(rng).uniform(-bound, bound, size=shape).astype(dtype)  # (*shape)


def xavier_normal(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator | None = None,
                  dtype=np.float32) -> np.ndarray:
    """Normal with standard deviation sqrt(2 / (fan_in + fan_out))."""
    _check_fans(fan_in, fan_out)
    std = math.sqrt(2.0 / (fan_in + fan_out))
    return (generator(rng).standard_normal(shape) * std).astype(dtype)     # (*shape)


def xavier_uniform(shape, fan_in: int, fan_out: int, *, rng: np.random.Generator | None = None,
                   dtype=np.float32) -> np.ndarray:
    """Uniform on [-bound, bound], bound = sqrt(6 / (fan_in + fan_out))."""
    _check_fans(fan_in, fan_out)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return generator(rng).uniform(-bound, bound, size=shape).astype(dtype)  # (*shape)


def zeros(shape, fan_in: int = 1, fan_out: int = 1, *, rng=None, dtype=np.float32) -> np.ndarray:
    """All zeros; takes the same arguments as the others and ignores them."""
    return np.zeros(shape, dtype=dtype)                            # (*shape)


INITIALIZERS = {
    "kaiming_normal": kaiming_normal,
    "kaiming_uniform": kaiming_uniform,
    "xavier_normal": xavier_normal,
    "xavier_uniform": xavier_uniform,
    "zeros": zeros,
}


def get(name: str):
    """The initializer called `name`; ValueError listing the choices otherwise."""
    if not isinstance(name, str) or name not in INITIALIZERS:
        raise ValueError(f"`init` must be None (PyTorch's default) or one of "
                         f"{tuple(INITIALIZERS)}; got {name!r}")
    return INITIALIZERS[name]


def default_parameters(weight_shape, bias_shape, fan_in: int, fan_out: int, *,
                       init: str | None = None, rng: np.random.Generator | None = None,
                       dtype=np.float32) -> dict:
    """{"weight": ..., "bias": ...} (no "bias" when bias_shape is None) of a Conv, ConvTranspose
    or Linear layer. init None: PyTorch's default, weight then bias drawn from
    U(-1/sqrt(fan_in), 1/sqrt(fan_in)); otherwise the named initializer for the weight and a
    zero bias.

    >>> p = default_parameters((3, 3, 1, 8), (8,), 9, 72, rng=np.random.default_rng(0))
    >>> bool(np.abs(p["weight"]).max() <= 1 / 3), p["bias"].shape
    (True, (8,))
    """
    initializer, rng = None if init is None else get(init), generator(rng)
    if _meta.get():
        shapes = {"weight": weight_shape, "bias": bias_shape}
        return {k: _placeholder(v, dtype) for k, v in shapes.items() if v is not None}
    if initializer is None:
        weight = kaiming_uniform(weight_shape, fan_in, fan_out, a=math.sqrt(5), rng=rng,
                                 dtype=dtype)
        bound = 1 / math.sqrt(fan_in)
        bias = None if bias_shape is None else \
            rng.uniform(-bound, bound, size=bias_shape).astype(dtype)              # (F,)
    else:
        weight = initializer(weight_shape, fan_in, fan_out, rng=rng, dtype=dtype)
        bias = None if bias_shape is None else np.zeros(bias_shape, dtype)          # (F,)
    return {"weight": weight} if bias is None else {"weight": weight, "bias": bias}
