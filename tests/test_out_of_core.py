"""Inference over files larger than memory: `npconv.distributed.predict_to_disk` equals the
in-memory predictions, chunk size aside, and so does examples/out_of_core_inference.py.

NumPy only: nothing here needs dask.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from npconv import nn, training
from npconv.distributed import predict_to_disk

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def model():
    rng = np.random.default_rng(0)
    return nn.Sequential(nn.Conv(1, 4, (3, 3), padding="same", rng=rng), nn.BatchNorm(4),
                         nn.ReLU(), nn.MaxPool(2), nn.Flatten(), nn.Linear(64, 10, rng=rng))


@pytest.fixture
def images(tmp_path):
    x = np.random.default_rng(1).random((23, 8, 8, 1), dtype=np.float32)   # (N, 8, 8, 1)
    np.save(tmp_path / "x.npy", x)
    return x, tmp_path / "x.npy"


@pytest.mark.parametrize("chunk_size", [1, 5, 23, 100])
def test_classes_equal_in_memory_predictions(model, images, tmp_path, chunk_size):
    x, path = images
    dst = predict_to_disk(model, path, tmp_path / "p.npy", chunk_size=chunk_size, batch_size=4)
    want = training.predict_logits(model, x).argmax(axis=1)      # (N,)
    got = np.load(dst)
    assert got.dtype == np.int64 and np.array_equal(got, want)


def test_proba_from_a_memmap_equals_predict_proba(model, images, tmp_path):
    x, path = images
    src = np.load(path, mmap_mode="r")                           # an np.memmap
    dst = predict_to_disk(model, src, tmp_path / "p.npy", chunk_size=7, output="proba")
    np.testing.assert_allclose(np.load(dst), training.predict_proba(model, x), rtol=1e-6)


def test_integer_pixels_without_channel_axis_are_scaled(model, tmp_path):
    raw = np.random.default_rng(2).integers(0, 17, (9, 8, 8)).astype(np.uint8)   # (N, 8, 8)
    dst = predict_to_disk(model, raw, tmp_path / "p.npy", chunk_size=4, input_shape=(8, 8, 1),
                          pixel_max=16.0)
    x = (raw / 16.0).astype(np.float32)[..., None]               # (N, 8, 8, 1)
    assert np.array_equal(np.load(dst), training.predict_logits(model, x).argmax(axis=1))


def test_progress_callback_and_no_partial_file_on_error(model, images, tmp_path):
    _, path = images
    seen = []
    predict_to_disk(model, path, tmp_path / "p.npy", chunk_size=10, on_chunk=lambda *a:
                    seen.append(a))
    assert seen == [(10, 23), (20, 23), (23, 23)]

    def stop(done, total):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        predict_to_disk(model, path, tmp_path / "q.npy", chunk_size=10, on_chunk=stop)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.npy", "x.npy"]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(chunk_size=0), ValueError, r"`chunk_size` must be an int >= 1; got 0"),
    (dict(batch_size=2.5), ValueError, r"`batch_size` must be an int >= 1; got 2.5"),
    (dict(output="logits"), ValueError, r"`output` must be one of \('classes', 'proba'\)"),
])
def test_bad_arguments(model, images, tmp_path, kwargs, error, match):
    with pytest.raises(error, match=match):
        predict_to_disk(model, images[1], tmp_path / "p.npy", **kwargs)
    assert not (tmp_path / "p.npy").exists()


def test_bad_source_and_destination(model, images, tmp_path):
    with pytest.raises(FileNotFoundError, match="`src` file not found"):
        predict_to_disk(model, tmp_path / "missing.npy", tmp_path / "p.npy")
    with pytest.raises(TypeError, match=r"`src` must be an \.npy path, a numpy\.memmap or "
                                        r"an ndarray; got list"):
        predict_to_disk(model, [[0.0]], tmp_path / "p.npy")
    with pytest.raises(ValueError, match=r"`src` must hold N >= 1 images \(N, ...\); got shape "
                                         r"\(0, 8, 8, 1\)"):
        predict_to_disk(model, np.zeros((0, 8, 8, 1), np.float32), tmp_path / "p.npy")
    with pytest.raises(FileNotFoundError, match="`dst` directory does not exist"):
        predict_to_disk(model, images[1], tmp_path / "no" / "p.npy")
    np.savez(tmp_path / "x.npz", x=images[0])
    with pytest.raises(ValueError, match=r"`src` .*x\.npz: must be an \.npy file of images: "
                                         r"not an \.npy array"):
        predict_to_disk(model, tmp_path / "x.npz", tmp_path / "p.npy")
    with open(tmp_path / "huge.npy", "wb") as f:                 # a header and no data
        np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                                 "shape": (2**40, 8, 8, 1)})
    with pytest.raises(ValueError, match=r"huge\.npy: .*declares shape \(1099511627776, 8, 8, "
                                         r"1\)"):
        predict_to_disk(model, tmp_path / "huge.npy", tmp_path / "p.npy")


def _example():
    spec = importlib.util.spec_from_file_location(
        "out_of_core_inference", ROOT / "examples" / "out_of_core_inference.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_example_predictions_equal_in_memory_predict(model, tmp_path, capsys):
    nn.save(model, tmp_path / "model.npz")
    assert _example().main(["--size-mb", "0.1", "--workspace-mb", "0.05", "--dir",
                            str(tmp_path), "--model", str(tmp_path / "model.npz"),
                            "--no-progress"]) == 0
    out = capsys.readouterr().out
    x = np.load(tmp_path / "images.npy")                         # (N, 8, 8, 1)
    assert x.shape == (390, 8, 8, 1) and "chunks of 82 images" in out
    want = training.predict_logits(model, x).argmax(axis=1)      # (N,)
    assert np.array_equal(np.load(tmp_path / "predictions.npy"), want)
    assert np.load(tmp_path / "labels.npy").shape == (390,)
    assert "accuracy on the generated digits: " in out.splitlines()[-1]
