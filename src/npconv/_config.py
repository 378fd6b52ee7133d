"""Process-wide settings of npconv: the workspace limit, the worker threads and the tuning values.

The workspace limit bounds the temporaries an op allocates beyond its inputs, its outputs and
the converted copies of its array arguments (docs/algorithms.md, "Workspace", states the bound).
Settings apply globally (`set_config`), inside a `with config(...)` block (this thread and
context only) or to one call (the `workspace=` keyword of every convolution op), the narrowest
one winning. `Tuning` holds every measured threshold of the algorithms in one frozen object;
the kernels read it from the `Settings` they are handed, and tests and benchmarks change it
with `tuned(...)` instead of patching module globals.
"""

from __future__ import annotations

import contextlib
import contextvars
import enum
import importlib.util
import os
import sys
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from npconv import _args

DEFAULT_WORKSPACE = 256 * 2**20
"""Default workspace limit in bytes (256 MiB)."""

MIB = 2**20


@dataclass(frozen=True)
class Tuning:
    """Measured thresholds (docs/algorithms.md explains each measurement)."""

    chunk_bytes: int = 4 * MIB
    """Target temporaries of one worker's chunk: large enough to amortize Python overhead and
    keep GEMMs efficient, small enough to stay in the last-level cache."""
    stride1_chunk_bytes: int = 1 * MIB
    """Chunk target of im2col's stride-1 gathers of whole window rows (5 to 9% faster per
    ResNet 3x3 op than 4 MiB; strided gathers ran 8 to 12% slower that way)."""
    serial_min_filters: int = 64
    """im2col's chunk of a layer that runs serially (`_chunks.serial_layer`) with at least this
    many filters per group is the whole window matrix, one GEMM for BLAS's threads (narrower
    GEMMs keep cache-sized chunks: LeNet's 3x3 layer, 32 filters, ran 20 to 45% slower whole)."""
    gemm_min_rows: int = 256
    """im2col's stride-1 chunks hold at least this many window rows (up to `chunk_bytes`):
    BLAS packs the weight matrix anew on every GEMM, which costs as much as the product when
    the weight is wide and the chunk has few rows (ResNet-18's 4x4x512 3x3 layer, batch 16,
    fwd+bwd one thread: 60 ms in 1 MiB chunks of 48 rows, 53 in 4 MiB)."""
    min_parallel_bytes: int = 16 * MIB
    """Layers whose forward window matrix is smaller run serially with BLAS threads
    (`_chunks.serial_layer`) if their multiply-adds are also fewer than `min_parallel_macs`;
    copies smaller than this stay on one thread too."""
    min_parallel_macs: int = sys.maxsize
    """A layer under `min_parallel_bytes` is serial only if its forward also has fewer
    multiply-adds than this: no limit, but a network pass sets one (`_chunks.network_pass`)."""
    narrow_run: int = 16
    """im2col gathers the transposed window matrix below this many contiguous elements per
    window row (K_last * C)."""
    gather_min_channels: int = 8
    """A stride-1 input gradient is a forward correlation when its GEMM has at least this many
    output channels (C/G); below, the scatter's GEMM output is wider and it wins."""
    unpadded_min_bytes: int = 2 * MIB
    """A depthwise forward whose window rows are not merged with the channels (strided along
    the last axis, several filters per group, or 1-D) reads x unpadded from this size up
    (`depthwise.forward`): MobileNetV2's
    stride-2 layers, float32, two threads, 0.74-0.94x the time of the padded copy from 2.4 MiB
    of x, 0.96-1.22x below 1.8 MiB (the border boxes' NumPy calls); merged stride-1 layers
    ran 1.1-1.6x slower unpadded (a column box on each side of every chunk) and keep the
    copy."""
    winograd_min_width: int = 24
    """Winograd is chosen when C/G * F/G / (C/G + F/G) reaches this (float64 only)."""
    scratch_min_bytes: int = 1 * MIB
    """Smaller temporaries are ordinary allocations (malloc recycles them without page faults)."""
    pool_chunk_bytes: int = 4 * MIB
    """Bytes one pooling chunk reads and writes (input rows, temporaries, output rows; at most
    `chunk_bytes`): its passes run in cache; at 256 KiB NumPy's per-call overhead made the
    stem's max pool with indices 4x slower (docs/pooling.md)."""
    pool_parallel_bytes: int = 2 * MIB
    """Pooling ops touching fewer bytes run on the calling thread."""
    block_bytes: int = 2 * MIB
    """Bytes of the largest operand per block of the layer ops (activations, normalization):
    64 KiB blocks ran 2.5x slower than 1 MiB on one thread; on two workers 2 MiB beat 1 MiB
    (fewer NumPy calls, each handing the GIL over): batch norm's forward and backward on
    16x56x56x32 to 32x56x56x64 float32 5-20% faster, no shape slower, and an array of up to 2
    MiB is one block on the calling thread, where two workers had run 1.1 MiB 2x slower
    (docs/layer_ops.md)."""
    block_parallel_bytes: int = 1 * MIB
    """Layer ops on smaller operands run on the calling thread."""


@dataclass(frozen=True)
class Settings:
    """workspace: bytes of temporaries allowed; threads: worker threads (None: every core)."""

    workspace: int = DEFAULT_WORKSPACE
    threads: int | None = None
    tuning: Tuning = field(default_factory=Tuning)


class _Keep(enum.Enum):
    KEEP = "keep"


KEEP = _Keep.KEEP
"""Default of `set_config` and `config`: leave the setting as it is."""

_global = Settings()
_local: contextvars.ContextVar[Settings | None] = contextvars.ContextVar("npconv", default=None)


def check(workspace: Any, threads: Any = None) -> None:
    """TypeError / ValueError unless workspace (bytes) and threads are None or valid ints."""
    if workspace is not None:
        if not _args.is_int(workspace):
            raise TypeError(f"`workspace` must be an int (bytes); got {workspace!r}")
        if workspace < 1:
            raise ValueError(f"`workspace` must be >= 1 byte; got {workspace}")
    if threads is not None:
        if not _args.is_int(threads):
            raise TypeError(f"`threads` must be an int or None; got {threads!r}")
        if threads < 1:
            raise ValueError(f"`threads` must be >= 1; got {threads}")
        if not has_threadpoolctl():
            warnings.warn(
                f"`threads`={threads} needs threadpoolctl (pip install 'npconv[threads]'): "
                "without it chunks run one after another and BLAS keeps its own threads",
                RuntimeWarning, stacklevel=4)


def has_threadpoolctl() -> bool:
    """Whether threadpoolctl, which the worker threads need, is installed."""
    return importlib.util.find_spec("threadpoolctl") is not None


def current() -> Settings:
    """The settings in force here: a `config` block's, else the global ones."""
    local = _local.get()
    return _global if local is None else local


def get_config() -> dict[str, Any]:
    """The settings in force, as a dict {"workspace": bytes, "threads": int or None}.

    Examples
    --------
    >>> import npconv
    >>> npconv.get_config()["workspace"] == 256 * 2**20
    True
    """
    s = current()
    return {"workspace": s.workspace, "threads": s.threads}


def _changed(base: Settings, workspace: int | _Keep | None, threads: int | _Keep | None
             ) -> Settings:
    """base with the given settings; None restores a default, KEEP keeps base's."""
    check(None if workspace is KEEP else workspace, None if threads is KEEP else threads)
    if workspace is not KEEP:
        base = replace(base, workspace=DEFAULT_WORKSPACE if workspace is None else int(workspace))
    if threads is not KEEP:
        base = replace(base, threads=None if threads is None else int(threads))
    return base


def set_config(*, workspace: int | _Keep | None = KEEP,
               threads: int | _Keep | None = KEEP) -> dict[str, Any]:
    """Change the global settings; an argument left out keeps its value, None restores the
    default.

    Parameters
    ----------
    workspace : int or None, optional
        Bytes of temporary memory one convolution may allocate (None: 256 MiB, the default).
    threads : int or None, optional
        Worker threads for chunked algorithms (None, the default: every core the process may
        use). Needs threadpoolctl; without it a RuntimeWarning says the setting cannot apply.

    Returns
    -------
    dict
        The previous global settings: ``set_config(**old)`` restores them.

    Examples
    --------
    >>> import npconv
    >>> old = npconv.set_config(workspace=64 * 2**20)
    >>> npconv.get_config()["workspace"] == 64 * 2**20
    True
    >>> _ = npconv.set_config(**old)
    """
    global _global
    old = {"workspace": _global.workspace, "threads": _global.threads}
    _global = _changed(_global, workspace, threads)
    return old


@contextlib.contextmanager
def config(*, workspace: int | _Keep | None = KEEP,
           threads: int | _Keep | None = KEEP) -> Iterator[None]:
    """Context manager: settings for the calls made inside the block (this context only);
    the arguments mean what they mean in `set_config`.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> with npconv.config(workspace=16 * 2**20):     # 16 MiB of temporaries at most
    ...     y = npconv.conv(np.ones((2, 8, 8, 3)), np.ones((3, 3, 3, 4)))
    >>> y.shape
    (2, 6, 6, 4)
    """
    token = _local.set(_changed(current(), workspace, threads))
    try:
        yield
    finally:
        _local.reset(token)


@contextlib.contextmanager
def tuned(**changes: int) -> Iterator[None]:
    """Context manager for tests and benchmarks: the settings in force with some `Tuning`
    values changed, e.g. ``tuned(chunk_bytes=512, min_parallel_bytes=0)``."""
    base = current()
    token = _local.set(replace(base, tuning=replace(base.tuning, **changes)))
    try:
        yield
    finally:
        _local.reset(token)


def resolve(workspace: int | None = None) -> Settings:
    """The settings of one call: `workspace` (already checked) overrides the limit in force,
    and threads is a number (every core when None)."""
    s = current()
    key = (s, workspace, s.threads or cpu_count())
    got = _RESOLVED.get(key)
    if got is None:
        got = replace(s, threads=key[2])
        got = got if workspace is None else replace(got, workspace=int(workspace))
        _args.remember(_RESOLVED, key, got, most=64)
    return got


def serial(settings: Settings) -> Settings:
    """`settings` with threads=1 (one small layer's call)."""
    got = _SERIAL.get(settings)
    if got is None:
        got = replace(settings, threads=1)
        _args.remember(_SERIAL, settings, got, most=64)
    return got


_RESOLVED: dict = {}
_SERIAL: dict = {}
"""Settings already derived: every convolution call resolves its settings, and
dataclasses.replace took 3 us of a small layer's 40."""



def cpu_count() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:                                       # not on Linux
        return os.cpu_count() or 1
