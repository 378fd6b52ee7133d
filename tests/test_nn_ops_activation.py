"""npconv.nn.activation: every activation and its backward against the plain NumPy definition,
central differences (float64), PyTorch's values and autograd (kinks and NaN included),
float16, the blocked and threaded paths, in-place `out=`, and every error."""

import numpy as np
import pytest
from helpers import central_difference, rel_err

import npconv
from npconv.nn import activation as A

KINKS = np.array([-7.0, -6.0, -3.0, -1.5, -1e-30, -0.0, 0.0, 1e-30, 1.5, 3.0, 6.0, 7.0,
                  np.inf, -np.inf, np.nan])


def sigmoid(x):
    return 1 / (1 + np.exp(-x))


# name: (forward, backward, what the backward takes, definition f, derivative f')
OPS = {
    "relu": (A.relu, A.relu_backward, "y", lambda x: np.maximum(x, 0),
             lambda x: (x > 0) * 1.0),
    "relu6": (A.relu6, A.relu6_backward, "y", lambda x: np.minimum(np.maximum(x, 0), 6),
              lambda x: ((x > 0) & (x < 6)) * 1.0),
    "leaky_relu": (A.leaky_relu, A.leaky_relu_backward, "y",
                   lambda x: np.where(x > 0, x, 0.01 * x), lambda x: np.where(x > 0, 1, 0.01)),
    "hardswish": (A.hardswish, A.hardswish_backward, "x",
                  lambda x: x * np.clip(x + 3, 0, 6) / 6,
                  lambda x: np.where(x <= -3, 0, np.where(x < 3, x / 3 + 0.5, 1))),
    "hardsigmoid": (A.hardsigmoid, A.hardsigmoid_backward, "x",
                    lambda x: np.clip(x + 3, 0, 6) / 6,
                    lambda x: ((x > -3) & (x < 3)) / 6),
    "silu": (A.silu, A.silu_backward, "x", lambda x: x * sigmoid(x),
             lambda x: sigmoid(x) * (1 + x * (1 - sigmoid(x)))),
    "sigmoid": (A.sigmoid, A.sigmoid_backward, "y", sigmoid,
                lambda x: sigmoid(x) * (1 - sigmoid(x))),
    "tanh": (A.tanh, A.tanh_backward, "y", np.tanh, lambda x: 1 - np.tanh(x) ** 2),
}
NAMES = sorted(OPS)


def run(name, x, dy, **kw):
    """(y, dx) of the op, its backward given what it keeps."""
    forward, backward, keeps, _, _ = OPS[name]
    y = forward(x, **kw)
    return y, backward(dy, y if keeps == "y" else x, **kw)


def torch_op(torch, name):
    f = torch.nn.functional
    return {"relu": torch.relu, "relu6": f.relu6, "leaky_relu": f.leaky_relu,
            "hardswish": f.hardswish, "hardsigmoid": f.hardsigmoid, "silu": f.silu,
            "sigmoid": torch.sigmoid, "tanh": torch.tanh}[name]


@pytest.mark.parametrize("name", NAMES)
def test_matches_definition_and_central_differences(name, rng):
    x = rng.uniform(-8, 8, (3, 4, 5))
    x[np.abs(np.abs(x) - 3) < 1e-3] += 0.01                      # away from the kinks
    x[np.abs(x) < 1e-3] += 0.01
    dy = rng.standard_normal(x.shape)
    _, _, _, f, fprime = OPS[name]
    y, dx = run(name, x, dy)
    assert rel_err(y, f(x)) < 1e-14
    assert rel_err(dx, dy * fprime(x)) < 1e-12
    small = x[:1, :2]                                            # (1, 2, 5)
    numeric = central_difference(lambda: float((run(name, small, dy[:1, :2])[0]
                                                * dy[:1, :2]).sum()), small)
    assert rel_err(run(name, small, dy[:1, :2])[1], numeric) < 1e-7


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_at_kinks_and_nan(torch, name, dtype):
    """PyTorch's vectorized kernels: the special values first, 33 more after them (its scalar
    loop, which treats NaN differently, only takes the last few elements)."""
    x = np.concatenate([KINKS, np.linspace(-8, 8, 33)]).astype(dtype)
    dy = np.linspace(0.5, 2, x.size).astype(dtype)
    y, dx = run(name, x, dy)
    xt = torch.from_numpy(x).requires_grad_()
    yt = torch_op(torch, name)(xt)
    yt.backward(torch.from_numpy(dy))
    tol = 1e-6 if dtype == np.float32 else 1e-14
    np.testing.assert_allclose(y, yt.detach().numpy(), rtol=tol, atol=tol)
    if name == "hardsigmoid":                                    # PyTorch: dy * float32(1/6)
        tol = max(tol, 1e-7)
    np.testing.assert_allclose(dx, xt.grad.numpy(), rtol=tol, atol=tol)
    assert y.dtype == dx.dtype == dtype


@pytest.mark.parametrize("name", ["relu", "relu6", "hardsigmoid"])
def test_a_dropped_gradient_is_zero_even_for_inf_dy(torch, name):
    """PyTorch selects (dy or 0), so an inf or NaN dy does not leak through a flat part."""
    x = np.array([-5.0, -5.0, 7.0, 7.0])
    dy = np.array([np.inf, np.nan, np.inf, np.nan])
    _, dx = run(name, x, dy)
    xt = torch.from_numpy(x).requires_grad_()
    torch_op(torch, name)(xt).backward(torch.from_numpy(dy))
    np.testing.assert_array_equal(dx, xt.grad.numpy())
    if name != "relu":
        assert (dx == 0).all()


def test_subgradients_at_the_kinks_without_torch():
    """The conventions, spelled out: PyTorch 2.13's values (its vectorized kernels)."""
    one = np.ones(1)

    def grad(backward, v):
        return float(backward(one, np.array([v]))[0])

    assert grad(A.relu_backward, 0.0) == 0
    assert grad(A.relu6_backward, 0.0) == grad(A.relu6_backward, 6.0) == 0
    assert grad(A.leaky_relu_backward, 0.0) == 0.01
    assert grad(A.hardswish_backward, -3.0) == 0 and grad(A.hardswish_backward, 3.0) == 1
    assert grad(A.hardsigmoid_backward, -3.0) == grad(A.hardsigmoid_backward, 3.0) == 0
    assert grad(A.relu_backward, np.nan) == 1
    assert grad(A.leaky_relu_backward, np.nan) == 0.01
    assert grad(A.relu6_backward, np.nan) == grad(A.hardsigmoid_backward, np.nan) == 0
    assert np.isnan(grad(A.hardswish_backward, np.nan))
    assert grad(A.hardswish_backward, np.inf) == 1 and grad(A.hardswish_backward, -np.inf) == 0


@pytest.mark.parametrize("name", NAMES)
def test_nan_stays_where_it_was(name, rng):
    x = rng.standard_normal((4, 6))
    x[1, 2] = np.nan
    y, _ = run(name, x, np.ones_like(x))
    assert np.isnan(y[1, 2]) and np.isnan(y).sum() == 1


@pytest.mark.parametrize("name", NAMES)
def test_float16_is_computed_in_float32_and_rounded_once(name, rng):
    x = rng.uniform(-8, 8, (5, 7)).astype(np.float16)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    y, dx = run(name, x, dy)
    y32, dx32 = run(name, x.astype(np.float32), dy.astype(np.float32))
    assert y.dtype == dx.dtype == np.float16
    np.testing.assert_array_equal(y, y32.astype(np.float16))
    # the backward from y rounds y to float16 first, as PyTorch's does from its saved output
    assert rel_err(dx, dx32) < 2e-3


@pytest.mark.parametrize("name", NAMES)
def test_blocks_and_workers_give_the_serial_result(name, rng):
    """4 MiB of float32: several blocks on two workers (and on one) match the plain
    definition, also in float16, whose blocks go through float32 buffers."""
    x = rng.uniform(-8, 8, (4, 512, 512)).astype(np.float32)
    dy = rng.standard_normal(x.shape, dtype=np.float32)
    small_y, small_dx = run(name, x[:, :2], dy[:, :2])           # one block
    for threads in (1, 2):
        with npconv.config(threads=threads):
            y, dx = run(name, x, dy)
            np.testing.assert_array_equal(y[:, :2], small_y)
            np.testing.assert_array_equal(dx[:, :2], small_dx)
            y16, _ = run(name, x.astype(np.float16), dy.astype(np.float16))
            np.testing.assert_array_equal(y16, run(name, x.astype(np.float16).astype(
                np.float32), dy)[0].astype(np.float16))


@pytest.mark.parametrize("name", NAMES)
def test_inputs_unchanged_and_out_in_place(name, rng):
    x = rng.uniform(-8, 8, (3, 5))
    dy = rng.standard_normal(x.shape)
    x0, dy0 = x.copy(), dy.copy()
    y, dx = run(name, x, dy)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(dy, dy0)
    forward, backward, keeps, _, _ = OPS[name]
    buf = x.copy()
    assert forward(buf, out=buf) is buf
    np.testing.assert_array_equal(buf, y)
    saved = buf if keeps == "y" else x
    g = dy.copy()
    assert backward(g, saved, out=g) is g
    np.testing.assert_array_equal(g, dx)
    other = np.empty_like(x)
    assert forward(x, out=other) is other


def test_non_contiguous_input_and_flags(rng):
    x = rng.standard_normal((6, 8))[:, ::2]                      # a strided view
    y = A.relu(x)
    np.testing.assert_array_equal(y, np.maximum(x, 0))
    assert y.flags.c_contiguous and y.flags.writeable


def test_leaky_relu_slope_zero_and_one():
    x = np.array([-2.0, 0.0, 3.0])
    np.testing.assert_array_equal(A.leaky_relu(x, 0.0), [-0.0, 0.0, 3.0])
    np.testing.assert_array_equal(A.leaky_relu(x, 1.0), x)
    np.testing.assert_array_equal(A.leaky_relu_backward(np.ones(3), x, 0.0), [0, 0, 1])


def test_sigmoid_and_silu_do_not_warn_on_overflow():
    x = np.array([-1000.0, -100.0, 0.0, 100.0, 1000.0], dtype=np.float32)
    with np.errstate(all="raise"):
        s = A.sigmoid(x)
        A.silu(x)
        A.silu_backward(np.ones_like(x), x)
    np.testing.assert_array_equal(s, [0, 0, 0.5, 1, 1])


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(TypeError, match=r"`x` must be a numpy\.ndarray"):
        A.relu([1.0, 2.0])
    with pytest.raises(TypeError, match="`x` must have dtype float16, float32 or float64"):
        A.silu(np.arange(3))
    with pytest.raises(ValueError, match=r"`y` must have the shape of `dy`, \(2, 3\)"):
        A.relu_backward(x, x[:, :2])
    with pytest.raises(TypeError, match="`x` must have the dtype of `dy`, float64"):
        A.hardswish_backward(x, x.astype(np.float32))
    with pytest.raises(TypeError, match=r"`dy` must be a numpy\.ndarray"):
        A.tanh_backward(None, x)
    with pytest.raises(ValueError, match=r"`negative_slope` must be in \[0.0, 1.0\]"):
        A.leaky_relu(x, -0.1)
    with pytest.raises(TypeError, match="`negative_slope` must be a real number"):
        A.leaky_relu_backward(x, x, "0.1")


class FakeCupyArray:
    """Looks like a CuPy array to npconv's backend checks."""

    __module__ = "cupy._core.core"
    __cuda_array_interface__ = ()
    dtype = np.dtype(np.float32)


def test_gpu_arrays_are_refused():
    with pytest.raises(TypeError, match=r"`x` must be a numpy\.ndarray .* got a CuPy array"):
        A.relu(FakeCupyArray())


def test_out_errors(rng):
    x = rng.standard_normal((4, 6))
    with pytest.raises(TypeError, match=r"`out` must be a numpy\.ndarray"):
        A.relu(x, out=[0.0])
    with pytest.raises(ValueError, match=r"`out` must have the shape of `x`, \(4, 6\)"):
        A.relu(x, out=np.empty((4, 5)))
    with pytest.raises(TypeError, match="`out` must have the dtype of `x`, float64"):
        A.relu(x, out=np.empty((4, 6), np.float32))
    with pytest.raises(ValueError, match="writeable C-contiguous array; got one that is not C-"):
        A.relu(x, out=np.empty((6, 4)).T)
    ro = np.empty_like(x)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="got one that is read-only"):
        A.relu(x, out=ro)
    big = np.zeros(30)
    with pytest.raises(ValueError, match="share no memory with them; got an array that overlaps"):
        A.relu(big[:24].reshape(4, 6), out=big[6:].reshape(4, 6))


def test_silu_keeping_its_sigmoid(rng):
    """silu(keep_sigmoid=True) returns s = sigmoid(x); silu_backward from it gives the
    gradient of recomputing it (float16: within the rounding of s to float16)."""
    for dtype in (np.float16, np.float32, np.float64):
        x = rng.uniform(-10, 10, (3, 50)).astype(dtype)
        x[0, :3] = [np.nan, np.inf, -np.inf]
        dy = rng.standard_normal(x.shape).astype(dtype)
        y, s = A.silu(x, keep_sigmoid=True)
        assert y.dtype == s.dtype == dtype
        np.testing.assert_array_equal(s, A.sigmoid(x))
        np.testing.assert_allclose(y, A.silu(x), rtol=2e-7 if dtype != np.float16 else 1e-3)
        dx = A.silu_backward(dy, x, sigmoid=s)
        np.testing.assert_allclose(dx, A.silu_backward(dy, x), rtol=4e-3 if dtype == np.float16
                                   else 1e-15, equal_nan=True)
    with pytest.raises(ValueError, match=r"`sigmoid` must have the shape of `x`"):
        A.silu_backward(dy, x, sigmoid=s[:1])


@pytest.mark.parametrize("name", NAMES)
def test_empty_arrays(name):
    y, dx = run(name, np.ones((0, 3)), np.ones((0, 3)))
    assert y.shape == dx.shape == (0, 3)
