"""Properties of the fast convolution ops, over random geometries.

forward == reference; gradients == reference and == central differences; the adjoint identities
that define a gradient; conv_transpose == the input gradient of conv; layouts agree; unfold
reads what the window formula says, and pad_adjoint is the exact reverse of the padding.
"""

import itertools

import numpy as np
import pytest
from helpers import central_difference, rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_geometry, transpose_bias_size, transpose_geometry

import npconv
from npconv import _config, _layout, _workspace, reference
from npconv import _windows as windows
from npconv.spec import conv_spec, conv_transpose_spec


def seeded(geom):
    return np.random.default_rng(abs(hash(str(geom))) % 2**32)


@given(conv_geometry())
def test_forward_matches_reference(geom):
    x, w, b = geom.arrays(seeded(geom))
    assert rel_err(npconv.conv(x, w, b, **geom.kwargs), reference.conv(x, w, b, **geom.kwargs)) \
        < 1e-10


@given(conv_geometry())
def test_backward_matches_reference(geom):
    rng = seeded(geom)
    x, w, _ = geom.arrays(rng)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, **geom.kwargs).y_shape())
    got = npconv.conv_backward(dy, x, w, **geom.kwargs)
    want = reference.conv_backward(dy, x, w, **geom.kwargs)
    for name, a, b in zip(("dx", "dw", "db"), got, want):
        assert rel_err(a, b) < 1e-10, name


@given(conv_geometry(), st.sampled_from([np.float32, np.float16]))
def test_low_precision_matches_reference(geom, dtype):
    rng = seeded(geom)
    x, w, b = geom.arrays(rng, dtype)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, **geom.kwargs).y_shape()).astype(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-2
    y = npconv.conv(x, w, b, **geom.kwargs)
    assert y.dtype == dtype
    assert rel_err(y, reference.conv(x, w, b, **geom.kwargs)) < tol
    for a, ref in zip(npconv.conv_backward(dy, x, w, **geom.kwargs),
                      reference.conv_backward(dy, x, w, **geom.kwargs)):
        assert a.dtype == dtype
        assert rel_err(a, ref) < tol


@settings(max_examples=10)
@given(conv_geometry(ranks=(1, 2)))
def test_gradients_match_central_differences(geom):
    rng = seeded(geom)
    x, w, b = geom.arrays(rng)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, **geom.kwargs).y_shape())

    def loss():
        return float(np.sum(dy * npconv.conv(x, w, b, **geom.kwargs)))

    dx, dw, db = npconv.conv_backward(dy, x, w, **geom.kwargs)
    assert rel_err(dx, central_difference(loss, x)) < 1e-6
    assert rel_err(dw, central_difference(loss, w)) < 1e-6
    assert rel_err(db, central_difference(loss, b)) < 1e-6


@given(conv_geometry())
def test_adjoint_identities(geom):
    """<dy, conv(x, w)> == <grad_input(dy), x> == <grad_weight(dy), w>: conv is linear in each."""
    rng = seeded(geom)
    x, w, _ = geom.arrays(rng)
    y = npconv.conv(x, w, **geom.kwargs)
    dy = rng.standard_normal(y.shape)
    lhs = np.vdot(dy, y)
    dx = npconv.conv_grad_input(dy, w, x.shape, **geom.kwargs)
    dw = npconv.conv_grad_weight(dy, x, w.shape, **geom.kwargs)
    scale = np.abs(dy).sum() * np.abs(y).max() + 1e-300
    assert abs(lhs - np.vdot(dx, x)) / scale < 1e-12
    assert abs(lhs - np.vdot(dw, w)) / scale < 1e-12


@given(conv_geometry(modes=("zeros",), forms=("int", "pairs", "same")))
def test_layouts_agree(geom):
    """channels_first on transposed arrays gives the transposed channels_last result."""
    x, w, b = geom.arrays(seeded(geom))
    kw = dict(geom.kwargs)
    r = x.ndim - 2
    if kw["data_format"] == "channels_first":
        x_l, w_l = np.moveaxis(x, 1, -1), w.transpose(*range(2, r + 2), 1, 0)
    else:
        x_l, w_l = x, w
    y_first = npconv.conv(np.moveaxis(x_l, -1, 1), w_l.transpose(r + 1, r, *range(r)), b,
                          **{**kw, "data_format": "channels_first"})
    y_last = npconv.conv(x_l, w_l, b, **{**kw, "data_format": "channels_last"})
    assert rel_err(np.moveaxis(y_first, 1, -1), y_last) < 1e-12


@given(transpose_geometry())
def test_conv_transpose_matches_reference(geom):
    rng = seeded(geom)
    x, w, _ = geom.arrays(rng)
    b = rng.standard_normal(transpose_bias_size(geom))
    y = npconv.conv_transpose(x, w, b, **geom.kwargs)
    assert rel_err(y, reference.conv_transpose(x, w, b, **geom.kwargs)) < 1e-10
    dy = rng.standard_normal(y.shape)
    got = npconv.conv_transpose_backward(dy, x, w, **geom.kwargs)
    want = reference.conv_transpose_backward(dy, x, w, **geom.kwargs)
    for name, a, ref in zip(("dx", "dw", "db"), got, want):
        assert rel_err(a, ref) < 1e-10, name


@given(transpose_geometry(forms=("int", "pairs")))
def test_conv_transpose_is_the_input_gradient_of_conv(geom):
    """conv_transpose(x, w) == conv_grad_input(x, w) for the conv from its output to its input."""
    kw = dict(geom.kwargs)
    spec = conv_transpose_spec(geom.x_shape, geom.w_shape, **kw)
    if any(e >= s for e, s in zip(kw["output_padding"], kw["stride"])):
        return                      # then the forward conv's natural output is larger than x
    x, w, _ = geom.arrays(seeded(geom))
    y = npconv.conv_transpose(x, w, **kw)
    conv_kw = dict(stride=kw["stride"], padding=spec.pads, dilation=kw["dilation"],
                   groups=kw["groups"], data_format=kw["data_format"])
    assert rel_err(y, npconv.conv_grad_input(x, w, y.shape, **conv_kw)) < 1e-12


@given(conv_geometry(modes=("zeros",)))
def test_unfold_reads_the_window_formula(geom):
    """Window p, kernel offset k of `unfold` is the padded input at p * stride + k * dilation
    (`ConvSpec.window`), a read-only view."""
    last = {**geom.kwargs, "data_format": "channels_last"}
    if geom.kwargs["data_format"] != "channels_last":
        return
    spec = conv_spec(geom.x_shape, geom.w_shape, **last)
    xp = seeded(geom).standard_normal((spec.batch, *spec.padded_size, spec.in_channels))
    cols = windows.unfold(xp, spec.kernel_size, spec.stride, spec.dilation, spec.out_size)
    assert cols.shape == (spec.batch, *spec.out_size, *spec.kernel_size, spec.in_channels)
    assert not cols.flags.writeable
    for p in itertools.product(*map(range, spec.out_size)):
        want = np.moveaxis(xp[(slice(None), *spec.window(p))], 0, -2)  # (*K, N, C)
        np.testing.assert_array_equal(np.moveaxis(cols[(slice(None), *p)], 0, -2), want)


@pytest.mark.parametrize("mode", ["zeros", "reflect", "replicate", "circular"])
def test_pad_adjoint_is_the_adjoint_of_the_padding(mode, rng):
    pads = ((2, 1), (0, 3), (1, 1))
    x = rng.standard_normal((2, 4, 5, 3, 2))
    settings = _config.resolve()
    with _workspace.scope(settings):
        xp = _layout.padded(x, pads, mode, x.dtype, settings).copy()
    g = rng.standard_normal(xp.shape)
    assert abs(np.vdot(xp, g) - np.vdot(x, windows.pad_adjoint(g, pads, mode))) < 1e-10


@given(conv_geometry(ranks=(2,)), st.sampled_from([np.float16, np.float32, np.float64]),
       st.sampled_from([np.float32, np.float64]))
def test_mixed_dtypes_follow_numpy_promotion(geom, dtype_x, dtype_w):
    x, w, _ = geom.arrays(seeded(geom))
    x, w = x.astype(dtype_x), w.astype(dtype_w)
    want = np.result_type(dtype_x, dtype_w)
    y = npconv.conv(x, w, **geom.kwargs)
    assert y.dtype == want
    assert all(g.dtype == want for g in npconv.conv_backward(np.ones_like(y), x, w, **geom.kwargs))


def test_batch_items_are_independent(rng):
    """Each batch item's output depends on that item alone (no mixing along N)."""
    x, w = rng.standard_normal((3, 9, 8, 4)), rng.standard_normal((3, 2, 4, 5))
    kw = dict(stride=2, padding=((1, 0), (2, 1)), dilation=(1, 2))
    y = npconv.conv(x, w, **kw)
    for i in range(3):
        np.testing.assert_allclose(y[i:i + 1], npconv.conv(x[i:i + 1], w, **kw), rtol=1e-13)


@pytest.mark.parametrize("algorithm", [None, "im2col", "pointwise"])
def test_an_empty_batch_gives_empty_results(algorithm):
    """N = 0: empty outputs and gradients, zero dw and db, for every op and algorithm."""
    k = (1, 1) if algorithm == "pointwise" else (3, 3)
    x, w = np.zeros((0, 5, 6, 2)), np.ones((*k, 2, 4))
    kw = dict(padding=1, algorithm=algorithm)
    y = npconv.conv(x, w, **kw)
    assert y.shape == (0, *y.shape[1:3], 4)
    dx, dw, db = npconv.conv_backward(y, x, w, **kw)
    assert dx.shape == x.shape and np.array_equal(dw, np.zeros_like(w))
    assert np.array_equal(db, np.zeros(4))
    t = npconv.conv_transpose(np.zeros((0, 3, 3, 4)), w, stride=2)
    assert t.shape[0] == 0 and t.shape[-1] == 2


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 5, 6, 0), (3, 3, 0, 4), {"padding": 1}),                       # C = 0
    ((2, 5, 6, 3), (3, 3, 3, 0), {}),                                   # F = 0
    ((2, 5, 6, 0), (3, 3, 0, 4), {"groups": 2}),                        # groups 2, C = 0
    ((0, 5, 6, 3), (3, 3, 3, 0), {"stride": 2}),                        # N = 0, F = 0
    ((1, 0, 5, 2), (1, 3, 2, 3), {"padding": 1, "padding_mode": "replicate"}),  # S = 0
    ((1, 0, 5, 2), (2, 3, 2, 3), {"padding": 1}),                       # S = 0, zeros
])
def test_zero_size_dimensions_give_the_references_results(x_shape, w_shape, kwargs, rng):
    """Empty or zero results where the definition gives them, never a reshape error."""
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[-1])
    y = npconv.conv(x, w, b, **kwargs)
    want = reference.conv(x, w, b, **kwargs)
    assert y.shape == want.shape and np.array_equal(y, want)
    dy = rng.standard_normal(y.shape)
    for got, ref in zip(npconv.conv_backward(dy, x, w, **kwargs),
                        reference.conv_backward(dy, x, w, **kwargs)):
        assert got.shape == ref.shape and rel_err(got, ref) < 1e-12


@pytest.mark.parametrize("x_shape, w_shape", [((1, 0, 4, 3), (3, 3, 2, 3)),
                                              ((1, 2, 4, 0), (3, 3, 2, 0)),
                                              ((1, 2, 4, 3), (3, 3, 0, 3))])
def test_zero_size_transposed_convolutions(x_shape, w_shape, rng):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[-2])
    y = npconv.conv_transpose(x, w, b, stride=2)
    want = reference.conv_transpose(x, w, b, stride=2)
    assert y.shape == want.shape and rel_err(y, want) < 1e-12
    dy = rng.standard_normal(y.shape)
    for got, ref in zip(npconv.conv_transpose_backward(dy, x, w, stride=2),
                        reference.conv_transpose_backward(dy, x, w, stride=2)):
        assert got.shape == ref.shape and rel_err(got, ref) < 1e-12


def test_backward_ops_take_the_forwards_bias(rng):
    """The forward op's arguments, bias included, with dy in front: the bias array gives db,
    None none; True and False say the same without the array."""
    x, w, b = rng.standard_normal((2, 6, 6, 3)), rng.standard_normal((3, 3, 3, 4)), np.zeros(4)
    dy = rng.standard_normal((2, 4, 4, 4))
    with_array = npconv.conv_backward(dy, x, w, b)
    assert np.array_equal(with_array.db, npconv.conv_backward(dy, x, w).db)
    np.testing.assert_allclose(with_array.db, dy.sum(axis=(0, 1, 2)), rtol=1e-13)
    assert npconv.conv_backward(dy, x, w, None).db is None
    assert npconv.conv_backward(dy, x, w, bias=False).db is None
    t = npconv.conv_transpose_backward(rng.standard_normal((2, 6, 6, 3)), dy, w, np.zeros(3))
    assert t.db.shape == (3,)
    assert npconv.conv_transpose_backward(rng.standard_normal((2, 6, 6, 3)), dy, w,
                                          None).db is None
