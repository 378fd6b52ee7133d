"""The training loop, evaluation and prediction.

A run is a sequence of epochs and an epoch a sequence of steps, each of which trains on one
batch and reports (mean loss, correct predictions, rows). `run_epochs` owns everything around
the steps: the learning-rate schedule, the running means passed to `on_batch`, validation, the
`History` and `on_epoch`. `fit` and `npconv.distributed.fit` share it and differ only in how
they make one epoch's steps (here: `train_step` on batches of the arrays; there: one
data-parallel step on the cluster).
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from npconv import _args, _backend
from npconv._backend import Array
from npconv.nn import functional as F
from npconv.nn import optim
from npconv.nn.layers import Layer
from npconv.nn.losses import check_labels, softmax_cross_entropy
from npconv.nn.module import takes_input_grad
from npconv.training.data import batch_indices

__all__ = [
    "History",
    "Step",
    "check_fit_args",
    "check_labelled",
    "cosine_lr",
    "evaluate",
    "fit",
    "predict_logits",
    "predict_proba",
    "run_epochs",
    "train_step",
]

Step = Callable[[], tuple[float, int, int]]     # one training step -> (mean loss, correct, rows)
Loss = Callable[[Array, Array], tuple[float, Array]]     # (logits, labels) -> (value, dlogits)
OnBatch = Callable[[int, int, float, float], object]    # (i, n_steps, loss, accuracy)


@dataclass
class History:
    """Per-epoch metrics of `fit` (val_* are NaN without validation data)."""

    epoch: list = field(default_factory=list)
    loss: list = field(default_factory=list)
    accuracy: list = field(default_factory=list)
    val_loss: list = field(default_factory=list)
    val_accuracy: list = field(default_factory=list)
    seconds: list = field(default_factory=list)

    def row(self, i: int = -1) -> dict:
        """Epoch i's metrics as a dict."""
        return {k: v[i] for k, v in asdict(self).items()}

    def as_dict(self) -> dict:
        return asdict(self)

    def append(self, *values) -> None:
        """Add one epoch: values in the order of the fields."""
        for key, v in zip(asdict(self), values, strict=True):
            getattr(self, key).append(v)


def cosine_lr(base: float, step: int, total: int) -> float:
    """base * (1 + cos(pi * step / total)) / 2: from base at step 0 down to 0 at `total`.

    >>> cosine_lr(0.1, 0, 10), round(cosine_lr(0.1, 5, 10), 12), cosine_lr(0.1, 10, 10)
    (0.1, 0.05, 0.0)
    """
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


# ---------------------------------------------------------------------------------------------
# Checks, before the first step
# ---------------------------------------------------------------------------------------------


def check_labelled(model: Layer, x: Array, y: Array, name: str = "") -> None:
    """Float images x (N, ...) and integer labels y (N,) in the range of the model's outputs;
    `name` ("val") names the arrays in the messages (x_val, y_val)."""
    suffix = f"_{name}" if name else ""
    _args.float_array(x, f"x{suffix}")
    if not _backend.is_array(y) or y.shape != x.shape[:1]:
        raise ValueError(f"`y{suffix}` must be an array of shape ({x.shape[0]},), one label per "
                         f"image; got {getattr(y, 'shape', type(y).__name__)}")
    n_classes = model.forward(x[:1], training=False).shape[-1]
    check_labels(y, len(y), n_classes)


def _check_count(value, name: str) -> None:
    if not _args.is_int(value):
        raise TypeError(f"`{name}` must be an int >= 1; got {value!r}")
    if value < 1:
        raise ValueError(f"`{name}` must be an int >= 1; got {value!r}")


def _check_validation(model: Layer, validation) -> None:
    if not isinstance(validation, (tuple, list)) or len(validation) != 2:
        got = type(validation).__name__
        if isinstance(validation, (tuple, list)):
            got += f" of length {len(validation)}"
        raise TypeError(f"`validation` must be a pair (x_val, y_val); got {got}")
    x_val, y_val = validation
    check_labelled(model, x_val, y_val, "val")


def check_fit_args(model: Layer, x: Array, y: Array, validation: Any, epochs: Any,
                   batch_size: Any, schedule: Any, rng: Any, optimizer: Any) -> None:
    """Every argument of `fit` (and `npconv.distributed.fit`), each error naming it."""
    _check_count(epochs, "epochs")
    _check_count(batch_size, "batch_size")
    _args.choice(schedule, ("cosine", "constant"), "schedule")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}")
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "lr")):
        raise TypeError(f"`optimizer` must be an npconv.nn optimizer (with .step and .lr); got "
                        f"{type(optimizer).__name__}")
    _args.float_array(x, "x")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`x` must hold at least one image to train on; got shape {x.shape}")
    check_labelled(model, x, y)
    if validation is not None:
        _check_validation(model, validation)


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


def train_step(model: Layer, xb: Array, yb: Array, optimizer: optim.Optimizer,
               loss: Loss = softmax_cross_entropy) -> tuple[float, int]:
    """One step on the batch (xb, yb): forward in training mode, the loss, backward and
    optimizer.step; returns (mean loss, correct argmax predictions). The gradient with respect
    to xb is not computed where the model's backward can skip it (`input_grad=False`)."""
    logits = model.forward(xb, training=True)                      # (B, K)
    value, dlogits = loss(logits, yb)
    skip = {"input_grad": False} if takes_input_grad(model) else {}
    model.backward(dlogits, **skip)
    optimizer.step(model.params, model.grads)
    return value, int((logits.argmax(axis=1) == yb).sum())


def _run_epoch(steps: Sequence[Step], optimizer, lr_at, on_batch) -> tuple[float, float]:
    """Every step of one epoch; returns the epoch's mean loss and accuracy."""
    seen, loss_sum, correct = 0, 0.0, 0
    for i, step in enumerate(steps):
        if lr_at is not None:
            optimizer.lr = lr_at()
        value, hits, n = step()
        seen, loss_sum, correct = seen + n, loss_sum + value * n, correct + hits
        if on_batch is not None:
            on_batch(i, len(steps), loss_sum / seen, correct / seen)
    return loss_sum / seen, correct / seen


def run_epochs(model: Layer, epoch_steps: Callable[[], Sequence[Step]], *,
               optimizer: optim.Optimizer, epochs: int, steps_per_epoch: int,
               schedule: str = "cosine", validation: tuple[Array, Array] | None = None,
               loss: Loss = softmax_cross_entropy, on_batch: OnBatch | None = None,
               on_epoch: Callable[[History], object] | None = None) -> History:
    """The loop of `fit`: `epochs` times, make the epoch's steps with epoch_steps() and run
    them, then validate and record the epoch.

    schedule "cosine" sets optimizer.lr before each step, from its value at the start down to 0
    after epochs * steps_per_epoch steps (`cosine_lr`), and restores it at the end, also on an
    error; "constant" leaves it alone. on_batch(i, n_steps, loss, accuracy) gets the epoch's
    running means, on_epoch(history) the history after each epoch.
    """
    history, base_lr, step = History(), optimizer.lr, 0
    total = epochs * steps_per_epoch

    def lr_at() -> float:
        nonlocal step
        step += 1
        return cosine_lr(base_lr, step - 1, total)

    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            steps = epoch_steps()
            metrics = _run_epoch(steps, optimizer, lr_at if schedule == "cosine" else None,
                                 on_batch)
            del steps                                  # what the steps hold (a cluster's data)
            val = (evaluate(model, *validation, loss=loss) if validation is not None
                   else (math.nan,) * 2)
            history.append(epoch, *metrics, *val, time.perf_counter() - start)
            if on_epoch is not None:
                on_epoch(history)
    finally:
        optimizer.lr = base_lr
    return history


def fit(model: Layer, x: Array, y: Array, *, optimizer: optim.Optimizer, epochs: int,
        batch_size: int, rng: np.random.Generator,
        validation: tuple[Array, Array] | None = None, loss: Loss = softmax_cross_entropy,
        schedule: str = "cosine",
        augment: Callable[[Array, np.random.Generator], Array] | None = None,
        on_batch: OnBatch | None = None,
        on_epoch: Callable[[History], object] | None = None) -> History:
    """Train `model` on images x (N, ...) and integer labels y (N,) by mini-batches.

    Each epoch visits the samples in an order drawn from `rng`; each batch runs forward
    (training mode), the loss, backward and `optimizer.step`. `schedule` "cosine" (the default)
    decays the learning rate from optimizer.lr to 0 over the run, batch by batch (restored at
    the end); "constant" keeps it. `augment`, e.g. `random_shift`, maps each training batch and
    `rng` to a new batch. Callbacks: on_batch(i, n_batches, loss, accuracy) with the epoch's
    running means, and on_epoch(history) after each epoch. `validation` is an optional
    (x_val, y_val), scored with `loss` after each epoch. Every argument and label is checked
    before the first step.
    """
    check_fit_args(model, x, y, validation, epochs, batch_size, schedule, rng, optimizer)
    xp = _backend.namespace(x)

    def step(idx) -> tuple[float, int, int]:
        idx = xp.asarray(idx)                                      # on x's device
        xb = x[idx] if augment is None else augment(x[idx], rng)   # (B, ...)
        return (*train_step(model, xb, y[idx], optimizer, loss), len(idx))

    def epoch_steps() -> list[Step]:
        return [functools.partial(step, idx) for idx in batch_indices(len(y), batch_size, rng)]

    return run_epochs(model, epoch_steps, optimizer=optimizer, epochs=epochs,
                      steps_per_epoch=math.ceil(len(y) / batch_size), schedule=schedule,
                      validation=validation, loss=loss, on_batch=on_batch, on_epoch=on_epoch)


# ---------------------------------------------------------------------------------------------
# Evaluation and prediction
# ---------------------------------------------------------------------------------------------


def predict_logits(model: Layer, x: Array, *, batch_size: int = 512) -> Array:
    """Evaluation-mode outputs of `model` for x (N, ...), batch_size images at a time ->
    (N, K); (0, 0) for no images."""
    _args.float_array(x, "x")
    _check_count(batch_size, "batch_size")
    xp = _backend.namespace(x)
    parts = [model.forward(x[i:i + batch_size], training=False)   # (B, K) each
             for i in range(0, len(x), batch_size)]
    return xp.concatenate(parts) if parts else xp.zeros((0, 0), dtype=x.dtype)  # (N, K)


def predict_proba(model: Layer, x: Array, *, batch_size: int = 512) -> Array:
    """Class probabilities softmax(model(x)) -> (N, K)."""
    return F.softmax(predict_logits(model, x, batch_size=batch_size).astype(np.float64))


def evaluate(model: Layer, x: Array, y: Array, *, batch_size: int = 512,
             loss: Loss = softmax_cross_entropy) -> tuple[float, float]:
    """(mean loss, accuracy) of `model` in evaluation mode on images x and labels y."""
    check_labelled(model, x, y)
    logits = predict_logits(model, x, batch_size=batch_size)       # (N, K)
    value, _ = loss(logits, y)
    return value, float((logits.argmax(axis=1) == y).mean())
