"""Data for training and prediction: seeds, the splits of the `npconv` commands, batch order,
augmentation, and images read from files.

Randomness comes from one integer seed split into independent streams (`seed_streams`): the same
seed gives the same data split, weights, batch order and therefore the same run.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npconv import _args, _backend, datasets

__all__ = [
    "DataSplits",
    "batch_indices",
    "load_data",
    "prepare_images",
    "random_shift",
    "read_images",
    "seed_streams",
]


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


def batch_indices(n: int, batch_size: int, rng: np.random.Generator | None) -> list:
    """Index arrays of consecutive batches of range(n), in an order drawn from `rng` (in order
    when None); the last batch may be short. `fit` and `npconv.distributed.fit` both use it, so
    they draw the same order from the same generator.

    >>> [b.tolist() for b in batch_indices(5, 2, None)]
    [[0, 1], [2, 3], [4]]
    """
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


def read_images(path) -> np.ndarray:
    """The array stored at `path`: .npy, .npz (key "x", or its only array) or an IDX file."""
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
