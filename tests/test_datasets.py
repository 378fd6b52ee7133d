"""Tests for npconv.datasets: packaged digits, IDX / MNIST readers and the stratified split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

from npconv.datasets import load_digits, load_idx, load_mnist, train_test_split

# element dtype -> IDX type code
_IDX_CODES = {"u1": 0x08, "i1": 0x09, "i2": 0x0B, "i4": 0x0C, "f4": 0x0D, "f8": 0x0E}


def write_idx(path: Path, array: np.ndarray, *, compress: bool = False) -> Path:
    """Write `array` as an IDX file by hand (magic, big-endian sizes, big-endian data)."""
    code = _IDX_CODES[array.dtype.str[1:]]
    header = bytes([0, 0, code, array.ndim]) + np.asarray(array.shape, dtype=">u4").tobytes()
    body = array.astype(array.dtype.newbyteorder(">")).tobytes()
    data = header + body
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


def mnist_like(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Random uint8 images (n, 28, 28) and labels (n,), with 0 and 255 present."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)  # (n, 28, 28)
    images[0, 0, 0], images[0, 0, 1] = 0, 255
    return images, rng.integers(0, 10, size=n, dtype=np.uint8)  # (n,)


# ---------------------------------------------------------------------------- digits


def test_digits_shape_dtype_range():
    x, y = load_digits()
    assert x.shape == (1797, 8, 8, 1) and x.dtype == np.float32
    assert y.shape == (1797,) and y.dtype == np.int64
    assert x.min() == 0.0 and x.max() == 1.0
    assert x.flags.writeable


def test_digits_label_counts_balanced():
    _, y = load_digits()
    counts = np.bincount(y, minlength=11)  # (11,)
    assert counts[10] == 0 and counts.sum() == 1797
    assert np.all((counts[:10] >= 170) & (counts[:10] <= 190)), counts
    np.testing.assert_array_equal(counts[:10], [178, 182, 177, 183, 181, 182, 181, 179, 174, 180])


def test_digits_unnormalized_is_integer_0_to_16():
    x_raw, y_raw = load_digits(normalize=False)
    x, y = load_digits()
    assert x_raw.dtype == np.float32 and x_raw.max() == 16.0
    np.testing.assert_array_equal(x_raw, np.round(x_raw))
    np.testing.assert_array_equal(x_raw / 16, x)
    np.testing.assert_array_equal(y_raw, y)


def test_digits_first_image_matches_source():
    # First row of sklearn's digits.csv.gz: a zero.
    x, y = load_digits(normalize=False)
    first_row = [0, 0, 5, 13, 9, 1, 0, 0, 0, 0, 13, 15, 10, 15, 5, 0]
    np.testing.assert_array_equal(x[0, :2, :, 0].ravel(), first_row)
    assert y[0] == 0 and y[1] == 1


def test_digits_normalize_type_error():
    with pytest.raises(TypeError, match=r"`normalize` must be a bool; got str"):
        load_digits(normalize="yes")


# ---------------------------------------------------------------------------- IDX


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
@pytest.mark.parametrize(
    ("dtype", "shape"),
    [("u1", (4, 28, 28)), ("u1", (7,)), ("i1", (3, 2)), ("i2", (2, 3)), ("i4", (5,)),
     ("f4", (2, 2, 2)), ("f8", (3, 1))],
)  # fmt: skip
def test_idx_round_trip(tmp_path, dtype, shape, compress):
    rng = np.random.default_rng(0)
    array = (rng.standard_normal(shape) * 100).astype(dtype)  # shape
    suffix = ".gz" if compress else ""
    path = write_idx(tmp_path / f"data-idx{len(shape)}{suffix}", array, compress=compress)
    out = load_idx(path)
    assert out.shape == array.shape
    assert out.dtype == np.dtype(dtype) and out.dtype.isnative
    assert out.flags.writeable
    np.testing.assert_array_equal(out, array)


def test_idx_known_bytes(tmp_path):
    path = tmp_path / "labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 0x08, 1, 0, 0, 0, 3, 7, 2, 1]))
    np.testing.assert_array_equal(load_idx(path), [7, 2, 1])
    path.write_bytes(bytes([0, 0, 0x0B, 1, 0, 0, 0, 2, 0x01, 0x02, 0xFF, 0xFE]))  # big-endian i2
    np.testing.assert_array_equal(load_idx(path), [0x0102, -2])


def test_idx_gzip_detected_by_content_not_name(tmp_path):
    array = np.arange(12, dtype=np.uint8).reshape(3, 4)  # (3, 4)
    path = write_idx(tmp_path / "no-suffix", array, compress=True)
    np.testing.assert_array_equal(load_idx(path), array)


def test_idx_corrupt_magic_raises(tmp_path):
    path = write_idx(tmp_path / "bad-idx1-ubyte", np.arange(5, dtype=np.uint8))
    data = bytearray(path.read_bytes())
    data[0] = 0x08  # first two magic bytes must be zero
    path.write_bytes(bytes(data))
    with pytest.raises(ValueError, match=r"bad-idx1-ubyte: not an IDX file: bad magic number.*"
                                         r"expected bytes 00 00.*found 08 00 08 01"):  # fmt: skip
        load_idx(path)


def test_idx_unknown_type_code_raises(tmp_path):
    path = tmp_path / "f"
    path.write_bytes(bytes([0, 0, 0x07, 1, 0, 0, 0, 1, 9]))
    with pytest.raises(ValueError, match=r"bad magic number.*found 00 00 07 01"):
        load_idx(path)


def test_idx_size_mismatch_raises(tmp_path):
    path = write_idx(tmp_path / "short", np.zeros((2, 3), dtype=np.uint8))
    path.write_bytes(path.read_bytes()[:-1])
    with pytest.raises(ValueError, match=r"shape \(2, 3\).*expected 18 bytes; found 17 bytes"):
        load_idx(path)


def test_idx_truncated_header_raises(tmp_path):
    path = tmp_path / "hdr"
    path.write_bytes(bytes([0, 0, 0x08, 3, 0, 0, 0, 2]))
    with pytest.raises(ValueError, match=r"truncated IDX header; expected 16 bytes"):
        load_idx(path)


def test_idx_ndim_mismatch_raises(tmp_path):
    path = write_idx(tmp_path / "two-d", np.zeros((2, 3), dtype=np.uint8))
    with pytest.raises(ValueError, match=r"expected an IDX file with 3 dimension\(s\); found 2"):
        load_idx(path, ndim=3)


def test_idx_bad_gzip_raises(tmp_path):
    path = tmp_path / "broken.gz"
    path.write_bytes(b"\x1f\x8b" + b"\x00" * 20)
    with pytest.raises(ValueError, match=r"broken.gz: starts like a gzip file"):
        load_idx(path)


def test_idx_missing_file_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"IDX file not found"):
        load_idx(tmp_path / "nope")


# ---------------------------------------------------------------------------- MNIST


@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_mnist_idx_directory(tmp_path, compress):
    suffix = ".gz" if compress else ""
    splits = {"train": ("train", mnist_like(6, 1)), "test": ("t10k", mnist_like(4, 2))}
    for prefix, (images, labels) in splits.values():
        write_idx(tmp_path / f"{prefix}-images-idx3-ubyte{suffix}", images, compress=compress)
        write_idx(tmp_path / f"{prefix}-labels-idx1-ubyte{suffix}", labels, compress=compress)
    for kind, (_, (images, labels)) in splits.items():
        x, y = load_mnist(tmp_path, kind=kind)
        assert x.shape == (len(images), 28, 28, 1) and x.dtype == np.float32
        assert y.dtype == np.int64
        assert x.min() == 0.0 and x.max() == 1.0
        np.testing.assert_allclose(x[..., 0], images / 255.0, rtol=1e-6)
        np.testing.assert_array_equal(y, labels)


def test_mnist_npz_layout(tmp_path):
    (x_train, y_train), (x_test, y_test) = mnist_like(5, 3), mnist_like(3, 4)
    path = tmp_path / "mnist.npz"
    np.savez(path, x_train=x_train, y_train=y_train, x_test=x_test, y_test=y_test)
    x, y = load_mnist(path)
    assert x.shape == (5, 28, 28, 1) and x.dtype == np.float32 and y.dtype == np.int64
    np.testing.assert_allclose(x[..., 0], x_train / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(y, y_train)
    x, y = load_mnist(str(path), kind="test")
    assert x.shape == (3, 28, 28, 1)
    np.testing.assert_array_equal(y, y_test)


def test_mnist_npz_missing_keys_raises(tmp_path):
    path = tmp_path / "mnist.npz"
    images, labels = mnist_like(2, 0)
    np.savez(path, x_train=images, y_train=labels)
    with pytest.raises(
        ValueError, match=r"Keras mnist.npz layout\); missing \['x_test', 'y_test'\]"
    ):
        load_mnist(path, kind="test")


def test_mnist_not_npz_raises(tmp_path):
    path = tmp_path / "mnist.npz"
    path.write_bytes(b"not a zip archive")
    with pytest.raises(ValueError, match=r"not an .npz"):
        load_mnist(path)


def test_mnist_missing_idx_file_raises(tmp_path):
    images, _ = mnist_like(2, 0)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    with pytest.raises(
        FileNotFoundError, match=r"train-labels-idx1-ubyte or .*\.gz; found neither"
    ):
        load_mnist(tmp_path)


def test_mnist_missing_path_raises(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"neither a directory of IDX files nor an .npz"):
        load_mnist(tmp_path / "nowhere")


def test_mnist_wrong_image_shape_raises(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x_train=np.zeros((2, 8, 8), np.uint8), y_train=np.zeros(2, np.uint8))
    with pytest.raises(
        ValueError, match=r"images must have shape \(N, 28, 28\); found \(2, 8, 8\)"
    ):
        load_mnist(path)


def test_mnist_wrong_image_dtype_raises(tmp_path):
    path = tmp_path / "m.npz"
    np.savez(path, x_train=np.zeros((2, 28, 28), np.float32), y_train=np.zeros(2, np.uint8))
    with pytest.raises(ValueError, match=r"images must be uint8 .*found float32"):
        load_mnist(path)


def test_mnist_label_count_mismatch_raises(tmp_path):
    images, labels = mnist_like(3, 0)
    write_idx(tmp_path / "train-images-idx3-ubyte", images)
    write_idx(tmp_path / "train-labels-idx1-ubyte", labels[:2])
    with pytest.raises(ValueError, match=r"one label per image; found 3 images and 2 labels"):
        load_mnist(tmp_path)


def test_mnist_bad_kind_raises(tmp_path):
    with pytest.raises(ValueError, match=r"`kind` must be 'train' or 'test'; got 'valid'"):
        load_mnist(tmp_path, kind="valid")
    with pytest.raises(TypeError, match=r"`kind` must be a str.*got int"):
        load_mnist(tmp_path, kind=1)


# ---------------------------------------------------------------------------- split


def test_split_stratified_and_disjoint():
    _, y = load_digits()
    ids = np.arange(len(y))  # (N,) each sample's identity
    id_train, id_test, y_train, y_test = train_test_split(ids, y, rng=np.random.default_rng(0))
    assert len(id_test) == round(0.2 * len(y)) and len(id_train) + len(id_test) == len(y)
    assert np.intersect1d(id_train, id_test).size == 0
    np.testing.assert_array_equal(np.sort(np.concatenate([id_train, id_test])), ids)
    np.testing.assert_array_equal(y_train, y[id_train])
    np.testing.assert_array_equal(y_test, y[id_test])
    assert np.any(np.diff(y_train) < 0), "training set should be shuffled, not grouped by class"
    exact = 0.2 * np.bincount(y)  # (10,)
    assert np.all(np.abs(np.bincount(y_test, minlength=10) - exact) < 1), np.bincount(y_test)


def test_split_deterministic_for_a_seed():
    x, y = load_digits()
    first = train_test_split(x, y, test_fraction=0.3, rng=np.random.default_rng(42))
    again = train_test_split(x, y, test_fraction=0.3, rng=np.random.default_rng(42))
    other = train_test_split(x, y, test_fraction=0.3, rng=np.random.default_rng(43))
    for a, b in zip(first, again, strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[3], other[3])


def test_split_keeps_dtype_copies_and_inputs():
    x = np.arange(40, dtype=np.float32).reshape(20, 2)  # (20, 2)
    y = np.repeat(np.arange(4), 5)  # (20,)
    x0, y0 = x.copy(), y.copy()
    x_train, x_test, _, y_test = train_test_split(
        x, y, test_fraction=0.4, rng=np.random.default_rng(1)
    )
    assert x_train.dtype == np.float32 and x_train.shape == (12, 2) and x_test.shape == (8, 2)
    np.testing.assert_array_equal(np.bincount(y_test), [2, 2, 2, 2])
    assert not np.shares_memory(x_train, x) and x_train.flags.writeable
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


def test_split_uneven_classes_round_by_largest_remainder():
    y = np.array([0] * 7 + [1] * 3 + [2] * 5)  # (15,): exact test shares 1.4, 0.6, 1.0
    _, _, _, y_test = train_test_split(np.zeros(15), y, rng=np.random.default_rng(0))
    np.testing.assert_array_equal(np.bincount(y_test, minlength=3), [1, 1, 1])


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"rng": 0}, TypeError, "`rng` must be a numpy.random.Generator.*got int"),
        ({"rng": None}, TypeError, "`rng` must be a numpy.random.Generator.*got NoneType"),
        ({"test_fraction": 1.0}, ValueError, "strictly between 0 and 1; got 1.0"),
        ({"test_fraction": 0}, ValueError, "strictly between 0 and 1; got 0"),
        ({"test_fraction": "0.2"}, TypeError, "`test_fraction` must be a float; got str"),
        ({"test_fraction": 0.01}, ValueError, "leave both sets non-empty.*N=10"),
        ({"y": np.zeros(9)}, ValueError, r"same N; got x.shape=\(10, 2\), y.shape=\(9,\)"),
        ({"y": [0] * 10}, TypeError, "`y` must be a numpy.ndarray; got list"),
    ],
)
def test_split_errors(kwargs, error, match):
    args = {"x": np.zeros((10, 2)), "y": np.repeat([0, 1], 5), "rng": np.random.default_rng(0)}
    args.update(kwargs)
    x, y = args.pop("x"), args.pop("y")
    with pytest.raises(error, match=match):
        train_test_split(x, y, **args)
