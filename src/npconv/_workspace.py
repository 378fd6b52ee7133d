"""Scratch memory that outlives one call: padded copies and chunk buffers, reused.

A convolution's temporaries (the padded input, the padded dy of an input gradient, every
worker's chunk buffers) are the same sizes call after call. Freshly allocated, each of them
costs page faults on first touch: on the 2-core benchmark VM about half a millisecond per MiB,
as much as the arithmetic of a ResNet layer. Inside a `scope` (every public convolution op
opens one, and each of its computations a nested one; the layer ops of `npconv.nn` one around
their block passes; worker threads run in a copy of the caller's), `scratch` hands out arrays
carved from raw buffers kept in a pool. Every scope gives its buffers back to the pool when it
ends, so the next computation, of the same op or the next call, reuses them. The pool (buffers
free and in use, the plain allocations of temporaries too small to pool included) stays within
the workspace limit where the buffers in use allow: whenever a scope ends or a temporary must
be allocated afresh, the least recently used free buffers beyond that are freed. `release`
empties it.

Outside `pooled_results`, only temporaries come from here, never a result: an op's outputs are
ordinary arrays. Inside it (a caller that knows when each result dies: `npconv.onnx.Evaluator`'s
run of a graph), the ops' large outputs are carved from the pool too (`result`), and the caller
gives a dead one's memory back (`recycle`), so that a network's activations stop page-faulting
fresh memory on every run; see `pooled_results`. CuPy arrays are never pooled (CuPy has its own
memory pool).
"""

from __future__ import annotations

import contextlib
import contextvars
import ctypes
import math
import os
import threading
import warnings
import weakref
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

import numpy as np

from npconv import _args
from npconv._config import Settings


@dataclass
class _Scope:
    limit: int                                                   # bytes the pool may hold
    min_bytes: int                                               # smaller: plain allocations
    raws: list[np.ndarray] = field(default_factory=list)         # buffers taken in the scope
    plain: int = 0                                               # bytes of plain allocations


_free: list[np.ndarray] = []                                     # raw uint8 buffers, LRU first
_held = [0]                                                      # bytes of buffers in use
_lock = threading.Lock()
_scope: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("npconv_scope",
                                                                       default=None)
_results: contextvars.ContextVar[_Scope | None] = contextvars.ContextVar("npconv_results",
                                                                         default=None)
_lent: dict[int, tuple[weakref.ref, int]] = {}
"""id(memory) -> (a weak reference to the memory `result` carved a result from, the result's
bytes), while that memory lives and is not in the pool."""
_pooled: set[int] = set()
"""ids of the memory (the owners) of the free buffers `recycle` put in the pool and no result
took since."""


def _after_fork() -> None:
    """In a forked child: a fresh lock (a parent's thread may have held it at the fork), and no
    buffer in use (the scopes that held them ran on threads the child does not have)."""
    global _lock
    _lock = threading.Lock()
    _held[0] = 0


if hasattr(os, "register_at_fork"):                              # not on Windows
    os.register_at_fork(after_in_child=_after_fork)


@contextlib.contextmanager
def scope(settings: Settings) -> Iterator[None]:
    """Hand out pooled scratch inside; give it back to the pool at the exit, keeping the pool
    within `settings.workspace` bytes where the buffers still in use allow."""
    mine = _Scope(settings.workspace, settings.tuning.scratch_min_bytes)
    token = _scope.set(mine)
    try:
        yield
    finally:
        _scope.reset(token)
        _give_back(mine.raws, mine.plain, mine.limit)


def scratch(shape: tuple[int, ...], dtype: Any, xp: ModuleType = np) -> Any:
    """An uninitialized temporary of `shape` and `dtype`, pooled inside a scope (NumPy only).

    It must not outlive the scope that took it: never return it, or a view of it, from an op.
    A temporary too small to pool is a plain allocation, but counts as in use until the scope
    ends, so that the free buffers kept in the pool and it stay within the limit together.
    """
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    mine = _scope.get()
    if xp is not np or mine is None:
        return xp.empty(shape, dtype=dtype)
    if nbytes < mine.min_bytes:
        with _lock:                                              # workers share the scope
            _reserve(nbytes, mine.limit)
            mine.plain += nbytes
        return np.empty(shape, dtype=dtype)
    raw = _take(nbytes, mine.limit)
    mine.raws.append(raw)                                        # atomic: no lock needed
    return raw[:nbytes].view(dtype).reshape(shape)


@contextlib.contextmanager
def pooled_results(settings: Settings) -> Iterator[None]:
    """Inside, the large results of npconv's ops (`result`) come from the pool, and `recycle`
    gives a dead result's memory back to it.

    For a caller that knows when each value dies, such as a graph evaluator that drops values
    after their last reader: freshly allocated, every activation of a network page-faults on
    first touch on every run (npconv.onnx's MobileNetV2 at batch 8: 2,650-3,160 faults a run,
    a sixth of its time on the benchmark VM); from the pool, a result takes the memory of
    one that died before it, or of the last run's. The pool's free buffers stay within
    `settings.workspace` bytes together with the scratch buffers in use, as ever; results in
    use are the caller's and are not counted.
    """
    global _heap_kept
    if not _heap_kept:
        np.empty(_HEAP_BLOCK, dtype=np.uint8)                    # mapped, never touched, freed
        _heap_kept = True
    token = _results.set(_Scope(settings.workspace, settings.tuning.scratch_min_bytes))
    try:
        yield
    finally:
        _results.reset(token)


_HEAP_BLOCK = 16 * 2**20
_heap_kept = False
"""Whether this process freed one `_HEAP_BLOCK` of mapped memory yet, the first time results
were pooled. glibc's malloc maps each block above its threshold afresh (page faults on first
touch), and raises that threshold to the size of every mapped block freed (up to 32 MiB; the
heap then keeps twice that free): before their activations were pooled, a network's runs freed
large ones and the smaller arrays after them (the ONNX ops' results, temporaries under 1 MiB)
came from the heap. Pooled, nothing large is freed any more, so one block is freed here
instead, as any program freeing a 16 MiB array would (npconv.onnx's ResNet-18 at batch 1:
1,450 page faults a run without it, 2-3 with it, as before the pooling). Other allocators
lose an untouched allocation's time."""


def result(shape: tuple[int, ...], dtype: Any, xp: ModuleType = np) -> Any:
    """An uninitialized array for an op's result: `xp.empty`, or, inside `pooled_results` and
    from `Tuning.scratch_min_bytes` up (NumPy only), memory from the pool (a free buffer of at
    most twice its size, else a new one). It is the caller's from then on, like any result."""
    dtype = np.dtype(dtype)
    nbytes = math.prod(shape) * dtype.itemsize
    mine = _results.get()
    if xp is not np or mine is None or nbytes < mine.min_bytes:
        return xp.empty(shape, dtype=dtype)
    with _lock:
        raw = _fit(nbytes)
        if raw is None:
            raw = np.empty(nbytes, dtype=np.uint8)
        owner = raw if raw.base is None else raw.base            # what views of it point to
        _lent[id(owner)] = (weakref.ref(owner, _forget(id(owner))), nbytes)
    return raw[:nbytes].view(dtype).reshape(shape)


def _forget(key: int) -> Any:
    """The callback that drops `_lent[key]` when the memory it names is freed (no lock: it may
    run on a thread that holds it)."""
    def forget(_: Any) -> None:
        _lent.pop(key, None)
    return forget


def recycle(value: Any) -> bool:
    """Inside `pooled_results`, give the memory of a dead result back to the pool (whether
    `result` or plain NumPy allocated it); True if it was taken.

    The caller guarantees that nothing reads `value`, or any other view of its memory, from
    now on: the next result may overwrite it. Only the whole of a writable NumPy array that
    owns its data, all of it in one block (C-contiguous up to the order of its axes, as
    NumPy's ufuncs lay out a result of transposed operands), of `Tuning.scratch_min_bytes` or
    more, is taken: that array itself, a view of all of it (a transpose, a reshape), or a view
    of all of a result that `result` carved from it (which may use less than all of it).
    Anything else (object arrays too), and memory that is in the pool already, is left
    alone."""
    mine = _results.get()
    if mine is None or type(value) is not np.ndarray or value.dtype.hasobject:
        return False
    owner = value if value.base is None else value.base
    if (type(owner) is not np.ndarray or owner.base is not None or not owner.flags.owndata
            or not owner.flags.writeable or not value.flags.writeable
            or owner.nbytes < max(mine.min_bytes, 1)):
        return False
    lent = _lent.get(id(owner))
    whole = owner.nbytes if lent is None or lent[0]() is not owner else lent[1]
    block = owner.transpose(np.argsort(owner.strides, kind="stable")[::-1])
    if value.nbytes != whole or not block.flags.c_contiguous:
        return False
    raw = block.reshape(-1).view(np.uint8)                       # (nbytes,) view of owner
    with _lock:
        if id(owner) in _pooled:                                 # given back already
            return False
        _pooled.add(id(owner))
        _lent.pop(id(owner), None)
    _give_back([raw], 0, mine.limit, held=False)
    return True


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
        _pooled.clear()


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3                   # glibc's mallopt (malloc.h)
_MIN_MMAP_THRESHOLD = 32 * 2**20                                 # glibc's dynamic maximum


def keep_freed_memory(limit: int = 2**30) -> bool:
    """Have the C library's malloc keep up to `limit` bytes of freed memory for reuse instead of
    giving it back to the system, for the rest of the process (`npconv.keep_freed_memory`).

    npconv's own temporaries come from its workspace pool, but every op's output is a new
    array, and with glibc's default settings a block of a few MiB or more is mapped afresh
    (and page-faulted on first touch, about half a millisecond per MiB on the benchmark VM) or
    reused, depending on what was freed before it. This sets glibc's M_MMAP_THRESHOLD (blocks
    up to it come from the heap: `limit`, or the largest power-of-two fraction of it glibc
    accepts, at least 32 MiB) and M_TRIM_THRESHOLD (`limit`: the heap keeps that much free
    memory), the `mallopt` equivalent of the environment variables MALLOC_MMAP_THRESHOLD_ and
    MALLOC_TRIM_THRESHOLD_. Measured on the 2-core VM: MobileNetV2's batch-16 inference at
    224x224 252-291 -> 225-229 ms (3100 page faults per call -> 6), batch norm forward and
    backward on 32x56x56x64 float32 with new outputs 23-27 -> 13-18 ms. It changes malloc for
    everything in the process (PyTorch's tensors too) and cannot be undone short of a restart;
    the process's memory then stays up to `limit` above what it uses.

    Parameters
    ----------
    limit : int
        Bytes, from 32 MiB to 2**31 - 1 (mallopt takes a C int).

    Returns
    -------
    bool
        True when both settings took; False, with a RuntimeWarning, where the C library has no
        glibc-style mallopt (macOS, Windows, musl): nothing changed.

    Examples
    --------
    >>> import npconv
    >>> npconv.keep_freed_memory()     # doctest: +SKIP
    True
    """
    if not _args.is_int(limit):
        raise TypeError(f"`limit` must be an int (bytes); got {limit!r}")
    if not _MIN_MMAP_THRESHOLD <= limit <= 2**31 - 1:
        raise ValueError(f"`limit` must be in [{_MIN_MMAP_THRESHOLD}, {2**31 - 1}] bytes "
                         f"(32 MiB to mallopt's C int); got {limit}")
    limit = int(limit)
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, TypeError, AttributeError):                # no C library, or no mallopt
        mallopt = None
    if mallopt is not None:
        mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
        size = limit
        while size >= _MIN_MMAP_THRESHOLD and not mallopt(_M_MMAP_THRESHOLD, size):
            size //= 2                                           # older glibc: at most 32 MiB
        if size >= _MIN_MMAP_THRESHOLD and mallopt(_M_TRIM_THRESHOLD, limit):
            return True
    warnings.warn("npconv.keep_freed_memory: the C library has no glibc-style mallopt; malloc's "
                  "settings are unchanged", RuntimeWarning, stacklevel=2)
    return False


def pooled_bytes() -> int:
    """Bytes of free buffers held by the pool now."""
    with _lock:
        return sum(raw.nbytes for raw in _free)


def _take(nbytes: int, limit: int) -> np.ndarray:
    """The smallest free buffer of at least nbytes (at most twice that), else a new one,
    counted as in use."""
    with _lock:
        raw = _fit(nbytes)
        if raw is not None:
            _held[0] += raw.nbytes
            return raw
        _reserve(nbytes, limit)
    return np.empty(nbytes, dtype=np.uint8)


def _fit(nbytes: int) -> np.ndarray | None:
    """Take the smallest free buffer of at least nbytes (at most twice that) out of the pool,
    if there is one. The caller holds `_lock`."""
    fits = [i for i, raw in enumerate(_free) if nbytes <= raw.nbytes <= 2 * nbytes]
    if not fits:
        return None
    return _pop(min(fits, key=lambda i: _free[i].nbytes))


def _pop(i: int) -> np.ndarray:
    """Take `_free[i]` out of the pool. The caller holds `_lock`."""
    raw = _free.pop(i)
    _pooled.discard(id(raw if raw.base is None else raw.base))
    return raw


def _reserve(nbytes: int, limit: int) -> None:
    """Count nbytes of new memory as in use, dropping free buffers (least recently used first)
    while the pool and it would exceed `limit`. The caller holds `_lock`."""
    free = sum(raw.nbytes for raw in _free)
    while _free and free + _held[0] + nbytes > limit:
        free -= _pop(0).nbytes
    _held[0] += nbytes


def _give_back(raws: list[np.ndarray], plain: int, limit: int, held: bool = True) -> None:
    """Return buffers to the pool (and stop counting them, if `held`, and `plain` bytes of
    plain allocations as in use), then drop the least recently used free ones while the pool
    (free and still in use) exceeds `limit`."""
    with _lock:
        _held[0] -= (sum(raw.nbytes for raw in raws) if held else 0) + plain
        _free.extend(raws)
        total = sum(raw.nbytes for raw in _free) + _held[0]
        while _free and total > limit:
            total -= _pop(0).nbytes
