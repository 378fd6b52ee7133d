"""`npconv.onnx.layers.Softmax`: forward against PyTorch, backward against central differences
and PyTorch's autograd, both layouts."""

import numpy as np
import pytest

pytest.importorskip("onnx")                      # the package npconv.onnx needs it

from npconv.onnx.layers import Softmax


def central_differences(layer, x, dy, eps=1e-6):
    """d<dy, layer(x)>/dx by central differences, one input element at a time (small x)."""
    dx = np.zeros_like(x)
    for i in np.ndindex(*x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        dx[i] = ((dy * layer.forward(xp)).sum() - (dy * layer.forward(xm)).sum()) / (2 * eps)
    return dx


LAYERS = [
    (lambda: Softmax(), (2, 3, 4, 5)),
    (lambda: Softmax(data_format="channels_first"), (2, 5, 3, 4)),
    (lambda: Softmax(axis=1), (3, 6)),
    (lambda: Softmax(axis=0), (3, 2)),
]


@pytest.mark.parametrize(("make", "shape"), LAYERS)
def test_backward_matches_central_differences(rng, make, shape):
    layer = make()
    x = rng.normal(size=shape)
    y = layer.forward(x, training=True)
    dy = rng.normal(size=y.shape)
    dx = layer.backward(dy)
    assert dx.shape == x.shape and dx.dtype == x.dtype
    np.testing.assert_allclose(dx, central_differences(make(), x, dy), rtol=1e-6, atol=1e-8)


def test_against_torch(torch, rng):
    f = torch.nn.functional
    x = rng.uniform(-2, 8, size=(2, 3, 4, 5))                        # (N, C, H, W)
    tx = torch.tensor(x, requires_grad=True)
    last = x.transpose(0, 2, 3, 1)                                 # (N, H, W, C)
    cases = [
        (Softmax(), last, f.softmax(tx, dim=1), (0, 2, 3, 1)),
        (Softmax(data_format="channels_first"), x, f.softmax(tx, dim=1), (0, 1, 2, 3)),
        (Softmax(axis=2), last, f.softmax(tx, dim=3), (0, 2, 3, 1)),
    ]
    for layer, xin, ty, perm in cases:
        dy = rng.normal(size=tuple(ty.shape))
        (tdx,) = torch.autograd.grad(ty, tx, torch.tensor(dy))
        y = layer.forward(xin, training=True)
        np.testing.assert_allclose(y, ty.detach().numpy().transpose(perm), rtol=1e-12)
        dx = layer.backward(dy.transpose(perm))
        np.testing.assert_allclose(dx, tdx.numpy().transpose(perm), rtol=1e-12, atol=1e-15)


def test_dtype_and_config(rng):
    x = rng.normal(size=(2, 4, 4, 3)).astype(np.float32)
    layer = Softmax()
    assert layer.forward(x).dtype == np.float32
    assert type(layer)(**layer.config()).config() == layer.config()


def test_errors():
    with pytest.raises(TypeError, match=r"`axis` must be None \(the channel axis\) or an int"):
        Softmax(axis=1.5)
    with pytest.raises(ValueError, match=r"`data_format` must be one of"):
        Softmax(data_format="NCHW")
    with pytest.raises(TypeError, match=r"`x` must have dtype float16, float32 or float64"):
        Softmax().forward(np.zeros((1, 2), np.int32))
