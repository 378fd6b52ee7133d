"""npconv.testing.gradcheck: central differences, error reporting and argument errors."""

import numpy as np
import pytest

import npconv
from npconv.testing import gradcheck, numerical_grad


def _conv_grads(dy, x, w):
    return npconv.conv_backward(dy, x, w, stride=2, padding=1)[:2]


def _conv(x, w):
    return npconv.conv(x, w, stride=2, padding=1)


@pytest.fixture
def xw(rng):
    return rng.standard_normal((1, 5, 4, 2)), rng.standard_normal((3, 2, 2, 3))


def test_numerical_grad_of_a_known_function():
    g, h = numerical_grad(lambda a, b: a * b, np.array([1.0, 2.0]), np.array([3.0, -1.0]))
    np.testing.assert_allclose(g, [3.0, -1.0], atol=1e-8)
    np.testing.assert_allclose(h, [1.0, 2.0], atol=1e-8)


def test_numerical_grad_weights_the_output_with_dy_and_skips_arrays_not_in_wrt():
    g, h = numerical_grad(lambda a, b: a * b, np.ones(2), np.full(2, 3.0),
                          dy=np.array([2.0, -1.0]), wrt=[1])
    assert g is None
    np.testing.assert_allclose(h, [2.0, -1.0], atol=1e-8)


def test_gradcheck_passes_for_npconv_and_leaves_inputs_unchanged(xw):
    x, w = xw
    before = x.copy(), w.copy()
    result = gradcheck(_conv, x, w, grad=_conv_grads, names=("x", "w"))
    assert result and result.passed
    assert all(c.max_abs < 1e-8 for c in result.checks)
    np.testing.assert_array_equal(x, before[0])
    np.testing.assert_array_equal(w, before[1])
    assert str(result).startswith("gradcheck passed")


def test_gradcheck_reports_max_errors_and_the_worst_index(xw):
    x, w = xw

    def wrong(dy, x, w):
        dx, dw = _conv_grads(dy, x, w)
        dx = dx.copy()
        dx[0, 4, 3, 1] += 0.5                      # one element off
        return dx, dw

    result = gradcheck(_conv, x, w, grad=wrong, names=("x", "w"))
    assert not result
    cx, cw = result.checks
    assert not cx.passed and cw.passed
    assert cx.worst == (0, 4, 3, 1)
    assert cx.max_abs == pytest.approx(0.5, abs=1e-6)
    assert 0 < cx.max_rel < cx.max_abs                # relative to max|numeric| > 1
    text = str(result)
    assert "gradcheck FAILED" in text
    assert "x: FAILED, max abs error 0.5" in text and "worst at x[0, 4, 3, 1]" in text
    assert "w: ok" in text


def test_gradcheck_of_one_array_accepts_a_bare_gradient():
    result = gradcheck(lambda a: a ** 3, np.array([1.0, -2.0]), grad=lambda dy, a: 3 * a ** 2 * dy)
    assert result


def test_gradcheck_reports_a_wrong_shape_and_a_missing_gradient(xw):
    x, w = xw
    result = gradcheck(_conv, x, w, grad=lambda dy, x, w: (x[:, :0], None))
    assert [c.problem for c in result.checks] == [
        "gradient has shape (1, 0, 4, 2), expected (1, 5, 4, 2)",
        "no analytic gradient (grad returned None)"]
    assert "arrays[0]: FAILED, gradient has shape" in str(result)


def test_gradcheck_checks_only_wrt(xw):
    x, w = xw
    result = gradcheck(_conv, x, w, grad=lambda dy, x, w: (None, _conv_grads(dy, x, w)[1]),
                       wrt=[1])
    assert result and [c.name for c in result.checks] == ["arrays[1]"]


@pytest.mark.parametrize("kwargs, error, match", [
    ({"f": 3}, TypeError, "`f` must be callable; got int"),
    ({"arrays": (np.ones(2), [1.0])}, TypeError,
     r"`arrays\[1\]` must be a numpy.ndarray; got list"),
    ({"eps": 0.0}, ValueError, r"`eps` must be a number > 0; got 0.0"),
    ({"arrays": ()}, ValueError, "`arrays` must hold at least one array; got none"),
    ({"wrt": [2]}, ValueError, r"`wrt` must hold indices of `arrays` in \[0, 2\); got \[2\]"),
    ({"dy": np.ones(3)}, ValueError, r"`dy` must have the shape of f's output \(2,\); got \(3,\)"),
    ({"grad": lambda dy, a, b: (dy,)}, ValueError, "`grad` must return 2 gradients .*; got 1"),
    ({"names": ("a",)}, ValueError, r"`names` must hold 2 names \(one per array\); got \('a',\)"),
])
def test_gradcheck_errors(kwargs, error, match):
    args = {"f": lambda a, b: a * b, "arrays": (np.ones(2), np.ones(2)),
            "grad": lambda dy, a, b: (dy * b, dy * a)}
    args.update(kwargs)
    f, arrays = args.pop("f"), args.pop("arrays")
    with pytest.raises(error, match=match):
        gradcheck(f, *arrays, **args)
