"""Scratch memory that outlives one call: padded copies and chunk buffers, reused.

A convolution's temporaries (the padded input, the padded dy of an input gradient, every
worker's chunk buffers) are the same sizes call after call. Freshly allocated, each of them
costs page faults on first touch: on the 2-core benchmark VM about half a millisecond per MiB,
as much as the arithmetic of a ResNet layer. Inside a `scope` (every public convolution op
opens one), `scratch` hands out arrays carved from raw buffers kept in a pool; at the end of
the outermost scope the buffers go back to the pool, which keeps the most recently used ones up
to the workspace limit in force (`npconv.set_config`) and frees the rest. `release` empties it.

Only temporaries come from here, never a result: an op's outputs are ordinary arrays. CuPy
arrays are never pooled (CuPy has its own memory pool).
"""

from __future__ import annotations

import contextlib
import contextvars
import math
import threading

import numpy as np

from npconv import _config

MIN_BYTES = 1 << 20
"""Smaller temporaries are ordinary allocations (malloc recycles them without page faults)."""

_free: list = []                                                 # raw uint8 buffers, LRU last
_lock = threading.Lock()
_taken: contextvars.ContextVar[list | None] = contextvars.ContextVar("npconv_taken",
                                                                     default=None)


@contextlib.contextmanager
def scope():
    """Collect the scratch taken inside; give it back to the pool at the outermost exit."""
    if _taken.get() is not None:                                 # nested: the outer one returns
        yield
        return
    token = _taken.set([])
    try:
        yield
    finally:
        taken = _taken.get()
        _taken.reset(token)
        _give_back(taken, _config.current().workspace)


def scratch(shape, dtype, xp=np):
    """An uninitialized temporary of `shape` and `dtype`, pooled inside a scope (NumPy only).

    It must not outlive the scope: never return it, or a view of it, from an op.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    taken = _taken.get()
    if xp is not np or taken is None or nbytes < MIN_BYTES:
        return xp.empty(shape, dtype=dtype)
    raw = _take(nbytes)
    taken.append(raw)
    return raw[:nbytes].view(dtype).reshape(shape)


def release() -> None:
    """Free every pooled buffer (`npconv.release_workspace`).

    Between calls npconv keeps up to the workspace limit in force of scratch buffers, so that
    the next call does not page-fault fresh memory; this gives them back to the allocator.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> y = npconv.conv(np.ones((4, 64, 64, 8)), np.ones((3, 3, 8, 8)), padding=1)
    >>> npconv.release_workspace()
    >>> from npconv import _workspace
    >>> _workspace.pooled_bytes()
    0
    """
    with _lock:
        _free.clear()


def pooled_bytes() -> int:
    """Bytes held by the pool now."""
    with _lock:
        return sum(raw.nbytes for raw in _free)


def _take(nbytes: int):
    """The smallest free buffer of at least nbytes (at most twice that), else a new one."""
    with _lock:
        fits = [i for i, raw in enumerate(_free) if nbytes <= raw.nbytes <= 2 * nbytes]
        if fits:
            return _free.pop(min(fits, key=lambda i: _free[i].nbytes))
    return np.empty(nbytes, dtype=np.uint8)


def _give_back(raws, limit: int) -> None:
    """Return buffers, then drop the least recently used beyond `limit` bytes."""
    with _lock:
        _free.extend(raws)
        total = sum(raw.nbytes for raw in _free)
        while _free and total > limit:
            total -= _free.pop(0).nbytes
