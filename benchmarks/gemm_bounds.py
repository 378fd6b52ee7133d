"""What the three im2col GEMMs alone cost, next to npconv and PyTorch, for the shapes that miss
their targets in docs/benchmarks.md.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/gemm_bounds.py

Forward plus backward of an im2col convolution is three GEMMs against window matrices: y = cols
@ w (N*P x prod(K)*C times prod(K)*C x F), dw = cols^T @ dy, and the stride-1 input gradient, a
full correlation, dxp = cols' @ w' (N*Sp x prod(K)*F times prod(K)*F x C). This times exactly
those three products with NumPy's BLAS, on whole matrices built beforehand (y and dx written
into preallocated arrays, BLAS on all threads), so the numbers leave out everything else a
convolution does: building the window matrices, padding, the bias and its gradient. Their sum is
the least an implementation pays that builds each window matrix whole and hands it to BLAS, and
its ratio to PyTorch's fwd+bwd the best such an implementation could report. It is not a bound
for every NumPy implementation: npconv's cache-sized chunks run faster GEMMs than these on the
wider layers (3-D, ResNet). Strided shapes are left out (their dx is a scatter, not a third GEMM
of this form). Rounds alternate npconv, PyTorch (when installed) and the three products in one
process; medians of each one's best call in a burst of at least 0.2 s, each burst after a pause
(OpenBLAS's and PyTorch's threads keep spinning for a while after a call, on the cores the next
one needs). Prints a markdown table; writes nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from conv import SHAPES, make_case, npconv_calls, torch_calls  # noqa: E402

NAMES = ("lenet 3x3", "resnet 3x3", "1x1", "3-D 3x3x3")


def gemm_calls(case):
    """The three products of the shape's fwd+bwd on random whole matrices, one call."""
    spec = case.spec()
    k, c, f = math.prod(spec.kernel_size), spec.in_channels, spec.out_channels
    rows, rows_dx = spec.batch * math.prod(spec.out_size), spec.batch * math.prod(spec.padded_size)
    rng = np.random.default_rng(0)

    def rand(*shape):
        return rng.standard_normal(shape).astype(case.dtype)

    cols, w, dy, y = rand(rows, k * c), rand(k * c, f), rand(rows, f), rand(rows, f)
    cols_dx, w_dx, dx = rand(rows_dx, k * f), rand(k * f, c), rand(rows_dx, c)

    def three():
        np.matmul(cols, w, out=y)
        cols.T @ dy
        np.matmul(cols_dx, w_dx, out=dx)

    return three


def square_gemm(dtype, n: int = 2048):
    a = np.random.default_rng(1).standard_normal((n, n)).astype(dtype)
    return lambda: a @ a, 2 * n**3


def best_of(fn, pause: float = 0.3, burst: float = 0.2) -> float:
    """Best time of a burst of calls (at least three, for at least `burst` seconds) after a
    pause and one untimed call."""
    time.sleep(pause)                # the previous library's idle threads stop spinning first
    fn()
    times, end = [], time.perf_counter() + burst
    while len(times) < 3 or time.perf_counter() < end:
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args(argv)
    print("| shape | dtype | GEMM GFLOP/s (2048^3) | three GEMMs ms (% of GEMM) | "
          "npconv fwd+bwd ms (% of GEMM) | torch fwd+bwd ms | GEMMs/torch | npconv/torch |")
    print("|---|---|---|---|---|---|---|---|")
    for dtype in (np.float32, np.float64):
        for shape in (s for s in SHAPES if s.name in NAMES):
            case = make_case(shape, dtype)
            fns = {"gemms": gemm_calls(case), "npconv": npconv_calls(case)[1]}
            calls = torch_calls(case)
            if calls is not None:
                fns["torch"] = calls[1]
            square, square_flops = square_gemm(dtype)
            fns["square"] = square
            times = {name: [] for name in fns}
            for _ in range(args.rounds):
                for name, fn in fns.items():
                    times[name].append(best_of(fn))
            t = {name: statistics.median(v) for name, v in times.items()}
            print(_row(shape.name, dtype, t, 3 * 2 * case.macs, square_flops / t["square"]))


def _row(name: str, dtype, t: dict, flops: int, peak: float) -> str:
    """One table row from the medians `t` (seconds); `flops` are the direct method's, x3."""
    def pct(seconds):
        return f"{seconds * 1e3:.1f} ({100 * flops / seconds / peak:.0f}%)"

    def ratio(key):
        return f"{t[key] / t['torch']:.2f}" if "torch" in t else "n/a"

    torch_ms = f"{t['torch'] * 1e3:.1f}" if "torch" in t else "n/a"
    return (f"| {name} | {np.dtype(dtype).name} | {peak / 1e9:.0f} | {pct(t['gemms'])} "
            f"| {pct(t['npconv'])} | {torch_ms} | {ratio('gemms')} | {ratio('npconv')} |")


if __name__ == "__main__":
    main()
