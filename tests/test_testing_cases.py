"""npconv.testing cases and locate: the sweeps, random draws, tags, variations, and
where-descriptions."""

import numpy as np
import pytest

from npconv.testing import Case, PoolCase, PoolOptions, SweepOptions, all_cases, all_pool_cases
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
    assert _case().tags == ("padding 0", "stride > 1", "remainder", "overlapping windows",
                            "batch > 1")
    assert _case(s=(7, 8), k=(2, 3), stride=(1, 1), pads=((1, 0), (1, 1))).tags == (
        "padding > 0", "overlapping windows", "non-square kernel", "non-square input",
        "non-square output", "per-axis padding", "asymmetric padding", "even kernel",
        "batch > 1")
    assert _case(s=(3, 3), stride=(1, 1), n=1, c=1, f=1).tags == (
        "padding 0", "output size 1", "batch 1", "one channel")
    assert "dilation" in _case(d=(2, 2), s=(9, 9)).tags
    assert "groups" in _case(g=3, c=3, f=6).tags
    assert "reflect padding" in _case(pads=((1, 1),) * 2).with_(padding_mode="reflect").tags


def test_a_stride_or_dilation_that_changes_nothing_is_no_feature():
    single = _case(s=(3, 8), stride=(2, 2))                  # one output row: stride 2 unused
    assert single.out_size == (1, 3) and single.effective_stride == (1, 2)
    assert "per-axis stride" in single.tags
    assert "stride > 1" not in _case(s=(3, 3), stride=(2, 2)).tags
    assert "dilation" not in _case(k=(1, 1), d=(2, 2)).tags
    assert "reflect padding" not in _case().with_(padding_mode="reflect").tags   # no padding


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
    assert skipped == {"a tuple `stride`": 1, "a tuple `padding`": 3, "dilation": 3}
    assert SweepOptions(padding=("zero",)).skip_reason(all_cases()[1]) == "symmetric padding"
    square = SweepOptions(int_only=frozenset({"kernel_size"}))
    assert square.skipped() == {"a non-square `kernel_size`": 3}


def test_transposed_and_padding_mode_sweeps():
    transposed = SweepOptions(transposed=True).cases()
    assert all(c.transposed for c in transposed) and len(transposed) >= 15
    assert any("output padding" in c.tags for c in transposed)
    for case in transposed:
        assert case.out_size == case.spec.in_size and case.w_shape[-1] == case.in_channels
    modes = SweepOptions(padding_modes=("reflect", "circular")).cases()
    assert {c.padding_mode for c in modes} == {"zeros", "reflect", "circular"}
    assert len(modes) == len(all_cases()) + 8


@pytest.mark.parametrize("options", [
    SweepOptions(),
    SweepOptions(rank=1, max_stride=2, per_axis=False, groups=False),
    SweepOptions(rank=3, square_only=True, dilation=False),
    SweepOptions(padding=("zero",), padding_modes=("reflect", "replicate", "circular")),
    SweepOptions(transposed=True, int_only=frozenset({"output_padding"})),
], ids=["default", "rank1-int", "rank3-square", "modes", "transposed"])
def test_random_cases_are_valid_and_within_the_options(options):
    rng = np.random.default_rng(5)
    cases = [options.random_case(rng) for _ in range(60)]
    assert all(c.valid() and options.skip_reason(c) is None for c in cases)
    assert all(c.rank == options.rank for c in cases)
    assert len(set(cases)) > 50
    again = [options.random_case(np.random.default_rng(5)) for _ in range(1)]
    assert again[0] == cases[0]                               # a seed replays the draws


def test_random_cases_cover_remainders_and_paddings_per_axis():
    rng = np.random.default_rng(0)
    cases = [SweepOptions().random_case(rng) for _ in range(300)]
    seen = {(c.remainders[0] > 0, c.remainders[1] > 0, any(c.pads[0]), any(c.pads[1]))
            for c in cases if max(c.stride) > 1}
    assert len(seen) == 16                                    # every combination turns up
    assert any(c.in_size[0] > c.in_size[1] and c.remainders[0] > c.remainders[1] and
               c.pads == ((0, 0), (0, 0)) for c in cases)


@pytest.mark.parametrize("tag", ["padding 0", "stride > 1", "non-square kernel",
                                 "non-square input", "even kernel", "dilation", "batch 1",
                                 "one channel", "overlapping windows"])
def test_vary_changes_one_tag_and_what_depends_on_it(tag):
    options = SweepOptions()
    rng = np.random.default_rng(1)
    varied = 0
    for _ in range(40):
        case = options.random_case(rng)
        other = options.vary(case, tag, tag not in case.tags)
        if other is None:
            continue
        varied += 1
        assert (tag in other.tags) != (tag in case.tags)
        assert other.valid() and options.skip_reason(other) is None
        changed = set(other.tags) ^ set(case.tags)
        assert changed <= {tag} | options_related(tag)
    assert varied >= 8


def options_related(tag):
    from npconv.testing.cases import DERIVED, RELATED
    return RELATED.get(tag, set()) | DERIVED


def test_smaller_cases_are_smaller():
    case = _case(s=(9, 8), pads=((1, 2), (1, 1)), d=(2, 1), g=1)
    for other in case.smaller():
        if other != case and other.valid():
            assert other.complexity <= case.complexity


@pytest.mark.parametrize("kwargs, error, match", [
    ({"rank": 2.0}, TypeError, "`rank` must be an int; got 2.0"),
    ({"rank": 4}, ValueError, "`rank` must be between 1 and 3; got 4"),
    ({"max_stride": 0}, ValueError, "`max_stride` must be >= 1; got 0"),
    ({"padding": "zero"}, TypeError, "`padding` must be a tuple of names"),
    ({"padding": ("zero", "reflect")}, ValueError, "`padding` must be a non-empty tuple of"),
    ({"padding": ()}, ValueError, r"`padding` must be a non-empty tuple .*; got \(\)"),
    ({"groups": 1}, TypeError, "`groups` must be True or False; got 1"),
    ({"padding_modes": ("zeros",)}, ValueError, "`padding_modes` must be a tuple of names"),
    ({"int_only": {"groups"}}, ValueError, r"`int_only` must hold argument names .*\['groups'\]"),
])
def test_sweep_option_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        SweepOptions(**kwargs)


# ---------------------------------------------------------------------------------------------
# Pooling cases
# ---------------------------------------------------------------------------------------------


def test_pooling_sweep_starts_with_tiled_windows_and_covers_the_hard_parts():
    cases = all_pool_cases("max")
    assert "stride == kernel" in cases[0].tags
    tags = {t for c in cases for t in c.tags}
    assert {"overlapping windows", "gaps between windows", "padding > 0", "ceil_mode", "ties",
            "dilation", "remainder"} <= tags
    avg = all_pool_cases("avg")
    assert not any("dilation" in c.tags or c.ties for c in avg)
    both = PoolOptions(op="avg", count_include_pad=(True, False)).cases()
    assert any("padding excluded" in c.tags for c in both)
    assert not any(not c.count_include_pad for c in avg)


def test_pooling_tags_follow_the_data_for_ties():
    ties = PoolCase("max", 1, 1, (4, 4), (2, 2), (2, 2), ((0, 0),) * 2, (1, 1), ties=True)
    assert ties.has_tied_maxima and "ties" in ties.tags
    one = ties.with_(kernel_size=(1, 1), stride=(1, 1))
    assert not one.has_tied_maxima and "ties" not in one.tags   # one tap: no tie possible
    ceil = PoolCase("max", 1, 1, (5, 5), (2, 2), (2, 2), ((0, 0),) * 2, (1, 1), ceil_mode=True)
    assert ceil.out_size == (3, 3) and ceil.floor_size == (2, 2) and "ceil_mode" in ceil.tags
    assert ceil.describe() == "x (1, 5, 5, 1), kernel_size=2, stride=2, padding=0, ceil_mode=True"


def test_random_pooling_cases_are_valid():
    for options in (PoolOptions(op="max"), PoolOptions(op="avg", count_include_pad=(False,)),
                    PoolOptions(op="max", padding=False, ceil_mode=False, stride=False)):
        rng = np.random.default_rng(2)
        cases = [options.random_case(rng) for _ in range(60)]
        assert all(c.valid() and options.skip_reason(c) is None for c in cases)
    assert all(c.stride == c.kernel_size for c in cases)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"op": "min"}, ValueError, "`op` must be one of"),
    ({"ceil_mode": 1}, TypeError, "`ceil_mode` must be True or False; got 1"),
    ({"count_include_pad": True}, TypeError, "`count_include_pad` must be a non-empty tuple"),
    ({"rank": 0}, ValueError, "`rank` must be between 1 and 3; got 0"),
])
def test_pool_option_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        PoolOptions(**kwargs)


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
