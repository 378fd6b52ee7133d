"""npconv on a GPU (CuPy arrays) against PyTorch CUDA, side by side, in one run.

    python benchmarks/gpu.py [--repeats 20] [--out docs/gpu_benchmarks.md]

The shapes of benchmarks/conv.py plus two at GPU batch sizes (ResNet 3x3 at batch 128, the 7x7
stem at batch 64) and a pooling row (max pool 3x3 s2 p1 on the stem's output), float32. For
each row both libraries run alternately (forward alone, then forward plus backward: y, dx, dw,
db), each timed with a device synchronize around the call; the table reports medians and the
geometric mean of the forward+backward ratios. npconv runs channels_last (its native layout)
unless the shape says channels_first; PyTorch runs its native NCHW with cuDNN.

Both sides compute in true float32: TF32 is switched off in PyTorch (cuDNN convolutions and
cuBLAS matmuls), and CuPy's float32 GEMMs are plain float32 by default (CUPY_TF32 unset; the
header says if it is set). A TF32 comparison would measure a different, less exact product.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent / "src"))
sys.path.insert(0, str(HERE))

import cupy as cp  # noqa: E402
import torch  # noqa: E402
from conv import SHAPES, Shape  # noqa: E402

import npconv  # noqa: E402

GPU_SHAPES = (
    *SHAPES,
    dataclasses.replace(SHAPES[2], name="resnet 3x3 b128", x=(128, 56, 56, 64)),
    dataclasses.replace(SHAPES[5], name="stem 7x7 s2 b64", x=(64, 224, 224, 3)),
)
"""run.py's shapes and two at batch sizes a GPU is used with."""

POOL = Shape("max pool 3x3 s2 p1", (64, 112, 112, 64), (3, 3), 64, stride=2, pad=1)
"""The pooling row: the ResNet stem's max pool on the stem row's output."""


def no_tf32() -> None:
    """True float32 in PyTorch: no TF32 in cuDNN's convolutions or cuBLAS's matmuls."""
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False


def timed(fn, sync) -> float:
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    return time.perf_counter() - t0


def npconv_calls(shape, rng, algorithm=None):
    kw = dict(shape.kwargs, algorithm=algorithm)
    x = rng.standard_normal(shape.x, dtype=np.float32)
    cin = shape.x[-1]
    w_last = rng.standard_normal((*shape.k, cin // shape.groups, shape.f), dtype=np.float32)
    if shape.data_format == "channels_first":
        x = np.moveaxis(x, -1, 1).copy()
        r = len(shape.k)
        w_last = w_last.transpose(r + 1, r, *range(r)).copy()
    x, w, b = cp.asarray(x), cp.asarray(w_last), cp.zeros(shape.f, dtype=cp.float32)
    dy = cp.ones_like(npconv.conv(x, w, b, **kw))

    def forward():
        return npconv.conv(x, w, b, **kw)

    def both():
        npconv.conv(x, w, b, **kw)
        return npconv.conv_backward(dy, x, w, **kw)

    return forward, both


def torch_calls(shape, rng):
    n, *s, c = shape.x
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d,
            torch.nn.functional.conv3d)[len(s) - 1]
    dev = "cuda"
    x = torch.randn((n, c, *s), device=dev, requires_grad=True)
    w = torch.randn((shape.f, c // shape.groups, *shape.k), device=dev, requires_grad=True)
    b = torch.zeros(shape.f, device=dev, requires_grad=True)
    kw = dict(stride=shape.stride, padding=shape.pad, groups=shape.groups)
    dy = torch.ones_like(conv(x, w, b, **kw))

    def forward():
        with torch.no_grad():
            return conv(x, w, b, **kw)

    def both():
        y = conv(x, w, b, **kw)
        return torch.autograd.grad(y, (x, w, b), dy)

    return forward, both


def pool_calls(shape, rng):
    """npconv's max_pool on CuPy and PyTorch's (cuDNN) on the same data: (forward, both)."""
    x_np = rng.standard_normal(shape.x, dtype=np.float32)
    kw = dict(stride=shape.stride, padding=shape.pad)
    x = cp.asarray(x_np)
    dy = cp.ones_like(npconv.max_pool(x, shape.k, **kw))
    xt = torch.from_numpy(np.moveaxis(x_np, -1, 1).copy()).cuda().requires_grad_()
    dyt = torch.ones_like(torch.nn.functional.max_pool2d(xt, shape.k, **kw))

    def ours_fwd():
        return npconv.max_pool(x, shape.k, **kw)

    def ours_both():
        _, i = npconv.max_pool(x, shape.k, return_indices=True, **kw)
        return npconv.max_pool_backward(dy, x.shape, shape.k, indices=i, **kw)

    def theirs_fwd():
        with torch.no_grad():
            return torch.nn.functional.max_pool2d(xt, shape.k, **kw)

    def theirs_both():
        yt = torch.nn.functional.max_pool2d(xt, shape.k, **kw)
        return torch.autograd.grad(yt, xt, dyt)

    return (ours_fwd, ours_both), (theirs_fwd, theirs_both)


def bench(shape, repeats: int) -> dict:
    rng = np.random.default_rng(0)
    if shape is POOL:
        ours, theirs = pool_calls(shape, rng)
    else:
        ours, theirs = npconv_calls(shape, rng), torch_calls(shape, rng)
    sync_cp = cp.cuda.Device().synchronize
    sync_t = torch.cuda.synchronize
    out = {}
    for i, label in enumerate(("forward", "fwd+bwd")):
        for _ in range(3):                                        # warm-up, plans, autotune
            timed(ours[i], sync_cp)
            timed(theirs[i], sync_t)
        a, b = [], []
        for _ in range(repeats):
            a.append(timed(ours[i], sync_cp))
            b.append(timed(theirs[i], sync_t))
        out[label] = (statistics.median(a), statistics.median(b))
    cp.get_default_memory_pool().free_all_blocks()
    torch.cuda.empty_cache()
    return out


def table(rows) -> str:
    lines = ["| shape | npconv fwd (ms) | torch fwd (ms) | ratio | npconv fwd+bwd (ms) | "
             "torch fwd+bwd (ms) | ratio |",
             "|---|---|---|---|---|---|---|"]
    for name, r in rows:
        (af, tf), (ab, tb) = r["forward"], r["fwd+bwd"]
        lines.append(f"| {name} | {af * 1e3:.2f} | {tf * 1e3:.2f} | {af / tf:.2f} | "
                     f"{ab * 1e3:.2f} | {tb * 1e3:.2f} | {ab / tb:.2f} |")
    ratios = [r["fwd+bwd"][0] / r["fwd+bwd"][1] for _, r in rows]
    geo = float(np.exp(np.mean(np.log(ratios))))
    lines.append(f"\nGeometric mean of npconv/torch, forward+backward: {geo:.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    no_tf32()
    props = cp.cuda.runtime.getDeviceProperties(0)
    tf32 = os.environ.get("CUPY_TF32", "0")
    header = (f"GPU: {props['name'].decode()}; CuPy {cp.__version__}; PyTorch {torch.__version__} "
              f"(cuDNN {torch.backends.cudnn.version()}); NumPy {np.__version__}; float32; "
              f"median of {args.repeats}; TF32 off in PyTorch (cuDNN and cuBLAS), CuPy "
              f"{'TF32 (CUPY_TF32=' + tf32 + ')' if tf32 != '0' else 'plain float32 GEMMs'}")
    print(header, flush=True)
    rows = []
    for shape in (*GPU_SHAPES, POOL):
        rows.append((shape.name, bench(shape, args.repeats)))
        print(shape.name, rows[-1][1], flush=True)
    text = header + "\n\n" + table(rows) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
