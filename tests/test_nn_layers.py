"""Layers: every backward against central differences (float64, both layouts), a small CNN's
gradients against PyTorch's, batch norm's statistics against PyTorch's, and every error."""

import numpy as np
import pytest
from helpers import central_difference, rel_err

from npconv import nn
from npconv.nn import functional as F

FORMATS = ("channels_last", "channels_first")


def grad_close(a, b, tol=1e-7) -> bool:
    """max |a - b| <= tol * max(max |b|, 1): relative for large gradients, absolute for the
    (exactly) zero ones, such as a conv bias that a batch norm cancels."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max(initial=0.0)) <= tol * max(np.abs(b).max(initial=0.0), 1.0)


def image(rng, n, size, c, fmt):
    """(N, *S, C) or (N, C, *S) float64 from a standard normal."""
    x = rng.standard_normal((n, *size, c))
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x


def distinct(rng, shape):
    """Distinct values in [0, 1), gaps >> eps, so a max-pool's choice never flips."""
    return rng.permutation(int(np.prod(shape))).reshape(shape) / np.prod(shape)


R = np.random.default_rng


def layer_cases(fmt):
    """(name, layer, x, training) for every layer type, float64."""
    f = dict(data_format=fmt)
    d = dict(rng=R(0), dtype="float64")
    yield "conv2d", nn.Conv(4, 6, (3, 2), stride=(2, 1), padding="same", dilation=(1, 2),
                            groups=2, **f, **d), image(R(1), 2, (5, 6), 4, fmt), True
    yield "conv1d-reflect", nn.Conv(2, 3, (3,), padding=2, padding_mode="reflect", **f, **d), \
        image(R(2), 2, (6,), 2, fmt), True
    yield "conv3d-nobias", nn.Conv(2, 2, (2, 2, 2), bias=False, **f, **d), \
        image(R(3), 1, (3, 3, 3), 2, fmt), True
    yield "conv-transpose", nn.ConvTranspose(4, 2, (3, 3), stride=2, padding=1,
                                             output_padding=1, groups=2, **f, **d), \
        image(R(4), 2, (3, 2), 4, fmt), True
    shape = (2, 3, 5, 6) if fmt == "channels_first" else (2, 5, 6, 3)
    yield "maxpool", nn.MaxPool((2, 3), stride=(1, 2), padding=1, ceil_mode=True, **f), \
        distinct(R(5), shape), True
    yield "avgpool", nn.AvgPool(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False,
                                **f), image(R(6), 2, (5, 6), 3, fmt), True
    yield "globalavgpool", nn.GlobalAvgPool(**f), image(R(7), 2, (3, 4), 3, fmt), True
    yield "dense", nn.Dense(5, 4, init="glorot_uniform", **d), R(8).standard_normal((3, 5)), True
    yield "flatten", nn.Flatten(), image(R(9), 2, (2, 3), 2, fmt), True
    yield "relu", nn.ReLU(), image(R(10), 2, (3,), 4, fmt), True
    yield "leakyrelu", nn.LeakyReLU(0.2), image(R(11), 2, (3,), 4, fmt), True
    yield "tanh", nn.Tanh(), image(R(12), 2, (3,), 4, fmt), True
    yield "sigmoid", nn.Sigmoid(), image(R(13), 2, (3,), 4, fmt), True
    yield "dropout", nn.Dropout(0.4, rng=R(14)), image(R(15), 2, (3,), 4, fmt), True
    yield "batchnorm-train", nn.BatchNorm(3, **f, dtype="float64"), \
        image(R(16), 4, (2, 3), 3, fmt), True
    yield "batchnorm-eval", nn.BatchNorm(3, **f, dtype="float64"), \
        image(R(17), 4, (2, 3), 3, fmt), False
    yield "batchnorm-1d", nn.BatchNorm(5, dtype="float64"), R(18).standard_normal((6, 5)), True
    yield "sequential", nn.Sequential(
        nn.Conv(3, 4, (3, 3), padding=1, **f, **d), nn.BatchNorm(4, **f, dtype="float64"),
        nn.LeakyReLU(0.1), nn.AvgPool(2, **f), nn.Flatten(), nn.Dense(4 * 2 * 2, 3, **d)), \
        image(R(19), 3, (4, 4), 3, fmt), True


CASES = [(fmt, name) for fmt in FORMATS for name, *_ in layer_cases(fmt)]


@pytest.mark.parametrize("fmt, name", CASES)
def test_backward_matches_central_differences(fmt, name):
    layer, x, training = next((lay, x, t) for n, lay, x, t in layer_cases(fmt) if n == name)
    if isinstance(layer, nn.BatchNorm) and not training:
        layer.buffers["running_mean"][...] = [0.1, -0.2, 0.3]
        layer.buffers["running_var"][...] = [0.5, 2.0, 1.5]

    def run():
        if isinstance(layer, nn.Dropout):
            layer.rng = R(99)                          # the same mask at every evaluation
        return layer.forward(x, training=training)

    dy = R(100).standard_normal(run().shape)
    loss = lambda: float(np.sum(dy * run()))           # noqa: E731
    run()
    dx = layer.backward(dy)
    assert sorted(layer.grads) == sorted(layer.params)
    assert grad_close(dx, central_difference(loss, x)), "dx"
    for key, p in layer.params.items():
        assert grad_close(layer.grads[key], central_difference(loss, p)), key


# ---------------------------------------------------------------------------------------------
# Against PyTorch
# ---------------------------------------------------------------------------------------------


def small_cnn(fmt, rng):
    f = dict(data_format=fmt, dtype="float64")
    return nn.Sequential(
        nn.Conv(2, 4, (3, 3), padding=1, rng=rng, **f), nn.ReLU(),
        nn.Conv(4, 6, (3, 3), stride=1, padding="valid", rng=rng, **f), nn.ReLU(),
        nn.MaxPool(2, data_format=fmt), nn.Flatten(),
        nn.Dense(6 * 2 * 2, 5, rng=rng, dtype="float64"))


def torch_cnn(torch, model, fmt):
    """The same network in torch, with the same weights (converted to OIHW / (out, in))."""
    tnn = torch.nn
    convs = []
    for layer in (model[0], model[2]):
        w = layer.params["w"]
        w = w if fmt == "channels_first" else w.transpose(3, 2, 0, 1)   # HWIO -> OIHW
        pad = 0 if layer.kw["padding"] == "valid" else layer.kw["padding"][0][0]
        conv = tnn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=pad,
                          dtype=torch.float64)
        conv.weight.data = torch.tensor(np.ascontiguousarray(w))
        conv.bias.data = torch.tensor(layer.params["b"])
        convs.append(conv)
    dense = tnn.Linear(24, 5, dtype=torch.float64)
    dense.weight.data = torch.tensor(model[6].params["w"].T.copy())
    dense.bias.data = torch.tensor(model[6].params["b"])
    # torch flattens (C, H, W); a channels_last model flattens (H, W, C)
    flat = (tnn.Flatten() if fmt == "channels_first"
            else tnn.Sequential(Permute(torch), tnn.Flatten()))
    return tnn.Sequential(convs[0], tnn.ReLU(), convs[1], tnn.ReLU(), tnn.MaxPool2d(2), flat,
                          dense), convs, dense


def Permute(torch):
    class _P(torch.nn.Module):
        def forward(self, t):
            return t.permute(0, 2, 3, 1)
    return _P()


@pytest.mark.parametrize("fmt", FORMATS)
def test_cnn_gradients_match_torch(torch, fmt):
    """Two conv layers, a pool and a dense layer, with the same weights and inputs: the logits,
    the loss and every parameter gradient equal PyTorch's."""
    rng = R(0)
    model = small_cnn(fmt, rng)
    x = image(rng, 3, (6, 6), 2, fmt)
    labels = np.array([0, 4, 2])
    logits = model.forward(x, training=True)
    loss, dlogits = nn.softmax_cross_entropy(logits, labels)
    dx = model.backward(dlogits)

    tmodel, convs, dense = torch_cnn(torch, model, fmt)
    x_first = x if fmt == "channels_first" else np.moveaxis(x, -1, 1)
    xt = torch.tensor(np.ascontiguousarray(x_first), requires_grad=True)
    lt = torch.nn.functional.cross_entropy(tmodel(xt), torch.tensor(labels))
    lt.backward()
    assert abs(loss - lt.item()) < 1e-12
    dx_first = dx if fmt == "channels_first" else np.moveaxis(dx, -1, 1)
    assert rel_err(dx_first, xt.grad.numpy()) < 1e-10
    for i, conv in zip((0, 2), convs):
        dw = model.grads[f"{i}.w"]
        dw = dw if fmt == "channels_first" else dw.transpose(3, 2, 0, 1)
        assert rel_err(dw, conv.weight.grad.numpy()) < 1e-10
        assert rel_err(model.grads[f"{i}.b"], conv.bias.grad.numpy()) < 1e-10
    assert rel_err(model.grads["6.w"], dense.weight.grad.numpy().T) < 1e-10
    assert rel_err(model.grads["6.b"], dense.bias.grad.numpy()) < 1e-10


@pytest.mark.parametrize("fmt", FORMATS)
def test_batchnorm_matches_torch(torch, fmt):
    """Training output, running statistics after two steps, evaluation output, gradients."""
    rng = R(1)
    bn = nn.BatchNorm(3, momentum=0.2, eps=1e-3, data_format=fmt, dtype="float64")
    bn.params["gamma"][...] = [1.5, 0.5, -1.0]
    bn.params["beta"][...] = [0.1, 0.2, 0.3]
    tbn = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-3, dtype=torch.float64)
    tbn.weight.data = torch.tensor(bn.params["gamma"].copy())
    tbn.bias.data = torch.tensor(bn.params["beta"].copy())
    first = (lambda a: a) if fmt == "channels_first" else (lambda a: np.moveaxis(a, -1, 1))
    for step in range(2):
        x = image(rng, 4, (3, 2), 3, fmt) * 2 + step
        y = bn.forward(x, training=True)
        xt = torch.tensor(np.ascontiguousarray(first(x)), requires_grad=True)
        yt = tbn.train()(xt)
        assert rel_err(first(y), yt.detach().numpy()) < 1e-12
    dy = rng.standard_normal(y.shape)
    yt.backward(torch.tensor(np.ascontiguousarray(first(dy))))
    assert rel_err(first(bn.backward(dy)), xt.grad.numpy()) < 1e-10
    assert rel_err(bn.grads["gamma"], tbn.weight.grad.numpy()) < 1e-10
    assert rel_err(bn.grads["beta"], tbn.bias.grad.numpy()) < 1e-10
    assert rel_err(bn.buffers["running_mean"], tbn.running_mean.numpy()) < 1e-12
    assert rel_err(bn.buffers["running_var"], tbn.running_var.numpy()) < 1e-12
    x = image(rng, 2, (3, 2), 3, fmt)
    y_eval = bn.forward(x, training=False)
    yt_eval = tbn.eval()(torch.tensor(np.ascontiguousarray(first(x))))
    assert rel_err(first(y_eval), yt_eval.detach().numpy()) < 1e-12


# ---------------------------------------------------------------------------------------------
# Containers, modes, dtypes, initializers
# ---------------------------------------------------------------------------------------------


def test_sequential_shares_the_layers_arrays():
    model = nn.Sequential(nn.Dense(3, 4, rng=R(0)), nn.ReLU(), nn.BatchNorm(4))
    assert sorted(model.params) == ["0.b", "0.w", "2.beta", "2.gamma"]
    assert sorted(model.grads) == sorted(model.params)
    assert sorted(model.buffers) == ["2.running_mean", "2.running_var"]
    model.params["0.w"][...] = 7.0                     # an optimizer updates in place
    assert np.all(model[0].params["w"] == 7.0)
    assert len(model) == 3 and isinstance(model[1], nn.ReLU)
    assert [type(layer).__name__ for layer in model] == ["Dense", "ReLU", "BatchNorm"]


def test_training_flag_changes_dropout_and_batchnorm():
    x = R(0).standard_normal((8, 4)).astype(np.float32)
    drop = nn.Dropout(0.5, rng=R(1))
    np.testing.assert_array_equal(drop.forward(x, training=False), x)
    y = drop.forward(x, training=True)
    assert set(np.unique(y[x != 0] / x[x != 0]).round(6)) <= {0.0, 2.0}
    bn = nn.BatchNorm(4)
    y_eval = bn.forward(x, training=False)                      # running stats 0 / 1
    np.testing.assert_allclose(y_eval, x / np.sqrt(1 + 1e-5), rtol=1e-6)
    bn.forward(x, training=True)
    assert not np.allclose(bn.buffers["running_mean"], 0)


def test_float32_model_keeps_float32_and_never_modifies_inputs():
    model = nn.Sequential(nn.Conv(1, 4, (3, 3), padding=1, rng=R(0)), nn.BatchNorm(4),
                          nn.ReLU(), nn.MaxPool(2), nn.Flatten(), nn.Dense(16, 3, rng=R(1)))
    x = R(2).random((5, 4, 4, 1), dtype=np.float32)
    x_copy = x.copy()
    y = model.forward(x, training=True)
    dy = np.ones_like(y)
    dx = model.backward(dy)
    np.testing.assert_array_equal(x, x_copy)
    assert y.dtype == dx.dtype == np.float32
    assert all(g.dtype == np.float32 for g in model.grads.values())
    assert np.all(dy == 1)


@pytest.mark.parametrize("name, fan_scale, kind", [
    ("he_normal", lambda fi, fo: 2 / fi, "normal"),
    ("he_uniform", lambda fi, fo: 2 / fi, "uniform"),
    ("glorot_normal", lambda fi, fo: 2 / (fi + fo), "normal"),
    ("glorot_uniform", lambda fi, fo: 2 / (fi + fo), "uniform"),
])
def test_initializers_have_the_stated_variance(name, fan_scale, kind):
    init = nn.init.get(name)
    w = init((200, 300), 200, 300, rng=R(0), dtype=np.float64)
    assert abs(w.var() / fan_scale(200, 300) - 1) < 0.02
    if kind == "uniform":
        bound = np.sqrt(3 * fan_scale(200, 300))
        assert np.abs(w).max() <= bound
    again = init((200, 300), 200, 300, rng=R(0), dtype=np.float32)
    np.testing.assert_array_equal(again, w.astype(np.float32))   # same draws for every dtype


def test_conv_layer_uses_fans_of_its_layout():
    a = nn.Conv(4, 8, (3, 3), groups=2, rng=R(0), data_format="channels_last")
    b = nn.Conv(4, 8, (3, 3), groups=2, rng=R(0), data_format="channels_first")
    assert a.params["w"].shape == (3, 3, 2, 8) and b.params["w"].shape == (8, 2, 3, 3)
    assert np.all(a.params["b"] == 0)
    assert abs(np.std(nn.Conv(64, 64, (3, 3), rng=R(1)).params["w"]) / np.sqrt(2 / 576) - 1) \
        < 0.05


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

X4 = np.zeros((2, 8, 8, 3), np.float32)

ERRORS = [
    (lambda: nn.Conv(3, 8, 3, rng=R(0)), TypeError, "`kernel_size` must be a tuple"),
    (lambda: nn.Conv(3, 8, (3, 0), rng=R(0)), ValueError, "`kernel_size` must be >= 1"),
    (lambda: nn.Conv(0, 8, (3, 3), rng=R(0)), ValueError, "`in_channels` must be >= 1"),
    (lambda: nn.Conv(3.0, 8, (3, 3), rng=R(0)), TypeError, "`in_channels` must be an int"),
    (lambda: nn.Conv(3, 8, (3, 3), groups=2, rng=R(0)), ValueError, "`groups` must divide"),
    (lambda: nn.Conv(3, 8, (3, 3), stride=(1, 2, 3), rng=R(0)), TypeError, "`stride`"),
    (lambda: nn.Conv(3, 8, (3, 3), padding="bogus", rng=R(0)), ValueError, "`padding`"),
    (lambda: nn.Conv(3, 8, (3, 3), padding_mode="wrap", rng=R(0)), ValueError,
     "`padding_mode`"),
    (lambda: nn.Conv(3, 8, (3, 3), data_format="NCHW", rng=R(0)), ValueError, "`data_format`"),
    (lambda: nn.Conv(3, 8, (3, 3)), TypeError, "`rng` must be a numpy.random.Generator"),
    (lambda: nn.Conv(3, 8, (3, 3), init="orthogonal", rng=R(0)), ValueError, "`init` must be"),
    (lambda: nn.Conv(3, 8, (3, 3), dtype="int32", rng=R(0)), TypeError, "`dtype` must be"),
    (lambda: nn.Conv(3, 8, (3, 3), bias=1, rng=R(0)), TypeError, "`bias` must be True or"),
    (lambda: nn.ConvTranspose(3, 8, (3, 3), output_padding=1.5, rng=R(0)), TypeError,
     "`output_padding`"),
    (lambda: nn.MaxPool("2"), TypeError, "`kernel_size` must be an int or a tuple"),
    (lambda: nn.MaxPool(2, stride=0), ValueError, "`stride` must be >= 1"),
    (lambda: nn.AvgPool(2, ceil_mode="no"), TypeError, "`ceil_mode`"),
    (lambda: nn.GlobalAvgPool(data_format="x"), ValueError, "`data_format`"),
    (lambda: nn.Dense(0, 3, rng=R(0)), ValueError, "`in_features` must be >= 1"),
    (lambda: nn.LeakyReLU(-0.1), ValueError, r"`negative_slope` must be in \[0.0, 1.0\]"),
    (lambda: nn.LeakyReLU("a"), TypeError, "`negative_slope` must be a real number"),
    (lambda: nn.Dropout(1.0), ValueError, r"`rate` must be in \[0.0, 1.0\)"),
    (lambda: nn.BatchNorm(3, momentum=1.5), ValueError, "`momentum`"),
    (lambda: nn.BatchNorm(3, eps=0), ValueError, "`eps` must be > 0"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "argument 1 is str"),
    # wrong shapes into a layer
    (lambda: nn.Conv(1, 8, (3, 3), rng=R(0)).forward(X4), ValueError,
     r"expects `x` with 1 channels on its last axis .* got shape \(2, 8, 8, 3\)"),
    (lambda: nn.Conv(3, 8, (3, 3), rng=R(0)).forward(X4[0]), ValueError,
     "with 2 spatial dimension"),
    (lambda: nn.Conv(3, 8, (3, 3), rng=R(0)).forward(X4.tolist()), TypeError,
     "`x` must be a numpy.ndarray"),
    (lambda: nn.Dense(64, 10, rng=R(0)).forward(X4), ValueError,
     r"expects `x` of shape \(N, 64\).*put a Flatten"),
    (lambda: nn.BatchNorm(4).forward(X4), ValueError, "expects `x` with 4 channels"),
    (lambda: nn.Flatten().forward(np.zeros(3)), ValueError, "Flatten expects `x`"),
    (lambda: nn.MaxPool(9).forward(X4), ValueError, "output size must be >= 1"),
    (lambda: nn.ReLU().forward(X4, training="yes"), TypeError, "`training` must be True or"),
    (lambda: nn.Dropout(0.5).forward(X4, training=True), ValueError, "needs a numpy.random"),
    (lambda: nn.ReLU().backward(X4), RuntimeError, "backward called before forward"),
    (lambda: _after_forward(nn.Flatten(), X4).backward(np.zeros((2, 5), np.float32)),
     ValueError, r"`dy` must have shape \(2, 192\)"),
    (lambda: _after_forward(nn.ReLU(), X4).backward(np.zeros((2, 5), np.float32)),
     ValueError, "`dy` must have shape"),
    (lambda: _after_forward(nn.Conv(3, 2, (3, 3), rng=R(0)), X4).backward(X4), ValueError,
     "`dy` must have shape"),
    # functional ops check their own arguments too
    (lambda: F.dense(np.zeros((2, 3)), np.zeros(3)), ValueError, r"`w` must have shape \(D, F\)"),
    (lambda: F.dense(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3)), ValueError,
     r"`b` must have shape \(2,\)"),
    (lambda: F.batch_norm(np.zeros((2, 3)), np.ones(3), np.zeros(3), None, None,
                          training=False), ValueError, "`running_mean` is needed"),
    (lambda: F.dropout(np.zeros(3), 0.5, rng=0), TypeError, "`rng` must be a numpy.random"),
]


def _after_forward(layer, x):
    layer.forward(x)
    return layer


@pytest.mark.parametrize("call, error, match", ERRORS)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
