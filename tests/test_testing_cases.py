"""npconv.testing.cases and locate: the sweep, its tags and options, and where-descriptions."""

import numpy as np
import pytest

from npconv.testing import Case, SweepOptions, all_cases
from npconv.testing.locate import (
    ascii_map,
    describe,
    index_phrase,
    overlaps_padding,
    padding_band,
    read_mask,
    spatial_phrase,
)


def _case(s=(8, 8), k=(3, 3), stride=(2, 2), pads=((0, 0), (0, 0)), d=(1, 1), g=1, n=2, c=3, f=4):
    return Case(n, c, f, s, k, stride, pads, d, g)


# ---------------------------------------------------------------------------------------------
# The sweep
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("rank", [1, 2, 3])
def test_every_case_is_valid_and_unique(rank):
    cases = all_cases(rank)
    assert len(cases) == len(set(cases)) >= 20
    for case in cases:
        assert case.spec.out_size == case.out_size and min(case.out_size) >= 1
        assert case.rank == rank


def test_sweep_goes_from_easy_to_hard():
    cases = all_cases(2)
    first = cases[0]
    assert (first.stride, first.pads, first.dilation, first.groups) == (
        (1, 1), ((0, 0), (0, 0)), (1, 1), 1)
    position = {tag: next(i for i, c in enumerate(cases) if tag in c.tags)
                for tag in ("stride > 1", "remainder", "non-square kernel", "asymmetric padding",
                            "dilation", "groups")}
    assert list(position.values()) == sorted(position.values())
    assert "batch 1" in cases[-1].tags


def test_tags_are_computed_from_the_geometry():
    assert _case().tags == ("padding 0", "stride > 1", "remainder")
    assert _case(s=(7, 8), k=(2, 3), stride=(1, 1), pads=((1, 0), (1, 1))).tags == (
        "padding > 0", "non-square kernel", "non-square input", "per-axis padding", "asymmetric padding",
        "even kernel")
    assert _case(s=(3, 3), stride=(1, 1), n=1, c=1, f=1).tags == (
        "padding 0", "output size 1", "batch 1", "one channel")
    assert "dilation" in _case(d=(2, 2), s=(9, 9)).tags
    assert "groups" in _case(g=3, c=3, f=6).tags


def test_arguments_take_their_simplest_form():
    case = _case(stride=(2, 1), pads=((1, 1), (2, 2)), d=(2, 2), s=(9, 9))
    assert (case.stride_arg, case.padding_arg, case.dilation_arg) == ((2, 1), (1, 2), 2)
    assert _case(pads=((1, 0), (1, 0))).padding_arg == ((1, 0), (1, 0))
    assert case.describe() == ("x (2, 9, 9, 3), w (3, 3, 3, 4), stride=(2, 1), "
                               "padding=(1, 2), dilation=2")


def test_options_leave_out_what_the_code_does_not_support():
    every = SweepOptions().cases()
    some = SweepOptions(max_stride=1, padding=("zero", "symmetric"), square_only=True,
                        per_axis=False, dilation=False, groups=False).cases()
    assert len(every) == len(all_cases(2)) > len(some) > 0
    banned = {"stride > 1", "non-square kernel", "non-square input", "per-axis stride",
              "per-axis padding", "asymmetric padding", "dilation", "groups"}
    assert not any(banned & set(c.tags) for c in some)


def test_skipped_counts_each_reason():
    skipped = SweepOptions(per_axis=False, dilation=False).skipped()
    assert skipped == {"per-axis values": 4, "dilation": 3}
    assert SweepOptions(padding=("zero",)).skip_reason(all_cases()[1]) == "symmetric padding"


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rank": 2.0}, TypeError, "`rank` must be an int; got 2.0"),
    ({"rank": 4}, ValueError, "`rank` must be between 1 and 3; got 4"),
    ({"max_stride": 0}, ValueError, "`max_stride` must be >= 1; got 0"),
    ({"padding": "zero"}, TypeError, "`padding` must be a tuple of padding kinds"),
    ({"padding": ("zero", "reflect")}, ValueError, "`padding` must be a non-empty tuple of kinds"),
    ({"padding": ()}, ValueError, r"`padding` must be a non-empty tuple .*; got \(\)"),
    ({"groups": 1}, TypeError, "`groups` must be True or False; got 1"),
])
def test_sweep_option_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SweepOptions(**kwargs)


# ---------------------------------------------------------------------------------------------
# Where an output is wrong
# ---------------------------------------------------------------------------------------------


def test_regions_of_the_input_and_output():
    case = _case(s=(8, 8), pads=((1, 0), (0, 0)))          # Sp = 9 x 8, stride 2, K 3
    np.testing.assert_array_equal(read_mask(case)[:, 0], [1] * 8)
    np.testing.assert_array_equal(read_mask(case)[0], [1] * 7 + [0])      # remainder column
    np.testing.assert_array_equal(padding_band(case)[:, 3], [1] + [0] * 7)
    np.testing.assert_array_equal(overlaps_padding(case)[:, 0], [1, 0, 0, 0])


def test_index_phrases():
    assert index_phrase([3], 4, "row") == "the last row"
    assert index_phrase([2, 3], 4, "column") == "the last 2 columns"
    assert index_phrase([0], 4, "row") == "the first row"
    assert index_phrase([0, 3], 4, "row") == "the first and last rows"
    assert index_phrase([1], 4, "row") == "row 1"
    assert index_phrase([1, 2, 4], 6, "column") == "columns 1-2, 4"


def test_spatial_phrases():
    mask = np.zeros((6, 6), dtype=bool)
    mask[0] = True
    assert spatial_phrase(mask, ("row", "column")) == "only in the first row"
    ring = np.ones((8, 8), dtype=bool)
    ring[1:-1, 1:-1] = False
    ring[0, 3] = False
    assert spatial_phrase(ring, ("row", "column")) == "at 27 of 64 positions (within 1 of the edge)"
    dots = np.zeros((6, 6), dtype=bool)
    dots[2, 3] = dots[3, 2] = True
    assert spatial_phrase(dots, ("row", "column")) == (
        "at 2 of 36 positions (rows 2-3, columns 2-3)")


def test_describe_names_remainder_padding_channels_and_groups():
    case = _case(s=(8, 8), pads=((1, 1), (1, 1)), stride=(1, 1), g=2, c=4, f=6)
    bad = np.zeros((2, 8, 8, 4), dtype=bool)
    bad[:, 0, :, 2:] = True                                   # dx: first row, group 2
    assert describe(bad, "dx", case) == (
        "only in the first row: pixels within the padding distance of the edge; "
        "only channels 2-3 of 4 (group 1 of 2)")
    dw = np.zeros((3, 3, 2, 6), dtype=bool)
    dw[1, 1] = True
    assert describe(dw, "dw", case) == "at 1 of 9 positions (kernel row 1, kernel column 1)"
    assert describe(np.array([True, False, True, True]), "db", case) == "in filters 0, 2-3 of 4"
    assert describe(np.ones((2, 3), dtype=bool), "db", case) == "everywhere"
    y = np.zeros((2, 8, 8, 6), dtype=bool)
    y[0, -1] = True
    assert describe(y, "y", case) == ("only in the last row: output positions whose windows "
                                      "overlap the padding; only batch items 0 of 2")


def test_ascii_map():
    assert ascii_map(np.array([True, False])) == ["X ."]
    assert ascii_map(np.zeros((2, 3), dtype=bool)) == [". . .", ". . ."]
    assert ascii_map(np.zeros((20, 3), dtype=bool)) == []
    assert ascii_map(np.zeros((2, 2, 2), dtype=bool)) == []
