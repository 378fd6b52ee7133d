"""Pooling: fast ops == naive reference == PyTorch, gradients == central differences.

Geometry is built valid by construction (kernel, dilation, stride and padding first, then an
input size that gives every window an input pixel). Inputs are drawn either from a normal
distribution or from a few integers, so that ties (and the first-maximum rule) are exercised.
"""

import numpy as np
import pytest
from helpers import central_difference, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import reference
from npconv.pooling import PoolSpec, pool_out_size, pool_spec

DATA_FORMATS = ("channels_last", "channels_first")


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------


def _padding(draw, form: str, effs, torch_only: bool):
    """(padding argument, explicit pairs or None for "same"/"valid"); each side <= eff // 2."""
    rank = len(effs)
    if form == "int":
        p = draw(st.integers(0, min(e // 2 for e in effs)))
        return p, [(p, p)] * rank
    if form == "per_dim":
        ps = [draw(st.integers(0, e // 2)) for e in effs]
        return tuple(ps), [(p, p) for p in ps]
    if form == "pairs":
        pairs = [(draw(st.integers(0, e // 2)), draw(st.integers(0, e // 2))) for e in effs]
        return tuple(pairs), pairs
    return form, None


@st.composite
def pool_geometry(draw, kind="max", ranks=(1, 2, 3), forms=("int", "per_dim", "pairs", "valid",
                                                             "same"), torch_only=False):
    """(x_shape, kwargs) of a valid pooling. torch_only: symmetric padding <= K // 2 and
    S >= the dilated kernel (what torch accepts for every variant, return_indices included)."""
    rank = draw(st.sampled_from(ranks))
    small = rank == 3
    k = [draw(st.integers(1, 2 if small else 3)) for _ in range(rank)]
    d = [draw(st.integers(1, 2 if small else 3)) if kind == "max" else 1 for _ in k]
    s = [draw(st.integers(1, 3)) for _ in k]
    effs = [ki if torch_only else di * (ki - 1) + 1 for ki, di in zip(k, d)]
    padding, pairs = _padding(draw, draw(st.sampled_from(forms)), effs, torch_only)
    size = []
    for i in range(rank):
        eff = d[i] * (k[i] - 1) + 1
        low = eff if pairs is None and padding == "valid" else max(1, d[i])
        if pairs is not None:
            low = max(low, eff - sum(pairs[i]))
        if torch_only:
            low = max(low, eff)                 # torch's 3-D pools want S >= K, padding aside
        size.append(draw(st.integers(low, low + (2 if small else 4))))
    c, n = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    fmt = draw(st.sampled_from(DATA_FORMATS))
    kwargs = dict(kernel_size=tuple(k), stride=draw(st.sampled_from([None, tuple(s)])),
                  padding=padding, ceil_mode=draw(st.booleans()), data_format=fmt)
    if kind == "max":
        kwargs["dilation"] = tuple(d)
    else:
        kwargs["count_include_pad"] = draw(st.booleans())
    x_shape = (n, *size, c) if fmt == "channels_last" else (n, c, *size)
    return x_shape, kwargs


def draw_x(x_shape, seed: int, ties: bool, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-2, 3, size=x_shape).astype(dtype)     # many equal maxima
    return rng.standard_normal(x_shape).astype(dtype)


def spec_of(x_shape, kwargs) -> PoolSpec:
    keep = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "data_format")
    return pool_spec(x_shape, **{k: v for k, v in kwargs.items() if k in keep})


# ---------------------------------------------------------------------------------------------
# Against the naive reference
# ---------------------------------------------------------------------------------------------


@given(pool_geometry("max"), st.integers(0, 2**32 - 1), st.booleans())
def test_max_pool_matches_reference(geom, seed, ties):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, ties)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    y_ref, idx_ref = reference.max_pool(x, **kw, return_indices=True)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    assert rel_err(npconv.max_pool_backward(dy, x, **kw),
                   reference.max_pool_backward(dy, x, **kw)) < 1e-12


@given(pool_geometry("avg"), st.integers(0, 2**32 - 1))
def test_avg_pool_matches_reference(geom, seed):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, False)
    y = npconv.avg_pool(x, **kw)
    assert rel_err(y, reference.avg_pool(x, **kw)) < 1e-12
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    assert rel_err(npconv.avg_pool_backward(dy, x.shape, **kw),
                   reference.avg_pool_backward(dy, x.shape, **kw)) < 1e-12


@given(st.integers(1, 3), st.sampled_from(DATA_FORMATS), st.integers(0, 2**32 - 1))
def test_global_avg_pool_matches_reference(rank, fmt, seed):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((2, *rng.integers(1, 5, size=rank), 3))
    x = np.moveaxis(x, -1, 1).copy() if fmt == "channels_first" else x
    y = npconv.global_avg_pool(x, data_format=fmt)
    assert rel_err(y, reference.global_avg_pool(x, data_format=fmt)) < 1e-12
    dy = rng.standard_normal(y.shape)
    assert rel_err(npconv.global_avg_pool_backward(dy, x.shape, data_format=fmt),
                   reference.global_avg_pool_backward(dy, x.shape, data_format=fmt)) < 1e-12


def test_reference_pinned_by_hand():
    """Hand-computed cases pin the oracle itself."""
    x = np.array([[1.0, 5.0, 5.0, 2.0, 7.0]])[..., None]          # (N, S, C) = (1, 5, 1)
    y, idx = reference.max_pool(x, 2, stride=2, ceil_mode=True, return_indices=True)
    assert y.ravel().tolist() == [5.0, 5.0, 7.0] and idx.ravel().tolist() == [1, 2, 4]
    dx = reference.max_pool_backward(np.ones((1, 3, 1)), x, 3, stride=1)
    assert dx.ravel().tolist() == [0.0, 2.0, 0.0, 0.0, 1.0]       # first of the tied 5s, twice
    a = reference.avg_pool(x, 2, stride=2, padding=1, ceil_mode=True)
    assert a.ravel().tolist() == [0.5, 5.0, 4.5]                 # 1/2, (5+5)/2, (2+7)/2
    b = reference.avg_pool(x, 2, stride=2, padding=1, count_include_pad=False)
    assert b.ravel().tolist() == [1.0, 5.0, 4.5]


# ---------------------------------------------------------------------------------------------
# Against PyTorch
# ---------------------------------------------------------------------------------------------


def to_first(a, fmt):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1) if fmt == "channels_last" else a)


def from_first(a, fmt):
    return np.moveaxis(a, 1, -1) if fmt == "channels_last" else a


def torch_kwargs(kw, x_ndim):
    pads = kw["padding"]
    if not isinstance(pads, int):
        pads = tuple(pads)
    out = {k: v for k, v in kw.items() if k not in ("data_format", "padding")}
    out["padding"] = pads
    out["stride"] = kw["stride"] if kw["stride"] is not None else kw["kernel_size"]
    return out


@given(pool_geometry("max", forms=("int", "per_dim"), torch_only=True),
       st.integers(0, 2**32 - 1), st.booleans())
def test_max_pool_matches_torch(torch, geom, seed, ties):
    """Values, indices (the first maximum) and gradients, with dilation, padding, ceil_mode."""
    x_shape, kw = geom
    fmt, x = kw["data_format"], draw_x(x_shape, seed, ties)
    pool = getattr(torch.nn.functional, f"max_pool{x.ndim - 2}d")
    xt = torch.tensor(to_first(x, fmt), requires_grad=True)
    yt, it = pool(xt, **torch_kwargs(kw, x.ndim), return_indices=True)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    np.testing.assert_array_equal(to_first(y, fmt), yt.detach().numpy())
    np.testing.assert_array_equal(to_first(idx, fmt), it.numpy())
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    yt.backward(torch.tensor(to_first(dy, fmt)))
    assert rel_err(to_first(npconv.max_pool_backward(dy, x, **kw), fmt), xt.grad.numpy()) < 1e-12


@given(pool_geometry("avg", forms=("int", "per_dim"), torch_only=True),
       st.integers(0, 2**32 - 1))
def test_avg_pool_matches_torch(torch, geom, seed):
    """count_include_pad and ceil_mode divisors, and the gradient."""
    x_shape, kw = geom
    fmt, x = kw["data_format"], draw_x(x_shape, seed, False)
    pool = getattr(torch.nn.functional, f"avg_pool{x.ndim - 2}d")
    xt = torch.tensor(to_first(x, fmt), requires_grad=True)
    yt = pool(xt, **torch_kwargs(kw, x.ndim))
    y = npconv.avg_pool(x, **kw)
    assert rel_err(to_first(y, fmt), yt.detach().numpy()) < 1e-12
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    yt.backward(torch.tensor(to_first(dy, fmt)))
    assert rel_err(to_first(npconv.avg_pool_backward(dy, x.shape, **kw), fmt),
                   xt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("fmt", DATA_FORMATS)
def test_global_avg_pool_matches_torch(torch, fmt, rng):
    x = rng.standard_normal((2, 3, 5, 4))                          # (N, C, H, W)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.functional.adaptive_avg_pool2d(xt, 1).flatten(1)
    x_ = from_first(x, fmt)
    assert rel_err(npconv.global_avg_pool(x_, data_format=fmt), yt.detach().numpy()) < 1e-12
    dy = rng.standard_normal((2, 3))
    yt.backward(torch.tensor(dy))
    dx = npconv.global_avg_pool_backward(dy, x_.shape, data_format=fmt)
    assert rel_err(to_first(dx, fmt), xt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("values", [
    [3.0, 3.0, 1.0, 3.0],                                          # a tie: the first wins
    [1.0, np.nan, 3.0, np.nan],                                    # NaN propagates, last NaN
    [-np.inf, -np.inf, -np.inf, -np.inf],                          # all -inf: first input tap
])
@pytest.mark.parametrize("padding", [0, 1])
def test_special_values_choose_like_torch(torch, values, padding):
    x = np.array(values).reshape(1, 1, 1, 4)                       # (N, C, H, W)
    kw = dict(kernel_size=(1, 3), stride=1, padding=(0, padding))
    yt, it = torch.nn.functional.max_pool2d(torch.tensor(x), **kw, return_indices=True)
    y, idx = npconv.max_pool(x, **kw, data_format="channels_first", return_indices=True)
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.max_pool2d(xt, **kw).sum().backward()
    dx = npconv.max_pool_backward(np.ones_like(y), x, **kw, data_format="channels_first")
    np.testing.assert_array_equal(dx, xt.grad.numpy())


# ---------------------------------------------------------------------------------------------
# Gradients, adjoints and general properties
# ---------------------------------------------------------------------------------------------


@settings(max_examples=10)
@given(pool_geometry("max", ranks=(1, 2)), st.integers(0, 2**32 - 1))
def test_max_pool_gradient_matches_central_differences(geom, seed):
    """Distinct values, far apart compared to eps, so the maximum never changes."""
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.permutation(np.prod(x_shape)).reshape(x_shape) / np.prod(x_shape)  # distinct
    dy = rng.standard_normal(npconv.max_pool(x, **kw).shape)
    dx = npconv.max_pool_backward(dy, x, **kw)
    assert rel_err(dx, central_difference(lambda: np.sum(dy * npconv.max_pool(x, **kw)), x)) \
        < 1e-8


@settings(max_examples=10)
@given(pool_geometry("avg", ranks=(1, 2)), st.integers(0, 2**32 - 1))
def test_avg_pool_gradient_matches_central_differences(geom, seed):
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    dy = rng.standard_normal(npconv.avg_pool(x, **kw).shape)
    dx = npconv.avg_pool_backward(dy, x.shape, **kw)
    assert rel_err(dx, central_difference(lambda: np.sum(dy * npconv.avg_pool(x, **kw)), x)) \
        < 1e-8


def test_global_avg_pool_gradient_matches_central_differences(rng):
    x = rng.standard_normal((2, 3, 4, 2))
    dy = rng.standard_normal((2, 2))
    dx = npconv.global_avg_pool_backward(dy, x.shape)
    assert rel_err(dx, central_difference(lambda: np.sum(dy * npconv.global_avg_pool(x)), x)) \
        < 1e-8


@given(pool_geometry("avg"), st.integers(0, 2**32 - 1))
def test_avg_pool_adjoint_identity(geom, seed):
    """avg_pool is linear: <dy, avg_pool(x)> == <avg_pool_backward(dy), x>."""
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    y = npconv.avg_pool(x, **kw)
    dy = rng.standard_normal(y.shape)
    lhs, rhs = np.vdot(dy, y), np.vdot(npconv.avg_pool_backward(dy, x.shape, **kw), x)
    assert abs(lhs - rhs) <= 1e-12 * (np.abs(dy).sum() * np.abs(x).max() + 1)


@given(pool_geometry("max", ranks=(2,)), st.integers(0, 2**32 - 1))
def test_layouts_agree(geom, seed):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, True)
    other = "channels_first" if kw["data_format"] == "channels_last" else "channels_last"
    x_other = np.moveaxis(x, -1, 1) if other == "channels_first" else np.moveaxis(x, 1, -1)
    y = npconv.max_pool(x, **kw)
    y_other = npconv.max_pool(x_other, **{**kw, "data_format": other})
    back = np.moveaxis(y_other, 1, -1) if other == "channels_first" else np.moveaxis(y_other, -1, 1)
    np.testing.assert_array_equal(y, back)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("fmt", DATA_FORMATS)
def test_dtype_kept_and_inputs_unchanged(dtype, fmt, rng):
    x = rng.standard_normal((2, 3, 5, 4)).astype(dtype)
    kw = dict(stride=2, padding=1, ceil_mode=True, data_format=fmt)
    copy = x.copy()
    outs = [npconv.max_pool(x, 3, **kw), npconv.avg_pool(x, 3, **kw),
            npconv.global_avg_pool(x, data_format=fmt)]
    dy = [np.ones_like(o) for o in outs]
    grads = [npconv.max_pool_backward(dy[0], x, 3, **kw),
             npconv.avg_pool_backward(dy[1], x.shape, 3, **kw),
             npconv.global_avg_pool_backward(dy[2], x.shape, data_format=fmt)]
    np.testing.assert_array_equal(x, copy)
    for a in outs + grads:
        assert a.dtype == dtype and a.flags.writeable and a.flags.c_contiguous
    tol = 1e-2 if dtype == np.float16 else 1e-6
    assert rel_err(outs[1], reference.avg_pool(x, 3, **kw)) < tol


def test_max_pool_backward_sums_overlapping_windows():
    x = np.array([[[1.0], [3.0], [3.0], [2.0]]])                  # (N, S, C)
    dx = npconv.max_pool_backward(np.ones((1, 3, 1)), x, 2, stride=1)
    assert dx.ravel().tolist() == [0.0, 2.0, 1.0, 0.0]


# ---------------------------------------------------------------------------------------------
# Geometry
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("s, k, stride, d, pad, ceil, p", [
    (5, 2, 2, 1, 0, False, 2),
    (5, 2, 2, 1, 0, True, 3),          # ceil((5 - 2) / 2) + 1
    (6, 3, 2, 1, 1, True, 4),          # ceil((6 + 2 - 3) / 2) + 1 = 4; starts at 6 - 1 < 6 + 1
    (4, 2, 2, 1, 1, True, 3),          # ceil(4 / 2) + 1 = 4, but window 3 would start at 6 >= 5
    (7, 3, 1, 2, 1, False, 5),         # dilated: eff 5
])
def test_pool_out_size_by_hand_and_by_torch(s, k, stride, d, pad, ceil, p):
    assert pool_out_size(s, k, stride, d, pad, pad, ceil) == p
    torch = pytest.importorskip("torch")
    x = torch.zeros(1, 1, s)
    assert torch.nn.functional.max_pool1d(x, k, stride, pad, d, ceil_mode=ceil).shape[-1] == p


def test_window_counts_and_first_taps():
    spec = pool_spec((1, 5, 1), 3, stride=2, padding=1, ceil_mode=True)
    assert spec.out_size == (3,)
    # windows cover [-1, 2), [1, 4), [3, 6): the last runs past the input (S=5) and padding
    assert spec.window_counts(include_pad=False).tolist() == [2.0, 3.0, 2.0]
    assert spec.window_counts(include_pad=True).tolist() == [3.0, 3.0, 3.0]
    assert spec.first_taps().tolist() == [1, 0, 0]
    assert spec.array_pads == ((1, 1),)


# ---------------------------------------------------------------------------------------------
# Errors: every branch names the argument
# ---------------------------------------------------------------------------------------------

X = np.zeros((1, 6, 6, 2))

ERRORS = [
    (lambda: npconv.max_pool([[1.0]], 2), TypeError, "`x` must be a numpy.ndarray"),
    (lambda: npconv.max_pool(X.astype(int), 2), TypeError, "`x` must have dtype float"),
    (lambda: npconv.max_pool(np.zeros((6, 2)), 2), ValueError, "at least 3 dimensions"),
    (lambda: npconv.max_pool(X, 0), ValueError, "`kernel_size` must be >= 1"),
    (lambda: npconv.max_pool(X, (2, 2, 2)), TypeError, "`kernel_size` must be an int or a tuple"),
    (lambda: npconv.max_pool(X, 2, stride=0), ValueError, "`stride` must be >= 1"),
    (lambda: npconv.max_pool(X, 2, dilation=1.5), TypeError, "`dilation` must be an int"),
    (lambda: npconv.max_pool(X, 3, padding=2), ValueError, "at most half the dilated kernel"),
    (lambda: npconv.max_pool(X, 3, padding=-1), ValueError, "`padding` must be >= 0"),
    (lambda: npconv.max_pool(X, 3, padding="full"), ValueError, "at most half"),
    (lambda: npconv.max_pool(X, 3, padding=(1, 2, 3)), TypeError, "`padding` must be an int"),
    (lambda: npconv.max_pool(X, 7), ValueError, "output size must be >= 1"),
    (lambda: npconv.max_pool(np.zeros((1, 1, 1)), 2, stride=1, padding=3, dilation=5),
     ValueError, "reads only padding"),
    (lambda: npconv.max_pool(X, 2, ceil_mode=1), TypeError, "`ceil_mode` must be True or False"),
    (lambda: npconv.max_pool(X, 2, return_indices="yes"), TypeError, "`return_indices`"),
    (lambda: npconv.max_pool(X, 2, data_format="NHWC"), ValueError, "`data_format` must be one"),
    (lambda: npconv.max_pool_backward(np.zeros((1, 2, 2, 2)), X, 2), ValueError,
     r"`dy` must have shape \(1, 3, 3, 2\)"),
    (lambda: npconv.max_pool_backward([0.0], X, 2), TypeError, "`dy` must be a numpy.ndarray"),
    (lambda: npconv.avg_pool(X, 2, count_include_pad=None), TypeError, "`count_include_pad`"),
    (lambda: npconv.avg_pool(X, 2, dilation=2), TypeError, "unexpected keyword"),
    (lambda: npconv.avg_pool_backward(np.zeros((1, 3, 3, 2)), "x", 2), TypeError,
     "`x_shape` must be a tuple of ints"),
    (lambda: npconv.avg_pool_backward(np.zeros((1, 3, 3, 2)), (1, 0, 6, 2), 2), ValueError,
     "`x_shape` must have sizes >= 1"),
    (lambda: npconv.avg_pool_backward(np.zeros((1, 2, 2, 2)), X.shape, 2), ValueError,
     "`dy` must have shape"),
    (lambda: npconv.global_avg_pool(np.zeros((2, 3))), ValueError, "at least 3 dimensions"),
    (lambda: npconv.global_avg_pool(X, data_format="last"), ValueError, "`data_format`"),
    (lambda: npconv.global_avg_pool_backward(np.zeros((1, 3)), X.shape), ValueError,
     r"`dy` must have shape \(1, 2\)"),
]


@pytest.mark.parametrize("call, error, match", ERRORS)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
