"""CuPy arrays in, CuPy arrays out, equal to the NumPy results: the same source on a GPU.

Skipped unless CuPy is installed and sees a GPU. CuPy refuses implicit conversion to NumPy
(`__array__` raises), so a kernel that slipped into host NumPy on device data fails here.
"""

from pathlib import Path

import numpy as np
import pytest
from helpers import cupy_or_skip
from hypothesis import given, settings
from strategies import conv_geometry, transpose_bias_size, transpose_geometry

import npconv
from npconv.spec import conv_spec

cp = cupy_or_skip()
SRC = Path(npconv.__file__).resolve().parent


def on_gpu(*arrays):
    return tuple(cp.asarray(a) for a in arrays)


def same(gpu, cpu, tol, floor=1e-30):
    """Equal to `tol` relative to max|cpu|, or to `floor` for arrays that are ~0 (a bias feeding
    batch norm has an exact-zero gradient, computed as rounding noise on both sides)."""
    assert isinstance(gpu, cp.ndarray), type(gpu)
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape
    host = cp.asnumpy(gpu)
    scale = max(np.abs(cpu).max(initial=0.0), floor)
    assert np.abs(host - cpu).max(initial=0.0) / scale < tol


@settings(max_examples=30)
@given(conv_geometry())
def test_conv_and_backward_on_gpu_equal_numpy(geom):
    rng = np.random.default_rng(0)
    x, w, b = geom.arrays(rng)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, **geom.kwargs).y_shape())
    same(npconv.conv(*on_gpu(x, w, b), **geom.kwargs), npconv.conv(x, w, b, **geom.kwargs),
         1e-10)
    gpu = npconv.conv_backward(*on_gpu(dy, x, w), **geom.kwargs)
    for g, c in zip(gpu, npconv.conv_backward(dy, x, w, **geom.kwargs)):
        same(g, c, 1e-10)


@settings(max_examples=20)
@given(transpose_geometry())
def test_conv_transpose_on_gpu_equals_numpy(geom):
    rng = np.random.default_rng(1)
    x, w, _ = geom.arrays(rng)
    b = rng.standard_normal(transpose_bias_size(geom))
    y = npconv.conv_transpose(x, w, b, **geom.kwargs)
    same(npconv.conv_transpose(*on_gpu(x, w, b), **geom.kwargs), y, 1e-10)
    dy = rng.standard_normal(y.shape)
    gpu = npconv.conv_transpose_backward(*on_gpu(dy, x, w), **geom.kwargs)
    for g, c in zip(gpu, npconv.conv_transpose_backward(dy, x, w, **geom.kwargs)):
        same(g, c, 1e-10)


@pytest.mark.parametrize("dtype, tol", [(np.float32, 1e-4), (np.float16, 2e-2)])
def test_low_precision_on_gpu(dtype, tol):
    rng = np.random.default_rng(2)
    x = rng.standard_normal((4, 16, 16, 8)).astype(dtype)
    w = rng.standard_normal((3, 3, 8, 16)).astype(dtype)
    kw = dict(stride=2, padding="same")
    same(npconv.conv(*on_gpu(x, w), **kw), npconv.conv(x, w, **kw), tol)


def test_mixing_numpy_and_cupy_is_a_clear_error():
    x, w = np.zeros((1, 4, 4, 1)), cp.zeros((3, 3, 1, 1))
    with pytest.raises(TypeError, match="NumPy arrays or all CuPy arrays; got a mix"):
        npconv.conv(x, w)


def test_ops_never_synchronize_with_the_host():
    """No device-to-host copy inside an op: CuPy raises on any synchronization here."""
    cupyx = pytest.importorskip("cupyx")
    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize")
    rng = np.random.default_rng(8)
    x, w, dy = on_gpu(rng.standard_normal((2, 9, 8, 4)), rng.standard_normal((3, 2, 2, 6)),
                      rng.standard_normal((2, 5, 5, 6)))
    kw = dict(stride=2, padding=1, groups=2, padding_mode="reflect")
    with cupyx.allow_synchronize(False):
        npconv.conv(x, w, **kw)
        npconv.conv_backward(dy, x, w, **kw)
        npconv.conv_transpose(dy, w, stride=2)                   # w is (kh, kw, F/G, C) here
        npconv.max_pool_backward(x[:, :8], x, (2, 1), stride=(1, 1))
        npconv.avg_pool(x, 2)
    cp.cuda.Device().synchronize()


def test_only_the_backend_copies_to_the_host():
    """_backend.to_numpy (used to save a model) is the one explicit device-to-host copy."""
    offenders = [p.name for p in SRC.rglob("*.py") if p.name != "_backend.py"
                 and "asnumpy(" in p.read_text()]
    assert offenders == []


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_pooling_on_gpu_equals_numpy(fmt):
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 9, 8, 3) if fmt == "channels_last" else (2, 3, 9, 8))
    kw = dict(stride=2, padding=1, data_format=fmt)
    y = npconv.max_pool(x, 3, dilation=1, ceil_mode=True, **kw)
    same(npconv.max_pool(cp.asarray(x), 3, ceil_mode=True, **kw), y, 1e-12)
    dy = rng.standard_normal(y.shape)
    same(npconv.max_pool_backward(*on_gpu(dy, x), 3, ceil_mode=True, **kw),
         npconv.max_pool_backward(dy, x, 3, ceil_mode=True, **kw), 1e-12)
    ya = npconv.avg_pool(x, 3, count_include_pad=False, **kw)
    same(npconv.avg_pool(cp.asarray(x), 3, count_include_pad=False, **kw), ya, 1e-12)
    dya = rng.standard_normal(ya.shape)
    same(npconv.avg_pool_backward(cp.asarray(dya), x.shape, 3, count_include_pad=False, **kw),
         npconv.avg_pool_backward(dya, x.shape, 3, count_include_pad=False, **kw), 1e-12)
    same(npconv.global_avg_pool(cp.asarray(x), data_format=fmt),
         npconv.global_avg_pool(x, data_format=fmt), 1e-12)


def _digits_model(dtype="float64"):
    from npconv import nn

    rng = np.random.default_rng(4)
    return nn.Sequential(
        nn.Conv(1, 8, (3, 3), padding="same", rng=rng, dtype=dtype), nn.BatchNorm(8, dtype=dtype),
        nn.ReLU(), nn.MaxPool(2), nn.ConvTranspose(8, 4, (2, 2), stride=2, rng=rng, dtype=dtype),
        nn.Tanh(), nn.AvgPool(2), nn.Flatten(), nn.Linear(64, 10, rng=rng, dtype=dtype))


def test_layers_on_gpu_give_numpys_gradients():
    from npconv import nn

    rng = np.random.default_rng(5)
    x, labels = rng.standard_normal((6, 8, 8, 1)), rng.integers(0, 10, 6)
    cpu, gpu = _digits_model(), _digits_model().to(cp)
    for model, xs, ys in ((cpu, x, labels), (gpu, cp.asarray(x), cp.asarray(labels))):
        logits = model.forward(xs, training=True)
        _, dlogits = nn.softmax_cross_entropy(logits, ys)
        model.backward(dlogits)
    for key, g in cpu.grads.items():
        same(gpu.grads[key], g, 1e-9, floor=1e-6)
        assert isinstance(gpu.params[key], cp.ndarray)


def test_training_on_gpu_follows_numpy(tmp_path):
    from npconv import nn, training

    rng = np.random.default_rng(6)
    x, labels = rng.random((64, 8, 8, 1)), rng.integers(0, 10, 64)
    runs = []
    for model, xs, ys in ((_digits_model(), x, labels),
                          (_digits_model().to(cp), cp.asarray(x), cp.asarray(labels))):
        history = training.fit(model, xs, ys, optimizer=nn.Adam(lr=1e-2), epochs=2,
                               batch_size=16, rng=np.random.default_rng(7),
                               augment=training.random_shift)
        runs.append((model, history))
    (cpu, h_cpu), (gpu, h_gpu) = runs
    np.testing.assert_allclose(h_gpu.loss, h_cpu.loss, rtol=1e-7)
    for key, p in cpu.params.items():
        same(gpu.params[key], p, 1e-6, floor=1e-3)      # ~0 params: 1e-9 absolute
    nn.save(gpu, tmp_path / "gpu.npz")                    # saving copies to the host
    loaded = nn.load(tmp_path / "gpu.npz")
    for key, p in loaded.params.items():
        np.testing.assert_array_equal(p, cp.asnumpy(gpu.params[key]))
