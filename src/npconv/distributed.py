"""Beyond one in-memory process: data-parallel training on a dask.distributed cluster, and
inference over image files larger than memory.

Data parallelism (`DataParallel`, `data_parallel_step`, `fit`): every batch is split into one
shard per worker (near-equal, contiguous, like `np.array_split`); each worker runs forward and
backward on its shard with a replica of the model and returns its mean-loss gradient weighted
by its share of the batch, n_w / N. The loss is a mean over the batch, so the weighted sum over
shards is the gradient of the whole batch, exactly (up to float rounding), and the optimizer
step on the client is the single-process step. Per step the weights are broadcast once to every
worker (`Client.scatter(..., broadcast=True)`); the data of a whole epoch is scattered once,
each row to the worker that owns its shard, and stays resident there; the shards' results are
summed as a tree on the workers in a fixed order, so a run is deterministic for a seed.

Exceptions, as in PyTorch's DistributedDataParallel without SyncBatchNorm: BatchNorm in training
mode normalizes each shard with that shard's statistics (so the gradients are those of the
shards, not of the batch; the running statistics become the share-weighted mean of the shards',
which is the batch's for the running mean), and Dropout draws its masks per shard from
(seed, step, shard). Models without them train exactly like `npconv.training.fit`.

Inference (`predict_to_disk`) needs NumPy only: it reads an .npy file (or memory map) chunk by
chunk and writes the predictions to an .npy through a memory map.

dask and distributed are optional (`pip install 'npconv[dask]'`): they are imported inside the
functions that use them, so this module imports without them.
"""

from __future__ import annotations

import contextlib
import functools
import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npconv import _args, _npyfile
from npconv._config import config, cpu_count
from npconv.nn import layers as L
from npconv.nn.losses import softmax_cross_entropy
from npconv.nn.serialization import build, layer_spec
from npconv.training.data import batch_indices, prepare_images
from npconv.training.loop import (
    History,
    Step,
    check_fit_args,
    check_labelled,
    predict_logits,
    predict_proba,
    run_epochs,
)

__all__ = [
    "DASK_HINT",
    "DataParallel",
    "Placement",
    "StepResult",
    "check_scheduler",
    "connect",
    "data_parallel_step",
    "fit",
    "predict_to_disk",
    "require",
    "shard_sizes",
    "tree_sum",
]

DASK_HINT = "pip install 'npconv[dask]'"


# ---------------------------------------------------------------------------------------------
# Connecting to a cluster
# ---------------------------------------------------------------------------------------------


def require():
    """The `distributed` module, or ImportError saying how to install it."""
    try:
        import dask.array  # noqa: F401  (the extra installs both)
        import distributed
    except ImportError as e:
        raise ImportError(f"dask.distributed is not installed ({e}); install it with "
                          f"{DASK_HINT}") from e
    return distributed


def check_scheduler(scheduler) -> str:
    """Check a scheduler argument: "local", "local:N" (N >= 1 worker processes on this
    machine) or the address of a running scheduler ("tcp://host:8786"); returns it.

    >>> check_scheduler("local:2"), check_scheduler("tcp://10.0.0.5:8786")
    ('local:2', 'tcp://10.0.0.5:8786')
    """
    if not isinstance(scheduler, str) or not scheduler.strip():
        raise ValueError(f"`scheduler` must be 'local', 'local:N' or an address such as "
                         f"tcp://host:8786; got {scheduler!r}")
    _local_workers(scheduler)
    return scheduler


def _local_workers(scheduler: str) -> int | None:
    """N of "local:N" (every core for "local"); None for an address."""
    if scheduler == "local":
        return cpu_count()
    if not scheduler.startswith("local:"):
        return None
    n = scheduler[len("local:"):]
    if not n.isdigit() or int(n) < 1:
        raise ValueError(f"`scheduler` 'local:N' needs N, the number of worker processes, to "
                         f"be an int >= 1; got {scheduler!r}")
    return int(n)


@contextlib.contextmanager
def connect(scheduler: str, *, timeout: float = 30.0):
    """Context manager yielding a `distributed.Client`, closed (with its cluster) on exit.

    "local:N" starts a LocalCluster of N single-threaded worker processes on 127.0.0.1 (no
    dashboard); "local" one per core; anything else is a scheduler address, and the client
    waits up to `timeout` seconds for it to have a worker. Errors: ValueError for a malformed
    `scheduler`, ImportError without dask, OSError / TimeoutError when it cannot connect.

    Local workers start without dask's MALLOC_TRIM_THRESHOLD_=65536: setting it fixes glibc's
    mmap threshold at 128 KiB, so every large temporary of a training step is mapped and
    unmapped afresh, which made steps 30-40% slower here (docs/engines.md).

    >>> with connect("local:2") as client:                          # doctest: +SKIP
    ...     len(client.nthreads())
    2
    """
    n = _local_workers(check_scheduler(scheduler))
    distributed = require()
    if n is not None:
        with _local_cluster(n) as cluster, distributed.Client(cluster) as client:
            yield client
        return
    with distributed.Client(scheduler, timeout=timeout) as client:
        client.wait_for_workers(1, timeout=timeout)
        yield client


def _local_cluster(n: int):
    import dask
    import distributed

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        return distributed.LocalCluster(n_workers=n, processes=True, threads_per_worker=1,
                                        host="127.0.0.1", dashboard_address=None)


# ---------------------------------------------------------------------------------------------
# Shards of batches, and where they live
# ---------------------------------------------------------------------------------------------


def shard_sizes(n: int, batch_size: int, n_shards: int) -> np.ndarray:
    """Rows of every shard of every batch -> (n_batches, n_shards) int array.

    Rows 0..n-1 form batches of `batch_size` consecutive rows (the last may be shorter), each
    split into `n_shards` contiguous parts whose sizes differ by at most one, the larger first
    (`np.array_split`'s rule). A batch smaller than `n_shards` leaves some shards empty.

    >>> shard_sizes(10, 4, 3)
    array([[2, 1, 1],
           [2, 1, 1],
           [1, 1, 0]])
    """
    for value, name, low in ((n, "n", 0), (batch_size, "batch_size", 1),
                             (n_shards, "n_shards", 1)):
        if not _args.is_int(value) or value < low:
            raise ValueError(f"`{name}` must be an int >= {low}; got {value!r}")
    lens = np.minimum(batch_size, n - np.arange(0, n, batch_size))         # (B,)
    small, extra = lens[:, None] // n_shards, lens[:, None] % n_shards       # (B, 1) each
    return small + (np.arange(n_shards) < extra)                            # (B, W)


@dataclass
class Placement:
    """One epoch's data on the workers: `shards[w]` is a future of worker w's (x_w, y_w), its
    shard of every batch in batch order; step b reads rows edges[b, w]:edges[b + 1, w] of it.

    sizes : (n_batches, W) rows of each shard; edges : (n_batches + 1, W) their offsets.
    """

    shards: list
    sizes: np.ndarray
    edges: np.ndarray

    @property
    def n_batches(self) -> int:
        return len(self.sizes)


@dataclass
class StepResult:
    """What one data-parallel step computed for a batch of n rows: the batch's mean loss, the
    number of correct argmax predictions, and the whole-batch gradients and new buffers (keyed
    like model.params and model.buffers)."""

    loss: float
    correct: int
    n: int
    grads: dict
    buffers: dict


# ---------------------------------------------------------------------------------------------
# What a worker runs
# ---------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _replica(thread: int, spec: str) -> L.Layer:
    """A replica of the architecture `spec` (JSON) for one worker thread, built once; every
    step overwrites all its params and buffers, so trainers of one architecture share it."""
    return build(json.loads(spec))


def _dropouts(layer: L.Layer):
    return (sub for sub in layer.modules() if isinstance(sub, L.Dropout))


def _shard_step(spec, state, shard, start, stop, share, loss, seed, threads) -> dict:
    """Forward and backward of rows start:stop of a resident shard, weighted by `share`."""
    model = _replica(threading.get_ident(), spec)
    for kind in ("params", "buffers"):
        for key, array in getattr(model, kind).items():
            array[...] = state[kind][key]                        # in place: the layers' arrays
    for i, layer in enumerate(_dropouts(model)):
        layer.rng = np.random.default_rng([*seed, i])
    x, y = shard[0][start:stop], shard[1][start:stop]            # (n, ...), (n,)
    with config(threads=threads):
        logits = model.forward(x, training=True)                 # (n, K)
        value, dlogits = loss(logits, y)
        model.backward(dlogits)
    # the shard's loss is a mean over its n rows; times n / N it is its part of the batch mean.
    # Integer buffers (batch norm's num_batches_tracked) are counters that every shard advances
    # alike: they are kept, not weighted.
    return {"loss": value * share, "correct": int((logits.argmax(axis=1) == y).sum()),
            "grads": {k: g * share for k, g in model.grads.items()},
            "buffers": {k: b * share for k, b in model.buffers.items()
                        if np.issubdtype(b.dtype, np.floating)},
            "counters": {k: b for k, b in model.buffers.items()
                         if not np.issubdtype(b.dtype, np.floating)}}


def _add(a, b):
    """a + b for two results of `_shard_step` (nested dicts of numbers and arrays); the
    counters, equal on every shard, are taken from a."""
    if isinstance(a, dict):
        return {k: a[k] if k == "counters" else _add(a[k], b[k]) for k in a}
    return a + b


def tree_sum(client, parts: list, on_client: int = 4):
    """The sum of the futures `parts` (numbers, arrays, or dicts of them, nested alike; a
    "counters" entry is taken from the first), added pairwise in a fixed order, so the result
    is deterministic: on the workers while more than `on_client` remain (the client receives
    that many results), then on the client (one round trip less per level)."""
    while len(parts) > on_client:
        pairs = [client.submit(_add, a, b, pure=False) for a, b in zip(parts[::2], parts[1::2])]
        parts = pairs + parts[2 * len(pairs):]
    return functools.reduce(_add, client.gather(parts))


# ---------------------------------------------------------------------------------------------
# The trainer
# ---------------------------------------------------------------------------------------------


class DataParallel:
    """Data-parallel gradients of `model` on the workers of a `distributed.Client`.

    The model on the client is the master copy: `gradients` broadcasts its params and buffers,
    runs one shard per worker and returns the whole-batch result; `step` also applies an
    optimizer, on the client. `seed` seeds the Dropout masks of every (step, shard); `threads`
    sets npconv's threads per shard task (default: the worker's dask threads).

    Examples
    --------
    >>> trainer = DataParallel(model, client)                       # doctest: +SKIP
    >>> placement = trainer.place(x, y, batch_size=256)              # doctest: +SKIP
    >>> for b in range(placement.n_batches):                         # doctest: +SKIP
    ...     result = trainer.step(placement, b, optimizer)
    """

    def __init__(self, model: L.Layer, client, *, loss=softmax_cross_entropy, seed: int = 0,
                 threads: int | None = None) -> None:
        if not isinstance(model, L.Layer):
            raise TypeError(f"`model` must be an npconv.nn Layer; got {type(model).__name__}")
        if not _args.is_int(seed) or seed < 0:
            raise ValueError(f"`seed` must be an int >= 0; got {seed!r}")
        nthreads = client.nthreads()                             # {address: threads}
        if not nthreads:
            raise ValueError(f"`client` must be connected to a cluster with at least one "
                             f"worker; got {client!r} with 0 workers")
        if threads is not None and (not _args.is_int(threads) or threads < 1):
            raise ValueError(f"`threads` must be None or an int >= 1; got {threads!r}")
        self.model, self.client, self.loss, self.seed = model, client, loss, int(seed)
        self.workers = sorted(nthreads)
        self.threads = [threads or nthreads[w] for w in self.workers]
        self.steps = 0
        self._spec = json.dumps(layer_spec(model))

    def place(self, x, y, batch_size: int) -> Placement:
        """Scatter one epoch: x (N, ...) and y (N,) already in batch order (batch b is rows
        b * batch_size ...); each worker receives its shard of every batch, once."""
        _args.float_array(x, "x")
        if not isinstance(y, np.ndarray) or y.shape != x.shape[:1]:
            raise ValueError(f"`y` must be an array of shape ({len(x)},), one label per "
                             f"image; got {getattr(y, 'shape', type(y).__name__)}")
        sizes = shard_sizes(len(y), batch_size, len(self.workers))      # (B, W)
        w = len(self.workers)
        owner = np.repeat(np.tile(np.arange(w), len(sizes)), sizes.ravel())  # (N,)
        shards = [self.client.scatter([(x[owner == i], y[owner == i])], workers=[address],
                                      hash=False)[0] for i, address in enumerate(self.workers)]
        edges = np.concatenate([np.zeros((1, w), int), sizes.cumsum(axis=0)])  # (B + 1, W)
        return Placement(shards, sizes, edges)

    def gradients(self, placement: Placement, b: int) -> StepResult:
        """Whole-batch loss and gradients of batch `b` of `placement`; like a forward pass in
        training mode, it sets the model's buffers (batch norm's running statistics)."""
        if not _args.is_int(b) or not 0 <= b < placement.n_batches:
            raise ValueError(f"`b` must be a batch index in [0, {placement.n_batches}); got "
                             f"{b!r}")
        state = self.client.scatter([{"params": self.model.params,
                                      "buffers": self.model.buffers}],
                                    broadcast=True, workers=self.workers, hash=False)[0]
        n, parts = int(placement.sizes[b].sum()), []
        for w, address in enumerate(self.workers):
            size, start = int(placement.sizes[b, w]), int(placement.edges[b, w])
            if size:
                parts.append(self.client.submit(
                    _shard_step, self._spec, state, placement.shards[w], start,
                    start + size, size / n, self.loss, (self.seed, self.steps, w),
                    self.threads[w], workers=[address], allow_other_workers=False, pure=False))
        total = tree_sum(self.client, parts)
        self.steps += 1
        buffers = {**total["buffers"], **total["counters"]}
        for key, array in self.model.buffers.items():
            array[...] = buffers[key]
        return StepResult(float(total["loss"]), int(total["correct"]), n,
                          {k: g.astype(self.model.params[k].dtype, copy=False)
                           for k, g in total["grads"].items()}, buffers)

    def step(self, placement: Placement, b: int, optimizer) -> StepResult:
        """`gradients` of batch b, then optimizer.step(model.params, grads) on the client."""
        result = self.gradients(placement, b)
        optimizer.step(self.model.params, result.grads)
        return result


# ---------------------------------------------------------------------------------------------
# One step, and the training loop (npconv.training's, with data-parallel steps)
# ---------------------------------------------------------------------------------------------


def data_parallel_step(model: L.Layer, x, y, *, client, optimizer=None,
                       loss=softmax_cross_entropy, seed: int = 0) -> StepResult:
    """One training step on the batch x (N, ...), y (N,) split across the workers of `client`.

    Returns the `StepResult` (mean loss, correct predictions, whole-batch grads keyed like
    model.params); with an `optimizer`, also applies it. For a model without BatchNorm and
    Dropout the grads equal those of model.forward(x, training=True) + backward, to rounding.

    >>> result = data_parallel_step(model, x, y, client=client)     # doctest: +SKIP
    >>> sorted(result.grads) == sorted(model.params)                 # doctest: +SKIP
    True
    """
    check_labelled(model, x, y)
    trainer = DataParallel(model, client, loss=loss, seed=seed)
    placement = trainer.place(x, y, batch_size=max(len(y), 1))
    if optimizer is None:
        return trainer.gradients(placement, 0)
    return trainer.step(placement, 0, optimizer)


def _epoch_data(x, y, batch_size: int, rng, augment):
    """The epoch's rows in batch order, augmented batch by batch: the draws from `rng` are
    those of `npconv.training.fit` (the order, then each batch's augmentation)."""
    batches = batch_indices(len(y), batch_size, rng)
    xe = np.concatenate([x[idx] if augment is None else augment(x[idx], rng)
                         for idx in batches])                    # (N, ...)
    return xe, y[np.concatenate(batches)]                        # (N, ...), (N,)


def fit(model: L.Layer, x, y, *, client, optimizer, epochs: int, batch_size: int,
        rng: np.random.Generator, validation=None, loss=softmax_cross_entropy,
        schedule: str = "cosine", augment=None, on_batch=None, on_epoch=None,
        seed: int = 0) -> History:
    """`npconv.training.fit` with every batch split across the workers of `client`.

    Same arguments, the same loop (`npconv.training.run_epochs`), History and draws from `rng`,
    so a model without BatchNorm and Dropout ends with the parameters of the single-process run
    (to float rounding). Each epoch's (augmented) data is scattered once; validation runs on
    the client. `seed` seeds Dropout masks.

    >>> history = fit(model, x, y, client=client, optimizer=nn.Adam(), epochs=2,
    ...               batch_size=64, rng=np.random.default_rng(0))  # doctest: +SKIP
    """
    check_fit_args(model, x, y, validation, epochs, batch_size, schedule, rng, optimizer)
    trainer = DataParallel(model, client, loss=loss, seed=seed)

    def step(placement: Placement, b: int) -> tuple[float, int, int]:
        result = trainer.step(placement, b, optimizer)
        return result.loss, result.correct, result.n

    def epoch_steps() -> list[Step]:
        xe, ye = _epoch_data(x, y, batch_size, rng, augment)        # (N, ...), (N,)
        placement = trainer.place(xe, ye, batch_size)
        return [functools.partial(step, placement, b) for b in range(placement.n_batches)]

    return run_epochs(model, epoch_steps, optimizer=optimizer, epochs=epochs,
                      steps_per_epoch=math.ceil(len(y) / batch_size), schedule=schedule,
                      validation=validation, loss=loss, on_batch=on_batch, on_epoch=on_epoch)


# ---------------------------------------------------------------------------------------------
# Inference over files larger than memory
# ---------------------------------------------------------------------------------------------


def _source(src):
    """(shape, read(a, b) -> rows a:b as a view) of an .npy path or an array; the caller copies
    (prepare_images does), so a chunk costs one copy plus the file pages it maps."""
    if isinstance(src, (str, os.PathLike)):
        path = Path(src)
        if not path.is_file():
            raise FileNotFoundError(f"`src` file not found: {path}")
        with open(path, "rb") as f:                # its header checked against its size
            shape, _, _ = _npyfile.read_header(f, os.fstat(f.fileno()).st_size,
                                               f"`src` {path}: must be an .npy file of images")

        def read(a, b):                  # a fresh map per chunk: its pages leave with it
            return np.load(path, mmap_mode="r")[a:b]

        return shape, read
    if not isinstance(src, np.ndarray):
        raise TypeError(f"`src` must be an .npy path, a numpy.memmap or an ndarray; got "
                        f"{type(src).__name__}")
    return src.shape, lambda a, b: src[a:b]


def _check_predict(dst, chunk_size, batch_size, output, shape) -> Path:
    for value, name in ((chunk_size, "chunk_size"), (batch_size, "batch_size")):
        if not _args.is_int(value) or value < 1:
            raise ValueError(f"`{name}` must be an int >= 1; got {value!r}")
    _args.choice(output, ("classes", "proba"), "output")
    if len(shape) < 2 or shape[0] < 1:
        raise ValueError(f"`src` must hold N >= 1 images (N, ...); got shape {tuple(shape)}")
    dst = Path(dst)
    if not dst.parent.is_dir():
        raise FileNotFoundError(f"`dst` directory does not exist: {dst.parent}")
    return dst


def _predict_chunks(model, read, partial: Path, n: int, prepare, *, chunk_size, batch_size,
                    on_chunk) -> None:
    """Fill the .npy at `partial` (N rows) chunk by chunk, through a fresh memory map per chunk
    so that written pages leave the process's memory with it."""
    from numpy.lib.format import open_memmap

    for a in range(0, n, chunk_size):
        x = prepare(read(a, a + chunk_size))                     # (c, *input_shape)
        out = open_memmap(partial, mode="r+")                    # (N,) or (N, K)
        if out.ndim == 1:
            logits = predict_logits(model, x, batch_size=batch_size)     # (c, K)
            out[a:a + len(x)] = logits.argmax(axis=1)            # (c,)
        else:
            out[a:a + len(x)] = predict_proba(model, x, batch_size=batch_size)
        out.flush()
        del out
        if on_chunk is not None:
            on_chunk(a + len(x), n)


def predict_to_disk(model: L.Layer, src, dst, *, chunk_size: int = 65536,
                    batch_size: int = 512, input_shape=None, pixel_max: float = 1.0,
                    output: str = "classes", on_chunk=None) -> Path:
    """Predict every image of `src` with `model` (evaluation mode), `chunk_size` images at a
    time, writing an .npy at `dst` through a memory map; returns dst.

    src: an .npy path (read through a fresh memory map per chunk) or an array / np.memmap of
    N images, (N, *input_shape), or without the channel axis when it is 1 (then pass
    `input_shape`); integer pixels are divided by `pixel_max` (as
    `npconv.training.prepare_images` does). output "classes": int64 (N,), the argmax;
    "proba": float64 (N, K), the softmax. Memory: one chunk of images and its outputs, plus
    the activations of `batch_size` images. The file appears at dst only once it is complete.
    `on_chunk(n_done, n_total)` is called after each chunk (for a progress bar).

    >>> import tempfile, os
    >>> from npconv import nn
    >>> model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3, rng=np.random.default_rng(0)))
    >>> x = np.random.default_rng(1).random((10, 2, 2, 1))           # (N, *input_shape)
    >>> dst = predict_to_disk(model, x, os.path.join(tempfile.mkdtemp(), "p.npy"), chunk_size=4)
    >>> bool((np.load(dst) == model.forward(x).argmax(axis=1)).all())
    True
    """
    from numpy.lib.format import open_memmap

    shape, read = _source(src)
    dst = _check_predict(dst, chunk_size, batch_size, output, shape)
    input_shape = tuple(input_shape or shape[1:])

    def prepare(a):
        return prepare_images(a, input_shape, pixel_max)   # (c, *input_shape)

    k = model.forward(prepare(read(0, 1)), training=False).shape[-1]
    partial = dst.with_name(dst.name + ".partial")
    header = open_memmap(partial, mode="w+", dtype=np.int64 if output == "classes" else
                         np.float64, shape=(shape[0],) if output == "classes" else (shape[0], k))
    del header                                                   # the file exists, unmapped
    try:
        _predict_chunks(model, read, partial, shape[0], prepare, chunk_size=chunk_size,
                        batch_size=batch_size, on_chunk=on_chunk)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    os.replace(partial, dst)
    return dst
