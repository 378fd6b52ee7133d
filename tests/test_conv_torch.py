"""PyTorch as an independent oracle: forward values and autograd gradients.

Skipped where torch is not installed. Padding is handed to torch in its own terms: zeros as
conv padding where it is symmetric, otherwise `F.pad` (reflect, replicate, circular or constant)
followed by an unpadded convolution, which is exactly how torch's Conv layers apply padding_mode.
"""

import numpy as np
import pytest
from hypothesis import given
from strategies import conv_geometry, transpose_bias_size, transpose_geometry

import npconv
from npconv.spec import conv_spec, conv_transpose_spec

TORCH_PAD_MODE = {"zeros": "constant", "reflect": "reflect", "replicate": "replicate",
                  "circular": "circular"}


def to_first(a, fmt):
    return np.moveaxis(a, -1, 1) if fmt == "channels_last" else a


def w_to_first(w, fmt):
    r = w.ndim - 2
    return w.transpose(r + 1, r, *range(r)) if fmt == "channels_last" else w


def from_first(a, fmt):
    return np.moveaxis(a, 1, -1) if fmt == "channels_last" else a


def torch_conv(torch, x, w, b, spec, fmt):
    """y, and a closure giving (dx, dw, db) by autograd, in npconv's layout."""
    F = torch.nn.functional
    xt = torch.tensor(np.ascontiguousarray(to_first(x, fmt)), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(w_to_first(w, fmt)), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    flat = [v for lo_hi in reversed(spec.pads) for v in lo_hi]        # last dim first
    xin = F.pad(xt, flat, mode=TORCH_PAD_MODE[spec.padding_mode])
    conv = (F.conv1d, F.conv2d, F.conv3d)[spec.rank - 1]
    yt = conv(xin, wt, bt, stride=spec.stride, dilation=spec.dilation, groups=spec.groups)

    def grads(dy):
        yt.backward(torch.tensor(np.ascontiguousarray(to_first(dy, fmt))))
        return (from_first(xt.grad.numpy(), fmt),
                w_to_first_inverse(wt.grad.numpy(), fmt), bt.grad.numpy())

    return from_first(yt.detach().numpy(), fmt), grads


def w_to_first_inverse(w, fmt):
    r = w.ndim - 2
    return w.transpose(*range(2, r + 2), 1, 0) if fmt == "channels_last" else w


def close(a, b, tol):
    scale = max(np.abs(b).max(initial=0.0), 1e-300)
    return a.shape == b.shape and np.abs(a - b).max(initial=0.0) / scale < tol


@given(conv_geometry())
def test_conv_and_gradients_match_torch(torch, geom):
    rng = np.random.default_rng(0)
    x, w, b = geom.arrays(rng)
    fmt = geom.kwargs["data_format"]
    spec = conv_spec(x.shape, w.shape, **geom.kwargs)
    y_t, grads = torch_conv(torch, x, w, b, spec, fmt)
    y = npconv.conv(x, w, b, **geom.kwargs)
    assert close(y, y_t, 1e-10)
    dy = rng.standard_normal(y.shape)
    for name, mine, theirs in zip(("dx", "dw", "db"), npconv.conv_backward(dy, x, w, **geom.kwargs),
                                  grads(dy)):
        assert close(mine, theirs, 1e-10), name


@pytest.mark.filterwarnings("ignore:Using padding='same'")
@given(conv_geometry(ranks=(1, 2), modes=("zeros",), forms=("same",), max_stride=1))
def test_same_padding_matches_torch_same(torch, geom):
    """torch's own padding="same" (stride 1) agrees with our TensorFlow-rule resolution."""
    x, w, b = geom.arrays(np.random.default_rng(1))
    fmt = geom.kwargs["data_format"]
    conv = (torch.nn.functional.conv1d, torch.nn.functional.conv2d)[x.ndim - 3]
    yt = conv(torch.tensor(np.ascontiguousarray(to_first(x, fmt))),
              torch.tensor(np.ascontiguousarray(w_to_first(w, fmt))), torch.tensor(b),
              padding="same", dilation=geom.kwargs["dilation"], groups=geom.kwargs["groups"])
    assert close(npconv.conv(x, w, b, **geom.kwargs), from_first(yt.numpy(), fmt), 1e-10)


@given(transpose_geometry(forms=("int", "per_dim")))
def test_conv_transpose_matches_torch(torch, geom):
    rng = np.random.default_rng(2)
    x, w, _ = geom.arrays(rng)
    b = rng.standard_normal(transpose_bias_size(geom))
    kw, fmt = geom.kwargs, geom.kwargs["data_format"]
    spec = conv_transpose_spec(x.shape, w.shape, **kw)
    F = torch.nn.functional
    xt = torch.tensor(np.ascontiguousarray(to_first(x, fmt)), requires_grad=True)
    wt = torch.tensor(np.ascontiguousarray(w_to_first(w, fmt)), requires_grad=True)
    bt = torch.tensor(b, requires_grad=True)
    op = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[spec.rank - 1]
    yt = op(xt, wt, bt, stride=kw["stride"], padding=tuple(lo for lo, _ in spec.pads),
            output_padding=kw["output_padding"], groups=kw["groups"], dilation=kw["dilation"])
    y = npconv.conv_transpose(x, w, b, **kw)
    assert close(y, from_first(yt.detach().numpy(), fmt), 1e-10)
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(np.ascontiguousarray(to_first(dy, fmt))))
    dx, dw, db = npconv.conv_transpose_backward(dy, x, w, **kw)
    assert close(dx, from_first(xt.grad.numpy(), fmt), 1e-10)
    assert close(dw, w_to_first_inverse(wt.grad.numpy(), fmt), 1e-10)
    assert close(db, bt.grad.numpy(), 1e-10)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_resnet_stem_and_uneven_shapes_match_torch(torch, dtype):
    """The issue's named shapes: 224 wide, k=7, s=2, p=3; 7 wide, k=2, s=2."""
    rng = np.random.default_rng(3)
    tol = 1e-4 if dtype == np.float32 else 1e-10
    for x_shape, w_shape, kw in [((2, 3, 33, 40), (8, 3, 7, 7), dict(stride=2, padding=3)),
                                 ((2, 4, 7, 7), (5, 4, 2, 2), dict(stride=2))]:
        x = rng.standard_normal(x_shape).astype(dtype)
        w = rng.standard_normal(w_shape).astype(dtype)
        b = rng.standard_normal(w_shape[0]).astype(dtype)
        spec = conv_spec(x.shape, w.shape, data_format="channels_first", **kw)
        y_t, grads = torch_conv(torch, x, w, b, spec, "channels_first")
        y = npconv.conv(x, w, b, data_format="channels_first", **kw)
        assert y.dtype == dtype and close(y, y_t, tol)
        dy = rng.standard_normal(y.shape).astype(dtype)
        got = npconv.conv_backward(dy, x, w, data_format="channels_first", **kw)
        for mine, theirs in zip(got, grads(dy)):
            assert mine.dtype == dtype and close(mine, theirs, tol)
