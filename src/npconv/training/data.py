"""Data for training and prediction: seeds, the splits of the `npconv` commands, batch order,
augmentation, and images read from files.

Randomness comes from one integer seed split into independent streams (`seed_streams`): the same
seed gives the same data split, weights, batch order and therefore the same run.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from npconv import _args, _backend, _npyfile, datasets
from npconv._backend import Array

__all__ = [
    "DataSplits",
    "batch_indices",
    "load_data",
    "out_of_range",
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


MAX_CLASSES = 100_000      # the classifier gets one output per class up to the largest label


def _check_classes(y, source) -> None:
    """Labels in [0, MAX_CLASSES), so that one absurd label cannot size the classifier."""
    if y.size and (y.min() < 0 or y.max() >= MAX_CLASSES):
        bad = y[(y < 0) | (y >= MAX_CLASSES)]
        raise ValueError(f"{source}: labels must be in [0, {MAX_CLASSES}) (the classifier "
                         f"gets one output per class up to the largest label); got "
                         f"{bad.size} outside, e.g. {int(bad[0])}")


def load_data(path: str | os.PathLike | None = None, *, rng: np.random.Generator,
              test_fraction: float = 0.2,
              val_fraction: float = 0.1) -> DataSplits:
    """The embedded 8x8 digits (path None), split into train / validation / test by `rng`; or
    MNIST / Fashion-MNIST files at `path` (an IDX directory or an .npz), whose own test set is
    kept and whose training set gives the validation split.

    The test split is drawn first, so it depends on the seed and test_fraction only. Labels
    must lie in [0, MAX_CLASSES); each fraction must leave both sets of its split non-empty.
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
        _check_classes(y_tr, path)
        _check_classes(y_te, path)
    try:
        datasets.check_fraction(val_fraction, len(y_tr), "val_fraction")
    except ValueError as e:                      # the data's fault as much as the fraction's
        raise ValueError(f"{name}: {len(y_tr)} training images; {e}") from None
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


def random_shift(x: Array, rng: np.random.Generator, *, max_shift: int = 1) -> Array:
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
        shift = rng.integers(-m, m + 1, size=(n,))                 # (N,) drawn on the host
        idx = np.arange(x.shape[axis]) + m + shift[:, None]        # (N, S_axis)
        out = xp.take_along_axis(out, xp.asarray(idx.reshape(shape)), axis=axis)
    return out


def read_images(path: str | os.PathLike) -> np.ndarray:
    """The array stored at `path`: .npy, .npz (key "x", or its only array) or an IDX file
    (gzipped or not).

    Every file is read header first, its declared shape checked against the bytes that hold it
    before anything is allocated. FileNotFoundError for a missing path; ValueError naming the
    file for a directory, a file that is not what its name says (not an .npy, a pickle), a
    damaged (bad CRC) or truncated one.
    """
    path = _npyfile.existing_file(path, "an image file")
    if path.suffix == ".npy":
        return _npyfile.read_npy(path)
    if path.suffix == ".npz":
        return _npz_images(path)
    return datasets.load_idx(path)


def _npz_images(path: Path) -> np.ndarray:
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, *_npyfile.READ_ERRORS) as e:
        raise ValueError(f"{path}: not an .npz archive, or a truncated one ({e})") from None
    with zf:
        members = {i.filename.removesuffix(".npy"): i for i in zf.infolist()}
        if "x" not in members and len(members) != 1:
            raise ValueError(f"{path}: an .npz of images needs a key 'x' or a single array; "
                             f"found keys {sorted(members)}")
        key = "x" if "x" in members else next(iter(members))
        return _npyfile.read_member(zf, members[key], f"{path}: {key}")


def prepare_images(a: np.ndarray, input_shape: Sequence[int], pixel_max: float) -> np.ndarray:
    """Images as the model wants them: float32 (N, *input_shape), N >= 1, every pixel finite.

    Accepts (N, *input_shape), one image (*input_shape), and both without the channel axis when
    it is 1; integer pixels are divided by `pixel_max` (16 for the digits, 255 for MNIST),
    float pixels are taken as already scaled. NaN or infinite pixels are a ValueError: a model
    has no meaningful answer for them.

    >>> prepare_images(np.full((2, 8, 8), 16, np.uint8), (8, 8, 1), 16.0).shape
    (2, 8, 8, 1)
    """
    shape = tuple(input_shape)
    if not isinstance(a, np.ndarray) or not (np.issubdtype(a.dtype, np.integer)
                                             or np.issubdtype(a.dtype, np.floating)):
        raise TypeError(f"images must be an integer or float array; got "
                        f"{getattr(a, 'dtype', type(a).__name__)}")
    forms = [shape, shape[:-1]] if shape[-1] == 1 else [shape]
    if a.shape[1:] in forms:
        x = a.reshape(a.shape[0], *shape)                          # (N, *input_shape)
    elif a.shape in forms:
        x = a.reshape(1, *shape)                                   # (1, *input_shape)
    else:
        accepted = " or ".join(f"(N, {', '.join(map(str, f))})" for f in forms)
        raise ValueError(f"images must have shape {accepted} (the model's input), or be one "
                         f"such image; got {a.shape}")
    if len(x) == 0:
        raise ValueError(f"no images to predict: got shape {a.shape}")
    x = (x / pixel_max).astype(np.float32) if np.issubdtype(a.dtype, np.integer) else \
        x.astype(np.float32)                                       # (N, *input_shape)
    bad = ~np.isfinite(x).reshape(len(x), -1).all(axis=1)          # (N,)
    if bad.any():
        raise ValueError(f"images must be finite: {int(bad.sum())} of {len(x)} hold NaN or "
                         f"infinite pixels (the first is image {int(np.argmax(bad))})")
    return x


def out_of_range(x: np.ndarray, low: float, high: float) -> str | None:
    """A warning when the pixels of x lie far outside [low, high], the range of the training
    images (more than that range's width beyond it: raw 0..255 pixels into a model trained on
    0..1), else None.

    >>> print(out_of_range(np.array([0.0, 255.0]), 0.0, 1.0))
    pixel values span [0, 255], far outside the training images' [0, 1]
    """
    lo, hi, width = float(x.min()), float(x.max()), high - low
    if lo < low - width or hi > high + width:
        return f"pixel values span [{lo:g}, {hi:g}], far outside the training images' " \
               f"[{low:g}, {high:g}]"
    return None
