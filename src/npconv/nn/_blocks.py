"""Cache-sized blocks of large arrays, and the worker threads that process them.

The layer ops of `activation`, `normalization`, `resample` and `merge` are a few elementwise
passes and per-channel sums. NumPy runs each ufunc on one core and an array of activations is
larger than the caches, so each op walks its arrays in blocks of about `Tuning.block_bytes`
(all of an op's passes over one block run while it is in cache) and deals the blocks to
npconv's worker threads (NumPy releases the GIL inside ufunc loops and BLAS calls, so the
workers overlap). Arrays under `Tuning.block_parallel_bytes` run on the calling thread:
waking a worker costs more than it saves there. The threads are the convolutions' pool: `run`
is the one place that calls `npconv._chunks`, whose `run` holds BLAS to one thread while the
workers run.
"""

from __future__ import annotations

import contextlib

import numpy as np

from npconv import _args, _backend, _chunks, _config, _workspace


def block_bytes() -> int:
    """Bytes of the largest operand per block (`Tuning.block_bytes` of the settings in force)."""
    return _config.current().tuning.block_bytes


def spans(n: int, unit_bytes: int, block: int | None = None) -> list[slice]:
    """range(n) cut into the fewest slices of at most `block` (default `block_bytes()`) /
    `unit_bytes` units each (at least 1), of equal lengths give or take one.

    Equal lengths matter because `run` deals the slices round-robin: with a short remainder
    slice at the end of every image, one worker got all the long slices (MobileNetV2's
    16x56x56x96 activations, 1.2 MiB an image in 1 MiB blocks: one worker had 86% of batch
    norm's work).

    >>> spans(10, 4, block=16)
    [slice(0, 3, None), slice(3, 6, None), slice(6, 10, None)]
    """
    step = max(1, (block or block_bytes()) // max(unit_bytes, 1))
    return _chunks.equal_slices(n, -(-n // step))


def run(task, chunks: list, nbytes: int, make_state=lambda: None) -> list:
    """Call task(chunk, state) on every chunk; return the per-worker states, in order.

    On the worker threads when the op's largest operand has `nbytes` >=
    `Tuning.block_parallel_bytes` (and there are workers: `npconv.set_config(threads=...)`,
    threadpoolctl installed), else on the calling thread. Chunk i goes to worker i % workers,
    and each worker processes its chunks in order, so results do not depend on timing. Inside a
    `_workspace.scope` where blocks can be large enough to pool (`Tuning.scratch_min_bytes`):
    the states' `Scratch` buffers go back to the pool at the end (a state's other attributes,
    accumulators, stay the caller's). The one call into `npconv._chunks`.
    """
    settings = _config.current()
    pooled = nbytes >= settings.tuning.scratch_min_bytes        # smaller: no buffer to pool
    with _workspace.scope(settings) if pooled else contextlib.nullcontext():
        if nbytes < settings.tuning.block_parallel_bytes or len(chunks) < 2:
            state = make_state()                                 # no plan: the common small op
            for chunk in chunks:
                task(chunk, state)
            return [state]
        workers = _chunks.worker_count(_config.resolve(None))
        return _chunks.run(task, _chunks.Plan.round_robin(chunks, workers), make_state)


def compute_dtype(dtype) -> np.dtype:
    """The dtype a block is computed in: float32 for float16 (rounded once, at the end, as
    PyTorch's half-precision CPU ops do), else the dtype itself."""
    return _args.compute_dtype(np.dtype(dtype))


def contiguous(x):
    """x when C-contiguous, else a C-contiguous copy (blocks are flat slices of memory)."""
    return x if x.flags.c_contiguous else np.ascontiguousarray(x)


def sum_last(a, ones):
    """a's sums over its last axis, a BLAS product with `ones` (at least that long); for an
    axis of one entry, that entry (a view): NumPy's matmul does not call BLAS for one column
    or one row (200K values: 390 us against 50 for a copy)."""
    n = a.shape[-1]
    return a[..., 0] if n == 1 else np.matmul(a, ones[:n])


def sum_rows(a, ones):
    """a's sums over its second-to-last axis (ones @ a), like `sum_last`."""
    k = a.shape[-2]
    return a[..., 0, :] if k == 1 else np.matmul(ones[None, :k], a)[..., 0, :]


# ---------------------------------------------------------------------------------------------
# Arguments shared by the ops: arrays of one shape and dtype, and an optional `out`
# ---------------------------------------------------------------------------------------------


def float_array(a, name: str):
    """`_args.float_array`, NumPy only: these ops run NumPy's ufuncs and BLAS on the CPU (on
    a GPU, npconv.nn.functional's ops take CuPy arrays)."""
    _args.float_array(a, name)
    if _backend.is_gpu(a):
        raise TypeError(f"`{name}` must be a numpy.ndarray (these layer ops run on the CPU); "
                        "got a CuPy array")
    return a


def check_like(a, ref, name: str, ref_name: str = "x") -> None:
    """TypeError / ValueError unless `a` is a float array of ref's shape and dtype."""
    float_array(a, name)
    if tuple(a.shape) != tuple(ref.shape):
        raise ValueError(f"`{name}` must have the shape of `{ref_name}`, {tuple(ref.shape)}; "
                         f"got {tuple(a.shape)}")
    if a.dtype != ref.dtype:
        raise TypeError(f"`{name}` must have the dtype of `{ref_name}`, {ref.dtype}; "
                        f"got {a.dtype}")


def output(out, ref, inputs: tuple = ()):
    """The array an op writes: a new C-contiguous array like `ref`, or the caller's `out`.

    `out` must be a writeable C-contiguous array of ref's shape and dtype, and either be one of
    `inputs` (the op then works in place: each block is read before it is written) or share no
    memory with them.
    """
    if out is None:
        return np.empty(ref.shape, dtype=ref.dtype)
    if not isinstance(out, np.ndarray):
        raise TypeError(f"`out` must be a numpy.ndarray; got {type(out).__name__}")
    check_like(out, ref, "out")
    if not out.flags.c_contiguous or not out.flags.writeable:
        raise ValueError("`out` must be a writeable C-contiguous array; got one that is "
                         f"{'not C-contiguous' if out.flags.writeable else 'read-only'}")
    for a in inputs:
        if a is not out and np.may_share_memory(a, out) and not _same_memory(a, out):
            raise ValueError("`out` must be one of the inputs or share no memory with them; "
                             "got an array that overlaps an input")
    return out


def _same_memory(a, b) -> bool:
    """a and b view the same bytes in the same layout (b is C-contiguous, like a's shape)."""
    return (a.flags.c_contiguous and a.shape == b.shape and a.dtype == b.dtype
            and a.__array_interface__["data"][0] == b.__array_interface__["data"][0])


# ---------------------------------------------------------------------------------------------
# Elementwise maps
# ---------------------------------------------------------------------------------------------


class Scratch:
    """One worker's temporaries: block-sized float buffers (in the compute dtype) and bool
    buffers, made on first use and reused for every block the worker takes. They come from the
    workspace pool (`run` opens a scope), so the next call reuses them: fresh, they
    page-faulted on every call (a 16x7x7x384 batch norm backward 1.55 ms, 0.41 pooled)."""

    def __init__(self, dtype, size: int) -> None:
        self.dtype, self.size = dtype, size
        self._bufs: dict = {}

    def float(self, i, n: int):
        """Float temporary `i` (any hashable name), n elements (n <= the block size)."""
        return self._get(("f", i), self.dtype)[:n]

    def bool(self, i, n: int):
        """Bool temporary `i`, n elements."""
        return self._get(("b", i), bool)[:n]

    def load(self, i, a):
        """Float temporary `i` holding a copy of the block `a` (cast to the compute dtype),
        shaped like a."""
        buf = self.float(("load", i), a.size).reshape(a.shape)
        buf[...] = a
        return buf

    def _get(self, key, dtype):
        if key not in self._bufs:
            self._bufs[key] = _workspace.scratch((self.size,), dtype)  # (block,)
        return self._bufs[key]


def map_blocks(kernel, inputs: tuple, out, *, exact: bool = False):
    """out = kernel(*inputs), elementwise, in flat blocks of `block_bytes()` on the workers.

    `kernel(o, *ins, scratch)` writes block o from the input blocks (1-D, of one length) and
    may use `scratch` (a `Scratch`); `out` may also be a tuple of arrays, the kernel then
    takes one block of each first, kernel(o1, o2, ..., *ins, scratch). The inputs are
    C-contiguous arrays of out's shape and dtype; an output may be one of them. float16
    blocks are computed in float32 and rounded once into out, unless `exact` (the kernel only
    selects or compares values: computing in float16 gives the same bits). Returns out.
    """
    outs = out if isinstance(out, tuple) else (out,)
    half = outs[0].dtype == np.float16 and not exact
    work = compute_dtype(outs[0].dtype) if half else outs[0].dtype
    flat = [a.reshape(-1) for a in inputs]                       # (size,) views
    flat_out = [o.reshape(-1) for o in outs]                     # (size,) views
    size = flat_out[0].size
    step = max(1, block_bytes() // work.itemsize)

    def task(s, scratch):
        if not half:
            kernel(*(o[s] for o in flat_out), *(a[s] for a in flat), scratch)
            return
        res = [scratch.float(("out", i), s.stop - s.start) for i in range(len(outs))]
        kernel(*res, *(scratch.load(i, a[s]) for i, a in enumerate(flat)), scratch)
        for o, r in zip(flat_out, res):
            o[s] = r                                             # rounded once to float16

    run(task, spans(size, 1, step), size * work.itemsize,
        lambda: Scratch(work, min(step, max(size, 1))))
    return out
