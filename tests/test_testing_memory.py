"""npconv.testing memory checks: placements, out-of-bounds views, reads outside the arrays."""

import numpy as np
import pytest
from student_layers import load_example

from npconv.testing import Case, check_conv
from npconv.testing.memory import ViewWatch, overreach, place, poison_heap, watching


@pytest.fixture(scope="module")
def broken():
    return load_example("broken_convs.py")


@pytest.mark.parametrize("how", ["plain", "guarded", "strided"])
def test_placements_keep_values_shapes_and_dtypes(how):
    arrays = {"x": np.arange(24.0).reshape(2, 3, 4), "b": np.arange(3, dtype=np.float32)}
    placed = place(arrays, how, offset=5)
    for name, a in arrays.items():
        assert placed[name].dtype == a.dtype and placed[name].shape == a.shape
        np.testing.assert_array_equal(placed[name], a)
        assert not np.shares_memory(placed[name], a)
    x = placed["x"]
    assert x.flags.c_contiguous == (how != "strided")
    if how != "plain":
        assert np.isnan(x.base).sum() == x.base.size - x.size   # NaN around or between
    with pytest.raises(ValueError, match="`how` must be one of"):
        place(arrays, "scattered")


def test_overreach_measures_views_against_the_memory_block():
    a = np.zeros(10)
    assert overreach(a, (2, 5), (40, 8)) is None
    assert str(overreach(a, (3, 4), (32, 8))) == ("reaches 16 bytes past the end of its array "
                                                  "(80 bytes)")
    assert str(overreach(a[2:], (3,), (-24,))) == ("reaches 32 bytes before the start of its "
                                                   "array (80 bytes)")
    assert overreach(a[4:], (6,), (8,)) is None                 # a view within the same block
    assert overreach(a, (0, 5), (800, 8)) is None               # empty: reads nothing
    assert overreach(np.frombuffer(b"12345678" * 4), (8,), (8,)) is None   # unknown block


def test_an_overreaching_view_is_reported_and_reads_nan_outside():
    notes = []
    watch = ViewWatch(notes.append)
    a = np.arange(10.0)
    v = watch.checked(a, (3, 4), (32, 8))
    np.testing.assert_array_equal(v[2], [8, 9, np.nan, np.nan])
    assert not v.flags.writeable
    (note,) = notes
    assert note.startswith("an as_strided view made at test_testing_memory.py:")
    assert note.endswith(" in test_an_overreaching_view_is_reported_and_reads_nan_outside "
                         "reaches 16 bytes past the end of its array (80 bytes)")
    fine = watch.checked(a, (2, 5), (40, 8), writeable=True)
    assert fine.flags.writeable and len(notes) == 1
    ints = watch.checked(np.arange(4), (5,), (8,))
    assert list(ints[:4]) == [0, 1, 2, 3] and ints[4] == -1      # 0xFF bytes outside


def test_the_watch_reaches_names_imported_from_stride_tricks():
    from numpy.lib.stride_tricks import as_strided

    space = {"as_strided": as_strided, "other": len}
    notes = []
    with watching(notes.append, [space]):
        assert space["as_strided"] is not as_strided
        space["as_strided"](np.zeros(3), (4,), (8,))
        np.lib.stride_tricks.as_strided(np.zeros(3), (4,), (8,))
    assert space["as_strided"] is as_strided and np.lib.stride_tricks.as_strided is as_strided
    assert len(notes) == 2


def test_poison_heap_fills_freed_memory():
    poison_heap(4096, 7.0)
    poison_heap(64)                                             # NaN, small sizes: no error


def test_a_read_past_the_end_is_found_by_its_view(broken):
    """The seed answer's kind of bug: dx by as_strided windows of a dy buffer that lacks the
    width's remainder; with padding 0 what lies past its end reaches dx."""
    case = Case(1, 1, 1, (4, 8), (4, 4), (1, 3), ((0, 0), (0, 0)), (1, 1))
    report = check_conv(broken.RemainderFromHeight, cases=[case])
    result = report.results[0]
    assert {m.kind for m in result.memory} == {"view"}
    assert result.outputs["dx"].status == "not finite"
    words = " ".join(str(report).split())
    assert "an as_strided view made at broken_convs.py:" in words
    assert "reaches 8 bytes past the end of its array" in words
    assert "the NaN come from outside an array: the as_strided view reported above reads " \
           "there" in words


def test_the_fixed_sweep_flags_the_view_even_where_the_result_is_right(broken):
    report = check_conv(broken.RemainderFromHeight, random=0, isolate=False, shrink=False)
    failing = report.failures
    assert [r.index for r in failing] == [15, 19]               # 7x8 and 7x7 3x2, padding 1
    assert all(r.outputs["dx"].ok and r.memory[0].kind == "view" for r in failing)


def test_uninitialized_memory_shows_as_a_dependence_on_memory_outside_the_arrays():
    import student_layers

    class Uninitialized(student_layers.Im2col):
        def col2im(self, dcols):
            dxp = super().col2im(dcols)
            out = np.empty_like(dxp)                             # never written below
            out[:, :-1] = dxp[:, :-1]
            return out if dxp.shape[1] > 7 else dxp

    report = check_conv(Uninitialized, cases=[Case(1, 1, 1, (8, 8), (3, 3), (1, 1),
                                                   ((0, 0), (0, 0)), (1, 1))])
    (issue,) = report.results[0].memory
    assert issue.kind == "outside" and issue.output == "dx"
    assert issue.text.startswith("dx depends on memory outside your arrays: with the inputs "
                                 "inside buffers of NaN (and freed memory filled with NaN), "
                                 "it has NaN at ")



@pytest.mark.parametrize("isolate", [False, True])
def test_a_buffer_the_code_did_not_fill_reads_nan_whatever_the_allocator_hands_back(isolate):
    """Before the fix: np.empty got back the block the code had just freed (the same on every
    run, whatever was poisoned before), so dx came out deterministically wrong, not "depends on
    memory outside your arrays"; in the whole suite the mutation UninitializedBuffer flickered
    between the two."""
    import student_layers

    class ReusesAFreedBlock(student_layers.Im2col):
        def col2im(self, dcols):
            shape = (self.x_shape[0], self.x_shape[1] + 2, self.x_shape[2] + 2, self.x_shape[3])
            scratch = np.full(shape, 7.0)                        # (N, H + 2, W + 2, C)
            del scratch                                          # np.empty hands it back
            dxp = np.empty(shape)                                # not zeroed
            dxp += super().col2im(dcols)
            return dxp

    case = Case(1, 1, 1, (3, 3), (3, 3), (1, 1), ((1, 1), (1, 1)), (1, 1))
    report = check_conv(ReusesAFreedBlock, cases=[case], isolate=isolate)
    result = report.results[0]
    assert [(m.kind, m.output) for m in result.memory] == [("outside", "dx")]
    assert "dx depends on memory outside your arrays" in " ".join(str(report).split())


def test_filled_empty_fills_float_arrays_and_restores_numpy():
    from npconv.testing.memory import filled_empty

    space = {"empty": np.empty, "empty_like": np.empty_like, "np": np}
    original = np.empty
    with filled_empty(np.nan, [space]):
        assert np.isnan(np.empty((2, 3))).all() and np.isnan(space["empty"](4)).all()
        assert np.isnan(space["empty_like"](np.zeros(2))).all()
        assert np.empty(3, dtype=np.int64).dtype == np.int64       # other dtypes: as they are
    assert np.empty is original
    assert space["empty"] is np.empty and space["empty_like"] is np.empty_like

def test_strides_computed_from_the_shape_show_as_a_layout_dependence():
    def forward(x, w, b, stride, padding):
        _, h, wd, c = x.shape
        item = x.itemsize
        x = np.lib.stride_tricks.as_strided(x, x.shape, (h * wd * c * item, wd * c * item,
                                                         c * item, item))
        return np.einsum("nhwc,ijcf->nhwf", x, w) + b                 # 1x1 kernels only

    case = Case(2, 3, 2, (4, 4), (1, 1), (1, 1), ((0, 0), (0, 0)), (1, 1))
    result = check_conv(forward, cases=[case]).results[0]
    assert [m.kind for m in result.memory] == ["layout"]
    assert result.memory[0].text.startswith("y depends on how the inputs are laid out in memory")
    assert "strides computed from the shape" in result.memory[0].text
