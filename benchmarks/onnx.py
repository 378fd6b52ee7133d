"""ONNX models side by side: ONNX's reference evaluator, npconv.onnx.Evaluator and onnxruntime.

    python benchmarks/onnx.py [--batches 1 8] [--size 224] [--repeats 5] [--threads N]
                              [--clock wall|cpu] [--floor] [--out FILE]

ResNet-18 and MobileNetV2, written in plain torch with torchvision's structure
(tests/torch_reference.py: torchvision itself does not load with the CPU torch here) and random
weights, are exported once by `torch.onnx.export` with a dynamic batch, then run at each batch
size by

- `onnx.reference.ReferenceEvaluator`, ONNX's pure-NumPy evaluator: ONE timed run (its pooling
  loops over output positions in Python, minutes at batch 8),
- `npconv.onnx.Evaluator`, the same evaluator with npconv computing the conv-net operators,
- onnxruntime's CPU provider,

each in a process of its own (the network exported once by the parent), one untimed call first
for the last two and then the best of `--repeats`. With `--floor`, also
benchmarks/straight_line.py's program of the graph (the NumPy calls its nodes need, nothing
between them) and its bound (without the padding copies and the 1x1 layers' bias additions),
the same way, in a second table. All use every core (npconv's default,
OpenBLAS's, onnxruntime's), or `--threads N` each (npconv's `threads` setting and BLAS through
threadpoolctl for both NumPy evaluators, onnxruntime's intra-op threads): on a machine shared
with other jobs, threads that spin while they wait for a core make the all-core numbers
meaningless, and with `--threads 1 --clock cpu` the time a process spends waiting for a busy
core is not counted. The table gives the times, the ratios the issue sets targets for
(reference / npconv >= 10, npconv / onnxruntime <= 3) and the largest absolute difference of
each NumPy evaluator's logits to onnxruntime's. `run()` returns the markdown lines, for
benchmarks/run.py to include: load this file under another name
(importlib.util.spec_from_file_location("onnx_bench", path)), since `import onnx` must find the
package.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
# This file has the name of the package it measures: `import onnx` must not find it.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
if __name__ == "onnx":                      # imported by that name from this folder
    del sys.modules["onnx"]
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))              # torch_reference: the networks

import npconv  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The networks: tests/torch_reference.py's plain-torch twins of torchvision's
# ---------------------------------------------------------------------------------------------


def network(name: str):
    """torchvision's resnet18 or mobilenet_v2 (1000 classes), in plain torch."""
    import torch
    from torch_reference import reference

    return getattr(reference(torch), name)(1000)


def randomize(model, seed: int):
    """Random weights and batch-norm statistics (a fresh network's BN is the identity)."""
    import torch

    torch.manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.normal_(0, 0.1)
                m.running_mean.normal_(0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    return model.eval()


def export(model, path: Path, size: int) -> None:
    """torch.onnx.export with a dynamic batch dimension."""
    import torch

    x = torch.randn(2, 3, size, size)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(model, (x,), dynamo=True, input_names=["x"],
                                    output_names=["logits"], verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(path))


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def best_time(fn, repeats: int, clock=time.perf_counter) -> tuple[float, object]:
    """One untimed call, then the best of `repeats` (seconds) and the last result."""
    out = fn()
    best = float("inf")
    for _ in range(repeats):
        t = clock()
        out = fn()
        best = min(best, clock() - t)
    return best, out


def page_faults() -> int | None:
    """The process's minor page faults so far (None where `resource` is missing: Windows)."""
    try:
        import resource
    except ImportError:
        return None
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def once(fn, clock=time.perf_counter) -> tuple[float, object]:
    t = clock()
    out = fn()
    return clock() - t, out


def ort_session(path: Path, threads: int | None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def blas_limit(threads: int | None):
    """BLAS held to `threads` threads for the reference evaluator (threadpoolctl)."""
    if threads is None:
        return contextlib.nullcontext()
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=threads, user_api="blas")


def _runner(impl: str, path: Path, threads: int | None):
    """(a call x -> logits, its settings' context, the delegated nodes) of one implementation."""
    if impl == "onnxruntime":
        sess = ort_session(path, threads)
        return (lambda x: sess.run(None, {"x": x})[0]), contextlib.nullcontext(), lambda: {}
    if impl in ("straight-line", "bound"):
        import onnx

        spec = importlib.util.spec_from_file_location("straight_line", HERE / "straight_line.py")
        straight_line = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(straight_line)
        program = straight_line.Program(onnx.load(str(path)), free_passes=impl == "bound")
        return program, blas_limit(threads), lambda: {}
    if impl == "reference":
        from onnx.reference import ReferenceEvaluator

        ref = ReferenceEvaluator(str(path))
        return (lambda x: ref.run(None, {"x": x})[0]), blas_limit(threads), lambda: {}
    from npconv.onnx import Evaluator

    ev = Evaluator(str(path))
    settings = contextlib.ExitStack()
    settings.enter_context(npconv.config(threads=threads))
    settings.enter_context(blas_limit(threads))                # ONNX's Gemm uses BLAS too
    return (lambda x: ev.run(None, {"x": x})[0]), settings, lambda: ev.delegated


def worker(impl: str, path: str, batch: str, size: str, repeats: str, threads: str, clock: str,
           out: str) -> None:
    """Time one implementation in this (fresh) process and write seconds, logits and the
    delegated nodes to the .npz `out`."""
    batch, size, repeats, threads = int(batch), int(size), int(repeats), int(threads) or None
    x = np.random.default_rng(batch).normal(size=(batch, 3, size, size)).astype(np.float32)
    call, settings, delegated = _runner(impl, Path(path), threads)
    with settings:
        if impl == "reference":
            seconds, y = once(lambda: call(x), CLOCKS[clock])
            faults = None
        else:
            call(x)                                              # the first: weights etc.
            before = page_faults()
            seconds, y = best_time(lambda: call(x), repeats, CLOCKS[clock])
            faults = None if before is None else (page_faults() - before) / (repeats + 1)
    np.savez(out, seconds=seconds, logits=y, delegated=json.dumps(delegated()),
             faults=np.nan if faults is None else faults)


def in_subprocess(impl: str, path: Path, batch: int, size: int, repeats: int,
                  threads: int | None, clock: str) -> tuple[float, np.ndarray, dict, float]:
    """`worker` in a process of its own: no library's threads (onnxruntime's and OpenMP's
    spin after their calls) or allocations disturb another's timing."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "result.npz"
        subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", impl,
                        str(path), str(batch), str(size), str(repeats), str(threads or 0), clock,
                        str(out)], check=True)
        with np.load(out) as f:
            return (float(f["seconds"]), f["logits"], json.loads(str(f["delegated"])),
                    float(f["faults"]))


def measure(path: Path, batch: int, size: int, repeats: int, reference: bool,
            threads: int | None, clock: str = "wall", floor: bool = False) -> dict:
    args = (path, batch, size, repeats, threads, clock)
    t_ort, want, _, _ = in_subprocess("onnxruntime", *args)
    t_np, got, delegated, faults = in_subprocess("npconv", *args)
    row = dict(batch=batch, ort=t_ort, npconv=t_np, npconv_diff=float(np.abs(got - want).max()),
               delegated=delegated, reference=None, reference_diff=None,
               npconv_faults=None if np.isnan(faults) else faults)
    if reference:
        row["reference"], slow, _, _ = in_subprocess("reference", *args)
        row["reference_diff"] = float(np.abs(slow - want).max())
    if floor:
        row["line"], line, _, _ = in_subprocess("straight-line", *args)
        row["line_diff"] = float(np.abs(line - want).max())
        row["bound"] = in_subprocess("bound", *args)[0]
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _ms(t) -> str:
    return "n/a" if t is None else f"{t * 1e3:.0f}" if t >= 0.1 else f"{t * 1e3:.1f}"


def _x(a, b, digits: int = 1) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.{digits}f}x"


def _e(v) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def _markdown(header: list[str], results: dict, cells) -> list[str]:
    """A markdown table: the model, the batch and `header`'s columns, one line per row of
    every model, the last columns `cells(row)`."""
    columns = ["model", "batch", *header]
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name, rows in results.items():
        lines += ["| " + " | ".join([name, str(r["batch"]), *cells(r)]) + " |" for r in rows]
    return lines


def table(results: dict) -> list[str]:
    def cells(r: dict) -> list[str]:
        faults = r.get("npconv_faults")
        return [_ms(r["reference"]), _ms(r["npconv"]), _ms(r["ort"]),
                _x(r["reference"], r["npconv"]), _x(r["npconv"], r["ort"]),
                _e(r["npconv_diff"]), _e(r["reference_diff"]),
                "n/a" if faults is None else f"{faults:.0f}"]

    return _markdown(["reference ms", "npconv.onnx ms", "onnxruntime ms",
                      "reference / npconv (>= 10)", "npconv / onnxruntime (<= 3)",
                      "max diff npconv", "max diff reference",
                      "npconv.onnx page faults / run"], results, cells)


def floor_table(results: dict) -> list[str]:
    """What the rows of `measure(..., floor=True)` add: the straight-line program
    (benchmarks/straight_line.py) and its bound, against npconv.onnx and onnxruntime."""
    def cells(r: dict) -> list[str]:
        return [_ms(r["npconv"]), _ms(r["line"]), _ms(r["bound"]), _ms(r["ort"]),
                _x(r["npconv"], r["ort"], 2), _x(r["line"], r["ort"], 2),
                _x(r["bound"], r["ort"], 2), _e(r["line_diff"])]

    return _markdown(["npconv.onnx ms", "straight-line NumPy ms", "bound ms", "onnxruntime ms",
                      "npconv / onnxruntime", "straight-line / onnxruntime",
                      "bound / onnxruntime", "max diff straight-line"], results, cells)


def environment(threads: int | None) -> list[str]:
    import onnx
    import onnxruntime
    import torch

    cores = os.cpu_count()
    return [f"- Python {platform.python_version()}, NumPy {np.__version__}, npconv "
            f"{npconv.__version__}, onnx {onnx.__version__}, onnxruntime "
            f"{onnxruntime.__version__}, torch {torch.__version__} (export only)",
            f"- {cores} logical CPUs; threads: "
            f"{'each library its default' if threads is None else threads}"]


def run(batches=(1, 8), size: int = 224, repeats: int = 5, reference: bool = True,
        models=("resnet18", "mobilenet_v2"), threads: int | None = None,
        clock: str = "wall", floor: bool = False) -> list[str]:
    """Export, run and compare every model at every batch size; the markdown report."""
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(models):
            path = Path(tmp) / f"{name}.onnx"
            export(randomize(network(name), seed=i), path, size)
            results[name] = [measure(path, b, size, repeats, reference, threads, clock,
                                     floor)
                             for b in batches]
            for r in results[name]:
                if r["delegated"]:
                    print(f"{name}: nodes run by ONNX's classes: {r['delegated']}")
    what = "wall-clock time" if clock == "wall" else "the process's CPU time (time.process_time)"
    return [*environment(threads), "", f"Times: {what}. Input {size}x{size} float32, random "
            f"weights; best of {repeats} runs after a warm-up for npconv.onnx and onnxruntime, "
            "one run for the reference evaluator. Max diff: the largest absolute difference of "
            "the logits to onnxruntime's. Page faults: npconv.onnx's minor page faults per call "
            "after the first (memory mapped and touched afresh).", "", *table(results),
            *(["", "The least a NumPy evaluator can take (--floor): benchmarks/straight_line.py's "
               "program of each graph, best of the same runs; its bound leaves out the "
               "depthwise layers' padding copies and the 1x1 layers' bias additions.", "",
               *floor_table(results)] if floor else [])]


def main(argv=None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--worker"]:
        return worker(*argv[1:])
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--models", nargs="+", default=["resnet18", "mobilenet_v2"])
    parser.add_argument("--no-reference", dest="reference", action="store_false",
                        help="skip ONNX's reference evaluator (minutes at 224x224)")
    parser.add_argument("--threads", type=int, help="threads for every library (default: all)")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: the process's CPU time, which time spent waiting for a busy "
                             "core does not inflate (meaningful with --threads 1)")
    parser.add_argument("--floor", action="store_true",
                        help="also time benchmarks/straight_line.py's program of each graph")
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    lines = run(tuple(args.batches), args.size, args.repeats, args.reference, tuple(args.models),
                args.threads, args.clock, args.floor)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
