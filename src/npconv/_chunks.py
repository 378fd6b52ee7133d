"""Memory chunks and the worker threads that run them.

An algorithm walks the output in chunks: whole images, output rows of one image when an image's
temporaries exceed the chunk size, and for im2col blocks of kernel offsets of one output row
when even one row does not fit. A `Chunk` is three slices, (batch, rows, taps): batch and rows
index any array whose leading axes are (N, P0, ...) (the output, dy, the window view), so a
chunk is always a contiguous block of the output; taps is a range of kernel offsets in raster
order. `plan` sizes the chunks so that every worker's buffers fit in its share of the workspace
limit and says which worker runs each one; `run` calls a task on every chunk from that many
workers: the calling thread plus a shared pool. NumPy releases the GIL inside copies, ufuncs
and BLAS calls, so the workers overlap.

While workers run, BLAS is held to one thread (through threadpoolctl, when installed): two
levels of threads would oversubscribe the cores, and multi-threaded OpenBLAS has a worse side
effect, its threads keep spinning for about 0.1 s after each call, waiting for more work, on
the very cores the workers of the next step need (measured on the benchmark machine: a
worker-run forward took 28 ms after a pause and 45 ms right after a two-threaded GEMM). So every
algorithm runs its chunks on the workers, and BLAS calls of an op outside `run` (the bias
gradient) hold BLAS to one thread too (`single_blas`). Small layers (`serial_layer`, decided
once for a layer's forward and both gradients, so that they never mix the two regimes) run
serially instead, BLAS threading their GEMMs: waking a parked worker costs more than it saves
there, while OpenBLAS's spinning threads answer at once. A network's forward and backward
(`network_pass`) put all but their smallest layers on the workers instead, and hold BLAS to
one thread from the first of them to the end of the pass. With `threads=1` BLAS is held to one
thread throughout. Without threadpoolctl, or on CuPy, chunks run one after another on the
calling thread and BLAS keeps its own threads.

A forked child process starts with no pool and no BLAS limit in force (`_after_fork`): the
parent's worker threads do not exist there, and a pool object copied from the parent would
queue work that no thread ever runs.

Chunks are dealt to the workers in a fixed order (round-robin; all chunks of an image to one
worker for scatters, whose chunks spill into their neighbours' rows; all tap blocks of an output
row to one worker, which adds them up in order) and per-worker partial sums are added in worker
order, so results are reproducible for a given thread count.
"""

from __future__ import annotations

import contextlib
import contextvars
import functools
import math
import os
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from types import ModuleType
from typing import Any, NamedTuple

import numpy as np

from npconv import _backend
from npconv._config import Settings, resolve, tuned
from npconv.spec import ConvSpec

try:                                                             # optional dependency
    from threadpoolctl import ThreadpoolController
except ImportError:                                              # pragma: no cover
    ThreadpoolController = None

_pool: ThreadPoolExecutor | None = None
_pool_lock = threading.Lock()
_blas: dict[str, Any] = {"controller": None, "depth": 0, "limiter": None,
                         "lock": threading.Lock()}


def _after_fork() -> None:
    """In a forked child: a new, empty pool and fresh locks (the parent's threads, and any
    lock one of them held at the fork, are gone); BLAS limits that threads of the parent held
    are given back."""
    global _pool, _pool_lock
    _pool, _pool_lock = None, threading.Lock()
    limiter = _blas["limiter"]
    _blas.update(depth=0, limiter=None, lock=threading.Lock())
    if limiter is not None:
        limiter.restore_original_limits()


if hasattr(os, "register_at_fork"):                              # not on Windows
    os.register_at_fork(after_in_child=_after_fork)


class Chunk(NamedTuple):
    """Images `batch`, output rows `rows` (first spatial axis) and kernel offsets `taps`."""

    batch: slice
    rows: slice
    taps: slice

    def positions(self, out_size: tuple[int, ...]) -> int:
        """Output positions in the chunk: images x rows x prod(P[1:])."""
        n, r = self.batch.stop - self.batch.start, self.rows.stop - self.rows.start
        return n * r * math.prod(out_size[1:])


@dataclass(frozen=True)
class Plan:
    """Chunks in order, the worker that runs each, and the number of workers."""

    chunks: tuple[Any, ...]                                      # Chunk, from `plan`
    owners: tuple[int, ...]
    workers: int

    def most(self, out_size: tuple[int, ...]) -> int:
        """Output positions of the largest chunk (buffers are sized for it)."""
        return max(c.positions(out_size) for c in self.chunks)

    def most_taps(self) -> int:
        """Kernel offsets of the widest chunk."""
        return max(c.taps.stop - c.taps.start for c in self.chunks)

    @classmethod
    def round_robin(cls, chunks: Sequence[Any], workers: int) -> Plan:
        """A plan of any chunks (`run` passes them to the task as they are), chunk i to worker
        i % workers: for callers that cut their own work (copies, layer ops)."""
        workers = max(1, min(workers, len(chunks)))
        return cls(tuple(chunks), tuple(i % workers for i in range(len(chunks))), workers)


def plan(n: int, rows: int, settings: Settings, *, row_bytes: int, tap_bytes: int = 0,
         taps: int = 1, fixed_bytes: int = 0, chunk_bytes: int | None = None,
         by_image: bool = False, xp: ModuleType = np) -> Plan:
    """Chunks of the N x P0 output rows and their workers for one computation.

    A chunk of r rows and t kernel offsets needs r * (row_bytes + t * tap_bytes) bytes of
    temporaries; `fixed_bytes` more per worker whatever the chunk (accumulators). Chunks are
    whole images when an image fits a chunk target (`chunk_bytes`, by default
    `Tuning.chunk_bytes`, within a worker's share of the workspace), else rows of one image,
    else, when one row
    exceeds the worker's share and `tap_bytes` > 0, blocks of one row's kernel offsets. With
    `by_image`, no two workers ever write to the same image (scatters spill across chunk
    borders).
    """
    full_row = row_bytes + taps * tap_bytes
    split = tap_bytes and full_row + fixed_bytes > settings.workspace   # rows need tap blocks
    smallest = row_bytes + tap_bytes if split else full_row
    if smallest + fixed_bytes > settings.workspace:
        warnings.warn(f"the workspace limit ({settings.workspace} bytes) is smaller than this "
                      f"computation's least temporaries ({smallest + fixed_bytes} bytes: one "
                      f"output row's and the accumulators); it uses those", RuntimeWarning,
                      stacklevel=4)
    return _cut(n, rows, settings, row_bytes, tap_bytes, taps, fixed_bytes, chunk_bytes,
                by_image, xp, int(smallest), bool(split))


@functools.lru_cache(maxsize=512)
def _cut(n: int, rows: int, settings: Settings, row_bytes: int, tap_bytes: int, taps: int,
         fixed_bytes: int, chunk_bytes: int | None, by_image: bool, xp: ModuleType,
         smallest: int, split: bool) -> Plan:
    """`plan`'s chunks, once per geometry and settings (a layer asks for the same plan call
    after call)."""
    full_row = row_bytes + taps * tap_bytes
    workers = _workers(settings, xp, n * rows, smallest + fixed_bytes)
    share = max(settings.workspace // workers - fixed_bytes, 1)
    target = chunk_target(chunk_bytes or settings.tuning.chunk_bytes, share, xp)
    per_chunk = target // max(full_row, 1)
    every = slice(0, taps)
    if per_chunk >= rows:
        step = min(per_chunk // rows, -(-n // workers))
        chunks = [Chunk(images, slice(0, rows), every)
                  for images in equal_slices(n, _dealt(-(-n // step), 1, workers, n))]
    elif full_row <= share or not tap_bytes:                     # a row may exceed the target
        per_chunk = max(per_chunk, 1)
        if n < workers:                                          # give every worker rows
            per_chunk = min(per_chunk, -(-rows * n // workers))
        parts = equal_slices(rows, _dealt(-(-rows // per_chunk), n, workers, rows))
        flipped = parts if by_image else parts[::-1]             # longer parts alternate
        chunks = [Chunk(slice(i, i + 1), part, every) for i in range(n)
                  for part in (flipped if i % 2 else parts)]
    else:                                                        # one row exceeds the share
        block = max((target - row_bytes) // tap_bytes, 1)
        chunks = [Chunk(slice(i, i + 1), slice(r, r + 1), slice(t, min(t + block, taps)))
                  for i in range(n) for r in range(rows) for t in range(0, taps, block)]
    workers = max(1, min(workers, len(chunks)))
    return Plan(tuple(chunks), _owners(chunks, workers, by_image), workers)


def _dealt(count: int, times: int, workers: int, most: int) -> int:
    """The number of equal parts to cut into, at least `count` (the fewest that keep each
    within its byte target) and at most `most`, raised, where that takes fewer than `workers`
    more, until the `times` * parts chunks deal evenly to the workers: 16 images of 56 rows
    in 40-row chunks are 16 x (28 + 28) rows, not 16 x (40 + 16), which gave one of two
    workers 72% of the rows."""
    for parts in range(count, min(count + workers, most + 1)):
        if times * parts % workers == 0:
            return parts
    return count


def equal_slices(n: int, parts: int) -> list[slice]:
    """range(n) in `parts` slices of equal lengths, give or take one.

    >>> equal_slices(10, 4)
    [slice(0, 2, None), slice(2, 5, None), slice(5, 7, None), slice(7, 10, None)]
    """
    return [slice(i * n // parts, (i + 1) * n // parts) for i in range(parts)]


def _owners(chunks: Sequence[Chunk], workers: int, by_image: bool) -> tuple[int, ...]:
    """Round-robin over groups of chunks that one worker must run: the chunks of one image for
    scatters (`by_image`), the tap blocks of one output row, else every chunk alone."""
    def group(c: Chunk) -> tuple[int, ...]:
        return (c.batch.start,) if by_image else (c.batch.start, c.rows.start)

    groups: dict[tuple[int, ...], int] = {}
    return tuple(groups.setdefault(group(c), len(groups)) % workers for c in chunks)


def _workers(settings: Settings, xp: ModuleType, units: int, unit_bytes: int) -> int:
    """Workers for `units` pieces of work: the thread count in force, at most one per piece,
    and as many as the workspace holds `unit_bytes` of temporaries for."""
    return max(1, min(worker_count(settings, xp), units,
                      settings.workspace // max(unit_bytes, 1)))


def chunk_target(target: float, share: int, xp: ModuleType = np) -> int:
    """Bytes of temporaries per chunk: `target`, sized for the CPU's caches, within a worker's
    `share` of the workspace. On other array modules (CuPy) the whole share: a GPU has no such
    cache to fit, and every chunk costs a round of kernel launches (on an H100 the ResNet 3x3
    layer's fwd+bwd took 380 ms in 1 MiB chunks, 3.7 ms in whole shares: docs/engines.md)."""
    return int(min(target, share)) if xp is np else share


def worker_count(settings: Settings, xp: ModuleType = np) -> int:
    """Workers an op may use: the thread count in force, or 1 where chunks run serially
    (without threadpoolctl, or on CuPy)."""
    return (settings.threads or 1) if _parallel_ok(xp) else 1


PASS_SERIAL_BYTES, PASS_SERIAL_MACS = 2**20, 16 * 2**20
"""In a network pass (`network_pass`) a convolution runs serially only if its forward window
matrix is under 1 MiB and its multiply-adds under 16 million (a depthwise layer has few
multiply-adds for its bytes, a 1x1 expansion many): waking the workers for each of its
computations costs more than they save. The digits CNN's layers (74 KB and 0.6 million,
590 KB and 9.4 million) stay serial: its training step at batch 32 took 5.5-5.6 ms with both
on the workers, 4.8-5.3 with one or both serial."""


class NetworkPass:
    """One pass of a network (`network_pass`): whether BLAS is held to one thread yet."""

    def __init__(self) -> None:
        self.held = False
        self._stack = contextlib.ExitStack()

    def hold_blas(self) -> None:
        """Hold BLAS to one thread from now to the end of the pass."""
        if not self.held:
            self._stack.enter_context(single_blas())
            self.held = True


_PASS: contextvars.ContextVar[NetworkPass | None] = contextvars.ContextVar("npconv_pass",
                                                                           default=None)


def network_pass(x, hold: bool = False) -> contextlib.AbstractContextManager:
    """The settings for a pass of a whole network (a forward, or the backward after it) over
    the batch x, as a context giving the `NetworkPass` (None when it does not apply).

    When x is a NumPy batch of at least one image per worker, every convolution runs on the
    workers except the smallest (`PASS_SERIAL_BYTES`, `PASS_SERIAL_MACS`), and from the first
    that does (from the start with `hold`, as a backward after a forward that held) BLAS is
    held to one thread to the end of the pass (`NetworkPass.hold_blas`); else the settings in
    force. A network whose layers are all that small keeps BLAS's threads for their GEMMs
    (the digits CNN's step: 13% slower with BLAS held to one thread).

    `serial_layer` suits one layer called alone. In a network at batch 16 it mixed the two
    regimes, and OpenBLAS's threads, spinning after each serial layer, slowed the worker-run
    layer after it: ResNet-18's batch-16 inference at 224x224 took 1.63x PyTorch's time with
    the mix and 1.32x all on the workers (benchmarks/models.py, 2 cores). Holding BLAS to one
    thread for the rest of the pass also stops the spinning after the BLAS calls between and
    inside the layers (1x1 layers small enough for one chunk, the classifier, batch norm's
    sums), and a training step gains as much: `benchmarks/network_pass.py`, the pass against
    the per-layer rule paired call by call, medians of 12 rounds: ResNet-18's training step
    (16x112x112) 440 against 522 ms, MobileNetV2's 362 against 388, their batch-16 inference
    at 224x224 423 against 560 and 243 against 364 (against all on the workers without the
    hold, the previous rule for inference, 0.79-0.85x MobileNetV2's time and 0.90-0.94x
    ResNet-18's), the digits CNN at 28x28, batch 64, 33 against 42 ms, and at 8x8, batch 32,
    all its layers serial, 5.0 against 4.8 (0.84-1.43 per pair). A batch smaller than the
    worker count keeps the per-layer rule (ResNet-18's batch-1 inference: 1.57x PyTorch's
    time, against 1.91x on the workers). Used by `nn.Module`'s outermost forward and backward
    and by `npconv.onnx.Evaluator.run`."""
    if not isinstance(x, np.ndarray) or x.ndim < 2 or x.shape[0] < resolve().threads:
        return contextlib.nullcontext()
    return _pass(hold)


@contextlib.contextmanager
def _pass(hold: bool) -> Iterator[NetworkPass]:
    state = NetworkPass()
    token = _PASS.set(state)
    try:
        with tuned(min_parallel_bytes=PASS_SERIAL_BYTES, min_parallel_macs=PASS_SERIAL_MACS), \
                state._stack:
            if hold:
                state.hold_blas()
            yield state
    finally:
        _PASS.reset(token)


def on_the_workers() -> None:
    """A convolution is about to run on the workers: in a network pass, hold BLAS to one
    thread from now on (`network_pass`)."""
    state = _PASS.get()
    if state is not None:
        state.hold_blas()


def serial_layer(spec: ConvSpec, itemsize: int, settings: Settings) -> bool:
    """Whether all three computations of the layer `spec` run serially with BLAS threads
    (on one core where a `network_pass` holds BLAS to one thread).

    Decided once per layer, from its forward window matrix (N*P x prod(K)*C, whatever the
    algorithm) and, in a network pass, its multiply-adds (`Tuning.min_parallel_macs`), so
    that a layer's forward and gradients never mix BLAS-threaded steps with worker-run ones:
    OpenBLAS's threads keep spinning after a call, on the cores the workers need (see the
    module docstring). The forward's matrix is also the size of the input
    gradient's scatter and of the weight gradient's; only the stride-1 input gradient, a
    correlation, reads a larger one (N*Sp x prod(K)*F). Counting that one too put the LeNet
    layers on the workers, 20 to 40% slower.
    """
    windows = math.prod(spec.out_size) * math.prod(spec.kernel_size) * spec.in_channels
    macs = spec.batch * windows * (spec.out_channels // spec.groups)
    return (spec.batch * windows * itemsize < settings.tuning.min_parallel_bytes
            and macs < settings.tuning.min_parallel_macs)


def run(task: Callable[[Any, Any], None], plan: Plan, make_state: Callable[[], Any]
        ) -> list[Any]:
    """Call task(chunk, state) on every chunk; return the states, one per worker, in order.

    `make_state()` builds one worker's buffers and accumulators (in the calling thread); each
    worker processes its chunks (`plan.owners`) in order, in a copy of the caller's context: a
    task sees the caller's `config` and NumPy's `errstate`, and takes scratch memory from its
    `_workspace.scope`.
    """
    states = [make_state() for _ in range(plan.workers)]
    if plan.workers == 1:
        for chunk in plan.chunks:
            task(chunk, states[0])
        return states

    def work(i: int) -> None:
        for chunk, owner in zip(plan.chunks, plan.owners):
            if owner == i:
                task(chunk, states[i])

    pool = _executor(plan.workers - 1)
    with _BlasSingleThread():
        futures = [pool.submit(contextvars.copy_context().run, work, i)
                   for i in range(1, plan.workers)]
        try:
            work(0)
        finally:                 # every worker stops, even on an error, before its buffers
            wait(futures)        # go back to the pool and BLAS gets its threads back
    for f in futures:
        f.result()                                               # a worker's error, if any
    return states


def copyto(dst: Any, src: Any, settings: Settings) -> None:
    """dst[...] = src (same shape, any dtypes NumPy casts safely), split along the first axis
    among the workers when it is large enough (`Tuning.min_parallel_bytes`): NumPy copies, the
    transposing ones of channels_first arrays above all, run on one core."""
    xp = _backend.namespace(dst)
    n = dst.shape[0] if dst.ndim else 1
    workers = min(worker_count(settings, xp), n)
    if dst.nbytes < settings.tuning.min_parallel_bytes or workers < 2:
        xp.copyto(dst, src)
        return
    step = -(-n // workers)
    parts = [slice(i, min(i + step, n)) for i in range(0, n, step)]
    run(lambda part, _: xp.copyto(dst[part], src[part]), Plan.round_robin(parts, workers),
        lambda: None)


def _parallel_ok(xp: ModuleType) -> bool:
    return xp is np and _controller() is not None


def _executor(size: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None or _pool._max_workers < size:
            _pool = ThreadPoolExecutor(size, thread_name_prefix="npconv")
        return _pool


def _controller() -> Any:
    """threadpoolctl's view of the loaded BLAS libraries, or None without threadpoolctl."""
    if ThreadpoolController is None:
        return None
    if _blas["controller"] is None:
        _blas["controller"] = ThreadpoolController().select(user_api="blas")
    return _blas["controller"]


def single_blas(xp: ModuleType = np) -> contextlib.AbstractContextManager[Any]:
    """A context holding BLAS to one thread (see the module docstring), or doing nothing without
    threadpoolctl or on CuPy. Nests: the original limits come back at the outermost exit."""
    return _BlasSingleThread() if _parallel_ok(xp) else contextlib.nullcontext()


class _BlasSingleThread:
    """Hold BLAS to one thread (reference counted, so that overlapping calls from several user
    threads restore the original count once)."""

    def __enter__(self) -> None:
        with _blas["lock"]:
            if _blas["depth"] == 0:
                _blas["limiter"] = _controller().limit(limits=1)
            _blas["depth"] += 1

    def __exit__(self, *exc: object) -> None:
        with _blas["lock"]:
            _blas["depth"] -= 1
            if _blas["depth"] == 0:
                _blas["limiter"].restore_original_limits()
                _blas["limiter"] = None
