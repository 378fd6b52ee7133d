"""ONNX models side by side: ONNX's reference evaluator, npconv.onnx.Evaluator and onnxruntime.

    python benchmarks/onnx.py [--batches 1 8] [--size 224] [--repeats 5] [--threads N]
                              [--clock wall|cpu] [--out FILE]

A ResNet-18-sized and a MobileNetV2-sized network, written in plain torch with torchvision's
structure (torchvision itself does not load with the CPU torch here) and random weights, are
exported once by `torch.onnx.export` with a dynamic batch, then run at each batch size by

- `onnx.reference.ReferenceEvaluator`, ONNX's pure-NumPy evaluator: ONE timed run (its pooling
  loops over output positions in Python, minutes at batch 8),
- `npconv.onnx.Evaluator`, the same evaluator with npconv computing the conv-net operators,
- onnxruntime's CPU provider,

one untimed call first for the last two and then the best of `--repeats`. All use every core
(npconv's default, OpenBLAS's, onnxruntime's), or `--threads N` each (npconv's `threads`
setting, which also holds BLAS to one thread when N is 1; onnxruntime's intra-op threads;
BLAS through threadpoolctl for the reference evaluator): on a machine shared with other jobs,
threads that spin while they wait for a core make the all-core numbers meaningless, and with
`--threads 1 --clock cpu` the time a process spends waiting for a busy core is not counted. The table gives the
times, the ratios the issue sets targets for (reference / npconv >= 10, npconv / onnxruntime
<= 3) and the largest absolute difference of each NumPy evaluator's logits to onnxruntime's.
`run()` returns the markdown lines, for benchmarks/run.py to include: load this file under
another name (importlib.util.spec_from_file_location("onnx_bench", path)), since `import onnx`
must find the package.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import platform
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

import npconv  # noqa: E402

# ---------------------------------------------------------------------------------------------
# The networks, in plain torch (torchvision's structure and module names)
# ---------------------------------------------------------------------------------------------


def resnet18(num_classes: int = 1000):
    """torchvision's resnet18: BasicBlocks [2, 2, 2, 2] of widths 64 .. 512."""
    from torch import nn

    class BasicBlock(nn.Module):
        def __init__(self, c: int, f: int, stride: int) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(c, f, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(f)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(f, f, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(f)
            self.downsample = None
            if stride != 1 or c != f:
                self.downsample = nn.Sequential(nn.Conv2d(c, f, 1, stride, bias=False),
                                                nn.BatchNorm2d(f))

        def forward(self, x):
            identity = x if self.downsample is None else self.downsample(x)
            out = self.relu(self.bn1(self.conv1(x)))
            return self.relu(self.bn2(self.conv2(out)) + identity)

    class ResNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(64)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            widths, c = (64, 128, 256, 512), 64
            for i, f in enumerate(widths):
                stride = 1 if i == 0 else 2
                setattr(self, f"layer{i + 1}",
                        nn.Sequential(BasicBlock(c, f, stride), BasicBlock(f, f, 1)))
                c = f
            self.avgpool = nn.AdaptiveAvgPool2d(1)
            self.fc = nn.Linear(512, num_classes)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(self.avgpool(x).flatten(1))

    return ResNet()


def mobilenet_v2(num_classes: int = 1000):
    """torchvision's mobilenet_v2 (width 1.0): inverted residuals with ReLU6 and depthwise
    3x3 convolutions."""
    from torch import nn

    def conv_bn(c: int, f: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers = [nn.Conv2d(c, f, k, stride, k // 2, groups=groups, bias=False),
                  nn.BatchNorm2d(f)]
        return nn.Sequential(*layers, *([nn.ReLU6(inplace=True)] if act else []))

    class InvertedResidual(nn.Module):
        def __init__(self, c: int, f: int, stride: int, t: int) -> None:
            super().__init__()
            hidden = c * t
            self.use_res_connect = stride == 1 and c == f
            layers = [conv_bn(c, hidden, 1)] if t != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, hidden), conv_bn(hidden, f, 1, act=False)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    class MobileNetV2(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            settings = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                        (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]
            features, c = [conv_bn(3, 32, 3, 2)], 32
            for t, f, n, s in settings:
                for i in range(n):
                    features.append(InvertedResidual(c, f, s if i == 0 else 1, t))
                    c = f
            features.append(conv_bn(c, 1280, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(x.flatten(1))

    return MobileNetV2()


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


def measure(path: Path, batch: int, size: int, repeats: int, reference: bool,
            threads: int | None, clock=time.perf_counter) -> dict:
    from onnx.reference import ReferenceEvaluator

    from npconv.onnx import Evaluator

    x = np.random.default_rng(batch).normal(size=(batch, 3, size, size)).astype(np.float32)
    sess = ort_session(path, threads)
    t_ort, (want,) = best_time(lambda: sess.run(None, {"x": x}), repeats, clock)
    ev = Evaluator(str(path))
    with npconv.config(threads=threads):
        t_np, (got,) = best_time(lambda: ev.run(None, {"x": x}), repeats, clock)
    row = dict(batch=batch, ort=t_ort, npconv=t_np, npconv_diff=float(np.abs(got - want).max()),
               delegated=ev.delegated, reference=None, reference_diff=None)
    if reference:
        ref = ReferenceEvaluator(str(path))
        with blas_limit(threads):
            row["reference"], (slow,) = once(lambda: ref.run(None, {"x": x}), clock)
        row["reference_diff"] = float(np.abs(slow - want).max())
    return row


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------


def _ms(t) -> str:
    return "n/a" if t is None else f"{t * 1e3:.0f}" if t >= 0.1 else f"{t * 1e3:.1f}"


def _x(a, b) -> str:
    return "n/a" if a is None or b is None else f"{a / b:.1f}x"


def _e(v) -> str:
    return "n/a" if v is None else f"{v:.1e}"


def table(results: dict) -> list[str]:
    lines = ["| model | batch | reference ms | npconv.onnx ms | onnxruntime ms | reference / "
             "npconv (>= 10) | npconv / onnxruntime (<= 3) | max diff npconv | max diff "
             "reference |", "|---|---|---|---|---|---|---|---|---|"]
    for name, rows in results.items():
        for r in rows:
            lines.append(
                f"| {name} | {r['batch']} | {_ms(r['reference'])} | {_ms(r['npconv'])} | "
                f"{_ms(r['ort'])} | {_x(r['reference'], r['npconv'])} | "
                f"{_x(r['npconv'], r['ort'])} | {_e(r['npconv_diff'])} | "
                f"{_e(r['reference_diff'])} |")
    return lines


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
        clock: str = "wall") -> list[str]:
    """Export, run and compare every model at every batch size; the markdown report."""
    builders = {"resnet18": resnet18, "mobilenet_v2": mobilenet_v2}
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        for i, name in enumerate(models):
            path = Path(tmp) / f"{name}.onnx"
            export(randomize(builders[name](), seed=i), path, size)
            results[name] = [measure(path, b, size, repeats, reference, threads,
                                     CLOCKS[clock]) for b in batches]
            for r in results[name]:
                if r["delegated"]:
                    print(f"{name}: nodes run by ONNX's classes: {r['delegated']}")
    what = "wall-clock time" if clock == "wall" else "the process's CPU time (time.process_time)"
    return [*environment(threads), "", f"Times: {what}. Input {size}x{size} float32, random "
            f"weights; best of {repeats} runs after a warm-up for npconv.onnx and onnxruntime, "
            "one run for the reference evaluator. Max diff: the largest absolute difference of "
            "the logits to onnxruntime's.", "", *table(results)]


def main(argv=None) -> None:
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
    parser.add_argument("--out", type=Path, help="also write the report to this file")
    args = parser.parse_args(argv)
    lines = run(tuple(args.batches), args.size, args.repeats, args.reference, tuple(args.models),
                args.threads, args.clock)
    print("\n".join(lines))
    if args.out:
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
