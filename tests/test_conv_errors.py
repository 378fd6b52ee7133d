"""Every rejected input gives a TypeError or ValueError that names the argument and shows what
was expected and what was received; never an IndexError, AssertionError or a wrong shape."""

import numpy as np
import pytest

import npconv


def _dask_array():
    da = pytest.importorskip("dask.array")
    return da.zeros((2, 5, 5, 4))


X = np.zeros((2, 5, 5, 4))          # (N, H, W, C) channels_last
W = np.zeros((3, 3, 4, 6))          # (kh, kw, C, F)
DY = np.zeros((2, 3, 3, 6))         # conv(X, W) output
XT = np.zeros((2, 3, 3, 4))         # transposed-conv input
WT = np.zeros((3, 3, 2, 4))         # (kh, kw, F/G, C) transposed-conv weight

CASES = [
    # (description, call, exception, match)
    ("x is a list", lambda: npconv.conv(X.tolist(), W), TypeError, r"`x` must be a numpy.ndarray; got list"),
    ("w is a scalar", lambda: npconv.conv(X, 1.0), TypeError, r"`w` must be a numpy.ndarray; got float"),
    ("integer x", lambda: npconv.conv(X.astype(int), W), TypeError, r"`x` must have dtype float16, float32 or float64; got dtype int64"),
    ("bool w", lambda: npconv.conv(X, W > 0), TypeError, r"`w` must have dtype .* got dtype bool"),
    ("complex x", lambda: npconv.conv(X.astype(complex), W), TypeError, r"`x` must have dtype .* complex128"),
    ("object x", lambda: npconv.conv(X.astype(object), W), TypeError, r"`x` must have dtype .* object"),
    ("clip not a pair", lambda: npconv.conv(X, W, clip=0), TypeError, r"`clip` must be None or a pair \(lo, hi\) of numbers or None; got 0"),
    ("clip bound a string", lambda: npconv.conv(X, W, clip=(0, "6")), TypeError, r"`clip` hi must be a real number or None; got '6'"),
    ("clip bound NaN", lambda: npconv.conv(X, W, clip=(np.nan, None)), ValueError, r"`clip` lo must not be NaN"),
    ("x rank 2", lambda: npconv.conv(X[0, 0], W), ValueError, r"`x` must have at least 3 dimensions .* got shape \(5, 4\)"),
    ("w rank mismatch", lambda: npconv.conv(X, W[0]), ValueError, r"`w` must have 4 dimensions \(\*K, C/groups, F\) to match `x` of shape \(2, 5, 5, 4\); got shape \(3, 4, 6\)"),
    ("w rank mismatch, channels_first", lambda: npconv.conv(X, W[0], data_format="channels_first"), ValueError, r"\(F, C/groups, \*K\)"),
    ("channel mismatch", lambda: npconv.conv(X, np.zeros((3, 3, 3, 6))), ValueError, r"channel mismatch: in_channels=4 with groups=1 needs a weight with 4 channels per group; got 3"),
    ("groups not dividing C", lambda: npconv.conv(X, np.zeros((3, 3, 1, 6)), groups=3), ValueError, r"`groups` must divide in_channels and out_channels; got groups=3, in_channels=4, out_channels=6"),
    ("groups not dividing F", lambda: npconv.conv(X, np.zeros((3, 3, 1, 6)), groups=4), ValueError, r"got groups=4, in_channels=4, out_channels=6"),
    ("groups zero", lambda: npconv.conv(X, W, groups=0), ValueError, r"`groups` must be >= 1; got 0"),
    ("groups float", lambda: npconv.conv(X, W, groups=1.0), TypeError, r"`groups` must be an int; got 1.0"),
    ("stride 0", lambda: npconv.conv(X, W, stride=0), ValueError, r"`stride` must be >= 1 in every dimension; got 0"),
    ("stride wrong length", lambda: npconv.conv(X, W, stride=(1, 2, 3)), TypeError, r"`stride` must be an int or a tuple of 2 ints; got \(1, 2, 3\)"),
    ("stride bool", lambda: npconv.conv(X, W, stride=True), TypeError, r"`stride` must be an int or a tuple of 2 ints; got True"),
    ("dilation negative", lambda: npconv.conv(X, W, dilation=(1, -1)), ValueError, r"`dilation` must be >= 1 in every dimension; got \(1, -1\)"),
    ("negative padding", lambda: npconv.conv(X, W, padding=-1), ValueError, r"`padding` must be >= 0; got -1"),
    ("negative pair", lambda: npconv.conv(X, W, padding=((0, -1), (1, 1))), ValueError, r"`padding` must be >= 0; got \(\(0, -1\), \(1, 1\)\)"),
    ("padding wrong form", lambda: npconv.conv(X, W, padding=(1, 2, 3)), TypeError, r"`padding` must be an int, a tuple of 2 ints, a tuple of 2 \(lo, hi\) pairs, 'valid', 'same' or 'full'; got \(1, 2, 3\)"),
    ("unknown padding string", lambda: npconv.conv(X, W, padding="SAME"), ValueError, r"`padding` must be one of \('valid', 'same', 'full'\); got 'SAME'"),
    ("unknown data_format", lambda: npconv.conv(X, W, data_format="NHWC"), ValueError, r"`data_format` must be one of \('channels_last', 'channels_first'\); got 'NHWC'"),
    ("unknown padding_mode", lambda: npconv.conv(X, W, padding_mode="mirror"), ValueError, r"`padding_mode` must be one of \('zeros', 'reflect', 'replicate', 'circular'\); got 'mirror'"),
    ("reflect padding >= size", lambda: npconv.conv(X, W, padding=5, padding_mode="reflect"), ValueError, r"reflect padding must be < the input size in every dimension; got padding \(5, 5\) for input size 5"),
    ("circular padding > size", lambda: npconv.conv(X, W, padding=6, padding_mode="circular"), ValueError, r"circular padding must be <= the input size .* got padding \(6, 6\) for input size 5"),
    ("output size < 1", lambda: npconv.conv(X, np.zeros((7, 3, 4, 6))), ValueError, r"output size must be >= 1; got output size \(-1, 3\) from input size \(5, 5\), kernel size \(7, 3\)"),
    ("dilated kernel too big", lambda: npconv.conv(X, W, dilation=3), ValueError, r"output size must be >= 1"),
    ("bias wrong shape", lambda: npconv.conv(X, W, np.zeros(4)), ValueError, r"`bias` must have shape \(6,\); got \(4,\)"),
    ("bias not an array", lambda: npconv.conv(X, W, [0.0] * 6), TypeError, r"`bias` must be a numpy.ndarray; got list"),
    ("dy wrong shape", lambda: npconv.conv_backward(DY[:, :2], X, W), ValueError, r"`dy` must have shape \(2, 3, 3, 6\); got \(2, 2, 3, 6\)"),
    ("dy wrong layout", lambda: npconv.conv_backward(DY, X, W, data_format="channels_first"), ValueError, r"channel mismatch|`dy` must have shape"),
    ("dy not an array", lambda: npconv.conv_backward(None, X, W), TypeError, r"`dy` must be a numpy.ndarray; got NoneType"),
    ("bias of the wrong shape", lambda: npconv.conv_backward(DY, X, W, np.zeros(5)), ValueError, r"`bias` must have shape \(6,\); got \(5,\)"),
    ("bias not an array", lambda: npconv.conv_backward(DY, X, W, bias=[0.0] * 6), TypeError, r"`bias` must be the bias array of shape \(6,\), None, True or False; got list"),
    ("x_shape not a tuple", lambda: npconv.conv_grad_input(DY, W, X), TypeError, r"`x_shape` must be a tuple of ints; got array"),
    ("x_shape negative", lambda: npconv.conv_grad_input(DY, W, (2, -5, 5, 4)), ValueError, r"`x_shape` must have sizes >= 0"),
    ("w_shape wrong", lambda: npconv.conv_grad_weight(DY, X, (3, 3, 4)), ValueError, r"`w_shape` must have 4 dimensions"),
    ("x_shape wrong rank", lambda: npconv.conv_grad_input(DY, W, (2, 5, 5)), ValueError, r"`w` must have 3 dimensions \(\*K, C/groups, F\) to match `x_shape` of shape \(2, 5, 5\)"),
    ("x_shape rank 2", lambda: npconv.conv_grad_input(DY, W, (2, 5)), ValueError, r"`x_shape` must have at least 3 dimensions"),
    ("transpose padding array", lambda: npconv.conv_transpose(XT, WT, padding=np.array([1, 1])), TypeError, r"`padding` must be an int, a tuple of 2 ints, .* got array\(\[1, 1\]\)"),
    ("padding array", lambda: npconv.conv(X, W, padding=np.array([1, 1])), TypeError, r"`padding` must be an int, a tuple of 2 ints"),
    ("huge padding", lambda: npconv.conv(X, W, padding=2**62), ValueError, r"sizes too large: the padded input would have shape \(2, 9223372036854775813, 9223372036854775813, 4\)"),
    ("huge transpose stride", lambda: npconv.conv_transpose(XT, WT, stride=2**62), ValueError, r"sizes too large: the output would have shape"),
    ("dask x", lambda: npconv.conv(_dask_array(), W), TypeError, r"`x` is a dask array: call npconv.dask.conv"),
    ("grad_input dy shape", lambda: npconv.conv_grad_input(DY, W, (2, 6, 6, 4)), ValueError, r"`dy` must have shape \(2, 4, 4, 6\); got \(2, 3, 3, 6\)"),
    ("output_padding >= stride", lambda: npconv.conv_transpose(XT, WT, stride=2, output_padding=2), ValueError, r"`output_padding` must be >= 0 and < max\(stride, dilation\) in every dimension; got output_padding=2, stride=\(2, 2\), dilation=\(1, 1\)"),
    ("output_padding negative", lambda: npconv.conv_transpose(XT, WT, stride=2, output_padding=-1), ValueError, r"`output_padding` must be >= 0"),
    ("transpose weight channels", lambda: npconv.conv_transpose(XT, np.zeros((3, 3, 2, 5))), ValueError, r"channel mismatch: a transposed-convolution weight must have in_channels=4 .* got weight shape \(3, 3, 2, 5\)"),
    ("transpose groups", lambda: npconv.conv_transpose(XT, WT, groups=3), ValueError, r"`groups` must be >= 1 and divide in_channels; got groups=3, in_channels=4"),
    ("transpose output < 1", lambda: npconv.conv_transpose(XT[:, :1, :1], WT, padding=2), ValueError, r"output size must be >= 1; got output size \(-1, -1\)"),
    ("transpose bias", lambda: npconv.conv_transpose(XT, WT, np.zeros(4)), ValueError, r"`bias` must have shape \(2,\); got \(4,\)"),
    ("transpose dy", lambda: npconv.conv_transpose_backward(XT, XT, WT), ValueError, r"`dy` must have shape \(2, 5, 5, 2\); got \(2, 3, 3, 4\)"),
    ("kernel size 0", lambda: npconv.conv(X, np.zeros((0, 3, 4, 6))), ValueError, r"`w` must have a kernel size >= 1; got shape \(0, 3, 4, 6\)"),
]


@pytest.mark.parametrize("call, exc, match", [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_input_is_rejected_with_a_clear_message(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_reflect_at_size_minus_one_is_accepted():
    assert npconv.conv(X, W, padding=4, padding_mode="reflect").shape == (2, 11, 11, 6)
    assert npconv.conv(X, W, padding=5, padding_mode="circular").shape == (2, 13, 13, 6)


def test_a_non_string_option_is_a_type_error():
    with pytest.raises(TypeError, match=r"`data_format` must be one of .* got 1"):
        npconv.conv(X, W, data_format=1)
    with pytest.raises(TypeError, match=r"`padding_mode` must be one of .* got None"):
        npconv.conv(X, W, padding_mode=None)
