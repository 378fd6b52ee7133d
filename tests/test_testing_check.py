"""npconv.testing.check_conv: broken implementations are caught and diagnosed, good ones pass.

The broken layers live in examples/broken_convs.py (one classic bug each); a few more bug
patterns are written here as plain functions on top of npconv. The seed answer's class
(examples/seed_answer.py) is the worked example of docs/checking.md.
"""

import importlib.util
import pathlib

import numpy as np
import pytest

import npconv
from npconv.testing import Functions, Layer, all_cases, check_conv
from npconv.testing.check import CaseResult, group_failures

EXAMPLES = pathlib.Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"_npconv_example_{name}", EXAMPLES / name)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def broken():
    return _load("broken_convs.py")


@pytest.fixture(scope="module")
def seed():
    return _load("seed_answer.py")


def _text(report) -> str:
    """The report with its line wrapping undone, for searching phrases."""
    return " ".join(str(report).split())


def _first(report, name):
    """The check of output `name` in the first finding's smallest failing configuration."""
    return report.findings[0].smallest.outputs[name]


# ---------------------------------------------------------------------------------------------
# Correct implementations pass
# ---------------------------------------------------------------------------------------------


def test_a_correct_layer_passes_every_configuration(broken):
    report = check_conv(broken.Conv2D)
    assert report and not report.findings and len(report.results) == len(all_cases(2))
    assert str(report).endswith("Result: PASS, y, dx, dw, db match npconv on all 30 "
                                "configurations.")


def test_correct_cs231n_functions_pass_in_channels_first(broken):
    report = check_conv(broken.conv_forward, broken.conv_backward, data_format="channels_first",
                        dilation=False, groups=False)
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

    assert check_conv(forward, backward, rank=rank, data_format="channels_first")


# ---------------------------------------------------------------------------------------------
# One broken layer per known bug: caught, located, diagnosed
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, tag, output, cause, words", [
    ("NoDilation", "stride > 1", "dx", "dy-not-dilated", "dy was not dilated for stride"),
    ("NoRotation", "except", "dx", "kernel-not-rotated", "the kernel was not rotated"),
    ("MinusZeroCrop", "padding 0", "dx", "crop-minus-zero", "padding cropped with `-0`"),
    ("SwappedChannels", "except", "dw", "axes-permuted", "C and F are swapped"),
    ("BiasOverWrongAxes", "except", "db", "bias-wrong-axes", "db is dy summed over (H, W)"),
    ("MeanOverBatch", "except", "dw", "scaled", "divided by the batch size N=2"),
    ("ForgetsBias", "all", "y", "bias-not-added", "y lacks the bias"),
    ("TrueConvolution", "except", "y", "forward-flips-kernel", "y is a true convolution"),
])
def test_each_known_bug_is_caught_and_diagnosed(broken, name, tag, output, cause, words):
    report = check_conv(getattr(broken, name))
    assert not report
    assert report.findings[0].tag == tag
    check = _first(report, output)
    assert cause in check.causes
    assert words in " ".join(check.diagnosis)
    assert words in _text(report)


def test_swapped_channels_are_found_when_the_shapes_agree(broken):
    case = all_cases(2)[1].with_(out_channels=3)              # C == F: dw keeps its shape
    report = check_conv(broken.SwappedChannels, cases=[case])
    dw = report.results[0].outputs["dw"]
    assert dw.status == "wrong" and dw.causes == ("axes-permuted",)
    assert "C and F are swapped" in dw.diagnosis[0]


def test_remainder_rows_are_located(broken):
    report = check_conv(broken.RemainderNotZero)
    assert [r.index for r in report.failures] == [10, 13]
    dx = _first(report, "dx")
    assert dx.where == ("only in the last row and the last column: the remainder rows/columns "
                        "the forward never reads (their gradient must be 0)")
    assert "        X X X X X X X X" in str(report)             # the map's last row


def test_a_forward_bug_with_a_consistent_backward_is_told_apart(broken):
    finding = check_conv(broken.TrueConvolution).findings[0]
    assert finding.consistency.startswith("dx and dw are the exact gradients of this forward")
    assert "dw-rotated" in finding.smallest.outputs["dw"].causes


def test_an_inconsistent_backward_is_reported_too(broken):
    finding = check_conv(broken.ForgetsBias, max_stride=1).findings[0]
    assert finding.consistency.startswith("dx and dw are the exact gradients")

    class Both(broken.NoRotation):
        def forward(self, x):
            return super().forward(x) - self.b

    finding = check_conv(Both).findings[0]
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
    return npconv.conv_grad_input(dy, w, xp.shape, stride=stride)


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
    dw = npconv.conv_grad_weight(dy, xp[:, :p + k[0] - 1, :q + k[1] - 1], w.shape)
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
    report = check_conv(_forward, backward, padding=("zero", "symmetric"), per_axis=False)
    causes = {c for r in report.failures for c in r.outputs[output].causes}
    assert cause in causes
    assert words in _text(report)


def test_modifying_an_input_in_place_is_a_failure():
    def forward(x, w, b, stride, padding):
        y = _forward(x, w, b, stride, padding)
        x[...] = 0
        return y

    report = check_conv(forward, max_stride=1)
    assert report.failures[0].modified == ("x",)
    assert "the code modified its input `x` in place" in _text(report)


def test_exceptions_are_findings_not_crashes():
    def forward(x, w, b, stride, padding):
        if stride > 1:
            raise NotImplementedError("stride > 1")
        return _forward(x, w, b, stride, padding)

    report = check_conv(forward)
    assert report.findings[0].tag == "stride > 1"
    assert "forward raised NotImplementedError at test_testing_check.py:" in _text(report)


# ---------------------------------------------------------------------------------------------
# The seed answer, the worked example of docs/checking.md
# ---------------------------------------------------------------------------------------------


def test_the_seed_answer_fails_exactly_where_it_is_wrong(seed):
    report = check_conv(seed.SeedConv2D, per_axis=False)
    assert [f.tag for f in report.findings] == ["padding 0", "non-square kernel", None]
    pad0 = report.findings[0].smallest
    assert pad0.outputs["dx"].status == "shape" and pad0.outputs["dx"].shape[1:3] == (0, 0)
    assert pad0.outputs["dx"].causes == ("crop-minus-zero",)
    assert all(pad0.outputs[k].ok for k in ("y", "dw", "db"))
    assert "non-square input" in report.findings[2].first.case.tags
    assert report.findings[2].smallest.error.location.startswith("seed_answer.py:")
    passing = [r for r in report.results if r.passed]
    assert any("stride > 1" in r.case.tags and "remainder" in r.case.tags for r in passing)
    assert "dilation (SeedConv2D takes no `dilation` argument)" in _text(report)


def test_reports_are_stable_and_readable(seed):
    text = str(check_conv(seed.SeedConv2D, per_axis=False))
    assert text == str(check_conv(seed.SeedConv2D, per_axis=False))
    table = [line for line in text.splitlines() if line.startswith("  ") and "  FAIL  " in line]
    assert len(table) == 12
    assert all(len(line) <= 96 for line in text.splitlines() if line not in table)
    assert text.splitlines()[0] == ("npconv check: SeedConv2D (channels_last x (N, H, W, C), "
                                    "w (kh, kw, C, F))")
    assert text.splitlines()[-1] == "Result: FAIL, 12 of 21 configurations fail."


def test_a_different_seed_gives_the_same_verdicts(seed):
    a = check_conv(seed.SeedConv2D, per_axis=False, seed=0)
    b = check_conv(seed.SeedConv2D, per_axis=False, seed=7, shrink=False)
    assert [r.passed for r in a.results] == [r.passed for r in b.results]
    assert b.findings[0].smallest is b.findings[0].first


# ---------------------------------------------------------------------------------------------
# Grouping, shrinking and arguments
# ---------------------------------------------------------------------------------------------


def test_shrinking_keeps_the_tags_and_the_failure(broken):
    finding = check_conv(broken.NoDilation).findings[0]
    small, first = finding.smallest, finding.first
    assert small.case.size < first.case.size
    assert set(small.case.tags) - {"batch 1", "one channel"} == set(first.case.tags)
    assert small.signature() == first.signature()


def test_group_failures_on_made_up_results():
    cases = all_cases(2)[:10]

    def results(fail):
        out = []
        for i, case in enumerate(cases, 1):
            r = CaseResult(i, case)
            if fail(case):
                r.modified = ("x",)
            out.append(r)
        return out

    assert group_failures(results(lambda c: False)) == []
    assert [t for t, _ in group_failures(results(lambda c: True))] == ["all"]
    assert [t for t, _ in group_failures(results(lambda c: "padding 0" in c.tags))] == [
        "padding 0"]
    tags = [t for t, _ in group_failures(results(lambda c: c.in_size == (7, 7)))]
    assert tags == [None]
    assert [t for t, _ in group_failures(results(lambda c: c != cases[0]))] == ["except"]


def test_custom_cases_and_a_forward_only_layer(broken):
    report = check_conv(Layer(broken.NoDilation, backward=None), cases=all_cases(2)[7:9])
    assert report and [r.index for r in report.results] == [1, 2]
    assert "Left out" not in str(report)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"dilation": 1}, TypeError, "`dilation` must be True, False or None; got 1"),
    ({"cases": [1]}, TypeError, "`cases` must be a list of npconv.testing.Case"),
    ({"cases": []}, ValueError, r"`cases` must not be empty; got \[\]"),
    ({"seed": "0"}, TypeError, "`seed` must be an int; got '0'"),
    ({"rtol": -1.0}, ValueError, "`rtol` must be >= 0; got -1.0"),
    ({"atol": "1"}, TypeError, "`atol` must be a float; got '1'"),
    ({"max_stride": 0}, ValueError, "`max_stride` must be >= 1; got 0"),
    ({"data_format": "NCHW"}, ValueError, "`data_format` must be one of"),
])
def test_check_conv_errors(kwargs, error, match):
    with pytest.raises(error, match=match):
        check_conv(_forward, **kwargs)


def test_check_conv_rejects_layout_options_with_an_adapter():
    with pytest.raises(ValueError, match="pass backward, data_format and weight_layout"):
        check_conv(Functions(_forward), weight_layout="OIHW")
