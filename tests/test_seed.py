"""The seed question's example and the cases where the seed's answer breaks.

../shared/seed/ holds the question (four nested loops for a conv layer's backward pass) and an
answer whose vectorized fix still fails for padding 0, non-square kernels and inputs, and
strides that do not divide the input evenly. npconv must equal the loops in all of them.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import npconv
from npconv import reference

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load_example(name):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def question_loops(x, w, dz, pad, stride):
    """The question's loops as written: dZ may cover only the first H_dim x W_dim outputs."""
    fh, fw = w.shape[:2]
    A_prev = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
    dA_prev, dW = np.zeros(A_prev.shape), np.zeros(w.shape)
    (m, H_dim, W_dim, C) = dz.shape
    for i in range(m):
        for h in range(H_dim):
            for v in range(W_dim):
                for c in range(C):
                    vs, hs = stride * h, stride * v
                    dW[:, :, :, c] += A_prev[i, vs:vs + fh, hs:hs + fw, :] * dz[i, h, v, c]
                    dA_prev[i, vs:vs + fh, hs:hs + fw, :] += w[:, :, :, c] * dz[i, h, v, c]
    return dA_prev[:, pad:pad + x.shape[1], pad:pad + x.shape[2]], dW


def test_the_seed_questions_own_example():
    """x (10, 4, 4, 3), W all ones (2, 2, 3, 8), dZ all 2, padding 2, stride 1.

    With padding 2 the output is 7x7; the question's dZ is 4x4, i.e. its loops cover the first
    4x4 outputs only. That equals a full backward pass whose dy is 2 there and 0 elsewhere.
    """
    x = np.random.default_rng(0).standard_normal((10, 4, 4, 3))
    w = np.ones((2, 2, 3, 8))
    dz = np.ones((10, 4, 4, 8)) * 2
    dx_loops, dw_loops = question_loops(x, w, dz, pad=2, stride=1)
    dy = np.zeros((10, 7, 7, 8))
    dy[:, :4, :4] = dz
    dx, dw, db = npconv.conv_backward(dy, x, w, padding=2)
    np.testing.assert_allclose(dx, dx_loops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_loops, rtol=1e-12, atol=1e-12)
    assert np.array_equal(db, np.full(8, 2.0 * 10 * 16))


# (x shape, w shape, pad, stride): the answer's failure cases, then a few that it gets right
SEED_CASES = [
    ((10, 4, 4, 3), (2, 2, 3, 8), 2, 1),     # the question's geometry, full 7x7 dZ
    ((2, 5, 5, 3), (3, 3, 3, 4), 0, 1),      # padding 0: the answer crops [0:-0], empty dx
    ((2, 6, 5, 3), (3, 2, 3, 4), 1, 1),      # non-square kernel and input
    ((2, 5, 7, 2), (2, 3, 2, 3), 0, 1),      # non-square, padding 0
    ((2, 7, 7, 3), (2, 2, 3, 4), 0, 2),      # stride 2, 7 wide: the last row is never read
    ((2, 9, 6, 3), (3, 3, 3, 4), 1, 2),      # stride 2, odd and even sizes
    ((1, 11, 11, 3), (7, 7, 3, 5), 3, 2),    # the ResNet stem's geometry, batch 1
    ((2, 8, 9, 2), (3, 2, 2, 3), 2, 3),      # stride 3, remainder in both dimensions
]


@pytest.mark.parametrize("x_shape, w_shape, pad, stride", SEED_CASES)
def test_npconv_equals_the_seed_loops(x_shape, w_shape, pad, stride):
    loops = load_example("seed_loops")
    rng = np.random.default_rng(1)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y = npconv.conv(x, w, stride=stride, padding=pad)
    np.testing.assert_allclose(y, reference.conv(x, w, stride=stride, padding=pad), rtol=1e-12)
    dz = rng.standard_normal(y.shape)
    dx_loops, dw_loops = loops.seed_loops_backward(x, w, dz, pad, stride)
    dx, dw, _ = npconv.conv_backward(dz, x, w, stride=stride, padding=pad)
    np.testing.assert_allclose(dx, dx_loops, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dw, dw_loops, rtol=1e-12, atol=1e-12)


def _seed_answer_dx(x, w, dz, pad, stride):
    """dx from the seed answer's class, or None if it raises."""
    layer = load_example("seed_answer").SeedConv2D(w, np.zeros(w.shape[-1]), stride, pad)
    try:
        layer.forward(x)
        return layer.backward(dz)
    except (ValueError, IndexError):
        return None


@pytest.mark.parametrize("x_shape, w_shape, pad, stride, answer_ok", [
    ((2, 5, 5, 3), (3, 3, 3, 4), 1, 1, True),     # square, padded: the answer is right
    ((2, 5, 5, 3), (3, 3, 3, 4), 0, 1, False),    # padding 0: empty dx
    ((2, 6, 5, 3), (2, 3, 3, 4), 1, 1, False),    # non-square kernel
])
def test_seed_answer_breaks_where_npconv_does_not(x_shape, w_shape, pad, stride, answer_ok):
    rng = np.random.default_rng(2)
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    dz = rng.standard_normal(npconv.conv(x, w, stride=stride, padding=pad).shape)
    dx = npconv.conv_backward(dz, x, w, stride=stride, padding=pad).dx
    seed_dx = _seed_answer_dx(x, w, dz, pad, stride)
    seed_ok = seed_dx is not None and seed_dx.shape == dx.shape and np.allclose(seed_dx, dx)
    assert seed_ok == answer_ok
