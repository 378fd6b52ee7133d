"""A whole network's forward (and a training step's backward) as one network pass
(`npconv._chunks.network_pass`: convolutions on the workers but the smallest, BLAS held to one
thread from the first worker-run one) against the per-layer rule (`_chunks.serial_layer`
alone), paired call by call in one process:

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python benchmarks/network_pass.py \\
        --case resnet18:train:16:112 --case mobilenet_v2:infer:16:224 --case digits:train:32:8

A case is model:task:batch:size, model one of `npconv.models`' builders or "digits" (the
default CNN of `npconv train`, 1-channel input), task "train" (forward in training mode,
cross-entropy, backward, SGD with momentum) or "infer" (`eval()`, forward). The two rules
alternate, the order swapped every round, each call after a 0.2 s pause (so that OpenBLAS's
threads, spinning after a BLAS-threaded call, have stopped) and a warm-up call under the same
rule; a call of the digits CNN is timed as the mean of 60. It prints the medians of each rule
and the median, min and max over rounds of the pass's time over the rule's: pairs taken
seconds apart see the same state of a machine whose speed drifts by 10-30% over minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import time

import numpy as np

from npconv import _chunks, models, nn
from npconv.training.builders import digits_cnn


def per_layer(x, hold: bool = False) -> contextlib.AbstractContextManager:
    """No network pass: every convolution by `_chunks.serial_layer`, BLAS untouched."""
    return contextlib.nullcontext()


def make_call(model_name: str, task: str, batch: int, size: int, rng: np.random.Generator):
    if model_name == "digits":
        model, channels, classes = digits_cnn(rng=rng, input_shape=(size, size, 1),
                                              width=32), 1, 10
    else:
        model, channels, classes = getattr(models, model_name)(rng=rng), 3, 1000
    x = rng.standard_normal((batch, size, size, channels)).astype(np.float32)
    if task == "infer":
        model.eval()
        return lambda: model.forward(x)
    labels = rng.integers(0, classes, batch)
    opt = nn.SGD(lr=1e-3, momentum=0.9)
    model.train()

    def step():
        logits = model.forward(x, training=True)
        _, dlogits = nn.softmax_cross_entropy(logits, labels)
        model.backward(dlogits, input_grad=False)
        opt.step(model.params, model.grads)

    return step


def pair(case: str, rounds: int) -> str:
    model_name, task, batch, size = case.split(":")
    call = make_call(model_name, task, int(batch), int(size), np.random.default_rng(0))
    reps = 60 if model_name == "digits" else 1
    rules = {"pass": _chunks.network_pass, "per-layer": per_layer}
    times: dict[str, list[float]] = {name: [] for name in rules}
    try:
        for r in range(rounds):
            for name in (("pass", "per-layer") if r % 2 else ("per-layer", "pass")):
                _chunks.network_pass = rules[name]
                time.sleep(0.2)
                call()
                start = time.perf_counter()
                for _ in range(reps):
                    call()
                times[name].append((time.perf_counter() - start) / reps)
    finally:
        _chunks.network_pass = rules["pass"]
    a, b = np.array(times["pass"]), np.array(times["per-layer"])
    ratio = a / b
    return (f"| {case} | {np.median(a) * 1e3:.1f} ms | {np.median(b) * 1e3:.1f} ms | "
            f"{np.median(ratio):.2f} ({ratio.min():.2f}-{ratio.max():.2f}) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", action="append", help="model:task:batch:size (repeatable)")
    parser.add_argument("--rounds", type=int, default=12)
    args = parser.parse_args()
    cases = args.case or ["resnet18:train:16:112", "mobilenet_v2:train:16:112",
                          "resnet18:infer:16:224", "mobilenet_v2:infer:16:224",
                          "digits:train:32:8", "digits:train:64:28"]
    print("| case | network pass | per-layer rule | pass / rule, median (min-max) |")
    print("|---|---|---|---|")
    for case in cases:
        print(pair(case, args.rounds), flush=True)


if __name__ == "__main__":
    main()
