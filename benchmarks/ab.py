"""A/B timing of two npconv source trees on the convolution shapes of docs/benchmarks.md.

    mkdir -p /tmp/npconv_base && git archive cf42279 | tar -x -C /tmp/npconv_base
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab.py /tmp/npconv_base

(cf42279: the last commit before the core's redesign of issue 15, whose bar is "same speed";
any other commit or checkout works alike.) Each round runs every shape once in a fresh process
per tree, the trees alternating in order from round to round, each tree with its own src/ and
its own benchmark shapes and inputs (benchmarks/conv.py, or run.py in trees from before that
file); a tree whose npconv does not come from its own src/ is an error. It prints per shape
the medians and the minima over rounds of each tree's best-of-`--reps` forward and forward
plus backward time and their ratios (this tree over the other), then per dtype the geometric
means of the median ratios and the rows more than 10% slower: issue 15's bar is every ratio
within 10% and the geometric means no worse (<= 1). `--cpu` measures CPU time with one thread
(BLAS and npconv's workers held to one): far less sensitive to other processes on a busy
machine than wall time, blind to how the work spreads over cores. docs/benchmarks.md comes
from benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import math
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(tree: str, names: list[str], dtype: str, reps: int, cpu: bool) -> None:
    """Time the shapes with the npconv of `tree`; print {name: [fwd, fwd+bwd]} as JSON."""
    root = Path(tree).resolve()
    sys.path[:] = [str(root / "src"), str(root / "benchmarks")] + [
        p for p in sys.path if Path(p or ".").resolve() != HERE]      # nothing of this tree
    import numpy as np

    import npconv

    if root / "src" not in Path(npconv.__file__).resolve().parents:
        raise RuntimeError(f"npconv came from {npconv.__file__}, not from {root / 'src'}")
    shapes_of = "conv" if (root / "benchmarks" / "conv.py").exists() else "run"
    bench = importlib.import_module(shapes_of)  # the tree's own benchmark shapes and inputs
    SHAPES, make_case = bench.SHAPES, bench.make_case

    clock = time.process_time if cpu else time.perf_counter
    limits = contextlib.nullcontext()
    if cpu:
        from threadpoolctl import threadpool_limits

        limits = threadpool_limits(1)
    out = {}
    with limits, npconv.config(threads=1) if cpu else contextlib.nullcontext():
        for name in names:
            shape = next(s for s in SHAPES if s.name == name)
            case, kw = make_case(shape, np.dtype(dtype).type), shape.kwargs

            def fwd(case=case, kw=kw):
                npconv.conv(case.x, case.w, case.b, **kw)

            def both(case=case, kw=kw):
                fwd()
                npconv.conv_backward(case.dy, case.x, case.w, **kw)

            fwd(), both()                                        # warm up
            best = [float("inf")] * 2
            for _ in range(reps):
                for i, fn in enumerate((fwd, both)):
                    start = clock()
                    fn()
                    best[i] = min(best[i], clock() - start)
            out[name] = best
    print(json.dumps(out))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("other", help="the other tree (its src/ and benchmarks/ are used)")
    p.add_argument("--rounds", type=int, default=4)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument("--shapes", help="comma-separated names (default: all of run.py's)")
    p.add_argument("--cpu", action="store_true", help="one thread, CPU time")
    p.add_argument("--child", nargs=2, help=argparse.SUPPRESS)   # tree, dtype
    a = p.parse_args(argv)
    if a.child:                         # before anything imports npconv from this tree
        return child(a.child[0], a.shapes.split(","), a.child[1], a.reps, a.cpu)
    from conv import SHAPES

    names = a.shapes.split(",") if a.shapes else [s.name for s in SHAPES]
    trees = {"this": str(HERE.parent), "other": a.other}
    times: dict = {}
    for r in range(a.rounds):
        for dtype in a.dtypes.split(","):
            for label in (("other", "this") if r % 2 else ("this", "other")):
                cmd = [sys.executable, __file__, a.other, "--shapes", ",".join(names), "--reps",
                       str(a.reps), "--child", trees[label], dtype] + ["--cpu"] * a.cpu
                got = json.loads(subprocess.run(cmd, capture_output=True, text=True,
                                                check=True).stdout)
                for name, pair in got.items():
                    times.setdefault((dtype, name, label), []).append(pair)
    print(f"this: {trees['this']}; other: {a.other}; {a.rounds} rounds, best of {a.reps}"
          + (", CPU time on one thread" if a.cpu else ", wall time") + "\n")
    print("| shape | dtype | other fwd, fwd+bwd (ms) | this fwd, fwd+bwd (ms) | "
          "this/other median | this/other min |\n|---|---|---|---|---|---|")
    ratios: dict = {}
    for dtype in a.dtypes.split(","):
        for name in names:
            o, t = times[(dtype, name, "other")], times[(dtype, name, "this")]
            med = [[statistics.median(x[i] for x in runs) for i in (0, 1)] for runs in (o, t)]
            low = [[min(x[i] for x in runs) for i in (0, 1)] for runs in (o, t)]
            ratios[(dtype, name)] = [med[1][i] / med[0][i] for i in (0, 1)]
            print(f"| {name} | {dtype} | {med[0][0] * 1e3:.1f}, {med[0][1] * 1e3:.1f} | "
                  f"{med[1][0] * 1e3:.1f}, {med[1][1] * 1e3:.1f} | "
                  f"{med[1][0] / med[0][0]:.2f}, {med[1][1] / med[0][1]:.2f} | "
                  f"{low[1][0] / low[0][0]:.2f}, {low[1][1] / low[0][1]:.2f} |")
    print()
    for dtype in a.dtypes.split(","):
        print(bar(dtype, {n: r for (d, n), r in ratios.items() if d == dtype}))


def bar(dtype: str, ratios: dict) -> str:
    """Issue 15's "same speed" bar on one dtype's median ratios (this/other, fwd and fwd+bwd):
    the geometric means, and the rows more than 10% slower."""
    means = [math.exp(statistics.fmean(math.log(r[i]) for r in ratios.values())) for i in (0, 1)]
    slow = [f"{name} {'fwd' if i == 0 else 'fwd+bwd'} {r[i]:.2f}"
            for name, r in ratios.items() for i in (0, 1) if r[i] > 1.1]
    verdict = "met" if max(means) <= 1 and not slow else "missed"
    return (f"- {dtype}: geometric mean this/other fwd {means[0]:.2f}, fwd+bwd {means[1]:.2f}; "
            f"rows over 1.10: {', '.join(slow) or 'none'} (bar: {verdict})")


if __name__ == "__main__":
    main()
