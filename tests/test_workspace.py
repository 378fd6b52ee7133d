"""The workspace limit: settings, chunked results equal to unchunked ones, bounded temporaries.

A convolution whose full window matrix is many times the limit must give the same result and
allocate, besides its inputs, outputs and padded copies, no more than the limit. tracemalloc
sees NumPy's array buffers, so its peak measures the temporaries directly.
"""

import os
import platform
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
from helpers import rel_err

import npconv
from npconv import _config, _workspace, reference
from npconv.spec import conv_spec

KIB = 2**10
SLACK = 64 * KIB          # small objects: views, weight reshapes, per-chunk GEMM results of dw


@pytest.fixture(autouse=True)
def _restore_config():
    old = npconv.get_config()
    yield
    npconv.set_config(**old)


def _peak(fn):
    """(result, peak bytes allocated while fn ran, beyond what was allocated before)."""
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        out = fn()
        return out, tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()


def _nbytes(*arrays) -> int:
    return sum(a.nbytes for a in arrays if a is not None)


CASES = {       # algorithm (its first word): (x shape, w shape, keywords); the full window
                # matrix is >> limit
    "im2col": ((2, 40, 40, 4), (7, 7, 4, 4), {"padding": 3}),
    "im2col 3-D": ((3, 16, 16, 16, 24), (3, 3, 3, 24, 32), {"padding": 1}),
    "im2col 1x1": ((4, 80, 80, 8), (1, 1, 8, 8), {"stride": 2}),  # window matrix: the grid
    "depthwise": ((2, 40, 40, 16), (5, 5, 1, 16), {"padding": 2, "groups": 16}),
    "winograd": ((2, 40, 40, 16), (3, 3, 16, 16), {"padding": 1}),
    "pointwise": ((4, 80, 80, 8), (1, 1, 8, 8), {}),
}
LIMIT = 128 * KIB
LIMITS = {"im2col 3-D": 4096 * KIB,   # one plane's windows: 1.3 MiB
          "winograd": 256 * KIB}      # one tile row's transforms: 143 KiB


@pytest.mark.parametrize("case", sorted(CASES))
def test_small_workspace_same_result_bounded_memory(case, rng):
    x_shape, w_shape, kw = CASES[case]
    algorithm = case.split()[0]
    limit = LIMITS.get(case, LIMITS.get(algorithm, LIMIT))
    spec = conv_spec(x_shape, w_shape, **{k: v for k, v in kw.items()})
    x = rng.standard_normal(x_shape)
    w = rng.standard_normal(w_shape)
    dy = rng.standard_normal(spec.y_shape())
    full_cols = spec.batch * np.prod(spec.out_size) * np.prod(spec.kernel_size) * 8 * (
        spec.in_channels)
    assert full_cols > (2 if w_shape[0] == 1 else 10) * limit      # 1x1: the grid itself
    want_y = npconv.conv(x, w, algorithm="im2col", **kw)
    want = npconv.conv_backward(dy, x, w, algorithm="im2col", **kw)

    padded = 8 * spec.batch * np.prod(spec.padded_size) * spec.in_channels
    y, peak = _peak(lambda: npconv.conv(x, w, algorithm=algorithm, workspace=limit, **kw))
    np.testing.assert_allclose(y, want_y, rtol=1e-10, atol=1e-10)
    assert peak <= limit + 2 * padded + _nbytes(y) + SLACK

    grads, peak = _peak(lambda: npconv.conv_backward(dy, x, w, algorithm=algorithm,
                                                     workspace=limit, **kw))
    for got, ref in zip(grads, want):
        np.testing.assert_allclose(got, ref, rtol=1e-10, atol=1e-10)
    dy_padded = 8 * spec.batch * np.prod([p + 2 * k for p, k in
                                          zip(spec.out_size, spec.kernel_size)]) * (
        spec.out_channels)
    assert peak <= limit + 3 * padded + dy_padded + _nbytes(*grads) + SLACK


def test_global_setting_bounds_temporaries(rng):
    """The same bound through set_config, with the default algorithm choice."""
    x = rng.standard_normal((4, 48, 48, 8))
    w = rng.standard_normal((5, 5, 8, 8))
    npconv.set_config(workspace=LIMIT)
    y, peak = _peak(lambda: npconv.conv(x, w, padding=2))
    assert peak <= LIMIT + 2 * x.nbytes * 1.2 + y.nbytes + SLACK
    npconv.set_config(workspace=npconv._config.DEFAULT_WORKSPACE)
    np.testing.assert_allclose(y, npconv.conv(x, w, padding=2), rtol=1e-12, atol=1e-12)


def test_window_matrix_of_four_gib_scaled_down(rng):
    """The issue's case, scaled: a window matrix 64 times the limit (4 GiB against 64 MiB)."""
    x = rng.standard_normal((8, 64, 64, 4)).astype(np.float32)
    w = rng.standard_normal((7, 7, 4, 8)).astype(np.float32)
    cols = 8 * 64 * 64 * 49 * 4 * 4                               # 25 MiB
    limit = cols // 64
    y, peak = _peak(lambda: npconv.conv(x, w, padding=3, workspace=limit, algorithm="im2col"))
    assert peak <= limit + 1.2 * x.nbytes + y.nbytes + SLACK
    np.testing.assert_allclose(y, npconv.conv(x.astype(np.float64), w.astype(np.float64),
                                              padding=3), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# The stated bound (docs/algorithms.md, "Workspace"), case by case: beyond its inputs and
# outputs an op allocates the limit, one padded channels_last copy of x in the compute dtype,
# for dy one converted copy (when its layout or dtype differ) and one padded copy (stride-1
# input gradients), and each result once more in that layout when the caller's differs (for
# dx, the padded dx of a scatter).
# ---------------------------------------------------------------------------------------------


def _elements(*shape) -> int:
    return int(np.prod(shape))


@pytest.mark.parametrize("x_shape, w_shape, kw, limit", [
    ((2, 64, 64, 16), (7, 7, 16, 16), {"stride": 2, "padding": 3}, 4 * 2**20),
    ((2, 16, 24, 24, 8), (3, 3, 3, 8, 8), {"stride": 2, "padding": 1}, 2**20),
    ((1, 64, 64, 4), (31, 31, 4, 4), {"stride": 2, "padding": 15}, 4 * 2**20),
])
def test_backward_frees_input_gradient_buffers_before_the_weight_gradient(x_shape, w_shape, kw,
                                                                          limit, rng):
    """conv_backward computes dx, then dw: dx's chunk buffers go back to the pool first, so the
    two computations share the limit instead of holding twice it (stride 2, 7x7, 3-D, 31x31)."""
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    spec = conv_spec(x.shape, w.shape, **kw)
    dy = rng.standard_normal(spec.y_shape())
    want = npconv.conv_backward(dy, x, w, **kw)
    _workspace.release()
    grads, peak = _peak(lambda: npconv.conv_backward(dy, x, w, workspace=limit, **kw))
    padded = 8 * _elements(spec.batch, *spec.padded_size, spec.in_channels)  # x's; dx's scatter
    assert peak <= limit + 2 * padded + _nbytes(*grads) + SLACK
    for got, ref in zip(grads, want):
        np.testing.assert_allclose(got, ref, rtol=1e-12, atol=1e-12)


@pytest.mark.slow
def test_one_output_row_larger_than_the_limit(rng):
    """x (1, 4, 4096, 16), a 1x2049 kernel: one output row's windows are 512 MiB. im2col holds
    a 16 MiB limit by chunking that row's kernel offsets (forward, dx, dw)."""
    x = rng.standard_normal((1, 4, 4096, 16))
    w = rng.standard_normal((1, 2049, 16, 2)) / 100
    spec = conv_spec(x.shape, w.shape)
    dy = rng.standard_normal(spec.y_shape())
    limit = 16 * 2**20
    _workspace.release()
    y, peak = _peak(lambda: npconv.conv(x, w, workspace=limit))
    assert peak <= limit + y.nbytes + SLACK                     # no padding: x is read as is
    for h, p in ((0, 0), (3, 2047), (2, 1000)):
        np.testing.assert_allclose(y[0, h, p], np.einsum("kc,kcf->f", x[0, h, p:p + 2049],
                                                         w[0]), rtol=1e-12)
    grads, peak = _peak(lambda: npconv.conv_backward(dy, x, w, bias=False, workspace=limit))
    dy_padded = 8 * _elements(1, 4, 2048 + 2 * 2048, 2)        # the transposed correlation's
    assert peak <= limit + dy_padded + _nbytes(*grads) + SLACK
    dx, dw, _ = grads
    np.testing.assert_allclose(dw[0, 7], np.einsum("hpc,hpf->cf", x[0, :, 7:7 + 2048], dy[0]),
                               rtol=1e-10)
    np.testing.assert_allclose(dx[0, 1, 3000], np.einsum("kf,kcf->c", dy[0, 1, 952:2048][::-1],
                                                         w[0, 953:]), rtol=1e-10)


@pytest.mark.parametrize("dtype, fmt", [(np.float16, "channels_last"),
                                        (np.float32, "channels_first"),
                                        (np.float16, "channels_first")])
def test_conversions_are_one_copy_each(dtype, fmt, rng):
    """float16 (computed in float32) and channels_first arrays: x's one copy is the padded
    input, dy's one converted copy serves dx, dw and db, the padded dy of dx's correlation is
    freed before the padded x of dw is made, and each result is made once in the compute
    layout: no other full-size copies."""
    x = rng.standard_normal((4, 48, 48, 8)).astype(dtype)
    w = (rng.standard_normal((5, 5, 8, 8)) / 10).astype(dtype)
    kw = dict(padding=2, data_format=fmt)
    if fmt == "channels_first":
        x, w = np.ascontiguousarray(np.moveaxis(x, -1, 1)), np.ascontiguousarray(
            w.transpose(3, 2, 0, 1))
    spec = conv_spec(x.shape, w.shape, **kw)
    dy = rng.standard_normal(spec.y_shape()).astype(dtype)
    limit = 256 * KIB
    padded = 4 * _elements(4, *spec.padded_size, 8)             # float32, channels_last
    result = 4 * _elements(*spec.y_shape())                     # y, dy or dx in float32
    _workspace.release()
    y, peak = _peak(lambda: npconv.conv(x, w, workspace=limit, **kw))
    assert peak <= limit + padded + result + y.nbytes + SLACK
    grads, peak = _peak(lambda: npconv.conv_backward(dy, x, w, workspace=limit, **kw))
    assert peak <= limit + result + padded + result + _nbytes(*grads) + SLACK
    want = npconv.conv(x.astype(np.float64), w.astype(np.float64), **kw)
    np.testing.assert_allclose(y, want, rtol=2e-2, atol=2e-2)


# ---------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------


def test_config_defaults_and_scopes():
    assert npconv.get_config() == {"workspace": 256 * 2**20, "threads": None}
    old = npconv.set_config(workspace=8 * KIB)
    assert old["workspace"] == 256 * 2**20
    with npconv.config(workspace=KIB, threads=1):
        assert npconv.get_config() == {"workspace": KIB, "threads": 1}
    assert npconv.get_config() == {"workspace": 8 * KIB, "threads": None}
    npconv.set_config(threads=2)
    assert npconv.get_config() == {"workspace": 8 * KIB, "threads": 2}


def test_set_config_returns_what_restores_it():
    """The returned dict round-trips: None is a value (every core, the default limit)."""
    old = npconv.set_config(threads=1)
    assert old == {"workspace": 256 * 2**20, "threads": None}
    npconv.set_config(**old)
    assert npconv.get_config() == old
    npconv.set_config(workspace=KIB, threads=1)
    npconv.set_config(workspace=None, threads=None)              # back to the defaults
    assert npconv.get_config() == {"workspace": 256 * 2**20, "threads": None}
    with npconv.config(threads=1):
        with npconv.config(threads=None):
            assert npconv.get_config()["threads"] is None
        assert npconv.get_config()["threads"] == 1


def test_threads_without_threadpoolctl_warn(monkeypatch):
    """A thread count needs threadpoolctl; without it the setting cannot apply: a warning."""
    monkeypatch.setattr(npconv._config, "has_threadpoolctl", lambda: False)
    with pytest.warns(RuntimeWarning, match=r"`threads`=4 needs threadpoolctl"):
        npconv.set_config(threads=4)
    with pytest.warns(RuntimeWarning, match="needs threadpoolctl"), npconv.config(threads=2):
        pass


def test_per_call_workspace_wins():
    x, w = np.ones((2, 6, 6, 3)), np.ones((3, 3, 3, 2))
    with npconv.config(workspace=1):
        y = npconv.conv(x, w, workspace=2**20)
    assert float(y[0, 0, 0, 0]) == 27.0


@pytest.mark.parametrize("kwargs, error, match", [
    ({"workspace": 0}, ValueError, "`workspace` must be >= 1 byte; got 0"),
    ({"workspace": 1.5}, TypeError, r"`workspace` must be an int \(bytes\); got 1.5"),
    ({"threads": 0}, ValueError, "`threads` must be >= 1; got 0"),
    ({"threads": "2"}, TypeError, "`threads` must be an int or None; got '2'"),
])
def test_config_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        npconv.set_config(**kwargs)
    with pytest.raises(error, match=match), npconv.config(**kwargs):
        pass


def test_a_limit_below_one_output_row_warns(rng):
    """Depthwise products need one output row at least: a smaller limit cannot apply."""
    x, w = rng.standard_normal((1, 4, 64, 32)), rng.standard_normal((3, 3, 1, 32))
    with pytest.warns(RuntimeWarning, match=r"the workspace limit \(1024 bytes\) is smaller "
                                            r"than this computation's least temporaries"):
        y = npconv.conv(x, w, groups=32, workspace=1024)
    np.testing.assert_allclose(y, npconv.conv(x, w, groups=32), rtol=1e-12)


def test_per_call_workspace_error():
    with pytest.raises(ValueError, match="`workspace` must be >= 1 byte; got -1"):
        npconv.conv(np.ones((1, 4, 4, 1)), np.ones((3, 3, 1, 1)), workspace=-1)


# ---------------------------------------------------------------------------------------------
# The scratch pool: temporaries reused across calls, results never shared
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("case", sorted(CASES))
def test_results_never_share_pooled_memory(case, rng):
    """Call after call reuses the pooled scratch; no earlier result may change."""
    x_shape, w_shape, kw = CASES[case]
    algorithm = case.split()[0]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    dy = rng.standard_normal(conv_spec(x_shape, w_shape, **kw).y_shape())
    first = (npconv.conv(x, w, algorithm=algorithm, **kw),
             *npconv.conv_backward(dy, x, w, algorithm=algorithm, **kw))
    kept = [a.copy() for a in first]
    for _ in range(2):
        npconv.conv(2 * x, w, algorithm=algorithm, **kw)
        npconv.conv_backward(3 * dy, -x, w, algorithm=algorithm, **kw)
    assert all(np.array_equal(a, b) for a, b in zip(first, kept))
    pooled = [a for a in first if a is not None]
    assert all(not np.shares_memory(a, b) for a in pooled for b in pooled if a is not b)


@pytest.mark.parametrize("algorithm, k, c", [("im2col", 3, 160), ("pointwise", 1, 384)])
@pytest.mark.parametrize("threads", [1, 2])
def test_a_repeated_weight_gradient_allocates_little_but_its_result(algorithm, k, c, threads,
                                                                   rng):
    """The weight gradient keeps its per-worker partial sums and products in pooled scratch
    (`algorithms._common.PartialSum`): a second call allocates dw and small temporaries, not
    an accumulator per worker, a product per chunk and their sum (fresh memory page-faults:
    9 MiB arrays for ResNet-18's 4x4x512 layer at batch 16). The result is a new array all
    the same. dw: 1.8 and 1.1 MiB, pooled; several chunks per worker. (Winograd's
    accumulators are pooled alike, but turning them into dw allocates a few dw-sized arrays.)"""
    x, w = rng.standard_normal((4, 4, 4, c)), rng.standard_normal((k, k, c, c))
    dy = rng.standard_normal((4, 4, 4, c))
    want = reference.conv_backward(dy, x, w, padding="same")[1]
    with npconv.config(threads=threads), _config.tuned(min_parallel_bytes=0, chunk_bytes=2**14):
        def call():
            return npconv.conv_grad_weight(dy, x, w.shape, padding="same", algorithm=algorithm)
        first = call()
        dw, peak = _peak(call)
        again = call()
    assert rel_err(dw, want) < 1e-10 and np.array_equal(dw, first)
    assert peak < 1.5 * dw.nbytes, (peak, dw.nbytes)
    assert not np.shares_memory(dw, again)


def test_pool_keeps_at_most_the_workspace_and_releases(rng):
    x, w = rng.standard_normal((4, 64, 64, 8)), rng.standard_normal((3, 3, 8, 8))
    _workspace.release()
    npconv.conv_backward(npconv.conv(x, w, padding=1), x, w, padding=1)
    assert 0 < _workspace.pooled_bytes() <= npconv.get_config()["workspace"]
    with npconv.config(workspace=2**20):
        npconv.conv(x, w, padding=1)
    assert _workspace.pooled_bytes() <= 2**20
    _workspace.release()
    assert _workspace.pooled_bytes() == 0


def test_pooled_memory_is_asked_for_explicitly():
    """Pooled scratch comes only from `_workspace.scratch` (and `_layout.padded`, which asks for
    it) inside a scope; the same padded copy outside a scope is an ordinary array."""
    from npconv import _config, _layout

    x = np.ones((4, 256, 256, 2))                                # 4 MiB: poolable
    settings = _config.resolve()
    plain = _layout.padded(x, ((1, 1), (1, 1)), "zeros", x.dtype, settings)
    with _workspace.scope(settings):
        scratch = _layout.padded(x, ((1, 1), (1, 1)), "zeros", x.dtype, settings)
        assert plain.flags.owndata and not scratch.flags.owndata
        np.testing.assert_array_equal(plain, scratch)


def test_scratch_outside_a_scope_is_an_ordinary_array():
    a = _workspace.scratch((1024, 1024), np.float64)
    assert a.base is None and a.flags.owndata


def test_plain_temporaries_count_against_the_pool():
    """A temporary too small to pool is a plain allocation, but while it lives the free buffers
    the pool keeps and it stay within the limit together."""
    from npconv import _config

    mib = 2**20
    settings = _config.Settings(workspace=4 * mib)               # pooled from 1 MiB up
    _workspace.release()
    with _workspace.scope(settings):
        _workspace.scratch((4 * mib,), np.uint8)
    assert _workspace.pooled_bytes() == 4 * mib                  # kept for the next call
    with _workspace.scope(settings):
        _workspace.scratch((mib - 1,), np.uint8)                 # plain
        assert _workspace.pooled_bytes() == 0                    # 4 MiB + it: over the limit
    _workspace.release()


def test_a_backward_with_small_chunk_buffers_holds_the_limit(rng):
    """One thread, a 1 MiB limit: dx's chunk buffer (1 MiB, pooled) stays in the pool while dw
    takes a plain buffer of just under 1 MiB; the pool gives it up instead of holding both
    (2.3 MiB of temporaries before)."""
    x = rng.standard_normal((1, 4, 1024, 16)).astype(np.float32)
    w = rng.standard_normal((1, 513, 16, 2)).astype(np.float32)
    dy = rng.standard_normal(conv_spec(x.shape, w.shape).y_shape()).astype(np.float32)
    limit = 2**20
    _workspace.release()
    with npconv.config(threads=1):
        grads, peak = _peak(lambda: npconv.conv_backward(dy, x, w, workspace=limit))
    assert peak <= 1.5 * limit + _nbytes(*grads)


# ---------------------------------------------------------------------------------------------
# keep_freed_memory: malloc's settings, process-wide (so each check runs in a child process)
# ---------------------------------------------------------------------------------------------

_FAULTS = """
import resource, sys
import numpy as np
import npconv
from npconv import _config, _workspace
if sys.argv[1] == "keep":
    assert npconv.keep_freed_memory() is True
if sys.argv[1] == "pooled":
    with _workspace.pooled_results(_config.resolve()):
        pass
shape = tuple(map(int, sys.argv[2:]))
def step():                                     # two 32 MiB arrays alive at once, or one
    arrays = [np.empty(shape, np.float32) for _ in range(2 if len(shape) > 1 else 1)]
    for a in arrays:
        a.fill(1)
step()
start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print((resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start) / 5)
"""


def _faults(mode: str, shape: tuple[int, ...]) -> float:
    """Page faults per step of float32 arrays of `shape` allocated, filled and freed, in a
    child process whose malloc runs under `mode` ("default", "keep": keep_freed_memory(),
    "pooled": after a pooled_results), its MALLOC_*_ variables cleared (dask's nanny sets
    MALLOC_TRIM_THRESHOLD_, and after the suite's dask tests the children had it)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _FAULTS, mode, *map(str, shape)],
                         capture_output=True, text=True, check=True, env=env)
    return float(out.stdout)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_keep_freed_memory_stops_the_page_faults_of_new_arrays():
    """Two 32 MiB arrays allocated and freed together, again and again: glibc's defaults give
    them back to the system each time and every new one faults its pages in again (about 830
    faults per pair here, some of them 2 MiB huge pages); after keep_freed_memory() the heap
    keeps them (none)."""
    shape = (16, 28, 28, 640)
    kept = _faults("keep", shape)
    assert kept < 100, kept
    assert _faults("default", shape) > 10 * max(kept, 1)


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_pooled_results_keep_malloc_reusing_freed_arrays():
    """Once a process has pooled results, a 4 MiB array freed and allocated again comes back
    from the heap (no faults) instead of a fresh mapping (a thousand faults): glibc's threshold
    was raised as freeing a network's large activations used to raise it."""
    pooled = _faults("pooled", (2**20,))
    assert pooled < 50, pooled
    assert _faults("default", (2**20,)) > 10 * max(pooled, 1)


def test_keep_freed_memory_without_mallopt_changes_nothing(monkeypatch):
    """Where the C library has no mallopt (macOS, Windows): False and a RuntimeWarning."""
    import ctypes

    class NoMallopt:
        def __init__(self, name):
            pass

    monkeypatch.setattr(ctypes, "CDLL", NoMallopt)
    with pytest.warns(RuntimeWarning, match="no glibc-style mallopt"):
        assert npconv.keep_freed_memory() is False


@pytest.mark.parametrize("limit, error, match", [
    (True, TypeError, "`limit` must be an int"),
    (2.0**30, TypeError, "`limit` must be an int"),
    (2**20, ValueError, r"`limit` must be in \[33554432, 2147483647\] bytes"),
    (2**31, ValueError, "got 2147483648"),
])
def test_keep_freed_memory_checks_its_limit(limit, error, match):
    with pytest.raises(error, match=match):
        npconv.keep_freed_memory(limit)


@pytest.mark.parametrize("threads", [1, 2])
def test_layer_op_temporaries_are_pooled(threads, rng):
    """The layer ops' per-worker block buffers (`nn._blocks.Scratch`) come from the pool, on
    the workers too (they run in a copy of the caller's context, its scope included): a
    repeated batch norm backward allocates dx and nothing block-sized (its sums over
    positions are 64 KiB a block). Fresh, those buffers page-faulted on every
    call (a 16x7x7x384 backward: 556 faults, 1.55 ms against 0.41)."""
    from npconv.nn import normalization

    if threads > 1:
        pytest.importorskip("threadpoolctl")                     # workers need it
    x = rng.standard_normal((2, 64, 64, 64)).astype(np.float32)  # 2 MiB: an image per block
    dy = rng.standard_normal(x.shape).astype(np.float32)
    _, mean, var = normalization.batch_norm_train(x)
    _workspace.release()
    with npconv.config(threads=threads), _config.tuned(block_bytes=2**20,
                                                       block_parallel_bytes=0):
        def call():
            return normalization.batch_norm_backward(dy, x, None, mean, var)[0]
        first = call()
        assert _workspace.pooled_bytes() >= 2**20                # one block's buffer per worker
        dx, peak = _peak(call)
    assert np.array_equal(dx, first)
    assert peak < dx.nbytes + 2**19, (peak, dx.nbytes)        # not one more 1 MiB block


def test_workers_see_the_callers_settings():
    """A task on the workers sees the caller's context: the settings of the `config` block it
    was called in, and NumPy's `errstate` (a context variable too), as on the calling thread."""
    pytest.importorskip("threadpoolctl")
    from npconv.nn import _blocks

    seen, raised = [], []

    def task(chunk, _):
        seen.append(npconv.get_config()["workspace"])
        try:
            np.float32(3e38) * np.float32(10)                     # overflows
        except FloatingPointError:
            raised.append(chunk)

    with npconv.config(threads=2, workspace=3 * 2**20), np.errstate(over="raise"):
        _blocks.run(task, list(range(4)), nbytes=2**30)
    assert seen == [3 * 2**20] * 4
    assert sorted(raised) == [0, 1, 2, 3]


def test_pooled_results_lend_a_dead_results_memory_to_the_next():
    """Inside `pooled_results` an op's large result is carved from the pool and `recycle`
    gives a dead one's memory back (whatever allocated it); outside, results are ordinary
    arrays and nothing is taken back."""
    mib = 2**20
    settings = _config.Settings(workspace=64 * mib)              # pooled from 1 MiB up
    _workspace.release()
    plain = _workspace.result((mib,), np.float32)
    assert plain.flags.owndata and not _workspace.recycle(plain)
    with _workspace.pooled_results(settings):
        small = _workspace.result((1000,), np.float32)           # under 1 MiB: plain
        assert small.flags.owndata and not _workspace.recycle(small)
        first = _workspace.result((2, 512, 512), np.float32)     # 2 MiB from the pool
        assert not first.flags.owndata and first.flags.writeable
        assert _workspace.recycle(first.transpose(0, 2, 1))      # a view: its memory goes
        assert _workspace.pooled_bytes() == 2 * mib
        again = _workspace.result((3 * mib // 2,), np.uint8)     # fits: the same memory
        assert np.shares_memory(again, first) and _workspace.pooled_bytes() == 0
        assert _workspace.recycle(again[::-1])                   # all 2 MiB of it go back
        assert _workspace.pooled_bytes() == 2 * mib
        again = _workspace.result((2 * mib,), np.uint8)
        bigger = _workspace.result((5 * mib,), np.uint8)         # over twice its size: new
        assert not np.shares_memory(bigger, first)
        assert _workspace.recycle(np.ones((mib,), np.float64))   # NumPy's own array too
        assert _workspace.pooled_bytes() == 8 * mib
        a = np.ones((256, 512, 2), np.float32).transpose(2, 0, 1)
        assert _workspace.recycle(np.add(a, a))                  # laid out as its operands
        assert _workspace.pooled_bytes() == 9 * mib
    _workspace.release()


@pytest.mark.parametrize("make", [
    lambda: np.ones((2 * 2**20,), np.float32)[::2],              # not its memory's whole owner
    lambda: np.frombuffer(bytearray(4 * 2**20), np.uint8),        # memory not NumPy's
    lambda: np.broadcast_to(np.ones(2**20), (4, 2**20)),          # read-only view
    lambda: np.ones((2048, 1024))[:, ::2],                        # not one block
    lambda: list(range(10)),                                      # not an array
    lambda: np.empty((2**18,), object),                           # references
    lambda: np.empty((0, 5), np.float32),                         # nothing
])
def test_recycle_takes_only_whole_writable_numpy_memory(make):
    _workspace.release()
    with _config.tuned(scratch_min_bytes=0), _workspace.pooled_results(_config.resolve()):
        assert not _workspace.recycle(make())
    assert _workspace.pooled_bytes() == 0


def test_recycle_takes_memory_once_and_a_result_whole():
    """Memory given back twice would go to two later results at once; a part of a result
    carved from the pool would give back the rest of it while it lives."""
    mib = 2**20
    _workspace.release()
    with _workspace.pooled_results(_config.Settings(workspace=64 * mib)):
        a = np.ones((mib,), np.float32)
        assert _workspace.recycle(a) and not _workspace.recycle(a.reshape(2, -1))
        b = _workspace.result((3 * mib // 4,), np.float32)      # 3 MiB of a's 4
        assert np.shares_memory(a, b)
        assert not _workspace.recycle(b[: mib // 2]) and _workspace.pooled_bytes() == 0
        assert _workspace.recycle(b) and _workspace.pooled_bytes() == 4 * mib
        c = _workspace.result((mib,), np.float32)
        assert np.shares_memory(c, a) and _workspace.recycle(c.T)
    _workspace.release()


def test_recycled_results_stay_within_the_workspace():
    mib = 2**20
    _workspace.release()
    with _workspace.pooled_results(_config.Settings(workspace=8 * mib)):
        for _ in range(5):
            assert _workspace.recycle(np.empty((3 * mib,), np.uint8))
            assert _workspace.pooled_bytes() <= 8 * mib
    assert _workspace.pooled_bytes() == 6 * mib                  # the two latest
    _workspace.release()


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_algorithm_takes_its_result_from_the_pool(case, rng):
    """Each algorithm's forward result comes from `_workspace.result`: in pooled_results it
    is carved from the pool (where the memory of a recycled result of the same shape waits
    for it or for the op's scratch), and its values are the definition's."""
    x_shape, w_shape, kw = CASES[case]
    algorithm = case.split()[0]
    x, w = rng.standard_normal(x_shape), rng.standard_normal(w_shape)
    _workspace.release()
    with _config.tuned(scratch_min_bytes=0), _workspace.pooled_results(_config.resolve()):
        dead = npconv.conv(x, w, algorithm=algorithm, **kw)
        assert _workspace.recycle(dead) and _workspace.pooled_bytes() >= dead.nbytes
        y = npconv.conv(-x, w, algorithm=algorithm, **kw)
        assert not y.flags.owndata and y.base.dtype == np.uint8 and y.flags.writeable
    assert rel_err(y, reference.conv(-x, w, **kw)) < 1e-10
    _workspace.release()
