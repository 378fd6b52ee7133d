"""Hand-computed cases that pin the size formulas, the padding rules and the naive reference.

The reference shares `npconv.spec` with the fast ops, so the geometry is pinned here by values
worked out on paper (and by the PyTorch oracle where installed), not by comparing the two.
"""

import numpy as np
import pytest

import npconv
from npconv import reference
from npconv.spec import conv_spec, conv_transpose_spec, same_pads


@pytest.mark.parametrize(
    "s, k, stride, d, pads",
    [
        (5, 3, 2, 1, (1, 1)),      # P = 3: total = 2*2 + 3 - 5 = 2
        (6, 3, 2, 1, (0, 1)),      # P = 3: total = 1, the odd pixel at the end
        (7, 2, 2, 1, (0, 1)),      # P = 4: total = 3*2 + 2 - 7 = 1
        (224, 7, 2, 1, (2, 3)),    # P = 112: total = 111*2 + 7 - 224 = 5
        (10, 3, 1, 2, (2, 2)),     # dilated: effective kernel 5
        (4, 1, 3, 1, (0, 0)),      # never negative
        (8, 4, 1, 1, (1, 2)),      # even kernel, stride 1: PyTorch's "same" puts 2 at the end
    ],
)
def test_same_padding_is_tensorflows_rule(s, k, stride, d, pads):
    assert same_pads(s, k, stride, d) == pads
    spec = conv_spec((1, s, 1), (k, 1, 1), stride=stride, dilation=d, padding="same")
    assert spec.out_size == (-(-s // stride),)


@pytest.mark.parametrize(
    "s, k, stride, padding, d, p",
    [
        (7, 2, 2, 0, 1, 3),        # 7 wide, k=2, s=2: floor(5/2) + 1, the 7th pixel unread
        (224, 7, 2, 3, 1, 112),    # ResNet stem
        (5, 3, 1, "full", 1, 7),
        (5, 3, 1, "valid", 1, 3),
        (9, 3, 1, 0, 4, 1),        # dilated kernel spans all 9 pixels
        (2, 5, 1, 2, 1, 2),        # kernel larger than the unpadded input
    ],
)
def test_output_size_floors_like_pytorch(s, k, stride, padding, d, p):
    spec = conv_spec((1, s, 1), (k, 1, 1), stride=stride, padding=padding, dilation=d)
    assert spec.out_size == (p,)


@pytest.mark.parametrize(
    "s, k, stride, padding, extra, d, o",
    [
        (3, 3, 2, 1, 1, 1, 6),     # (3-1)*2 - 2 + 3 + 1
        (4, 4, 2, 1, 0, 1, 8),     # DCGAN upsampling
        (3, 3, 1, 0, 1, 2, 8),     # output_padding < dilation is allowed with stride 1
        (5, 3, 2, "same", 0, 1, 10),
    ],
)
def test_transpose_output_size(s, k, stride, padding, extra, d, o):
    spec = conv_transpose_spec((1, s, 2), (k, 3, 2), stride=stride, padding=padding,
                               output_padding=extra, dilation=d)
    assert spec.in_size == (o,) and spec.out_size == (s,)


def test_reference_source_index_for_every_mode():
    want = {"zeros": [-1, -1, 0, 1, 2, 3, -1, -1], "reflect": [2, 1, 0, 1, 2, 3, 2, 1],
            "replicate": [0, 0, 0, 1, 2, 3, 3, 3], "circular": [2, 3, 0, 1, 2, 3, 0, 1]}
    for mode, expected in want.items():
        assert [reference.source_index(i, 4, 2, mode) for i in range(8)] == expected


def _line(values):
    return np.asarray(values, dtype=np.float64).reshape(1, -1, 1)       # (N=1, S, C=1)


def _kernel(values):
    return np.asarray(values, dtype=np.float64).reshape(-1, 1, 1)       # (K, C=1, F=1)


@pytest.mark.parametrize("op", [reference.conv, npconv.conv])
def test_1d_cases_computed_by_hand(op):
    x, w = _line([1, 2, 3, 4]), _kernel([1, 0, -1])
    assert op(x, w).ravel().tolist() == [-2, -2]                       # cross-correlation
    assert op(x, w, padding=1).ravel().tolist() == [-2, -2, -2, 3]      # zeros at both ends
    assert op(x, w, padding=1, padding_mode="reflect").ravel().tolist() == [0, -2, -2, 0]
    assert op(x, w, padding=1, padding_mode="replicate").ravel().tolist() == [-1, -2, -2, -1]
    assert op(x, w, padding=1, padding_mode="circular").ravel().tolist() == [2, -2, -2, 2]
    assert op(_line(range(5)), _kernel([1, 1]), dilation=3).ravel().tolist() == [3, 5]
    assert op(_line(range(7)), _kernel([1, 1]), stride=2).ravel().tolist() == [1, 5, 9]


@pytest.mark.parametrize("op", [reference.conv_backward, npconv.conv_backward])
def test_1d_gradients_computed_by_hand(op):
    x, w = _line([1, 2, 3, 4, 5]), _kernel([1, 2])
    dx, dw, db = op(_line([1, 10]), x, w, stride=3)
    assert dx.ravel().tolist() == [1, 2, 0, 10, 20]                     # pixel 2 never read
    assert dw.ravel().tolist() == [1 + 40, 2 + 50]
    assert db.tolist() == [11]
    dx, _, _ = op(_line([1, 1, 1, 1]), _line([1, 2, 3]), _kernel([1, 1]),
                  padding=1, padding_mode="reflect")
    # padded [2, 1, 2, 3, 2]: windows read positions 0..4 once or twice; the two reflected
    # copies of pixel 1 send their gradient back to it.
    assert dx.ravel().tolist() == [2, 2 + 1 + 1, 2]


@pytest.mark.parametrize("op", [reference.conv_transpose, npconv.conv_transpose])
def test_transpose_cases_computed_by_hand(op):
    x, w = _line([1, 2]), _kernel([1, 1, 1])
    assert op(x, w, stride=2).ravel().tolist() == [1, 1, 3, 2, 2]
    assert op(x, w, stride=2, padding=1).ravel().tolist() == [1, 3, 2]
    assert op(x, w, stride=2, padding=1, output_padding=1).ravel().tolist() == [1, 3, 2, 2]
    assert op(x, w, stride=3).ravel().tolist() == [1, 1, 1, 2, 2, 2]


@pytest.mark.parametrize("op", [reference.conv, npconv.conv])
def test_2d_groups_and_layouts_by_hand(op):
    # two channels, two groups: filter 0 sees only channel 0, filter 1 only channel 1
    x = np.stack([np.ones((3, 3)), 2 * np.ones((3, 3))], axis=-1)[None]   # (1, 3, 3, 2)
    w = np.ones((2, 2, 1, 2))                                           # (kh, kw, C/G, F)
    y = op(x, w, groups=2)
    assert y.shape == (1, 2, 2, 2)
    assert np.all(y[..., 0] == 4) and np.all(y[..., 1] == 8)
    y_first = op(np.moveaxis(x, -1, 1), np.ones((2, 1, 2, 2)), groups=2,
                 data_format="channels_first")
    assert np.array_equal(y_first, np.moveaxis(y, -1, 1))


def test_checked_geometries_are_reused_but_bools_and_lists_are_still_checked():
    """conv_spec keeps the specs of plain arguments (ints, strings, tuples) for the next call
    with the same ones; a bool compares equal to 1 but is refused as before, and unhashable
    or NumPy arguments are checked afresh."""
    from npconv import spec as S
    first = S.conv_spec((1, 5, 5, 1), (3, 3, 1, 1), stride=1, padding=(1, 1), dilation=1)
    again = S.conv_spec((1, 5, 5, 1), (3, 3, 1, 1), stride=1, padding=(1, 1), dilation=1)
    assert again is first
    for bad in (dict(stride=True), dict(groups=True), dict(padding=(True, 1)),
                dict(dilation=(1, True))):
        with pytest.raises(TypeError):
            S.conv_spec((1, 5, 5, 1), (3, 3, 1, 1), **bad)
    assert S.conv_spec((1, 5, 5, 1), (3, 3, 1, 1), padding=[1, 1]) == first
    assert S.conv_spec((1, 5, 5, 1), (3, 3, 1, 1), stride=np.int64(1), padding=1) == first
