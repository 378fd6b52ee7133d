"""A/B timing of two npconv source trees on the shapes of benchmarks/run.py, alternating.

    git archive REV | tar -x -C /tmp/npconv_base      # the other tree, e.g. the previous commit
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/ab.py /tmp/npconv_base

Each round runs every shape once in a fresh process per tree, the trees alternating in order
from round to round, and prints per shape the medians and the minima over rounds of each
tree's best-of-`--reps` forward and forward plus backward time, and their ratios (this tree
over the other). `--cpu` measures CPU time with one thread (BLAS and npconv's workers held to
one): far less sensitive to other processes on a busy machine than wall time, blind to how
the work spreads over cores. Short runs, meant for checking a change; docs/benchmarks.md comes
from benchmarks/run.py.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def child(tree: str, names: list[str], dtype: str, reps: int, cpu: bool) -> None:
    """Time the shapes with the npconv of `tree`; print {name: [fwd, fwd+bwd]} as JSON."""
    sys.path[:0] = [f"{tree}/src", f"{tree}/benchmarks"]
    import numpy as np
    from run import SHAPES, make_case  # the tree's own benchmark shapes and inputs

    import npconv

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
    from run import SHAPES

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
    print("| shape | dtype | other fwd, fwd+bwd (ms) | this fwd, fwd+bwd (ms) | "
          "this/other median | this/other min |\n|---|---|---|---|---|---|")
    for dtype in a.dtypes.split(","):
        for name in names:
            o, t = times[(dtype, name, "other")], times[(dtype, name, "this")]
            med = [[statistics.median(x[i] for x in runs) for i in (0, 1)] for runs in (o, t)]
            low = [[min(x[i] for x in runs) for i in (0, 1)] for runs in (o, t)]
            print(f"| {name} | {dtype} | {med[0][0] * 1e3:.1f}, {med[0][1] * 1e3:.1f} | "
                  f"{med[1][0] * 1e3:.1f}, {med[1][1] * 1e3:.1f} | "
                  f"{med[1][0] / med[0][0]:.2f}, {med[1][1] / med[0][1]:.2f} | "
                  f"{low[1][0] / low[0][0]:.2f}, {low[1][1] / low[0][1]:.2f} |")


if __name__ == "__main__":
    main()
