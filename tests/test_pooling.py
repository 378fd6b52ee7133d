"""Pooling: fast ops == naive reference == PyTorch, gradients == central differences.

Geometry is built valid by construction (kernel, dilation, stride and padding first, then an
input size that gives at least one window). Padding is drawn up to beyond the window (ONNX
allows it: some windows then read only padding) unless the PyTorch oracle needs its own limit.
Inputs are drawn either from a normal distribution or from a few integers, so that ties (and the
first-maximum rule) are exercised.
"""

import re
import warnings
from pathlib import Path

import numpy as np
import pytest
from helpers import central_difference, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st

import npconv
from npconv import pooling, reference
from npconv.pooling import PoolSpec, pool_out_size, pool_spec

DATA_FORMATS = ("channels_last", "channels_first")
FORMS = ("int", "per_dim", "pairs", "valid", "same")


# ---------------------------------------------------------------------------------------------
# Strategies
# ---------------------------------------------------------------------------------------------


def _padding(draw, form: str, limits):
    """(padding argument, explicit pairs or None for "same"/"valid"), each side <= its limit."""
    rank = len(limits)
    if form == "int":
        p = draw(st.integers(0, min(limits)))
        return p, [(p, p)] * rank
    if form == "per_dim":
        ps = [draw(st.integers(0, m)) for m in limits]
        return tuple(ps), [(p, p) for p in ps]
    if form == "pairs":
        pairs = [(draw(st.integers(0, m)), draw(st.integers(0, m))) for m in limits]
        return tuple(pairs), pairs
    return form, None


@st.composite
def pool_geometry(draw, kind="max", ranks=(1, 2, 3), forms=FORMS, torch_only=False,
                  wide_pads=True):
    """(x_shape, kwargs) of a valid pooling of `kind` ("max", "avg" or "lp").

    torch_only: symmetric padding <= K // 2, S >= the dilated kernel and no dilation outside max
    pooling (what torch accepts for every variant, return_indices included). wide_pads: padding
    up to the dilated kernel + 1 (ONNX's rule), else up to half of it (every window then reads
    the input)."""
    rank = draw(st.sampled_from(ranks))
    small = rank == 3
    k = [draw(st.integers(1, 2 if small else 3)) for _ in range(rank)]
    dilated = kind == "max" or not torch_only
    d = [draw(st.integers(1, 2 if small else 3)) if dilated else 1 for _ in k]
    s = [draw(st.integers(1, 3)) for _ in k]
    effs = [di * (ki - 1) + 1 for ki, di in zip(k, d)]
    limits = [ki // 2 if torch_only else e + 1 if wide_pads else e // 2
              for ki, e in zip(k, effs)]
    padding, pairs = _padding(draw, draw(st.sampled_from(forms)), limits)
    size = []
    for i in range(rank):
        low = effs[i] if padding == "valid" or torch_only else 1
        if pairs is not None:
            low = max(low, effs[i] - sum(pairs[i]))
        size.append(draw(st.integers(low, low + (2 if small else 4))))
    c, n = draw(st.integers(1, 3)), draw(st.integers(1, 2))
    fmt = draw(st.sampled_from(DATA_FORMATS))
    kwargs = dict(kernel_size=tuple(k), stride=draw(st.sampled_from([None, tuple(s)])),
                  padding=padding, ceil_mode=draw(st.booleans()), data_format=fmt)
    if dilated:
        kwargs["dilation"] = tuple(d)
    if kind == "avg":
        kwargs["count_include_pad"] = draw(st.booleans())
    x_shape = (n, *size, c) if fmt == "channels_last" else (n, c, *size)
    return x_shape, kwargs


def draw_x(x_shape, seed: int, ties: bool, dtype=np.float64):
    rng = np.random.default_rng(seed)
    if ties:
        return rng.integers(-2, 3, size=x_shape).astype(dtype)     # many equal maxima
    return rng.standard_normal(x_shape).astype(dtype)


def same_or_nan(a, b, tol=1e-12) -> None:
    """a == b to rel tolerance, with NaN exactly where b has NaN (windows on padding)."""
    np.testing.assert_array_equal(np.isnan(a), np.isnan(b))
    keep = ~np.isnan(b)
    assert rel_err(a[keep], b[keep]) < tol


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
    dx_ref = reference.max_pool_backward(dy, x, **kw)
    assert rel_err(npconv.max_pool_backward(dy, x, **kw), dx_ref) < 1e-12
    assert rel_err(npconv.max_pool_backward(dy, x.shape, **kw, indices=idx), dx_ref) < 1e-12


@given(pool_geometry("max"), st.integers(0, 2**32 - 1), st.booleans(), st.booleans())
def test_max_pool_codes_name_the_indices_taps(geom, seed, ties, nans):
    """`max_pool_codes` (what nn.MaxPool keeps): y as max_pool's, code prod(K) - r where the
    index is tap r of its window (0 where it is -1), and the backward from the codes equals
    the backward from the indices bit for bit (ties, NaN windows, padding-only windows)."""
    x_shape, kw = geom
    x = draw_x(x_shape, seed, ties)
    if nans:
        x[np.random.default_rng(seed).random(x.shape) < 0.2] = np.nan
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    y_codes, codes = pooling.max_pool_codes(x, **kw)
    spec = pool_spec(x.shape, **kw)
    taps = int(np.prod(spec.kernel_size))
    assert codes.dtype == np.uint8 and codes.shape == y.shape and codes.max() <= taps
    np.testing.assert_array_equal(y_codes, y)
    base, offsets = spec.index_parts()
    table = np.concatenate([[-1], offsets[::-1]])                  # code -> offset, 0 -> -1
    fmt = kw["data_format"]
    from_codes = np.where(codes == 0, -1, table[codes] + np.moveaxis(
        base, -1, 1 if fmt == "channels_first" else -1))
    np.testing.assert_array_equal(from_codes, idx)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    np.testing.assert_array_equal(
        pooling.max_pool_codes_backward(dy, codes, x.shape, **kw),
        npconv.max_pool_backward(dy, x.shape, **kw, indices=idx))


@given(pool_geometry("max", ranks=(1, 2)), st.integers(0, 2**32 - 1),
       st.sampled_from([np.uint8, np.int8, np.int16, np.int32, np.int64, np.uint32]))
def test_integer_max_pool_matches_reference(geom, seed, dtype):
    """ONNX's MaxPool takes integers: the result keeps the dtype, padding is the dtype's min."""
    x_shape, kw = geom
    info = np.iinfo(dtype)
    x = np.random.default_rng(seed).integers(info.min, info.max, size=x_shape, dtype=dtype,
                                             endpoint=True)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    y_ref, idx_ref = reference.max_pool(x, **kw, return_indices=True)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape).astype(np.float32)
    dx = npconv.max_pool_backward(dy, x, **kw)
    assert dx.dtype == np.float32
    assert rel_err(dx, reference.max_pool_backward(dy, x, **kw)) < 1e-6


@given(pool_geometry("avg"), st.integers(0, 2**32 - 1))
def test_avg_pool_matches_reference(geom, seed):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, False)
    y = npconv.avg_pool(x, **kw)
    same_or_nan(y, reference.avg_pool(x, **kw))
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    assert rel_err(npconv.avg_pool_backward(dy, x.shape, **kw),
                   reference.avg_pool_backward(dy, x.shape, **kw)) < 1e-12


@given(pool_geometry("lp"), st.sampled_from([1, 2, 3, 1.5]), st.integers(0, 2**32 - 1))
def test_lp_pool_matches_reference(geom, p, seed):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, False)
    y = npconv.lp_pool(x, p, **kw)
    assert rel_err(y, reference.lp_pool(x, p, **kw)) < 1e-12
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    assert rel_err(npconv.lp_pool_backward(dy, x, p, **kw),
                   reference.lp_pool_backward(dy, x, p, **kw)) < 1e-11


@given(st.integers(1, 3), st.sampled_from(DATA_FORMATS), st.integers(0, 2**32 - 1),
       st.booleans())
def test_global_pools_match_reference(rank, fmt, seed, ties):
    rng = np.random.default_rng(seed)
    x = draw_x((2, *rng.integers(1, 5, size=rank), 3), seed, ties)
    x = np.moveaxis(x, -1, 1).copy() if fmt == "channels_first" else x
    y = npconv.global_avg_pool(x, data_format=fmt)
    assert rel_err(y, reference.global_avg_pool(x, data_format=fmt)) < 1e-12
    dy = rng.standard_normal(y.shape)
    assert rel_err(npconv.global_avg_pool_backward(dy, x.shape, data_format=fmt),
                   reference.global_avg_pool_backward(dy, x.shape, data_format=fmt)) < 1e-12
    m, idx = npconv.global_max_pool(x, data_format=fmt, return_indices=True)
    m_ref, idx_ref = reference.global_max_pool(x, data_format=fmt, return_indices=True)
    np.testing.assert_array_equal(m, m_ref)
    np.testing.assert_array_equal(idx, idx_ref)
    dx_ref = reference.global_max_pool_backward(dy, x, data_format=fmt)
    np.testing.assert_array_equal(npconv.global_max_pool_backward(dy, x, data_format=fmt), dx_ref)
    np.testing.assert_array_equal(
        npconv.global_max_pool_backward(dy, x.shape, data_format=fmt, indices=idx), dx_ref)


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
    c = reference.avg_pool(x, 2, stride=3, dilation=2, padding=((3, 0),), count_include_pad=False)
    assert np.isnan(c[0, 0, 0]) and c.ravel()[1:].tolist() == [3.0]  # [-3, -1]: padding only
    m, i = reference.max_pool(x, 1, stride=1, padding=((1, 0),), return_indices=True)
    assert m.ravel()[0] == -np.inf and i.ravel()[0] == -1
    lp = reference.lp_pool(np.array([[[3.0], [-4.0], [1.0]]]), 2, 2, stride=1)
    assert lp.ravel().tolist() == [5.0, np.sqrt(17.0)]


# ---------------------------------------------------------------------------------------------
# Against PyTorch
# ---------------------------------------------------------------------------------------------


def to_first(a, fmt):
    return np.ascontiguousarray(np.moveaxis(a, -1, 1) if fmt == "channels_last" else a)


def from_first(a, fmt):
    return np.moveaxis(a, 1, -1) if fmt == "channels_last" else a


def torch_kwargs(kw):
    pads = kw["padding"]
    if not isinstance(pads, int):
        pads = tuple(pads)
    drop = ("data_format", "padding", "dilation") if "count_include_pad" in kw else (
        "data_format", "padding")
    out = {k: v for k, v in kw.items() if k not in drop}
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
    yt, it = pool(xt, **torch_kwargs(kw), return_indices=True)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    np.testing.assert_array_equal(to_first(y, fmt), yt.detach().numpy())
    np.testing.assert_array_equal(to_first(idx, fmt), it.numpy())
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    yt.backward(torch.tensor(to_first(dy, fmt)))
    assert rel_err(to_first(npconv.max_pool_backward(dy, x, **kw), fmt), xt.grad.numpy()) < 1e-12


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int32, np.int64])
def test_integer_max_pool_matches_torch(torch, dtype, rng):
    x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=(2, 3, 7, 6), dtype=dtype)
    kw = dict(kernel_size=3, stride=2, padding=1, ceil_mode=True)
    yt, it = torch.nn.functional.max_pool2d(torch.from_numpy(x), **kw, return_indices=True)
    y, idx = npconv.max_pool(x, **kw, data_format="channels_first", return_indices=True)
    assert y.dtype == dtype
    np.testing.assert_array_equal(y, yt.numpy())
    np.testing.assert_array_equal(idx, it.numpy())


@given(pool_geometry("avg", forms=("int", "per_dim"), torch_only=True),
       st.integers(0, 2**32 - 1))
def test_avg_pool_matches_torch(torch, geom, seed):
    """count_include_pad and ceil_mode divisors, and the gradient."""
    x_shape, kw = geom
    fmt, x = kw["data_format"], draw_x(x_shape, seed, False)
    pool = getattr(torch.nn.functional, f"avg_pool{x.ndim - 2}d")
    xt = torch.tensor(to_first(x, fmt), requires_grad=True)
    yt = pool(xt, **torch_kwargs(kw))
    y = npconv.avg_pool(x, **kw)
    assert rel_err(to_first(y, fmt), yt.detach().numpy()) < 1e-12
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    yt.backward(torch.tensor(to_first(dy, fmt)))
    assert rel_err(to_first(npconv.avg_pool_backward(dy, x.shape, **kw), fmt),
                   xt.grad.numpy()) < 1e-12


@given(pool_geometry("lp", ranks=(1, 2), forms=("valid",), torch_only=True),
       st.sampled_from([2, 4, 1.5]), st.integers(0, 2**32 - 1))
def test_lp_pool_matches_torch(torch, geom, p, seed):
    """PyTorch's LPPool (no padding; floor mode, where it scales no window): for even p, or for
    x >= 0 (PyTorch raises x, not |x|, to the power p), the same values and gradients."""
    x_shape, kw = geom
    kw = {**kw, "ceil_mode": False}
    fmt = kw["data_format"]
    x = np.random.default_rng(seed).standard_normal(x_shape)
    x = x if p % 2 == 0 else np.abs(x) + 0.1
    pool = getattr(torch.nn.functional, f"lp_pool{x.ndim - 2}d")
    xt = torch.tensor(to_first(x, fmt), requires_grad=True)
    k = kw["kernel_size"][0] if x.ndim == 3 else kw["kernel_size"]     # lp_pool1d wants an int
    yt = pool(xt, p, k, stride=kw["stride"] if kw["stride"] is not None else k)
    y = npconv.lp_pool(x, p, **kw)
    assert rel_err(to_first(y, fmt), yt.detach().numpy()) < 1e-12
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    yt.backward(torch.tensor(to_first(dy, fmt)))
    assert rel_err(to_first(npconv.lp_pool_backward(dy, x, p, **kw), fmt),
                   xt.grad.numpy()) < 1e-10


@pytest.mark.parametrize("fmt", DATA_FORMATS)
def test_global_pools_match_torch(torch, fmt, rng):
    x = rng.integers(-2, 3, size=(2, 3, 5, 4)).astype(np.float64)  # (N, C, H, W), ties
    x_ = from_first(x, fmt)
    dy = rng.standard_normal((2, 3))
    for op, pool in ((npconv.global_avg_pool, torch.nn.functional.adaptive_avg_pool2d),
                     (npconv.global_max_pool, torch.nn.functional.adaptive_max_pool2d)):
        xt = torch.tensor(x, requires_grad=True)
        yt = pool(xt, 1).flatten(1)
        assert rel_err(op(x_, data_format=fmt), yt.detach().numpy()) < 1e-12
        yt.backward(torch.tensor(dy))
        backward = getattr(npconv, op.__name__ + "_backward")
        dx = backward(dy, x_ if op is npconv.global_max_pool else x_.shape, data_format=fmt)
        assert rel_err(to_first(dx, fmt), xt.grad.numpy()) < 1e-12
    _, it = torch.nn.functional.adaptive_max_pool2d(torch.tensor(x), 1, return_indices=True)
    _, idx = npconv.global_max_pool(x_, data_format=fmt, return_indices=True)
    np.testing.assert_array_equal(idx, it.flatten(1).numpy())


@pytest.mark.parametrize("values", [
    [3.0, 3.0, 1.0, 3.0],                                          # a tie: the first wins
    [1.0, np.nan, 3.0, np.nan],                                    # NaN propagates, last NaN
    [-np.inf, -np.inf, -np.inf, -np.inf],                          # all -inf: first input tap
    [np.nan, 2.0, np.inf, 1.0],                                    # NaN before inf
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


def distinct(x_shape, rng):
    """Distinct values far apart compared to eps, so a maximum never changes."""
    return rng.permutation(np.prod(x_shape)).reshape(x_shape) / np.prod(x_shape)


@settings(max_examples=10)
@given(pool_geometry("max", ranks=(1, 2), wide_pads=False), st.integers(0, 2**32 - 1))
def test_max_pool_gradient_matches_central_differences(geom, seed):
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = distinct(x_shape, rng)
    y = npconv.max_pool(x, **kw)
    dy = np.where(np.isfinite(y), rng.standard_normal(y.shape), 0)  # -inf: a window on padding
    dx = npconv.max_pool_backward(dy, x, **kw)

    def loss():
        y = npconv.max_pool(x, **kw)
        return np.sum(dy * np.where(np.isfinite(y), y, 0))

    assert rel_err(dx, central_difference(loss, x)) < 1e-8


@settings(max_examples=10)
@given(pool_geometry("avg", ranks=(1, 2), wide_pads=False), st.integers(0, 2**32 - 1))
def test_avg_pool_gradient_matches_central_differences(geom, seed):
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    y = npconv.avg_pool(x, **kw)
    dy = np.where(np.isnan(y), 0, rng.standard_normal(y.shape))    # NaN: a window on padding
    dx = npconv.avg_pool_backward(dy, x.shape, **kw)

    def loss():
        y = npconv.avg_pool(x, **kw)
        return np.sum(dy * np.where(np.isnan(y), 0, y))

    assert rel_err(dx, central_difference(loss, x)) < 1e-8


@settings(max_examples=10)
@given(pool_geometry("lp", ranks=(1, 2)), st.sampled_from([1, 2, 3.5]),
       st.integers(0, 2**32 - 1))
def test_lp_pool_gradient_matches_central_differences(geom, p, seed):
    """|x| kept away from 0, where |x|^p bends (p = 1) and a window's norm can vanish."""
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = (rng.random(x_shape) + 0.5) * rng.choice([-1.0, 1.0], size=x_shape)
    dy = rng.standard_normal(npconv.lp_pool(x, p, **kw).shape)
    dx = npconv.lp_pool_backward(dy, x, p, **kw)
    num = central_difference(lambda: np.sum(dy * npconv.lp_pool(x, p, **kw)), x)
    assert rel_err(dx, num) < 1e-7


def test_global_max_pool_gradient_matches_central_differences(rng):
    x = distinct((2, 3, 4, 2), rng)
    dy = rng.standard_normal((2, 2))
    dx = npconv.global_max_pool_backward(dy, x)
    assert rel_err(dx, central_difference(lambda: np.sum(dy * npconv.global_max_pool(x)), x)) \
        < 1e-8


def test_global_avg_pool_gradient_matches_central_differences(rng):
    x = rng.standard_normal((2, 3, 4, 2))
    dy = rng.standard_normal((2, 2))
    dx = npconv.global_avg_pool_backward(dy, x.shape)
    assert rel_err(dx, central_difference(lambda: np.sum(dy * npconv.global_avg_pool(x)), x)) \
        < 1e-8


@given(pool_geometry("avg", wide_pads=False), st.integers(0, 2**32 - 1))
def test_avg_pool_adjoint_identity(geom, seed):
    """avg_pool is linear: <dy, avg_pool(x)> == <avg_pool_backward(dy), x>."""
    x_shape, kw = geom
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape)
    y = npconv.avg_pool(x, **kw)
    dy = np.where(np.isnan(y), 0, rng.standard_normal(y.shape))    # NaN: a window on padding
    lhs = np.vdot(dy, np.where(np.isnan(y), 0, y))
    rhs = np.vdot(npconv.avg_pool_backward(dy, x.shape, **kw), x)
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
    y, idx = npconv.max_pool(x, 3, **kw, return_indices=True)
    outs = [y, npconv.avg_pool(x, 3, **kw), npconv.lp_pool(x, 2, 3, **kw),
            npconv.global_avg_pool(x, data_format=fmt), npconv.global_max_pool(x, data_format=fmt)]
    dy = [np.ones_like(o) for o in outs]
    idx_copy = idx.copy()
    _, codes = pooling.max_pool_codes(x, 3, **kw)
    grads = [npconv.max_pool_backward(dy[0], x, 3, **kw),
             npconv.max_pool_backward(dy[0], x, 3, **kw, indices=idx),
             pooling.max_pool_codes_backward(dy[0], codes, x.shape, 3, **kw),
             npconv.avg_pool_backward(dy[1], x.shape, 3, **kw),
             npconv.lp_pool_backward(dy[2], x, 2, 3, **kw),
             npconv.global_avg_pool_backward(dy[3], x.shape, data_format=fmt),
             npconv.global_max_pool_backward(dy[4], x, data_format=fmt)]
    np.testing.assert_array_equal(x, copy)
    np.testing.assert_array_equal(idx, idx_copy)
    for a in outs + grads:
        assert a.dtype == dtype and a.flags.writeable and a.flags.c_contiguous
    tol = 1e-2 if dtype == np.float16 else 1e-6
    assert rel_err(outs[1], reference.avg_pool(x, 3, **kw)) < tol
    assert rel_err(outs[2], reference.lp_pool(x, 2, 3, **kw)) < tol
    assert rel_err(grads[4], reference.lp_pool_backward(dy[2], x, 2, 3, **kw)) < tol
    np.testing.assert_array_equal(grads[2], grads[1])


def test_max_pool_backward_sums_overlapping_windows():
    x = np.array([[[1.0], [3.0], [3.0], [2.0]]])                  # (N, S, C)
    dx = npconv.max_pool_backward(np.ones((1, 3, 1)), x, 2, stride=1)
    assert dx.ravel().tolist() == [0.0, 2.0, 1.0, 0.0]


@pytest.mark.parametrize("stride", [1, 2])
def test_max_pool_backward_keeps_a_nan_gradient_at_its_element(stride):
    """dy NaN/inf at one window reaches only the element that window chose (the definition)."""
    x = np.arange(10.0).reshape(1, 10, 1)                          # (N, S, C): maxima at right
    dy = np.ones((1, npconv.max_pool(x, 2, stride=stride).shape[1], 1))
    dy[0, 1, 0], dy[0, 2, 0] = np.nan, np.inf
    dx = npconv.max_pool_backward(dy, x, 2, stride=stride)
    np.testing.assert_array_equal(dx, reference.max_pool_backward(dy, x, 2, stride=stride))
    assert np.isnan(dx).sum() == 1 and np.isinf(dx).sum() == 1


def test_indices_and_recomputed_argmax_agree_in_both_layouts(rng):
    """The layer's pair: forward with indices, backward from them, no x needed."""
    x = rng.integers(-2, 3, size=(2, 4, 9, 8)).astype(np.float32)  # ties
    for fmt in DATA_FORMATS:
        kw = dict(kernel_size=3, stride=2, padding=1, data_format=fmt)
        y, idx = npconv.max_pool(x, **kw, return_indices=True)
        dy = rng.standard_normal(y.shape).astype(np.float32)
        np.testing.assert_array_equal(npconv.max_pool_backward(dy, x.shape, **kw, indices=idx),
                                      npconv.max_pool_backward(dy, x, **kw))


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


def test_spans_window_counts_and_live_windows():
    spec = pool_spec((1, 5, 1), 3, stride=2, padding=1, ceil_mode=True)
    assert isinstance(spec, PoolSpec) and spec.out_size == (3,)
    # windows cover [-1, 2), [1, 4), [3, 6): the last runs past the input (S=5) and padding
    assert [spec.span(0, k) for k in range(3)] == [(1, 3, 1), (0, 3, 0), (0, 2, 1)]
    assert spec.window_counts(include_pad=False).tolist() == [2.0, 3.0, 2.0]
    assert spec.window_counts(include_pad=True).tolist() == [3.0, 3.0, 3.0]
    wide = pool_spec((1, 2, 1), 2, stride=1, padding=((3, 0),))   # windows at -3, -2, -1, 0
    assert wide.live_windows(0) == 2 and wide.span(0, 1, lo=-3, hi=2) == (0, 4, -2)


# ---------------------------------------------------------------------------------------------
# Regressions (each failed on cf42279)
# ---------------------------------------------------------------------------------------------


def test_huge_stride_is_a_clear_error():
    """max_pool(stride=10**20) raised NumPy's OverflowError from a slice."""
    with pytest.raises(ValueError, match=r"`stride` must be at most sys.maxsize"):
        npconv.max_pool(np.zeros((1, 4, 1)), 2, stride=10**20)
    with warnings.catch_warnings():
        warnings.simplefilter("error")      # a chunk reads one window's rows, not stride rows
        y = npconv.max_pool(np.arange(4.0).reshape(1, 4, 1), 2, stride=2**62)  # one window
    assert y.ravel().tolist() == [1.0]


@pytest.mark.parametrize("fmt", DATA_FORMATS)
def test_batch_zero_forward_and_backward(fmt):
    """avg_pool_backward refused the batch-0 x_shape its forward accepts."""
    x = np.zeros((0, 4, 5, 3) if fmt == "channels_last" else (0, 3, 4, 5))
    kw = dict(kernel_size=2, data_format=fmt)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    assert npconv.avg_pool_backward(npconv.avg_pool(x, **kw), x.shape, **kw).shape == x.shape
    assert npconv.max_pool_backward(y, x.shape, **kw, indices=idx).shape == x.shape
    assert npconv.lp_pool_backward(y, x, 2, **kw).shape == x.shape
    assert npconv.global_max_pool_backward(np.zeros((0, 3)), x, data_format=fmt).shape == x.shape


@pytest.mark.parametrize("op", [npconv.global_avg_pool, npconv.global_max_pool])
def test_global_pool_of_an_empty_axis_is_a_clear_error(op):
    """global_avg_pool returned NaN for an empty spatial axis (PyTorch raises too)."""
    with pytest.raises(ValueError, match=r"`x` must have spatial sizes >= 1.*axis 2"):
        op(np.zeros((2, 3, 0, 4)))


def test_onnx_pooling_gaps_are_closed():
    """Each raised on cf42279: padding wider than half the window, avg_pool dilation,
    integer max pooling, global max pooling, Lp pooling."""
    x = np.arange(1.0, 26.0).reshape(1, 5, 5, 1)                   # (N, H, W, C)
    assert npconv.avg_pool(x, 3, stride=1, padding=2).shape == (1, 7, 7, 1)
    assert npconv.avg_pool(x, 2, stride=1, dilation=2).ravel().tolist()[:2] == [7.0, 8.0]
    assert npconv.max_pool(x.astype(np.uint8), 2).dtype == np.uint8
    assert npconv.global_max_pool(x).ravel().tolist() == [25.0]
    assert npconv.lp_pool(x, 1, 5).ravel().tolist() == [325.0]


@pytest.mark.parametrize("block", re.findall(
    r"```python\n(.*?)```", (Path(__file__).parents[1] / "docs" / "pooling.md").read_text(),
    flags=re.S))
def test_docs_examples_run(block):
    exec(compile(block, "docs/pooling.md", "exec"), {})


# ---------------------------------------------------------------------------------------------
# Errors: every branch names the argument
# ---------------------------------------------------------------------------------------------

X = np.zeros((1, 6, 6, 2))
DY = np.zeros((1, 3, 3, 2))
IDX = np.zeros((1, 3, 3, 2), dtype=np.int64)
CODES = np.ones((1, 3, 3, 2), dtype=np.uint8)

ERRORS = [
    (lambda: npconv.max_pool([[1.0]], 2), TypeError, "`x` must be a numpy.ndarray"),
    (lambda: npconv.max_pool(X.astype(bool), 2), TypeError, "`x` must have dtype float16, "
     "float32, float64 or an integer dtype; got dtype bool"),
    (lambda: npconv.avg_pool(X.astype(int), 2), TypeError, "`x` must have dtype float"),
    (lambda: npconv.max_pool(np.zeros((6, 2)), 2), ValueError, "at least 3 dimensions"),
    (lambda: npconv.max_pool(np.zeros((1, 0, 2)), 1), ValueError, "spatial sizes >= 1"),
    (lambda: npconv.max_pool(X, 0), ValueError, "`kernel_size` must be >= 1"),
    (lambda: npconv.max_pool(X, (2, 2, 2)), TypeError, "`kernel_size` must be an int or a tuple"),
    (lambda: npconv.max_pool(X, 2, stride=0), ValueError, "`stride` must be >= 1"),
    (lambda: npconv.max_pool(X, 2, dilation=1.5), TypeError, "`dilation` must be an int"),
    (lambda: npconv.max_pool(X, 2**64), ValueError, "`kernel_size` must be at most sys.maxsize"),
    (lambda: npconv.max_pool(X, 2, dilation=2**64), ValueError, "`dilation` must be at most"),
    (lambda: npconv.max_pool(X, 3, padding=2**63), ValueError,
     r"`padding` must keep the padded size S \+ lo \+ hi at most sys.maxsize"),
    (lambda: npconv.max_pool(X, 3, padding=-1), ValueError, "`padding` must be >= 0"),
    (lambda: npconv.max_pool(X, 3, padding=(1, 2, 3)), TypeError, "`padding` must be an int"),
    (lambda: npconv.max_pool(X, 7), ValueError, "output size must be >= 1"),
    (lambda: npconv.max_pool(X, 2, ceil_mode=1), TypeError, "`ceil_mode` must be True or False"),
    (lambda: npconv.max_pool(X, 2, return_indices="yes"), TypeError, "`return_indices`"),
    (lambda: npconv.max_pool(X, 2, data_format="NHWC"), ValueError, "`data_format` must be one"),
    (lambda: npconv.max_pool_backward(np.zeros((1, 2, 2, 2)), X, 2), ValueError,
     r"`dy` must have shape \(1, 3, 3, 2\)"),
    (lambda: npconv.max_pool_backward([0.0], X, 2), TypeError, "`dy` must be a numpy.ndarray"),
    (lambda: npconv.max_pool_backward(DY, X.shape, 2), TypeError,
     r"`x` must be the forward's input array \(its shape will do only with `indices=`\); got "
     "tuple"),
    (lambda: npconv.global_max_pool_backward(np.zeros((1, 2)), X.shape), TypeError,
     "`x` must be the forward's input array"),
    (lambda: npconv.max_pool_backward(DY, (1, 6, 6, 2), 2, indices=IDX, data_format="NHWC"),
     ValueError, "`data_format` must be one"),
    (lambda: npconv.max_pool_backward(DY, "x", 2, indices=IDX), TypeError,
     "`x` must be a tuple of ints"),
    (lambda: npconv.max_pool_backward(DY, (1, 0, 6, 2), 2, indices=IDX), ValueError,
     "`x` must have spatial sizes >= 1"),
    (lambda: npconv.max_pool_backward(DY, X, 2, indices=[0]), TypeError,
     "`indices` must be a numpy.ndarray"),
    (lambda: npconv.max_pool_backward(DY, X, 2, indices=IDX.astype(float)), TypeError,
     "`indices` must have an integer dtype"),
    (lambda: npconv.max_pool_backward(DY, X, 2, indices=IDX[:, :2]), ValueError,
     r"`indices` must have shape \(1, 3, 3, 2\)"),
    (lambda: npconv.max_pool_backward(DY, X, 2, indices=IDX + 36), ValueError,
     r"`indices` must be flat indices into the spatial dimensions, in \[0, 36\)"),
    (lambda: npconv.max_pool_backward(DY, X, 2, indices=IDX - 2), ValueError,
     r"got values in \[-2, -2\]"),
    (lambda: pooling.max_pool_codes(X.astype(bool), 2), TypeError, "`x` must have dtype"),
    (lambda: pooling.max_pool_codes_backward(DY, [0], X.shape, 2), TypeError,
     "`codes` must be a numpy.ndarray"),
    (lambda: pooling.max_pool_codes_backward(DY, IDX, X.shape, 2), TypeError,
     "`codes` must have dtype uint8 \\(what max_pool_codes gives for this kernel\\); got dtype "
     "int64"),
    (lambda: pooling.max_pool_codes_backward(DY, CODES[:, :2], X.shape, 2), ValueError,
     r"`codes` must have shape \(1, 3, 3, 2\)"),
    (lambda: pooling.max_pool_codes_backward(DY, CODES + 5, X.shape, 2), ValueError,
     r"`codes` must be in \[0, 4\] \(prod\(kernel_size\)\); got values up to 6"),
    (lambda: pooling.max_pool_codes_backward(np.ones((1, 4, 1)), np.full((1, 4, 1), 1, np.uint8),
                                             (1, 4, 1), 3, stride=1, padding=1), ValueError,
     "`codes` name taps outside the input"),
    (lambda: pooling.max_pool_codes_backward(DY, CODES, "x", 2), TypeError,
     "`x_shape` must be a tuple of ints"),
    (lambda: pooling.max_pool_codes_backward(DY.astype(int), CODES, X.shape, 2), TypeError,
     "`dy` must have dtype float"),
    (lambda: pooling.max_pool_codes_backward(DY[:, :2], CODES, X.shape, 2), ValueError,
     r"`dy` must have shape \(1, 3, 3, 2\)"),
    (lambda: npconv.avg_pool(X, 2, count_include_pad=None), TypeError, "`count_include_pad`"),
    (lambda: npconv.avg_pool_backward(DY, "x", 2), TypeError, "`x_shape` must be a tuple of ints"),
    (lambda: npconv.avg_pool_backward(DY, (1, 0, 6, 2), 2), ValueError,
     "`x_shape` must have spatial sizes >= 1"),
    (lambda: npconv.avg_pool_backward(DY, (-1, 6, 6, 2), 2), ValueError,
     "`x_shape` must have sizes >= 0"),
    (lambda: npconv.avg_pool_backward(DY, X.shape, 2, data_format="NC"), ValueError,
     "`data_format` must be one"),
    (lambda: npconv.avg_pool_backward(np.zeros((1, 2, 2, 2)), X.shape, 2), ValueError,
     "`dy` must have shape"),
    (lambda: npconv.lp_pool(X, "2", 2), TypeError, "`p` must be a real number >= 1"),
    (lambda: npconv.lp_pool(X, True, 2), TypeError, "`p` must be a real number"),
    (lambda: npconv.lp_pool(X, 0.5, 2), ValueError, "`p` must be a finite number >= 1"),
    (lambda: npconv.lp_pool(X, np.inf, 2), ValueError, "`p` must be a finite number >= 1"),
    (lambda: npconv.lp_pool_backward(np.zeros((1, 2, 2, 2)), X, 2, 2), ValueError,
     "`dy` must have shape"),
    (lambda: npconv.global_avg_pool(np.zeros((2, 3))), ValueError, "at least 3 dimensions"),
    (lambda: npconv.global_avg_pool(X, data_format="last"), ValueError, "`data_format`"),
    (lambda: npconv.global_avg_pool_backward(np.zeros((1, 3)), X.shape), ValueError,
     r"`dy` must have shape \(1, 2\)"),
    (lambda: npconv.global_avg_pool_backward(np.zeros((1, 2)), (1, 0, 2)), ValueError,
     "`x_shape` must have spatial sizes >= 1"),
    (lambda: npconv.global_max_pool(X.astype(complex)), TypeError, "`x` must have dtype"),
    (lambda: npconv.global_max_pool(X, return_indices=1), TypeError, "`return_indices`"),
    (lambda: npconv.global_max_pool_backward(np.zeros((1, 3)), X), ValueError,
     r"`dy` must have shape \(1, 2\)"),
    (lambda: npconv.global_max_pool_backward(np.zeros((1, 2)), X,
                                             indices=np.full((1, 2), 36)), ValueError,
     r"`indices` must be flat indices into the spatial dimensions, in \[0, 36\)"),
    (lambda: npconv.global_max_pool_backward(np.zeros((1, 2)), X,
                                             indices=np.zeros((2, 2), int)), ValueError,
     r"`indices` must have shape \(1, 2\)"),
]


@pytest.mark.parametrize("call, error, match", ERRORS)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
