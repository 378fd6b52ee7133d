"""npconv.nn.resample: upsampling against naive loops written from PyTorch's index rules, the
adjoint identity and central differences for the backward, PyTorch's interpolate and autograd
(every mode, rank and option, both layouts), NaN and inf, float16, the GEMM and strided paths,
threads, and every error."""

import itertools
import math

import numpy as np
import pytest
from helpers import central_difference, rel_err

import npconv
from npconv.nn import resample as R

FORMATS = ("channels_last", "channels_first")
LINEAR = {1: "linear", 2: "bilinear", 3: "trilinear"}


def to_format(x, fmt):
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x


def from_format(x, fmt):
    return np.moveaxis(x, 1, -1) if fmt == "channels_first" else x


# ---------------------------------------------------------------------------------------------
# The reference: one output position per iteration, PyTorch's rules written out
# ---------------------------------------------------------------------------------------------


def source(p: int, n_in: int, n_out: int, scale, mode: str, align: bool, dtype):
    """[(input index, weight)] that output position p of one axis reads (PyTorch's CPU rules:
    nearest in float32, linear in the opmath type)."""
    if mode in ("nearest", "nearest-exact"):
        f32 = np.float32
        ratio = f32(1 / scale) if scale else f32(n_in) / f32(n_out)
        shift = f32(0.5) if mode == "nearest-exact" else f32(0)
        return [(min(math.floor((f32(p) + shift) * ratio), n_in - 1), 1.0)]
    t = np.dtype(dtype).type
    if n_in == n_out:
        return [(p, 1.0), (p, 0.0)]
    if align:
        src = (t(n_in - 1) / t(n_out - 1) if n_out > 1 else t(0)) * t(p)
    else:
        ratio = t(1 / scale) if scale else t(n_in) / t(n_out)
        src = max(ratio * (t(p) + t(0.5)) - t(0.5), t(0))
    i0 = min(math.floor(src), n_in - 1)
    l1 = min(max(src - t(i0), t(0)), t(1))
    return [(i0, t(1) - l1), (i0 + (i0 < n_in - 1), l1)]


def naive_upsample(x, out_size, mode, align, scales, dtype):
    """x (N, *S, C) float64 -> (N, *P, C), loops over output positions and corners."""
    in_size = x.shape[1:-1]
    y = np.zeros((x.shape[0], *out_size, x.shape[-1]))
    for p in np.ndindex(*out_size):
        reads = [source(pi, n, o, s, mode, align, dtype)
                 for pi, n, o, s in zip(p, in_size, out_size, scales)]
        for corner in itertools.product(*reads):
            index = tuple(i for i, _ in corner)
            weight = math.prod(float(w) for _, w in corner)
            y[(slice(None), *p)] += weight * x[(slice(None), *index)]
    return y


def options(rank):
    """(mode, align_corners, keyword arguments) for a spread of geometries."""
    geometry = [dict(scale_factor=2), dict(scale_factor=1.5), dict(scale_factor=0.6),
                dict(scale_factor=3), dict(size=7), dict(size=1),
                dict(scale_factor=2.5, recompute_scale_factor=True),
                dict(scale_factor=(2, 1, 1.5)[:rank]) if rank > 1 else dict(scale_factor=1)]
    for kw in geometry:
        for mode in ("nearest", "nearest-exact"):
            yield mode, None, kw
        for align in (False, True):
            yield LINEAR[rank], align, kw


def resolved(x_shape, kw):
    in_size = x_shape[1:-1]
    out_size = R.upsample_size(in_size, kw.get("size"), kw.get("scale_factor"))
    scale = kw.get("scale_factor")
    if scale is None or kw.get("recompute_scale_factor"):
        return out_size, (None,) * len(in_size)
    return out_size, scale if isinstance(scale, tuple) else (scale,) * len(in_size)


@pytest.mark.parametrize("rank, size", [(1, (5,)), (2, (4, 3)), (3, (3, 2, 3))])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_naive_loops(rank, size, dtype, rng):
    x = rng.standard_normal((2, *size, 3)).astype(dtype)
    for mode, align, kw in options(rank):
        out_size, scales = resolved(x.shape, kw)
        want = naive_upsample(x.astype(np.float64), out_size, mode, bool(align), scales, dtype)
        for fmt in FORMATS:
            y = R.upsample(to_format(x, fmt), mode=mode, align_corners=align, data_format=fmt,
                           **kw)
            assert y.dtype == dtype
            tol = 1e-6 if dtype == np.float32 else 1e-14
            assert rel_err(from_format(y, fmt), want) < tol, (mode, align, kw, fmt)


@pytest.mark.parametrize("rank, size", [(1, (6,)), (2, (4, 5)), (3, (3, 2, 4))])
def test_backward_is_the_adjoint(rank, size, rng):
    """<dy, upsample(x)> = <upsample_backward(dy), x> for every mode and geometry (float64),
    and central differences agree on one of them."""
    x = rng.standard_normal((2, *size, 3))
    for mode, align, kw in options(rank):
        for fmt in FORMATS:
            xf = to_format(x, fmt)
            y = R.upsample(xf, mode=mode, align_corners=align, data_format=fmt, **kw)
            dy = rng.standard_normal(y.shape)
            dx = R.upsample_backward(dy, xf.shape, mode=mode, align_corners=align,
                                     data_format=fmt, **kw)
            assert dx.shape == xf.shape
            assert abs((dy * y).sum() - (dx * xf).sum()) < 1e-12 * np.abs(dy * y).sum()
    small = x[:1, :2].copy()
    dy = rng.standard_normal(R.upsample(small, scale_factor=1.7, mode=LINEAR[rank]).shape)
    numeric = central_difference(lambda: float((R.upsample(small, scale_factor=1.7,
                                                           mode=LINEAR[rank]) * dy).sum()), small)
    dx = R.upsample_backward(dy, small.shape, scale_factor=1.7, mode=LINEAR[rank])
    assert rel_err(dx, numeric) < 1e-8


@pytest.mark.parametrize("rank", [1, 2, 3])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fmt", FORMATS)
def test_matches_torch(torch, rank, dtype, fmt, rng):
    x = rng.standard_normal((2, *(4, 5, 3)[:rank], 3)).astype(dtype)
    for mode, align, kw in options(rank):
        xt = torch.from_numpy(to_format(x, "channels_first")).requires_grad_()
        yt = torch.nn.functional.interpolate(xt, mode=mode, align_corners=align, **kw)
        dy = rng.standard_normal(yt.shape).astype(dtype)         # (N, C, *P)
        yt.backward(torch.from_numpy(dy))
        xf = to_format(x, fmt)
        y = R.upsample(xf, mode=mode, align_corners=align, data_format=fmt, **kw)
        dyf = dy if fmt == "channels_first" else np.ascontiguousarray(np.moveaxis(dy, 1, -1))
        dx = R.upsample_backward(dyf, xf.shape, mode=mode, align_corners=align,
                                 data_format=fmt, **kw)
        tol = 1e-5 if dtype == np.float32 else 1e-13
        want_y, want_dx = (yt.detach().numpy(), xt.grad.numpy())
        if fmt == "channels_last":
            want_y, want_dx = np.moveaxis(want_y, 1, -1), np.moveaxis(want_dx, 1, -1)
        assert rel_err(y, want_y) < tol, (mode, align, kw)
        assert rel_err(dx, want_dx) < tol, (mode, align, kw)


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_nan_and_inf_stay_where_the_definition_puts_them(torch, mode, rng):
    """A non-finite input takes the exact strided path (a GEMM's zeros would spread it):
    NaN and inf reach exactly the outputs PyTorch's arithmetic gives them to, and the rest
    equals the finite (GEMM) result."""
    x = rng.standard_normal((2, 6, 5, 3))
    bad = x.copy()
    bad[1, 2, 3, 1], bad[1, 4, 0, 2] = np.nan, np.inf
    kw = dict(scale_factor=2, mode=mode)
    y, clean = R.upsample(bad, **kw), R.upsample(x, **kw)
    xt = torch.from_numpy(to_format(bad, "channels_first"))
    yt = np.moveaxis(torch.nn.functional.interpolate(xt, **kw).numpy(), 1, -1)
    np.testing.assert_array_equal(np.isnan(y), np.isnan(yt))
    np.testing.assert_array_equal(np.isinf(y), np.isinf(yt))
    assert rel_err(y[0], clean[0]) < 1e-15
    finite = np.isfinite(yt)
    assert rel_err(y[finite], yt[finite]) < 1e-13
    dy = rng.standard_normal(y.shape)
    dy[0, 3, 3, 0] = np.nan
    dx, dx_clean = R.upsample_backward(dy, x.shape, **kw), R.upsample_backward(
        np.nan_to_num(dy), x.shape, **kw)
    assert np.isnan(dx[0, 1, 1, 0]) and np.isnan(dx).sum() <= 4
    assert rel_err(dx[1], dx_clean[1]) < 1e-15


@pytest.mark.parametrize("fmt", FORMATS)
def test_float16_threads_and_inputs_unchanged(fmt, rng):
    x = to_format(rng.standard_normal((6, 40, 36, 8)), fmt).astype(np.float16)
    x0 = x.copy()
    kw = dict(scale_factor=2, mode="bilinear", data_format=fmt)
    y = R.upsample(x, **kw)
    assert y.dtype == np.float16
    np.testing.assert_array_equal(y, R.upsample(x.astype(np.float32), **kw).astype(np.float16))
    dy = rng.standard_normal(y.shape).astype(np.float32)
    results = []
    for threads in (1, 2):
        with npconv.config(threads=threads):
            results.append((R.upsample(x.astype(np.float32), **kw),
                            R.upsample_backward(dy, x.shape, **kw)))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(x, x0)
    dx16 = R.upsample_backward(dy.astype(np.float16), x.shape, **kw)
    assert dx16.dtype == np.float16


def test_non_contiguous_input_and_identity_size(rng):
    x = rng.standard_normal((2, 8, 6, 3))[:, ::2]                # (2, 4, 6, 3), strided
    y = R.upsample(x, size=(4, 6), mode="bilinear")
    np.testing.assert_array_equal(y, x)                          # 1 * x + 0 * x
    assert y.flags.c_contiguous and y.flags.writeable
    np.testing.assert_array_equal(R.upsample(x, scale_factor=1), x)


def test_bands_cover_each_destination_once():
    """The GEMM bands of an axis tile its destination exactly, forward and backward."""
    ax = R._maps((13,), (29,), (None,), "linear", False, np.dtype(np.float64))[0]
    covered_out = np.concatenate([np.arange(29)[dst] for dst, _, _ in ax.forward])
    covered_in = np.concatenate([np.arange(13)[dst] for dst, _, _ in ax.backward])
    np.testing.assert_array_equal(covered_out, np.arange(29))
    np.testing.assert_array_equal(covered_in, np.arange(13))


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_errors(rng):
    x = rng.standard_normal((2, 4, 4, 3))
    with pytest.raises(TypeError, match=r"`x` must be a numpy\.ndarray"):
        R.upsample(x.tolist(), scale_factor=2)
    with pytest.raises(ValueError, match="exactly one of `size` and `scale_factor`"):
        R.upsample(x)
    with pytest.raises(ValueError, match="exactly one of `size` and `scale_factor`"):
        R.upsample(x, size=8, scale_factor=2)
    with pytest.raises(ValueError, match="`mode` must be one of"):
        R.upsample(x, scale_factor=2, mode="bicubic")
    with pytest.raises(ValueError, match="mode='trilinear' needs 3 spatial dimension"):
        R.upsample(x, scale_factor=2, mode="trilinear")
    with pytest.raises(ValueError, match="`align_corners` can only be set with the linear"):
        R.upsample(x, scale_factor=2, align_corners=True)
    with pytest.raises(TypeError, match="`align_corners` must be a bool or None"):
        R.upsample(x, scale_factor=2, mode="bilinear", align_corners=1)
    with pytest.raises(TypeError, match="`recompute_scale_factor` must be a bool or None"):
        R.upsample(x, scale_factor=2, recompute_scale_factor=1)
    with pytest.raises(TypeError, match="`scale_factor` must be a number or a tuple of 2"):
        R.upsample(x, scale_factor=(2, 2, 2))
    with pytest.raises(ValueError, match="`scale_factor` must be > 0 and finite"):
        R.upsample(x, scale_factor=-1)
    with pytest.raises(TypeError, match="`size` must be an int or a tuple of 2 ints"):
        R.upsample(x, size=(8.0, 8))
    with pytest.raises(ValueError, match="the output size must be >= 1"):
        R.upsample(x, scale_factor=0.1)
    with pytest.raises(ValueError, match="with at least one spatial dimension"):
        R.upsample(np.ones((2, 3)), scale_factor=2)
    with pytest.raises(ValueError, match="`data_format` must be one of"):
        R.upsample(x, scale_factor=2, data_format="NHWC")
    with pytest.raises(ValueError, match=r"`dy` must have the output's shape \(2, 8, 8, 3\)"):
        R.upsample_backward(np.ones((2, 8, 7, 3)), x.shape, scale_factor=2)
    with pytest.raises(TypeError, match="`dy` must have dtype float16, float32 or float64"):
        R.upsample_backward(np.ones((2, 8, 8, 3), int), x.shape, scale_factor=2)


def test_empty_batch():
    y = R.upsample(np.ones((0, 3, 3, 2)), scale_factor=2, mode="bilinear")
    assert y.shape == (0, 6, 6, 2)
    assert R.upsample_backward(y, (0, 3, 3, 2), scale_factor=2, mode="bilinear").shape == (
        0, 3, 3, 2)
