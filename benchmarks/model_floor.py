"""What the convolutions' arithmetic alone costs in a network's inference, next to what npconv's
layers take for it in place, per kind of layer.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/model_floor.py
        [--model mobilenet_v2] [--batch 1] [--size 224] [--rounds 25]

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
with these NumPy calls; the whole forward's time is printed beside it. Prints a markdown table;
writes nothing.
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
sys.path.insert(0, str(HERE.parent / "src"))

import npconv  # noqa: E402
from npconv import models  # noqa: E402
from npconv.algorithms import depthwise  # noqa: E402
from npconv.nn import layers, module  # noqa: E402


def kind(layer) -> str:
    """"depthwise", "1x1" or "other" (full kernels: stems, 3x3 layers)."""
    if layer.kw.get("groups", 1) > 1 and layer.params["weight"].shape[-2] == 1:
        return "depthwise"
    return "1x1" if all(k == 1 for k in layer.params["weight"].shape[:-2]) else "other"


def capture(model, x) -> list[tuple]:
    """(layer, its input) for every Conv of one evaluation forward, in call order."""
    seen: list[tuple] = []
    call = module.Layer.__call__

    def grab(self, *args, **kwargs):
        if isinstance(self, layers.Conv):
            seen.append((self, np.array(args[0])))
        return call(self, *args, **kwargs)

    module.Layer.__call__ = grab
    try:
        model.forward(x)
    finally:
        module.Layer.__call__ = call
    return seen


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


def primitive(layer, x) -> tuple:
    """(the bare call, its multiply-adds) of one layer on input x (N, *S, C)."""
    w = layer.params["weight"]                                   # (*K, C/G, F)
    if layer.kw["data_format"] != "channels_last" or layer.kw["padding_mode"] != "zeros":
        raise ValueError(f"{layer!r}: the primitives are timed for channels_last layers with "
                         f"zero padding")
    spec = npconv.conv_spec(x.shape, w.shape, **layer.kw)       # the layer's own geometry
    outputs = spec.batch * math.prod(spec.out_size)
    macs = outputs * spec.out_channels * math.prod(spec.kernel_size) * spec.group_in
    if kind(layer) == "depthwise":
        xp = np.pad(x, ((0, 0), *spec.pads, (0, 0)))
        win = depthwise._windows_view(xp, spec)
        if depthwise.merged(spec):
            wk = depthwise.tiles(w, spec).reshape(*spec.kernel_size, -1).copy()
            out = np.empty((spec.batch, *spec.out_size[:-1],
                            spec.out_size[-1] * spec.out_channels), x.dtype)
        else:
            wk = w.reshape(*spec.kernel_size, spec.groups, spec.group_out)
            out = np.empty((spec.batch, *spec.out_size, spec.groups, spec.group_out), x.dtype)
        rule = "{},{}->{}".format(*depthwise._subscripts(spec))
        return (lambda: np.einsum(rule, win, wk, out=out)), macs
    depth = math.prod(spec.kernel_size) * spec.group_in
    plain = kind(layer) == "1x1" and spec.groups == 1 and all(s == 1 for s in spec.stride)
    a = (x.reshape(-1, x.shape[-1]) if plain                     # x is the window matrix
         else np.ones((outputs, depth), x.dtype))               # the window matrix's shape
    b = w.reshape(depth, spec.out_channels)
    out = np.empty((outputs, spec.out_channels), x.dtype)
    return (lambda: np.matmul(a, b, out=out)), macs


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
    seen = capture(model, x)
    placed, whole = in_place(model, x, rounds)
    rows: dict = {}
    for layer, xin in seen:
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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2", help="a builder of npconv.models")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--rounds", type=int, default=25)
    args = parser.parse_args(argv)
    rows = run(args.model, args.batch, args.size, args.rounds)
    print(table(rows, f"{args.model}, {args.batch}x{args.size}x{args.size}x3 float32"))


if __name__ == "__main__":
    main()
