"""Every algorithm, forced through the `algorithm=` override, against the naive reference.

Each algorithm gets a hypothesis strategy that draws only the geometries it handles (1x1
stride-1 ungrouped kernels for pointwise, groups == in_channels for depthwise, 2-D 3x3 stride 1
for Winograd), built by construction like tests/strategies.py. Forward, dx and dw must match
`npconv.reference` to 1e-10 (float64) or 1e-4 (float32), relative to the largest entry. The
chunk planner, the tuning values (passed in through `_config.tuned`), the automatic choice, and
non-finite inputs are checked here too.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest
from helpers import rel_err as shared_rel_err
from hypothesis import given
from hypothesis import strategies as st
from strategies import min_size

import npconv
from npconv import _chunks, _config, _kernels, _layout, _workspace, algorithms, reference
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
    s = [1 if algorithm == "pointwise" else draw(st.integers(1, 3)) for _ in k]
    d = [draw(st.integers(1, 2 if small else 3)) for _ in k]
    return k, s, d


def _channels(draw, algorithm: str):
    """(groups, C, F)."""
    if algorithm == "depthwise":
        g = draw(st.integers(1, 4))
        return g, g, g * draw(st.integers(1, 3))
    g = 1 if algorithm == "pointwise" else draw(st.sampled_from([1, 1, 2, 3]))
    return g, g * draw(st.integers(1, 3)), g * draw(st.integers(1, 3))


@st.composite
def geometry(draw, algorithm: str):
    """(x_shape, w_shape, kwargs) of a convolution `algorithm` handles, any layout and mode."""
    rank = draw(st.sampled_from([2] if algorithm == "winograd" else [1, 2, 3]))
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


def test_float32_error_against_float64_ground_truth():
    """Realistic widths (C = F = 64): forced Winograd's float32 error stays within the stated
    bound and within a small multiple of the direct method's."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((2, 20, 20, 64))
    w = rng.standard_normal((3, 3, 64, 64)) / 24.0
    dy = rng.standard_normal((2, 20, 20, 64))
    truth = (npconv.conv(x, w, padding=1, algorithm="im2col"),
             npconv.conv_grad_input(dy, w, x.shape, padding=1, algorithm="im2col"))
    x32, w32, dy32 = (a.astype(np.float32) for a in (x, w, dy))

    def errors(alg):
        y = npconv.conv(x32, w32, padding=1, algorithm=alg)
        dx = npconv.conv_grad_input(dy32, w32, x.shape, padding=1, algorithm=alg)
        return rel_err(y, truth[0]), rel_err(dx, truth[1])

    direct = errors("im2col")
    for got, base in zip(errors("winograd"), direct):
        assert got < WINOGRAD_F32_BOUND
        assert got < 4 * base


@pytest.mark.parametrize("algorithm", ALGORITHMS)
@pytest.mark.parametrize("chunk_bytes", [_config.Tuning().chunk_bytes, 512])
@given(data=st.data())
def test_threads_agree_and_are_reproducible(algorithm, chunk_bytes, data):
    """Every algorithm runs its chunks on the workers: same results with one or two, run to
    run, with chunks of whole images or (small chunks) of rows, which scatters deal by image."""
    x_shape, w_shape, kwargs = data.draw(geometry(algorithm))
    x, w, dy = _arrays(x_shape, w_shape, kwargs, np.float64)
    kwargs["algorithm"] = algorithm
    with npconv.config(threads=1):
        one = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
    with (npconv.config(threads=2, workspace=2**20),
          _config.tuned(min_parallel_bytes=0, chunk_bytes=chunk_bytes)):
        two = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
        again = (npconv.conv(x, w, **kwargs), *npconv.conv_backward(dy, x, w, **kwargs))
    for a, b, c in zip(one, two, again):
        assert rel_err(b, a) < 1e-12
        assert np.array_equal(b, c)


# ---------------------------------------------------------------------------------------------
# The chunk planner
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, w_shape, kwargs", [
    ((1, 3, 40, 4), (1, 33, 4, 3), {"padding": ((0, 0), (16, 16))}),         # dx: the gather
    ((1, 3, 40, 4), (2, 9, 4, 3), {"stride": (1, 2), "padding": 1}),           # dx: the scatter
    ((2, 2, 30, 2), (1, 9, 1, 4), {"groups": 2, "dilation": (1, 2)}),          # grouped
    ((1, 3, 30, 5), (2, 9, 5, 2), {"padding": (0, 4), "padding_mode": "reflect"}),  # narrow dx
])
@pytest.mark.parametrize("threads", [1, 2])
def test_rows_larger_than_the_workspace_split_kernel_offsets(x_shape, w_shape, kwargs, threads):
    """One output row's windows exceed the workspace: im2col's chunks are blocks of that row's
    kernel offsets, whose products add up (forward), fill dw's rows (weight gradient) and fold
    (scatter); results equal the reference's on one and two workers."""
    x, w, dy = _arrays(x_shape, w_shape, kwargs, np.float64)
    spec = conv_spec(x_shape, w_shape, **kwargs)
    nk, row = int(np.prod(spec.kernel_size)), spec.out_size[1] * 8   # bytes per value per row
    accumulator = nk * spec.group_in * spec.out_channels * 8
    workspace = row * (2 * spec.out_channels + 3 * spec.in_channels) + accumulator
    assert workspace < row * nk * spec.in_channels               # a row's windows do not fit
    settings = _config.Settings(workspace=workspace, threads=threads)
    assert algorithms.im2col.plan(spec, 8, settings, np).most_taps() < nk
    want = (reference.conv(x, w, **kwargs), *reference.conv_backward(dy, x, w, **kwargs)[:2])
    with npconv.config(threads=threads), _config.tuned(min_parallel_bytes=0):
        got = (npconv.conv(x, w, algorithm="im2col", workspace=workspace, **kwargs),
               *npconv.conv_backward(dy, x, w, bias=False, algorithm="im2col",
                                     workspace=workspace, **kwargs)[:2])
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10


def test_plan_deals_tap_blocks_of_a_row_to_one_worker():
    pytest.importorskip("threadpoolctl")                         # workers need it
    settings = _config.Settings(workspace=4000, threads=2)
    plan = _chunks.plan(2, 3, settings, row_bytes=0, tap_bytes=1000, taps=10)
    assert plan.workers == 2 and plan.most_taps() < 10
    by_row = {}
    for chunk, owner in zip(plan.chunks, plan.owners):
        by_row.setdefault((chunk.batch.start, chunk.rows.start), set()).add(owner)
    assert len(by_row) == 6 and all(len(o) == 1 for o in by_row.values())
    assert {o.pop() for o in by_row.values()} == {0, 1}
    covered = sorted(t for c in plan.chunks if (c.batch.start, c.rows.start) == (1, 2)
                     for t in range(c.taps.start, c.taps.stop))
    assert covered == list(range(10))


def test_gpu_chunks_fill_the_workspace_share():
    """On CuPy (any array module but NumPy) a chunk is a worker's whole share of the workspace,
    not the CPU's cache-sized target: a GPU pays kernel launches per chunk, not cache misses."""
    settings = _config.Settings(workspace=2**20, threads=1)
    gpu = object()                                               # stands in for cupy
    cpu = _chunks.plan(1, 1024, settings, row_bytes=1024, chunk_bytes=4096)
    on_gpu = _chunks.plan(1, 1024, settings, row_bytes=1024, xp=gpu, chunk_bytes=4096)
    assert len(cpu.chunks) == 256 and len(on_gpu.chunks) == 1
    assert _chunks.chunk_target(4096, 2**20, gpu) == 2**20
    assert _chunks.chunk_target(4096, 2**20) == 4096


def test_pointwise_rows_that_fit_one_chunk_are_shared_by_the_workers():
    """A 1x1 layer small enough for one chunk (a network's last stages on the workers,
    `_chunks.network_pass`) still gives every worker rows; one worker keeps one chunk."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    from npconv.algorithms import pointwise
    for threads, chunks in ((1, 1), (2, 2), (3, 3)):
        plan = pointwise._blocks(784, 4480, _config.Settings(threads=threads), np)  # 3.4 MiB
        assert (plan.workers, len(plan.chunks)) == (threads, chunks)
        assert [c.rows for c in plan.chunks][-1].stop == 784
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((16, 7, 7, 20)), rng.standard_normal((1, 1, 20, 24))
    dy = rng.standard_normal((16, 7, 7, 24))
    want = (reference.conv(x, w), *reference.conv_backward(dy, x, w)[:2])
    with npconv.config(threads=2), _config.tuned(min_parallel_bytes=0):
        got = (npconv.conv(x, w, algorithm="pointwise"),
               *npconv.conv_backward(dy, x, w, bias=False, algorithm="pointwise")[:2])
    for a, b in zip(got, want):
        assert rel_err(a, b) < 1e-10


def test_plan_deals_image_rows_by_image():
    """Chunks of image rows (an image exceeds the chunk size): for a scatter, every chunk of an
    image goes to the same worker, in row order; for a gather, the rows are dealt round-robin."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    settings = _config.Settings(workspace=2**20, threads=2,
                                tuning=_config.Tuning(chunk_bytes=300))  # 3 of 10 rows
    scatter = _chunks.plan(3, 10, settings, row_bytes=100, by_image=True)
    gather = _chunks.plan(3, 10, settings, row_bytes=100)
    assert scatter.workers == 2 and len(scatter.chunks) == len(gather.chunks) == 3 * 4
    dealt = _chunks.run(lambda chunk, mine: mine.append(chunk), scatter, list)
    for i, mine in enumerate(dealt):
        assert {c.batch.start for c in mine} == set(range(i, 3, 2))
        assert mine == sorted(mine, key=lambda c: (c.batch.start, c.rows.start))
    dealt = _chunks.run(lambda chunk, mine: mine.append(chunk), gather, list)
    assert dealt == [list(gather.chunks[0::2]), list(gather.chunks[1::2])]


@pytest.mark.parametrize("n, rows, per_chunk, sizes", [
    (16, 56, 40, [28, 28]),          # rows of one image: 2 x 28, not 40 + 16
    (3, 10, 4, [2, 3, 2, 3]),        # 3 images x 3 parts deal unevenly to 2 workers: 4 parts
    (16, 7, 35, [28] * 4),           # whole images: 4 x 4 images (28 rows), not 5, 5, 5, 1
    (1, 1000, 300, [250] * 4),       # one image: 4 parts, not 3 x 300 + 100
])
def test_plans_cut_equal_chunks_that_deal_evenly(n, rows, per_chunk, sizes):
    """Chunks are dealt round-robin, so a chunk target that leaves a short remainder per image
    gave one worker every full chunk (16 x 56 rows in 40-row chunks: 72% of the rows). Chunks
    are equal, within the target, and their number a multiple of the workers where a few more
    make it one."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    settings = _config.Settings(workspace=2**30, threads=2,
                                tuning=_config.Tuning(chunk_bytes=per_chunk * 100))
    plan = _chunks.plan(n, rows, settings, row_bytes=100)
    rows_of = [len(range(n)[c.batch]) * (c.rows.stop - c.rows.start) for c in plan.chunks]
    per_image = rows_of[:len(sizes)] if rows_of[0] <= rows else rows_of
    assert sorted(per_image) == sorted(sizes) and max(rows_of) <= per_chunk
    assert sum(rows_of) == n * rows
    shares = [sum(r for r, o in zip(rows_of, plan.owners) if o == w) for w in (0, 1)]
    assert max(shares) - min(shares) <= max(rows_of), shares      # within one chunk


# ---------------------------------------------------------------------------------------------
# Automatic choice and the override's errors
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("x_shape, w_shape, kwargs, itemsize, expected", [
    ((2, 8, 8, 16), (1, 1, 16, 32), {}, 4, ("pointwise", "pointwise (transposed)")),
    ((2, 8, 8, 16), (1, 1, 16, 32), {"stride": 2}, 4, ("im2col", "scatter")),
    ((2, 8, 8, 16), (1, 1, 8, 32), {"groups": 2}, 4, ("im2col", "im2col (transposed)")),
    ((2, 8, 8, 16), (3, 3, 1, 16), {"groups": 16}, 4, ("depthwise", "depthwise (transposed)")),
    ((2, 8, 8, 16), (3, 3, 1, 32), {"groups": 16}, 4, ("depthwise", "scatter")),
    ((2, 8, 8, 16), (3, 3, 1, 16), {"groups": 16, "stride": 2}, 4, ("depthwise", "phases")),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"padding": 1}, 8, ("winograd", "winograd (transposed)")),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"padding": 1}, 4, ("im2col", "im2col (transposed)")),
    ((2, 16, 16, 16), (3, 3, 16, 16), {"padding": 1}, 8, ("im2col", "im2col (transposed)")),
    ((2, 16, 16, 4), (3, 3, 4, 16), {"padding": 1}, 8, ("im2col", "scatter")),
    ((2, 16, 16, 64), (3, 3, 64, 64), {"stride": 2}, 8, ("im2col", "scatter")),
    ((2, 16, 16, 8), (3, 3, 1, 8), {"padding": 1, "groups": 8}, 4,
     ("depthwise", "depthwise (transposed)")),
    ((2, 8, 8, 6, 64), (3, 3, 3, 64, 64), {"padding": 1}, 8, ("im2col", "im2col (transposed)")),
])
def test_auto_choice(x_shape, w_shape, kwargs, itemsize, expected):
    """Forward and weight gradient by the chosen algorithm; the input gradient as the forward
    pass of the transposed geometry (stride 1, output wide enough), the shared scatter, or for
    a strided depthwise layer its stride-1 phases."""
    spec = conv_spec(x_shape, w_shape, **kwargs)
    got = _kernels.choices(spec, itemsize, _config.resolve())
    assert (got["forward"], got["grad_input"]) == expected
    assert got["grad_weight"] == got["forward"]


def test_tuning_is_passed_in():
    """The thresholds live in one frozen object that the choice reads from the settings."""
    spec = conv_spec((2, 16, 16, 64), (3, 3, 64, 64), padding=1)
    wide = _config.Settings(tuning=_config.Tuning(winograd_min_width=33))
    assert algorithms.choose(spec, itemsize=8, settings=wide).name == "im2col"
    assert algorithms.choose(spec, itemsize=8, settings=_config.Settings()).name == "winograd"
    with pytest.raises(AttributeError):
        _config.Tuning().chunk_bytes = 1                        # frozen
    with _config.tuned(winograd_min_width=33):
        assert _kernels.choices(spec, 8, _config.resolve())["forward"] == "im2col"


def test_algorithms_are_explicit_objects():
    """Each algorithm is a forward pass and a weight gradient; none has an input gradient of
    its own (the transpose rule derives it)."""
    for alg in npconv.ALGORITHMS.values():
        assert isinstance(alg, algorithms.Algorithm)
        assert callable(alg.forward) and callable(alg.grad_weight)
        assert not hasattr(alg, "grad_input")


@pytest.mark.parametrize("algorithm, w_shape, kwargs, match", [
    ("winograd", (5, 5, 4, 4), {}, r"`algorithm`='winograd' needs a 2-D 3x3 kernel"),
    ("winograd", (3, 3, 4, 4), {"stride": 2}, "stride=\\(2, 2\\)"),
    ("pointwise", (3, 3, 4, 4), {}, "needs a 1x1 kernel, stride 1 and groups 1"),
    ("pointwise", (1, 1, 4, 4), {"stride": 2}, "needs a 1x1 kernel, stride 1 and groups 1"),
    ("pointwise", (1, 1, 2, 4), {"groups": 2}, "groups=2"),
    ("depthwise", (3, 3, 2, 4), {"groups": 2}, "groups == in_channels"),
])
def test_forced_algorithm_must_handle_the_geometry(algorithm, w_shape, kwargs, match):
    x = np.ones((1, 9, 9, 4))
    with pytest.raises(ValueError, match=match):
        npconv.conv(x, np.ones(w_shape), algorithm=algorithm, **kwargs)


def test_unknown_algorithm():
    with pytest.raises(ValueError, match=r"`algorithm` must be one of .*got 'gemm'"):
        npconv.conv(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), algorithm="gemm")
    with pytest.raises(ValueError, match=r"`algorithm` must be one of .*got 'fft'"):
        npconv.conv(np.ones((1, 4, 4, 1)), np.ones((1, 1, 1, 1)), algorithm="fft")
    with pytest.raises(TypeError, match="`algorithm` must be a str or None; got 3"):
        npconv.conv_backward(np.ones((1, 4, 4, 1)), np.ones((1, 4, 4, 1)),
                             np.ones((1, 1, 1, 1)), algorithm=3)


@pytest.mark.parametrize("n", [1, 2, 5])
def test_parallel_copies_equal_numpys(n):
    """The workers' copies (transposing copies in and out, padded inputs) equal NumPy's."""
    x = np.random.default_rng(n).standard_normal((n, 3, 4, 5))
    view = np.moveaxis(x, 1, -1)                                 # (n, 4, 5, 3), not contiguous
    settings = _config.Settings(threads=2, tuning=_config.Tuning(min_parallel_bytes=0))
    out = _layout.padded(view, ((0, 0), (0, 0)), "zeros", view.dtype, settings)
    padded = _layout.padded(view, ((1, 1), (1, 0)), "zeros", view.dtype, settings)
    assert out.flags.c_contiguous and out.flags.writeable
    assert np.array_equal(out, view)
    assert np.array_equal(padded, np.pad(view, ((0, 0), (1, 1), (1, 0), (0, 0))))
    assert _layout.padded(out, ((0, 0), (0, 0)), "zeros", out.dtype, settings) is out
    back = _layout.result(out, "channels_first", np.float32, settings)
    assert back.dtype == np.float32 and back.flags.c_contiguous
    assert np.array_equal(back, x.astype(np.float32))


# ---------------------------------------------------------------------------------------------
# Non-finite inputs: NaN and inf where the definition puts them, whatever the algorithm
# ---------------------------------------------------------------------------------------------


def _same_as_reference(got, want):
    """Same NaN and infinite positions (and signs) as the reference; finite values close."""
    assert np.array_equal(np.isnan(got), np.isnan(want))
    assert np.array_equal(np.isposinf(got), np.isposinf(want))
    assert np.array_equal(np.isneginf(got), np.isneginf(want))
    finite = np.isfinite(want)
    assert rel_err(np.where(finite, got, 0), np.where(finite, want, 0)) < 1e-10


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NumPy's, for the reference's inf
@pytest.mark.parametrize("algorithm", [None, *ALGORITHMS])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, "huge"])
def test_non_finite_inputs_give_the_definitions_result(algorithm, bad):
    """One NaN or infinite pixel (or inputs near float64's maximum, whose transforms overflow
    where the direct sum does not) in a layer each algorithm handles; the automatic choice is
    Winograd for it. y, dx and dw hold NaN and inf exactly where the reference's do."""
    k = 1 if algorithm == "pointwise" else 3
    c, groups = (48, 48) if algorithm == "depthwise" else (48, 1)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((1, 10, 10, c))
    w = rng.standard_normal((k, k, c // groups, 48)) / 20
    kw = dict(padding=k // 2, groups=groups)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, **kw).y_shape())
    if bad == "huge":                    # every sum of the definition stays below 1e306
        x, w, dy = rng.uniform(-1, 1, x.shape) * 1.7e308, w / 1e4, dy / 1e10
    else:
        x[0, 4, 5, 7] = dy[0, 2, 3, 5] = bad
    _same_as_reference(npconv.conv(x, w, algorithm=algorithm, **kw), reference.conv(x, w, **kw))
    got = npconv.conv_backward(dy, x, w, bias=False, algorithm=algorithm, **kw)
    want = reference.conv_backward(dy, x, w, bias=False, **kw)
    for a, b in zip(got[:2], want[:2]):
        _same_as_reference(a, b)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # inf - inf in the sums
@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("algorithm", [None, *ALGORITHMS])
def test_clip_is_np_clip_of_the_output(algorithm, dtype, fmt):
    """conv(..., clip=(lo, hi)) has the bits of np.clip(conv(...), lo, hi) for every algorithm:
    NaN and inf outputs included, a bound None or both, lo > hi giving hi, and bounds that
    float16 cannot hold (rounded to y's dtype first), in chunks of a few rows."""
    k = 1 if algorithm == "pointwise" else 3
    c, groups = (6, 6) if algorithm == "depthwise" else (6, 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((3, 9, 8, c)).astype(dtype)
    x[0, 4, 5, 1], x[1, 2, 2, 3] = np.nan, np.inf
    w = (rng.standard_normal((k, k, c // groups, 6)) / 3).astype(dtype)
    b = rng.standard_normal(6).astype(dtype)
    if fmt == "channels_first":
        x, w = np.moveaxis(x, -1, 1).copy(), np.moveaxis(w, (-1, -2), (0, 1)).copy()
    kw = dict(padding=k // 2, groups=groups, data_format=fmt, algorithm=algorithm)
    with _config.tuned(chunk_bytes=2048):
        y = npconv.conv(x, w, b, **kw)
        for clip in [(0, None), (0, 6), (None, 0.1), (-0.3, 0.7), (1, -1), (None, None)]:
            got = npconv.conv(x, w, b, clip=clip, **kw)
            want = np.clip(y, *(None if v is None else dtype(v) for v in clip))
            assert got.dtype == y.dtype and np.isnan(got).any()
            assert np.array_equal(got, want, equal_nan=True), clip


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("shape", [(40000, 3), (3, 7, 7, 960), (1, 56, 56, 96), (2, 5, 999, 17)])
def test_add_bias_has_the_bits_of_part_plus_bias(shape, dtype):
    """The forward's bias, added in tiled rows of `BIAS_ROW` values (C-contiguous parts of at
    least four such rows, with rows left over), or broadcast as it is (a strided part, a
    small one, a bias of another shape), is the single addition part + bias of every
    element: NaN and inf included."""
    from npconv.algorithms._common import BIAS_ROW, add_bias
    rng = np.random.default_rng(12)
    part = rng.standard_normal(shape).astype(dtype)
    part.flat[::997] = np.nan
    bias = rng.standard_normal(shape[-1]).astype(dtype)
    bias[0] = np.inf
    assert part.size >= 4 * BIAS_ROW * 2                         # tiled, rows left over
    for target in (part, part[::2], part[:1], part):
        want = target + bias
        add_bias(target, bias, np)
        assert np.array_equal(target, want, equal_nan=True)
    column = rng.standard_normal((shape[0],) + (1,) * (len(shape) - 1)).astype(dtype)
    want = part + column
    add_bias(part, column, np)
    assert np.array_equal(part, want, equal_nan=True)


def test_conv_bias_is_the_plain_sum_in_a_layer_large_enough_to_tile():
    """A 1x1 and a depthwise layer whose chunks take `add_bias`'s tiled rows give the bits of
    the convolution without bias plus the bias."""
    rng = np.random.default_rng(13)
    x = rng.standard_normal((1, 56, 56, 24)).astype(np.float32)
    for w in (rng.standard_normal((1, 1, 24, 144)), rng.standard_normal((3, 3, 1, 24))):
        w = w.astype(np.float32)
        kw = dict(padding=w.shape[0] // 2, groups=24 if w.shape[2] == 1 else 1)
        b = rng.standard_normal(w.shape[-1]).astype(np.float32)
        assert np.array_equal(npconv.conv(x, w, b, **kw), npconv.conv(x, w, **kw) + b)
        assert np.array_equal(npconv.conv(x, w, b, clip=(0, None), **kw),
                              np.clip(npconv.conv(x, w, **kw) + b, 0, None))


def test_a_kept_plan_is_never_used_for_arguments_it_was_not_made_for(monkeypatch):
    """`conv` keeps its checks and decisions per layer (`convolution._forward_key`), but
    an argument that compares equal to a checked one and is refused (1.0 for 1, True for 1,
    a NumPy integer), another sign of zero in clip, x of the same shape in other strides (a
    C-contiguous x is read in place, `_kernels.reads_unpadded`, another is copied), or other
    settings in force, each gets its own checks and decisions."""
    rng = np.random.default_rng(14)
    x = rng.standard_normal((1, 12, 12, 8))
    w = rng.standard_normal((3, 3, 1, 8))
    npconv.conv(x, w, groups=8, stride=2)
    for bad in (dict(groups=8.0), dict(stride=2.0), dict(stride=(2, True))):
        with pytest.raises(TypeError):
            npconv.conv(x, w, **{"groups": 8, "stride": 2, **bad})
    y = npconv.conv(x, w, groups=8, stride=2)
    for lo in (0, -0.0, 0.0, -0.0):
        got = npconv.conv(x, w, groups=8, stride=2, clip=(lo, None))
        assert np.array_equal(np.signbit(got), np.signbit(np.clip(y, lo, np.inf)))
    read_in_place = []
    forward = _kernels.forward
    monkeypatch.setattr(_kernels, "forward", lambda *a, **kw: read_in_place.append(
        kw["unpadded"]) or forward(*a, **kw))
    with _config.tuned(unpadded_min_bytes=0):                    # reads x itself, in place
        want = reference.conv(x, w, groups=8, stride=2, padding=1)
        swapped = x.transpose(0, 2, 1, 3).copy().transpose(0, 2, 1, 3)  # H, W strides swapped
        for xs in (x, np.asfortranarray(x), x, swapped):
            assert rel_err(npconv.conv(xs, w, groups=8, stride=2, padding=1), want) < 1e-12
    assert read_in_place == [True, False, True, False]
    npconv.conv(x, w, groups=8, stride=2, padding=1)
    with npconv.config(workspace=64), pytest.warns(RuntimeWarning, match="workspace limit"):
        npconv.conv(x, w, groups=8, stride=2, padding=1)


def test_large_kernels_keep_nan_local_and_float32_error_at_the_gemms_level():
    """The issue's FFT cases, on the automatic choice: one NaN pixel of a 64x64x3 float32
    image under an 11x11 'same' kernel makes exactly the outputs that read it NaN (968 of
    them), and a 1e4 pixel over a 1e-2 background leaves the outputs it cannot reach at the
    GEMM's float32 error."""
    rng = np.random.default_rng(5)
    w = rng.standard_normal((11, 11, 3, 8)).astype(np.float32)
    x = rng.standard_normal((1, 64, 64, 3)).astype(np.float32)
    x[0, 30, 40, 1] = np.nan
    y = npconv.conv(x, w, padding="same")
    assert np.isnan(y).sum() == 11 * 11 * 8 == 968
    assert np.isnan(y[0, 25:36, 35:46]).all()
    x = np.full((1, 64, 64, 3), 1e-2, dtype=np.float32)
    x[0, 30, 40, 1] = 1e4
    y = npconv.conv(x, w, padding="same")
    want = npconv.conv(x.astype(np.float64), w.astype(np.float64), padding="same")
    far = np.ones(y.shape, bool)
    far[0, 25:36, 35:46] = False                                 # the outputs that read it
    assert np.median(np.abs(y - want)[far] / np.abs(want)[far]) < 1e-6


def test_round_robin_plans_run_any_chunks_in_order():
    """Callers that cut their own work (copies, layer ops) deal it round-robin."""
    pytest.importorskip("threadpoolctl")
    plan = _chunks.Plan.round_robin([slice(0, 2), slice(2, 4), slice(4, 5)], 2)
    assert plan.owners == (0, 1, 0) and plan.workers == 2
    with npconv.config(threads=2):
        dealt = _chunks.run(lambda part, mine: mine.append(part), plan, list)
    assert dealt == [[slice(0, 2), slice(4, 5)], [slice(2, 4)]]
    assert _chunks.Plan.round_robin([slice(0, 1)], 4).workers == 1


def test_scatter_plans_of_whole_images_use_every_worker():
    """Chunks of several whole images each are dealt round-robin, even for a scatter (images
    0-1, 2-3, ... on alternate workers, not all on the worker whose index divides them)."""
    pytest.importorskip("threadpoolctl")
    settings = _config.Settings(workspace=2**20, threads=2, tuning=_config.Tuning(chunk_bytes=200))
    plan = _chunks.plan(8, 1, settings, row_bytes=100, by_image=True)
    assert [c.batch for c in plan.chunks] == [slice(i, i + 2) for i in range(0, 8, 2)]
    assert plan.owners == (0, 1, 0, 1)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_ops_on_workers_of_its_own():
    """The parent's worker pool exists, and another of its threads holds the workspace lock at
    the fork: the child still runs a two-worker convolution (the parent's pool object would
    queue work for threads the child does not have, and the copied lock would never be freed)."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    x, w = np.ones((4, 32, 32, 16)), np.ones((3, 3, 16, 16))
    with npconv.config(threads=2), _config.tuned(min_parallel_bytes=0, chunk_bytes=2**14):
        want = npconv.conv(x, w)                                 # the pool now has a thread
        locked, release = threading.Event(), threading.Event()

        def hold() -> None:
            with _workspace._lock:
                locked.set()
                release.wait()

        holder = threading.Thread(target=hold)
        holder.start()
        locked.wait()
        pid = os.fork()
        if pid == 0:                                             # the child
            ok = np.array_equal(npconv.conv(x, w, workspace=2**22), want)
            os._exit(0 if ok else 1)
        release.set()
        holder.join()
    for _ in range(300):                                         # up to 30 s
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        time.sleep(0.1)
    else:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        pytest.fail("the forked child hung in npconv.conv")
    assert os.waitstatus_to_exitcode(status) == 0


@pytest.mark.filterwarnings("ignore::RuntimeWarning")     # NumPy's, for the reference's inf
@pytest.mark.parametrize("algorithm", [None, *ALGORITHMS])
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_weights_give_the_definitions_input_gradient(algorithm, bad):
    """One NaN or infinite weight, stride 1, channels wide enough for the gather: dx and the
    transposed convolution hold NaN and inf where the reference's do. The gather would also
    multiply the weight by the zeros that pad dy, NaN at every pixel the tap does not reach."""
    k = 1 if algorithm == "pointwise" else 3
    c, groups = (16, 16) if algorithm == "depthwise" else (16, 1)
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 8, 8, c))
    w = rng.standard_normal((k, k, c // groups, 16))
    w[(k - 1, k // 2, 0, 0) if k > 1 else (0, 0, 0, 0)] = bad
    dy = rng.standard_normal(conv_spec(x.shape, w.shape, groups=groups).y_shape())
    got = npconv.conv_backward(dy, x, w, algorithm=algorithm, groups=groups).dx
    _same_as_reference(got, reference.conv_backward(dy, x, w, groups=groups).dx)
    wt = w.swapaxes(-1, -2) if groups == 1 else w                # (*K, F/G, C) of 16 channels
    got = npconv.conv_transpose(x, wt, algorithm=algorithm, groups=groups)
    _same_as_reference(got, reference.conv_transpose(x, wt, groups=groups))


def test_an_error_in_one_worker_waits_for_the_others():
    """run returns (raising the error) only when every worker has stopped: a worker still
    writing after it would write into buffers that the next computation reuses. BLAS gets its
    thread count back."""
    pytest.importorskip("threadpoolctl")                         # workers need it
    finished = threading.Event()

    def task(part: int, _: None) -> None:
        if part == 1:
            raise MemoryError("worker 1")
        if part == 2:
            time.sleep(0.3)
            finished.set()

    limits = _blas_threads()
    with npconv.config(threads=3), pytest.raises(MemoryError, match="worker 1"):
        _chunks.run(task, _chunks.Plan.round_robin([0, 1, 2], 3), lambda: None)
    assert finished.is_set()
    assert _blas_threads() == limits                             # restored after the error


def test_ops_called_from_several_threads_at_once_agree_with_serial_calls():
    """Three user threads share the worker pool, the scratch pool and the BLAS limit: each
    thread's convolutions and pools equal the same calls made one at a time, and BLAS gets its
    thread count back at the end."""
    rng = np.random.default_rng(7)
    cases = [(rng.standard_normal((2, 12 + i, 14, 8)), rng.standard_normal((3, 3, 8, 6)))
             for i in range(3)]

    def compute(x, w):
        y = npconv.conv(x, w, padding=1, stride=1 + len(x[0]) % 2)
        dx, dw, _ = npconv.conv_backward(np.ones_like(y), x, w, padding=1, stride=1 + len(x[0]) % 2)
        m, idx = npconv.max_pool(x, 3, stride=2, padding=1, return_indices=True)
        return [y, dx, dw, m, npconv.max_pool_backward(m, x.shape, 3, stride=2, padding=1,
                                                       indices=idx)]

    tuning = dict(chunk_bytes=2**12, min_parallel_bytes=0, pool_chunk_bytes=2**12,
                  pool_parallel_bytes=0)
    with npconv.config(threads=2, workspace=2**16), _config.tuned(**tuning):
        want = [compute(*case) for case in cases]
    failures = []

    def user(k: int) -> None:
        with npconv.config(threads=2, workspace=2**16), _config.tuned(**tuning):
            for j in range(6):
                got = compute(*cases[(j + k) % 3])
                failures.extend(not np.array_equal(a, b) for a, b in zip(got, want[(j + k) % 3]))

    limits = _blas_threads()
    users = [threading.Thread(target=user, args=(k,)) for k in range(3)]
    for t in users:
        t.start()
    for t in users:
        t.join()
    assert len(failures) == 3 * 6 * 5 and not any(failures)
    assert _blas_threads() == limits


def _blas_threads():
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return None
    return [lib["num_threads"] for lib in threadpool_info()]


@pytest.mark.parametrize("kernel, c, f, groups", [((3, 3), 8, 16, 1), ((2, 3), 6, 9, 3),
                                                  ((3,), 4, 4, 4), ((2, 2, 3), 5, 7, 1)])
def test_flipped_weight_is_the_transpose_rules_and_one_copy(kernel, c, f, groups):
    """w'[k, f, g*C/G + c] = w[K - 1 - k, c, g*F/G + f], as a view of one copy that moves
    whole rows of F/G values (its GEMM matrices are transposed operands, not copies)."""
    w = np.random.default_rng(0).standard_normal((*kernel, c // groups, f))
    spec = conv_spec((1, *(k + 2 for k in kernel), c), w.shape, groups=groups)
    got = _kernels.flipped_w(w, spec)
    want = np.empty((*kernel, f // groups, c))
    for k in np.ndindex(*kernel):
        flip = tuple(n - 1 - i for n, i in zip(kernel, k))
        for g in range(groups):
            block = w[flip][:, g * (f // groups):(g + 1) * (f // groups)]   # (C/G, F/G)
            want[k][:, g * (c // groups):(g + 1) * (c // groups)] = block.T
    assert got.shape == want.shape and np.array_equal(got, want)
    assert got.base is not None and got.base.flags.c_contiguous and got.base.size == w.size
    assert not np.shares_memory(got, w)
    mats = got.reshape(-1, groups, c // groups)                  # (prodK F/G, G, C/G)
    assert all(np.shares_memory(mats[:, g], got) for g in range(groups))


@pytest.mark.parametrize("algorithm, k", [("im2col", 3), ("pointwise", 1), ("depthwise", 3)])
def test_an_empty_batch_gives_empty_outputs_and_zero_weight_gradients(algorithm, k):
    """N = 0: no chunk runs; y and dx are empty, dw and db zeros of their shapes."""
    groups = 4 if algorithm == "depthwise" else 1
    x, w = np.ones((0, 5, 5, 4)), np.ones((k, k, 4 // groups, 4))
    dy = np.ones((0, 5, 5, 4))
    with npconv.config(threads=2):
        y = npconv.conv(x, w, padding="same", groups=groups, algorithm=algorithm)
        dx, dw, db = npconv.conv_backward(dy, x, w, padding="same", groups=groups,
                                          algorithm=algorithm)
    assert y.shape == dx.shape == (0, 5, 5, 4)
    assert dw.shape == w.shape and not dw.any() and db.shape == (4,) and not db.any()
