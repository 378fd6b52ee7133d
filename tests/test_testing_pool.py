"""npconv.testing.check_pool: hand-written max and average pooling, right and wrong.

The layers live in examples/broken_pools.py: a correct `MaxPool2D` and `AvgPool2D`, and copies
with one classic pooling bug each. The checker's right answers are npconv's pooling ops; here
they are also held against the naive loops of `npconv.reference` on every fixed case.
"""

import numpy as np
import pytest
from student_layers import load_example

import npconv
from npconv import reference
from npconv.testing import PoolCase, PoolOptions, check_pool
from npconv.testing.problems import expected, inputs

QUICK = {"random": 0, "isolate": False}


@pytest.fixture(scope="module")
def pools():
    return load_example("broken_pools.py")


def text(report) -> str:
    return " ".join(str(report).split())


@pytest.mark.parametrize("options", [
    PoolOptions(op="max"), PoolOptions(op="avg", count_include_pad=(True, False))])
def test_the_right_answers_are_the_reference_loops(options):
    for case in options.cases():
        data = inputs(case, 0)
        want = expected(case, data, bias=False)
        kw = {"stride": case.stride, "padding": case.pads, "ceil_mode": case.ceil_mode}
        if case.op == "max":
            y = reference.max_pool(data["x"], case.kernel_size, dilation=case.dilation, **kw)
            dx = reference.max_pool_backward(data["dy"], data["x"], case.kernel_size,
                                             dilation=case.dilation, **kw)
        else:
            kw["count_include_pad"] = case.count_include_pad
            y = reference.avg_pool(data["x"], case.kernel_size, **kw)
            dx = reference.avg_pool_backward(data["dy"], data["x"].shape, case.kernel_size, **kw)
        np.testing.assert_allclose(want["y"], y, rtol=1e-12, err_msg=case.describe())
        np.testing.assert_allclose(want["dx"], dx, rtol=1e-12, atol=1e-14,
                                   err_msg=case.describe())


def test_correct_pooling_layers_pass(pools):
    report = check_pool(pools.MaxPool2D, random=40, random_seed=2)
    assert report, report
    assert report.checks == ("y", "dx") and "(max pooling; channels_last x (N, H, W, C))" in \
        str(report)
    assert check_pool(pools.AvgPool2D, op="avg", random=40, random_seed=2)
    assert len(check_pool(pools.AvgPool2D, op="avg", **QUICK).options.count_include_pad) == 2
    report = check_pool(pools.max_pool_forward, pools.max_pool_backward,
                        data_format="channels_first", **QUICK)
    assert report, report
    assert "Left out: 7 configurations with padding (max_pool_forward takes no `padding` "\
           "argument)" in text(report)
    assert "stride != kernel size" not in text(report)          # pool_param has the stride


@pytest.mark.parametrize("name, op, mode, tag, output, cause, words", [
    ("TiesToAll", "max", "tags", "ties", "dx", "max-ties-all",
     "dx sends each window's gradient to every input that ties for the maximum"),
    ("OverlapsOverwrite", "max", ("needs", "tags"), "overlapping windows", "dx", "overlap-assigned",
     "overlapping windows overwrite each other's gradient"),
    ("ZeroPadded", "max", "needs", "padding > 0", "y", "max-zero-padding",
     "max pooling padded with zeros instead of -inf"),
    ("DropsCeilWindows", "max", "tags", "ceil_mode", "y", "ceil-windows-dropped",
     "the partial windows at the end that ceil_mode=True adds are dropped"),
    ("ReshapeTrick", "max", "tags", "overlapping windows", "y", "stride-is-kernel",
     "what windows at stride == kernel size"),
    ("DividesByInputTaps", "avg", "tags", "padding > 0", "y", "avg-divisor",
     "y divides each window by the taps inside the input only (count_include_pad=False"),
    ("NotDivided", "avg", "unless", "1x1 kernel", "dx", "avg-not-divided",
     "dx spreads dy over each window without dividing it"),
    ("FullWindowDivisor", "avg", "tags", "ceil_mode", "y", "avg-divisor-full",
     "y divides every window by its full size"),
])
def test_each_known_pooling_bug_is_caught_and_named(pools, name, op, mode, tag, output, cause,
                                                    words):
    report = check_pool(getattr(pools, name), op=op, random=30, random_seed=0, isolate=False)
    assert not report
    modes = mode if isinstance(mode, tuple) else (mode,)
    found = [(f.mode, f.tags) for f in report.findings]
    assert any(m in modes and (not tags or tags == (tag,)) for m, tags in found), found
    causes = {c for r in report.failures + [f.smallest for f in report.findings]
              for c in r.outputs.get(output, None).causes if output in r.outputs}
    assert cause in causes
    assert words in text(report)



def test_the_reshape_trick_is_named_only_when_y_has_its_values(pools):
    """Before the fix, the shape alone named it: a layer that uses the first kernel size for
    both axes gives y (1, 1, 1, 1) for a 4x4 input and a 4x3 kernel, the shape of 4x3 blocks,
    and was told it pooled by reshaping into blocks."""

    class FirstKernelSize(pools.MaxPool2D):
        def __init__(self, kernel_size, stride=None, padding=0, dilation=1, ceil_mode=False):
            super().__init__(kernel_size[0], stride, padding, dilation, ceil_mode)

    case = PoolCase("max", 1, 1, (4, 4), (4, 3), (1, 1), ((0, 0), (0, 0)), (1, 1))
    report = check_pool(FirstKernelSize, cases=[case], isolate=False)
    y = report.results[0].outputs["y"]
    assert y.status == "shape" and "stride-is-kernel" not in y.causes
    assert "stride == kernel size" not in text(report)
    report = check_pool(pools.ReshapeTrick, cases=[case], isolate=False)
    assert "stride-is-kernel" in report.results[0].outputs["y"].causes

def test_the_overwrite_bug_passes_where_windows_tile_the_input(pools):
    tiles = [c for c in PoolOptions(op="max").cases() if "stride == kernel" in c.tags]
    report = check_pool(pools.OverlapsOverwrite, cases=tiles, isolate=False)
    assert report and len(tiles) >= 5                          # what most test suites try


def test_a_layer_meaning_keras_divisors_passes_when_told(pools):
    assert check_pool(pools.DividesByInputTaps, op="avg", count_include_pad=False, **QUICK)


def test_the_shrunk_case_keeps_the_feature(pools):
    finding = check_pool(pools.TiesToAll, random=0, isolate=False).findings[0]
    assert "ties" in finding.smallest.case.tags
    assert finding.smallest.case.x_shape < finding.first.case.x_shape


def test_pool_cases_and_rank_1():
    def forward(x, kernel_size, stride, padding):
        return npconv.avg_pool(x, kernel_size, stride=stride, padding=padding)

    def backward(dy, x, kernel_size, stride, padding):
        return npconv.avg_pool_backward(dy, x.shape, kernel_size, stride=stride,
                                        padding=padding)

    assert check_pool(forward, backward, op="avg", rank=1, random=10, random_seed=0,
                      isolate=False)
    case = PoolCase("avg", 1, 1, (5,), (3,), (2,), ((1, 1),), (1,))
    assert check_pool(forward, backward, op="avg", cases=[case], isolate=False)


@pytest.mark.parametrize("kwargs, error, match", [
    ({"op": "min"}, ValueError, "`op` must be one of"),
    ({"count_include_pad": "yes"}, TypeError, "`count_include_pad` must be True, False or "
                                              "None; got 'yes'"),
    ({"cases": [1]}, TypeError, "`cases` must be a list of npconv.testing.PoolCase"),
    ({"ceil_mode": 0}, TypeError, "`ceil_mode` must be True, False or None; got 0"),
])
def test_check_pool_errors(pools, kwargs, error, match):
    with pytest.raises(error, match=match):
        check_pool(pools.MaxPool2D, **kwargs)
