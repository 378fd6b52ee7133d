"""NumPy-only loaders for the small image-classification data sets used by npconv's examples.

``load_digits`` reads the 8x8 UCI handwritten digits that ship inside the package, so examples and
tests run offline. ``load_idx`` and ``load_mnist`` read MNIST-format data (MNIST, Fashion-MNIST)
that the user has already downloaded, either as the original IDX files or as Keras' ``mnist.npz``;
npconv never downloads anything. ``train_test_split`` makes a stratified split that depends only on
the generator it is given. Every image loader returns channels_last float32 arrays and int64
labels, so the results go straight into npconv's ops and layers.
"""

from __future__ import annotations

import gzip
import math
import os
import zipfile
import zlib
from importlib import resources
from numbers import Real
from pathlib import Path
from typing import Any

import numpy as np

from npconv import _npyfile

__all__ = ["check_fraction", "load_digits", "load_idx", "load_mnist", "train_test_split"]

# IDX type codes (third magic byte) -> element dtype; multi-byte types are big-endian.
_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MNIST_SIDE = 28
_MNIST_PREFIXES = {"train": "train", "test": "t10k"}


def load_digits(*, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Load the 1,797 8x8 handwritten digits packaged with npconv.

    Parameters
    ----------
    normalize : bool, default True
        If True, divide the pixel values (integers 0..16) by 16 so that they lie in [0, 1].

    Returns
    -------
    x : ndarray of float32, shape (1797, 8, 8, 1)
        The images, channels_last.
    y : ndarray of int64, shape (1797,)
        The digit shown in each image, 0..9 (about 180 images per class).

    Notes
    -----
    The data is the UCI "Optical Recognition of Handwritten Digits" set (Alpaydin & Kaynak,
    CC BY 4.0, doi:10.24432/C50P49), as distributed by scikit-learn; see
    ``npconv/data/DIGITS_LICENSE.txt``. It is read with ``allow_pickle=False``.

    Examples
    --------
    >>> from npconv.datasets import load_digits
    >>> x, y = load_digits()
    >>> x.shape, x.dtype, y.shape, y.dtype
    ((1797, 8, 8, 1), dtype('float32'), (1797,), dtype('int64'))
    """
    if not isinstance(normalize, (bool, np.bool_)):
        raise TypeError(f"`normalize` must be a bool; got {type(normalize).__name__}")
    source = resources.files("npconv.data").joinpath("digits.npz")
    with source.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        images = npz["images"]  # (1797, 8, 8) uint8
        labels = npz["labels"]  # (1797,) uint8
    x = images[..., np.newaxis].astype(np.float32)  # (1797, 8, 8, 1)
    if normalize:
        x /= 16.0
    return x, labels.astype(np.int64)  # (1797,)


def load_idx(path: str | os.PathLike[str], *, ndim: int | None = None) -> np.ndarray:
    """Read an IDX file (the MNIST / Fashion-MNIST format), optionally gzip-compressed.

    Parameters
    ----------
    path : str or os.PathLike
        The file. Gzip compression is detected from the file's first bytes, not its name.
    ndim : int, optional
        If given, the number of dimensions the file must declare (3 for images, 1 for labels).

    Returns
    -------
    ndarray
        A new, writeable array with the shape and element type declared in the header, in
        native byte order.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist.
    ValueError
        If `path` is a directory, the magic number is not ``00 00 <type code> <ndim>``, the
        type code is unknown, the number of dimensions is not `ndim`, or the data does not
        match the header. The header is read first and the declared size checked against the
        file's (for a gzip file: against the most its compressed bytes can expand to) before
        the data is read, so a small file declaring a huge shape is refused at once.

    Notes
    -----
    An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
    dimensions), one big-endian uint32 per dimension, then the elements in C order, big-endian.
    Type codes: 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "labels-idx1-ubyte"
    >>> _ = f.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    >>> load_idx(f)
    array([7, 2, 1], dtype=uint8)
    """
    if ndim is not None and (isinstance(ndim, bool) or not isinstance(ndim, int)):
        raise TypeError(f"`ndim` must be an int or None; got {type(ndim).__name__}")
    path = _npyfile.existing_file(path, "an IDX file")
    with open(path, "rb") as raw:
        size, compressed = os.fstat(raw.fileno()).st_size, raw.read(2) == _GZIP_MAGIC
        raw.seek(0)
        f = gzip.GzipFile(fileobj=raw) if compressed else raw
        try:
            dtype, shape, offset = _read_idx_header(f, path)
            if ndim is not None and len(shape) != ndim:
                raise ValueError(f"{path}: expected an IDX file with {ndim} dimension(s); "
                                 f"found {len(shape)} dimension(s), shape {shape}")
            data = _read_idx_data(f, dtype, shape, offset, size, compressed, path)
        except (OSError, EOFError, zlib.error) as err:
            if not compressed:
                raise
            raise ValueError(f"{path}: starts like a gzip file but cannot be decompressed "
                             f"({err})") from err
    array = np.frombuffer(data, dtype=dtype).reshape(shape)                 # shape
    return array.astype(dtype.newbyteorder("="))  # shape; a writeable native-order copy


def _read_idx_header(f, path: Path) -> tuple[np.dtype, tuple[int, ...], int]:
    """Read and validate the IDX header; return the element dtype, the shape and its length."""
    magic = f.read(4)
    codes = ", ".join(f"{code:#04x}" for code in _IDX_DTYPES)
    if len(magic) < 4 or magic[:2] != b"\x00\x00" or magic[2] not in _IDX_DTYPES or magic[3] == 0:
        raise ValueError(
            f"{path}: not an IDX file: bad magic number; expected bytes 00 00 <type code, one of "
            f"{codes}> <ndim >= 1>, found {magic.hex(' ') or 'an empty file'}"
        )
    dims = f.read(4 * magic[3])
    offset = 4 + 4 * magic[3]
    if len(dims) < 4 * magic[3]:
        raise ValueError(
            f"{path}: truncated IDX header; expected {offset} bytes for {magic[3]} dimension "
            f"sizes, found {4 + len(dims)} bytes"
        )
    sizes = np.frombuffer(dims, dtype=">u4")  # (ndim,)
    return _IDX_DTYPES[magic[2]], tuple(int(n) for n in sizes), offset


def _read_idx_data(f, dtype: np.dtype, shape: tuple[int, ...], offset: int, size: int,
                   compressed: bool, path: Path) -> bytes:
    """The data the header declares, its size checked against the file before it is read: a
    plain file must hold exactly that, a gzip file no more than deflate can expand to."""
    need = math.prod(shape) * dtype.itemsize
    mismatch = (f"{path}: header declares shape {shape} of {dtype.name}, so expected "
                f"{offset + need} bytes")
    if not compressed and size != offset + need:
        raise ValueError(f"{mismatch}; found {size} bytes")
    if compressed and need > _npyfile.MAX_DEFLATE_RATIO * size:
        raise ValueError(f"{mismatch}; a gzip file of {size} bytes cannot hold that many")
    data = f.read(need)
    if len(data) < need:
        raise ValueError(f"{mismatch}; found {offset + len(data)} bytes")
    if compressed and f.read(1):
        raise ValueError(f"{mismatch}; found more")
    return data


def load_mnist(
    path: str | os.PathLike[str], *, kind: str = "train"
) -> tuple[np.ndarray, np.ndarray]:
    """Load MNIST, or Fashion-MNIST, from files the user has downloaded.

    Parameters
    ----------
    path : str or os.PathLike
        Either a directory holding the standard IDX files, each optionally gzipped
        (``train-images-idx3-ubyte[.gz]``, ``train-labels-idx1-ubyte[.gz]``,
        ``t10k-images-idx3-ubyte[.gz]``, ``t10k-labels-idx1-ubyte[.gz]``), or an ``.npz``
        archive with the keys ``x_train, y_train, x_test, y_test`` (the layout of Keras'
        ``mnist.npz``). Fashion-MNIST is distributed with exactly the same file names and
        format, so point `path` at a Fashion-MNIST directory to load it instead.
    kind : {"train", "test"}, default "train"
        Which split to read (``train-*`` / ``x_train`` or ``t10k-*`` / ``x_test``).

    Returns
    -------
    x : ndarray of float32, shape (N, 28, 28, 1)
        The images, channels_last, scaled from 0..255 to [0, 1].
    y : ndarray of int64, shape (N,)
        The labels.

    Raises
    ------
    FileNotFoundError
        If `path` does not exist, or the directory lacks one of the two files for `kind`.
    ValueError
        If a file is not valid IDX / npz, keys are missing, images are not uint8 of shape
        (N, 28, 28), or the image and label counts differ.

    Examples
    --------
    >>> x, y = load_mnist("~/data/fashion-mnist", kind="test")  # doctest: +SKIP
    >>> x.shape, y.shape  # doctest: +SKIP
    ((10000, 28, 28, 1), (10000,))
    """
    if not isinstance(kind, str):
        raise TypeError(f"`kind` must be a str, 'train' or 'test'; got {type(kind).__name__}")
    if kind not in _MNIST_PREFIXES:
        raise ValueError(f"`kind` must be 'train' or 'test'; got {kind!r}")
    path = Path(path).expanduser()
    if path.is_dir():
        images, labels = _mnist_from_idx_dir(path, _MNIST_PREFIXES[kind])
    elif path.is_file():
        images, labels = _mnist_from_npz(path, kind)
    else:
        raise FileNotFoundError(
            f"MNIST data not found: {path} is neither a directory of IDX files nor an .npz file"
        )
    _check_mnist_arrays(images, labels, path)
    x = images[..., np.newaxis].astype(np.float32)  # (N, 28, 28, 1)
    x /= 255.0
    return x, labels.astype(np.int64)  # (N,)


def _mnist_from_idx_dir(directory: Path, prefix: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``<prefix>-images-idx3-ubyte[.gz]`` and ``<prefix>-labels-idx1-ubyte[.gz]``."""
    images = load_idx(_find_idx(directory, f"{prefix}-images-idx3-ubyte"), ndim=3)  # (N, 28, 28)
    labels = load_idx(_find_idx(directory, f"{prefix}-labels-idx1-ubyte"), ndim=1)  # (N,)
    return images, labels


def _find_idx(directory: Path, stem: str) -> Path:
    """Return ``directory/stem`` or ``directory/stem.gz``, whichever exists (plain first)."""
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    raise FileNotFoundError(
        f"{directory}: expected the MNIST/Fashion-MNIST IDX file {stem} or {stem}.gz; found neither"
    )


def _mnist_from_npz(path: Path, kind: str) -> tuple[np.ndarray, np.ndarray]:
    """Read ``x_<kind>`` and ``y_<kind>`` from a Keras-style ``mnist.npz`` (each member's
    header checked against its size before it is read)."""
    if not zipfile.is_zipfile(path):
        raise ValueError(
            f"{path}: expected a directory of IDX files or an .npz archive; "
            f"found a file that is not an .npz (zip) archive"
        )
    keys = (f"x_{kind}", f"y_{kind}")
    with zipfile.ZipFile(path) as zf:
        members = {info.filename.removesuffix(".npy"): info for info in zf.infolist()}
        missing = [key for key in keys if key not in members]
        if missing:
            raise ValueError(
                f"{path}: expected keys x_train, y_train, x_test, y_test (Keras mnist.npz "
                f"layout); missing {missing}, found {sorted(members)}"
            )
        x, y = (_npyfile.read_member(zf, members[k], f"{path}: {k}") for k in keys)
        return x, y  # (N, 28, 28), (N,)


def _check_mnist_arrays(images: np.ndarray, labels: np.ndarray, source: Path) -> None:
    """Raise ValueError unless images are uint8 (N, 28, 28) and labels integer (N,)."""
    side = _MNIST_SIDE
    if images.ndim != 3 or images.shape[1:] != (side, side):
        raise ValueError(
            f"{source}: images must have shape (N, {side}, {side}); found {images.shape}"
        )
    if images.dtype != np.uint8:
        raise ValueError(f"{source}: images must be uint8 (pixels 0..255); found {images.dtype}")
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(
            f"{source}: labels must be a 1-d integer array; found shape {labels.shape}, "
            f"dtype {labels.dtype}"
        )
    if labels.shape[0] != images.shape[0]:
        raise ValueError(
            f"{source}: expected one label per image; found {images.shape[0]} images and "
            f"{labels.shape[0]} labels"
        )


def train_test_split(
    x: np.ndarray,
    y: np.ndarray,
    *,
    test_fraction: float = 0.2,
    rng: np.random.Generator,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split samples into a training and a test set, stratified by label.

    Parameters
    ----------
    x : ndarray, shape (N, ...)
        Samples along the first axis.
    y : ndarray, shape (N,)
        Labels; each class is split in the proportion `test_fraction`.
    test_fraction : float, default 0.2
        The share of samples that go to the test set, strictly between 0 and 1.
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same split.

    Returns
    -------
    x_train, x_test : ndarray
        New arrays (not views) of shape (N_train, ...) and (N_test, ...), dtype kept.
    y_train, y_test : ndarray
        The matching labels, shapes (N_train,) and (N_test,).

    Notes
    -----
    The test set holds ``round(N * test_fraction)`` samples. Each class gets the floor of its
    exact share, and the samples still missing go to the classes with the largest remainders
    (largest-remainder rounding), so every class's test share is within one sample of exact.
    Both sets are shuffled. The generator advances, so calling again with it gives a new split.

    Examples
    --------
    >>> import numpy as np
    >>> x, y = np.arange(20).reshape(10, 2), np.array([0] * 5 + [1] * 5)
    >>> x_tr, x_te, y_tr, y_te = train_test_split(x, y, rng=np.random.default_rng(0))
    >>> np.bincount(y_te)
    array([1, 1])
    """
    _check_split_args(x, y, test_fraction, rng)
    test_mask = _stratified_test_mask(y, test_fraction, rng)  # (N,)
    train_idx = rng.permutation(np.flatnonzero(~test_mask))  # (N_train,)
    test_idx = rng.permutation(np.flatnonzero(test_mask))  # (N_test,)
    return x[train_idx], x[test_idx], y[train_idx], y[test_idx]


def check_fraction(fraction: object, n: int, name: str = "test_fraction") -> None:
    """The rule of train_test_split's `test_fraction`, for a split of `n` samples: a float
    strictly between 0 and 1 that leaves both sets non-empty; `name` names it in the errors
    (`load_data` checks its `val_fraction` with it).

    >>> check_fraction(0.001, 100, "val_fraction")
    Traceback (most recent call last):
    ...
    ValueError: `val_fraction` must leave both sets non-empty; got val_fraction=0.001 ...
    """
    if isinstance(fraction, bool) or not isinstance(fraction, Real):
        raise TypeError(f"`{name}` must be a float; got {type(fraction).__name__}")
    if not 0.0 < float(fraction) < 1.0:
        raise ValueError(f"`{name}` must be strictly between 0 and 1; got {fraction}")
    n_test = round(n * float(fraction))
    if not 0 < n_test < n:
        raise ValueError(
            f"`{name}` must leave both sets non-empty; got {name}={fraction} with N={n} "
            f"samples, giving {n_test} in the second set"
        )


def _check_split_args(x: Any, y: Any, test_fraction: object, rng: object) -> None:
    """Validate train_test_split's arguments once, at the boundary."""
    for name, value in (("x", x), ("y", y)):
        if not isinstance(value, np.ndarray):
            raise TypeError(f"`{name}` must be a numpy.ndarray; got {type(value).__name__}")
    if x.ndim < 1 or y.ndim != 1 or x.shape[0] != y.shape[0]:
        raise ValueError(
            f"`x` must have shape (N, ...) and `y` shape (N,) with the same N; "
            f"got x.shape={x.shape}, y.shape={y.shape}"
        )
    check_fraction(test_fraction, y.shape[0])
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            f"`rng` must be a numpy.random.Generator (e.g. np.random.default_rng(0)); "
            f"got {type(rng).__name__}"
        )


def _stratified_test_mask(
    y: np.ndarray, test_fraction: float, rng: np.random.Generator
) -> np.ndarray:
    """Return a boolean mask (N,) choosing each class's test samples at random."""
    _, class_of, counts = np.unique(y, return_inverse=True, return_counts=True)  # (N,), (n_cls,)
    n_test = _test_counts(counts, test_fraction)  # (n_cls,)
    mask = np.zeros(y.shape[0], dtype=bool)  # (N,)
    for cls, k in enumerate(n_test):  # loop over classes, not samples
        members = np.flatnonzero(class_of == cls)  # (counts[cls],)
        mask[rng.choice(members, size=k, replace=False)] = True
    return mask


def _test_counts(counts: np.ndarray, test_fraction: float) -> np.ndarray:
    """Per-class test sizes summing to round(N * test_fraction), by largest remainder."""
    exact = counts * test_fraction  # (n_cls,)
    n_test = np.floor(exact).astype(np.int64)  # (n_cls,)
    missing = round(int(counts.sum()) * test_fraction) - int(n_test.sum())
    order = np.argsort(n_test - exact, kind="stable")  # (n_cls,) largest remainder first
    n_test[order[:missing]] += 1
    return n_test
