"""What the convolutions' arithmetic alone costs in a network's inference or training step, next
to what npconv's layers take for it in place, per kind of layer.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/model_floor.py
        [--model mobilenet_v2] [--batch 1] [--size 224] [--rounds 25]
    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/model_floor.py --train
        [--model resnet18] [--batch 16] [--size 112] [--rounds 7]

Each convolution of `npconv.models.<model>` in evaluation mode (batch norms folded, so every
layer has a bias and most a fused ReLU or ReLU6) is timed two ways:

- *primitive*: only the NumPy call that does its multiply-adds, on arrays prepared beforehand,
  with nothing else of the layer: a depthwise layer's einsum (the expression and window view of
  `npconv.algorithms.depthwise`, on an input padded beforehand, into a preallocated output); a
  1x1 stride-1 ungrouped layer's GEMM x (N*P, C) @ w (C, F) into a preallocated output; any
  other layer's GEMM of its whole window matrix, built beforehand, by w (prod(K)*C/G, F), as
  many multiply-adds as the layer's. BLAS on all threads, the einsum on one, as npconv runs a
  batch-1 layer; caches warm, each the median of `rounds`;
- *in place*: the layer's own call inside whole forwards (`Conv.forward` timed), the median
  over `rounds` forwards, each after a short pause: bias, clip, padding, chunking, checks and
  a colder cache included.

The sum of the primitives is the least any implementation pays that computes these products
with these NumPy calls; the whole forward's time is printed beside it.

`--train` does the same for `benchmarks/models.py`'s training step (forward, backward without
the input's gradient, SGD; batch norms in training mode, nothing folded). Each convolution then
has up to three products, timed apart on the x and dy it met in a step:

- forward, as above;
- input gradient (not for the first layer, whose input needs none): a GEMM layer's
  dy (N*P, F) @ w^T (F, prod(K)*C/G), the window matrix's gradient before its scatter; a
  depthwise layer's forward einsum again (the stride-1 input gradient is that correlation on
  dy, and a strided one has as many multiply-adds);
- weight gradient: a GEMM layer's window matrix^T @ dy; a depthwise layer's einsum of the
  window view with dy, summed over the images and positions.

As npconv runs a batch of 16, with two workers: BLAS on all threads, and the einsums split into
two halves of the batch on two threads. *In place* is then the layer's forward and backward
inside whole steps. With PyTorch installed, its step (the models benchmark's twin) is timed in
the same run, alternating, and the products' sum is given as a ratio to it. Prints a markdown
table; writes nothing.
"""

from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))                                    # benchmarks/run.py
from run import script  # noqa: E402

# Nothing of this folder stays on the path (as a script's, Python put it first): `import onnx`
# would find its onnx.py.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]

import npconv  # noqa: E402
from npconv import models  # noqa: E402
from npconv.algorithms import depthwise  # noqa: E402
from npconv.nn import layers, module  # noqa: E402


def kind(layer) -> str:
    """"depthwise", "1x1" or "other" (full kernels: stems, 3x3 layers)."""
    if layer.kw.get("groups", 1) > 1 and layer.params["weight"].shape[-2] == 1:
        return "depthwise"
    return "1x1" if all(k == 1 for k in layer.params["weight"].shape[:-2]) else "other"


def capture(call) -> list[list]:
    """[layer, its input, the dy its backward got (None in a forward alone), whether it
    computed dx] for every Conv of one `call()` (a forward, or a training step), in call
    order."""
    seen: dict = {}
    layer_call, backward = module.Layer.__call__, layers.Conv.backward

    def grab(self, *args, **kwargs):
        if isinstance(self, layers.Conv):
            seen[id(self)] = [self, np.array(args[0]), None, True]
        return layer_call(self, *args, **kwargs)

    def grab_dy(self, dy, input_grad=True):
        seen[id(self)][2:] = [np.array(dy), input_grad]
        return backward(self, dy, input_grad=input_grad)

    module.Layer.__call__, layers.Conv.backward = grab, grab_dy
    try:
        call()
    finally:
        module.Layer.__call__, layers.Conv.backward = layer_call, backward
    return list(seen.values())


def median_call(fn, rounds: int) -> float:
    """Seconds: the median of `rounds` calls after three untimed ones."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(rounds):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def _geometry(layer, x) -> tuple:
    """(w, spec, output positions N*P, forward multiply-adds) of one layer on input x."""
    w = layer.params["weight"]                                   # (*K, C/G, F)
    if layer.kw["data_format"] != "channels_last" or layer.kw["padding_mode"] != "zeros":
        raise ValueError(f"{layer!r}: the primitives are timed for channels_last layers with "
                         f"zero padding")
    spec = npconv.conv_spec(x.shape, w.shape, **layer.kw)       # the layer's own geometry
    outputs = spec.batch * math.prod(spec.out_size)
    macs = outputs * spec.out_channels * math.prod(spec.kernel_size) * spec.group_in
    return w, spec, outputs, macs


def _einsum_operands(w, spec, x) -> tuple:
    """(rule, window view, weights, output) of a depthwise layer's forward einsum on x
    (N, *S, C), padded here, as `npconv.algorithms.depthwise` multiplies them."""
    xp = np.pad(x, ((0, 0), *spec.pads, (0, 0)))
    win = depthwise._windows_view(xp, spec)
    rule, wk = depthwise.einsum_weights(w, spec)
    if depthwise.merged(spec):
        out = np.empty((spec.batch, *spec.out_size[:-1],
                        spec.out_size[-1] * spec.out_channels), x.dtype)
    else:
        out = np.empty((spec.batch, *spec.out_size, spec.groups, spec.group_out), x.dtype)
    return rule, win, wk.copy(), out                             # tiles live in scratch


def _gemm_operands(layer, w, spec, x, outputs) -> tuple:
    """(window matrix (N*P, prod(K)*C/G), weights (prod(K)*C/G, F)): x itself for a 1x1
    stride-1 ungrouped layer, else an array of the window matrix's shape."""
    depth = math.prod(spec.kernel_size) * spec.group_in
    plain = kind(layer) == "1x1" and spec.groups == 1 and all(s == 1 for s in spec.stride)
    a = (x.reshape(-1, x.shape[-1]) if plain                     # x is the window matrix
         else np.ones((outputs, depth), x.dtype))               # the window matrix's shape
    return a, w.reshape(depth, spec.out_channels)


def primitive(layer, x) -> tuple:
    """(the bare call, its multiply-adds) of one layer's forward on input x (N, *S, C)."""
    w, spec, outputs, macs = _geometry(layer, x)
    if kind(layer) == "depthwise":
        rule, win, wk, out = _einsum_operands(w, spec, x)
        return (lambda: np.einsum(rule, win, wk, out=out)), macs
    a, b = _gemm_operands(layer, w, spec, x, outputs)
    out = np.empty((outputs, spec.out_channels), x.dtype)
    return (lambda: np.matmul(a, b, out=out)), macs


def _on_two_threads(pool: ThreadPoolExecutor, calls: list) -> None:
    """Every call, the first on a pool thread while this one runs the rest."""
    if len(calls) == 1:
        calls[0]()
        return
    other = pool.submit(calls[0])
    for call in calls[1:]:
        call()
    other.result()


def train_primitives(layer, x, dy, input_grad: bool, pool: ThreadPoolExecutor) -> tuple:
    """({"forward", "input grad" (with input_grad), "weight grad": the bare call}, forward
    multiply-adds) of one layer on the x (N, *S, C) and dy (N, *P, F) of a training step."""
    w, spec, outputs, macs = _geometry(layer, x)
    if kind(layer) == "depthwise":
        rule, win, wk, out = _einsum_operands(w, spec, x)
        x_sub, w_sub, y_sub = depthwise._subscripts(spec)
        grad_rule = f"{x_sub},{y_sub}->{w_sub}"                  # summed over (n, *P)
        dy_k = dy.reshape(out.shape)
        half = spec.batch // 2
        halves = [slice(0, half), slice(half, spec.batch)] if half else [slice(None)]
        sums = [np.empty(wk.shape, x.dtype) for _ in halves]    # one per thread

        def forward():
            _on_two_threads(pool, [lambda s=s: np.einsum(rule, win[s], wk, out=out[s])
                                   for s in halves])

        def weight_grad():
            _on_two_threads(pool, [lambda s=s, acc=acc: np.einsum(grad_rule, win[s], dy_k[s],
                                                                  out=acc)
                                   for s, acc in zip(halves, sums)])

        calls = {"forward": forward, "weight grad": weight_grad}
        if input_grad:
            calls["input grad"] = forward                        # as many multiply-adds
        return calls, macs
    a, b = _gemm_operands(layer, w, spec, x, outputs)
    dy2 = dy.reshape(outputs, spec.out_channels)                 # (N*P, F)
    y, dw = np.empty((outputs, b.shape[1]), x.dtype), np.empty(b.shape, x.dtype)
    calls = {"forward": lambda: np.matmul(a, b, out=y),
             "weight grad": lambda: np.matmul(a.T, dy2, out=dw)}
    if input_grad:
        da = np.empty(a.shape, x.dtype)
        calls["input grad"] = lambda: np.matmul(dy2, b.T, out=da)
    return calls, macs


def in_place(model, x, rounds: int, pause: float = 0.05) -> tuple[dict, float]:
    """({id(layer): median seconds of its forward}, median seconds of the whole forward)."""
    spent: dict = {}
    forward = layers.Conv.forward

    def timed(self, *args, **kwargs):
        start = time.perf_counter()
        out = forward(self, *args, **kwargs)
        spent.setdefault(id(self), []).append(time.perf_counter() - start)
        return out

    model.forward(x)
    layers.Conv.forward = timed
    try:
        for _ in range(rounds):
            time.sleep(pause)
            model.forward(x)
    finally:
        layers.Conv.forward = forward
    whole = []
    for _ in range(rounds):
        time.sleep(pause)
        start = time.perf_counter()
        model.forward(x)
        whole.append(time.perf_counter() - start)
    return {k: statistics.median(v) for k, v in spent.items()}, statistics.median(whole)


def run(model_name: str = "mobilenet_v2", batch: int = 1, size: int = 224,
        rounds: int = 25) -> list[dict]:
    """One row per kind of layer, then a "sum" row with the whole forward's time."""
    rng = np.random.default_rng(0)
    model = getattr(models, model_name)(rng=rng).eval()
    x = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    seen = capture(lambda: model.forward(x))
    placed, whole = in_place(model, x, rounds)
    rows: dict = {}
    for layer, xin, _, _ in seen:
        fn, macs = primitive(layer, xin)
        row = rows.setdefault(kind(layer), dict(kind=kind(layer), layers=0, macs=0,
                                                primitive=0.0, in_place=0.0))
        row["layers"] += 1
        row["macs"] += macs
        row["primitive"] += median_call(fn, rounds)
        row["in_place"] += placed[id(layer)]
    out = sorted(rows.values(), key=lambda r: -r["in_place"])
    out.append(dict(kind="sum", layers=sum(r["layers"] for r in out),
                    macs=sum(r["macs"] for r in out),
                    primitive=sum(r["primitive"] for r in out),
                    in_place=sum(r["in_place"] for r in out), whole=whole))
    return out


def in_place_step(steps: dict, rounds: int, pause: float) -> tuple[dict, dict]:
    """({id(layer): median seconds of its forward plus backward in npconv's steps},
    {"npconv": median seconds of a step, "torch": PyTorch's, when given}). Rounds alternate
    the implementations, each call after a pause."""
    spent: dict = {}
    forward, backward = layers.Conv.forward, layers.Conv.backward

    def timed(f):
        def wrapper(self, *args, **kwargs):
            start = time.perf_counter()
            out = f(self, *args, **kwargs)
            spent.setdefault(id(self), {}).setdefault(f, []).append(time.perf_counter() - start)
            return out
        return wrapper

    layers.Conv.forward, layers.Conv.backward = timed(forward), timed(backward)
    try:
        for _ in range(rounds):
            time.sleep(pause)
            steps["npconv"]()
    finally:
        layers.Conv.forward, layers.Conv.backward = forward, backward
    whole: dict = {name: [] for name in steps}
    for _ in range(rounds):
        for name, step in steps.items():
            time.sleep(pause)
            start = time.perf_counter()
            step()
            whole[name].append(time.perf_counter() - start)
    per_layer = {k: sum(statistics.median(v) for v in parts.values())
                 for k, parts in spent.items()}
    return per_layer, {name: statistics.median(v) for name, v in whole.items()}


PRODUCTS = ("forward", "input grad", "weight grad")


def run_train(model_name: str = "resnet18", batch: int = 16, size: int = 112,
              rounds: int = 7, threads: int = 2, pause: float = 0.3) -> list[dict]:
    """`run` for `benchmarks/models.py`'s training step: per kind of layer the three products'
    primitives and the layers' forward plus backward in place (steps `pause` seconds apart);
    the "sum" row adds the whole step's median time and PyTorch's (None without torch)."""
    bench = script("models", "bench_models")                   # apart from npconv.models
    rng = np.random.default_rng(0)
    case = bench.Case(model_name, "train step", batch, size)
    model, net = bench.build(model_name, rng)
    if bench.torch is not None:
        bench.torch.set_num_threads(threads)
    with npconv.config(threads=threads), ThreadPoolExecutor(1) as pool:
        steps = bench.calls(case, model, net, rng)
        for step in steps.values():
            step()                                               # untimed: plans, pools
        seen = capture(steps["npconv"])
        placed, whole = in_place_step(steps, rounds, pause)
        rows: dict = {}
        for layer, x, dy, input_grad in seen:
            calls, macs = train_primitives(layer, x, dy, input_grad, pool)
            row = rows.setdefault(kind(layer), dict(kind=kind(layer), layers=0, macs=0,
                                                    in_place=0.0, **dict.fromkeys(PRODUCTS, 0.0)))
            row["layers"] += 1
            row["macs"] += macs
            for name, call in calls.items():
                row[name] += median_call(call, rounds)
            row["in_place"] += placed[id(layer)]
    out = sorted(rows.values(), key=lambda r: -r["in_place"])
    total = {key: sum(r[key] for r in out) for key in ("layers", "macs", "in_place", *PRODUCTS)}
    out.append(dict(kind="sum", **total, whole=whole["npconv"], torch=whole.get("torch")))
    return out


def table(rows: list[dict], title: str) -> str:
    lines = [f"{title}", "",
             "| layers | count | M multiply-adds | primitive ms | GMAC/s | in place ms | "
             "in place / primitive |", "|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['kind']} | {r['layers']} | {r['macs'] / 1e6:.1f} | "
                     f"{r['primitive'] * 1e3:.2f} | {r['macs'] / r['primitive'] / 1e9:.1f} | "
                     f"{r['in_place'] * 1e3:.2f} | {r['in_place'] / r['primitive']:.2f}x |")
    lines.append("")
    lines.append(f"Whole forward: {rows[-1]['whole'] * 1e3:.2f} ms.")
    return "\n".join(lines)


def table_train(rows: list[dict], title: str) -> str:
    lines = [f"{title}", "",
             "| layers | count | M multiply-adds a product | forward ms | input grad ms | "
             "weight grad ms | products ms | in place ms | in place / products |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        products = sum(r[k] for k in PRODUCTS)
        lines.append(f"| {r['kind']} | {r['layers']} | {r['macs'] / 1e6:.0f} | "
                     + " | ".join(f"{r[k] * 1e3:.1f}" for k in PRODUCTS)
                     + f" | {products * 1e3:.1f} | {r['in_place'] * 1e3:.1f} | "
                     f"{r['in_place'] / products:.2f}x |")
    total, products = rows[-1], sum(rows[-1][k] for k in PRODUCTS)
    lines += ["", f"Whole step: npconv {total['whole'] * 1e3:.0f} ms"]
    if total["torch"] is not None:
        torch_s = total["torch"]
        lines[-1] += (f", PyTorch {torch_s * 1e3:.0f} ms ({total['whole'] / torch_s:.2f}x). "
                      f"The products alone: {products / torch_s:.2f}x PyTorch's step.")
    else:
        lines[-1] += " (PyTorch not installed)."
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--train", action="store_true",
                        help="the training step of benchmarks/models.py instead of inference")
    parser.add_argument("--model", default=None,
                        help="a builder of npconv.models (mobilenet_v2; --train: resnet18)")
    parser.add_argument("--batch", type=int, default=None, help="1 (--train: 16)")
    parser.add_argument("--size", type=int, default=None, help="224 (--train: 112)")
    parser.add_argument("--rounds", type=int, default=None, help="25 (--train: 7)")
    args = parser.parse_args(argv)
    if args.train:
        name, batch, size = args.model or "resnet18", args.batch or 16, args.size or 112
        rows = run_train(name, batch, size, args.rounds or 7)
        print(table_train(rows, f"{name} training step, {batch}x{size}x{size}x3 float32"))
        return
    name, batch, size = args.model or "mobilenet_v2", args.batch or 1, args.size or 224
    rows = run(name, batch, size, args.rounds or 25)
    print(table(rows, f"{name}, {batch}x{size}x{size}x3 float32"))


if __name__ == "__main__":
    main()
