"""The workspace limit: settings, chunked results equal to unchunked ones, bounded temporaries.

A convolution whose full window matrix is many times the limit must give the same result and
allocate, besides its inputs, outputs and padded copies, no more than the limit. tracemalloc
sees NumPy's array buffers, so its peak measures the temporaries directly.
"""

import tracemalloc

import numpy as np
import pytest

import npconv
from npconv import _workspace
from npconv.algorithms import im2col
from npconv.spec import conv_spec

KIB = 2**10
SLACK = 64 * KIB          # small objects: views, weight reshapes, per-chunk GEMM results of dw


@pytest.fixture(autouse=True)
def _restore_config():
    old = npconv.get_config()
    yield
    npconv.set_config(**{k: v for k, v in old.items() if v is not None})


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
    "im2col 3-D": ((3, 16, 16, 16, 24), (3, 3, 3, 24, 32), {"padding": 1}),  # the depth ring
    "offsets": ((2, 40, 40, 8), (5, 5, 8, 8), {"padding": 2}),
    "depthwise": ((2, 40, 40, 16), (5, 5, 1, 16), {"padding": 2, "groups": 16}),
    "winograd": ((2, 40, 40, 16), (3, 3, 16, 16), {"padding": 1}),
    "winograd 3-D": ((2, 6, 20, 20, 8), (3, 3, 3, 8, 8), {"padding": 1}),
    "fft": ((8, 64, 64, 2), (15, 15, 2, 2), {"padding": 7}),   # one image's spectra < limit
    "pointwise": ((4, 80, 80, 8), (1, 1, 8, 8), {"stride": 2}),  # its "window matrix": the grid
}
LIMIT = 128 * KIB
LIMITS = {"fft": 2048 * KIB, "im2col 3-D": 4096 * KIB}   # one plane's windows: 1.3 MiB


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
    assert full_cols > (2 if algorithm == "pointwise" else 10) * limit
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


def test_3d_im2col_case_takes_the_depth_ring():
    """The "im2col 3-D" case above exercises the depth ring, whose ring buffer, output rows and
    dw accumulator must fit the workspace like any chunk's."""
    x_shape, w_shape, kw = CASES["im2col 3-D"]
    assert im2col._ring(conv_spec(x_shape, w_shape, **kw), 8)


def test_fft_refuses_a_workspace_it_cannot_fit():
    x, w = np.ones((2, 64, 64, 2)), np.ones((15, 15, 2, 2))
    with pytest.raises(ValueError, match=r"`algorithm`='fft' needs \d+ bytes of workspace"):
        npconv.conv(x, w, algorithm="fft", workspace=64 * KIB)


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


def test_scratch_outside_a_scope_is_an_ordinary_array():
    a = _workspace.scratch((1024, 1024), np.float64)
    assert a.base is None and a.flags.owndata
