"""Training on top of npconv.nn: the mini-batch loop, evaluation, prediction, the default digits
CNN, the data splits of the `npconv` commands, a model summary and the loss/accuracy plot.

The command-line modules (`npconv.commands`) only parse, call these functions and print, so
everything they compute can be used, and is tested, from Python. Randomness comes from one
integer seed split into independent streams (`seed_streams`): the same seed gives the same data
split, weights, batch order and therefore the same run. tqdm and matplotlib are optional: the
loop reports progress through callbacks, and only `plot_history` imports matplotlib.
"""

from __future__ import annotations

import itertools
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from npconv import _args, _backend
from npconv.nn import functional as F
from npconv.nn import layers as L
from npconv.nn.losses import check_labels, softmax_cross_entropy

__all__ = [
    "DataSplits",
    "History",
    "digits_cnn",
    "evaluate",
    "fit",
    "load_data",
    "make_optimizer",
    "plot_history",
    "predict_logits",
    "predict_proba",
    "prepare_images",
    "random_shift",
    "read_images",
    "seed_streams",
    "summary",
]


# ---------------------------------------------------------------------------------------------
# Seeds, data and the default model
# ---------------------------------------------------------------------------------------------


def seed_streams(seed: int) -> tuple[np.random.Generator, ...]:
    """Three independent generators from one seed: (data split, initial weights, batch order)."""
    if not _args.is_int(seed) or seed < 0:
        raise ValueError(f"`seed` must be an int >= 0; got {seed!r}")
    return tuple(np.random.default_rng(s) for s in np.random.SeedSequence(int(seed)).spawn(3))


@dataclass
class DataSplits:
    """Train / validation / test arrays, channels_last float32 images and int64 labels."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    pixel_max: float = 1.0                # integer images are divided by this before predicting

    def describe(self) -> str:
        shape = "x".join(map(str, self.x_train.shape[1:]))
        return (f"{self.name} ({shape} images, {int(self.y_train.max()) + 1} classes): "
                f"{len(self.y_train)} train / {len(self.y_val)} validation / "
                f"{len(self.y_test)} test")


def load_data(path=None, *, rng: np.random.Generator, test_fraction: float = 0.2,
              val_fraction: float = 0.1) -> DataSplits:
    """The embedded 8x8 digits (path None), split into train / validation / test by `rng`; or
    MNIST / Fashion-MNIST files at `path` (an IDX directory or an .npz), whose own test set is
    kept and whose training set gives the validation split.

    The test split is drawn first, so it depends on the seed and test_fraction only.
    """
    from npconv import datasets

    if path is None:
        x, y = datasets.load_digits()                              # (1797, 8, 8, 1), (1797,)
        x_tr, x_te, y_tr, y_te = datasets.train_test_split(x, y, test_fraction=test_fraction,
                                                           rng=rng)
        name, pixel_max = "digits", 16.0
    else:
        x_tr, y_tr = datasets.load_mnist(path, kind="train")      # (N, 28, 28, 1), (N,)
        x_te, y_te = datasets.load_mnist(path, kind="test")
        name, pixel_max = Path(path).name or str(path), 255.0
    x_tr, x_va, y_tr, y_va = datasets.train_test_split(x_tr, y_tr, test_fraction=val_fraction,
                                                       rng=rng)
    return DataSplits(name, x_tr, y_tr, x_va, y_va, x_te, y_te, pixel_max)


def digits_cnn(*, rng: np.random.Generator, input_shape=(8, 8, 1), n_classes: int = 10,
               width: int = 16) -> L.Sequential:
    """The default CNN: two 3x3 conv blocks (width and 2 * width channels, batch norm, ReLU),
    a 2x2 max pool after each, then a linear classifier; channels_last. The conv weights are
    drawn from kaiming_normal, the classifier's from xavier_uniform (with a zero bias).

    For 8x8 digits: (N, 8, 8, 1) -> (N, 4, 4, w) -> (N, 2, 2, 2w) -> (N, 8w) -> (N, 10).
    """
    h, w, c = input_shape
    if h % 4 or w % 4:
        raise ValueError(f"`input_shape` must have a height and width divisible by 4 (two 2x2 "
                         f"pools); got {tuple(input_shape)}")
    return L.Sequential(
        L.Conv2d(c, width, 3, padding="same", bias=False, init="kaiming_normal", rng=rng),
        L.BatchNorm2d(width), L.ReLU(), L.MaxPool2d(2),
        L.Conv2d(width, 2 * width, 3, padding="same", bias=False, init="kaiming_normal",
                 rng=rng),
        L.BatchNorm2d(2 * width), L.ReLU(), L.MaxPool2d(2),
        L.Flatten(),
        L.Linear(h // 4 * (w // 4) * 2 * width, n_classes, init="xavier_uniform", rng=rng),
    )


# ---------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------


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


def _check_xy(model, x, y, name: str) -> None:
    """Float images (N, ...) and integer labels (N,) in range of the model's outputs."""
    _args.float_array(x, f"x_{name}" if name else "x")
    if not _backend.is_array(y) or y.shape != x.shape[:1]:
        raise ValueError(f"`y{'_' + name if name else ''}` must be an array of shape "
                         f"({x.shape[0]},), one label per image; got "
                         f"{getattr(y, 'shape', type(y).__name__)}")
    n_classes = model.forward(x[:1], training=False).shape[-1]
    check_labels(y, len(y), n_classes)


def _batches(n: int, batch_size: int, rng: np.random.Generator | None):
    """Index arrays of consecutive batches, shuffled by `rng` if given (the last may be short)."""
    order = rng.permutation(n) if rng is not None else np.arange(n)  # (N,)
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


def random_shift(x, rng: np.random.Generator, *, max_shift: int = 1):
    """Shift each image of x (N, *S, C) by its own random offset in [-max_shift, max_shift]
    along every spatial axis, filling with zeros (data augmentation); returns a new array.

    >>> x = np.arange(9.0).reshape(1, 3, 3, 1)
    >>> random_shift(x, np.random.default_rng(1)).shape
    (1, 3, 3, 1)
    """
    _args.float_array(x, "x")
    m, n, rank = max_shift, x.shape[0], x.ndim - 2
    xp = _backend.namespace(x)
    out = xp.pad(x, ((0, 0), *((m, m),) * rank, (0, 0)))          # (N, *(S + 2m), C)
    for axis in range(1, rank + 1):
        shape = [n] + [1] * (x.ndim - 1)
        shape[axis] = x.shape[axis]
        shift = rng.integers(-m, m + 1, size=n)                    # (N,) drawn on the host
        idx = np.arange(x.shape[axis]) + m + shift[:, None]        # (N, S_axis)
        out = xp.take_along_axis(out, xp.asarray(idx.reshape(shape)), axis=axis)
    return out


def _train_batch(model, xb, yb, optimizer, loss) -> tuple[float, int]:
    logits = model.forward(xb, training=True)                      # (B, K)
    value, dlogits = loss(logits, yb)
    model.backward(dlogits)
    optimizer.step(model.params, model.grads)
    return value, int((logits.argmax(axis=1) == yb).sum())


def cosine_lr(base: float, step: int, total: int) -> float:
    """base * (1 + cos(pi * step / total)) / 2: from base at step 0 down to 0 at `total`."""
    return base * 0.5 * (1 + math.cos(math.pi * min(step, total) / max(total, 1)))


def _epoch(model, x, y, batches, *, optimizer, loss, augment, rng, lr_at, on_batch):
    """One pass over `batches`; returns the epoch's mean loss and accuracy."""
    seen, loss_sum, correct = 0, 0.0, 0
    xp = _backend.namespace(x)
    for i, idx in enumerate(batches):
        if lr_at is not None:
            optimizer.lr = lr_at()
        idx = xp.asarray(idx)                                      # on x's device
        xb = x[idx] if augment is None else augment(x[idx], rng)   # (B, ...)
        value, hits = _train_batch(model, xb, y[idx], optimizer, loss)
        seen, loss_sum, correct = seen + len(idx), loss_sum + value * len(idx), correct + hits
        if on_batch is not None:
            on_batch(i, len(batches), loss_sum / seen, correct / seen)
    return loss_sum / seen, correct / seen


def _check_fit(model, x, y, validation, epochs, batch_size, schedule, rng, optimizer) -> None:
    _args.float_array(x, "x")
    if x.ndim == 0 or x.shape[0] == 0:
        raise ValueError(f"`x` must hold at least one image to train on; got shape {x.shape}")
    _check_xy(model, x, y, "")
    if validation is not None:
        if not isinstance(validation, (tuple, list)) or len(validation) != 2:
            raise TypeError(f"`validation` must be a pair (x_val, y_val); got "
                            f"{type(validation).__name__} of length {len(validation)}"
                            if isinstance(validation, (tuple, list)) else
                            f"`validation` must be a pair (x_val, y_val); got "
                            f"{type(validation).__name__}")
        _check_xy(model, *validation, "val")
    for value, name in ((epochs, "epochs"), (batch_size, "batch_size")):
        if not _args.is_int(value):
            raise TypeError(f"`{name}` must be an int >= 1; got {value!r}")
        if value < 1:
            raise ValueError(f"`{name}` must be an int >= 1; got {value!r}")
    _args.choice(schedule, ("cosine", "constant"), "schedule")
    if not isinstance(rng, np.random.Generator):
        raise TypeError(f"`rng` must be a numpy.random.Generator; got {type(rng).__name__}")
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "lr")):
        raise TypeError(f"`optimizer` must be an npconv.nn optimizer (with .step and .lr); got "
                        f"{type(optimizer).__name__}")


def fit(model, x, y, *, optimizer, epochs: int, batch_size: int, rng: np.random.Generator,
        validation=None, loss=softmax_cross_entropy, schedule: str = "cosine",
        augment=None, on_batch=None, on_epoch=None) -> History:
    """Train `model` on images x (N, ...) and integer labels y (N,) by mini-batches.

    Each epoch visits the samples in an order drawn from `rng`; each batch runs forward
    (training mode), the loss, backward and `optimizer.step`. `schedule` "cosine" decays the
    learning rate from optimizer.lr to 0 over the run (restored at the end), "constant" keeps
    it. `augment`, e.g. `random_shift`, maps each training batch and `rng` to a new batch.
    Callbacks: on_batch(i, n_batches, loss, accuracy) with the epoch's running means, and
    on_epoch(history) after each epoch. `validation` is an optional (x_val, y_val). Every
    argument and label is checked before the first step.
    """
    _check_fit(model, x, y, validation, epochs, batch_size, schedule, rng, optimizer)
    history, base_lr = History(), optimizer.lr
    steps, total = itertools.count(), epochs * math.ceil(len(y) / batch_size)
    lr_at = (lambda: cosine_lr(base_lr, next(steps), total)) if schedule == "cosine" else None
    try:
        for epoch in range(1, epochs + 1):
            start = time.perf_counter()
            metrics = _epoch(model, x, y, _batches(len(y), batch_size, rng),
                             optimizer=optimizer, loss=loss, augment=augment, rng=rng,
                             lr_at=lr_at, on_batch=on_batch)
            val = evaluate(model, *validation) if validation is not None else (math.nan,) * 2
            history.append(epoch, *metrics, *val, time.perf_counter() - start)
            if on_epoch is not None:
                on_epoch(history)
    finally:
        optimizer.lr = base_lr
    return history


def predict_logits(model, x, *, batch_size: int = 512):
    """Evaluation-mode outputs of `model` for x (N, ...), batch by batch -> (N, K)."""
    _args.float_array(x, "x")
    xp = _backend.namespace(x)
    parts = [model.forward(x[i:i + batch_size], training=False)   # (B, K) each
             for i in range(0, len(x), batch_size)]
    return xp.concatenate(parts) if parts else xp.zeros((0, 0), dtype=x.dtype)  # (N, K)


def predict_proba(model, x, *, batch_size: int = 512):
    """Class probabilities softmax(model(x)) -> (N, K)."""
    return F.softmax(predict_logits(model, x, batch_size=batch_size).astype(np.float64))


def evaluate(model, x, y, *, batch_size: int = 512, loss=softmax_cross_entropy):
    """(mean loss, accuracy) of `model` in evaluation mode on images x and labels y."""
    _check_xy(model, x, y, "")
    logits = predict_logits(model, x, batch_size=batch_size)       # (N, K)
    value, _ = loss(logits, y)
    return value, float((logits.argmax(axis=1) == y).mean())


def make_optimizer(name: str, *, lr: float, weight_decay: float = 0.0):
    """"adam", "adamw" or "sgd" (with Nesterov momentum 0.9), by name."""
    from npconv.nn import optim

    _args.choice(name, tuple(optim.OPTIMIZERS), "optimizer")
    if name == "sgd":
        return optim.SGD(lr=lr, momentum=0.9, nesterov=True, weight_decay=weight_decay)
    return optim.OPTIMIZERS[name](lr=lr, weight_decay=weight_decay)


# ---------------------------------------------------------------------------------------------
# Images for `npconv predict`
# ---------------------------------------------------------------------------------------------


def read_images(path) -> np.ndarray:
    """The array stored at `path`: .npy, .npz (key "x", or its only array) or an IDX file."""
    from npconv import datasets

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"image file not found: {path}")
    if path.suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if path.suffix == ".npz":
        with np.load(path, allow_pickle=False) as npz:
            if "x" in npz.files or len(npz.files) == 1:
                return npz["x" if "x" in npz.files else npz.files[0]]
            raise ValueError(f"{path}: an .npz of images needs a key 'x' or a single array; "
                             f"found keys {sorted(npz.files)}")
    return datasets.load_idx(path)


def prepare_images(a, input_shape, pixel_max: float) -> np.ndarray:
    """Images as the model wants them: float32 (N, *input_shape).

    Accepts (N, *input_shape), one image (*input_shape), and both without the channel axis when
    it is 1; integer pixels are divided by `pixel_max` (16 for the digits, 255 for MNIST),
    float pixels are taken as already scaled.
    """
    shape = tuple(input_shape)
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.integer)
                                             or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"images must be an integer or float array; got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    forms = {shape: True, shape[:-1]: True} if shape[-1] == 1 else {shape: True}
    if a.shape[1:] in forms:
        x = a.reshape(a.shape[0], *shape)                          # (N, *input_shape)
    elif a.shape in forms:
        x = a.reshape(1, *shape)                                   # (1, *input_shape)
    else:
        accepted = ", ".join(f"(N, {', '.join(map(str, f))})" for f in forms)
        raise ValueError(f"images must have shape {accepted} or one image without N; got "
                         f"{a.shape}")
    if np.issubdtype(a.dtype, np.integer):
        return (x / pixel_max).astype(np.float32)
    return x.astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------


def summary(model, input_shape) -> str:
    """A table of the model's layers, output shapes and parameter counts, for an input of
    shape (N, *input_shape)."""
    x = np.zeros((1, *input_shape), dtype=np.float32)              # (1, *input_shape)
    layers = list(model) if isinstance(model, L.Sequential) else [model]
    rows, total = [("layer", "output", "params")], 0
    for layer in layers:
        x = layer.forward(x, training=False)
        shapes = ", ".join(f"{k} {v.shape}" for k, v in layer.params.items())
        count = sum(v.size for v in layer.params.values())
        total += count
        name = f"{type(layer).__name__}" + (f" [{shapes}]" if shapes else "")
        rows.append((name, "(N, " + ", ".join(map(str, x.shape[1:])) + ")", str(count)))
    rows.append(("total", "", str(total)))
    return "\n".join(f"{a:<40} {b:<16} {c:>7}" for a, b, c in rows)


def plot_history(history: History, path) -> Path:
    """Write a PNG of the loss and accuracy curves (train and validation) to `path`.

    Needs matplotlib (ImportError otherwise); uses its Agg canvas directly, so no GUI backend
    and no global pyplot state are involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(history.epoch, getattr(history, key), marker="o", label="train")
        ax.plot(history.epoch, getattr(history, f"val_{key}"), marker="o", label="validation")
        ax.set(xlabel="epoch", title=key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    return Path(path)
