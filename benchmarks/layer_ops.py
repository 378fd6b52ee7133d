"""The ops between the convolutions, side by side: npconv's layer ops, PyTorch CPU and npconv's
previous `nn.functional` path, in one run.

    python benchmarks/layer_ops.py [--rounds 15] [--threads 2] [--only NAME] [--clock wall|cpu]
        [--keep-freed-memory]

Rows (float32, channels_last, issue 18's shapes): BatchNorm train forward + backward (with the
running-statistics update) and eval forward on 32x56x56x64; ReLU, ReLU6, Hardswish and SiLU
forward + backward on the same array (SiLU twice: its backward recomputing the sigmoid, and
from the sigmoid its forward kept); bilinear upsampling x2 (align_corners=False) forward +
backward on 8x28x28x64. Each implementation runs in a process of its own; every round asks
each, in turn, for every row: one untimed call, then the best of a short burst (as
benchmarks/run.py does). The table reports medians over rounds, and the ratio to PyTorch as
the median of the per-round ratios. PyTorch runs on
`--threads` threads with channels_last tensors, npconv's workers likewise. Two "floor" rows
time one elementwise pass alone (y = x + 1 into an existing array, on one thread and on the
workers): no op that reads x and writes y once beats it in NumPy. With `--keep-freed-memory`
every process (PyTorch's too) first calls `npconv.keep_freed_memory()`: no row's new arrays
page-fault then, whatever each library's allocations leave freed.

`measure(rounds, threads, only, shapes=...)` returns the rows as dicts (ms), and
`report(rows, shapes=...)` the Markdown table, for `benchmarks/run.py` (whose smoke run passes
tiny shapes).
"""

from __future__ import annotations

import argparse
import math
import multiprocessing
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))

import npconv  # noqa: E402
from npconv.nn import _blocks, activation, normalization, resample  # noqa: E402
from npconv.nn import functional as old  # noqa: E402

try:
    import torch
except ImportError:                                              # rows say "n/a"
    torch = None

SHAPE = (32, 56, 56, 64)
UPSAMPLE_SHAPE = (8, 28, 28, 64)


def _arrays(shape, seed: int = 0):
    """x, dy (float32, channels_last) and their PyTorch twins (N, C, *S) in channels_last."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape, dtype=np.float32)
    dy = rng.standard_normal(shape, dtype=np.float32)
    if torch is None:
        return x, dy, None, None

    def twin(a):                                                 # (N, C, H, W) view
        return torch.from_numpy(a).permute(0, 3, 1, 2)

    return x, dy, twin(x).requires_grad_(), twin(dy)


def _torch_fwd_bwd(fn, xt, dyt):
    def call():
        y = fn(xt)
        y.backward(dyt)
        xt.grad = None
    return call


def _batch_norm_rows(x, dy, xt, dyt) -> list:
    c = x.shape[-1]
    gamma, beta = np.ones(c, np.float32), np.zeros(c, np.float32)
    rm, rv = np.zeros(c, np.float32), np.ones(c, np.float32)
    count = x.size // c

    def train():
        _, mean, var = normalization.batch_norm_train(x, gamma, beta)
        normalization.running_stats_update(rm, rv, mean, var, count)
        normalization.batch_norm_backward(dy, x, gamma, mean, var)

    def old_train():
        old.batch_norm(x, gamma, beta, rm, rv, training=True)
        old.batch_norm_backward(dy, x, gamma, training=True)

    rows = [("BatchNorm train fwd+bwd", train, None, old_train),
            ("BatchNorm eval fwd", lambda: normalization.batch_norm_eval(x, gamma, beta, rm, rv),
             None, lambda: old.batch_norm(x, gamma, beta, rm, rv, training=False))]
    if torch is not None:
        bn = torch.nn.BatchNorm2d(c)
        bn_eval = torch.nn.BatchNorm2d(c).eval()

        def torch_eval():
            with torch.no_grad():
                bn_eval(xt)

        rows = [(rows[0][0], train, _torch_fwd_bwd(bn, xt, dyt), old_train),
                (rows[1][0], rows[1][1], torch_eval, rows[1][3])]
    return rows


def _activation_rows(x, dy, xt, dyt) -> list:
    def ours(fwd, bwd, keeps_output):
        def call():
            y = fwd(x)
            bwd(dy, y if keeps_output else x)
        return call

    f = torch.nn.functional if torch is not None else None
    table = [("ReLU fwd+bwd", activation.relu, activation.relu_backward, True,
              "relu", lambda: (old.relu_backward(dy, old.relu(x)))),
             ("ReLU6 fwd+bwd", activation.relu6, activation.relu6_backward, True, "relu6", None),
             ("Hardswish fwd+bwd", activation.hardswish, activation.hardswish_backward, False,
              "hardswish", None),
             ("SiLU fwd+bwd (recomputed sigmoid)", activation.silu, activation.silu_backward,
              False, "silu", None)]

    def silu_kept():
        _, s = activation.silu(x, keep_sigmoid=True)
        activation.silu_backward(dy, x, sigmoid=s)

    rows = [(name, ours(fwd, bwd, keeps),
             None if f is None else _torch_fwd_bwd(getattr(f, tname), xt, dyt), old_call)
            for name, fwd, bwd, keeps, tname, old_call in table]
    return [*rows, ("SiLU fwd+bwd (kept sigmoid)", silu_kept, rows[-1][2], None)]


def _upsample_rows() -> list:
    x, _, xt, _ = _arrays(UPSAMPLE_SHAPE, seed=1)
    out = (x.shape[1] * 2, x.shape[2] * 2)
    dy = np.random.default_rng(2).standard_normal((x.shape[0], *out, x.shape[3]),
                                                  dtype=np.float32)

    def ours():
        resample.upsample(x, scale_factor=2, mode="bilinear")
        resample.upsample_backward(dy, x.shape, scale_factor=2, mode="bilinear")

    theirs = None
    if torch is not None:
        dyt = torch.from_numpy(dy).permute(0, 3, 1, 2)
        theirs = _torch_fwd_bwd(lambda t: torch.nn.functional.interpolate(
            t, scale_factor=2, mode="bilinear", align_corners=False), xt, dyt)
    return [("Upsample bilinear x2 fwd+bwd", ours, theirs, None)]


def rows() -> list:
    """(name, npconv call, PyTorch call or None, old-path call or None) for every row."""
    x, dy, xt, dyt = _arrays(SHAPE)
    return _batch_norm_rows(x, dy, xt, dyt) + _activation_rows(x, dy, xt, dyt) + \
        _upsample_rows()


def _floor_calls() -> dict:
    x = np.random.default_rng(3).standard_normal(SHAPE, dtype=np.float32)
    y = np.empty_like(x)
    return {"floor: one thread": lambda: np.add(x, 1, out=y),
            "floor: workers": lambda: _blocks.map_blocks(lambda o, a, s: np.add(a, 1, out=o),
                                                         (x,), y)}


IMPLS = ("npconv", "torch", "old")


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def _time(fn, clock=time.perf_counter) -> float:
    start = clock()
    fn()
    return clock() - start


BURST = 3
"""Timed calls per implementation and round, after an untimed one; the best counts (as in
benchmarks/run.py: the data are in cache, as a layer's input is after the layer before)."""


def _worker(conn, impl: str, threads: int, clock: str, shapes: tuple, keep: bool) -> None:
    """One implementation's process: build its calls on `shapes` (SHAPE, UPSAMPLE_SHAPE),
    then, for each request, one untimed call of the named row and the best of a burst of
    `BURST` timed ones (None ends it). With `keep`, malloc keeps freed memory in this
    process (`npconv.keep_freed_memory`, whichever library it runs)."""
    global SHAPE, UPSAMPLE_SHAPE
    SHAPE, UPSAMPLE_SHAPE = shapes                   # this fresh process's sizes, set once
    if keep:
        npconv.keep_freed_memory()
    if torch is not None:
        torch.set_num_threads(threads)
    npconv.set_config(threads=threads)
    i = IMPLS.index(impl)
    calls = {name: c[i] for name, *c in rows() if c[i] is not None}
    if impl == "npconv":
        calls.update(_floor_calls())
    conn.send(list(calls))
    while (name := conn.recv()) is not None:
        calls[name]()
        conn.send(min(_time(calls[name], CLOCKS[clock]) for _ in range(BURST)))


def measure(rounds: int = 15, threads: int = 2, only: str = "", clock: str = "wall",
            shapes: tuple = (SHAPE, UPSAMPLE_SHAPE), keep: bool = False) -> list[dict]:
    """Median ms per row for npconv, PyTorch and the old path (None where absent), and the
    floor rows ("floor: ..."). Each implementation runs in a process of its own (so that no
    library's allocations or spinning threads change another's page faults or cores), and
    every round asks each in turn; `ratio` is the median over rounds of npconv / PyTorch in
    the same round (steadier than the ratio of medians when other work shares the machine).
    `only`: the rows whose name contains it. `clock`: "wall", or "cpu" (the process's CPU
    time: with threads=1, a proxy that other work on the machine disturbs less). `shapes`:
    the (N, H, W, C) of every row's arrays but upsampling's, and upsampling's input. `keep`:
    every process keeps freed memory (`npconv.keep_freed_memory`), PyTorch's as npconv's."""
    ctx = multiprocessing.get_context("spawn")
    workers = {}
    for impl in IMPLS:
        here, there = ctx.Pipe()
        proc = ctx.Process(target=_worker, args=(there, impl, threads, clock, shapes, keep),
                           daemon=True)
        proc.start()
        workers[impl] = (here, proc, here.recv())
    names = [n for n in workers["npconv"][2] if only.lower() in n.lower() or
             n.startswith("floor")]
    times = {name: {impl: [] for impl in IMPLS} for name in names}
    try:
        for _ in range(rounds):
            for name in names:
                for impl, (conn, _, known) in workers.items():
                    if name in known:
                        conn.send(name)
                        times[name][impl].append(conn.recv())
    finally:
        for conn, proc, _ in workers.values():
            conn.send(None)
            proc.join()
    return [_summary(name, t) for name, t in times.items()]


def _summary(name: str, t: dict) -> dict:
    a, b = t["npconv"], t["torch"]
    return dict(name=name, npconv=_median(a), torch=_median(b), old=_median(t["old"]),
                ratio=statistics.median(x / y for x, y in zip(a, b)) if b else None)


def _median(times) -> float | None:
    return 1e3 * statistics.median(times) if times else None


def _fmt(v) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def report(results: list[dict], shapes: tuple = (SHAPE, UPSAMPLE_SHAPE)) -> list[str]:
    """The table as Markdown lines, with the geometric mean of the fwd+bwd ratios and the
    floor (`shapes` as given to `measure`)."""
    lines = ["| op | npconv ms | PyTorch ms | ratio | old path ms | old / new |",
             "|---|---|---|---|---|---|"]
    ratios = []
    floors = {r["name"][len("floor: "):]: r["npconv"] for r in results
              if r["name"].startswith("floor")}
    for r in results:
        if r["name"].startswith("floor"):
            continue
        ratio = r["ratio"]
        if ratio is not None and "bwd" in r["name"] and "kept" not in r["name"]:
            ratios.append(ratio)
        gain = r["old"] / r["npconv"] if r["old"] else None
        lines.append(f"| {r['name']} | {_fmt(r['npconv'])} | {_fmt(r['torch'])} | "
                     f"{_fmt(ratio)} | {_fmt(r['old'])} | {_fmt(gain)} |")
    if ratios:
        geo = math.exp(sum(map(math.log, ratios)) / len(ratios))
        lines.append(f"\nfwd+bwd rows (SiLU recomputing its sigmoid, as PyTorch's does): "
                     f"geometric mean {geo:.2f}x PyTorch, worst {max(ratios):.2f}x")
    lines.append(f"NumPy floor, one pass y = x + 1 over {'x'.join(map(str, shapes[0]))} "
                 "float32: "
                 + ", ".join(f"{k} {v:.2f} ms" for k, v in floors.items()))
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--only", default="", help="rows whose name contains this")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: process CPU time, a steadier proxy on a busy machine "
                             "(with --threads 1)")
    parser.add_argument("--keep-freed-memory", action="store_true",
                        help="npconv.keep_freed_memory() in every library's process")
    args = parser.parse_args(argv)
    print("\n".join(report(measure(args.rounds, args.threads, args.only, args.clock,
                                    keep=args.keep_freed_memory))))


if __name__ == "__main__":
    main()
