"""npconv.testing.check_conv: broken implementations are caught and diagnosed, good ones pass.

The broken layers live in examples/broken_convs.py (one classic bug each); a few more bug
patterns are written here as plain functions on top of npconv. The seed answer's class
(examples/seed_answer.py) is the worked example of docs/checking.md. Most checks here run
in this process and without the random phase (`QUICK`), which other test files cover.
"""

import numpy as np
import pytest
from student_layers import load_example

import npconv
from npconv.testing import Case, FunctionsAdapter, LayerAdapter, all_cases, check_conv

QUICK = {"random": 0, "isolate": False}


@pytest.fixture(scope="module")
def broken():
    return load_example("broken_convs.py")


@pytest.fixture(scope="module")
def seed():
    return load_example("seed_answer.py")


def text(report) -> str:
    """The report with its line wrapping undone, for searching phrases."""
    return " ".join(str(report).split())


def first(report, name):
    """The check of output `name` in the first finding's smallest failing configuration."""
    return report.findings[0].smallest.outputs[name]


# ---------------------------------------------------------------------------------------------
# Correct implementations pass
# ---------------------------------------------------------------------------------------------


def test_a_correct_layer_passes_every_phase(broken):
    report = check_conv(broken.Conv2D, random=40, random_seed=3)
    assert report and not report.findings
    assert len(report.results) == len(all_cases(2)) and len(report.random_results) == 40
    assert report.random.seed == 3
    assert str(report).endswith("Result: PASS, y, dx, dw, db match npconv on all 30 "
                                "configurations and 40 random ones.")
    assert "Random phase: 40 configurations (--random-seed 3 replays them): all pass." in \
        str(report)


def test_correct_cs231n_functions_pass_in_channels_first(broken):
    report = check_conv(broken.conv_forward, broken.conv_backward, data_format="channels_first",
                        dilation=False, groups=False, **QUICK)
    assert report, report


@pytest.mark.parametrize("rank", [1, 3])
def test_npconv_itself_passes_in_other_ranks(rank):
    def forward(x, w, b, stride, padding, dilation, groups):
        return npconv.conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                           groups=groups, data_format="channels_first")

    def backward(dy, x, w, stride, padding, dilation, groups):
        return npconv.conv_backward(dy, x, w, stride=stride, padding=padding,
                                    dilation=dilation, groups=groups,
                                    data_format="channels_first")

    report = check_conv(forward, backward, rank=rank, data_format="channels_first",
                        random=15, random_seed=0, isolate=False)
    assert report, report


def test_correct_transposed_and_padding_mode_layers_pass(broken):
    report = check_conv(broken.ConvTranspose2D, random=20, random_seed=0)
    assert report, report
    assert report.options.transposed and "(transposed convolution;" in str(report)
    assert "w (kh, kw, F, C)" in str(report)
    report = check_conv(broken.PaddedConv2D, random=20, random_seed=0)
    assert report, report
    assert report.options.padding_modes == ("reflect", "replicate", "circular")
    assert {r.case.padding_mode for r in report.results} == {"zeros", "reflect", "replicate",
                                                              "circular"}


# ---------------------------------------------------------------------------------------------
# One broken layer per known bug: caught, located, diagnosed, and when it fails
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, mode, tags, output, cause, words", [
    ("NoDilation", "tags", ("stride > 1",), "dx", "dy-not-dilated",
     "dy was not dilated for stride"),
    ("NoRotation", "unless", ("1x1 kernel",), "dx", "kernel-not-rotated",
     "the kernel was not rotated"),
    ("MinusZeroCrop", "tags", ("padding 0",), "dx", "crop-minus-zero",
     "padding cropped with `-0`"),
    ("SwappedChannels", "unless", ("one channel",), "dw", "axes-permuted",
     "C and F are swapped"),
    ("BiasOverWrongAxes", "tags", ("batch > 1",), "db", "bias-wrong-axes",
     "db is dy summed over (H, W)"),
    ("MeanOverBatch", "tags", ("batch > 1",), "dw", "scaled", "divided by the batch size N=2"),
    ("ForgetsBias", "all", (), "y", "bias-not-added", "y lacks the bias"),
    ("TrueConvolution", "unless", ("1x1 kernel",), "y", "forward-flips-kernel",
     "y is a true convolution"),
    ("SymmetricForReflect", "tags", ("reflect padding",), "y", "padding-mode-confused",
     "np.pad(mode='symmetric')"),
    ("DropsPaddingGradient", "tags", ("reflect padding",), "dx", "padding-gradient-dropped",
     "dx misses the gradient that flows through the padding"),
    ("TransposedNoCrop", "tags", ("padding > 0",), "y", "transposed-not-cropped",
     "y still includes the rows that `padding` removes"),
    ("IgnoresOutputPadding", "tags", ("output padding",), "y", "output-padding-ignored",
     "output_padding=1 was ignored"),
    ("TransposedFlipsKernel", None, None, "y", "forward-flips-kernel",
     "scatters each x pixel times w as it is"),
])
def test_each_known_bug_is_caught_and_diagnosed(broken, name, mode, tags, output, cause, words):
    report = check_conv(getattr(broken, name), shrink=False, **QUICK)
    assert not report
    finding = report.findings[0]
    if mode is not None:
        assert (finding.mode, finding.tags) == (mode, tags)
    check = first(report, output)
    assert cause in check.causes
    assert words in " ".join(check.diagnosis)
    assert words in text(report)


def test_swapped_channels_are_found_when_the_shapes_agree(broken):
    case = all_cases(2)[1].with_(out_channels=3)              # C == F: dw keeps its shape
    report = check_conv(broken.SwappedChannels, cases=[case], isolate=False)
    dw = report.results[0].outputs["dw"]
    assert dw.status == "wrong" and dw.causes == ("axes-permuted",)
    assert "C and F are swapped" in dw.diagnosis[0]


def test_remainder_rows_are_located(broken):
    report = check_conv(broken.RemainderNotZero, shrink=False, **QUICK)
    assert [r.index for r in report.failures] == [10, 13]
    dx = report.results[9].outputs["dx"]
    assert dx.where == ("only in the last row and the last column: the remainder rows/columns "
                        "the forward never reads (their gradient must be 0)")
    assert "        X X X X X X X X" in str(report)             # the map's last row


def test_a_forward_bug_with_a_consistent_backward_is_told_apart(broken):
    finding = check_conv(broken.TrueConvolution, **QUICK).findings[0]
    assert finding.consistency.startswith("dx and dw are the exact gradients of this forward")
    assert "dw-rotated" in finding.smallest.outputs["dw"].causes


def test_an_inconsistent_backward_is_reported_too(broken):
    class Both(broken.NoRotation):
        def forward(self, x):
            return super().forward(x) - self.b

    finding = check_conv(Both, max_stride=1, **QUICK).findings[0]
    assert finding.consistency.startswith("the backward is not the gradient of this forward")
    assert "dx: FAILED" in finding.consistency


# ---------------------------------------------------------------------------------------------
# More bug patterns, as functions around npconv
# ---------------------------------------------------------------------------------------------


def _forward(x, w, b, stride, padding):
    return npconv.conv(x, w, b, stride=stride, padding=padding)


def _grads(dy, x, w, stride, padding):
    return npconv.conv_backward(dy, x, w, stride=stride, padding=padding)


def _padded_dx(dy, x, w, stride, padding):
    """dx of the padded input (no crop), for padding given as an int."""
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    return npconv.conv_backward(dy, xp, w, stride=stride).dx


def _not_cropped(dy, x, w, b, stride, padding):
    _, dw, db = _grads(dy, x, w, stride, padding)
    return _padded_dx(dy, x, w, stride, padding), dw, db


def _cropped_at_zero(dy, x, w, b, stride, padding):
    _, dw, db = _grads(dy, x, w, stride, padding)
    h, wd = x.shape[1:3]
    return _padded_dx(dy, x, w, stride, padding)[:, :h, :wd], dw, db


def _dw_stride_one(dy, x, w, b, stride, padding):
    dx, _, db = _grads(dy, x, w, stride, padding)
    xp = np.pad(x, ((0, 0), (padding, padding), (padding, padding), (0, 0)))
    p, q = dy.shape[1:3]
    k = w.shape[:2]
    dw = npconv.conv_backward(dy, xp[:, :p + k[0] - 1, :q + k[1] - 1], w).dw
    return dx, dw, db


def _dx_zeros(dy, x, w, b, stride, padding):
    _, dw, db = _grads(dy, x, w, stride, padding)
    return np.zeros_like(x), dw, db


def _dx_shifted(dy, x, w, b, stride, padding):
    dx, dw, db = _grads(dy, x, w, stride, padding)
    out = np.zeros_like(dx)
    out[:, :, 1:] = dx[:, :, :-1]                            # right by one column
    return out, dw, db


def _dx_channels_first(dy, x, w, b, stride, padding):
    dx, dw, db = _grads(dy, x, w, stride, padding)
    return dx.transpose(0, 3, 1, 2), dw, db


@pytest.mark.parametrize("backward, output, cause, words", [
    (_not_cropped, "dx", "padding-not-cropped", "dx still includes the padding"),
    (_cropped_at_zero, "dx", "crop-offset", "starts at (0, 0) instead of lo ="),
    (_dw_stride_one, "dw", "dw-windows-stride-1", "windows of x that step by 1 instead of"),
    (_dx_zeros, "dx", "all-zeros", "dx is all zeros"),
    (_dx_shifted, "dx", "shifted", "shifted right by 1 column"),
    (_dx_channels_first, "dx", "axes-permuted", "channels_first and channels_last mixed up"),
])
def test_function_bug_patterns(backward, output, cause, words):
    report = check_conv(_forward, backward, padding=("zero", "symmetric"), per_axis=False,
                        shrink=False, **QUICK)
    causes = {c for r in report.failures for c in r.outputs[output].causes}
    assert cause in causes
    assert words in text(report)


def test_modifying_an_input_in_place_is_a_failure():
    def forward(x, w, b, stride, padding):
        y = _forward(x, w, b, stride, padding)
        x[...] = 0
        return y

    report = check_conv(forward, max_stride=1, **QUICK)
    assert report.failures[0].modified == ("x",)
    assert "the code modified its input `x` in place" in text(report)


def test_exceptions_are_findings_not_crashes():
    def forward(x, w, b, stride, padding):
        if stride != 1:
            raise NotImplementedError("stride > 1")
        return _forward(x, w, b, stride, padding)

    report = check_conv(forward, **QUICK)
    assert (report.findings[0].mode, report.findings[0].tags) == ("tags", ("stride > 1",))
    assert "forward raised NotImplementedError at test_testing_check.py:" in text(report)


# ---------------------------------------------------------------------------------------------
# The seed answer, the worked example of docs/checking.md
# ---------------------------------------------------------------------------------------------


def test_the_seed_answer_fails_exactly_where_it_is_wrong(seed):
    report = check_conv(seed.SeedConv2D, **QUICK)
    assert [(f.mode, f.tags) for f in report.findings] == [
        ("tags", ("padding 0",)), ("tags", ("non-square kernel",)),
        ("needs", ("non-square input",))]
    pad0 = report.findings[0].smallest
    assert pad0.outputs["dx"].status == "shape" and pad0.outputs["dx"].shape[1:3] == (0, 0)
    assert pad0.outputs["dx"].causes == ("crop-minus-zero",)
    assert all(pad0.outputs[k].ok for k in ("y", "dw", "db"))
    assert "non-square input" in report.findings[2].first.case.tags
    assert report.findings[2].smallest.error.location.startswith("seed_answer.py:")
    passing = [r for r in report.results if r.passed]
    assert any("stride > 1" in r.case.tags and "remainder" in r.case.tags for r in passing)
    words = text(report)
    assert "dilation (SeedConv2D takes no `dilation` argument)" in words
    assert "with a tuple `stride` (SeedConv2D's `stride` is annotated `int`)" in words
    assert "with a tuple `padding` (SeedConv2D's `pad` is annotated `int`)" in words


def test_the_seed_answer_as_written_reads_past_the_end(seed):
    """The answer's `_windows` without the reproduction's bounds check: its view reaches past
    the end of the dilated dy, which the view check reports where it happens."""

    class AsWritten(seed.SeedConv2D):
        def _windows(self, array, stride_size, filter_shapes, out_height, out_width):
            s = array.strides
            return np.lib.stride_tricks.as_strided(
                array, shape=(array.shape[0], out_height, out_width, *filter_shapes,
                              array.shape[3]),
                strides=(s[0], s[1] * stride_size, s[2] * stride_size, s[1], s[2], s[3]),
                writeable=False)

    report = check_conv(AsWritten, cases=[all_cases(2)[14]])       # 7x8, stride 2, padding 1
    (issue,) = report.results[0].memory
    assert issue.kind == "view"
    assert issue.text.startswith("an as_strided view made at test_testing_check.py:")
    assert "bytes past the end of its array" in issue.text
    assert "memory the array does not own" in text(report)


def test_reports_are_stable_and_readable(seed):
    report = check_conv(seed.SeedConv2D, random=20, random_seed=4, isolate=False)
    words = str(report)
    assert words == str(check_conv(seed.SeedConv2D, random=20, random_seed=4, isolate=False))
    table = [line for line in words.splitlines() if line.startswith("  ") and "  FAIL  " in line]
    assert len(table) == 12
    assert all(len(line) <= 96 for line in words.splitlines() if line not in table)
    assert words.splitlines()[0] == ("npconv check: SeedConv2D (convolution; channels_last x "
                                     "(N, H, W, C), w (kh, kw, C, F))")
    assert words.splitlines()[-1].startswith("Result: FAIL, 12 of 21 configurations and ")


def test_a_different_seed_gives_the_same_verdicts(seed):
    a = check_conv(seed.SeedConv2D, seed=0, **QUICK)
    b = check_conv(seed.SeedConv2D, seed=7, shrink=False, **QUICK)
    assert [r.passed for r in a.results] == [r.passed for r in b.results]
    assert b.findings[0].smallest is b.findings[0].first


# ---------------------------------------------------------------------------------------------
# What the code takes: int-only arguments, layouts, forward only, given cases
# ---------------------------------------------------------------------------------------------


def test_a_constructor_that_refuses_tuples_gets_them_left_out():
    import student_layers

    report = check_conv(student_layers.TorchStyle, data_format="channels_first", **QUICK)
    assert report, report
    words = text(report)
    assert "3 configurations with a non-square `kernel_size` (TorchStyle refuses a tuple: " \
           "TypeError" in words
    assert "with a tuple `stride` (TorchStyle refuses a tuple: TypeError at " \
           "student_layers.py:" in words
    assert report.options.int_only >= {"kernel_size", "stride", "padding"}


def test_int_annotations_leave_out_per_axis_configurations_without_trying_them():
    import student_layers

    report = check_conv(student_layers.Annotated, **QUICK)
    assert report and report.options.int_only == {"stride", "padding"}
    assert not any(r.case.tuple_args() & {"stride", "padding"} for r in report.results)
    forced = check_conv(student_layers.Annotated, per_axis=True, **QUICK)   # checked anyway
    assert forced and len(forced.results) == len(report.results) + 4 == 25


def test_the_wrong_layout_gets_a_hint():
    import student_layers

    report = check_conv(student_layers.ChannelsFirst, **QUICK)
    assert not report.results[0].passed and not any(r.passed for r in report.results)
    assert report.layout_hint.startswith("every configuration of the sweep fails, but with "
                                         "--channels-first (data_format='channels_first') the "
                                         "3 configurations tried pass")
    assert "Layout: every configuration of the sweep fails" in text(report)
    assert check_conv(student_layers.ChannelsFirst, data_format="channels_first", **QUICK)


def test_custom_cases_and_a_forward_only_layer(broken):
    report = check_conv(LayerAdapter(broken.NoDilation, backward=None),
                        cases=all_cases(2)[7:9], isolate=False)
    assert report and [r.index for r in report.results] == [1, 2]
    assert report.random is None and "Left out" not in str(report)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dilation": 1}, TypeError, "`dilation` must be True, False or None; got 1"),
    ({"cases": [1]}, TypeError, "`cases` must be a list of npconv.testing.Case"),
    ({"cases": []}, ValueError, r"`cases` must not be empty; got \[\]"),
    ({"seed": "0"}, TypeError, "`seed` must be an int; got '0'"),
    ({"random": -1}, ValueError, "`random` must be >= 0; got -1"),
    ({"seed": -1}, ValueError, "`seed` must be >= 0; got -1"),          # was: every run crashed
    ({"random_seed": -3}, ValueError, "`random_seed` must be >= 0; got -3"),
    ({"random_seed": 1.5}, TypeError, "`random_seed` must be an int or None; got 1.5"),
    ({"timeout": 0}, ValueError, "`timeout` must be a number of seconds > 0; got 0"),
    ({"budget": "1"}, ValueError, "`budget` must be a number of seconds > 0; got '1'"),
    ({"isolate": 1}, TypeError, "`isolate` must be True, False or None; got 1"),
    ({"per_axis": "no"}, TypeError, "`per_axis` must be True, False or None; got 'no'"),
    ({"rtol": -1.0}, ValueError, "`rtol` must be >= 0; got -1.0"),
    ({"atol": "1"}, TypeError, "`atol` must be a float; got '1'"),
    ({"max_stride": 0}, ValueError, "`max_stride` must be >= 1; got 0"),
    ({"data_format": "NCHW"}, ValueError, "`data_format` must be one of"),
    ({"padding_modes": ("mirror",)}, ValueError, "`padding_modes` must be a tuple of names"),
])
def test_check_conv_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        check_conv(_forward, **kwargs)


def test_check_conv_rejects_layout_options_with_an_adapter():
    with pytest.raises(ValueError, match="pass backward, data_format and weight_layout"):
        check_conv(FunctionsAdapter(_forward), weight_layout="OIHW")


def test_check_conv_rejects_code_it_cannot_call():
    with pytest.raises(TypeError, match="cannot tell how to call"):
        check_conv(lambda a, b, c, d, e, f, g, h: 0)
    with pytest.raises(TypeError, match=r"`cases` must be a list of npconv\.testing\.Case"):
        check_conv(_forward, cases=[Case(1, 1, 1, (3,), (3,), (1,), ((0, 0),), (1,)), 2])


def test_the_random_phase_keeps_to_its_time_budget():
    import time

    def slow(x, w, b, stride, padding):
        time.sleep(0.005)
        return _forward(x, w, b, stride, padding)

    start = time.monotonic()
    report = check_conv(slow, random=500, random_seed=0, budget=0.3, isolate=False)
    assert time.monotonic() - start < 5
    assert report.random.exhausted and 0 < report.random.count < 500
    assert f"Random phase: {report.random.count} configurations (--random-seed 0 replays them, " \
           f"stopped by the 0.3 s budget): all pass." in text(report)
