"""Model-level benchmark: whole networks, npconv against PyTorch CPU, same weights, one run.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/models.py [--rounds 5]
        [--threads 2] [--clock wall|cpu] [--only NAME] [--profile]

ResNet-18 and MobileNetV2 (npconv.models, torchvision's structure) at 224x224, inference at
batch 1 and 16, and one training step at batch 16 and 112x112 (forward in training mode,
cross-entropy, backward, SGD with momentum), float32. npconv runs channels_last, with its
batch norms folded into the convolutions for inference (`model.eval()`); PyTorch runs the
same networks (tests/torch_reference.py) in its channels_last memory format, inference under
`torch.no_grad()`, on `threads` threads. The two alternate round by round: a pause of `PAUSE`
seconds, then two timed calls of one library, the first after the pause and the second right
after it, as a loop of training steps or requests runs them; the table gives the medians over
rounds of the second (the ratio the targets are checked on) and of the first. The pause
matters: after a call, the library's idle threads keep spinning on the cores (OpenBLAS's about
0.1 s after each threaded GEMM, OpenMP's up to 0.2 s), and without it each library's call ran
into the other's spinning threads (PyTorch's MobileNetV2 batch-1 inference took 24-91 ms after
npconv's calls, 11-13 ms once npconv's OpenBLAS threads slept at once). The call right after
the pause is slower, npconv's more than PyTorch's (whose OpenMP threads spin between their
parallel regions where npconv's workers sleep): MobileNetV2's training step took 250-271 ms
after a 0.3 s sleep, 229-246 without one, and 241 after 0.3 s of the calling thread spinning
instead of sleeping, with the same page faults and the same worker wake-up latencies (12 ms a
step) either way, the extra time in the first forward layers; PyTorch's 142-145 and 137-142.
The second call is the steady state of a loop (the convolution and layer sections likewise
time only after an untimed call); the first, what one call after an idle spell costs.
Inference peak memory is tracemalloc's count for npconv (every NumPy allocation, the op
workspaces included), next to the weights' size and the largest activation's.

`run()` returns the rows (dicts) for benchmarks/run.py or any other caller; `main()` prints
them as a markdown table. `--profile` prints instead where npconv's time goes in each case,
per layer type, forward and backward apart, and what the composition itself costs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import tracemalloc
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE.parent / "tests"))              # torch_reference: the torch twins

import npconv  # noqa: E402
from npconv import models, nn  # noqa: E402

try:
    import torch
    from torch_reference import reference
except ImportError:                                          # the table says "n/a"
    torch = None


@dataclass(frozen=True)
class Case:
    """One row: a builder, "inference" or "train step", batch size, image side."""

    model: str
    task: str
    batch: int
    size: int

    @property
    def name(self) -> str:
        return f"{self.model} {self.task} {self.batch}x{self.size}x{self.size}"


CASES = tuple(Case(m, task, n, s) for m in ("resnet18", "mobilenet_v2")
              for task, n, s in (("inference", 1, 224), ("inference", 16, 224),
                                 ("train step", 16, 112)))


def build(name: str, rng: np.random.Generator):
    """(npconv model, torch twin with the same weights, or None), float32, 1000 classes."""
    model = getattr(models, name)(rng=rng)
    if torch is None:
        return model, None
    net = getattr(reference(torch), name)(1000).float()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         model.state_dict().items()})
    return model, net.to(memory_format=torch.channels_last)


def calls(case: Case, model, net, rng: np.random.Generator) -> dict:
    """{"npconv": fn, "torch": fn} running the case once each."""
    x = rng.standard_normal((case.batch, case.size, case.size, 3)).astype(np.float32)
    labels = rng.integers(0, 1000, case.batch)
    out = {}
    if case.task == "inference":
        model.eval()
        out["npconv"] = lambda: model.forward(x)
    else:
        model.train()
        opt = nn.SGD(lr=1e-3, momentum=0.9)

        def step():
            logits = model.forward(x, training=True)
            _, dlogits = nn.softmax_cross_entropy(logits, labels)
            model.backward(dlogits, input_grad=False)    # as PyTorch: x needs no gradient
            opt.step(model.params, model.grads)

        out["npconv"] = step
    if net is not None:
        out["torch"] = _torch_call(case, net, x, labels)
    return out


def _torch_call(case: Case, net, x, labels):
    xt = torch.from_numpy(np.moveaxis(x, -1, 1).copy()).to(memory_format=torch.channels_last)
    if case.task == "inference":
        net.eval()

        def infer():
            with torch.no_grad():
                net(xt)

        return infer
    net.train()
    opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
    yt = torch.from_numpy(labels)

    def step():
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(net(xt), yt).backward()
        opt.step()

    return step


def largest_activation(model, x) -> int:
    """Bytes of the largest array a layer of `model` returns for x (evaluation mode)."""
    from npconv.nn import module

    call, sizes = module.Layer.__call__, [x.nbytes]

    def traced(self, *args, **kwargs):
        y = call(self, *args, **kwargs)
        sizes.append(y.nbytes)
        return y

    module.Layer.__call__ = traced
    try:
        model.forward(x)
    finally:
        module.Layer.__call__ = call
    return max(sizes)


def peak_bytes(fn) -> int:
    """tracemalloc's peak during one call (NumPy's allocations; torch's are not traced)."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
"""`--clock cpu`: the process's CPU time, with --threads 1 a proxy for the work done that other
processes on a busy machine disturb far less than the wall clock."""


PAUSE = 0.3             # seconds before each timed call: the other library's threads go idle


def measure(case: Case, rounds: int, threads: int, seed: int = 0, clock: str = "wall") -> dict:
    """The row of one case: median seconds per implementation, their ratio, npconv's peak."""
    rng = np.random.default_rng(seed)
    model, net = build(case.model, rng)
    fns = calls(case, model, net, rng)
    times: dict = {k: ([], []) for k in fns}                 # (after the pause, right after)
    now = CLOCKS[clock]
    with npconv.config(threads=threads):
        for fn in fns.values():
            fn()                                             # untimed: plans, pools, caches
        for _ in range(rounds):
            for key, fn in fns.items():
                time.sleep(PAUSE)
                for kept in times[key]:
                    start = now()
                    fn()
                    kept.append(now() - start)
        peak = peak_bytes(fns["npconv"]) if case.task == "inference" else None
    first = {k: statistics.median(v[0]) for k, v in times.items()}
    med = {k: statistics.median(v[1]) for k, v in times.items()}
    weights = sum(v.nbytes for v in model.params.values())
    x = np.zeros((case.batch, case.size, case.size, 3), np.float32)
    return {"case": case.name, "npconv_s": med["npconv"], "torch_s": med.get("torch"),
            "ratio": med["npconv"] / med["torch"] if "torch" in med else None,
            "npconv_first_s": first["npconv"], "torch_first_s": first.get("torch"),
            "first_ratio": first["npconv"] / first["torch"] if "torch" in first else None,
            "peak_mb": None if peak is None else peak / 2**20, "weights_mb": weights / 2**20,
            "activation_mb": largest_activation(model.eval(), x) / 2**20}


def profile(case: Case, threads: int = 2, seed: int = 0, clock: str = "wall") -> dict:
    """Seconds per layer type (forward and backward apart) in one npconv call of the case,
    after an untimed one, and "composition": the rest of the call (the tape, the Python
    between layers). Every leaf layer's call and backward is timed."""
    from npconv.nn import module

    rng = np.random.default_rng(seed)
    model, _ = build(case.model, rng)
    fn = calls(case, model, None, rng)["npconv"]
    spent: dict = {}
    call, back = module.Layer.__call__, module._layer_backward

    now = CLOCKS[clock]

    def timed(kind, f, layer, *args, **kwargs):
        start = now()
        out = f(layer, *args, **kwargs)
        if not isinstance(layer, module.Module):
            key = f"{type(layer).__name__} {kind}"
            spent[key] = spent.get(key, 0.0) + now() - start
        return out

    with npconv.config(threads=threads):
        fn()
        module.Layer.__call__ = lambda self, *a, **k: timed("fwd", call, self, *a, **k)
        module._layer_backward = lambda layer, *a: timed("bwd", back, layer, *a)
        try:
            start = now()
            fn()
            total = now() - start
        finally:
            module.Layer.__call__, module._layer_backward = call, back
    spent["composition and the rest"] = total - sum(spent.values())
    return dict(sorted(spent.items(), key=lambda kv: -kv[1]))


def run(cases=CASES, rounds: int = 5, threads: int = 2, clock: str = "wall") -> list[dict]:
    """Every case's row; torch (when installed) on `threads` threads, npconv too."""
    if torch is not None:
        torch.set_num_threads(threads)
    return [measure(case, rounds, threads, clock=clock) for case in cases]


def table(rows: list[dict]) -> str:
    """The rows as a markdown table."""
    def f(v, fmt, unit=""):
        return "n/a" if v is None else format(v, fmt) + unit

    lines = ["| case | npconv | PyTorch | ratio | first call after the pause: npconv / PyTorch "
             "(ratio) | npconv peak (inference) |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        peak = "" if r["peak_mb"] is None else (
            f"{r['peak_mb']:.0f} MB (weights {r['weights_mb']:.0f} MB, largest activation "
            f"{r['activation_mb']:.1f} MB)")
        torch_ms, torch_first = (None if r[k] is None else r[k] * 1e3
                                 for k in ("torch_s", "torch_first_s"))
        lines.append(f"| {r['case']} | {f(r['npconv_s'] * 1e3, '.0f', ' ms')} | "
                     f"{f(torch_ms, '.0f', ' ms')} | {f(r['ratio'], '.2f', 'x')} | "
                     f"{f(r['npconv_first_s'] * 1e3, '.0f')} / {f(torch_first, '.0f')} ms "
                     f"({f(r['first_ratio'], '.2f', 'x')}) | {peak} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds per case (5)")
    parser.add_argument("--threads", type=int, default=2, help="threads for both (2)")
    parser.add_argument("--only", default=None, help="run the cases whose name contains this")
    parser.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                        help="cpu: process CPU time, steadier on a busy machine (--threads 1)")
    parser.add_argument("--profile", action="store_true",
                        help="instead: npconv's time per layer type in each case")
    args = parser.parse_args(argv)
    cases = [c for c in CASES if args.only is None or args.only in c.name]
    if not args.profile:
        print(table(run(cases, args.rounds, args.threads, args.clock)))
        return
    for case in cases:
        spent = profile(case, args.threads, clock=args.clock)
        total = sum(spent.values())
        print(f"{case.name}: {total * 1e3:.0f} ms")
        for key, t in spent.items():
            print(f"  {key:32s} {t * 1e3:8.1f} ms  {100 * t / total:5.1f}%")


if __name__ == "__main__":
    main()
