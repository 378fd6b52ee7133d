"""Inputs are never modified; any memory layout is accepted; results are ordinary arrays."""

from pathlib import Path

import numpy as np
import pytest

import npconv

SRC = Path(npconv.__file__).resolve().parent


def layouts(a):
    """The same values as `a` in memory layouts a caller might hand in."""
    ro = a.copy()
    ro.flags.writeable = False
    flipped = np.ascontiguousarray(a[::-1])[::-1]             # negative strides
    strided = np.repeat(a, 2, axis=-1)[..., ::2]              # non-contiguous view
    return {"read-only": ro, "fortran": np.asfortranarray(a), "negative strides": flipped,
            "strided view": strided}


OPS = {
    "conv": lambda x, w, dy: npconv.conv(x, w, stride=2, padding=((1, 0), (2, 1)),
                                         padding_mode="reflect"),
    "conv_backward": lambda x, w, dy: npconv.conv_backward(
        dy, x, w, stride=2, padding=((1, 0), (2, 1)), padding_mode="reflect"),
    "conv_transpose": lambda x, w, dy: npconv.conv_transpose(
        dy, w, stride=2, padding=1, output_padding=1),              # w is (kh, kw, F, C) here
}


@pytest.mark.parametrize("op", OPS)
def test_any_memory_layout_gives_the_same_writeable_result(op, rng):
    x, w = rng.standard_normal((2, 7, 6, 3)), rng.standard_normal((3, 2, 3, 4))
    dy = rng.standard_normal((2, 3, 4, 4))                    # conv's output shape
    want = OPS[op](x, w, dy)
    for name, (x2, w2, dy2) in zip(layouts(x), zip(*(layouts(a).values() for a in (x, w, dy)))):
        before = [a.copy() for a in (x2, w2, dy2)]
        got = OPS[op](x2, w2, dy2)
        for a, b in zip((x2, w2, dy2), before):
            assert np.array_equal(a, b), f"{op} modified an input ({name})"
        for g, ref in zip(got if isinstance(got, tuple) else (got,),
                          want if isinstance(want, tuple) else (want,)):
            np.testing.assert_allclose(g, ref, rtol=1e-13, err_msg=name)
            assert g.flags.writeable and g.flags.c_contiguous


@pytest.mark.parametrize("fmt", ["channels_last", "channels_first"])
def test_results_own_their_memory_and_do_not_alias_inputs(fmt, rng):
    x, w = rng.standard_normal((2, 3, 5, 5)), rng.standard_normal((4, 3, 1, 1))
    if fmt == "channels_last":
        x, w = np.moveaxis(x, 1, -1).copy(), w.transpose(2, 3, 1, 0).copy()
    y = npconv.conv(x, w, data_format=fmt)                     # 1x1, no padding: no copies
    grads = npconv.conv_backward(np.ones_like(y), x, w, data_format=fmt)
    for out in (y, *grads):
        assert out.flags.writeable and out.flags.c_contiguous
        assert not np.shares_memory(out, x) and not np.shares_memory(out, w)


def test_no_as_strided_anywhere_in_the_package():
    """sliding_window_view and slicing only: a wrong as_strided stride reads foreign memory."""
    offenders = [p.name for p in SRC.rglob("*.py") if "as_strided(" in p.read_text()]
    assert offenders == []
