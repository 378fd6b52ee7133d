"""Every algorithm on CuPy arrays equals its NumPy result: the same source on a GPU.

Skipped unless CuPy is installed and sees a GPU. On CuPy the chunks run serially on the calling
thread (no worker pool), so this also covers the single-worker path of every algorithm.
"""

import numpy as np
import pytest
from helpers import cupy_or_skip
from hypothesis import given, settings
from hypothesis import strategies as st
from test_algorithms import ALGORITHMS, geometry

import npconv
from npconv.spec import conv_spec

cp = cupy_or_skip()


def same(gpu, cpu, tol):
    assert isinstance(gpu, cp.ndarray), type(gpu)
    assert gpu.dtype == cpu.dtype and gpu.shape == cpu.shape
    err = np.abs(cp.asnumpy(gpu) - cpu).max(initial=0.0)
    assert err / max(np.abs(cpu).max(initial=0.0), 1.0) < tol


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@settings(max_examples=15)
@given(data=st.data())
def test_algorithm_on_gpu_equals_numpy(algorithm, data):
    x_shape, w_shape, kwargs = data.draw(geometry(algorithm))
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    dy = rng.standard_normal(conv_spec(x_shape, w_shape, **kwargs).y_shape())
    kw = dict(kwargs, algorithm=algorithm)
    same(npconv.conv(cp.asarray(x), cp.asarray(w), **kw), npconv.conv(x, w, **kw), 1e-10)
    gpu = npconv.conv_backward(cp.asarray(dy), cp.asarray(x), cp.asarray(w), **kw)
    for g, c in zip(gpu, npconv.conv_backward(dy, x, w, **kw)):
        same(g, c, 1e-10)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_algorithm_on_gpu_never_synchronizes(algorithm):
    cupyx = pytest.importorskip("cupyx")
    if not hasattr(cupyx, "allow_synchronize"):
        pytest.skip("this CuPy has no cupyx.allow_synchronize")
    k = (1, 1) if algorithm == "pointwise" else (3, 3)
    groups = 4 if algorithm == "depthwise" else 1
    rng = np.random.default_rng(1)
    x = cp.asarray(rng.standard_normal((2, 12, 12, 4)).astype(np.float32))
    w = cp.asarray(rng.standard_normal((*k, 4 // groups, 8)).astype(np.float32))
    kw = dict(padding=k[0] // 2, groups=groups, algorithm=algorithm)
    workspace = 32 * 2**10                                       # several chunks
    with npconv.config(workspace=workspace), cupyx.allow_synchronize(False):
        y = npconv.conv(x, w, **kw)
        npconv.conv_backward(y, x, w, **kw)
    cp.cuda.Device().synchronize()
