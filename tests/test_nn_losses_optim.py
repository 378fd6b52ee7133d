"""Losses (value and gradient) and optimizers (one step after another) against PyTorch, central
differences and hand-computed values; and their errors."""

import numpy as np
import pytest
from helpers import central_difference

from npconv import nn

R = np.random.default_rng


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------


def test_cross_entropy_matches_torch(torch):
    z, labels = R(0).standard_normal((6, 5)) * 3, np.array([0, 4, 2, 2, 1, 3])
    value, grad = nn.softmax_cross_entropy(z, labels)
    zt = torch.tensor(z, requires_grad=True)
    lt = torch.nn.functional.cross_entropy(zt, torch.tensor(labels))
    lt.backward()
    assert abs(value - lt.item()) < 1e-14
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-12, atol=1e-15)


def test_cross_entropy_gradient_matches_central_differences():
    z, labels = R(1).standard_normal((4, 3)), np.array([2, 0, 1, 1])
    _, grad = nn.softmax_cross_entropy(z, labels)
    num = central_difference(lambda: nn.softmax_cross_entropy(z, labels)[0], z)
    np.testing.assert_allclose(grad, num, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_is_stable_for_huge_logits(dtype):
    z = np.array([[1e4, -1e4, 0.0], [-3e4, 3e4, 3e4]], dtype=dtype)
    value, grad = nn.softmax_cross_entropy(z, np.array([1, 2]))
    assert np.isfinite(value) and np.all(np.isfinite(grad)) and grad.dtype == dtype
    assert abs(value - (2e4 + np.log(2)) / 2) < 1e-3 * 2e4          # row 0: 2e4, row 1: log 2
    np.testing.assert_allclose(grad.sum(axis=1), 0, atol=1e-6)


def test_mse_matches_torch_and_hand_values(torch):
    p, t = R(2).standard_normal((3, 4)), R(3).standard_normal((3, 4))
    value, grad = nn.mse(p, t)
    pt = torch.tensor(p, requires_grad=True)
    lt = torch.nn.functional.mse_loss(pt, torch.tensor(t))
    lt.backward()
    assert abs(value - lt.item()) < 1e-14
    np.testing.assert_allclose(grad, pt.grad.numpy(), rtol=1e-12)
    assert nn.mse(np.array([1.0, 3.0]), np.zeros(2)) == (5.0, pytest.approx(np.array([1.0, 3.0])))


LOSS_ERRORS = [
    (lambda: nn.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 3])), ValueError,
     r"`labels` must be in \[0, 3\) for 3 classes; got 1 out of range, e.g. 3"),
    (lambda: nn.softmax_cross_entropy(np.zeros((2, 3)), np.array([-1, 0])), ValueError,
     r"`labels` must be in \[0, 3\)"),
    (lambda: nn.softmax_cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0])), TypeError,
     "`labels` must be an integer numpy array"),
    (lambda: nn.softmax_cross_entropy(np.zeros((2, 3)), np.array([0, 1, 2])), ValueError,
     r"`labels` must have shape \(2,\)"),
    (lambda: nn.softmax_cross_entropy(np.zeros(3), np.array([0])), ValueError,
     r"`logits` must have shape \(N, K\)"),
    (lambda: nn.softmax_cross_entropy([[0.0]], np.array([0])), TypeError, "`logits` must be"),
    (lambda: nn.mse(np.zeros(3), np.zeros(4)), ValueError, "must have the same shape"),
]


@pytest.mark.parametrize("call, error, match", LOSS_ERRORS)
def test_loss_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


# ---------------------------------------------------------------------------------------------
# Optimizers
# ---------------------------------------------------------------------------------------------

OPTIMIZERS = [
    ("SGD", dict(lr=0.1), {}),
    ("SGD", dict(lr=0.1, momentum=0.9), {}),
    ("SGD", dict(lr=0.05, momentum=0.8, nesterov=True, weight_decay=0.01), {}),
    ("Adam", dict(lr=0.01), {}),
    ("Adam", dict(lr=0.01, betas=(0.8, 0.99), eps=1e-6, weight_decay=0.1), {}),
    ("AdamW", dict(lr=0.01, weight_decay=0.05), {}),
]


@pytest.mark.parametrize("name, kwargs, _", OPTIMIZERS)
def test_optimizers_match_torch(torch, name, kwargs, _):
    """Four steps with changing gradients (and a changed lr) give torch.optim's parameters."""
    rng = R(4)
    params = {"w": rng.standard_normal((3, 4)), "b": rng.standard_normal(4)}
    tparams = {k: torch.tensor(v.copy(), requires_grad=True) for k, v in params.items()}
    opt = getattr(nn, name)(**kwargs)
    topt = getattr(torch.optim, name)(list(tparams.values()), **kwargs)
    for step in range(4):
        grads = {k: rng.standard_normal(v.shape) for k, v in params.items()}
        if step == 2:
            opt.lr = kwargs["lr"] / 2
            for group in topt.param_groups:
                group["lr"] = kwargs["lr"] / 2
        opt.step(params, grads)
        for k, t in tparams.items():
            t.grad = torch.tensor(grads[k])
        topt.step()
    for k in params:
        np.testing.assert_allclose(params[k], tparams[k].detach().numpy(), rtol=1e-12,
                                   atol=1e-14)


def test_optimizer_updates_in_place_and_keeps_dtype():
    w = np.ones((2, 2), np.float32)
    params = {"w": w}
    nn.Adam(lr=0.1).step(params, {"w": np.ones((2, 2))})          # float64 grads
    assert params["w"] is w and w.dtype == np.float32 and np.all(w < 1)


def test_training_a_layer_reduces_the_loss():
    rng = R(5)
    x, labels = rng.standard_normal((64, 5)), rng.integers(0, 3, 64)
    layer = nn.Linear(5, 3, rng=rng, dtype="float64")
    opt = nn.SGD(lr=0.5, momentum=0.9)
    losses = []
    for _ in range(30):
        loss, dz = nn.softmax_cross_entropy(layer.forward(x, training=True), labels)
        layer.backward(dz)
        opt.step(layer.params, layer.grads)
        losses.append(loss)
    assert losses[-1] < 0.8 * losses[0]


OPT_ERRORS = [
    (lambda: nn.SGD(lr=0), ValueError, "`lr` must be > 0"),
    (lambda: nn.SGD(lr="fast"), TypeError, "`lr` must be a real number"),
    (lambda: nn.SGD(momentum=1.0), ValueError, r"`momentum` must be in \[0.0, 1.0\)"),
    (lambda: nn.SGD(nesterov=True), ValueError, "`nesterov` needs momentum > 0"),
    (lambda: nn.SGD(momentum=0.9, nesterov=1), TypeError, "`nesterov` must be True or False"),
    (lambda: nn.SGD(weight_decay=-1), ValueError, "`weight_decay` must be in"),
    (lambda: nn.Adam(betas=0.9), TypeError, "`betas` must be a pair"),
    (lambda: nn.Adam(betas=(0.9, 1.0)), ValueError, "`betas` must be in"),
    (lambda: nn.Adam(eps=0), ValueError, "`eps` must be > 0"),
    (lambda: nn.SGD().step({"w": np.zeros(2)}, {"v": np.zeros(2)}), ValueError,
     "must have the same keys"),
    (lambda: nn.SGD().step({"w": np.zeros(2)}, {"w": np.zeros(3)}), ValueError,
     r"grads\['w'\] must have the shape of params\['w'\], \(2,\); got \(3,\)"),
    (lambda: nn.SGD().step({"w": np.zeros(2)}, {"w": [0.0, 0.0]}), TypeError,
     r"`grads\['w'\]` must be a numpy.ndarray"),
    (lambda: nn.SGD().step([np.zeros(2)], [np.zeros(2)]), TypeError, "must be dicts"),
]


@pytest.mark.parametrize("call, error, match", OPT_ERRORS)
def test_optimizer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
