"""Dask arrays through `npconv.dask`: lazy results, chunk by chunk, equal to the in-memory ops.

Skipped where dask is not installed (`pip install npconv[dask]`).
"""

import numpy as np
import pytest
from helpers import rel_err
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import conv_geometry

import npconv
from npconv.spec import conv_spec

da = pytest.importorskip("dask.array")
import npconv.dask as chunked  # noqa: E402  (after the skip: it needs dask to run)


def _chunks(draw, shape, spatial: bool):
    """Batch chunks always; spatial chunks when asked (channels stay whole)."""
    out = [draw(st.integers(1, shape[0]))]
    for size in shape[1:]:
        out.append(draw(st.integers(1, size)) if spatial else size)
    return tuple(out)


@settings(max_examples=15)
@given(st.data(), conv_geometry(ranks=(1, 2), modes=("zeros",)), st.booleans())
def test_dask_equals_in_memory(data, geom, spatial):
    rng = np.random.default_rng(0)
    x, w, b = geom.arrays(rng)
    spec = conv_spec(x.shape, w.shape, **geom.kwargs)
    dy = rng.standard_normal(spec.y_shape())
    xd = da.from_array(x, chunks=_chunks(data.draw, x.shape, spatial))
    dyd = da.from_array(dy, chunks=_chunks(data.draw, dy.shape, spatial))
    y = chunked.conv(xd, w, b, **geom.kwargs)
    assert isinstance(y, da.Array)
    want = npconv.conv(x, w, b, **geom.kwargs)
    assert rel_err(y.compute(), want) < 1e-12
    clipped = chunked.conv(xd, w, b, **geom.kwargs, clip=(0, 0.5)).compute()
    assert rel_err(clipped, np.clip(want, 0, 0.5)) < 1e-12
    grads = chunked.conv_backward(dyd, xd, w, **geom.kwargs)
    for got, want in zip(grads, npconv.conv_backward(dy, x, w, **geom.kwargs)):
        assert isinstance(got, da.Array)
        assert rel_err(got.compute(), want) < 1e-12


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular"])
def test_other_padding_modes_use_batch_chunks(mode, rng):
    x, w = rng.standard_normal((5, 9, 8, 3)), rng.standard_normal((3, 3, 3, 4))
    kw = dict(stride=2, padding=2, padding_mode=mode)
    xd = da.from_array(x, chunks=(2, 4, 4, 3))
    y = chunked.conv(xd, w, **kw)
    assert y.numblocks[0] == 3
    np.testing.assert_allclose(y.compute(), npconv.conv(x, w, **kw), rtol=1e-12)
    dy = rng.standard_normal(y.shape)
    for got, want in zip(chunked.conv_backward(da.from_array(dy, chunks=2), xd, w, **kw),
                         npconv.conv_backward(dy, x, w, **kw)):
        np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-12)


def test_spatial_chunks_stay_chunked_and_lazy(rng):
    x, w = rng.standard_normal((2, 64, 64, 3)), rng.standard_normal((5, 5, 3, 8))
    xd = da.from_array(x, chunks=(1, 16, 32, 3))
    y = chunked.conv(xd, w, stride=2, padding=2)
    assert y.numblocks[:3] == (2, 2, 1) or y.numblocks[1] > 1
    dx, dw, db = chunked.conv_backward(da.ones(y.shape, chunks=(1, 8, 8, 8)), xd, w, stride=2,
                                       padding=2)
    assert dx.chunks[1] != (64,) and dw.shape == w.shape and db.shape == (8,)


def test_bad_inputs_are_rejected(rng):
    xd = da.zeros((2, 8, 8, 3), chunks=1, dtype=int)
    with pytest.raises(TypeError, match=r"`x` must be a float16, float32 or float64 dask array"):
        chunked.conv(xd, np.zeros((3, 3, 3, 4)))
    xf = da.zeros((2, 8, 8, 3), chunks=1)
    with pytest.raises(ValueError, match=r"`bias` must have shape \(4,\); got \(3,\)"):
        chunked.conv(xf, np.zeros((3, 3, 3, 4)), np.zeros(3))
    with pytest.raises(TypeError, match=r"`clip` must be None or a pair"):
        chunked.conv(xf, np.zeros((3, 3, 3, 4)), clip=6)
    with pytest.raises(ValueError, match=r"`dy` must have shape \(2, 6, 6, 4\)"):
        chunked.conv_backward(da.zeros((2, 5, 5, 4)), xf, np.zeros((3, 3, 3, 4)))


def test_in_memory_ops_point_dask_arrays_to_their_front_end(rng):
    x, w = rng.standard_normal((4, 10, 9, 3)), rng.standard_normal((3, 3, 3, 5))
    xd = da.from_array(x, chunks=(2, 5, 9, 3))
    with pytest.raises(TypeError, match=r"`x` is a dask array: call npconv.dask.conv,"):
        npconv.conv(xd, w)
    dy = rng.standard_normal((4, 8, 7, 5))
    with pytest.raises(TypeError, match=r"`x` is a dask array: call npconv.dask.conv_backward"):
        npconv.conv_backward(dy, xd, w)
    assert npconv.dask is chunked                              # loaded on first use


def test_numpy_dy_is_chunked_like_x(rng):
    x, w = rng.standard_normal((4, 10, 9, 3)), rng.standard_normal((3, 3, 3, 5))
    xd = da.from_array(x, chunks=(2, 5, 9, 3))
    dy = rng.standard_normal((4, 5, 5, 5))                     # in memory
    grads = chunked.conv_backward(dy, xd, w, stride=2, padding=1)
    for got, want in zip(grads, npconv.conv_backward(dy, x, w, stride=2, padding=1)):
        assert isinstance(got, da.Array)
        np.testing.assert_allclose(got.compute(), want, rtol=1e-12, atol=1e-12)


def test_a_numpy_dy_of_the_wrong_batch_is_named(rng):
    xd = da.zeros((4, 8, 8, 3), chunks=2)
    with pytest.raises(ValueError, match=r"`dy` must have shape \(4, 6, 6, 2\); got \(3, 6,"):
        chunked.conv_backward(np.zeros((3, 6, 6, 2)), xd, np.zeros((3, 3, 3, 2)))


@pytest.mark.parametrize("spatial", [False, True])
def test_algorithm_and_workspace_reach_every_chunk(spatial, rng, monkeypatch):
    """`algorithm=` and `workspace=` are checked up front and passed to each chunk's op."""
    x, w = rng.standard_normal((4, 12, 12, 3)), rng.standard_normal((3, 3, 3, 4))
    xd = da.from_array(x, chunks=(2, 6 if spatial else 12, 12, 3))
    want = npconv.conv(x, w, padding=1)
    seen = []
    from npconv import _kernels

    forward = _kernels.forward

    def spy(xp_, w_, spec, settings, **kw):
        seen.append((kw["algorithm"], settings.workspace))
        return forward(xp_, w_, spec, settings, **kw)

    monkeypatch.setattr(_kernels, "forward", spy)
    y = chunked.conv(xd, w, padding=1, algorithm="im2col", workspace=64 * 2**10)
    np.testing.assert_allclose(y.compute(scheduler="sync"), want, rtol=1e-12)
    assert len(seen) == 2 + 2 * spatial and set(seen) == {("im2col", 64 * 2**10)}
    with pytest.raises(ValueError, match=r"`algorithm` must be one of .* got 'fft'"):
        chunked.conv(xd, w, algorithm="fft")
    with pytest.raises(ValueError, match="`workspace` must be >= 1 byte; got 0"):
        chunked.conv_backward(da.zeros((4, 10, 10, 4)), xd, w, workspace=0)
    with pytest.raises(ValueError, match="needs a 2-D 3x3 kernel"):
        chunked.conv(xd, w, stride=2, algorithm="winograd")
