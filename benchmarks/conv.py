"""The convolution section of docs/benchmarks.md: npconv, PyTorch CPU and the seed's method.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/run.py --sections conv

For every shape and dtype the three implementations run alternately, each in a worker process
of its own (so that no library's allocations change the page faults another pays), and a plain
NumPy GEMM runs in the same rounds, in the driver, as the yardstick for GFLOP/s. In each round
every implementation makes an untimed call and then a short burst of timed ones, back to back
(its best counts), followed by a pause (at least `pause` seconds, and `duty` times the time
just spent): idle worker threads of the previous library (OpenBLAS and OpenMP spin for a while
after a parallel call) must not steal cores from the next, and a virtual machine whose CPU time
is throttled after bursts stays out of the throttle. The table reports medians over rounds and
the algorithm of each row (and the form of its input gradient when that is not the same
algorithm on the transposed geometry). It times the forward pass alone and forward plus
backward (y, dx, dw, db), gives times, ratios, GFLOP/s (direct-method FLOPs, 2 per
multiply-add, three passes for forward plus backward) next to the GEMM's, and the peak memory
each NumPy implementation allocates (tracemalloc). PyTorch is optional; the seed's method
(benchmarks/seed_method.py) handles 2-D channels_last ungrouped shapes only.

`measure(shape, dtype, ...)` times one case, `threads_check` the threads table and `report`
gives the section's text; benchmarks/run.py calls them and checks the targets. Run as a
script, this file is one implementation's worker process (`conv.py IMPL`, started by
`Worker`).
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
import tracemalloc
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "src"))

from seed_method import seed_backward, seed_forward  # noqa: E402

import npconv  # noqa: E402
from npconv import _config, _kernels, _workspace  # noqa: E402
from npconv.spec import conv_spec  # noqa: E402


def _torch():
    """PyTorch, or None where it is not installed (the table says "n/a"). Imported on first
    use: npconv's and the seed's worker processes never load it."""
    try:
        import torch
    except ImportError:
        return None
    return torch


@dataclass(frozen=True)
class Shape:
    """One benchmark case: channels_last x shape, kernel size, F, stride, padding, groups."""

    name: str
    x: tuple
    k: tuple
    f: int
    stride: int = 1
    pad: int = 0
    groups: int = 1
    data_format: str = "channels_last"

    @property
    def kwargs(self) -> dict:
        return dict(stride=self.stride, padding=self.pad, groups=self.groups,
                    data_format=self.data_format)


SHAPES = (
    Shape("lenet 5x5", (64, 28, 28, 1), (5, 5), 6),
    Shape("lenet 3x3", (64, 14, 14, 16), (3, 3), 32, pad=1),
    Shape("resnet 3x3", (32, 56, 56, 64), (3, 3), 64, pad=1),
    Shape("resnet 3x3 s2", (32, 56, 56, 64), (3, 3), 128, stride=2, pad=1),
    Shape("1x1", (32, 28, 28, 128), (1, 1), 256),
    Shape("stem 7x7 s2", (16, 224, 224, 3), (7, 7), 64, stride=2, pad=3),
    Shape("depthwise 3x3", (32, 56, 56, 64), (3, 3), 64, pad=1, groups=64),
    Shape("1-D 9 s2", (16, 4000, 32), (9,), 64, stride=2, pad=4),
    Shape("3-D 3x3x3", (4, 8, 28, 28, 32), (3, 3, 3), 32, pad=1),
    Shape("resnet 3x3 NCHW", (32, 56, 56, 64), (3, 3), 64, pad=1,
          data_format="channels_first"),
    Shape("1x1 NCHW", (32, 28, 28, 128), (1, 1), 256, data_format="channels_first"),
)


# ---------------------------------------------------------------------------------------------
# The implementations: each case builds (forward, forward + backward) closures
# ---------------------------------------------------------------------------------------------


@dataclass
class Case:
    shape: Shape
    dtype: type
    x: np.ndarray = field(repr=False)
    w: np.ndarray = field(repr=False)
    b: np.ndarray = field(repr=False)
    dy: np.ndarray = field(repr=False)

    @property
    def macs(self) -> int:
        return self.spec().macs()

    def spec(self):
        return conv_spec(self.x.shape, self.w.shape, **self.shape.kwargs)


def make_case(shape: Shape, dtype) -> Case:
    """Random inputs in the shape's layout (channels_first transposes the channels_last ones)."""
    rng = np.random.default_rng(0)
    c, r = shape.x[-1], len(shape.k)
    x = rng.standard_normal(shape.x).astype(dtype)
    w = (rng.standard_normal((*shape.k, c // shape.groups, shape.f)) / 8).astype(dtype)
    if shape.data_format == "channels_first":
        x = np.ascontiguousarray(np.moveaxis(x, -1, 1))          # (N, C, *S)
        w = np.ascontiguousarray(w.transpose(r + 1, r, *range(r)))  # (F, C/G, *K)
    b = rng.standard_normal(shape.f).astype(dtype)
    y_shape = conv_spec(x.shape, w.shape, **shape.kwargs).y_shape()
    return Case(shape, dtype, x, w, b, rng.standard_normal(y_shape).astype(dtype))


def npconv_calls(case: Case):
    kw = case.shape.kwargs

    def forward():
        return npconv.conv(case.x, case.w, case.b, **kw)

    def both():
        return forward(), npconv.conv_backward(case.dy, case.x, case.w, **kw)

    return forward, both


def seed_calls(case: Case):
    """The seed's method, or None where it does not apply (1-D, 3-D, groups, NCHW)."""
    s = case.shape
    if len(s.k) != 2 or s.groups != 1 or s.data_format != "channels_last":
        return None

    def forward():
        return seed_forward(case.x, case.w, case.b, s.stride, s.pad)

    def both():
        return forward(), seed_backward(case.x, case.w, case.dy, s.stride, s.pad)

    return forward, both


def torch_calls(case: Case, contiguous: bool = False):
    """PyTorch's conv{1,2,3}d (tensors made once, outside the timing). Channels_last 2-D and
    3-D data comes as `torch.channels_last` (`channels_last_3d`) tensors, which is what
    permuting an NHWC array gives, or with `contiguous` as contiguous NC* copies (None for
    channels_first data and 1-D, which only have that layout). Neither is always PyTorch's
    faster path (float32 1x1 forward: 3.8 ms channels_last, 20 ms contiguous; float64 ResNet
    3x3 fwd+bwd: 781 ms channels_last, 477 ms contiguous), so the benchmark times both and
    keeps the faster."""
    torch = _torch()
    if torch is None:
        return None
    s, r = case.shape, len(case.shape.k)
    to_first = s.data_format == "channels_last"
    x = np.moveaxis(case.x, -1, 1) if to_first else case.x
    w = case.w.transpose(r + 1, r, *range(r)) if to_first else case.w
    dy = np.moveaxis(case.dy, -1, 1) if to_first else case.dy
    last = {2: torch.channels_last, 3: torch.channels_last_3d}.get(r) if to_first else None
    if contiguous and last is None:
        return None
    fmt = torch.contiguous_format if contiguous or last is None else last

    def tensor(a):
        return torch.from_numpy(np.ascontiguousarray(a)).to(memory_format=fmt)

    tx, tw = (tensor(a).requires_grad_() for a in (x, w))
    tb = torch.from_numpy(case.b.copy()).requires_grad_()
    tdy = tensor(dy)
    op = getattr(torch.nn.functional, f"conv{r}d")
    kw = dict(stride=s.stride, padding=s.pad, groups=s.groups)

    def forward():
        with torch.no_grad():
            return op(tx, tw, tb, **kw)

    def both():
        return torch.autograd.grad(op(tx, tw, tb, **kw), (tx, tw, tb), tdy)

    return forward, both


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def time_alternating(bursts: dict, rounds: dict, pause: float, duty: float) -> dict:
    """Median over rounds of each name's best of a burst. Round i runs every name still due:
    `bursts[name](long)` makes one untimed call (threads, caches and clocks warm again after the
    pause) and `BURST` timed ones back to back, or a single timed call when `long` (the last
    took over `LONG` seconds), and returns the best; then a pause of max(pause, duty * the time
    spent), at most `MAX_PAUSE`. A name stops once its timings add up to `BUDGET` seconds (the
    seed's method takes seconds on the stem)."""
    times = {name: [] for name in bursts}
    for i in range(max(rounds.values())):
        for name, burst in bursts.items():
            if i >= rounds[name] or sum(times[name]) > BUDGET:
                continue
            start = time.perf_counter()
            times[name].append(burst(bool(times[name]) and times[name][-1] > LONG))
            spent = time.perf_counter() - start
            time.sleep(min(MAX_PAUSE, max(pause, duty * spent)))
    return {name: statistics.median(t) for name, t in times.items()}


BURST, LONG, BUDGET, MAX_PAUSE = 3, 0.5, 10.0, 10.0


def local_burst(fn):
    """The burst of `time_alternating` for a callable of this process."""
    def burst(long: bool) -> float:
        durations = []
        for _ in range(1 if long else BURST + 1):
            start = time.perf_counter()
            fn()
            durations.append(time.perf_counter() - start)
        return min(durations if long else durations[1:])

    return burst


def gemm_call(dtype, n: int = 1024):
    """A plain n x n x n NumPy GEMM (2 n^3 FLOPs): the yardstick timed alongside each case."""
    rng = np.random.default_rng(1)
    a, b = (rng.standard_normal((n, n)).astype(dtype) for _ in range(2))
    out = np.empty((n, n), dtype)
    return lambda: np.matmul(a, b, out=out)


def peak_bytes(fn) -> int:
    """Peak bytes NumPy allocated while fn ran (results included), by tracemalloc, with
    npconv's scratch pool emptied first so that its buffers count as a fresh process's would."""
    _workspace.release()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        fn()
        return tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


# ---------------------------------------------------------------------------------------------
# One process per implementation: alternating in time, isolated in memory
# ---------------------------------------------------------------------------------------------
#
# PyTorch's and the seed's allocations change the state of the C heap that NumPy allocates
# from (which blocks come back page-faulted afresh), and a page fault costs about half a
# millisecond per MiB on the benchmark VM: timed in one process, each library's times depended
# on what the other had just done (npconv's ResNet forward plus backward measured 83 ms alone
# and 142 ms between PyTorch calls). So each implementation runs in a worker process of its
# own, started afresh for every case (a process that has run other cases has another heap), and
# the driver asks them for their bursts in turn.

CALLS = {"npconv": npconv_calls, "torch": torch_calls,
         "torch-nchw": lambda case: torch_calls(case, contiguous=True), "seed": seed_calls}


def worker_main(impl: str) -> None:
    """Serve JSON requests on stdin: setup a case, time a burst, measure a peak."""
    if impl.startswith("torch") and _torch() is not None:
        _torch().set_num_threads(npconv._config.cpu_count())
    calls = {}
    for line in sys.stdin:
        req = json.loads(line)
        if req["cmd"] == "setup":
            shape = Shape(**{**req["shape"], "x": tuple(req["shape"]["x"]),
                             "k": tuple(req["shape"]["k"])})
            made = CALLS[impl](make_case(shape, np.dtype(req["dtype"]).type))
            calls = _named_calls(made, impl)
            reply = {"ok": made is not None}
        elif req["cmd"] == "burst":
            reply = {"best": local_burst(calls[req["name"]])(req["long"])}
        else:                                                    # "peak"
            reply = {"bytes": peak_bytes(calls[req["name"]])}
        print(json.dumps(reply), flush=True)


def _named_calls(made, impl: str) -> dict:
    if made is None:
        return {}
    calls = {"fwd": made[0], "both": made[1]}
    if impl == "npconv":
        calls.update({"both@1": _with_threads(made[1], 1), "both@blas": _blas_threaded(made[1])})
    return calls


class Worker:
    """The driver's handle on one implementation's process."""

    def __init__(self, impl: str):
        self.impl = impl
        self.proc = subprocess.Popen([sys.executable, __file__, impl],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def ask(self, **req) -> dict:
        self.proc.stdin.write(json.dumps(req) + "\n")
        self.proc.stdin.flush()
        return json.loads(self.proc.stdout.readline())

    def setup(self, shape: Shape, dtype: str) -> bool:
        return self.ask(cmd="setup", shape=asdict(shape), dtype=dtype)["ok"]

    def burst(self, name: str):
        return lambda long: self.ask(cmd="burst", name=name, long=long)["best"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


@dataclass
class Result:
    shape: Shape
    dtype: str
    macs: int
    algorithms: str
    fwd: dict
    both: dict
    memory: dict
    gemm: float                                                  # GFLOP/s, same rounds
    torch_layout: str = ""                                       # PyTorch's faster fwd+bwd


def chosen_algorithms(case: Case) -> str:
    """The algorithm of the forward pass and the weight gradient, and the input gradient's form
    when it is not the same algorithm on the transposed geometry: "winograd", "im2col, dx
    scatter", "depthwise, dx phases"."""
    names = _kernels.choices(case.spec(), case.x.itemsize, _config.resolve())
    if names["grad_input"] == f"{names['forward']} (transposed)":
        return names["forward"]
    return f"{names['forward']}, dx {names['grad_input']}"


def measure(shape: Shape, dtype, rounds: int, pause: float, duty: float) -> Result:
    """Time one case with fresh worker processes for the three implementations."""
    workers = {k: Worker(k) for k in CALLS}
    try:
        return _measure(workers, shape, dtype, rounds, pause, duty)
    finally:
        for w in workers.values():
            w.close()


def _measure(workers: dict, shape: Shape, dtype, rounds: int, pause: float,
             duty: float) -> Result:
    case = make_case(shape, dtype)
    name = np.dtype(dtype).name
    live = {k: w for k, w in workers.items() if w.setup(shape, name)}
    due = {k: max(3, rounds // 2) if k == "seed" else rounds for k in live}
    fwd = time_alternating({k: w.burst("fwd") for k, w in live.items()}, due, pause, duty)
    bursts = {**{k: w.burst("both") for k, w in live.items()},
              "gemm": local_burst(gemm_call(dtype))}
    both = time_alternating(bursts, {**due, "gemm": rounds}, pause, duty)
    memory = {k: w.ask(cmd="peak", name="both")["bytes"] for k, w in live.items()
              if not k.startswith("torch")}
    gemm_rate = 2 * 1024**3 / both.pop("gemm") / 1e9
    layout = "NC*" if "torch" in both else ""
    if "torch-nchw" in both:                                     # keep PyTorch's faster layout
        layout = "NC*" if both["torch-nchw"] < both["torch"] else "channels_last"
        for times in (fwd, both):
            times["torch"] = min(times["torch"], times.pop("torch-nchw"))
    return Result(shape, name, case.macs, chosen_algorithms(case), fwd, both, memory,
                  gemm_rate, layout)


def threads_check(shapes, rounds: int, pause: float, duty: float) -> list[str]:
    """Markdown rows: npconv's float32 fwd+bwd on one core (`threads=1`), with the default and
    with every computation serial and BLAS-threaded, alternating."""
    rows = []
    for shape in shapes:
        worker = Worker("npconv")
        worker.setup(shape, "float32")
        bursts = {k: worker.burst(k) for k in ("both@1", "both", "both@blas")}
        try:
            t = time_alternating(bursts, dict.fromkeys(bursts, rounds), pause, duty)
        finally:
            worker.close()
        one, default, blas = t["both@1"], t["both"], t["both@blas"]
        rows.append(f"| {shape.name} | {_ms(one)} | {_ms(default)} | {_ms(blas)} | "
                    f"{default / one:.2f} | {default / blas:.2f} |")
        print(rows[-1], flush=True)
    return rows


def _with_threads(fn, threads: int):
    def call():
        with npconv.config(threads=threads):
            return fn()

    return call


def _blas_threaded(fn):
    """fn with every computation run as the small ones are: chunks one after another, BLAS
    threading each GEMM (the earlier design's way for GEMM-bound algorithms)."""
    def call():
        with _config.tuned(min_parallel_bytes=sys.maxsize):
            return fn()

    return call


THREADS_HEADER = ("| shape | threads=1 (ms) | default (ms) | BLAS-threaded (ms) | "
                  "default / threads=1 | default / BLAS-threaded |", "|---|---|---|---|---|---|")


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _ms(t) -> str:
    return "n/a" if t is None else f"{t * 1e3:.1f}"


def _ratio(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.2f}"


HEADER = ("| shape | dtype | algorithm | fwd npconv / torch / seed (ms) | fwd npconv/torch | "
          "fwd+bwd npconv / torch / seed (ms) | fwd+bwd npconv/torch | seed/npconv | "
          "npconv GFLOP/s fwd, fwd+bwd (% of GEMM) | torch GFLOP/s fwd+bwd | torch layout | "
          "GEMM GFLOP/s | peak MiB npconv / seed |")


def row(r: Result) -> str:
    f, b, m = r.fwd, r.both, r.memory
    gf_f = 2 * r.macs / f["npconv"] / 1e9
    gf_b = 6 * r.macs / b["npconv"] / 1e9
    torch_gf = f"{6 * r.macs / b['torch'] / 1e9:.0f}" if "torch" in b else "n/a"
    mem = " / ".join(f"{m[k] / 2**20:.0f}" if k in m else "n/a" for k in ("npconv", "seed"))
    return (f"| {r.shape.name} | {r.dtype} | {r.algorithms} | "
            f"{_ms(f['npconv'])} / {_ms(f.get('torch'))} / {_ms(f.get('seed'))} | "
            f"{_ratio(f['npconv'], f.get('torch'))} | "
            f"{_ms(b['npconv'])} / {_ms(b.get('torch'))} / {_ms(b.get('seed'))} | "
            f"**{_ratio(b['npconv'], b.get('torch'))}** | {_ratio(b.get('seed'), b['npconv'])} | "
            f"{gf_f:.0f}, {gf_b:.0f} ({100 * gf_b / r.gemm:.0f}%) | {torch_gf} | "
            f"{r.torch_layout or 'n/a'} | {r.gemm:.0f} | "
            f"{mem} |")


def report(results, threads: list[str]) -> list[str]:
    """The section's body in docs/benchmarks.md: how it was measured, the results, the threads
    table (`threads_check`'s rows; none when it did not run)."""
    lines = ["Medians of alternating rounds; ratios below 1 mean npconv is faster. GFLOP/s "
             "count the direct method's multiply-adds (x2), three passes for fwd+bwd, whatever "
             "the algorithm; '% of GEMM' compares npconv's fwd+bwd rate with a 1024^3 NumPy "
             "GEMM timed in the same rounds ('GEMM GFLOP/s'). Peak MiB: tracemalloc's peak "
             "during one fwd+bwd (outputs included; PyTorch's allocator is not visible to it). "
             "PyTorch runs channels_last data both as channels_last tensors and as contiguous "
             "NC* copies, and the faster counts ('torch layout'; fwd and fwd+bwd each keep "
             "their faster). Both allocate through glibc's malloc with its default settings, "
             "which maps large blocks afresh (page faults on every call) or reuses them "
             "depending on what was freed before; PyTorch's times move most with that "
             "(depthwise float32 fwd+bwd: 6 to 24 ms between runs). With MALLOC_MMAP_THRESHOLD_ "
             "and MALLOC_TRIM_THRESHOLD_ set to 4 GiB in the environment, so that freed memory "
             "is always reused, PyTorch is faster and more stable and npconv changes little "
             "(docs/algorithms.md, \"Measuring\").", "",
             HEADER, "|" + "---|" * (HEADER.count("|") - 1), *(row(r) for r in results)]
    if threads:
        lines += ["", "npconv float32 forward plus backward on one core (`threads=1`), with the "
                  "default (a worker per core with BLAS on one thread, or serial with BLAS "
                  "threads for layers whose forward window matrix is under 16 MiB: "
                  "docs/algorithms.md, \"Threads\") and with every layer serial and "
                  "BLAS-threaded, as the earlier design ran the GEMM-bound algorithms. Same "
                  "alternating protocol, fewer rounds.", "", *THREADS_HEADER, *threads]
    return lines


if __name__ == "__main__":
    worker_main(sys.argv[1])
