"""Every algorithm, forced through the `algorithm=` override, against the naive reference.

Each algorithm gets a hypothesis strategy that draws only the geometries it handles (1x1 kernels
for pointwise, groups == in_channels for depthwise, 3x3 or 3x3x3 stride 1 for Winograd, stride 1
for FFT), built by construction like tests/strategies.py. Forward, dx and dw must match
`npconv.reference` to 1e-10 (float64) or 1e-4 (float32), relative to the largest entry.
"""

from unittest import mock

import numpy as np
import pytest
from helpers import rel_err as shared_rel_err
from hypothesis import assume, given
from hypothesis import strategies as st
from strategies import min_size

import npconv
from npconv import _config, algorithms, reference
from npconv.algorithms import _chunks, im2col, winograd
from npconv.spec import conv_spec

ALGORITHMS = tuple(npconv.ALGORITHMS)
TOL = {np.float64: 1e-10, np.float32: 1e-4}
WINOGRAD_F32_BOUND = 1e-5
"""Winograd F(2x2, 3x3) float32 error bound, relative to max |y| (docs/algorithms.md)."""


def rel_err(a, b) -> float:
    """Error relative to the largest entry, at least 1: inputs are standard normal, so a result
    that cancels to 0 is judged on the scale of its terms."""
    return shared_rel_err(a, b, floor=1.0)

def _kernel(draw, algorithm: str, rank: int):
    """Kernel size, stride and dilation the algorithm handles."""
    small = rank == 3
    if algorithm == "winograd":
        return [3] * rank, [1] * rank, [1] * rank
    if algorithm == "pointwise":
        k = [1] * rank
    else:
        k = [draw(st.integers(1, 2 if small else 4)) for _ in range(rank)]
    s = [1 if algorithm == "fft" else draw(st.integers(1, 3)) for _ in k]
    d = [draw(st.integers(1, 2 if small else 3)) for _ in k]
    return k, s, d


def _channels(draw, algorithm: str):
    """(groups, C, F)."""
    if algorithm == "depthwise":
        g = draw(st.integers(1, 4))
        return g, g, g * draw(st.integers(1, 3))
    g = draw(st.sampled_from([1, 1, 2, 3]))
    return g, g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))


@st.composite
def geometry(draw, algorithm: str):
    """(x_shape, w_shape, kwargs) of a convolution `algorithm` handles, any layout and mode."""
    rank = draw(st.sampled_from([2, 3] if algorithm == "winograd" else [1, 2, 3]))
    k, s, d = _kernel(draw, algorithm, rank)
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(rank)]
    extra = 2 if rank == 3 else 5
    size = [draw(st.integers(low, low + extra)) for low in
            (min_size(dd * (kk - 1) + 1, (lo, hi), mode) for kk, dd, (lo, hi) in zip(k, d, pads))]
    g, c, f = _channels(draw, algorithm)
    n = draw(st.integers(1, 2))
    fmt = draw(st.sampled_from(["channels_last", "channels_first"]))
    if fmt == "channels_last":
        x_shape, w_shape = (n, *size, c), (*k, c // g, f)
    else:
        x_shape, w_shape = (n, c, *size), (f, c // g, *k)
    kwargs = dict(stride=tuple(s), padding=tuple(pads), dilation=tuple(d), groups=g,
                  data_format=fmt, padding_mode=mode)
    return x_shape, w_shape, kwargs


def _arrays(x_shape, w_shape, kwargs, dtype, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(x_shape).astype(dtype)
    w = rng.standard_normal(w_shape).astype(dtype)
    dy = rng.standard_normal(conv_spec(x_shape, w_shape, **kwargs).y_shape()).astype(dtype)
    return x, w, dy


def _check_all(geom, algorithm, dtype):
    x_shape, w_shape, kwargs = geom
    x, w, dy = _arrays(x_shape, w_shape, kwargs, dtype)
    b = np.random.default_rng(1).standard_normal(dy.shape[1 if "first" in kwargs["data_format"]
                                                          else -1]).astype(dtype)
    copies = [a.copy() for a in (x, w, dy, b)]
    y = npconv.conv(x, w, b, algorithm=algorithm, **kwargs)     # some algorithms add b per chunk
    dx, dw, db = npconv.conv_backward(dy, x, w, algorithm=algorithm, **kwargs)
    want_y = reference.conv(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64),
                            **kwargs)
    want = reference.conv_backward(dy.astype(np.float64), x.astype(np.float64),
                                   w.astype(np.float64), **kwargs)
    tol = TOL[dtype]
    assert rel_err(y, want_y) < tol
    assert rel_err(dx, want.dx) < tol
    assert rel_err(dw, want.dw) < tol
    assert rel_err(db, want.db) < tol
    assert {a.dtype for a in (y, dx, dw, db)} == {np.dtype(dtype)}
    assert all(np.array_equal(a, c) for a, c in zip((x, w, dy, b), copies))  # inputs unchanged


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(data=st.data())
def test_float64_matches_reference(algorithm, data):
    _check_all(data.draw(geometry(algorithm)), algorithm, np.float64)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(data=st.data())
def test_float32_matches_reference(algorithm, data):
    _check_all(data.draw(geometry(algorithm)), algorithm, np.float32)


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@given(data=st.data())
def test_transposed_convolution_matches_reference(algorithm, data):
    """conv_transpose runs the input-gradient kernel, its backward the forward and dw ones.

    The conv geometry's output becomes the transposed input (zero padding, so every output
    size is >= 1), with an output_padding that may leave the last rows unread."""
    x_shape, w_shape, kwargs = data.draw(geometry(algorithm))
    rank = len(x_shape) - 2
    extra = tuple(data.draw(st.integers(0, max(s, d) - 1))
                  for s, d in zip(kwargs["stride"], kwargs["dilation"]))
    _, w, dy = _arrays(x_shape, w_shape, kwargs, np.float64)
    t_kwargs = {k: kwargs[k] for k in ("stride", "dilation", "groups", "data_format")}
    t_kwargs["output_padding"] = extra
    y = npconv.conv_transpose(dy, w, algorithm=algorithm, **t_kwargs)
    assert y.ndim == rank + 2
    assert rel_err(y, reference.conv_transpose(dy, w, **t_kwargs)) < 1e-10
    grads = npconv.conv_transpose_backward(y, dy, w, algorithm=algorithm, **t_kwargs)
    for got, want in zip(grads, reference.conv_transpose_backward(y, dy, w, **t_kwargs)):
        assert rel_err(got, want) < 1e-10


@pytest.mark.parametrize("algorithm, size", [("winograd", (20, 20)), ("fft", (20, 20)),
                                             ("winograd", (6, 10, 10))])
def test_float32_error_against_float64_ground_truth(algorithm, size):
    """Realistic widths (C = F = 64): the transform algorithms' float32 error stays within the
    stated bound and within a small multiple of the direct method's, in 2-D and (Winograd's
    depth sum adds three times as many products per output) 3-D."""
    rng = np.random.default_rng(7)
    k = (3,) * len(size)
    x = rng.standard_normal((2, *size, 64))
    w = rng.standard_normal((*k, 64, 64)) / (24.0 if len(size) == 2 else 40.0)
    dy = rng.standard_normal((2, *size, 64))
    truth = (npconv.conv(x, w, padding=1, algorithm="im2col"),
             npconv.conv_grad_input(dy, w, x.shape, padding=1, algorithm="im2col"))
    x32, w32, dy32 = (a.astype(np.float32) for a in (x, w, dy))

    def errors(alg):
        y = npconv.conv(x32, w32, padding=1, algorithm=alg)
        dx = npconv.conv_grad_input(dy32, w32, x.shape, padding=1, algorithm=alg)
        return rel_err(y, truth[0]), rel_err(dx, truth[1])

    direct = errors("im2col")
    for got, base in zip(errors(algorithm), direct):
        assert got < WINOGRAD_F32_BOUND
        assert got < 4 * base


@pytest.mark.parametrize("depth_chunk, x_shape, planes, rows", [
    (8 * 2**20, (2, 5, 9, 7, 6), {5}, {4}),      # whole images
    (100_000, (2, 5, 9, 7, 6), {2, 1}, {4}),     # two planes per chunk, halo planes repeated
    (40_000, (2, 5, 9, 7, 6), {1}, {2}),         # a plane is too large: two tile rows
    (1, (2, 5, 9, 7, 6), {1}, {1}),              # nothing fits: one tile row
    (8 * 2**20, (1, 5, 9, 7, 6), {3, 2}, {4}),   # one image, two workers: split its planes
    (8 * 2**20, (1, 1, 9, 7, 6), {1}, {2}),      # one plane, two workers: split its rows
])
def test_winograd_3d_chunks(depth_chunk, x_shape, planes, rows):
    """3-D Winograd's chunks, planned for two workers, give the reference's y, dx and dw on
    one and two workers (odd sizes, groups). Output (5 or 1, 8, 6): T0 = 4 tile rows."""
    w_shape = (3, 3, 3, 3, 4)
    kwargs = dict(padding=((1, 1), (1, 0), (0, 1)), groups=2)
    x, w, dy = _arrays(x_shape, w_shape, kwargs, np.float64)
    want = (reference.conv(x, w, **kwargs), *reference.conv_backward(dy, x, w, bias=False,
                                                                     **kwargs)[:2])
    spec = conv_spec(x_shape, w_shape, **kwargs)
    with (mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0),
          mock.patch.object(winograd, "DEPTH_CHUNK_BYTES", depth_chunk)):
        for threads in (1, 2):
            with npconv.config(threads=threads):
                got = (npconv.conv(x, w, algorithm="winograd", **kwargs),
                       *npconv.conv_backward(dy, x, w, bias=False, algorithm="winograd",
                                             **kwargs)[:2])
            for a, b in zip(got, want):
                assert rel_err(a, b) < 1e-10
        settings = _config.Settings(workspace=2**30, threads=2)
        with mock.patch.object(_chunks, "_parallel_ok", lambda xp: True):
            chunks = winograd._plan(spec, 8, settings, np, winograd._out_width(spec))[0]
    assert {c[1].stop - c[1].start for c in chunks} == planes
    assert {c[2].stop - c[2].start for c in chunks} == rows


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("chunk_bytes", [_chunks.CHUNK_BYTES, 512])
@given(data=st.data())
def test_threads_agree_and_are_reproducible(algorithm, chunk_bytes, data):
    """Every algorithm runs its chunks on the workers: same results with one or two, run to
    run, with chunks of whole images or (small chunks) of rows, which scatters deal by image."""
    x_shape, w_shape, kwargs = data.draw(geometry(algorithm))
    x, w, dy = _arrays(x_shape, w_shape, kwargs, np.float64)
    kwargs["algorithm"] = algorithm
    with npconv.config(threads=1):
        one = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
    small = 2**24 if algorithm == "fft" else 2**20                # fft needs whole spectra
    with (npconv.config(threads=2, workspace=small),
          mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0),
          mock.patch.object(_chunks, "CHUNK_BYTES", chunk_bytes)):
        two = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
        again = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
    for a, b, c in zip(one, two, again):
        assert rel_err(b, a) < 1e-12
        assert np.array_equal(b, c)


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((2, 6, 5, 7, 8), (3, 3, 2, 8, 5), {"padding": 1}),
    ((1, 9, 6, 5, 9), (3, 2, 2, 9, 4), {"stride": (2, 1, 2), "padding": ((1, 0), (0, 1), (1, 1))}),
    ((3, 8, 7, 6, 6), (5, 3, 3, 6, 3), {"stride": (3, 2, 1), "dilation": (1, 2, 1), "padding": 2}),
    ((1, 3, 6, 6, 16), (2, 1, 1, 16, 7), {}),                  # one window column per row
])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_depth_ring(x_shape, w_shape, kwargs, dtype):
    """3-D im2col through the depth ring (forced by a small chunk size): y, dx, dw and db equal
    the reference on one and two workers, with spans that split images (N = 1, 3) or not."""
    x, w, dy = _arrays(x_shape, w_shape, kwargs, dtype)
    b = np.random.default_rng(1).standard_normal(w_shape[-1]).astype(dtype)
    want = (reference.conv(x, w, b, **kwargs), *reference.conv_backward(dy, x, w, **kwargs))
    rings = []
    ring_task = im2col._ring_task

    def spy(win, spec, step):
        rings.append(spec.kernel_size)
        return ring_task(win, spec, step)

    with (mock.patch.object(_chunks, "CHUNK_BYTES", 64),
          mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0),
          mock.patch.object(im2col, "_ring_task", spy)):
        for threads in (1, 2):
            with npconv.config(threads=threads):
                got = (npconv.conv(x, w, b, algorithm="im2col", **kwargs),
                       *npconv.conv_backward(dy, x, w, algorithm="im2col", **kwargs))
            for a, e in zip(got, want):
                assert a.dtype == dtype and rel_err(a, e) < TOL[dtype]
    assert len(rings) >= 4                                       # forward and dw, both times


@st.composite
def ring_geometry(draw):
    """A 3-D convolution the depth ring takes once narrow windows are allowed: ungrouped, depth
    dilation 1, depth stride below the kernel depth, at least two output planes of at least F
    positions; anything in the other axes, any padding mode and layout."""
    kd = draw(st.integers(2, 4))
    k = [kd, draw(st.integers(1, 3)), draw(st.integers(1, 3))]
    s = [draw(st.integers(1, kd - 1)), draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    d = [1, draw(st.integers(1, 2)), draw(st.integers(1, 2))]
    mode = draw(st.sampled_from(["zeros", "zeros", "reflect", "replicate", "circular"]))
    pads = [(draw(st.integers(0, 2)), draw(st.integers(0, 2))) for _ in range(3)]
    size = [draw(st.integers(low, low + 4)) for low in
            (min_size(dd * (kk - 1) + 1, pair, mode) for kk, dd, pair in zip(k, d, pads))]
    n, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 4)), draw(st.integers(1, 4))
    spec = conv_spec((n, *size, c), (*k, c, f), stride=s, padding=pads, dilation=d)
    assume(spec.out_size[0] >= 2 and spec.out_size[1] * spec.out_size[2] >= f)
    fmt = draw(st.sampled_from(["channels_last", "channels_first"]))
    x_shape, w_shape = ((n, *size, c), (*k, c, f)) if fmt == "channels_last" else (
        (n, c, *size), (f, c, *k))
    return x_shape, w_shape, dict(stride=tuple(s), padding=tuple(pads), dilation=tuple(d),
                                  data_format=fmt, padding_mode=mode)


@given(geom=ring_geometry(), dtype=st.sampled_from([np.float64, np.float32]))
def test_depth_ring_matches_reference(geom, dtype):
    """Random geometries through the depth ring (narrow windows allowed, tiny chunks, two
    workers): y, dx, dw and db equal the reference, dtypes kept, inputs unchanged."""
    with (mock.patch.object(im2col, "NARROW_RUN", 0),
          mock.patch.object(_chunks, "CHUNK_BYTES", 1),              # every plane fills a chunk
          mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0),
          npconv.config(threads=2)):
        spec = conv_spec(geom[0], geom[1], **{k: v for k, v in geom[2].items()
                                                if k != "padding_mode"})
        assert im2col._ring(spec, np.dtype(dtype).itemsize)
        _check_all(geom, "im2col", dtype)


@pytest.mark.parametrize("n, rows, workers",
                         [(4, 8, 2), (3, 8, 2), (1, 7, 2), (5, 3, 3), (2, 1, 2)])
def test_plan_spans(n, rows, workers):
    """`plan_spans` cuts the N * P0 rows, in order, into one contiguous span per worker (equal
    to a row), each span into pieces of one image; the workspace bounds the worker count."""
    pytest.importorskip("threadpoolctl")
    settings = _config.Settings(workspace=2**20, threads=workers)
    chunks, got = _chunks.plan_spans(n, rows, 100, settings)
    assert got == min(workers, n * rows)
    spans = [chunks.deal(i, got) for i in range(got)]
    flat = [(c[0].start, r) for span in spans for c in span
            for r in range(c[1].start, c[1].stop)]
    assert flat == [(i, r) for i in range(n) for r in range(rows)]
    sizes = [sum(c[1].stop - c[1].start for c in span) for span in spans]
    assert max(sizes) - min(sizes) <= 1
    assert all(c[0].stop - c[0].start == 1 for c in chunks)
    assert _chunks.plan_spans(n, rows, 2**19 + 1, settings)[1] == 1


def test_gpu_chunks_fill_the_workspace_share():
    """On CuPy (any array module but NumPy) a chunk is a worker's whole share of the workspace,
    not the CPU's cache-sized target: a GPU pays kernel launches per chunk, not cache misses."""
    settings = _config.Settings(workspace=2**20, threads=1)
    gpu = object()                                               # stands in for cupy
    cpu_chunks, _ = _chunks.plan(1, 1024, 1024, settings, chunk_bytes=4096)
    gpu_chunks, _ = _chunks.plan(1, 1024, 1024, settings, xp=gpu, chunk_bytes=4096)
    assert len(cpu_chunks) == 256 and len(gpu_chunks) == 1
    assert _chunks.chunk_target(4096, 2**20, gpu) == 2**20
    assert _chunks.chunk_target(4096, 2**20) == 4096


def test_plan_deals_image_rows_by_image():
    """Chunks of image rows (an image exceeds the chunk size): for a scatter, every chunk of an
    image goes to the same worker, in row order; for a gather, the rows are dealt round-robin."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    settings = _config.Settings(workspace=2**20, threads=2)
    with (mock.patch.object(_chunks, "CHUNK_BYTES", 300),        # 3 of an image's 10 rows
          mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0)):
        scatter, workers = _chunks.plan(3, 10, 100, settings, whole_images=True)
        gather, _ = _chunks.plan(3, 10, 100, settings)
    assert workers == 2 and len(scatter) == len(gather) == 3 * 4
    dealt = _chunks.run(lambda chunk, mine: mine.append(chunk), scatter, workers, list)
    for i, mine in enumerate(dealt):
        assert {batch.start for batch, _ in mine} == set(range(i, 3, 2))
        assert mine == sorted(mine, key=lambda c: (c[0].start, c[1].start))
    dealt = _chunks.run(lambda chunk, mine: mine.append(chunk), gather, 2, list)
    assert dealt == [gather[0::2], gather[1::2]]


# ---------------------------------------------------------------------------------------------
# Automatic choice and the override's errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, w_shape, kwargs, op, itemsize, expected", [
    ((2, 8, 8, 16), (1, 1, 16, 32), {}, "forward", 4, "pointwise"),
    ((2, 8, 8, 16), (3, 3, 1, 16), {"groups": 16}, "grad_input", 4, "depthwise"),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"padding": 1}, "forward", 8, "winograd"),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"padding": 1}, "grad_weight", 8, "winograd"),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"padding": 1}, "forward", 4, "im2col"),
    ((2, 16, 16, 16), (3, 3, 16, 16), {"padding": 1}, "forward", 8, "im2col"),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"stride": 2}, "forward", 8, "im2col"),
    ((2, 40, 40, 4), (11, 11, 4, 4), {}, "forward", 4, "fft"),
    ((2, 8, 8, 512), (3, 3, 512, 512), {"stride": 2}, "forward", 4, "offsets"),
])
def test_auto_choice(x_shape, w_shape, kwargs, op, itemsize, expected):
    spec = conv_spec(x_shape, w_shape, **kwargs)
    assert algorithms.choose(op, spec, itemsize=itemsize).name == expected


@pytest.mark.parametrize("algorithm", ALGORITHMS)
def test_every_algorithm_implements_the_three_computations(algorithm):
    assert all(npconv.ALGORITHMS[algorithm].implements(op) for op in algorithms.OPS)


@pytest.mark.parametrize("algorithm, w_shape, kwargs, match", [
    ("winograd", (5, 5, 4, 4), {}, r"`algorithm`='winograd' needs a 3x3 or 3x3x3 kernel"),
    ("winograd", (3, 3, 4, 4), {"stride": 2}, "stride=\\(2, 2\\)"),
    ("pointwise", (3, 3, 4, 4), {}, "needs a 1x1 kernel"),
    ("depthwise", (3, 3, 2, 4), {"groups": 2}, "groups == in_channels"),
    ("fft", (3, 3, 4, 4), {"stride": 2}, "needs stride 1"),
])
def test_forced_algorithm_must_handle_the_geometry(algorithm, w_shape, kwargs, match):
    x = np.ones((1, 9, 9, 4))
    with pytest.raises(ValueError, match=match):
        npconv.conv(x, np.ones(w_shape), algorithm=algorithm, **kwargs)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match=r"`algorithm` must be one of .*got 'gemm'"):
        npconv.conv(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), algorithm="gemm")
    with pytest.raises(TypeError, match="`algorithm` must be a str or None; got 3"):
        npconv.conv_backward(np.ones((1, 4, 4, 1)), np.ones((1, 4, 4, 1)),
                             np.ones((1, 1, 1, 1)), algorithm=3)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_parallel_copies_equal_numpys(n):
    """The workers' copies (transposing output copies, padded inputs) equal NumPy's."""
    x = np.random.default_rng(n).standard_normal((n, 3, 4, 5))
    view = np.moveaxis(x, 1, -1)                                 # (n, 4, 5, 3), not contiguous
    with (npconv.config(threads=2), mock.patch.object(_chunks, "MIN_PARALLEL_BYTES", 0)):
        out = _chunks.contiguous(view)
        padded = np.zeros((n, 6, 7, 3))
        _chunks.copyto(padded[:, 1:5, 1:6], view)
    assert out.flags.c_contiguous and out.flags.writeable and out.base is None
    assert np.array_equal(out, view)
    assert np.array_equal(padded[:, 1:5, 1:6], view)
    padded[:, 1:5, 1:6] = 0
    assert not padded.any()                                      # nothing written outside
    assert _chunks.contiguous(out) is out
