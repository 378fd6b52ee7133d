"""Memory chunks and the worker threads that run them.

Every chunked algorithm walks the output in chunks of whole images, or of output rows of one
image when an image's temporaries exceed the chunk size; a chunk is a pair of slices
`(batch, rows)` that indexes any array whose leading axes are (N, P0, ...) (the output, dy, the
window view), so one chunk is always a contiguous block of the output (Winograd's chunks are
triples, (images, planes, tile rows), planned by `algorithms.winograd`; `run` takes any).
`plan` sizes the chunks so that every worker's buffers fit in its share of the workspace limit,
and `run` calls a task on every chunk from `threads` workers: the calling thread plus a shared
pool. NumPy releases the GIL
inside copies, ufuncs and BLAS calls, so the workers overlap.

While workers run, BLAS is held to one thread (through threadpoolctl, when installed): two
levels of threads would oversubscribe the cores, and multi-threaded OpenBLAS has a worse side
effect, its threads keep spinning for about 0.1 s after each call, waiting for more work, on
the very cores the workers of the next step need (measured on the benchmark machine: a
worker-run forward took 28 ms after a pause and 45 ms right after a two-threaded GEMM). So every
algorithm, GEMM-bound or not, runs its chunks on the workers, and BLAS calls of an op outside
`run` (the bias gradient) hold BLAS to one thread too (`single_blas`). Small layers (forward
window matrix under `MIN_PARALLEL_BYTES`; `serial_layer`, decided once for a layer's forward and
both gradients, so that they never mix the two regimes) run serially instead, BLAS threading
their GEMMs: waking a parked worker costs more than it saves there, while OpenBLAS's spinning
threads answer at once.
With `threads=1` BLAS is held to one thread throughout. Without threadpoolctl, or on CuPy,
chunks run one after another on the calling thread and BLAS keeps its own threads.

Work is dealt to the workers round-robin in a fixed order (by image, for plans whose chunks may
not share an image between workers; as one contiguous span per worker for `plan_spans`) and
per-worker partial sums are added in worker order, so results are reproducible for a given
thread count.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from npconv import _backend, _config

try:                                                             # optional dependency
    from threadpoolctl import ThreadpoolController
except ImportError:                                              # pragma: no cover
    ThreadpoolController = None

CHUNK_BYTES = 4 * 2**20
"""Target size of one worker's temporaries per chunk: large enough to amortize Python overhead
and keep GEMMs efficient, small enough to stay in the last-level cache."""

MIN_PARALLEL_BYTES = 16 * 2**20
"""Layers whose forward window matrix is smaller than this run serially, BLAS threading their
GEMMs (`serial_layer`): workers cost more than they save there (LeNet-sized layers: 20 to 40%
slower on two workers). Copies smaller than this stay on one thread too (`copyto`)."""

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas = {"controller": None, "depth": 0, "limiter": None, "lock": threading.Lock()}


def plan(n: int, rows: int, row_bytes: int, settings, *, xp=np, whole_images: bool = False,
         fixed_bytes: int = 0, chunk_bytes: int | None = None):
    """Chunks (batch slice, row slice) and the number of workers for one op.

    Parameters
    ----------
    n, rows : int
        N and P0, the leading output axes.
    row_bytes : int
        Bytes of temporaries one output row (one n, one p0) needs.
    settings : _config.Settings
        Workspace limit and thread count.
    whole_images : bool
        No two workers may write to the same image (scatters spill across chunk borders). When
        an image alone exceeds the chunk size, its rows are chunked and all of an image's chunks
        go to one worker, in order (images dealt round-robin).
    fixed_bytes : int
        Temporaries allocated once per worker whatever the chunk size (accumulators).
    chunk_bytes : int, optional
        Target temporaries per chunk, at most `CHUNK_BYTES` (the default); on CuPy a worker's
        whole share of the workspace (`chunk_target`).
    """
    workers = _workers(settings, xp, n * rows, row_bytes + fixed_bytes)
    share = max(settings.workspace // workers - fixed_bytes, row_bytes)
    per_chunk = max(1, chunk_target(target_bytes(chunk_bytes), share, xp) // row_bytes)
    if per_chunk >= rows:
        images = min(per_chunk // rows, -(-n // workers))
        chunks = [(slice(i, min(i + images, n)), slice(0, rows)) for i in range(0, n, images)]
    else:
        if n < workers:                                          # give every worker rows
            per_chunk = min(per_chunk, -(-rows * n // workers))
        chunks = [(slice(i, i + 1), slice(r, min(r + per_chunk, rows)))
                  for i in range(n) for r in range(0, rows, per_chunk)]
        if whole_images:
            return _ByImage(chunks), max(1, min(workers, n))
    return chunks, max(1, min(workers, len(chunks)))


def _workers(settings, xp, units: int, unit_bytes: int) -> int:
    """Workers for `units` pieces of work: the thread count in force, at most one per piece,
    and as many as the workspace holds `unit_bytes` of temporaries for."""
    return max(1, min(worker_count(settings, xp), units,
                      settings.workspace // max(unit_bytes, 1)))


def target_bytes(chunk_bytes: int | None = None) -> int:
    """A chunk's target temporaries on the CPU: `chunk_bytes`, at most `CHUNK_BYTES`."""
    return CHUNK_BYTES if chunk_bytes is None else min(chunk_bytes, CHUNK_BYTES)


def chunk_target(target: int, share: int, xp=np) -> int:
    """Bytes of temporaries per chunk: `target`, sized for the CPU's caches, within a worker's
    `share` of the workspace. On other array modules (CuPy) the whole share: a GPU has no such
    cache to fit, and every chunk costs a round of kernel launches (on an H100 the ResNet 3x3
    layer's fwd+bwd took 380 ms in 1 MiB chunks, 3.7 ms in whole shares: docs/engines.md)."""
    return min(target, share) if xp is np else share


def worker_count(settings, xp=np) -> int:
    """Workers an op may use: the thread count in force, or 1 where chunks run serially
    (without threadpoolctl, or on CuPy)."""
    return settings.threads if _parallel_ok(xp) else 1


def serial_layer(spec, itemsize: int) -> bool:
    """Whether all three computations of the layer `spec` run serially with BLAS threads.

    Decided once per layer, from its forward window matrix (N*P x prod(K)*C, whatever the
    algorithm), so that a layer's forward and gradients never mix BLAS-threaded steps with
    worker-run ones: OpenBLAS's threads keep spinning after a call, on the cores the workers
    need (see the module docstring). The forward's matrix is also the size of the input
    gradient's scatter (dcols) and of the weight gradient's; only the stride-1 input gradient,
    a full correlation, reads a larger one (N*Sp x prod(K)*F). Counting that one too put the
    LeNet layers on the workers, 20 to 40% slower.
    """
    windows = math.prod(spec.out_size) * math.prod(spec.kernel_size) * spec.in_channels
    return spec.batch * windows * itemsize < MIN_PARALLEL_BYTES


class _ByImage(list):
    """Chunks of image rows to be dealt to workers by image: worker i takes every chunk of the
    images i, i + workers, ..."""

    def deal(self, i: int, workers: int) -> list:
        return [c for c in self if c[0].start % workers == i]


def plan_spans(n: int, rows: int, worker_bytes: int, settings, *, xp=np):
    """Chunks and workers for tasks whose temporaries do not grow with the chunk: the N * P0
    output rows, in order, cut into one contiguous span per worker (their lengths differ by at
    most one), and each span into its pieces of one image, `(batch, rows)` pairs. A task that
    loads a halo at the start of every chunk (`im2col`'s depth ring) loads it at every image
    start and wherever a span starts inside an image, no more. `worker_bytes`: one worker's
    temporaries, which bound the worker count."""
    workers = _workers(settings, xp, n * rows, worker_bytes)
    bounds = [n * rows * i // workers for i in range(workers + 1)]
    spans = []
    for start, stop in itertools.pairwise(bounds):
        pieces = []
        while start < stop:
            image, first = divmod(start, rows)
            end = min(stop, (image + 1) * rows)
            pieces.append((slice(image, image + 1), slice(first, end - image * rows)))
            start = end
        spans.append(pieces)
    return _Spans(spans), workers


class _Spans(list):
    """The chunks of `plan_spans`, in order; worker i takes the pieces of span i."""

    def __init__(self, spans):
        super().__init__(c for span in spans for c in span)
        self.spans = spans

    def deal(self, i: int, workers: int) -> list:
        return self.spans[i]


def rows_of(chunk, out_size) -> int:
    """Output positions in a chunk: images x rows x prod(P[1:])."""
    batch, rows = chunk
    return (batch.stop - batch.start) * (rows.stop - rows.start) * math.prod(out_size[1:])


def run(task, chunks, workers: int, make_state):
    """Call task(chunk, state) on every chunk; return the states, one per worker, in order.

    `make_state()` builds one worker's buffers and accumulators (in the calling thread, so that
    scratch memory comes from its `_workspace.scope`); chunk i goes to worker i % workers
    (for `_ByImage` chunks, every chunk of image j to worker j % workers; for `plan_spans`'
    chunks, span i to worker i), and each worker processes its chunks in order.
    """
    states = [make_state() for _ in range(workers)]
    if workers == 1:
        for chunk in chunks:
            task(chunk, states[0])
        return states

    def work(i):
        mine = chunks.deal(i, workers) if hasattr(chunks, "deal") else chunks[i::workers]
        for chunk in mine:
            task(chunk, states[i])

    pool = _executor(workers - 1)
    with _blas_single_thread():
        futures = [pool.submit(work, i) for i in range(1, workers)]
        try:
            work(0)
        finally:
            for f in futures:                                    # wait for all, even on error
                f.result()
    return states


def contiguous(a):
    """a itself when C-contiguous, else a C-contiguous copy made by the workers (NumPy copies,
    the transposing ones of channels_first arrays above all, run on one core)."""
    if a.flags.c_contiguous:
        return a
    out = _backend.namespace(a).empty(a.shape, dtype=a.dtype)
    copyto(out, a)
    return out


def copyto(dst, src) -> None:
    """dst[...] = src (same shape), split along the first axis among the workers when it is
    large enough (`MIN_PARALLEL_BYTES`)."""
    xp = _backend.namespace(dst)
    n = dst.shape[0] if dst.ndim else 1
    workers = worker_count(_config.resolve(None), xp)
    if dst.nbytes < MIN_PARALLEL_BYTES or min(workers, n) < 2:
        xp.copyto(dst, src)
        return
    workers = min(workers, n)
    step = -(-n // workers)
    parts = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    run(lambda part, _: xp.copyto(dst[part], src[part]), parts, len(parts), lambda: None)


def _parallel_ok(xp) -> bool:
    return xp is np and _controller() is not None


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < size:
            _pool = ThreadPoolExecutor(size, thread_name_prefix="npconv")
        return _pool


def _controller():
    """threadpoolctl's view of the loaded BLAS libraries, or None without threadpoolctl."""
    if ThreadpoolController is None:
        return None
    if _blas["controller"] is None:
        _blas["controller"] = ThreadpoolController().select(user_api="blas")
    return _blas["controller"]


def single_blas(xp=np):
    """A context holding BLAS to one thread (see the module docstring), or doing nothing without
    threadpoolctl or on CuPy. Nests: the original limits come back at the outermost exit."""
    return _blas_single_thread() if _parallel_ok(xp) else contextlib.nullcontext()


class _blas_single_thread:
    """Hold BLAS to one thread (reference counted, so that overlapping calls from several user
    threads restore the original count once)."""

    def __enter__(self):
        with _blas["lock"]:
            if _blas["depth"] == 0:
                _blas["limiter"] = _controller().limit(limits=1)
            _blas["depth"] += 1

    def __exit__(self, *exc):
        with _blas["lock"]:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                _blas["limiter"].restore_original_limits()
                _blas["limiter"] = None
