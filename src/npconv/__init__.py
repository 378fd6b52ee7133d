"""npconv: exact, vectorized N-d convolutions in NumPy, forward and backward.

    >>> import numpy as np, npconv
    >>> x = np.random.default_rng(0).normal(size=(8, 28, 28, 3))    # (N, H, W, C)
    >>> w = np.random.default_rng(1).normal(size=(3, 3, 3, 16))     # (kh, kw, C, F)
    >>> b = np.zeros(16)
    >>> y = npconv.conv(x, w, b, stride=2, padding="same")
    >>> dx, dw, db = npconv.conv_backward(np.ones_like(y), x, w, b, stride=2, padding="same")

`npconv.reference` holds the same ops as naive loops, the oracle the fast ones are tested against;
`npconv.dask` the same ops on dask arrays, chunk by chunk.
"""

from npconv import models, nn, reference
from npconv._config import config, get_config, set_config
from npconv._workspace import keep_freed_memory
from npconv._workspace import release as release_workspace
from npconv.algorithms import ALGORITHMS
from npconv.convolution import (
    conv,
    conv_backward,
    conv_grad_input,
    conv_grad_weight,
    conv_transpose,
    conv_transpose_backward,
)
from npconv.pooling import (
    PoolSpec,
    avg_pool,
    avg_pool_backward,
    global_avg_pool,
    global_avg_pool_backward,
    global_max_pool,
    global_max_pool_backward,
    lp_pool,
    lp_pool_backward,
    max_pool,
    max_pool_backward,
    pool_spec,
)
from npconv.spec import ConvGrads, ConvSpec, conv_spec, conv_transpose_spec

__version__ = "0.1.0"

__all__ = [
    "ALGORITHMS",
    "ConvGrads",
    "ConvSpec",
    "PoolSpec",
    "avg_pool",
    "avg_pool_backward",
    "config",
    "conv",
    "conv_backward",
    "conv_grad_input",
    "conv_grad_weight",
    "conv_spec",
    "conv_transpose",
    "conv_transpose_backward",
    "conv_transpose_spec",
    "get_config",
    "global_avg_pool",
    "global_avg_pool_backward",
    "global_max_pool",
    "global_max_pool_backward",
    "keep_freed_memory",
    "lp_pool",
    "lp_pool_backward",
    "max_pool",
    "max_pool_backward",
    "models",
    "nn",
    "pool_spec",
    "reference",
    "release_workspace",
    "set_config",
]


def __getattr__(name: str) -> object:
    """`npconv.dask` loads on first use (convolutions don't need it)."""
    if name == "dask":
        import npconv.dask

        return npconv.dask
    raise AttributeError(f"module 'npconv' has no attribute {name!r}")
