"""ONNX pooling semantics: npconv's pools against ONNX's own reference evaluator.

Single-node MaxPool, AveragePool, LpPool and GlobalMaxPool models (NCHW, explicit pads of any
size, dilations, ceil_mode, count_include_pad, integer inputs) run through
`onnx.reference.ReferenceEvaluator` and through npconv with the translated arguments. Skipped
where onnx is not installed; the pinned values below run everywhere.
"""

import numpy as np
import pytest
from helpers import rel_err

import npconv

CASES = [  # (op, attributes, input shape, dtype)
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2]), (1, 2, 5, 5), np.float32),
    ("MaxPool", dict(kernel_shape=[5, 5], pads=[2, 2, 2, 2]), (1, 1, 5, 5), np.uint8),
    ("MaxPool", dict(kernel_shape=[2, 3], strides=[2, 1], pads=[1, 0, 2, 3], dilations=[2, 1],
                     ceil_mode=1), (2, 3, 7, 6), np.float64),
    ("MaxPool", dict(kernel_shape=[3], strides=[2], pads=[2, 1]), (2, 2, 9), np.int32),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2]), (1, 3, 6, 6), np.float32),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2], count_include_pad=1),
     (1, 3, 6, 6), np.float32),
    ("AveragePool", dict(kernel_shape=[2, 2], dilations=[2, 2], ceil_mode=1), (1, 1, 4, 4),
     np.float32),
    ("AveragePool", dict(kernel_shape=[3, 2, 2], strides=[2, 1, 2], dilations=[1, 2, 2],
                         pads=[1, 0, 2, 0, 1, 1], count_include_pad=1), (1, 2, 6, 5, 6),
     np.float64),
    ("AveragePool", dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1,
                         count_include_pad=1), (1, 3, 2, 2), np.float32),
    ("LpPool", dict(kernel_shape=[3, 3], pads=[2, 2, 2, 2], p=2), (1, 2, 5, 5), np.float32),
    ("LpPool", dict(kernel_shape=[2, 2], dilations=[2, 2], p=3), (1, 2, 5, 6), np.float64),
    ("LpPool", dict(kernel_shape=[4], strides=[3], p=1), (2, 3, 11), np.float32),
    ("GlobalMaxPool", {}, (2, 3, 4, 5), np.float32),
    ("GlobalMaxPool", {}, (2, 3, 4, 5), np.int8),    # the evaluator reduces only 2 axes of 3-D
    ("GlobalAveragePool", {}, (2, 3, 4, 5), np.float64),
]


def onnx_run(op: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    pytest.importorskip("onnx")
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    elem = helper.np_dtype_to_tensor_dtype(x.dtype)
    node = helper.make_node(op, ["x"], ["y"], **attrs)
    graph = helper.make_graph([node], "pool", [helper.make_tensor_value_info("x", elem, None)],
                              [helper.make_tensor_value_info("y", elem, None)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
    return ReferenceEvaluator(model).run(None, {"x": x})[0]


def npconv_run(op: str, attrs: dict, x: np.ndarray) -> np.ndarray:
    """ONNX attributes in npconv's words: pads [b1, .., e1, ..] are (lo, hi) pairs, strides
    default to 1 (npconv's to the kernel), global pools keep their 1-sized axes."""
    fmt = "channels_first"
    if op.startswith("Global"):
        pool = npconv.global_max_pool if op == "GlobalMaxPool" else npconv.global_avg_pool
        return pool(x, data_format=fmt).reshape(*x.shape[:2], *(1,) * (x.ndim - 2))
    rank = x.ndim - 2
    pads = attrs.get("pads", [0] * 2 * rank)
    kw = dict(kernel_size=tuple(attrs["kernel_shape"]), stride=tuple(attrs.get("strides",
                                                                               [1] * rank)),
              padding=tuple(zip(pads[:rank], pads[rank:])),
              dilation=tuple(attrs.get("dilations", [1] * rank)),
              ceil_mode=bool(attrs.get("ceil_mode", 0)), data_format=fmt)
    if op == "MaxPool":
        return npconv.max_pool(x, **kw)
    if op == "LpPool":
        return npconv.lp_pool(x, attrs["p"], **kw)
    return npconv.avg_pool(x, **kw, count_include_pad=bool(attrs.get("count_include_pad", 0)))


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast")  # the evaluator's NaN pad
@pytest.mark.parametrize("op, attrs, shape, dtype", CASES)
def test_pools_match_onnx_reference_evaluator(op, attrs, shape, dtype):
    rng = np.random.default_rng(sum(shape))
    if dtype(0).dtype.kind == "f":
        x = rng.standard_normal(shape).astype(dtype)
    else:
        x = rng.integers(np.iinfo(dtype).min, np.iinfo(dtype).max, size=shape, dtype=dtype)
    expected = onnx_run(op, attrs, x)
    y = npconv_run(op, attrs, x)
    assert y.dtype == expected.dtype and y.shape == expected.shape
    assert rel_err(y, expected) < (1e-6 if x.dtype == np.float32 else 1e-12)


def test_onnx_backend_values_pinned():
    """Values of ONNX's backend node tests, checked without onnx: maxpool_2d_uint8 (pads wider
    than half the window) and averagepool_2d_ceil_last_window_starts_on_pad."""
    x = np.arange(1, 26, dtype=np.uint8).reshape(1, 1, 5, 5)
    y = npconv.max_pool(x, 5, stride=1, padding=2, data_format="channels_first")
    assert y.dtype == np.uint8
    np.testing.assert_array_equal(y[0, 0], [[13, 14, 15, 15, 15], [18, 19, 20, 20, 20],
                                            [23, 24, 25, 25, 25], [23, 24, 25, 25, 25],
                                            [23, 24, 25, 25, 25]])
    x = np.array([[[[0.8580, 0.0786], [0.2692, 0.1537]]]], dtype=np.float32)
    y = npconv.avg_pool(x, 3, stride=3, padding=1, ceil_mode=True, data_format="channels_first")
    assert abs(float(y.ravel()[0]) - 0.1511) < 1e-4                # (sum of 4) / 9 taps
