"""The depthwise algorithm's paths against the naive reference: the einsum over a window view
merged with the channels (stride 1 on the last axis, one filter per group) and not merged, the
per-offset path of array modules without window views, the strided forward's border boxes,
and the strided input gradient's stride-1 phases and the scatter's per-offset fold; in small
chunks, on one and two workers, with non-finite inputs."""

import warnings

import numpy as np
import pytest
from helpers import rel_err

import npconv
from npconv import _config, _kernels, _layout, reference
from npconv.algorithms import depthwise
from npconv.spec import conv_spec

CASES = [   # x shape (channels_last), w shape (*K, 1, F), keywords: each path of the algorithm
    ((3, 9, 10, 6), (3, 3, 1, 6), {"padding": 1, "groups": 6}),             # merged
    ((2, 11, 9, 4), (3, 2, 1, 4), {"stride": 2, "padding": 1, "groups": 4}),  # strided
    ((2, 9, 8, 4), (3, 3, 1, 8), {"padding": (1, 2), "groups": 4}),          # two filters each
    ((2, 8, 9, 4), (2, 3, 1, 4), {"stride": (2, 1), "dilation": (1, 2), "groups": 4}),
    ((3, 13, 5), (3, 1, 5), {"padding": 1, "groups": 5}),                    # 1-D
    ((1, 5, 6, 7, 3), (2, 3, 2, 1, 3), {"stride": (1, 2, 1), "groups": 3}),  # 3-D
]


@pytest.mark.parametrize("x_shape, w_shape, kw", CASES)
@pytest.mark.parametrize("threads", [1, 2])
def test_paths_in_small_chunks_equal_the_definition(x_shape, w_shape, kw, threads, rng):
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    y0 = reference.conv(x, w, **kw)
    dy = rng.standard_normal(y0.shape)
    g0 = reference.conv_backward(dy, x, w, None, **kw)
    with npconv.config(threads=threads), _config.tuned(chunk_bytes=256, min_parallel_bytes=0):
        y = npconv.conv(x, w, algorithm="depthwise", **kw)
        g = npconv.conv_backward(dy, x, w, None, algorithm="depthwise", **kw)
    assert rel_err(y, y0) < 1e-12
    assert rel_err(g.dw, g0.dw) < 1e-12 and rel_err(g.dx, g0.dx) < 1e-12


def test_float32_is_at_the_gemms_level(rng):
    """MobileNetV2-like float32 layers: the error of a float32 im2col GEMM."""
    for kw in ({"padding": 1, "groups": 32}, {"padding": 1, "stride": 2, "groups": 32}):
        x = rng.standard_normal((4, 20, 20, 32)).astype(np.float32)
        w = rng.standard_normal((3, 3, 1, 32)).astype(np.float32)
        dy = rng.standard_normal(npconv.conv(x, w, **kw).shape).astype(np.float32)
        fast = npconv.conv_backward(dy, x, w, None, algorithm="depthwise", **kw)
        gemm = npconv.conv_backward(dy, x, w, None, algorithm="im2col", **kw)
        exact = reference.conv_backward(*(a.astype(np.float64) for a in (dy, x, w)), None, **kw)
        for got, ref, want in zip(fast[:2], gemm[:2], exact[:2]):
            assert rel_err(got, want) < max(4 * rel_err(ref, want), 1e-6)
        y = npconv.conv(x, w, algorithm="depthwise", **kw)
        assert rel_err(y, reference.conv(x.astype(np.float64), w.astype(np.float64), **kw)) \
            < 1e-6


@pytest.mark.parametrize("kw", [{"padding": 1, "groups": 4},
                                {"padding": 1, "stride": 2, "groups": 4}])
def test_non_finite_inputs_land_where_the_definition_puts_them(kw, rng):
    x = rng.standard_normal((2, 7, 7, 4))
    x[0, 2, 3, 1], x[1, 5, 5, 2] = np.nan, np.inf
    w = rng.standard_normal((3, 3, 1, 4))
    with np.errstate(invalid="ignore"):
        y = npconv.conv(x, w, algorithm="depthwise", **kw)
        y0 = reference.conv(x, w, **kw)
        dw = npconv.conv_grad_weight(np.ones_like(y), x, w.shape, algorithm="depthwise", **kw)
        dw0 = reference.conv_backward(np.ones_like(y), x, w, None, **kw).dw
    for got, want in ((y, y0), (dw, dw0)):
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        assert rel_err(got[finite], want[finite]) < 1e-12


@pytest.mark.parametrize("kw", [{"padding": 1, "groups": 3},
                                {"padding": 1, "stride": 2, "groups": 3},
                                {"padding": (2, 0), "dilation": 2, "groups": 3},
                                {"padding": 4, "groups": 3}])
def test_the_weight_gradient_reads_x_unpadded_but_keeps_0_times_inf(kw, rng, monkeypatch):
    """The weight gradient of a padded depthwise layer reads x where it lies, skipping the
    zeros of the padding, as long as dy is finite where an offset meets the padding; an
    infinite dy there gives the definition's NaN (0 * inf), through the padded copy."""
    x = rng.standard_normal((2, 7, 7, 3))
    w = rng.standard_normal((3, 3, 1, 3))
    y = reference.conv(x, w, **kw)
    reads = []
    check = _kernels.reads_unpadded
    monkeypatch.setattr(_kernels, "reads_unpadded",
                        lambda *a: reads.append(check(*a)) or reads[-1])
    for where in [None, (0, 0, 0, 1), (1, -1, -1, 2), (0, 2, 2, 0)]:
        dy = rng.standard_normal(y.shape)
        if where is not None:
            dy[where] = np.inf
        with np.errstate(invalid="ignore"):
            want = reference.conv_backward(dy, x, w, None, **kw).dw
            got = npconv.conv_grad_weight(dy, x, w.shape, **kw)
        np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
        np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
        finite = np.isfinite(want)
        assert rel_err(got[finite], want[finite]) < 1e-12
    assert reads[0]                                  # finite dy: x read unpadded


@pytest.mark.parametrize("x_shape, w_shape, kw", CASES)
def test_the_per_offset_forward_of_array_modules_without_windows(x_shape, w_shape, kw, rng):
    """`_forward_offsets`, what CuPy arrays run, on NumPy arrays."""
    x, w, b = rng.standard_normal(x_shape), rng.standard_normal(w_shape), rng.standard_normal(
        w_shape[-1])
    spec = conv_spec(x.shape, w.shape, **kw)
    settings = _config.resolve(None)
    xp_ = np.pad(x, ((0, 0), *spec.pads, (0, 0)))
    want = reference.conv(x, w, b, **kw)
    for clip in (None, (0.0, 0.5)):
        y = np.empty((spec.batch, *spec.out_size, spec.out_channels))
        depthwise._forward_offsets(xp_, _layout.w_to_last(w, "channels_last"), spec, y, b, clip,
                                   depthwise._plan(spec, 8, settings, np))
        assert rel_err(y, want if clip is None else np.clip(want, *clip)) < 1e-12


STRIDED = [   # x shape, w shape, keywords: strided depthwise input gradients
    ((3, 12, 11, 8), (3, 3, 1, 8), {"stride": 2, "padding": 1}),
    ((2, 12, 13, 3), (3, 3, 1, 3), {"stride": (2, 3), "padding": ((2, 0), (1, 2)),
                                    "dilation": (1, 2)}),
    ((2, 10, 10, 2), (3, 3, 1, 2), {"stride": 3}),               # a remainder row: zeros
    ((2, 10, 9, 3), (2, 4, 1, 3), {"stride": (4, 2), "dilation": (2, 1), "padding": 1}),
    ((2, 11, 10, 4), (3, 3, 1, 4), {"stride": 2, "padding": 1, "padding_mode": "reflect"}),
    ((3, 15, 5), (3, 1, 5), {"stride": 2, "padding": 1}),                      # 1-D
    ((1, 6, 7, 8, 3), (3, 2, 3, 1, 3), {"stride": (2, 1, 3), "padding": 1}),   # 3-D
]


@pytest.mark.parametrize("x_shape, w_shape, kw", STRIDED)
def test_a_strided_input_gradient_is_stride_1_phases(x_shape, w_shape, kw, monkeypatch, rng):
    """A strided depthwise dx is one stride-1 correlation per phase of the input; in chunks of
    single images on two workers it gives the definition. A forced im2col, or an infinite
    weight (the phases would multiply it by dy's zero padding), takes the scatter's
    per-offset products, which keep the definition's NaN and inf."""
    calls = []
    for name in ("grad_input", "_depthwise_fold"):
        module = depthwise if name == "grad_input" else _kernels
        spy = getattr(module, name)
        monkeypatch.setattr(module, name, lambda *a, _f=spy, _n=name: calls.append(_n) or _f(*a))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    kw = {**kw, "groups": x_shape[-1]}
    dy = rng.standard_normal(reference.conv(x, w, **kw).shape)
    want = reference.conv_backward(dy, x, w, None, **kw).dx
    with npconv.config(threads=2), _config.tuned(chunk_bytes=512, min_parallel_bytes=0):
        dx = npconv.conv_grad_input(dy, w, x.shape, **kw)
        assert calls == ["grad_input"] and rel_err(dx, want) < 1e-12
        calls.clear()
        dx = npconv.conv_grad_input(dy, w, x.shape, algorithm="im2col", **kw)
        assert calls == ["_depthwise_fold"] and rel_err(dx, want) < 1e-12
    calls.clear()
    w.reshape(-1, w.shape[-1])[1, 1] = np.inf                # (a view: w is contiguous)
    with np.errstate(invalid="ignore"):
        want = reference.conv_backward(dy, x, w, None, **kw).dx
        dx = npconv.conv_grad_input(dy, w, x.shape, **kw)
    assert calls == ["_depthwise_fold"]
    np.testing.assert_array_equal(np.isnan(dx), np.isnan(want))
    np.testing.assert_array_equal(np.isinf(dx), np.isinf(want))
    finite = np.isfinite(want)
    assert rel_err(dx[finite], want[finite]) < 1e-12



def test_phases_keep_to_the_workspace(monkeypatch, rng):
    """The phases' chunks are whole images: where one image's temporaries exceed the
    workspace, the strided input gradient is the scatter's (rows), with no warning."""
    calls = []
    spy = depthwise.grad_input
    monkeypatch.setattr(depthwise, "grad_input", lambda *a: calls.append(1) or spy(*a))
    x, w = rng.standard_normal((2, 40, 40, 16)), rng.standard_normal((3, 3, 1, 16))
    kw = {"stride": 2, "padding": 1, "groups": 16}
    dy = rng.standard_normal(reference.conv(x, w, **kw).shape)
    want = reference.conv_backward(dy, x, w, None, **kw).dx
    spec = conv_spec(x.shape, w.shape, **kw)
    image = depthwise.phase_bytes(spec, 8, True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for workspace, phases in ((image, True), (image - 1, False)):
            calls.clear()
            dx = npconv.conv_grad_input(dy, w, x.shape, workspace=workspace, **kw)
            assert bool(calls) == phases and rel_err(dx, want) < 1e-12

UNPADDED = [   # x shape, w shape, keywords: padded depthwise layers, unmerged ones unpadded
    ((2, 9, 10, 6), (3, 3, 1, 6), {"padding": 1, "groups": 6}),               # merged
    ((2, 11, 9, 4), (3, 2, 1, 4), {"stride": 2, "padding": 1, "groups": 4}),  # strided
    ((2, 9, 8, 4), (3, 3, 1, 8), {"padding": (1, 2), "groups": 4}),            # two filters each
    ((2, 8, 9, 3), (3, 3, 1, 3), {"padding": ((2, 0), (0, 3)), "stride": (2, 3), "dilation": 2,
                                  "groups": 3}),
    ((2, 2, 5, 3), (3, 3, 1, 3), {"padding": 2, "stride": (1, 2), "groups": 3}),  # no interior
    ((3, 13, 5), (3, 1, 5), {"padding": 2, "groups": 5}),                      # 1-D
    ((1, 5, 6, 7, 3), (2, 3, 2, 1, 3), {"stride": (1, 1, 2), "padding": 1, "groups": 3}),
]


@pytest.mark.parametrize("x_shape, w_shape, kw", UNPADDED)
@pytest.mark.parametrize("threads", [1, 2])
def test_the_strided_forward_reads_x_unpadded(x_shape, w_shape, kw, threads, rng, monkeypatch):
    """A padded depthwise forward whose window rows are not merged with the channels reads x
    where it lies and zero-pads only the few rows and columns of its border boxes; a merged
    one, or one under `Tuning.unpadded_min_bytes`, pads x. In chunks of single rows, against
    the definition, with a bias and a clip."""
    copies, boxed = [], []
    padded, boxes = _layout.padded, depthwise._boxes
    monkeypatch.setattr(_layout, "padded", lambda a, pads, *r: copies.append(
        any(lo > 0 or hi > 0 for lo, hi in pads)) or padded(a, pads, *r))
    monkeypatch.setattr(depthwise, "_boxes", lambda *a: boxed.append(1) or boxes(*a))
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    b = rng.standard_normal(w_shape[-1])
    y0 = reference.conv(x, w, b, **kw)
    unpadded = not depthwise.merged(conv_spec(x.shape, w.shape, **kw))
    for least in (0, x.nbytes + 1):
        copies.clear(), boxed.clear()
        with npconv.config(threads=threads), _config.tuned(
                chunk_bytes=256, min_parallel_bytes=0, unpadded_min_bytes=least):
            y = npconv.conv(x, w, b, **kw)
            yc = npconv.conv(x, w, b, clip=(-0.5, 0.5), **kw)
        assert rel_err(y, y0) < 1e-12 and rel_err(yc, np.clip(y0, -0.5, 0.5)) < 1e-12
        assert bool(boxed) == (unpadded and least == 0) == (not any(copies))


def test_the_border_boxes_cover_the_outputs_once():
    """The boxes of every chunk of rows tile the chunk's outputs, and only the box of windows
    inside x is read without padding."""
    for x_shape, w_shape, kw in UNPADDED:
        spec = conv_spec(x_shape, w_shape, **kw)
        for rows in (slice(0, spec.out_size[0]), slice(1, 2), slice(spec.out_size[0] - 1, None)):
            rows = slice(*rows.indices(spec.out_size[0]))
            count = np.zeros((rows.stop - rows.start, *spec.out_size[1:]), int)
            for box, padded in depthwise._boxes(spec, rows):
                local = (slice(box[0].start - rows.start, box[0].stop - rows.start), *box[1:])
                count[local] += 1
                reads = [(b.start * s - lo, (b.stop - 1) * s + (k - 1) * d - lo) for b, s, k, d,
                         (lo, _) in zip(box, spec.stride, spec.kernel_size, spec.dilation,
                                        spec.pads)]                # first and last x read
                inside_x = all(a >= 0 and z < n for (a, z), n in zip(reads, spec.in_size))
                assert padded == (not inside_x)
            assert (count == 1).all()


@pytest.mark.parametrize("kw", [{"padding": 1, "groups": 4},
                                {"padding": 1, "stride": 2, "groups": 4}])
def test_an_infinite_weight_times_the_padding_is_nan_at_the_border(kw, rng):
    """The definition multiplies the padding's zeros by every weight: an infinite weight makes
    NaN at every output whose window meets the padding with that tap, and inf inside; the
    border boxes of an unpadded forward keep that, a NaN in x spreads as it should."""
    x = rng.uniform(0.5, 1.0, (2, 7, 7, 4))
    w = rng.uniform(0.5, 1.0, (3, 3, 1, 4))
    w[0, 0, 0, 1], w[2, 1, 0, 3] = np.inf, -np.inf
    x[1, 3, 3, 0] = np.nan
    with np.errstate(invalid="ignore"):
        want = reference.conv(x, w, **kw)
        for least in (0, x.nbytes + 1):              # x unpadded (strided) and padded
            with _config.tuned(unpadded_min_bytes=least):
                got = npconv.conv(x, w, **kw)
            np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
            np.testing.assert_array_equal(np.isinf(got), np.isinf(want))
            finite = np.isfinite(want)
            assert rel_err(got[finite], want[finite]) < 1e-12
    assert np.isnan(want).any() and np.isinf(want).any()
