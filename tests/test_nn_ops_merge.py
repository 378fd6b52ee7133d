"""npconv.nn.merge: add and concat against NumPy, their backward rules (no copies), PyTorch's
autograd through torch.cat, threads, in-place `add`, and every error."""

import numpy as np
import pytest

import npconv
from npconv._config import tuned
from npconv.nn import merge as M


def test_add_sums_left_to_right_in_any_dtype(rng):
    """float16 sums in float32 and rounds once (two inputs: NumPy's own float16 add)."""
    for dtype in (np.float16, np.float32, np.float64):
        xs = [rng.standard_normal((3, 4, 5)).astype(dtype) for _ in range(3)]
        y = M.add(*xs)
        assert y.dtype == dtype
        work = np.float32 if dtype == np.float16 else dtype
        want = (xs[0].astype(work) + xs[1]) + xs[2]
        np.testing.assert_array_equal(y, want.astype(dtype))
        np.testing.assert_array_equal(M.add(xs[0], xs[1]), xs[0] + xs[1])


def test_add_in_place_threads_and_inputs_unchanged(rng):
    a = rng.standard_normal((4, 256, 512)).astype(np.float32)    # 2 MiB: 4 blocks of 512 KiB
    b = rng.standard_normal(a.shape).astype(np.float32)
    a0, b0 = a.copy(), b.copy()
    for threads in (1, 2):
        with npconv.config(threads=threads), tuned(block_bytes=2**19, block_parallel_bytes=0):
            np.testing.assert_array_equal(M.add(a, b), a0 + b0)
    np.testing.assert_array_equal(a, a0)
    np.testing.assert_array_equal(b, b0)
    assert M.add(a, b, out=a) is a
    np.testing.assert_array_equal(a, a0 + b0)


def test_add_backward_hands_dy_to_every_input():
    dy = np.ones((2, 3))
    grads = M.add_backward(dy, 3)
    assert len(grads) == 3 and all(g is dy for g in grads)


@pytest.mark.parametrize("axis, fmt", [(None, "channels_last"), (None, "channels_first"),
                                       (0, "channels_last"), (-2, "channels_last")])
def test_concat_and_backward_views(axis, fmt, rng):
    shapes = {None: [(2, 3, 4, 1), (2, 3, 4, 5)] if fmt == "channels_last"
              else [(2, 1, 3, 4), (2, 5, 3, 4)],
              0: [(1, 3, 4, 2), (3, 3, 4, 2)], -2: [(2, 3, 1, 2), (2, 3, 6, 2)]}[axis]
    xs = [rng.standard_normal(s) for s in shapes]
    ax = (3 if fmt == "channels_last" else 1) if axis is None else axis
    y = M.concat(xs, axis=axis, data_format=fmt)
    np.testing.assert_array_equal(y, np.concatenate(xs, axis=ax))
    dy = rng.standard_normal(y.shape)
    grads = M.concat_backward(dy, [x.shape[ax] for x in xs], axis=axis, data_format=fmt)
    for g, x in zip(grads, xs):
        assert g.shape == x.shape and np.shares_memory(g, dy)    # views, not copies
    np.testing.assert_array_equal(np.concatenate(grads, axis=ax), dy)


def test_concat_matches_torch_autograd(torch, rng):
    xs = [rng.standard_normal((2, c, 3, 3)) for c in (2, 3, 1)]
    ts = [torch.from_numpy(x).requires_grad_() for x in xs]
    yt = torch.cat(ts, dim=1)
    dy = rng.standard_normal(yt.shape)
    yt.backward(torch.from_numpy(dy))
    y = M.concat(xs, data_format="channels_first")
    np.testing.assert_array_equal(y, yt.detach().numpy())
    for g, t in zip(M.concat_backward(dy, [2, 3, 1], data_format="channels_first"), ts):
        np.testing.assert_array_equal(g, t.grad.numpy())


def test_concat_large_on_workers(rng):
    xs = [rng.standard_normal((8, 64, 64, c)).astype(np.float32) for c in (16, 48)]
    with npconv.config(threads=2):
        np.testing.assert_array_equal(M.concat(xs), np.concatenate(xs, axis=-1))


def test_errors(rng):
    x = rng.standard_normal((2, 3))
    with pytest.raises(ValueError, match="`add` needs at least two arrays; got 1"):
        M.add(x)
    with pytest.raises(ValueError, match=r"`xs\[1\]` must have the shape of `xs\[0\]`"):
        M.add(x, x[:1])
    with pytest.raises(TypeError, match=r"`xs\[1\]` must have the dtype of `xs\[0\]`"):
        M.add(x, x.astype(np.float32))
    with pytest.raises(TypeError, match=r"`xs\[0\]` must be a numpy.ndarray"):
        M.add([1.0], x)
    with pytest.raises(ValueError, match="`n` must be an int >= 1"):
        M.add_backward(x, 0)
    with pytest.raises(TypeError, match="`xs` must be a non-empty sequence of arrays"):
        M.concat(x)
    with pytest.raises(TypeError, match="`xs` must be a non-empty sequence of arrays"):
        M.concat([])
    with pytest.raises(ValueError, match=r"`xs\[1\]` must match xs\[0\] \(2, 3\) float64 "
                                         "except on axis 1"):
        M.concat([x, np.ones((3, 3))])
    with pytest.raises(ValueError, match=r"`axis` must be an int in \[-2, 2\)"):
        M.concat([x, x], axis=2)
    with pytest.raises(ValueError, match="`data_format` must be one of"):
        M.concat([x, x], data_format="NHWC")
    with pytest.raises(ValueError, match="`sizes` must be non-negative ints adding up to dy's "
                                         "size 3 on axis 1"):
        M.concat_backward(x, [1, 1])
