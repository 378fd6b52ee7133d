"""The layers the architectures add: every backward against central differences (float64, both
layouts), every forward and gradient against PyTorch, and every error."""

import numpy as np
import pytest
from helpers import central_difference, rel_err

from npconv import nn
from npconv.nn import functional as F

R = np.random.default_rng
FORMATS = ("channels_last", "channels_first")


def image(rng, n, size, c, fmt):
    x = rng.standard_normal((n, *size, c))
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x


def first(a, fmt):
    """An (N, *S, C) array in PyTorch's (N, C, *S) layout."""
    return np.ascontiguousarray(np.moveaxis(a, -1, 1)) if fmt == "channels_last" else a


def cases(fmt):
    """(name, layer, inputs) for every new layer, float64."""
    f = dict(data_format=fmt)
    yield "identity", nn.Identity(), (image(R(0), 2, (3,), 2, fmt),)
    yield "add", nn.Add(), tuple(image(R(i), 2, (3, 2), 3, fmt) for i in (1, 2))
    yield "add3", nn.Add(), tuple(image(R(i), 2, (3,), 2, fmt) for i in (3, 4, 5))
    yield "concat", nn.Concat(**f), (image(R(6), 2, (3, 2), 2, fmt),
                                     image(R(7), 2, (3, 2), 3, fmt))
    yield "concat-axis1", nn.Concat(1), (R(8).standard_normal((2, 3, 4)),
                                         R(9).standard_normal((2, 1, 4)))
    yield "zeropad", nn.ZeroPad(((1, 0), (2, 3)), **f), (image(R(10), 2, (3, 2), 2, fmt),)
    yield "zeropad-int", nn.ZeroPad(1, **f), (image(R(11), 1, (2, 2, 2), 2, fmt),)
    yield "adaptive-2d", nn.AdaptiveAvgPool2d((3, 2), **f), (image(R(12), 2, (7, 5), 2, fmt),)
    yield "adaptive-1d-up", nn.AdaptiveAvgPool1d(5, **f), (image(R(13), 2, (3,), 2, fmt),)
    yield "adaptive-3d-none", nn.AdaptiveAvgPool3d((None, 1, 2), **f), \
        (image(R(14), 1, (2, 3, 5), 2, fmt),)
    yield "adaptive-global", nn.AdaptiveAvgPool(1, **f), (image(R(15), 2, (4, 3), 2, fmt),)
    yield "flatten-torch-order", nn.Flatten(**f), (image(R(16), 2, (2, 3), 4, fmt),)
    yield "global-max", nn.GlobalMaxPool(**f), (image(R(17), 2, (3, 4), 3, fmt),)
    yield "relu6", nn.ReLU6(), (image(R(19), 2, (3,), 4, fmt) * 4 + 3,)
    yield "hardswish", nn.Hardswish(), (image(R(20), 2, (3,), 4, fmt) * 3,)
    yield "hardsigmoid", nn.Hardsigmoid(), (image(R(21), 2, (3,), 4, fmt) * 3,)
    yield "silu", nn.SiLU(), (image(R(22), 2, (3,), 4, fmt) * 2,)
    yield "leaky", nn.LeakyReLU(0.2), (image(R(23), 2, (3,), 4, fmt),)
    yield "upsample-nearest", nn.Upsample(scale_factor=2, **f), (image(R(24), 2, (2, 3), 2, fmt),)
    yield "upsample-bilinear", nn.Upsample(size=(5, 7), mode="bilinear", **f), \
        (image(R(25), 2, (3, 4), 2, fmt),)
    yield "upsample-bilinear-corners", nn.Upsample(scale_factor=2, mode="bilinear",
                                                   align_corners=True, **f), \
        (image(R(26), 1, (3, 2), 2, fmt),)
    yield "upsample-linear", nn.Upsample(scale_factor=1.5, mode="linear", **f), \
        (image(R(27), 2, (4,), 3, fmt),)
    yield "layernorm", nn.LayerNorm((3, 4) if fmt == "channels_last" else (4, 3),
                                    dtype="float64"), (image(R(28), 2, (3,), 4, fmt),)
    yield "groupnorm", nn.GroupNorm(2, 4, **f, dtype="float64"), \
        (image(R(29), 2, (3, 2), 4, fmt),)
    yield "max-pool-indices", nn.MaxPool2d(3, stride=2, padding=1, **f), \
        (image(R(18), 2, (5, 6), 3, fmt),)


CASES = [(fmt, name) for fmt in FORMATS for name, *_ in cases(fmt)]


def case(fmt, name):
    return next((layer, xs) for n, layer, xs in cases(fmt) if n == name)


@pytest.mark.parametrize("fmt, name", CASES)
def test_backward_matches_central_differences(fmt, name):
    layer, xs = case(fmt, name)
    dy = R(100).standard_normal(layer.forward(*xs).shape)
    layer.forward(*xs, training=True)
    dxs = layer.backward(dy)
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    for x, dx in zip(xs, dxs, strict=True):
        assert dx.shape == x.shape
        num = central_difference(lambda: float(np.sum(dy * layer.forward(*xs))), x)
        assert rel_err(dx, num) < 1e-8


def torch_twin(torch, name, fmt):
    """The PyTorch op of each case, on (N, C, *S) tensors."""
    tf = torch.nn.functional
    return {
        "identity": lambda x: x,
        "add": lambda a, b: a + b,
        "add3": lambda a, b, c: a + b + c,
        "concat": lambda a, b: torch.cat([a, b], dim=1),
        "zeropad": lambda x: tf.pad(x, [2, 3, 1, 0]),
        "zeropad-int": lambda x: tf.pad(x, [1] * 6),
        "adaptive-2d": lambda x: tf.adaptive_avg_pool2d(x, (3, 2)),
        "adaptive-1d-up": lambda x: tf.adaptive_avg_pool1d(x, 5),
        "adaptive-3d-none": lambda x: tf.adaptive_avg_pool3d(x, (None, 1, 2)),
        "adaptive-global": lambda x: tf.adaptive_avg_pool2d(x, 1),
        "flatten-torch-order": lambda x: torch.flatten(x, 1),
        "global-max": lambda x: torch.flatten(tf.adaptive_max_pool2d(x, 1), 1),
        "relu6": tf.relu6,
        "hardswish": tf.hardswish,
        "hardsigmoid": tf.hardsigmoid,
        "silu": tf.silu,
        "leaky": lambda x: tf.leaky_relu(x, 0.2),
        "upsample-nearest": lambda x: tf.interpolate(x, scale_factor=2),
        "upsample-bilinear": lambda x: tf.interpolate(x, size=(5, 7), mode="bilinear"),
        "upsample-bilinear-corners": lambda x: tf.interpolate(x, scale_factor=2, mode="bilinear",
                                                              align_corners=True),
        "upsample-linear": lambda x: tf.interpolate(x, scale_factor=1.5, mode="linear"),
        "layernorm": lambda x: tf.layer_norm(x, (4, 3)) if fmt == "channels_first"
        else tf.layer_norm(x.permute(0, 2, 1), (3, 4)).permute(0, 2, 1),
        "groupnorm": lambda x: tf.group_norm(x, 2),
        "max-pool-indices": lambda x: tf.max_pool2d(x, 3, 2, 1),
    }[name]


@pytest.mark.parametrize("fmt, name", [c for c in CASES if c[1] != "concat-axis1"])
def test_matches_torch(torch, fmt, name):
    layer, xs = case(fmt, name)
    ts = [torch.tensor(first(x, fmt), requires_grad=True) for x in xs]
    yt = torch_twin(torch, name, fmt)(*ts)
    y = layer.forward(*xs, training=True)
    y_first = y if y.ndim == 2 else first(y, fmt)
    assert rel_err(y_first, yt.detach().numpy()) < 1e-12
    dy = R(1).standard_normal(yt.shape)
    yt.backward(torch.tensor(dy))
    dxs = layer.backward(dy if y.ndim == 2 or fmt == "channels_first" else np.moveaxis(dy, 1, -1))
    # PyTorch's hardsigmoid backward multiplies by float32(1/6) even in float64
    tol = 1e-7 if name == "hardsigmoid" else 1e-12
    for t, dx in zip(ts, dxs if isinstance(dxs, tuple) else (dxs,), strict=True):
        assert rel_err(first(dx, fmt), t.grad.numpy()) < tol


def test_adaptive_windows_follow_pytorch_rule():
    """Cell i averages floor(i S / P) <= s < ceil((i + 1) S / P): overlapping windows when S is
    not a multiple of P, repeated inputs when P > S."""
    m, counts = F.adaptive_windows(10, 4)                          # [0,3) [2,5) [5,8) [7,10)
    assert [np.flatnonzero(r).tolist() for r in m] == [[0, 1, 2], [2, 3, 4], [5, 6, 7],
                                                       [7, 8, 9]]
    assert counts.tolist() == [3, 3, 3, 3]
    m, _ = F.adaptive_windows(2, 3)
    assert m.astype(int).tolist() == [[1, 0], [1, 1], [0, 1]]


def test_merges_never_modify_their_inputs_outside_a_forward():
    a, b = R(0).standard_normal((2, 3)), R(1).standard_normal((2, 3))
    a0, b0 = a.copy(), b.copy()
    y = nn.Add()(a, b)
    assert y is not a and y is not b and np.array_equal(a, a0) and np.array_equal(b, b0)
    assert np.array_equal(nn.add(a, b), a0 + b0)
    assert np.array_equal(nn.concat(a, b, axis=0), np.concatenate([a0, b0]))


def test_float32_kept():
    a = R(0).standard_normal((2, 4, 4, 3)).astype(np.float32)
    for layer, xs in ((nn.Add(), (a, a)), (nn.Concat(), (a, a)), (nn.ZeroPad(1), (a,)),
                      (nn.AdaptiveAvgPool2d(3), (a,)), (nn.Identity(), (a,))):
        assert layer.forward(*xs).dtype == np.float32, layer


A = np.zeros((2, 3, 3, 2))


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Add()(A), TypeError, r"Add\(\) takes two or more arrays; got 1"),
    (lambda: nn.Add()(A, A[:, :2]), ValueError, r"arrays of one shape .* x1 is float64 "
                                                r"\(2, 2, 3, 2\)"),
    (lambda: nn.Add()(A, A.astype(np.float32)), ValueError, "one dtype"),
    (lambda: nn.Add()(A, [1.0]), TypeError, "`x1` must be a numpy.ndarray"),
    (lambda: nn.Concat()(A, A[:, :2, :2]), ValueError, "one shape but along axis 3"),
    (lambda: nn.Concat(axis=5)(A, A), ValueError, r"`axis` must be in \[-4, 4\)"),
    (lambda: nn.Concat(axis=1.0), TypeError, "`axis` must be None"),
    (lambda: nn.Concat(data_format="NHWC"), ValueError, "`data_format` must be one of"),
    (lambda: nn.ZeroPad(-1), ValueError, "`padding` must be >= 0"),
    (lambda: nn.ZeroPad((1, 2)), TypeError, r"\(lo, hi\) int pairs"),
    (lambda: nn.ZeroPad(((1, 1),))(A), ValueError, r"has 1 \(lo, hi\) pairs for an input with "
                                                    r"2 spatial"),
    (lambda: nn.ZeroPad(1)(np.zeros((2, 3))), ValueError, "at least one spatial axis"),
    (lambda: nn.AdaptiveAvgPool2d((2, 2, 2)), ValueError, "takes an `output_size` of 2"),
    (lambda: nn.AdaptiveAvgPool2d(0), ValueError, "ints >= 1 or None"),
    (lambda: nn.AdaptiveAvgPool2d("7"), TypeError, "`output_size` must be an int"),
    (lambda: nn.AdaptiveAvgPool((2, 2))(np.zeros((2, 3, 4))), ValueError,
     "`output_size` must be an int >= 1 or a tuple of 1"),
    (lambda: nn.AdaptiveAvgPool2d(2)(np.zeros((2, 3, 4))), ValueError, "with 2 spatial"),
    (lambda: F.adaptive_avg_pool(np.zeros((2, 3)), 1), ValueError, "at least one spatial"),
    (lambda: F.adaptive_avg_pool_backward(np.zeros((2, 2, 2, 2)), (2, 4, 4, 2), 3),
     ValueError, r"`dy` must have shape \(2, 3, 3, 2\)"),
    (lambda: nn.Flatten(data_format="NHWC"), ValueError, "`data_format` must be one of"),
    (lambda: nn.Identity().backward(A), RuntimeError, "without a recorded forward"),
    (lambda: _trained(nn.Add(), A, A).backward(A[:1]), ValueError, "`dy` must have shape"),
    (lambda: _trained(nn.Concat(), A, A).backward(A), ValueError,
     r"`dy` must have shape \(2, 3, 3, 4\)"),
    (lambda: _trained(nn.ZeroPad(1), A).backward(A), ValueError,
     r"`dy` must have shape \(2, 5, 5, 2\)"),
    (lambda: _trained(nn.Flatten(data_format="channels_last"), A).backward(A), ValueError,
     r"`dy` must have shape \(2, 18\)"),
])
def test_errors_name_the_argument(call, error, match):
    with pytest.raises(error, match=match):
        call()


def _trained(layer, *xs):
    layer.forward(*xs, training=True)
    return layer


def test_max_pools_keep_the_argmax_not_the_input():
    """MaxPool and GlobalMaxPool backward from the forward's argmax (issue 18): the input is
    not kept (changing it after the forward changes nothing), MaxPool keeps one byte per
    window (`pooling.max_pool_codes`), and an evaluation forward computes no argmax at all."""
    for layer, kept in ((nn.MaxPool2d(2), np.uint8), (nn.GlobalMaxPool(), np.int64)):
        x = R(0).permutation(64).reshape(1, 4, 4, 4).astype(np.float64)
        y = layer.forward(x, training=True)
        dy = R(1).standard_normal(y.shape)
        shape, argmax = layer._cache
        assert shape == x.shape and argmax.dtype == kept and argmax.shape == y.shape
        x[...] = x[:, ::-1]                                         # another argmax
        dx = layer.backward(dy)
        assert np.count_nonzero(dx) == dy.size and dx.sum() == pytest.approx(dy.sum())
        layer.forward(x)
        assert layer._cache is None


@pytest.mark.parametrize("fmt", FORMATS)
def test_norm_parameter_gradients_match_torch(torch, fmt):
    """LayerNorm's and GroupNorm's weight and bias gradients, with affine parameters away
    from 1 and 0, against torch autograd and central differences (float64)."""
    x = image(R(0), 2, (3, 2), 4, fmt)
    shape = x.shape[1:]
    for layer, twin in ((nn.LayerNorm(shape, dtype="float64"),
                         lambda t, w, b: torch.nn.functional.layer_norm(t, shape, w, b)),
                        (nn.GroupNorm(2, 4, data_format=fmt, dtype="float64"),
                         lambda t, w, b: torch.nn.functional.group_norm(t, 2, w, b))):
        for key in ("weight", "bias"):
            layer.params[key][...] = R(1).uniform(0.5, 1.5, layer.params[key].shape)
        dy = R(2).standard_normal(x.shape)
        layer.forward(x, training=True)
        layer.backward(dy)
        tensors = {k: torch.tensor(v, requires_grad=True) for k, v in layer.params.items()}
        if isinstance(layer, nn.GroupNorm):
            xt = torch.tensor(first(x, fmt))
            twin(xt, tensors["weight"], tensors["bias"]).backward(torch.tensor(first(dy, fmt)))
        else:
            twin(torch.tensor(x), tensors["weight"], tensors["bias"]).backward(torch.tensor(dy))
        for key, t in tensors.items():
            assert rel_err(layer.grads[key], t.grad.numpy()) < 1e-12, (layer, key)
            num = central_difference(lambda lay=layer, d=dy: float(np.sum(d * lay.forward(x))),
                                     layer.params[key])
            assert rel_err(layer.grads[key], num) < 1e-7, (layer, key)


def test_batch_norm_keras_convention():
    """convention="keras": running statistics momentum * old + (1 - momentum) * batch with the
    biased batch variance (Keras' rule), checked against the formula."""
    bn = nn.BatchNorm2d(3, momentum=0.9, eps=1e-3, convention="keras", dtype="float64")
    x = R(0).standard_normal((4, 5, 5, 3)) * 2 + 1
    bn.forward(x, training=True)
    mean, var = x.mean(axis=(0, 1, 2)), x.var(axis=(0, 1, 2))                   # biased
    assert rel_err(bn.buffers["running_mean"], 0.1 * mean) < 1e-12
    assert rel_err(bn.buffers["running_var"], 0.9 + 0.1 * var) < 1e-12
    assert bn.config()["convention"] == "keras" and "convention" not in nn.BatchNorm(3).config()
    with pytest.raises(ValueError, match="convention='keras' needs a number"):
        nn.BatchNorm(3, momentum=None, convention="keras")
    with pytest.raises(ValueError, match="`convention` must be one of"):
        nn.BatchNorm(3, convention="tf")


@pytest.mark.parametrize("call, error, match", [
    (lambda: nn.Upsample(), ValueError, "exactly one of `size` and `scale_factor`"),
    (lambda: nn.Upsample(size=2, scale_factor=2), ValueError, "exactly one of"),
    (lambda: nn.Upsample(scale_factor=2, mode="cubic"), ValueError, "`mode` must be one of"),
    (lambda: nn.GroupNorm(3, 4), ValueError, "`num_groups` must divide num_channels"),
    (lambda: nn.GroupNorm(2, 4)(np.zeros((2, 3, 3))), ValueError, "expects `x` with 4 channels"),
    (lambda: nn.LayerNorm(0), ValueError, "`normalized_shape` must be >= 1"),
    (lambda: nn.LayerNorm(3, eps=0), ValueError, "`eps` must be > 0"),
    (lambda: nn.ReLU6(inplace="yes"), TypeError, "`inplace` must be True or False"),
    (lambda: _trained(nn.ReLU6(), A).backward(A[:1]), ValueError,
     r"`dy` must have shape \(2, 3, 3, 2\)"),
    (lambda: nn.SiLU().backward(A), RuntimeError, "without a recorded forward"),
])
def test_new_layer_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()
