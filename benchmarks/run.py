"""docs/benchmarks.md in one run: every benchmark section, npconv next to PyTorch CPU.

    make bench            # env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py
    python benchmarks/run.py --sections pooling,layers --no-write    # some sections, printed
    python benchmarks/run.py --quick                                  # smoke run, printed only

The sections, each a script of this folder that also runs alone, in this order:

- conv: the convolution shapes, float32 and float64, against PyTorch and the seed's method,
  and the threads table (conv.py);
- pooling: issue 18's pooling rows (pooling.py);
- layers: BatchNorm, activations and upsampling (layer_ops.py), and what an evaluation-mode
  BatchNorm folded into its convolution costs (here);
- models: ResNet-18 and MobileNetV2 inference and one training step, inference peak memory
  (models.py, issues 12 and 18);
- onnx: ResNet-18 and MobileNetV2 exported to ONNX, run by ONNX's reference evaluator, by
  npconv.onnx and by onnxruntime (onnx.py, issue 17; skipped, and said so, where that script or
  the onnx, onnxruntime or torch packages are missing).

The file gets one Machine block (CPU, libraries, threads, the NumPy GEMM rate and the load
average at the start and at the end of the run: a VM's slow phases and other processes show
there), one Command line, a Summary that checks every issue's targets on this run's numbers
(geometric means and worst rows, "met" or "missed"), a Reading block written by hand after a
full run (kept from the previous file when the file is regenerated), then each section's method
and tables. `--rounds` is the convolution section's round count; the other sections scale
theirs from it (`Section.scale`). `--quick` runs every row at a tiny size with one round (the
convolutions in float32 only), to check that the scripts still run: its numbers mean nothing,
so it writes a file only where `--output` says. PyTorch is optional everywhere (its columns
say "n/a").

Run time on the 2-core machine with the defaults: about 22 minutes for conv, 1-2 each for
pooling, layers and models, several for onnx (ONNX's reference evaluator at batch 8); --quick
2-3 minutes.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import platform
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DOC = HERE.parent / "docs" / "benchmarks.md"
sys.path.insert(0, str(HERE.parent / "src"))

import npconv  # noqa: E402
from npconv import _config  # noqa: E402

# ---------------------------------------------------------------------------------------------
# Sections
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """What one run asks of every section."""

    rounds: int = 5                            # the convolution section's; others scale it
    quick: bool = False                        # every row at a tiny size, one round
    pause: float = 0.1                         # least seconds after a timed burst (conv)
    duty: float = 2.0                          # pause as a multiple of the burst (conv)
    dtypes: tuple[str, ...] = ("float32", "float64")          # conv
    shapes: tuple[str, ...] = ()               # conv shape name prefixes; all when empty
    threads_table: bool = True                 # conv's threads table
    threads: int = field(default_factory=lambda: _config.resolve().threads)


@dataclass
class Report:
    """What a section gives docs/benchmarks.md: its body (method and tables), its summary
    lines (the issue's targets, met or missed), and npconv/PyTorch per row for the targets
    that span sections."""

    body: list[str]
    targets: list[str]
    ratios: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


@dataclass(frozen=True)
class Section:
    """One part of the run: `run(options, rounds)` gives its Report. `scale` is its rounds
    per round of the convolution section; `needs` the scripts (in this folder) and packages
    without which it cannot run at all (then it is skipped, and the file says why)."""

    name: str
    title: str
    run: Callable[[Options, int], Report]
    scale: float = 1.0
    needs: tuple[str, ...] = ()

    def rounds(self, options: Options) -> int:
        return 1 if options.quick else max(1, round(self.scale * options.rounds))

    def missing(self) -> list[str]:
        """The needs this checkout or environment lacks (packages by their installed
        metadata: importing onnx would find this folder's onnx.py)."""
        def present(need: str) -> bool:
            return (HERE / need).exists() if need.endswith(".py") else bool(_version(need))

        return [n for n in self.needs if not present(n)]


def tiny(x: tuple) -> tuple:
    """A smoke run's version of an (N, *S, C) shape: batch at most 2, each side at most 12."""
    return (min(x[0], 2), *(min(s, 12) for s in x[1:-1]), x[-1])


def script(name: str, module: str | None = None):
    """This folder's `name`.py, imported (as `module` where its own name is an installed
    package's: onnx.py)."""
    if module is None:
        return importlib.import_module(name)
    spec = importlib.util.spec_from_file_location(module, HERE / f"{name}.py")
    loaded = importlib.util.module_from_spec(spec)
    sys.modules[module] = loaded
    spec.loader.exec_module(loaded)
    return loaded


# ---------------------------------------------------------------------------------------------
# Targets
# ---------------------------------------------------------------------------------------------


def geomean(values) -> float | None:
    values = [v for v in values if v is not None]
    return math.exp(statistics.fmean(map(math.log, values))) if values else None


def verdict(value: float | None, bound: float, at_least: bool = False) -> str:
    """'met' when value <= bound (>= with at_least), 'missed' otherwise, 'n/a' without one."""
    if value is None:
        return "n/a"
    return "met" if (value >= bound if at_least else value <= bound) else "missed"


def fmt(value: float | None, suffix: str = "x") -> str:
    return "n/a" if value is None else f"{value:.2f}{suffix}"


def ratio_targets(ratios: dict, names, geo: float | None, worst: float | None) -> str:
    """npconv/PyTorch over the named rows: the geometric mean and the worst row, each against
    its bound (None: shown, no target), and the rows this run lacks."""
    got = {n: ratios[n] for n in names if ratios.get(n) is not None}
    if not got:
        return "n/a (no PyTorch times in this run)"
    gm, name = geomean(got.values()), max(got, key=got.get)
    text = f"geometric mean {fmt(gm)}" + (f" (target <= {geo}: {verdict(gm, geo)})"
                                          if geo is not None else "")
    text += f", worst {fmt(got[name])} ({name}" + (
        f"; target <= {worst}: {verdict(got[name], worst)})" if worst is not None else ")")
    lacking = [n for n in names if n not in got]
    return text + (f"; not measured in this run: {', '.join(lacking)}" if lacking else "")


# ---------------------------------------------------------------------------------------------
# conv: benchmarks/conv.py
# ---------------------------------------------------------------------------------------------

CONV_TARGETS = {"float32": 1.3, "float64": 1.0}   # geometric mean of npconv/torch, fwd+bwd
CONV_WORST, CONV_SEED, CONV_GEMM = 2.0, 3.0, 70.0  # worst row; seed/npconv; % of the GEMM
CONV_GEMM_SHAPES = ("resnet 3x3", "1x1")


def conv_section(options: Options, rounds: int) -> Report:
    conv = script("conv")
    shapes = [s for s in conv.SHAPES if not options.shapes
              or any(s.name.startswith(p) for p in options.shapes)]
    pause, duty = options.pause, options.duty
    if options.quick:                                  # a smoke run: no pauses either
        shapes, pause, duty = [replace(s, x=tiny(s.x)) for s in shapes], 0.0, 0.0
    print(conv.HEADER, "|" + "---|" * (conv.HEADER.count("|") - 1), sep="\n")
    results = []
    for dtype in options.dtypes:
        for shape in shapes:
            results.append(conv.measure(shape, np.dtype(dtype).type, rounds, pause, duty))
            print(conv.row(results[-1]), flush=True)
    threads = []
    if options.threads_table:
        print(*conv.THREADS_HEADER, sep="\n")
        threads = conv.threads_check(shapes, 1 if options.quick else max(3, rounds // 2),
                                     pause, duty)
    return Report(conv.report(results, threads), conv_targets(results))


def conv_targets(results) -> list[str]:
    """Per dtype: npconv/torch fwd+bwd (geometric mean, worst row), the seed's method's time
    over npconv's, and the share of the GEMM's rate on the GEMM-bound shapes."""
    lines = []
    for dtype in dict.fromkeys(r.dtype for r in results):       # in the order run
        rs = [r for r in results if r.dtype == dtype]
        ratios = {r.shape.name: r.both["npconv"] / r.both["torch"] for r in rs
                  if "torch" in r.both}
        seed = geomean([r.both["seed"] / r.both["npconv"] for r in rs if "seed" in r.both])
        lines.append(f"- {dtype}: npconv/torch fwd+bwd "
                     + ratio_targets(ratios, ratios, CONV_TARGETS.get(dtype), CONV_WORST)
                     + f"; the seed's method takes {fmt(seed)} npconv's time (geometric mean; "
                       f"target >= {CONV_SEED:.0f}: {verdict(seed, CONV_SEED, at_least=True)})")
        for r in rs:
            if r.shape.name in CONV_GEMM_SHAPES:
                pct = [100 * k * r.macs / t / 1e9 / r.gemm for k, t in
                       ((2, r.fwd["npconv"]), (6, r.both["npconv"]))]
                lines.append(f"  - {r.shape.name}: {pct[0]:.0f}% (fwd) and {pct[1]:.0f}% "
                             f"(fwd+bwd) of the GEMM's {r.gemm:.0f} GFLOP/s (target >= "
                             f"{CONV_GEMM:.0f}%: {verdict(pct[1], CONV_GEMM, at_least=True)})")
    return lines


# ---------------------------------------------------------------------------------------------
# pooling: benchmarks/pooling.py; layers: benchmarks/layer_ops.py and the folded batch norm
# ---------------------------------------------------------------------------------------------

# Issue 18's target rows: forward plus backward, float32, against PyTorch.
ISSUE_18_ROWS = ("max_pool 3x3 s2 p1, fwd+bwd", "max_pool 2x2 s2, fwd+bwd",
                 "avg_pool 3x3 s1 p1, fwd+bwd", "global avg pool, fwd+bwd",
                 "BatchNorm train fwd+bwd", "ReLU fwd+bwd")
ISSUE_18_FORWARD_ROWS = ("max_pool 3x3 s2 p1, fwd", "BatchNorm eval fwd")
ISSUE_18_GEO, ISSUE_18_WORST = 1.5, 2.5
FOLDED_BOUND = 1.05            # "costs nothing": within the timing's resolution of the conv


def pooling_section(options: Options, rounds: int) -> Report:
    pooling = script("pooling")
    rows = pooling.ROWS
    if options.quick:
        rows = tuple(replace(r, x=tiny(r.x)) for r in rows)
    results = pooling.run(rounds, rows)
    text = pooling.markdown(results)
    print(text)
    ratios = {r.row.name: r.ratio for r in results}
    return Report(text.rstrip("\n").splitlines(),
                  ["- every row: npconv/PyTorch " + ratio_targets(ratios, ratios, None, None)],
                  ratios)


def layers_section(options: Options, rounds: int) -> Report:
    layer_ops = script("layer_ops")
    shapes = (layer_ops.SHAPE, layer_ops.UPSAMPLE_SHAPE)
    if options.quick:
        shapes = tuple(map(tiny, shapes))
    results = layer_ops.measure(rounds, options.threads, shapes=shapes)
    lines = layer_ops.report(results, shapes=shapes)
    kept = layer_ops.measure(rounds, options.threads, shapes=shapes, keep=True)
    lines += ["", "The same rows with `npconv.keep_freed_memory()` called first in every "
              "library's process (PyTorch's too): malloc keeps freed memory, and no new array "
              "page-faults (docs/algorithms.md, \"Measuring\"):", "",
              *layer_ops.report(kept, shapes=shapes)]
    folded = folded_batch_norm(shapes[0], rounds)
    lines += ["", "BatchNorm eval folded into the convolution before it (`model.eval()`): "
              f"npconv's 3x3 conv ({'x'.join(map(str, shapes[0]))}, no bias) followed by a "
              f"BatchNorm, in evaluation mode, took {fmt(folded)} the conv alone's time "
              "(median over alternating rounds of the ratio of each round's best of three)."]
    print("\n".join(lines))
    ratios = {r["name"]: r["ratio"] for r in results if not r["name"].startswith("floor")}
    kept_ratios = {r["name"]: r["ratio"] for r in kept if not r["name"].startswith("floor")}
    other = [n for n in ratios if n not in ISSUE_18_ROWS and "fwd+bwd" in n
             and "kept" not in n]                     # SiLU counted once, as PyTorch runs it
    layer_rows = [n for n in ISSUE_18_ROWS if n in kept_ratios]
    return Report(lines, [
        "- other activations and upsampling, fwd+bwd (no target): npconv/PyTorch "
        + ratio_targets(ratios, other, None, None),
        "- with `npconv.keep_freed_memory()` in both libraries' processes: "
        + ", ".join(f"{n} {fmt(kept_ratios[n])}" for n in layer_rows)
        + "; other activations and upsampling " + ratio_targets(kept_ratios, other, None, None),
        f"- BatchNorm eval folded into its convolution: {fmt(folded)} the convolution's time "
        f"(target: costs nothing, <= {FOLDED_BOUND}: {verdict(folded, FOLDED_BOUND)})"], ratios)


def folded_batch_norm(x_shape: tuple, rounds: int) -> float:
    """The time of an evaluation-mode 3x3 convolution followed by a BatchNorm (folded into the
    convolution by `eval()`) over the convolution's alone, same weights, alternating: the
    median over rounds of the ratio of each one's best of three calls."""
    from npconv import nn

    rng = np.random.default_rng(0)
    c = x_shape[-1]
    bn = nn.BatchNorm2d(c)
    bn.buffers["running_mean"][:] = rng.standard_normal(c)
    bn.buffers["running_var"][:] = rng.uniform(0.5, 1.5, c)
    conv = nn.Conv2d(c, c, 3, padding=1, bias=False, rng=rng)
    alone = nn.Conv2d(c, c, 3, padding=1, bias=False)
    alone.params["weight"][:] = conv.params["weight"]
    pair, single = nn.Sequential(conv, bn).eval(), nn.Sequential(alone).eval()
    x = rng.standard_normal(x_shape).astype(np.float32)
    pair(x), single(x)                                           # untimed: plans, pools

    def best(model) -> float:
        times = []
        for _ in range(3):
            start = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - start)
        return min(times)

    return statistics.median(best(pair) / best(single) for _ in range(rounds))


def issue_18(ratios: dict) -> list[str]:
    """Issue 18's targets over the pooling and layers sections' rows together."""
    forward = ", ".join(f"{n} {fmt(ratios.get(n))}" for n in ISSUE_18_FORWARD_ROWS)
    return ["- fwd+bwd rows (pooling, BatchNorm train, ReLU): npconv/PyTorch "
            + ratio_targets(ratios, ISSUE_18_ROWS, ISSUE_18_GEO, ISSUE_18_WORST),
            f"- forward-only rows (no target of their own): {forward}"]


# ---------------------------------------------------------------------------------------------
# models: benchmarks/models.py
# ---------------------------------------------------------------------------------------------

MODEL_TARGETS = {"resnet18": 1.5, "mobilenet_v2": 2.0}   # npconv/torch, every case
PEAK_ACTIVATIONS = 2.0      # inference peak: "about two activations" (the weights come on top)


def models_section(options: Options, rounds: int) -> Report:
    models = script("models")
    cases = models.CASES
    if options.quick:         # training steps at 64: batch norm over 2 values diverges at 32
        cases = tuple(replace(c, batch=min(c.batch, 2), size=64 if c.task == "train step"
                              else 32) for c in cases)
    rows = models.run(cases, rounds, options.threads)
    lines = [f"float32, npconv and PyTorch on {options.threads} threads, medians of {rounds} "
             f"alternating rounds: a pause of {models.PAUSE} s, then two calls of one library, "
             "the ratio from the second (a loop's steady state; the first call after the "
             "pause alongside). npconv runs channels_last with `model.eval()`'s folded batch "
             "norms for inference; PyTorch the same networks and weights "
             "(tests/torch_reference.py) in its channels_last memory format, inference under "
             "`torch.no_grad()`. A training step is a forward in training mode, cross-entropy, "
             "backward and SGD with momentum. Peak: tracemalloc's count of what one inference "
             "call allocates (activations and workspaces; the weights come on top).", "",
             models.table(rows)]
    print(lines[-1])
    return Report(lines, model_targets(cases, rows))


def model_targets(cases, rows) -> list[str]:
    """Per model: the worst npconv/torch over its cases against the issue's bound, and the
    inference peaks in largest activations."""
    lines = []
    for model, bound in MODEL_TARGETS.items():
        mine = [(c, r) for c, r in zip(cases, rows) if c.model == model]
        ratios = {c.name: r["ratio"] for c, r in mine}
        peaks = [r["peak_mb"] / r["activation_mb"] for c, r in mine if r["peak_mb"] is not None]
        worst_peak = max(peaks, default=None)
        lines.append(f"- {model}: npconv/PyTorch "
                     + ratio_targets(ratios, ratios, None, bound)
                     + f"; inference peak up to {fmt(worst_peak)} the largest activation "
                       f"(target about {PEAK_ACTIVATIONS:.0f}: "
                       f"{verdict(worst_peak, PEAK_ACTIVATIONS)})")
    return lines


# ---------------------------------------------------------------------------------------------
# onnx: benchmarks/onnx.py
# ---------------------------------------------------------------------------------------------

ONNX_REFERENCE, ONNX_RUNTIME = 10.0, 3.0    # reference / npconv at least; npconv / ort at most
ONNX_MODELS = ("resnet18", "mobilenet_v2")


def onnx_section(options: Options, rounds: int) -> Report:
    bench = script("onnx", module="onnx_bench")
    size, batches = (32, (1,)) if options.quick else (224, (1, 8))
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for seed, name in enumerate(ONNX_MODELS):
            path = Path(tmp) / f"{name}.onnx"
            bench.export(bench.randomize(bench.network(name), seed=seed), path, size)
            results[name] = [bench.measure(path, b, size, rounds, True, options.threads)
                             for b in batches]
    lines = [f"{size}x{size} float32, random weights, every library on {options.threads} "
             f"threads. Best of {rounds} runs after a warm-up for npconv.onnx and onnxruntime, "
             "one run for ONNX's reference evaluator (minutes at batch 8). Max diff: the "
             "largest absolute difference of the logits to onnxruntime's.", "",
             *bench.table(results)]
    print("\n".join(lines[2:]))
    return Report(lines, onnx_targets(results))


def onnx_targets(results: dict) -> list[str]:
    lines = []
    for name, rows in results.items():
        speedup = min((r["reference"] / r["npconv"] for r in rows if r["reference"]),
                      default=None)
        slower = max(r["npconv"] / r["ort"] for r in rows)
        lines.append(f"- {name}: the reference evaluator takes at least {fmt(speedup)} "
                     f"npconv.onnx's time (target >= {ONNX_REFERENCE:.0f}: "
                     f"{verdict(speedup, ONNX_REFERENCE, at_least=True)}); npconv.onnx takes "
                     f"up to {fmt(slower)} onnxruntime's (target <= {ONNX_RUNTIME:.0f}: "
                     f"{verdict(slower, ONNX_RUNTIME)})")
    return lines


SECTIONS = (
    Section("conv", "Convolutions", conv_section),
    Section("pooling", "Pooling (issue 18)", pooling_section, 3.0),
    Section("layers", "BatchNorm, activations, upsampling (issue 18)", layers_section, 3.0),
    Section("models", "Models (issues 12 and 18)", models_section),
    Section("onnx", "ONNX models (issue 17)", onnx_section, 1.0,
            ("onnx.py", "onnx", "onnxruntime", "torch", "onnxscript")),
)


# ---------------------------------------------------------------------------------------------
# The machine, the command, the file
# ---------------------------------------------------------------------------------------------


def gemm_gflops(dtype, n: int = 2048, repeats: int = 5) -> float:
    """The machine's NumPy GEMM throughput: best of `repeats` n x n x n products."""
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    best = math.inf
    for _ in range(repeats + 1):
        start = time.perf_counter()
        np.matmul(a, b, out=out)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best / 1e9


def yardstick(n: int) -> str:
    """The GEMM rates and the load average now, for the Machine block."""
    rates = ", ".join(f"{d} {gemm_gflops(np.dtype(d).type, n):.0f}"
                      for d in ("float32", "float64"))
    return f"NumPy GEMM ({n}^3) {rates} GFLOP/s, load average {os.getloadavg()[0]:.1f}"


def environment(options: Options) -> list[str]:
    cpu = _lscpu()
    return [f"- CPU: {cpu.get('Model name', platform.processor())}, "
            f"{cpu.get('CPU(s)', '?')} logical CPUs, {cpu.get('Core(s) per socket', '?')} "
            f"cores per socket, {cpu.get('Thread(s) per core', '?')} thread(s) per core",
            f"- Python {platform.python_version()}, NumPy {np.__version__}, "
            + ", ".join(f"{name} {_version(name) or 'not installed'}"
                        for name in ("torch", "onnx", "onnxruntime")),
            f"- BLAS: {_blas()}",
            f"- npconv {npconv.__version__}: {options.threads} worker threads, workspace limit "
            f"{npconv.get_config()['workspace'] // 2**20} MiB; PyTorch on as many threads",
            "- OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE: "
            f"{os.environ.get('OPENBLAS_CORETYPE', 'unset')} / "
            f"{os.environ.get('OPENBLAS_L2_SIZE', 'unset')}"]


def _version(package: str) -> str | None:
    """An installed package's version, without importing it; None when it is not installed."""
    from importlib import metadata

    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def _lscpu() -> dict:
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return {}
    pairs = (line.split(":", 1) for line in out.splitlines() if ":" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _blas() -> str:
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return "threadpoolctl not installed (BLAS kernel unknown)"
    infos = [i for i in threadpool_info() if i.get("user_api") == "blas"]
    return "; ".join(f"{i['internal_api']} {i.get('version')} kernel {i.get('architecture')}, "
                     f"{i['num_threads']} threads ({Path(i['filepath']).name})" for i in infos)


def command(argv: list[str]) -> str:
    """The command line as run: the one `make bench` runs when OpenBLAS's variables are
    unset, as the documented command does."""
    unset = not any(v in os.environ for v in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"))
    return " ".join(["env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE"] * unset
                    + ["python benchmarks/run.py", *map(shlex.quote, argv)])


READING = ("<!-- reading: written by hand after a full run; benchmarks/run.py keeps this "
           "block when it regenerates the file -->", "<!-- /reading -->")
READING_PLACEHOLDER = ("*To be written after the full run: what the numbers say, which "
                       "targets are missed and why, what sets each one's floor.*")


def kept_reading(path: Path) -> list[str]:
    """The hand-written Reading block of the file at `path`, or the placeholder."""
    text = path.read_text() if path.exists() else ""
    start, end = text.find(READING[0]), text.find(READING[1])
    if start < 0 or end < start:
        return [READING_PLACEHOLDER]
    return text[start + len(READING[0]):end].strip("\n").splitlines()


def markdown(reports: dict, options: Options, machine: list[str], cmd: str,
             reading: list[str], elapsed: float) -> str:
    """docs/benchmarks.md: Machine, Command, Summary, Reading, then each section."""
    times = ", ".join(f"{name} {r.seconds / 60:.1f}" for name, r in reports.items())
    lines = ["# Benchmarks", "",
             "Generated by `make bench` (benchmarks/run.py): every number in this file comes "
             "from the one run below. Do not edit by hand, except the Reading block, which the "
             "generator keeps. docs/algorithms.md explains the algorithms and, under "
             "\"Measuring\", what moves the timings.", ""]
    if options.quick:
        lines += ["**Smoke run (`--quick`): tiny sizes, one round. These numbers mean "
                  "nothing.**", ""]
    lines += ["## Machine", "", *machine, "", "## Command", "", f"    {cmd}", "",
              f"Run time {elapsed / 60:.1f} min ({times} min).", "", "## Summary", "",
              "Each issue's targets, checked on this run's numbers (npconv/PyTorch: below 1, "
              "npconv is faster).", ""]
    last_of_18 = [n for n in reports if n in ("pooling", "layers")][-1:]
    for name, r in reports.items():
        lines += [f"**{_section(name).title}**", "", *r.targets, ""]
        if [name] == last_of_18:
            ratios = {k: v for rep in reports.values() for k, v in rep.ratios.items()}
            lines += ["**Issue 18's targets** (pooling and layers together)", "",
                      *issue_18(ratios), ""]
    lines += ["## Reading", "", READING[0], *reading, READING[1], ""]
    for name, r in reports.items():
        lines += [f"## {_section(name).title}", "", *r.body, ""]
    return "\n".join(lines)


def _section(name: str) -> Section:
    return next(s for s in SECTIONS if s.name == name)


def run_sections(names: list[str], options: Options) -> dict[str, Report]:
    """Each named section's Report, in SECTIONS' order, timed; a section that cannot run
    reports why."""
    reports = {}
    for section in (s for s in SECTIONS if s.name in names):
        print(f"\n## {section.title}\n", flush=True)
        missing = section.missing()
        start = time.perf_counter()
        if missing:
            why = f"Not run: {', '.join(missing)} missing."
            print(why)
            reports[section.name] = Report([why], [f"- n/a ({why[:-1].lower()})"])
            continue
        reports[section.name] = section.run(options, section.rounds(options))
        reports[section.name].seconds = time.perf_counter() - start
    return reports


def parse(argv: list[str] | None):
    names = [s.name for s in SECTIONS]
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(names),
                        help=f"comma-separated, from {', '.join(names)} (default: all)")
    parser.add_argument("--rounds", type=int, default=5,
                        help="timed rounds of the convolution section (5); the others scale "
                             "theirs from it: pooling and layers 3x, models and onnx 1x")
    parser.add_argument("--quick", action="store_true",
                        help="smoke run: tiny sizes, one round, float32 convolutions only, "
                             "writes only to --output")
    parser.add_argument("--pause", type=float, default=0.1, help="conv: least seconds after "
                        "a burst")
    parser.add_argument("--duty", type=float, default=2.0,
                        help="conv: pause after a burst, as a multiple of its duration")
    parser.add_argument("--dtypes", help="conv: float32,float64 (float32 with --quick)")
    parser.add_argument("--shapes", default="", help="conv: comma-separated name prefixes")
    parser.add_argument("--no-threads", action="store_true", help="conv: no threads table")
    parser.add_argument("--output", type=Path,
                        help=f"the file to write (default {DOC.relative_to(HERE.parent)}; "
                             "none with --quick)")
    parser.add_argument("--no-write", action="store_true", help="print only")
    args = parser.parse_args(argv)
    unknown = set(args.sections.split(",")) - set(names)
    if unknown:
        parser.error(f"--sections: unknown {', '.join(sorted(unknown))}; "
                     f"choose from {', '.join(names)}")
    return args


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    sys.path.insert(0, str(HERE))                            # the section scripts
    options = Options(rounds=args.rounds, quick=args.quick, pause=args.pause, duty=args.duty,
                      dtypes=tuple((args.dtypes or ("float32" if args.quick else
                                                    "float32,float64")).split(",")),
                      shapes=tuple(p for p in args.shapes.split(",") if p),
                      threads_table=not args.no_threads)
    output = None if args.no_write else args.output or (None if args.quick else DOC)
    n = 256 if args.quick else 2048
    start = time.perf_counter()
    machine = environment(options)
    print(*machine, sep="\n")
    before = yardstick(n)
    print(before, flush=True)
    reports = run_sections(args.sections.split(","), options)
    machine += [f"- At the start: {before}", f"- At the end: {yardstick(n)}"]
    text = markdown(reports, options, machine, command(argv),
                    kept_reading(output or DOC), time.perf_counter() - start)
    print(text[text.index("## Summary"):text.index("## Reading")])
    if output is not None:
        output.write_text(text)
        print(f"wrote {output}")


if __name__ == "__main__":
    main()
