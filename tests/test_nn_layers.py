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
    yield "dense", nn.Linear(5, 4, init="xavier_uniform", **d), R(8).standard_normal((3, 5)), True
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
        nn.LeakyReLU(0.1), nn.AvgPool(2, **f), nn.Flatten(), nn.Linear(4 * 2 * 2, 3, **d)), \
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
    with nn.enable_grad():                             # evaluation mode keeps nothing otherwise
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
        nn.Linear(6 * 2 * 2, 5, rng=rng, dtype="float64"))


def torch_cnn(torch, model, fmt):
    """The same network in torch, with the same weights (converted to OIHW / (out, in))."""
    tnn = torch.nn
    convs = []
    for layer in (model[0], model[2]):
        w = layer.params["weight"]
        w = w if fmt == "channels_first" else w.transpose(3, 2, 0, 1)   # HWIO -> OIHW
        pad = 0 if layer.kw["padding"] == "valid" else layer.kw["padding"][0][0]
        conv = tnn.Conv2d(w.shape[1], w.shape[0], w.shape[2:], padding=pad,
                          dtype=torch.float64)
        conv.weight.data = torch.tensor(np.ascontiguousarray(w))
        conv.bias.data = torch.tensor(layer.params["bias"])
        convs.append(conv)
    dense = tnn.Linear(24, 5, dtype=torch.float64)
    dense.weight.data = torch.tensor(model[6].params["weight"].T.copy())
    dense.bias.data = torch.tensor(model[6].params["bias"])
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
        dw = model.grads[f"{i}.weight"]
        dw = dw if fmt == "channels_first" else dw.transpose(3, 2, 0, 1)
        assert rel_err(dw, conv.weight.grad.numpy()) < 1e-10
        assert rel_err(model.grads[f"{i}.bias"], conv.bias.grad.numpy()) < 1e-10
    assert rel_err(model.grads["6.weight"], dense.weight.grad.numpy().T) < 1e-10
    assert rel_err(model.grads["6.bias"], dense.bias.grad.numpy()) < 1e-10


@pytest.mark.parametrize("fmt", FORMATS)
def test_batchnorm_matches_torch(torch, fmt):
    """Training output, running statistics after two steps, evaluation output, gradients."""
    rng = R(1)
    bn = nn.BatchNorm(3, momentum=0.2, eps=1e-3, data_format=fmt, dtype="float64")
    bn.params["weight"][...] = [1.5, 0.5, -1.0]
    bn.params["bias"][...] = [0.1, 0.2, 0.3]
    tbn = torch.nn.BatchNorm2d(3, momentum=0.2, eps=1e-3, dtype=torch.float64)
    tbn.weight.data = torch.tensor(bn.params["weight"].copy())
    tbn.bias.data = torch.tensor(bn.params["bias"].copy())
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
    assert rel_err(bn.grads["weight"], tbn.weight.grad.numpy()) < 1e-10
    assert rel_err(bn.grads["bias"], tbn.bias.grad.numpy()) < 1e-10
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
    model = nn.Sequential(nn.Linear(3, 4, rng=R(0)), nn.ReLU(), nn.BatchNorm(4))
    assert sorted(model.params) == ["0.bias", "0.weight", "2.bias", "2.weight"]
    assert sorted(model.grads) == sorted(model.params)
    assert sorted(model.buffers) == ["2.num_batches_tracked", "2.running_mean", "2.running_var"]
    model.params["0.weight"][...] = 7.0                     # an optimizer updates in place
    assert np.all(model[0].params["weight"] == 7.0)
    assert len(model) == 3 and isinstance(model[1], nn.ReLU)
    assert [type(layer).__name__ for layer in model] == ["Linear", "ReLU", "BatchNorm"]


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
                          nn.ReLU(), nn.MaxPool(2), nn.Flatten(), nn.Linear(16, 3, rng=R(1)))
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
    ("kaiming_normal", lambda fi, fo: 2 / fi, "normal"),
    ("kaiming_uniform", lambda fi, fo: 2 / fi, "uniform"),
    ("xavier_normal", lambda fi, fo: 2 / (fi + fo), "normal"),
    ("xavier_uniform", lambda fi, fo: 2 / (fi + fo), "uniform"),
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


def test_named_init_uses_the_fans_of_the_layout_and_a_zero_bias():
    a = nn.Conv(4, 8, (3, 3), groups=2, init="kaiming_normal", rng=R(0),
                data_format="channels_last")
    b = nn.Conv(4, 8, (3, 3), groups=2, init="kaiming_normal", rng=R(0),
                data_format="channels_first")
    assert a.params["weight"].shape == (3, 3, 2, 8) and b.params["weight"].shape == (8, 2, 3, 3)
    assert np.all(a.params["bias"] == 0)
    w = nn.Conv2d(64, 64, 3, init="kaiming_normal", rng=R(1)).params["weight"]
    assert abs(np.std(w) / np.sqrt(2 / 576) - 1) < 0.05


def torch_fan_in(torch, module) -> int:
    fan_in, _ = torch.nn.init._calculate_fan_in_and_fan_out(module.weight)
    return fan_in


@pytest.mark.parametrize("make, make_torch", [
    (lambda: nn.Conv2d(6, 12, (3, 5), groups=3, rng=R(0)),
     lambda t: t.nn.Conv2d(6, 12, (3, 5), groups=3)),
    (lambda: nn.Conv1d(4, 8, 7, data_format="channels_first", rng=R(0)),
     lambda t: t.nn.Conv1d(4, 8, 7)),
    (lambda: nn.ConvTranspose2d(6, 4, 3, groups=2, rng=R(0)),
     lambda t: t.nn.ConvTranspose2d(6, 4, 3, groups=2)),
    (lambda: nn.ConvTranspose3d(2, 10, 2, rng=R(0)), lambda t: t.nn.ConvTranspose3d(2, 10, 2)),
    (lambda: nn.Linear(50, 7, rng=R(0)), lambda t: t.nn.Linear(50, 7)),
])
def test_default_init_is_pytorchs(torch, make, make_torch):
    """Weight and bias uniform on [-1/sqrt(fan_in), 1/sqrt(fan_in)], fan_in counted as PyTorch
    counts it for that layer (ConvTranspose: out_channels / groups * prod(K))."""
    layer, module = make(), make_torch(torch)
    bound = 1 / np.sqrt(torch_fan_in(torch, module))
    for key, array in layer.params.items():
        a = array.astype(np.float64)
        assert a.size == getattr(module, key).numel(), key
        assert np.abs(a).max() <= bound, key
    w = layer.params["weight"].astype(np.float64)                # >= 108 draws
    assert abs(w.var() / (bound ** 2 / 3) - 1) < 0.3             # U(-b, b): variance b^2 / 3


def test_rng_none_draws_from_the_default_generator():
    nn.manual_seed(3)
    a = nn.Conv2d(2, 4, 3).params["weight"]
    drop = nn.Dropout(0.5)
    mask_a = drop.forward(np.ones((4, 6)), training=True)
    nn.manual_seed(3)
    np.testing.assert_array_equal(nn.Conv2d(2, 4, 3).params["weight"], a)
    np.testing.assert_array_equal(drop.forward(np.ones((4, 6)), training=True), mask_a)
    assert not np.array_equal(nn.Conv2d(2, 4, 3).params["weight"], a)    # the stream moved on


def test_int_kernel_size_and_the_rank():
    x = R(0).standard_normal((2, 5, 6, 3))
    same = [nn.Conv(3, 4, (3, 3), rng=R(1), dtype="float64"),
            nn.Conv(3, 4, 3, rank=2, rng=R(1), dtype="float64"),
            nn.Conv2d(3, 4, 3, rng=R(1), dtype="float64"),
            nn.Conv2d(3, 4, (3, 3), rng=R(1), dtype="float64")]
    for layer in same:
        assert layer.kernel_size == (3, 3) and layer.config() == same[0].config()
        np.testing.assert_array_equal(layer(x), same[0](x))
    assert nn.Conv1d(3, 4, 5).params["weight"].shape == (5, 3, 4)
    assert nn.Conv3d(3, 4, 2, data_format="channels_first").params["weight"].shape == \
        (4, 3, 2, 2, 2)
    assert nn.ConvTranspose1d(3, 4, 2).params["weight"].shape == (2, 4, 3)
    assert nn.MaxPool2d(2)(x).shape == nn.MaxPool(2)(x).shape == (2, 2, 3, 3)
    assert nn.AvgPool1d(2)(x[:, 0]).shape == (2, 3, 3)
    assert nn.BatchNorm1d(3)(x[:, 0, 0]).shape == (2, 3)


def test_batchnorm_counts_batches_and_momentum_none_is_the_cumulative_average(torch):
    """num_batches_tracked as PyTorch's, and momentum=None's running statistics (the
    cumulative average of the batch statistics) equal PyTorch's."""
    bn = nn.BatchNorm2d(3, momentum=None, dtype="float64")
    tbn = torch.nn.BatchNorm2d(3, momentum=None, dtype=torch.float64)
    for step in range(3):
        x = R(step).standard_normal((4, 3, 2, 3)) * (step + 1) + step
        bn.forward(x, training=True)
        tbn.train()(torch.tensor(np.ascontiguousarray(np.moveaxis(x, -1, 1))))
    bn.forward(x, training=False)                                # evaluation: no count
    assert int(bn.buffers["num_batches_tracked"]) == int(tbn.num_batches_tracked) == 3
    assert bn.buffers["num_batches_tracked"].dtype == np.int64
    for key in ("running_mean", "running_var"):
        assert rel_err(bn.buffers[key], getattr(tbn, key).numpy()) < 1e-12


def test_old_names_say_where_they_went():
    with pytest.raises(AttributeError, match=r"npconv\.nn\.Dense was renamed npconv\.nn\.Linear"):
        nn.Dense  # noqa: B018
    with pytest.raises(AttributeError, match="has no attribute 'Dense2'"):
        nn.Dense2  # noqa: B018
    with pytest.raises(TypeError, match="unexpected keyword argument 'rate'"):
        nn.Dropout(rate=0.5)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

X4 = np.zeros((2, 8, 8, 3), np.float32)

ERRORS = [
    (lambda: nn.Conv(3, 8, 3, rng=R(0)), TypeError,
     r"Conv: an int `kernel_size` needs the rank: pass `rank=`.*or use Conv1d/2d/3d"),
    (lambda: nn.ConvTranspose(3, 8, 3), TypeError, "or use ConvTranspose1d/2d/3d"),
    (lambda: nn.Conv(3, 8, "3"), TypeError, "`kernel_size` must be an int or a tuple of ints"),
    (lambda: nn.Conv2d(3, 8, (3, 3, 3)), TypeError,
     r"`kernel_size` must be an int or a tuple of 2 ints; got \(3, 3, 3\)"),
    (lambda: nn.Conv(3, 8, (3, 3), rank=3), TypeError, "`kernel_size` must be an int or a "
     "tuple of 3 ints"),
    (lambda: nn.Conv2d(3, 8, 3, rank=3), ValueError, "Conv2d is 2-d; got rank=3"),
    (lambda: nn.Conv(3, 8, 3, rank=0), ValueError, "`rank` must be >= 1"),
    (lambda: nn.MaxPool2d((2, 2, 2)), TypeError, "`kernel_size` must be an int or a tuple of 2"),
    (lambda: nn.Conv(3, 8, (3, 0), rng=R(0)), ValueError, "`kernel_size` must be >= 1"),
    (lambda: nn.Conv(0, 8, (3, 3), rng=R(0)), ValueError, "`in_channels` must be >= 1"),
    (lambda: nn.Conv(3.0, 8, (3, 3), rng=R(0)), TypeError, "`in_channels` must be an int"),
    (lambda: nn.Conv(3, 8, (3, 3), groups=2, rng=R(0)), ValueError, "`groups` must divide"),
    (lambda: nn.Conv(3, 8, (3, 3), stride=(1, 2, 3), rng=R(0)), TypeError, "`stride`"),
    (lambda: nn.Conv(3, 8, (3, 3), padding="bogus", rng=R(0)), ValueError, "`padding`"),
    (lambda: nn.Conv(3, 8, (3, 3), padding_mode="wrap", rng=R(0)), ValueError,
     "`padding_mode`"),
    (lambda: nn.Conv(3, 8, (3, 3), data_format="NCHW", rng=R(0)), ValueError, "`data_format`"),
    (lambda: nn.Conv(3, 8, (3, 3), rng=0), TypeError,
     "`rng` must be a numpy.random.Generator .* or None; got int"),
    (lambda: nn.Dropout(rng=1), TypeError, "`rng` must be a numpy.random.Generator"),
    (lambda: nn.Conv(3, 8, (3, 3), init="he_normal", rng=R(0)), ValueError,
     r"`init` must be None \(PyTorch's default\) or one of \('kaiming_normal'"),
    (lambda: nn.Conv(3, 8, (3, 3), dtype="int32", rng=R(0)), TypeError, "`dtype` must be"),
    (lambda: nn.Conv(3, 8, (3, 3), bias=1, rng=R(0)), TypeError, "`bias` must be True or"),
    (lambda: nn.ConvTranspose(3, 8, (3, 3), output_padding=1.5, rng=R(0)), TypeError,
     "`output_padding`"),
    (lambda: nn.MaxPool("2"), TypeError, "`kernel_size` must be an int or a tuple"),
    (lambda: nn.MaxPool(2, stride=0), ValueError, "`stride` must be >= 1"),
    (lambda: nn.AvgPool(2, ceil_mode="no"), TypeError, "`ceil_mode`"),
    (lambda: nn.GlobalAvgPool(data_format="x"), ValueError, "`data_format`"),
    (lambda: nn.Linear(0, 3, rng=R(0)), ValueError, "`in_features` must be >= 1"),
    (lambda: nn.LeakyReLU(-0.1), ValueError, r"`negative_slope` must be in \[0.0, 1.0\]"),
    (lambda: nn.LeakyReLU("a"), TypeError, "`negative_slope` must be a real number"),
    (lambda: nn.Dropout(1.0), ValueError, r"`p` must be in \[0.0, 1.0\)"),
    (lambda: nn.BatchNorm(3, momentum=1.5), ValueError, "`momentum`"),
    (lambda: nn.BatchNorm(3, eps=0), ValueError, "`eps` must be > 0"),
    (lambda: nn.BatchNorm(3, momentum="0.1"), TypeError, "`momentum` must be a real number"),
    (lambda: nn.Sequential(nn.ReLU(), "relu"), TypeError, "argument 1 is str"),
    # wrong shapes into a layer
    (lambda: nn.Conv(1, 8, (3, 3), rng=R(0)).forward(X4), ValueError,
     r"expects `x` with 1 channels on its last axis .* got shape \(2, 8, 8, 3\)"),
    (lambda: nn.Conv(3, 8, (3, 3), rng=R(0)).forward(X4[0]), ValueError,
     "with 2 spatial dimension"),
    (lambda: nn.Conv(3, 8, (3, 3), rng=R(0)).forward(X4.tolist()), TypeError,
     "`x` must be a numpy.ndarray"),
    (lambda: nn.Linear(64, 10, rng=R(0)).forward(X4), ValueError,
     r"expects `x` of shape \(N, 64\).*put a Flatten"),
    (lambda: nn.BatchNorm(4).forward(X4), ValueError, "expects `x` with 4 channels"),
    (lambda: nn.Flatten().forward(np.zeros(3)), ValueError, "Flatten expects `x`"),
    (lambda: nn.MaxPool(9).forward(X4), ValueError, "output size must be >= 1"),
    (lambda: nn.ReLU().forward(X4, training="yes"), TypeError, "`training` must be True or"),
    (lambda: nn.Conv1d(3, 2, 3).forward(X4), ValueError,
     r"expects `x` of shape \(N, \*S, C\) with 1 spatial dimension\(s\); got shape \(2, 8, 8"),
    (lambda: nn.MaxPool3d(2).forward(X4), ValueError, "with 3 spatial dimension"),
    (lambda: nn.AvgPool1d(2, data_format="channels_first").forward(X4), ValueError,
     r"\(N, C, \*S\) with 1 spatial"),
    (lambda: nn.BatchNorm1d(3).forward(X4), ValueError, "with 0 or 1 spatial dimension"),
    (lambda: nn.BatchNorm3d(3).forward(X4), ValueError, "with 3 spatial dimension"),
    (lambda: nn.ReLU().backward(X4), RuntimeError, "backward called without a recorded forward"),
    (lambda: _after_forward_eval(nn.ReLU(), X4).backward(X4), RuntimeError,
     "enable_grad"),
    (lambda: _after_forward(nn.Flatten(), X4).backward(np.zeros((2, 5), np.float32)),
     ValueError, r"`dy` must have shape \(2, 192\)"),
    (lambda: _after_forward(nn.ReLU(), X4).backward(np.zeros((2, 5), np.float32)),
     ValueError, "`dy` must have shape"),
    (lambda: _after_forward(nn.Conv(3, 2, (3, 3), rng=R(0)), X4).backward(X4), ValueError,
     "`dy` must have shape"),
    # functional ops check their own arguments too
    (lambda: F.linear(np.zeros((2, 3)), np.zeros(3)), ValueError, r"`w` must have shape \(D, F\)"),
    (lambda: F.linear(np.zeros((2, 3)), np.zeros((3, 2)), np.zeros(3)), ValueError,
     r"`b` must have shape \(2,\)"),
    (lambda: F.batch_norm(np.zeros((2, 3)), np.ones(3), np.zeros(3), None, None,
                          training=False), ValueError, "`running_mean` is needed"),
    (lambda: F.dropout(np.zeros(3), 0.5, rng=0), TypeError, "`rng` must be a numpy.random"),
]


def _after_forward(layer, x):
    layer.forward(x, training=True)
    return layer


def _after_forward_eval(layer, x):
    layer.forward(x)                                   # evaluation mode: nothing kept
    return layer


@pytest.mark.parametrize("call, error, match", ERRORS)
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()
