"""When it fails: a feature is named only when it separates failing from passing
configurations, confirmed on configurations that vary it alone; otherwise the report says the
cause is a combination and shows the smallest failing case."""


import npconv
from npconv.testing import check_conv


def _forward(x, w, b, stride, padding):
    return npconv.conv(x, w, b, stride=stride, padding=padding)


def _backward_wrong_when(condition):
    """A backward whose dx is off by half when `condition(dy, x)` holds."""
    def backward(dy, x, w, stride, padding):
        dx, dw, db = npconv.conv_backward(dy, x, w, stride=stride, padding=padding)
        return (dx * 1.5 if condition(dy, x) else dx), dw, db
    return backward


def _explained(condition, **kwargs):
    report = check_conv(_forward, _backward_wrong_when(condition), isolate=False,
                        **{"random": 120, "random_seed": 0, **kwargs})
    return report, [(f.mode, f.tags) for f in report.findings]


def test_a_failure_that_needs_two_features_names_both_and_neither_alone():
    """The issue's case: a failure that needs a batch of 2 and a non-square dy. The features
    every failing configuration shares (padding, stride...) are not named."""
    report, found = _explained(lambda dy, x: dy.shape[0] > 1 and dy.shape[1] != dy.shape[2])
    assert found == [("tags", ("non-square output", "batch > 1"))]
    words = " ".join(str(report).split())
    assert "every configuration with both a non-square output and batch size > 1 fails" in words
    assert "neither alone does" in words
    assert report.findings[0].verified >= 3


def test_a_failure_no_feature_separates_is_called_a_combination():
    report, found = _explained(lambda dy, x: (7 * x.shape[1] + 3 * x.shape[2] + x.shape[3]) %
                               5 == 0, shrink=True)
    assert [mode for mode, _ in found] == ["combination"]
    words = " ".join(str(report).split())
    assert "no feature or pair of features separates these from the passing configurations; " \
           "the cause is a combination, see the smallest case below" in words
    small = report.findings[0].smallest.case
    assert (7 * small.in_size[0] + 3 * small.in_size[1] + small.in_channels) % 5 == 0
    assert small.size < report.findings[0].first.case.size


def _backward_wrong_with_stride(condition):
    """A backward whose dx is off by half when `condition(stride, dy)` holds."""
    def backward(dy, x, w, stride, padding):
        dx, dw, db = npconv.conv_backward(dy, x, w, stride=stride, padding=padding)
        return (dx * 1.5 if condition(stride, dy) else dx), dw, db
    return backward


def _effective(stride, dy):
    """The stride of the first axis when it matters (more than one output row)."""
    first = stride if isinstance(stride, int) else stride[0]
    return first if dy.shape[1] > 1 else 1


def test_a_data_dependent_failure_is_said_to_need_its_feature():
    """Wrong for stride > 1 when the first element of dy is positive: stride > 1 is needed,
    not enough."""
    report = check_conv(_forward, _backward_wrong_with_stride(
        lambda stride, dy: _effective(stride, dy) > 1 and dy[0, 0, 0, 0] > 0),
        isolate=False, random=120, random_seed=0, per_axis=False)
    assert [(f.mode, f.tags) for f in report.findings] == [("needs", ("stride > 1",))]
    assert "not every configuration with it fails (other features or the data matter too)" in \
        " ".join(str(report).split())


def test_a_feature_is_not_named_when_a_variation_contradicts_it():
    """Wrong for stride 3 only: every configuration with stride 3 fails, but the tag is
    "stride > 1", which configurations with stride 2 also have and pass; the check does not
    name stride > 1 as sufficient."""
    report = check_conv(_forward, _backward_wrong_with_stride(
        lambda stride, dy: _effective(stride, dy) == 3),
        isolate=False, random=80, random_seed=0, per_axis=False)
    found = [(f.mode, f.tags) for f in report.findings]
    assert found and ("tags", ("stride > 1",)) not in found
    assert all(mode != "tags" for mode, _ in found), found
