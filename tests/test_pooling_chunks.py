"""Pooling kernels: chunked, threaded and array-module paths give exactly the one-chunk result.

The kernels cut the work into chunks of output rows (forward) or input rows (backward) sized by
`Tuning.pool_chunk_bytes`, so a tiny target (`_config.tuned(pool_chunk_bytes=1)`: one row per
chunk) puts a chunk border between every two rows; arrays above the parallel threshold run on
two workers.
"""

import itertools

import numpy as np
import pytest
from helpers import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from test_pooling import draw_x, pool_geometry

import npconv
from npconv import _config, _layout, pooling


def _all_ops(x, kw, seed):
    """Every op's forward and backward results on x with keywords kw (one list)."""
    rng = np.random.default_rng(seed)
    max_kw = {k: v for k, v in kw.items() if k != "count_include_pad"}
    lp_kw = max_kw
    y, idx = npconv.max_pool(x, **max_kw, return_indices=True)
    y_codes, codes = pooling.max_pool_codes(x, **max_kw)
    dy = rng.standard_normal(y.shape)
    a = npconv.avg_pool(x, **kw)
    lp = npconv.lp_pool(x, 2, **lp_kw)
    return [y, idx, npconv.max_pool(x, **max_kw), npconv.max_pool_backward(dy, x, **max_kw),
            npconv.max_pool_backward(dy, x.shape, **max_kw, indices=idx), y_codes, codes,
            pooling.max_pool_codes_backward(dy, codes, x.shape, **max_kw), a,
            npconv.avg_pool_backward(dy, x.shape, **kw), lp,
            npconv.lp_pool_backward(dy, x, 2, **lp_kw)]


@settings(max_examples=15)
@given(pool_geometry("avg"), st.integers(0, 2**32 - 1), st.booleans())
def test_one_row_chunks_give_the_same_result(geom, seed, ties):
    x_shape, kw = geom
    x = draw_x(x_shape, seed, ties)
    whole = _all_ops(x, kw, seed)
    with _config.tuned(pool_chunk_bytes=1):                     # one row per chunk
        rows = _all_ops(x, kw, seed)
    for a, b in zip(whole, rows):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_two_workers_give_the_same_result(fmt, rng):
    """4 MiB of float64: above the parallel threshold, so two workers share the chunks."""
    x = rng.integers(-3, 4, size=(8, 32, 32, 64)).astype(np.float64)  # ties
    x = np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x
    kw = dict(kernel_size=3, stride=2, padding=1, data_format=fmt, count_include_pad=False)
    with npconv.config(threads=1):
        one = _all_ops(x, kw, 0)
    with npconv.config(threads=2):
        two = _all_ops(x, kw, 0)
    for a, b in zip(one, two):
        np.testing.assert_array_equal(a, b)


@given(pool_geometry("max"), st.integers(0, 2**32 - 1))
def test_the_array_module_scatter_matches_add_at(geom, seed):
    """CuPy's max-pool backward (a strided `where` per kernel offset, no atomics), run here on
    NumPy arrays, equals the `numpy.add.at` scatter (to rounding: it adds in another order)."""
    x_shape, kw = geom
    x = draw_x(x_shape, seed, True)
    y, idx = npconv.max_pool(x, **kw, return_indices=True)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    spec = npconv.pool_spec(x.shape, **kw)
    fmt = kw["data_format"]
    dx = pooling._scatter_offsets(_layout.planes(dy, fmt), _layout.planes(idx, fmt),
                                  spec, np.float64, np)
    assert rel_err(dx.reshape(x.shape), npconv.max_pool_backward(dy, x, **kw)) < 1e-13


@given(pool_geometry("max"), st.integers(0, 2**32 - 1))
def test_the_array_module_scatter_of_codes_matches_add_at(geom, seed):
    """The same for the codes `nn.MaxPool` keeps: CuPy's path, run on NumPy arrays, equals
    the scatter of the codes (to rounding)."""
    x_shape, kw = geom
    x = draw_x(x_shape, seed, True)
    y, codes = pooling.max_pool_codes(x, **kw)
    dy = np.random.default_rng(seed + 1).standard_normal(y.shape)
    spec = npconv.pool_spec(x.shape, **kw)
    fmt = kw["data_format"]
    dx = pooling._scatter_code_offsets(_layout.planes(dy, fmt), _layout.planes(codes, fmt),
                                       spec, np.float64, np)
    assert rel_err(dx.reshape(x.shape),
                   pooling.max_pool_codes_backward(dy, codes, x.shape, **kw)) < 1e-13


def test_sums_do_not_depend_on_the_chunk_rows():
    """Regression: a tap that covered every window of a one-row chunk but not of the whole
    array started that chunk's sums, so a window added its taps in another order there and
    avg_pool / its backward differed in the last bit (S=3, K=3, padding (1, 0); S=3, K=3,
    padding (2, 0) backward). Every small 1-D geometry, whole against one-row chunks."""
    x = np.random.default_rng(7).standard_normal((2, 5, 2))
    for s, k, stride, d, lo, hi, cip in itertools.product(
            range(1, 6), range(1, 4), (1, 2), (1, 2), range(3), range(3), (True, False)):
        kw = dict(kernel_size=k, stride=stride, padding=((lo, hi),), dilation=d,
                  count_include_pad=cip)
        if s + lo + hi - d * (k - 1) - 1 < 0:
            continue                                             # no window
        whole = _all_ops(x[:, :s], kw, 3)
        with _config.tuned(pool_chunk_bytes=1):                 # one row per chunk
            rows = _all_ops(x[:, :s], kw, 3)
        for a, b in zip(whole, rows):
            np.testing.assert_array_equal(a, b, err_msg=str(kw))
