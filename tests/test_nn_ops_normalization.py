"""npconv.nn.normalization: batch, group and layer norm forward and backward against the plain
NumPy definition, central differences (float64), PyTorch (values, autograd, running
statistics), both layouts, any rank, float32 accuracy with |mean| >> std, NaN, float16, the
blocked and threaded paths, in-place `out=`, folding into a convolution, and every error."""

import numpy as np
import pytest
from helpers import central_difference, rel_err

import npconv
from npconv._config import tuned
from npconv.nn import normalization as N

FORMATS = ("channels_last", "channels_first")


def to_format(x, fmt):
    """A channels_last array in `fmt` (C-contiguous)."""
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x


def from_torch(a, fmt):
    """A channels_first (PyTorch) array in `fmt`."""
    return np.moveaxis(a, 1, -1) if fmt == "channels_last" else a


def channel_axis(x, fmt):
    return x.ndim - 1 if fmt == "channels_last" else 1


def per_channel(v, x, fmt):
    shape = [1] * x.ndim
    shape[channel_axis(x, fmt)] = -1
    return np.asarray(v).reshape(shape)


# ---------------------------------------------------------------------------------------------
# The definitions, in float64
# ---------------------------------------------------------------------------------------------


def naive_batch_norm(x, gamma, beta, eps, fmt):
    axes = tuple(a for a in range(x.ndim) if a != channel_axis(x, fmt))
    mean, var = x.mean(axis=axes), x.var(axis=axes)
    y = (x - per_channel(mean, x, fmt)) / np.sqrt(per_channel(var, x, fmt) + eps)
    return y * per_channel(gamma, x, fmt) + per_channel(beta, x, fmt), mean, var


def naive_group_norm(x, groups, gamma, beta, eps, fmt):
    xc = np.moveaxis(x, channel_axis(x, fmt), 1)                 # (N, C, *S)
    g = xc.reshape(xc.shape[0], groups, -1)                      # (N, G, C/G * S)
    mean, var = g.mean(axis=2), g.var(axis=2)
    y = ((g - mean[..., None]) / np.sqrt(var[..., None] + eps)).reshape(xc.shape)
    y = y * gamma.reshape(-1, *[1] * (x.ndim - 2)) + beta.reshape(-1, *[1] * (x.ndim - 2))
    return np.moveaxis(y, 1, channel_axis(x, fmt)), mean, var


def naive_layer_norm(x, k, gamma, beta, eps):
    axes = tuple(range(x.ndim - k, x.ndim))
    mean, var = x.mean(axis=axes, keepdims=True), x.var(axis=axes, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * gamma + beta, mean, var


def numeric_grads(f, arrays, dy):
    """Central differences of sum(f() * dy) with respect to each array."""
    return [central_difference(lambda: float((f() * dy).sum()), a) for a in arrays]


# ---------------------------------------------------------------------------------------------
# Batch norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(5, 3), (3, 7, 4), (2, 5, 6, 3), (2, 3, 2, 4, 2)])
def test_batch_norm_matches_definition(fmt, shape, rng):
    x = to_format(rng.normal(2, 3, shape), fmt)
    c = shape[-1]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    y, mean, var = N.batch_norm_train(x, gamma, beta, eps=1e-3, data_format=fmt)
    y0, mean0, var0 = naive_batch_norm(x, gamma, beta, 1e-3, fmt)
    assert rel_err(y, y0) < 1e-13 and rel_err(mean, mean0) < 1e-14 and rel_err(var, var0) < 1e-13
    assert rel_err(N.batch_norm_eval(x, gamma, beta, mean, var, eps=1e-3, data_format=fmt),
                   y0) < 1e-13
    y, _, _ = N.batch_norm_train(x, data_format=fmt)             # no affine parameters
    assert rel_err(y, naive_batch_norm(x, np.ones(c), np.zeros(c), 1e-5, fmt)[0]) < 1e-13


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_backward_matches_central_differences(fmt, training, rng):
    x = to_format(rng.normal(1, 2, (3, 4, 2, 3)), fmt)
    dy = rng.standard_normal(x.shape)
    gamma, beta = rng.standard_normal(3), rng.standard_normal(3)
    rm, rv = rng.standard_normal(3), rng.uniform(0.5, 2, 3)

    def forward():
        if training:
            return N.batch_norm_train(x, gamma, beta, data_format=fmt)[0]
        return N.batch_norm_eval(x, gamma, beta, rm, rv, data_format=fmt)

    mean, var = N.batch_norm_train(x, data_format=fmt)[1:] if training else (rm, rv)
    dx, dgamma, dbeta = N.batch_norm_backward(dy, x, gamma, mean, var, training=training,
                                              data_format=fmt)
    for got, want in zip((dx, dgamma, dbeta), numeric_grads(forward, [x, gamma, beta], dy)):
        assert rel_err(got, want) < 1e-7
    assert dgamma.dtype == gamma.dtype and dx.dtype == x.dtype
    dx_plain, g, b = N.batch_norm_backward(dy, x, None, mean, var, training=training,
                                           data_format=fmt)
    assert g is None and b is None and dx_plain.shape == x.shape


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("spatial", [(), (7,), (5, 6), (3, 4, 5)])
def test_batch_norm_matches_torch(torch, fmt, dtype, spatial, rng):
    c = 4
    x = rng.normal(0.5, 2, (3, *spatial, c)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(c).astype(dtype), rng.standard_normal(c).astype(dtype)
    bn = {0: torch.nn.BatchNorm1d, 1: torch.nn.BatchNorm1d, 2: torch.nn.BatchNorm2d,
          3: torch.nn.BatchNorm3d}[len(spatial)](c).to(getattr(torch, np.dtype(dtype).name))
    with torch.no_grad():
        bn.weight.copy_(torch.from_numpy(gamma))
        bn.bias.copy_(torch.from_numpy(beta))
    xt = torch.from_numpy(to_format(x, "channels_first")).requires_grad_()
    yt = bn(xt)
    yt.backward(torch.from_numpy(to_format(dy, "channels_first")))

    xf, dyf = to_format(x, fmt), to_format(dy, fmt)
    y, mean, var = N.batch_norm_train(xf, gamma, beta, data_format=fmt)
    dx, dgamma, dbeta = N.batch_norm_backward(dyf, xf, gamma, mean, var, data_format=fmt)
    rm, rv = N.running_stats_update(np.zeros(c, dtype), np.ones(c, dtype), mean, var,
                                    x.size // c)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(y, from_torch(yt.detach().numpy(), fmt)) < tol
    assert rel_err(dx, from_torch(xt.grad.numpy(), fmt)) < tol
    assert rel_err(dgamma, bn.weight.grad.numpy()) < tol
    assert rel_err(dbeta, bn.bias.grad.numpy()) < tol
    assert rel_err(rm, bn.running_mean.numpy()) < tol and rel_err(rv, bn.running_var.numpy()) < tol
    bn.eval()
    ye = N.batch_norm_eval(xf, gamma, beta, rm, rv, data_format=fmt)
    assert rel_err(ye, from_torch(bn(torch.from_numpy(to_format(x, "channels_first")))
                                  .detach().numpy(), fmt)) < tol


def test_running_stats_conventions(torch, rng):
    """PyTorch: exponential (momentum 0.1) and cumulative (momentum None) averages with the
    unbiased variance; Keras: new = m old + (1 - m) batch with the biased variance."""
    x = rng.normal(1, 2, (6, 3, 3, 2))
    rm, rv = rng.standard_normal(2), rng.uniform(0.5, 2, 2)
    _, mean, var = N.batch_norm_train(x)
    m = x.size // 2
    new = N.running_stats_update(rm, rv, mean, var, m, momentum=0.99, convention="keras")
    np.testing.assert_allclose(new[0], 0.99 * rm + 0.01 * mean, rtol=1e-15)
    np.testing.assert_allclose(new[1], 0.99 * rv + 0.01 * var, rtol=1e-15)
    bn = torch.nn.BatchNorm2d(2, momentum=None).double()
    xt = torch.from_numpy(to_format(x, "channels_first"))
    stats = (np.zeros(2), np.ones(2))
    for step in (1, 2):
        bn(xt * step)
        _, mean, var = N.batch_norm_train(x * step)
        stats = N.running_stats_update(*stats, mean, var, m, momentum=None,
                                       num_batches_tracked=step)
    assert rel_err(stats[0], bn.running_mean.numpy()) < 1e-14
    assert rel_err(stats[1], bn.running_var.numpy()) < 1e-14


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning")        # Keras' torch backend
def test_running_stats_keras_layer(rng):
    """Keras' own BatchNormalization, when installed (KERAS_BACKEND=torch)."""
    import os
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    x = rng.normal(1, 2, (8, 3, 3, 2)).astype(np.float32)
    layer = keras.layers.BatchNormalization()
    y = keras.ops.convert_to_numpy(layer(x, training=True))
    ours, mean, var = N.batch_norm_train(x, eps=1e-3)
    rm, rv = N.running_stats_update(np.zeros(2, np.float32), np.ones(2, np.float32), mean, var,
                                    x.size // 2, momentum=0.99, convention="keras")
    assert rel_err(ours, y) < 1e-5
    assert rel_err(rm, keras.ops.convert_to_numpy(layer.moving_mean)) < 1e-5
    assert rel_err(rv, keras.ops.convert_to_numpy(layer.moving_variance)) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_float32_statistics_keep_two_pass_accuracy(fmt, rng):
    """x ~ N(1e3, 1): a one-pass E[x^2] - E[x]^2 in float32 loses every digit of the variance;
    the blocked, centred sums keep it to float32 rounding, and y and dx stay at PyTorch's
    error (5e-5 and 5e-6 relative on this data)."""
    x = to_format(rng.normal(1e3, 1, (16, 20, 20, 8)), fmt).astype(np.float32)
    dy = (rng.standard_normal(x.shape) + (x - 1e3)).astype(np.float32)
    x64, dy64 = x.astype(np.float64), dy.astype(np.float64)
    y, mean, var = N.batch_norm_train(x, data_format=fmt)
    y0, mean0, var0 = naive_batch_norm(x64, np.ones(8), np.zeros(8), 1e-5, fmt)
    assert rel_err(mean, mean0) < 1e-7 and rel_err(var, var0) < 1e-6
    assert np.abs(y - y0).max() < 5e-5
    dx = N.batch_norm_backward(dy, x, None, mean, var, data_format=fmt)[0]
    dx0 = N.batch_norm_backward(dy64, x64, None, mean0, var0, data_format=fmt)[0]
    assert rel_err(dx, dx0) < 1e-5


@pytest.mark.parametrize("fmt", FORMATS)
def test_blocks_pieces_and_workers_agree(fmt, rng):
    """Images larger than a block are cut into pieces, smaller ones batched; one or two
    workers give the same bits, and both equal the definition."""
    for shape in [(2, 128, 160, 8), (40, 16, 16, 8)]:            # 640 KiB, 8 KiB images
        x = to_format(rng.normal(3, 2, shape), fmt).astype(np.float32)
        dy = rng.standard_normal(x.shape).astype(np.float32)
        results = []
        for threads in (1, 2):                                   # 256 KiB blocks
            with npconv.config(threads=threads), tuned(block_bytes=2**18,
                                                       block_parallel_bytes=0):
                y, mean, var = N.batch_norm_train(x, data_format=fmt)
                results.append((y, N.batch_norm_backward(dy, x, None, mean, var,
                                                         data_format=fmt)[0]))
        for a, b in zip(*results):
            np.testing.assert_array_equal(a, b)
        y0 = naive_batch_norm(x.astype(np.float64), np.ones(8), np.zeros(8), 1e-5, fmt)[0]
        assert np.abs(results[0][0] - y0).max() < 1e-5


def test_pieces_of_one_large_image(rng):
    """One image of 2 MiB (float32): its positions split into pieces merged with Chan's
    formula; channels_last rows folded."""
    x = rng.normal(-1, 3, (2, 256, 256, 8)).astype(np.float32)
    with tuned(block_bytes=2**20):
        _, mean, var = N.batch_norm_train(x)
    assert rel_err(mean, x.astype(np.float64).mean(axis=(0, 1, 2))) < 1e-6
    assert rel_err(var, x.astype(np.float64).var(axis=(0, 1, 2))) < 1e-6



@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape", [(4, 56, 56, 96), (3, 112, 112, 64), (5, 9, 11, 3)])
def test_blocks_share_the_work_evenly_among_workers(fmt, shape):
    """An image a little larger than a block is cut into equal pieces, not a full one and a
    remainder: blocks are dealt round-robin, and the remainders all went to one worker
    (4x56x56x96: 86% of the work on one of two)."""
    from npconv.nn import _blocks, _channels
    layout = _channels.layout(shape, fmt, 4)
    sizes = [len(range(layout.n)[images]) * (rows.stop - rows.start)
             for _, images, rows in layout.chunks]
    for workers in (2, 3):
        shares = [sum(sizes[i::workers]) for i in range(workers)]
        assert max(shares) - min(shares) <= max(sizes), (workers, shares)  # one block
    for n, unit, block in [(28, 43008, 2**20), (10, 4, 16), (1, 100, 10), (7, 1, 7)]:
        parts = _blocks.spans(n, unit, block)
        lengths = [p.stop - p.start for p in parts]
        assert [p.start for p in parts[1:]] == [p.stop for p in parts[:-1]]
        assert parts[0].start == 0 and parts[-1].stop == n
        assert max(lengths) - min(lengths) <= 1
        assert max(lengths) <= max(1, block // unit)

@pytest.mark.parametrize("fmt", FORMATS)
def test_batch_norm_nan_stays_in_its_channel(fmt, rng):
    x = rng.standard_normal((4, 5, 3))
    x[2, 1, 1] = np.nan
    x = to_format(x, fmt)
    y, mean, var = N.batch_norm_train(x, data_format=fmt)
    ax = channel_axis(x, fmt)
    nan_channels = np.isnan(y).all(axis=tuple(a for a in range(3) if a != ax))
    np.testing.assert_array_equal(nan_channels, [False, True, False])
    assert not np.isnan(np.take(y, [0, 2], axis=ax)).any()
    dx = N.batch_norm_backward(np.ones_like(x), x, None, mean, var, data_format=fmt)[0]
    assert not np.isnan(np.take(dx, [0, 2], axis=ax)).any()


@pytest.mark.parametrize("fmt", FORMATS)
def test_float16_kept_and_computed_in_float32(fmt, rng):
    x = to_format(rng.normal(2, 3, (4, 6, 5, 3)), fmt).astype(np.float16)
    dy = rng.standard_normal(x.shape).astype(np.float16)
    g = np.ones(3, np.float32)
    y, mean, var = N.batch_norm_train(x, g, None, data_format=fmt)
    dx, dgamma, _ = N.batch_norm_backward(dy, x, g, mean, var, data_format=fmt)
    assert y.dtype == dx.dtype == np.float16 and mean.dtype == np.float32
    assert dgamma.dtype == np.float32
    y32, m32, v32 = N.batch_norm_train(x.astype(np.float32), g, None, data_format=fmt)
    np.testing.assert_array_equal(y, y32.astype(np.float16))
    assert rel_err(dx, N.batch_norm_backward(dy.astype(np.float32), x.astype(np.float32), g,
                                             m32, v32, data_format=fmt)[0]) < 2e-3


def test_inputs_unchanged_and_in_place(rng):
    x = rng.standard_normal((3, 4, 5, 2))
    dy = rng.standard_normal(x.shape)
    g, b = rng.standard_normal(2), rng.standard_normal(2)
    copies = [a.copy() for a in (x, dy, g, b)]
    y, mean, var = N.batch_norm_train(x, g, b)
    dx, _, _ = N.batch_norm_backward(dy, x, g, mean, var)
    for a, c in zip((x, dy, g, b), copies):
        np.testing.assert_array_equal(a, c)
    buf = x.copy()
    assert N.batch_norm_train(buf, g, b, out=buf)[0] is buf
    np.testing.assert_array_equal(buf, y)
    buf = dy.copy()
    assert N.batch_norm_backward(buf, x, g, mean, var, out=buf)[0] is buf
    np.testing.assert_array_equal(buf, dx)
    buf = x.copy()
    assert N.batch_norm_eval(buf, g, b, mean, var, out=buf) is buf


def test_folding_into_the_convolution_before_it(rng):
    """conv then batch norm (evaluation) == one conv with w * a and bias * a + b."""
    x = rng.standard_normal((2, 6, 6, 3))
    w, bias = rng.standard_normal((3, 3, 3, 4)), rng.standard_normal(4)
    gamma, beta = rng.standard_normal(4), rng.standard_normal(4)
    rm, rv = rng.standard_normal(4), rng.uniform(0.5, 2, 4)
    a, b = N.batch_norm_scale_shift(gamma, beta, rm, rv)
    y = N.batch_norm_eval(npconv.conv(x, w, bias), gamma, beta, rm, rv)
    assert rel_err(npconv.conv(x, w * a, bias * a + b), y) < 1e-13


# ---------------------------------------------------------------------------------------------
# Group norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("shape, groups", [((3, 6), 2), ((2, 5, 6), 3), ((2, 4, 3, 4), 4),
                                           ((2, 2, 3, 2, 4), 1)])
def test_group_norm_matches_definition_and_central_differences(fmt, shape, groups, rng):
    x = to_format(rng.normal(1, 2, shape), fmt)
    c = shape[-1]
    gamma, beta = rng.standard_normal(c), rng.standard_normal(c)
    y, mean, var = N.group_norm(x, groups, gamma, beta, data_format=fmt)
    y0, mean0, var0 = naive_group_norm(x, groups, gamma, beta, 1e-5, fmt)
    assert rel_err(y, y0) < 1e-13 and rel_err(mean, mean0) < 1e-14 and rel_err(var, var0) < 1e-13
    dy = rng.standard_normal(x.shape)
    dx, dgamma, dbeta = N.group_norm_backward(dy, x, groups, gamma, mean, var, data_format=fmt)
    f = lambda: N.group_norm(x, groups, gamma, beta, data_format=fmt)[0]  # noqa: E731
    for got, want in zip((dx, dgamma, dbeta), numeric_grads(f, [x, gamma, beta], dy)):
        assert rel_err(got, want) < 1e-7


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_group_norm_matches_torch(torch, fmt, dtype, rng):
    x = rng.normal(1, 2, (3, 5, 4, 8)).astype(dtype)
    dy = rng.standard_normal(x.shape).astype(dtype)
    gamma, beta = rng.standard_normal(8).astype(dtype), rng.standard_normal(8).astype(dtype)
    ts = [torch.from_numpy(a).requires_grad_() for a in (to_format(x, "channels_first"), gamma,
                                                         beta)]
    yt = torch.nn.functional.group_norm(ts[0], 4, ts[1], ts[2])
    yt.backward(torch.from_numpy(to_format(dy, "channels_first")))
    y, mean, var = N.group_norm(to_format(x, fmt), 4, gamma, beta, data_format=fmt)
    grads = N.group_norm_backward(to_format(dy, fmt), to_format(x, fmt), 4, gamma, mean, var,
                                  data_format=fmt)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(y, from_torch(yt.detach().numpy(), fmt)) < tol
    for got, t, convert in zip(grads, ts, (True, False, False)):
        want = t.grad.numpy()
        assert rel_err(got, from_torch(want, fmt) if convert else want) < tol


@pytest.mark.parametrize("fmt", FORMATS)
def test_group_norm_nan_float16_and_no_affine(fmt, rng):
    x = rng.standard_normal((2, 3, 4))
    x[1, 0, 3] = np.nan                                          # image 1, group 1 (channels 2, 3)
    x = to_format(x, fmt)
    y, _, _ = N.group_norm(x, 2, data_format=fmt)
    y = y if fmt == "channels_first" else np.moveaxis(y, -1, 1)  # (N, C, S)
    assert np.isnan(y[1, 2:]).all() and not np.isnan(y[0]).any() and not np.isnan(y[1, :2]).any()
    x16 = rng.standard_normal((2, 3, 4)).astype(np.float16)
    y16, m16, v16 = N.group_norm(x16, 2)
    assert y16.dtype == np.float16 and m16.dtype == np.float32
    np.testing.assert_array_equal(y16, N.group_norm(x16.astype(np.float32), 2)[0]
                                  .astype(np.float16))
    dx, dg, db = N.group_norm_backward(np.ones_like(x16), x16, 2, None, m16, v16)
    assert dx.dtype == np.float16 and dg is None and db is None


# ---------------------------------------------------------------------------------------------
# Layer norm
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape, normalized", [((4, 6), 6), ((2, 3, 4, 5), (4, 5)),
                                               ((3, 2, 5), (3, 2, 5)), ((4, 1), 1)])
def test_layer_norm_matches_definition_and_central_differences(shape, normalized, rng):
    x = rng.normal(1, 2, shape)
    ns = (normalized,) if isinstance(normalized, int) else normalized
    gamma, beta = rng.standard_normal(ns), rng.standard_normal(ns)
    y, mean, var = N.layer_norm(x, normalized, gamma, beta)
    y0, mean0, var0 = naive_layer_norm(x, len(ns), gamma, beta, 1e-5)
    assert rel_err(y, y0) < 1e-13
    assert rel_err(mean, mean0.reshape(mean.shape)) < 1e-14
    assert rel_err(var, var0.reshape(var.shape)) < 1e-13
    dy = rng.standard_normal(shape)
    dx, dgamma, dbeta = N.layer_norm_backward(dy, x, normalized, gamma, mean, var)
    f = lambda: N.layer_norm(x, normalized, gamma, beta)[0]     # noqa: E731
    for got, want in zip((dx, dgamma, dbeta), numeric_grads(f, [x, gamma, beta], dy)):
        assert rel_err(got, want) < 1e-7


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape, normalized", [((3, 7, 16), (16,)), ((3, 300000), (300000,)),
                                               ((300, 64), (64,))])
def test_layer_norm_matches_torch(torch, dtype, shape, normalized, rng):
    """Short rows in blocks, and rows longer than a block (one row each, float32 1.2 MB)."""
    x = rng.normal(3, 2, shape).astype(dtype)
    dy = rng.standard_normal(shape).astype(dtype)
    gamma = rng.standard_normal(normalized).astype(dtype)
    beta = rng.standard_normal(normalized).astype(dtype)
    ts = [torch.from_numpy(a).requires_grad_() for a in (x, gamma, beta)]
    yt = torch.nn.functional.layer_norm(ts[0], normalized, ts[1], ts[2])
    yt.backward(torch.from_numpy(dy))
    with tuned(block_bytes=2**20):
        y, mean, var = N.layer_norm(x, normalized, gamma, beta)
        grads = N.layer_norm_backward(dy, x, normalized, gamma, mean, var)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    assert rel_err(y, yt.detach().numpy()) < tol
    for got, t in zip(grads, ts):
        assert rel_err(got, t.grad.numpy()) < tol


def test_layer_norm_nan_float16_in_place_and_no_affine(rng):
    x = rng.standard_normal((3, 4, 5))
    x[1, 2, 3] = np.nan
    y, mean, var = N.layer_norm(x, 5)
    assert np.isnan(y[1, 2]).all() and np.isnan(y).sum() == 5
    dx, dg, db = N.layer_norm_backward(np.ones_like(x), x, 5, None, mean, var)
    assert dg is None and db is None and np.isnan(dx).sum() == 5
    x16 = rng.standard_normal((4, 6)).astype(np.float16)
    y16, m16, _ = N.layer_norm(x16, 6)
    assert y16.dtype == np.float16 and m16.dtype == np.float32
    np.testing.assert_array_equal(y16, N.layer_norm(x16.astype(np.float32), 6)[0]
                                  .astype(np.float16))
    x = rng.standard_normal((3, 5))
    dy = rng.standard_normal(x.shape)
    g = rng.standard_normal(5)
    y, mean, var = N.layer_norm(x, 5, g)
    dx = N.layer_norm_backward(dy, x, 5, g, mean, var)[0]
    buf = x.copy()
    assert N.layer_norm(buf, 5, g, out=buf)[0] is buf
    np.testing.assert_array_equal(buf, y)
    buf = dy.copy()
    assert N.layer_norm_backward(buf, x, 5, g, mean, var, out=buf)[0] is buf
    np.testing.assert_array_equal(buf, dx)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------


def test_batch_norm_errors(rng):
    x = rng.standard_normal((2, 3, 4))
    v = np.ones(4)
    with pytest.raises(TypeError, match=r"`x` must be a numpy\.ndarray"):
        N.batch_norm_train([[1.0]])
    with pytest.raises(ValueError, match=r"batch_norm_train expects `x` of shape \(N, C\)"):
        N.batch_norm_train(np.ones(3))
    with pytest.raises(ValueError, match="`data_format` must be one of"):
        N.batch_norm_train(x, data_format="NHWC")
    with pytest.raises(ValueError, match=r"`gamma` must have shape \(4,\), one entry per channel"):
        N.batch_norm_train(x, np.ones(3))
    with pytest.raises(TypeError, match="`beta` must have dtype float16, float32 or float64"):
        N.batch_norm_train(x, v, np.arange(4))
    with pytest.raises(ValueError, match="`eps` must be > 0; got 0"):
        N.batch_norm_train(x, eps=0)
    with pytest.raises(TypeError, match="`eps` must be a real number"):
        N.batch_norm_eval(x, v, v, v, v, eps="1e-5")
    with pytest.raises(ValueError, match=r"`running_var` must have shape \(4,\)"):
        N.batch_norm_eval(x, v, v, v, np.ones(2))
    with pytest.raises(ValueError, match=r"`dy` must have the shape of `x`"):
        N.batch_norm_backward(x[:1], x, v, v, v)
    with pytest.raises(TypeError, match="`dy` must have the dtype of `x`"):
        N.batch_norm_backward(x.astype(np.float32), x, v, v, v)
    with pytest.raises(ValueError, match=r"`mean` must have shape \(4,\)"):
        N.batch_norm_backward(x, x, v, np.ones(3), v)
    with pytest.raises(TypeError, match="`training` must be True or False"):
        N.batch_norm_backward(x, x, v, v, v, training=1)
    with pytest.raises(ValueError, match=r"`var` must have shape \(4,\)"):
        N.batch_norm_scale_shift(v, v, v, np.ones(2))
    with pytest.raises(ValueError, match=r"`mean` must have shape \(C,\)"):
        N.batch_norm_scale_shift(v, v, np.ones((2, 2)), v)


def test_running_stats_errors():
    v = np.ones(3)
    with pytest.raises(ValueError, match=r"`running_mean` must have shape \(C,\)"):
        N.running_stats_update(np.ones((3, 1)), v, v, v, 4)
    with pytest.raises(ValueError, match=r"`var` must have shape \(3,\)"):
        N.running_stats_update(v, v, v, np.ones(2), 4)
    with pytest.raises(ValueError, match="`convention` must be one of"):
        N.running_stats_update(v, v, v, v, 4, convention="jax")
    with pytest.raises(TypeError, match="`count` must be an int"):
        N.running_stats_update(v, v, v, v, 4.0)
    with pytest.raises(ValueError, match=r"`count` must be >= 2 .* got 1"):
        N.running_stats_update(v, v, v, v, 1)
    assert N.running_stats_update(v, v, v, v, 1, convention="keras")[0].shape == (3,)
    with pytest.raises(ValueError, match=r"`momentum` must be in \[0.0, 1.0\]"):
        N.running_stats_update(v, v, v, v, 4, momentum=1.5)
    with pytest.raises(ValueError, match=r"may be None .* only with convention='torch'"):
        N.running_stats_update(v, v, v, v, 4, momentum=None, convention="keras")
    with pytest.raises(ValueError, match="`num_batches_tracked` must be an int >= 1"):
        N.running_stats_update(v, v, v, v, 4, momentum=None)


def test_group_and_layer_norm_errors(rng):
    x = rng.standard_normal((2, 3, 4))
    with pytest.raises(TypeError, match="`num_groups` must be an int"):
        N.group_norm(x, 2.0)
    with pytest.raises(ValueError, match="`num_groups` must be >= 1 and divide the channels; "
                                         "got num_groups=3, channels=4"):
        N.group_norm(x, 3)
    with pytest.raises(ValueError, match=r"`mean` must have shape \(N, G\) = \(2, 2\)"):
        N.group_norm_backward(x, x, 2, None, np.ones((2, 4)), np.ones((2, 2)))
    with pytest.raises(TypeError, match="`normalized_shape` must be an int or a tuple of ints"):
        N.layer_norm(x, 4.0)
    with pytest.raises(ValueError, match=r"`normalized_shape` must end x's shape \(2, 3, 4\)"):
        N.layer_norm(x, (3,))
    with pytest.raises(ValueError, match=r"`gamma` must have shape normalized_shape = \(4,\)"):
        N.layer_norm(x, 4, np.ones(3))
    with pytest.raises(ValueError, match=r"`var` must have shape \(2, 3\)"):
        N.layer_norm_backward(x, x, 4, None, np.ones((2, 3)), np.ones(6))
    with pytest.raises(TypeError, match="`dy` must have the dtype of `x`"):
        N.layer_norm_backward(x.astype(np.float32), x, 4, None, np.ones((2, 3)),
                              np.ones((2, 3)))


def test_empty_arrays(rng):
    """No values per channel is an error for batch and group norm (PyTorch's too); layer norm
    of no samples is an empty result."""
    with pytest.raises(ValueError, match="batch_norm_train needs at least one value per "
                                         r"channel; got `x` of shape \(0, 3, 2\)"):
        N.batch_norm_train(np.ones((0, 3, 2)))
    with pytest.raises(ValueError, match="group_norm needs at least one value per channel"):
        N.group_norm(np.ones((2, 0, 4)), 2)
    y, mean, var = N.layer_norm(np.ones((0, 4)), 4)
    assert y.shape == (0, 4) and mean.shape == var.shape == (0,)
    dx, dg, db = N.layer_norm_backward(np.ones((0, 4)), np.ones((0, 4)), 4, np.ones(4), mean, var)
    assert dx.shape == (0, 4) and (dg == 0).all() and (db == 0).all()
    with pytest.raises(ValueError, match="sizes >= 1"):
        N.layer_norm(np.ones((2, 0)), 0)
