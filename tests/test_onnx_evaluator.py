"""`npconv.onnx.Evaluator` and `npconv.onnx.ops`: ONNX's attribute semantics beyond the backend
node tests, checked against the operators' definitions, onnxruntime and ONNX's own evaluator;
delegation to ONNX's classes; dtypes; errors."""

import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto  # noqa: E402
from onnx import helper as oh  # noqa: E402
from onnx.reference import ReferenceEvaluator  # noqa: E402
from onnx.reference.op_run import OpRun  # noqa: E402

from npconv.onnx import Evaluator, ops  # noqa: E402


def node_model(op, inputs, outputs=1, *, opset=22, **attrs):
    """A one-node model: inputs I0, I1, ... (arrays, their dtypes and shapes) -> O0, O1, ..."""
    names = [f"I{i}" for i in range(len(inputs))]
    ins = [oh.make_tensor_value_info(n, oh.np_dtype_to_tensor_dtype(x.dtype), x.shape)
           for n, x in zip(names, inputs)]
    dtype = oh.np_dtype_to_tensor_dtype(inputs[0].dtype)
    outs = [oh.make_tensor_value_info(
        f"O{i}", TensorProto.INT64 if i and op == "MaxPool" else dtype, None)
        for i in range(outputs)]
    node = oh.make_node(op, names, [o.name for o in outs], name="node", **attrs)
    graph = oh.make_graph([node], "g", ins, outs)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def run(model, inputs, evaluator=Evaluator):
    ev = evaluator(model)
    out = ev.run(None, {f"I{i}": x for i, x in enumerate(inputs)})
    if evaluator is Evaluator:
        assert ev.delegated == {}
    return out


def run_ort(model, inputs):
    ort = pytest.importorskip("onnxruntime")
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, {f"I{i}": x for i, x in enumerate(inputs)})


# ---------------------------------------------------------------------------------------------
# Conv and the pools: auto_pad, asymmetric pads, ceil_mode, against onnxruntime
# ---------------------------------------------------------------------------------------------

CONV_CASES = [
    dict(auto_pad="SAME_UPPER", strides=[2, 3]),
    dict(auto_pad="SAME_LOWER", strides=[2, 1]),
    dict(auto_pad="SAME_LOWER", strides=[1, 1]),
    dict(auto_pad="VALID", strides=[2, 2], group=2),
    dict(pads=[0, 2, 1, 0], strides=[1, 2], dilations=[1, 2]),
    dict(pads=[2, 1, 0, 3], group=4),
]


@pytest.mark.parametrize("attrs", CONV_CASES)
def test_conv_matches_onnxruntime(rng, attrs):
    x = rng.normal(size=(2, 4, 9, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4 // attrs.get("group", 1), 3, 2)).astype(np.float32)
    b = rng.normal(size=8).astype(np.float32)
    model = node_model("Conv", [x, w, b], **attrs)
    (got,), (want,) = run(model, [x, w, b]), run_ort(model, [x, w, b])
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_a_batch_of_one_image_per_worker_runs_as_a_network_pass(rng, monkeypatch):
    """As a Module's forward (`npconv._chunks.network_pass`): a batch of at least one image
    per worker runs every convolution of the run but the smallest on the workers."""
    import npconv
    from npconv import _chunks, _config

    seen, conv = [], ops.conv

    def probe(*args, **kwargs):
        seen.append(_config.current().tuning.min_parallel_bytes)
        return conv(*args, **kwargs)

    monkeypatch.setattr(ops, "conv", probe)
    x = rng.normal(size=(2, 4, 9, 8)).astype(np.float32)
    w = rng.normal(size=(8, 4, 3, 2)).astype(np.float32)
    model = node_model("Conv", [x, w])
    default, in_pass = _config.current().tuning.min_parallel_bytes, _chunks.PASS_SERIAL_BYTES
    for threads, batch, expected in ((2, x, in_pass), (2, x[:1], default), (3, x, default)):
        with npconv.config(threads=threads):
            run(model, [batch, w])
        assert seen.pop() == expected, (threads, batch.shape)


def test_same_pads_put_the_odd_pixel_at_the_end_or_start():
    assert ops.conv_pads("SAME_UPPER", None, (5,), (4,), (1,), (1,)) == ((1, 2),)
    assert ops.conv_pads("SAME_LOWER", None, (5,), (4,), (1,), (1,)) == ((2, 1),)
    # P = ceil(7 / 3) = 3 windows of extent 2 * (3 - 1) + 1 = 5: (3 - 1) * 3 + 5 - 7 = 4
    assert ops.conv_pads("SAME_UPPER", None, (7,), (3,), (3,), (2,)) == ((2, 2),)
    assert ops.conv_pads("SAME_UPPER", None, (6,), (1,), (4,), (1,)) == ((0, 0),)  # never < 0
    assert ops.conv_pads("VALID", [1, 1], (6,), (3,), (1,), (1,)) == ((0, 0),)
    assert ops.conv_pads(b"NOTSET", [1, 2], (6,), (3,), (1,), (1,)) == ((1, 2),)


POOL_CASES = [
    ("MaxPool", dict(kernel_shape=[3, 2], auto_pad="SAME_LOWER", strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[2, 3], auto_pad="VALID", strides=[2, 2])),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 0, 1, 1], strides=[2, 2], ceil_mode=1)),
    ("AveragePool", dict(kernel_shape=[3, 2], auto_pad="SAME_LOWER", strides=[2, 2])),
    ("AveragePool", dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 0, 1, 1], strides=[2, 2], ceil_mode=1,
                         count_include_pad=1)),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[1, 1, 0, 1], strides=[2, 3], ceil_mode=1)),
]


@pytest.mark.parametrize(("op", "attrs"), POOL_CASES)
def test_pools_match_onnxruntime(rng, op, attrs):
    x = rng.normal(size=(2, 3, 9, 8)).astype(np.float32)
    model = node_model(op, [x], **attrs)
    (got,), (want,) = run(model, [x]), run_ort(model, [x])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("storage_order", [0, 1])
@pytest.mark.parametrize(("shape", "attrs"), [
    ((2, 3, 7, 6), dict(kernel_shape=[3, 2], strides=[2, 2], pads=[1, 0, 1, 1])),
    ((2, 2, 5, 6, 4), dict(kernel_shape=[2, 3, 2], strides=[2, 2, 1], dilations=[1, 1, 2])),
    ((3, 2, 9), dict(kernel_shape=[3], strides=[2], auto_pad="SAME_UPPER")),
])
def test_max_pool_indices_match_onnxruntime(rng, shape, attrs, storage_order):
    x = rng.normal(size=shape).astype(np.float32)
    model = node_model("MaxPool", [x], outputs=2, storage_order=storage_order, **attrs)
    got, want = run(model, [x]), run_ort(model, [x])
    np.testing.assert_array_equal(got[0], want[0])
    assert got[1].dtype == np.int64
    np.testing.assert_array_equal(got[1], want[1])
    np.testing.assert_array_equal(x.reshape(-1)[got[1]] if storage_order == 0 else got[0],
                                  got[0])


def test_max_pool_column_major_indices_by_hand():
    x = np.array([[[[1.0, 9.0, 2.0], [3.0, 4.0, 8.0]]]])           # (1, 1, 2, 3), max at (0, 1)
    y, i = ops.max_pool(x, kernel_shape=[2, 2], storage_order=1, indices=True)
    np.testing.assert_array_equal(y[0, 0], [[9.0, 9.0]])
    # the maxima at (h, w) = (0, 1) twice: column-major h + w * H = 0 + 1 * 2
    np.testing.assert_array_equal(i[0, 0], [[2, 2]])


def test_auto_pad_output_sizes_follow_the_doc_whatever_ceil_mode():
    """SAME_*: P = ceil(S / stride), with the dilated kernel in the padding (onnxruntime
    leaves the dilation out); VALID: P = floor((S - eff) / stride) + 1, which is also the doc's
    ceil_mode formula ceil((S - eff + 1) / stride) (onnxruntime rounds up instead)."""
    x = np.arange(2 * 9 * 8, dtype=np.float64).reshape(1, 2, 9, 8)
    y = ops.max_pool(x, kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2],
                     dilations=[1, 2])
    assert y.shape == (1, 2, 5, 4)
    # width: eff 5, total (4 - 1) * 2 + 5 - 8 = 3, pads (1, 2): window 0 reads columns -1, 1, 3
    np.testing.assert_array_equal(y[0, 0, 0, 0], x[0, 0, 1, 3])
    for ceil_mode in (0, 1):
        y = ops.average_pool(x, kernel_shape=[2, 3], auto_pad="VALID", strides=[2, 2],
                             ceil_mode=ceil_mode)
        assert y.shape == (1, 2, 4, 3)                             # ceil(8 / 2), ceil(6 / 2)


def test_global_average_pool_keeps_the_spatial_axes(rng):
    x = rng.normal(size=(2, 3, 4, 5, 2))
    y = ops.global_average_pool(x)
    assert y.shape == (2, 3, 1, 1, 1)
    np.testing.assert_allclose(y[..., 0, 0, 0], x.mean(axis=(2, 3, 4)), rtol=1e-13)


# ---------------------------------------------------------------------------------------------
# ConvTranspose: against its definition (a scatter from the operator doc) and onnxruntime
# ---------------------------------------------------------------------------------------------


def conv_transpose_by_definition(x, w, b, *, strides, dilations, group, pads, out_size):
    """y[n, f, o] = b[f] + sum of x[n, c, i] * w[c, f % (F / G), k] over the c of f's group and
    the (i, k) with i * stride + k * dilation - pads_begin = o, for o in [0, out_size)."""
    n, c, *s = x.shape
    fg, k = w.shape[1], w.shape[2:]
    y = np.zeros((n, fg * group, *out_size)) + b.reshape(-1, 1, 1)
    cg = c // group
    for g in range(group):
        xs, ws = x[:, g * cg:(g + 1) * cg], w[g * cg:(g + 1) * cg]
        for i in np.ndindex(*s):
            for kk in np.ndindex(*k):
                o = [ii * st + ki * d - lo for ii, ki, st, d, lo in
                     zip(i, kk, strides, dilations, pads)]
                if all(0 <= oo < size for oo, size in zip(o, out_size)):
                    y[(slice(None), slice(g * fg, (g + 1) * fg), *o)] += (
                        xs[(slice(None), slice(None), *i)] @ ws[(slice(None), slice(None), *kk)])
    return y


CONV_TRANSPOSE_CASES = [
    dict(strides=[2, 3], pads=[1, 0, 2, 1], output_padding=[1, 2]),
    dict(strides=[2, 1], dilations=[1, 2], group=2, pads=[0, 1, 0, 0]),
    dict(strides=[3, 2], output_shape=[11, 9]),                    # total < 0: extends the end
    dict(strides=[2, 2], output_shape=[6, 7], output_padding=[1, 0]),
    dict(strides=[2, 2], auto_pad="SAME_UPPER"),
    dict(strides=[2, 3], auto_pad="SAME_LOWER", output_padding=[1, 1]),
    dict(strides=[1, 2], auto_pad="VALID", pads=[3, 3, 3, 3]),    # VALID ignores pads
]


@pytest.mark.parametrize("attrs", CONV_TRANSPOSE_CASES)
def test_conv_transpose_matches_its_definition(rng, attrs):
    group = attrs.get("group", 1)
    x = rng.normal(size=(2, 4, 3, 4))
    w = rng.normal(size=(4, 3, 3, 2))
    b = rng.normal(size=3 * group)
    model = node_model("ConvTranspose", [x, w, b], **attrs)
    (got,) = run(model, [x, w, b])
    out, crops = ops.conv_transpose_geometry(x.shape[2:], w.shape[2:], **{
        k: v for k, v in attrs.items() if k != "group"})
    want = conv_transpose_by_definition(
        x, w, b, strides=attrs["strides"], dilations=attrs.get("dilations", [1, 1]),
        group=group, pads=[lo for lo, _ in crops], out_size=out)
    assert got.shape == (2, 3 * group, *out)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
    if "output_shape" in attrs:
        assert list(out) == attrs["output_shape"]


@pytest.mark.parametrize("attrs", CONV_TRANSPOSE_CASES[:2] + CONV_TRANSPOSE_CASES[3:-1])
def test_conv_transpose_matches_onnxruntime(rng, attrs):
    group = attrs.get("group", 1)
    x = rng.normal(size=(2, 4, 3, 4)).astype(np.float32)
    w = rng.normal(size=(4, 3, 3, 2)).astype(np.float32)
    b = rng.normal(size=3 * group).astype(np.float32)
    model = node_model("ConvTranspose", [x, w, b], **attrs)
    (got,), (want,) = run(model, [x, w, b]), run_ort(model, [x, w, b])
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_conv_transpose_geometry_splits_as_the_doc_says():
    # T = 2 * (4 - 1) + 3 = 9 rows; output_shape 6 with output_padding 1: total = 4
    assert ops.conv_transpose_geometry((4,), (3,), strides=(2,), output_shape=(6,),
                                       output_padding=(1,)) == ((6,), ((2, 1),))
    assert ops.conv_transpose_geometry((4,), (3,), strides=(2,), output_shape=(6,),
                                       output_padding=(1,), auto_pad="SAME_UPPER") == \
        ((6,), ((2, 1),))
    # total = 9 - 8 = 1: SAME_UPPER puts the odd row at the end, SAME_LOWER at the start
    assert ops.conv_transpose_geometry((4,), (3,), strides=(2,), auto_pad="SAME_UPPER") == \
        ((8,), ((0, 1),))
    assert ops.conv_transpose_geometry((4,), (3,), strides=(2,), auto_pad="SAME_LOWER") == \
        ((8,), ((1, 0),))
    # output_shape may carry N and C: only its spatial tail counts
    assert ops.conv_transpose_geometry((4,), (3,), strides=(2,), output_shape=(1, 2, 9))[0] == \
        (9,)


# ---------------------------------------------------------------------------------------------
# BatchNormalization
# ---------------------------------------------------------------------------------------------


def bn_inputs(rng, dtype=np.float32, shape=(3, 4, 5, 2)):
    x = rng.normal(size=shape).astype(dtype)
    c = shape[1]
    scale, bias, mean = (rng.normal(size=c).astype(dtype) for _ in range(3))
    var = rng.uniform(0.5, 2.0, size=c).astype(dtype)
    return [x, scale, bias, mean, var]


@pytest.mark.parametrize("opset", [7, 9, 14, 15])
def test_batch_norm_inference_in_every_opset(rng, opset):
    inputs = bn_inputs(rng, np.float64)
    x, scale, bias, mean, var = inputs
    (got,) = run(node_model("BatchNormalization", inputs, opset=opset, epsilon=1e-3), inputs)
    c, eps = (1, -1, 1, 1), float(np.float32(1e-3))               # float attributes are float32
    want = (x - mean.reshape(c)) / np.sqrt(var.reshape(c) + eps) * scale.reshape(c) + \
        bias.reshape(c)
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_batch_norm_training_mode(rng):
    inputs = bn_inputs(rng, np.float64, shape=(3, 4))
    x, scale, bias, mean, var = inputs
    model = node_model("BatchNormalization", inputs, outputs=3, training_mode=1, momentum=0.8)
    y, running_mean, running_var = run(model, inputs)
    m = float(np.float32(0.8))                                     # float attributes are float32
    np.testing.assert_allclose(y, (x - x.mean(0)) / np.sqrt(x.var(0) + 1e-5) * scale + bias,
                               rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(running_mean, m * mean + (1 - m) * x.mean(0), rtol=1e-13)
    np.testing.assert_allclose(running_var, m * var + (1 - m) * x.var(0), rtol=1e-13)  # biased


@pytest.mark.parametrize(("attrs", "opset", "outputs", "reason"), [
    (dict(spatial=0, is_test=1), 6, 1, "spatial=0"),
    (dict(is_test=0), 6, 1, "is_test=0 in opset 6"),
    ({}, 9, 5, "training outputs of opset 9"),
])
def test_batch_norm_forms_npconv_does_not_cover_go_to_onnx(rng, attrs, opset, outputs, reason):
    inputs = bn_inputs(rng)
    model = node_model("BatchNormalization", inputs, outputs=outputs, opset=opset, **attrs)
    assert Evaluator(model).delegated == {"node": reason}          # known when loading


def test_a_delegated_node_runs_as_in_onnx(rng):
    inputs = bn_inputs(rng)
    model = node_model("BatchNormalization", inputs, opset=6, spatial=0, is_test=1)
    feeds = {f"I{i}": x for i, x in enumerate(inputs)}
    ev = Evaluator(model)
    np.testing.assert_array_equal(ev.run(None, feeds)[0],
                                  ReferenceEvaluator(model).run(None, feeds)[0])
    assert ev.delegated == {"node": "spatial=0"}


# ---------------------------------------------------------------------------------------------
# dtypes
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "attrs", "extra"), [
    ("Conv", dict(pads=[1, 1, 1, 1]), [(3, 2, 3, 3)]),
    ("ConvTranspose", dict(strides=[2, 2]), [(2, 3, 3, 3)]),
    ("MaxPool", dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), []),
    ("AveragePool", dict(kernel_shape=[2, 2]), []),
    ("GlobalAveragePool", {}, []),
])
def test_float16_in_float16_out(rng, op, attrs, extra):
    inputs = [rng.normal(size=s).astype(np.float16) for s in [(2, 2, 6, 5), *extra]]
    model16 = node_model(op, inputs, **attrs)
    model32 = node_model(op, [a.astype(np.float32) for a in inputs], **attrs)
    (got,) = run(model16, inputs)
    (want,) = run(model32, [a.astype(np.float32) for a in inputs])
    assert got.dtype == np.float16
    np.testing.assert_allclose(got, want, rtol=2e-3, atol=2e-3)


def test_an_input_dtype_npconv_does_not_compute_goes_to_onnx(rng):
    """ONNX allows bfloat16 (ml_dtypes in NumPy); npconv computes float16/32/64."""
    ml_dtypes = pytest.importorskip("ml_dtypes")
    x = rng.normal(size=(1, 2, 4, 4)).astype(ml_dtypes.bfloat16)
    model = node_model("GlobalAveragePool", [x])
    ev = Evaluator(model)
    (got,) = ev.run(None, {"I0": x})
    assert ev.delegated == {"node": "input dtype bfloat16"}
    (want,) = ReferenceEvaluator(model).run(None, {"I0": x})
    np.testing.assert_array_equal(got.astype(np.float32), want.astype(np.float32))
    ev.run(None, {"I0": x.astype(np.float32)})                     # the next run: npconv's
    assert ev.delegated == {}


# ---------------------------------------------------------------------------------------------
# The evaluator as a ReferenceEvaluator
# ---------------------------------------------------------------------------------------------


def test_models_from_paths_and_bytes(tmp_path, rng):
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    model = node_model("MaxPool", [x], kernel_shape=[2, 2])
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    want = run(model, [x])[0]
    for source in (path, str(path), model.SerializeToString()):
        np.testing.assert_array_equal(Evaluator(source).run(None, {"I0": x})[0], want)


def test_your_new_ops_take_precedence(rng):
    class Conv(OpRun):
        op_domain = ""

        def _run(self, x, w, b=None, **attrs):
            return (np.full((1,), 7.0, dtype=x.dtype),)

    x, w = rng.normal(size=(1, 1, 3, 3)), rng.normal(size=(1, 1, 2, 2))
    ev = Evaluator(node_model("Conv", [x, w]), new_ops=[Conv])
    np.testing.assert_array_equal(ev.run(None, {"I0": x, "I1": w})[0], [7.0])
    assert ev.delegated == {}


def test_subgraphs_run_with_npconv_operators(rng):
    """An If whose branches pool: the branches are evaluated by Evaluator too."""
    x = rng.normal(size=(1, 2, 4, 4)).astype(np.float32)
    out = oh.make_tensor_value_info("Y", TensorProto.FLOAT, None)

    def branch(op, **attrs):
        return oh.make_graph([oh.make_node(op, ["X"], ["Y"], **attrs)], op, [], [out])

    node = oh.make_node("If", ["cond"], ["Y"],
                        then_branch=branch("MaxPool", kernel_shape=[2, 2], strides=[2, 2]),
                        else_branch=branch("GlobalAveragePool"))
    graph = oh.make_graph([node], "g", [
        oh.make_tensor_value_info("cond", TensorProto.BOOL, []),
        oh.make_tensor_value_info("X", TensorProto.FLOAT, x.shape)], [out])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])
    ev = Evaluator(model)
    for cond in (True, False):
        feeds = {"cond": np.array(cond), "X": x}
        np.testing.assert_allclose(ev.run(None, feeds)[0],
                                   ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-6)
    assert type(ev.rt_nodes_[0].then_branch) is Evaluator


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------

X4 = np.zeros((1, 2, 5, 5))
W4 = np.zeros((3, 2, 3, 3))


@pytest.mark.parametrize(("call", "error", "match"), [
    (lambda: ops.conv(X4, W4, strides=[1]), ValueError, r"`strides` must have 2 entries"),
    (lambda: ops.conv(X4, W4, pads=[1, 1]), ValueError, r"`pads` must have 2 \* 2 = 4"),
    (lambda: ops.conv(X4, W4, pads=[1, -1, 1, 1]), ValueError, r"`pads` must be >= 0"),
    (lambda: ops.conv(X4, W4, auto_pad="SAME"), ValueError, r"Conv: `auto_pad` must be one of"),
    (lambda: ops.conv(X4, W4, kernel_shape=[2, 2]), ValueError, r"`kernel_shape` \[2, 2\]"),
    (lambda: ops.conv(X4, W4, group=0), ValueError, r"`group` must be >= 1; got 0"),
    (lambda: ops.conv(X4[0, 0], W4[0, 0]), ValueError, r"at least one spatial dimension"),
    (lambda: ops.conv_transpose(X4, W4.transpose(1, 0, 2, 3), pads=[4, 4, 4, 4]), ValueError,
     r"ConvTranspose: the output size must be >= 1"),
    (lambda: ops.conv_transpose(X4, W4.transpose(1, 0, 2, 3), output_shape=[7]), ValueError,
     r"`output_shape` must have 2 entries"),
    (lambda: ops.max_pool(X4), ValueError, r"MaxPool: the `kernel_shape` attribute is required"),
    (lambda: ops.max_pool(X4, kernel_shape=[2, 2], storage_order=2, indices=True), ValueError,
     r"`storage_order` must be 0 or 1; got 2"),
    (lambda: ops.average_pool(X4, kernel_shape=[2]), ValueError, r"`kernel_shape` must have 2"),
    (lambda: ops.global_average_pool(X4[0, 0]), ValueError, r"GlobalAveragePool: `X` must"),
    (lambda: ops.batch_normalization(np.zeros(3), *[np.zeros(3)] * 4), ValueError,
     r"BatchNormalization: `X` must have shape \(N, C, ...\)"),
])
def test_errors_name_the_operator_and_attribute(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_errors_surface_through_the_evaluator():
    model = node_model("Conv", [X4, W4], pads=[1, 1])
    with pytest.raises(ValueError, match=r"Conv: `pads` must have 2 \* 2 = 4 entries"):
        Evaluator(model).run(None, {"I0": X4, "I1": W4})


def test_import_npconv_never_imports_onnx():
    code = "import sys, npconv, npconv.nn; assert 'onnx' not in sys.modules, 'imported'"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_without_onnx_the_import_error_names_the_extra():
    code = ("import sys; sys.modules['onnx'] = None\n"       # what a missing package looks like
            "try:\n    import npconv.onnx\nexcept ImportError as e:\n    print(e)")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True,
                         text=True).stdout
    assert "pip install 'npconv[onnx]'" in out


def residual_model(rng):
    """X -> Conv -> Relu -> (+ X) -> MaxPool -> Y, with the Relu's output also a graph output
    and an Identity nobody reads: values with two readers, a requested intermediate."""
    w = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    nodes = [oh.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]),
             oh.make_node("Relu", ["c"], ["r"]),
             oh.make_node("Identity", ["r"], ["unused"]),
             oh.make_node("Add", ["r", "X"], ["s"]),
             oh.make_node("MaxPool", ["s"], ["Y"], kernel_shape=[2, 2], strides=[2, 2])]
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("X", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [info("Y", TensorProto.FLOAT, None), info("r", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(w, "W")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])


def test_run_drops_values_after_their_last_use_and_answers_like_onnx(rng):
    model = residual_model(rng)
    feeds = {"X": rng.normal(size=(1, 2, 4, 4)).astype(np.float32)}
    ev, ref = Evaluator(model), ReferenceEvaluator(model)
    for names in (None, ["Y"], ["s", "Y", "c"]):                  # intermediates by name too
        for got, want in zip(ev.run(names, feeds), ref.run(names, feeds)):
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    everything = ev.run(None, feeds, intermediate=True)             # ONNX's own loop
    assert set(everything) >= {"c", "r", "unused", "s", "Y", "W", "X"}
    checked = ev.run(None, feeds, check_shape_annotations=True)     # ONNX's own loop too
    np.testing.assert_array_equal(checked[0], ev.run(None, feeds)[0])


def activation_model(rng, act, *, extra_reader=False, computed_bound=False):
    """X -> Conv -> act -> Conv -> Y; act "Relu", or "Clip" with initializer bounds (lo, hi;
    None: absent), or with a bound a node computes; optionally an Add also reading the
    first Conv's output."""
    w = rng.normal(size=(3, 3, 3, 3)).astype(np.float32)
    inits = [onnx.numpy_helper.from_array(w, "W")]
    if act == "Relu":
        first = oh.make_node("Relu", ["c"], ["a"])
    else:
        lo, hi = act
        names = []
        for name, v in (("lo", lo), ("hi", hi)):
            if v is not None:
                inits.append(onnx.numpy_helper.from_array(np.array(v, np.float32), name))
            names.append(name if v is not None else "")
        first = oh.make_node("Clip", ["c", *names], ["a"])
    nodes = [oh.make_node("Conv", ["X", "W"], ["c"], pads=[1, 1, 1, 1]), first,
             oh.make_node("Conv", ["a", "W"], ["Y"], pads=[1, 1, 1, 1])]
    if computed_bound:
        nodes.insert(0, oh.make_node("Neg", ["lo"], ["neg"]))
        nodes[2].input[1] = "neg"
    outputs = [oh.make_tensor_value_info("Y", TensorProto.FLOAT, None)]
    if extra_reader:
        nodes.append(oh.make_node("Add", ["c", "Y"], ["Z"]))
        outputs.append(oh.make_tensor_value_info("Z", TensorProto.FLOAT, None))
    info = oh.make_tensor_value_info("X", TensorProto.FLOAT, [2, 3, 6, 5])
    graph = oh.make_graph(nodes, "g", [info], outputs, initializer=inits)
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])


@pytest.mark.parametrize("act", ["Relu", (0.0, 6.0), (-0.5, None), (None, 0.25), (1.0, -1.0)])
def test_a_conv_and_its_only_activation_run_as_one(rng, act):
    """A Conv whose output only a Relu or Clip (constant bounds) reads clips it in cache and
    the activation node is skipped: the same bits as ONNX's evaluator (np.clip), NaN kept.
    Asking for the Conv's output by name, or ONNX's own loop, runs both nodes as written."""
    model = activation_model(rng, act)
    x = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    x[0, 1, 2, 3] = np.nan
    ev, ref = Evaluator(model), ReferenceEvaluator(model)
    assert list(ev._fused) == [0]
    for names in (None, ["Y", "a"], ["c", "Y"]):
        for got, want in zip(ev.run(names, {"X": x}), ref.run(names, {"X": x})):
            assert np.isnan(got).any()
            np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    every = ev.run(None, {"X": x}, intermediate=True)
    np.testing.assert_allclose(every["c"], ref.run(["c"], {"X": x})[0], rtol=1e-5, atol=1e-5)
    plain = Evaluator(model)
    plain._fused = {}
    for names in (None, ["a"]):
        assert np.array_equal(ev.run(names, {"X": x})[0], plain.run(names, {"X": x})[0],
                              equal_nan=True)


@pytest.mark.parametrize("kw", [dict(extra_reader=True), dict(computed_bound=True)])
def test_a_conv_output_read_twice_or_a_computed_bound_is_not_fused(rng, kw):
    model = activation_model(rng, (0.5, None), **kw)
    feeds = {"X": rng.normal(size=(2, 3, 6, 5)).astype(np.float32)}
    ev = Evaluator(model)
    assert ev._fused == {}
    for got, want in zip(ev.run(None, feeds), ReferenceEvaluator(model).run(None, feeds)):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_run_names_what_is_missing(rng):
    ev = Evaluator(residual_model(rng))
    with pytest.raises(RuntimeError, match=r"Unable to find input 'X' of node 'Conv'"):
        ev.run(None, {"x": np.zeros((1, 2, 4, 4), np.float32)})
    with pytest.raises(RuntimeError, match=r"Unable to find output name 'nope'"):
        ev.run(["nope"], {"X": np.zeros((1, 2, 4, 4), np.float32)})


# ---------------------------------------------------------------------------------------------
# Dead values' memory, recycled for later results
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def pool_everything():
    """Every result pooled and every recyclable value's memory recycled, however small."""
    from npconv import _config, _workspace

    _workspace.release()
    with _config.tuned(scratch_min_bytes=0):
        yield
    _workspace.release()


def chain_model(rng, alias=None, k=3):
    """X -> Conv a -> Relu r (fused) -> Conv b -> Conv c -> Add s (c + b) -> MaxPool -> Y,
    kxk kernels, every activation (2, 3, 6, 5); with `alias` (an op type), that node also
    reads r, right after the Relu, and the Add reads its output instead of b."""
    w = rng.normal(size=(3, 3, k, k)).astype(np.float32)
    pads = [k // 2] * 4
    nodes = [oh.make_node("Conv", ["X", "W"], ["a"], pads=pads),
             oh.make_node("Relu", ["a"], ["r"]),
             oh.make_node("Conv", ["r", "W"], ["b"], pads=pads),
             oh.make_node("Conv", ["b", "W"], ["c"], pads=pads),
             oh.make_node("Add", ["c", "b"], ["s"]),
             oh.make_node("MaxPool", ["s"], ["Y"], kernel_shape=[2, 2])]
    if alias:
        nodes.insert(2, oh.make_node(alias, ["r"], ["i"]))
        nodes[5].input[1] = "i"
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("X", TensorProto.FLOAT, [2, 3, 6, 5])],
                          [info("Y", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(w, "W")])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])


def test_dead_values_lend_their_memory_to_later_results(rng, pool_everything, monkeypatch):
    """The values only npconv's operators and ONNX's Add and Relu make and read go back to
    the pool after their last reader, and later results (of this run and the next) are
    written into their memory; every run answers like ONNX's evaluator, and no run changes
    what an earlier one returned (a requested intermediate included)."""
    from npconv import _workspace, pooling
    from npconv.algorithms import im2col

    model = chain_model(rng)
    ev, ref = Evaluator(model), ReferenceEvaluator(model)
    assert ev._recyclable({0: (0, None)}, ["Y"]) == {"r", "b", "c", "s"}  # r outlives a
    assert ev._recyclable({}, ["Y", "c"]) == {"a", "r", "b", "s"}   # ONNX's Relu: a -> r
    events = []                                                  # ("dead" or "made", array)
    recycle, result = _workspace.recycle, _workspace.result
    taken = []
    monkeypatch.setattr(_workspace, "recycle",
                        lambda v: events.append(("dead", v)) or taken.append(recycle(v)))
    for module in (im2col, pooling):                             # the Convs', the MaxPool's

        def made(*args):
            events.append(("made", result(*args)))
            return events[-1][1]

        monkeypatch.setattr(module, "result", made)
    kept = []
    for k, names in enumerate((None, ["c", "Y"], None)):
        feeds = {"X": rng.normal(size=(2, 3, 6, 5)).astype(np.float32)}
        got = ev.run(names, feeds)
        for g, want in zip(got, ref.run(names, feeds)):
            np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-5)
        kept.append((got, [g.copy() for g in got]))
        assert sum(e == "dead" for e, _ in events) == (4, 7, 11)[k]   # c asked for: kept
    assert all(taken)                                            # a result of any size
    for got, copies in kept:
        assert all(np.array_equal(g, c) for g, c in zip(got, copies))
    reused = [m for i, (e, m) in enumerate(events) if e == "made" and any(
        np.shares_memory(m, d) for f, d in events[:i] if f == "dead")]
    assert len(reused) >= 4


def test_a_value_another_op_may_alias_is_never_recycled(rng, pool_everything, monkeypatch):
    """ONNX's Reshape returns a view of its input: the Relu's output, read by one, keeps its
    memory to the end of the run. Taken for a fresh op, it would be overwritten by the next
    Conv's result while the view still reads it (1x1 Convs, which take no scratch: from an
    empty pool, that result takes its memory)."""
    from npconv import _workspace
    from npconv.onnx import evaluator

    model = chain_model(rng, alias="Reshape", k=1)
    shape = np.array([2, 3, 6, 5], np.int64)                     # the same shape: a view
    model.graph.initializer.append(onnx.numpy_helper.from_array(shape, "shape"))
    model.graph.node[2].input.append("shape")
    feeds = {"X": rng.normal(size=(2, 3, 6, 5)).astype(np.float32)}
    (want,) = ReferenceEvaluator(model).run(None, feeds)
    ev = Evaluator(model)
    assert ev._recyclable({0: (0, None)}, ["Y"]) == {"b", "c", "s"}
    np.testing.assert_allclose(ev.run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)
    monkeypatch.setattr(evaluator, "_FRESH_ONNX", evaluator._FRESH_ONNX | {"Reshape"})
    _workspace.release()
    assert not np.allclose(Evaluator(model).run(None, feeds)[0], want, rtol=1e-5, atol=1e-5)


def test_a_node_onnx_runs_instead_keeps_what_it_reads_and_makes(rng, pool_everything,
                                                                monkeypatch):
    """A node of npconv's operators that ONNX's class runs (here a BatchNormalization with
    spatial=0) may return anything: neither its inputs nor its outputs are recycled."""
    w = rng.normal(size=(2, 2, 3, 3)).astype(np.float32)
    stats = [rng.uniform(0.5, 1.5, size=2).astype(np.float32) for _ in range(4)]
    inits = [onnx.numpy_helper.from_array(a, n) for a, n in
             zip([w, *stats], ["W", "scale", "bias", "mean", "var"])]
    nodes = [oh.make_node("Conv", ["X", "W"], ["a"], pads=[1, 1, 1, 1]),
             oh.make_node("BatchNormalization", ["a", "scale", "bias", "mean", "var"], ["n"],
                          spatial=0, is_test=1),
             oh.make_node("Add", ["n", "a"], ["s"]),
             oh.make_node("Conv", ["s", "W"], ["Y"], pads=[1, 1, 1, 1])]
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("X", TensorProto.FLOAT, [1, 2, 4, 4])],
                          [info("Y", TensorProto.FLOAT, None)], initializer=inits)
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 6)])
    from npconv import _workspace

    ev = Evaluator(model)
    dead = []
    recycle = _workspace.recycle
    monkeypatch.setattr(_workspace, "recycle", lambda v: dead.append(v) or recycle(v))
    feeds = {"X": rng.normal(size=(1, 2, 4, 4)).astype(np.float32)}
    np.testing.assert_allclose(ev.run(None, feeds)[0],
                               ReferenceEvaluator(model).run(None, feeds)[0], rtol=1e-5,
                               atol=1e-5)
    assert ev.delegated == {"BatchNormalization#1": "spatial=0"}
    assert ev._recyclable({}, ["Y"]) == {"a", "n", "s"} and len(dead) == 1   # s alone


def test_one_evaluator_in_two_threads_fuses_each_run_on_its_own(rng, monkeypatch):
    """A run that fuses a Conv with its Relu and one that asks for the Conv's output, at the
    same time on two threads: the second's Conv is not clipped (the fused bounds are per
    thread, not on the node)."""
    import threading

    from npconv.onnx import evaluator

    model = activation_model(rng, "Relu")
    x = rng.normal(size=(2, 3, 6, 5)).astype(np.float32)
    ev = Evaluator(model)
    want_c = ReferenceEvaluator(model).run(["c"], {"X": x})[0]
    inside, done, seen = threading.Event(), threading.Event(), []
    conv = ops.conv

    def paused(*args, clip=None, **kw):
        if clip is not None and not inside.is_set():             # the fused run's first Conv
            inside.set()
            done.wait(10)
        else:
            seen.append(clip)
        return conv(*args, clip=clip, **kw)

    monkeypatch.setattr(evaluator.ops, "conv", paused)
    fused = threading.Thread(target=lambda: ev.run(None, {"X": x}))
    fused.start()
    assert inside.wait(10)
    got = ev.run(["c", "Y"], {"X": x})                           # meanwhile, on this thread
    done.set()
    fused.join()
    assert seen[:2] == [None, None]
    np.testing.assert_allclose(got[0], want_c, rtol=1e-5, atol=1e-5)
    assert (got[0] < 0).any()


def test_an_omitted_output_is_no_value_for_an_omitted_input(rng):
    """MaxPool's output omitted (""), asking for its Indices only, then a Clip whose min is
    omitted ("" too): the Clip has no lower bound, fused or not."""
    w = rng.normal(size=(2, 2, 1, 1)).astype(np.float32)
    nodes = [oh.make_node("MaxPool", ["X"], ["", "idx"], kernel_shape=[1, 1]),
             oh.make_node("Conv", ["X", "W"], ["a"]),
             oh.make_node("Clip", ["a", "", "hi"], ["Y"])]
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("X", TensorProto.FLOAT, [1, 2, 3, 3])],
                          [info("Y", TensorProto.FLOAT, None),
                           info("idx", TensorProto.INT64, None)],
                          initializer=[onnx.numpy_helper.from_array(w, "W"),
                                       onnx.numpy_helper.from_array(np.array(0.5, np.float32),
                                                                    "hi")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    x = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    ev = Evaluator(model)
    a = ev.run(["a"], {"X": x})[0]
    for names in (["Y"], ["Y", "a"]):                            # fused, then not
        np.testing.assert_array_equal(ev.run(names, {"X": x})[0], np.minimum(a, 0.5))


def test_a_fed_bound_overrides_its_initializer(rng):
    """A Clip bound that is an initializer and a graph input: a feed for it wins, fused or
    not, as in ONNX's evaluator."""
    w = rng.normal(size=(2, 2, 1, 1)).astype(np.float32)
    nodes = [oh.make_node("Conv", ["X", "W"], ["a"]), oh.make_node("Clip", ["a", "", "hi"], ["Y"])]
    info = oh.make_tensor_value_info
    graph = oh.make_graph(nodes, "g", [info("X", TensorProto.FLOAT, [1, 2, 3, 3]),
                                       info("hi", TensorProto.FLOAT, [])],
                          [info("Y", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(w, "W"),
                                       onnx.numpy_helper.from_array(np.array(0.1, np.float32),
                                                                    "hi")])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 17)])
    x = rng.normal(size=(1, 2, 3, 3)).astype(np.float32)
    ev, ref = Evaluator(model), ReferenceEvaluator(model)
    for feeds in ({"X": x}, {"X": x, "hi": np.array(5.0, np.float32)}):
        np.testing.assert_array_equal(ev.run(None, feeds)[0], ref.run(None, feeds)[0])
