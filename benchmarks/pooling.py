"""Pooling side by side with PyTorch: npconv and torch alternate call by call, in one process.

    python benchmarks/pooling.py [--reps 15] [--write FILE] [--keep-freed-memory]
    NPCONV_SRC=/path/to/other/src python benchmarks/pooling.py     # another checkout (before/after)

docs/benchmarks.md has these rows from `make bench` (benchmarks/run.py, section "pooling").

float32, channels_last data (PyTorch gets the same arrays as `torch.channels_last` tensors,
`torch.set_num_threads` = npconv's worker count). Each row times the forward alone or the
forward and backward (npconv: the pair `nn.MaxPool` runs, `pooling.max_pool_codes` then
`pooling.max_pool_codes_backward`, which keep one byte per window; PyTorch: autograd, which
keeps int64 indices), reports the median over `reps` alternating rounds, the ratio, the time of
npconv's PyTorch-style pair for max pooling (`max_pool(..., return_indices=True)` then
`max_pool_backward(..., indices=...)`, int64 indices), the NumPy floor (one single-threaded
`np.maximum(a, a, out=b)` pass over x, which reads and writes an array of x's size: a pooling
reads x at least once, and its backward writes a dx of x's size) and the peak memory npconv
allocates (tracemalloc). `run(reps, rows)` returns the rows (`Result`s, in the order of
`rows`) for `benchmarks/run.py`; `markdown()` formats them.
"""

from __future__ import annotations

import argparse
import inspect
import math
import os
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, os.environ.get("NPCONV_SRC", str(HERE.parent / "src")))

import npconv  # noqa: E402
from npconv import _config, pooling  # noqa: E402

try:
    import torch
    import torch.nn.functional as F
except ImportError:                                              # the table says "n/a"
    torch = None


@dataclass(frozen=True)
class Row:
    """One benchmark case: op, channels_last x shape, keywords, and whether the backward runs."""

    name: str
    op: str                                                      # max, avg or global_avg
    x: tuple
    kw: dict
    backward: bool


ROWS = (
    Row("max_pool 3x3 s2 p1, fwd", "max", (16, 112, 112, 64),
        dict(kernel_size=3, stride=2, padding=1), False),
    Row("max_pool 3x3 s2 p1, fwd+bwd", "max", (16, 112, 112, 64),
        dict(kernel_size=3, stride=2, padding=1), True),
    Row("max_pool 2x2 s2, fwd+bwd", "max", (32, 56, 56, 64), dict(kernel_size=2, stride=2), True),
    Row("avg_pool 3x3 s1 p1, fwd+bwd", "avg", (32, 56, 56, 64),
        dict(kernel_size=3, stride=1, padding=1), True),
    Row("global avg pool, fwd+bwd", "global_avg", (32, 7, 7, 512), {}, True),
)


@dataclass
class Result:
    row: Row
    npconv_ms: float
    torch_ms: float | None
    floor_ms: float
    peak_mib: float
    indices_ms: float | None = None

    @property
    def ratio(self) -> float | None:
        return None if self.torch_ms is None else self.npconv_ms / self.torch_ms


def _takes_indices() -> bool:
    """Whether max_pool_backward takes the forward's indices (it did not before this module)."""
    return "indices" in inspect.signature(npconv.max_pool_backward).parameters


def npconv_call(row: Row, x: np.ndarray, dy: np.ndarray):
    kw = row.kw
    if row.op == "max" and not row.backward:
        return lambda: npconv.max_pool(x, **kw)
    if row.op == "max" and hasattr(pooling, "max_pool_codes"):
        def layer_pair():
            _, codes = pooling.max_pool_codes(x, **kw)
            return pooling.max_pool_codes_backward(dy, codes, x.shape, **kw)
        return layer_pair
    return indices_call(row, x, dy)


def indices_call(row: Row, x: np.ndarray, dy: np.ndarray):
    """npconv's PyTorch-style pair (int64 indices), for the max fwd+bwd rows; else (older
    checkouts without codes) the pair their layer ran."""
    kw = row.kw
    if row.op == "max" and _takes_indices():
        def both():
            _, idx = npconv.max_pool(x, **kw, return_indices=True)
            return npconv.max_pool_backward(dy, x.shape, **kw, indices=idx)
        return both
    if row.op == "max":
        return lambda: (npconv.max_pool(x, **kw), npconv.max_pool_backward(dy, x, **kw))
    if row.op == "avg":
        return lambda: (npconv.avg_pool(x, **kw), npconv.avg_pool_backward(dy, x.shape, **kw))
    return lambda: (npconv.global_avg_pool(x), npconv.global_avg_pool_backward(dy, x.shape))


def torch_call(row: Row, x: np.ndarray, dy: np.ndarray):
    if torch is None:
        return None
    xt = torch.from_numpy(x).permute(0, 3, 1, 2)                 # channels_last NCHW view
    dyt = torch.from_numpy(dy).permute(0, 3, 1, 2) if dy.ndim == 4 else torch.from_numpy(dy)
    kw = row.kw

    def op(t):
        if row.op == "max":
            return F.max_pool2d(t, **kw)
        if row.op == "avg":
            return F.avg_pool2d(t, **kw)
        return F.adaptive_avg_pool2d(t, 1).flatten(1)

    if not row.backward and row.op == "max":
        # PyTorch's max_pool2d without grad takes a kernel that was 7-30x slower here than the
        # one that also returns indices (the one autograd uses); the benchmark times the faster.
        def forward():
            with torch.no_grad():
                return F.max_pool2d(xt, **kw, return_indices=True)[0]
        return forward
    if not row.backward:
        def forward():
            with torch.no_grad():
                return op(xt)
        return forward
    xg = xt.detach().requires_grad_()
    return lambda: torch.autograd.grad(op(xg), xg, dyt)


def _inputs(row: Row):
    rng = np.random.default_rng(0)
    x = rng.standard_normal(row.x, dtype=np.float32)
    if row.op == "global_avg":
        y_shape = (row.x[0], row.x[-1])
    else:
        y_shape = npconv.pool_spec(x.shape, **row.kw).y_shape()
    return x, rng.standard_normal(y_shape, dtype=np.float32)


def _floor(x: np.ndarray, passes: int, reps: int) -> float:
    out = np.empty_like(x)
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(passes):
            np.maximum(x, x, out=out)
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def _peak_mib(call) -> float:
    tracemalloc.start()
    try:
        call()
        return tracemalloc.get_traced_memory()[1] / 2**20
    finally:
        tracemalloc.stop()


def run(reps: int = 15, rows=ROWS, pause: float = 0.02) -> list[Result]:
    """Time every row: npconv and PyTorch alternate, `reps` rounds after two warm-up calls,
    with `pause` seconds after each call (idle threads of the one stop spinning before the
    other runs)."""
    threads = _config.resolve(None).threads
    if torch is not None:
        torch.set_num_threads(threads)
    results = []
    for row in rows:
        x, dy = _inputs(row)
        calls = {"npconv": npconv_call(row, x, dy), "torch": torch_call(row, x, dy),
                 "indices": indices_call(row, x, dy) if row.op == "max" and row.backward and
                 hasattr(pooling, "max_pool_codes") else None}
        calls = {k: v for k, v in calls.items() if v is not None}
        times = {k: [] for k in calls}
        for call in calls.values():
            call(), call()
        for _ in range(reps):
            for name, call in calls.items():
                start = time.perf_counter()
                call()
                times[name].append(time.perf_counter() - start)
                time.sleep(pause)
        med = {k: statistics.median(v) * 1e3 for k, v in times.items()}
        results.append(Result(row, med["npconv"], med.get("torch"),
                              _floor(x, 1 + row.backward, reps), _peak_mib(calls["npconv"]),
                              med.get("indices")))
    return results


def markdown(results: list[Result], load: float | None = None) -> str:
    """The table, with the geometric mean of the ratios (and the load average, when given)."""
    threads = _config.resolve(None).threads
    busy = "" if load is None else f" Load average at the start: {load:.1f}."
    lines = [f"float32, channels_last, {threads} threads (npconv workers = torch threads); "
             f"medians of alternating calls.{busy}", "",
             "| op | x shape | npconv ms | PyTorch ms | ratio | npconv, int64 indices ms | "
             "NumPy floor ms | npconv peak MiB |",
             "|---|---|---|---|---|---|---|---|"]
    for r in results:
        torch_ms = "n/a" if r.torch_ms is None else f"{r.torch_ms:.2f}"
        ratio = "n/a" if r.ratio is None else f"{r.ratio:.2f}x"
        indices = "n/a" if r.indices_ms is None else f"{r.indices_ms:.2f}"
        shape = "x".join(map(str, r.row.x))
        lines.append(f"| {r.row.name} | {shape} | {r.npconv_ms:.2f} | {torch_ms} | {ratio} | "
                     f"{indices} | {r.floor_ms:.2f} | {r.peak_mib:.1f} |")
    ratios = [r.ratio for r in results if r.ratio is not None]
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        lines += ["", f"Geometric mean of the ratios: {geo:.2f}x; worst {max(ratios):.2f}x."]
    lines += ["", "npconv's max fwd+bwd rows time the pair `nn.MaxPool` runs "
              "(`pooling.max_pool_codes` and its backward: one byte per window kept); "
              "'int64 indices' the PyTorch-style pair (`max_pool(..., return_indices=True)`, "
              "`max_pool_backward(..., indices=)`), in the same rounds."]
    lines += ["", "NumPy floor: one single-threaded `np.maximum(x, x, out=b)` pass over x per "
              "direction (forward, backward), the memory traffic of reading x or writing dx once."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=15, help="alternating rounds per row")
    parser.add_argument("--pause", type=float, default=0.02, help="seconds after each call")
    parser.add_argument("--write", type=Path, help="also write the markdown table to this file")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="npconv.keep_freed_memory() first: malloc keeps freed memory for "
                             "both libraries (one process)")
    args = parser.parse_args(argv)
    if args.keep_freed_memory:
        npconv.keep_freed_memory()
    load = os.getloadavg()[0]
    text = markdown(run(args.reps, pause=args.pause), load)
    print(text)
    if args.write:
        command = f"python benchmarks/pooling.py --reps {args.reps} --write {args.write}"
        args.write.write_text(f"# Pooling benchmark\n\n`{command}`\n\n{text}")


if __name__ == "__main__":
    main()
