"""Reading ONNX files as data (`npconv.onnx.graph`) and the node -> layer table
(`npconv.onnx.mapping`)."""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, numpy_helper  # noqa: E402
from onnx import helper as oh  # noqa: E402

from npconv.onnx.graph import read_graph  # noqa: E402
from npconv.onnx.mapping import SUPPORTED, UnsupportedOperator, plan  # noqa: E402

F32 = TensorProto.FLOAT


def make_model(nodes, inputs, outputs, constants=(), opset=22):
    """inputs/outputs: (name, shape) pairs; constants: name -> array (initializers)."""
    graph = oh.make_graph(
        nodes, "g", [oh.make_tensor_value_info(n, F32, s) for n, s in inputs],
        [oh.make_tensor_value_info(n, F32, s) for n, s in outputs],
        initializer=[numpy_helper.from_array(np.asarray(v), k) for k, v in dict(constants).items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", opset)])


def one_layer(node, x_shape=(1, 4, 8, 8), constants=(), data_format="channels_last", **kw):
    model = make_model([node], [(node.input[0], x_shape)], [(node.output[0], None)], constants,
                       **kw)
    (spec,) = plan(read_graph(model), data_format).layers
    return spec


# ---------------------------------------------------------------------------------------------
# read_graph
# ---------------------------------------------------------------------------------------------


def test_constants_inputs_and_shapes():
    nodes = [oh.make_node("Constant", [], ["a"], value=numpy_helper.from_array(
                 np.arange(3, dtype=np.float32))),
             oh.make_node("Constant", [], ["b"], value_floats=[1.0, 2.0]),
             oh.make_node("Constant", [], ["c"], value_int=4),
             oh.make_node("Relu", ["x"], ["y"])]
    model = make_model(nodes, [("x", ["N", 4]), ("w", [2])], [("y", None)],
                       {"w": np.array([1.0, 2.0], np.float32)})
    g = read_graph(model)
    assert [n.op_type for n in g.nodes] == ["Relu"]                  # Constants folded
    np.testing.assert_array_equal(g.constants["a"], [0, 1, 2])
    assert g.constants["b"].dtype == np.float32 and g.constants["c"].dtype == np.int64
    assert g.inputs == {"x": ("N", 4)}                               # initializers are not inputs
    assert g.shapes["y"] == ("N", 4) and g.rank("w") == 1 and g.opset == 22
    assert g.producer("y").op_type == "Relu" and g.readers("x") == g.nodes


def test_external_data_is_read_from_the_models_folder(tmp_path, rng):
    w = rng.normal(size=(8, 4, 3, 3)).astype(np.float32)
    model = make_model([oh.make_node("Conv", ["x", "w"], ["y"])], [("x", [1, 4, 5, 5])],
                       [("y", None)], {"w": w})
    path = tmp_path / "m.onnx"
    onnx.save(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
              location="weights.bin", size_threshold=0)
    np.testing.assert_array_equal(read_graph(path).constants["w"], w)
    with open(tmp_path / "weights.bin", "r+b") as f:                  # now 4 bytes short
        f.truncate(w.nbytes - 4)
    with pytest.raises(ValueError, match=r"declares 1152 bytes at offset 0.*has 1148 bytes"):
        read_graph(path)


def test_external_data_outside_the_folder_is_refused(tmp_path, rng):
    model = make_model([oh.make_node("Relu", ["x"], ["y"])], [("x", [1])], [("y", None)],
                       {"w": np.ones(4, np.float32)})
    tensor = model.graph.initializer[0]
    tensor.ClearField("raw_data")
    tensor.data_location = TensorProto.EXTERNAL
    tensor.external_data.add(key="location", value="../secret.bin")
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    with pytest.raises(ValueError, match=r"location '../secret.bin' is outside the model's"):
        read_graph(path)
    with pytest.raises(ValueError, match=r"'w' is stored in an external file: load the model"):
        read_graph(model)


def test_bad_files(tmp_path):
    with pytest.raises(ValueError, match=r"no ONNX model file at"):
        read_graph(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"\xff" * 64)
    with pytest.raises(ValueError, match=r"is not an ONNX model"):
        read_graph(tmp_path / "bad.onnx")
    with pytest.raises(TypeError, match=r"`model` must be an onnx.ModelProto or a path"):
        read_graph(42)


# ---------------------------------------------------------------------------------------------
# The table, node by node
# ---------------------------------------------------------------------------------------------


def test_conv_becomes_conv2d_with_pytorch_parameters(rng):
    w, b = rng.normal(size=(6, 2, 3, 3)), rng.normal(size=6)
    node = oh.make_node("Conv", ["x", "block.conv.weight", "block.conv.bias"], ["y"], group=2,
                        strides=[2, 1], auto_pad="SAME_LOWER", dilations=[1, 2])
    spec = one_layer(node, constants={"block.conv.weight": w, "block.conv.bias": b})
    assert (spec.layer, spec.name, spec.inputs, spec.output) == ("Conv2d", "block.conv",
                                                                ("x",), "y")
    # SAME_LOWER on 8x8: heights total (4 - 1) * 2 + 3 - 8 = 1 -> (1, 0); widths eff 5: 4 -> (2, 2)
    assert spec.kwargs == dict(in_channels=4, out_channels=6, kernel_size=(3, 3), stride=(2, 1),
                               padding=((1, 0), (2, 2)), dilation=(1, 2), groups=2, bias=True,
                               data_format="channels_last")
    np.testing.assert_array_equal(spec.params["weight"], w)        # PyTorch's (F, C/G, kh, kw)
    np.testing.assert_array_equal(spec.params["bias"], b)


def test_same_upper_without_sizes_is_npconvs_same(rng):
    node = oh.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER")
    spec = one_layer(node, x_shape=("N", 4, "H", "W"), constants={"w": np.ones((2, 4, 3, 3))})
    assert spec.kwargs["padding"] == "same"
    node = oh.make_node("Conv", ["x", "w"], ["y"], auto_pad="SAME_LOWER")
    with pytest.raises(UnsupportedOperator, match=r"SAME_LOWER needs the input's spatial size"):
        one_layer(node, x_shape=("N", 4, "H", "W"), constants={"w": np.ones((2, 4, 3, 3))})


def test_conv_weights_must_be_constants():
    model = make_model([oh.make_node("Conv", ["x", "w"], ["y"])],
                       [("x", [1, 4, 5, 5]), ("w", [2, 4, 3, 3])], [("y", None)])
    with pytest.raises(UnsupportedOperator, match=r"Conv node \(inputs x, w\): its weight W "
                                                  r"\(input 1\) must be a constant"):
        plan(read_graph(model))


@pytest.mark.parametrize(("attrs", "padding", "output_padding"), [
    (dict(strides=[2, 2], pads=[1, 0, 1, 1], output_padding=[1, 1]), ((1, 1), (0, 1)), (1, 1)),
    (dict(strides=[2, 2], output_shape=[16, 18]), ((1, 0), (0, 0)), (0, 1)),
    (dict(strides=[2, 2], auto_pad="SAME_UPPER"), ((0, 1), (0, 1)), (0, 0)),
])
def test_conv_transpose_padding_and_output_padding(attrs, padding, output_padding):
    node = oh.make_node("ConvTranspose", ["x", "w"], ["y"], **attrs)
    spec = one_layer(node, constants={"w": np.ones((4, 3, 3, 3))})
    assert spec.layer == "ConvTranspose2d"
    assert (spec.kwargs["in_channels"], spec.kwargs["out_channels"]) == (4, 3)
    assert spec.kwargs["padding"] == padding and spec.kwargs["output_padding"] == output_padding


def test_batch_norm_momentum_is_pytorchs(rng):
    stats = {k: rng.uniform(0.5, 1.5, size=4) for k in ("s", "b", "m", "v")}
    node = oh.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3,
                        momentum=0.8)
    spec = one_layer(node, constants=stats)
    assert spec.layer == "BatchNorm2d"
    assert spec.kwargs["num_features"] == 4
    assert spec.kwargs["eps"] == pytest.approx(1e-3) and spec.kwargs["momentum"] == \
        pytest.approx(0.2)
    assert set(spec.params) == {"weight", "bias"}
    assert set(spec.buffers) == {"running_mean", "running_var"}


def test_pools():
    spec = one_layer(oh.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], strides=[2, 2],
                                  pads=[1, 1, 1, 1], ceil_mode=1))
    assert (spec.layer, spec.kwargs) == ("MaxPool2d", dict(
        kernel_size=(3, 3), stride=(2, 2), padding=((1, 1), (1, 1)), ceil_mode=True,
        data_format="channels_last"))
    spec = one_layer(oh.make_node("AveragePool", ["x"], ["y"], kernel_shape=[2, 2],
                                  auto_pad="VALID", ceil_mode=1, count_include_pad=1))
    assert spec.layer == "AvgPool2d"
    assert spec.kwargs["ceil_mode"] is False and spec.kwargs["count_include_pad"] is True
    node = oh.make_node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])
    model = make_model([node, oh.make_node("Identity", ["i"], ["j"])], [("x", [1, 4, 8, 8])],
                       [("y", None), ("j", None)])
    with pytest.raises(UnsupportedOperator, match=r"MaxPool's Indices output"):
        plan(read_graph(model))


@pytest.mark.parametrize("tail", [
    [oh.make_node("Flatten", ["p"], ["y"])],
    [oh.make_node("Reshape", ["p", "shape"], ["y"])],
])
@pytest.mark.parametrize("pool", [
    oh.make_node("GlobalAveragePool", ["x"], ["p"]),
    oh.make_node("ReduceMean", ["x", "axes"], ["p"], keepdims=1),
])
def test_global_pooling_and_flatten_become_one_layer(pool, tail):
    model = make_model([pool, *tail], [("x", ["N", 4, 7, 7])], [("y", None)],
                       {"axes": np.array([2, 3]), "shape": np.array([-1, 4])})
    (spec,) = plan(read_graph(model)).layers
    assert (spec.layer, spec.inputs, spec.output) == ("GlobalAvgPool", ("x",), "y")


def test_reduce_mean_without_keepdims_and_a_pooled_map():
    node = oh.make_node("ReduceMean", ["x", "axes"], ["y"], keepdims=0)
    spec = one_layer(node, constants={"axes": np.array([-1, -2])})
    assert spec.layer == "GlobalAvgPool"
    with pytest.raises(UnsupportedOperator, match=r"only a mean over every spatial axis"):
        one_layer(oh.make_node("ReduceMean", ["x", "axes"], ["y"]),
                  constants={"axes": np.array([1])})
    model = make_model([oh.make_node("GlobalAveragePool", ["x"], ["p"]),
                        oh.make_node("Relu", ["p"], ["y"])], [("x", [1, 4, 8, 8])], [("y", None)])
    with pytest.raises(UnsupportedOperator, match=r"used as a map"):
        plan(read_graph(model))


def test_gemm_and_matmul_become_linear(rng):
    b, c = rng.normal(size=(5, 3)), rng.normal(size=3)
    node = oh.make_node("Gemm", ["x", "fc.weight", "fc.bias"], ["y"], alpha=2.0, beta=0.5)
    spec = one_layer(node, x_shape=(2, 5), constants={"fc.weight": b, "fc.bias": c})
    assert (spec.layer, spec.name) == ("Linear", "fc")
    assert spec.kwargs == dict(in_features=5, out_features=3, bias=True)
    np.testing.assert_allclose(spec.params["weight"], 2 * b.T)      # (out, in), alpha folded
    np.testing.assert_allclose(spec.params["bias"], 0.5 * c)
    nodes = [oh.make_node("MatMul", ["x", "w"], ["m"]), oh.make_node("Add", ["m", "c"], ["y"])]
    model = make_model(nodes, [("x", [2, 5])], [("y", None)], {"w": b, "c": c})
    (spec,) = plan(read_graph(model)).layers
    assert (spec.layer, spec.output, spec.kwargs["bias"]) == ("Linear", "y", True)
    np.testing.assert_allclose(spec.params["bias"], c)
    with pytest.raises(UnsupportedOperator, match=r"Gemm with transA=1"):
        one_layer(oh.make_node("Gemm", ["x", "w"], ["y"], transA=1), x_shape=(5, 2),
                  constants={"w": b})


def test_flatten_reshape_and_identity():
    spec = one_layer(oh.make_node("Flatten", ["x"], ["y"]))
    assert (spec.layer, spec.kwargs) == ("Flatten", {"data_format": "channels_last"})
    spec = one_layer(oh.make_node("Reshape", ["x", "s"], ["y"]),
                     constants={"s": np.array([1, 256])})             # the batch given as 1
    assert spec.layer == "Flatten"
    nodes = [oh.make_node("Identity", ["x"], ["a"]), oh.make_node("Reshape", ["a", "s"], ["b"]),
             oh.make_node("Relu", ["b"], ["y"])]
    model = make_model(nodes, [("x", [1, 4, 8, 8])], [("y", None)],
                       {"s": np.array([0, 4, 8, -1])})
    p = plan(read_graph(model))
    (relu,) = p.layers
    assert relu.inputs == ("x",) and p.resolve("b") == "x"
    with pytest.raises(UnsupportedOperator, match=r"only a Reshape to \(N, -1\) or to the same"):
        one_layer(oh.make_node("Reshape", ["x", "s"], ["y"]), constants={"s": np.array([4, -1])})


@pytest.mark.parametrize(("bounds", "layer"), [((0.0, 6.0), "ReLU6"), ((0.0, None), "ReLU")])
def test_clip_as_relu6_or_relu(bounds, layer):
    names = ["x", "lo", "hi" if bounds[1] is not None else ""]
    constants = {"lo": np.float32(bounds[0]), **({"hi": np.float32(6)} if bounds[1] else {})}
    assert one_layer(oh.make_node("Clip", names, ["y"]), constants=constants).layer == layer
    with pytest.raises(UnsupportedOperator, match=r"got min=-1.0, max=1.0"):
        one_layer(oh.make_node("Clip", ["x", "lo", "hi"], ["y"]),
                  constants={"lo": np.float32(-1), "hi": np.float32(1)})


@pytest.mark.parametrize(("data_format", "axis", "want"), [
    ("channels_last", 1, None), ("channels_last", 3, 2), ("channels_last", 0, 0),
    ("channels_first", 2, 2), ("channels_first", -3, None),
])
def test_concat_axes(data_format, axis, want):
    node = oh.make_node("Concat", ["x", "x"], ["y"], axis=axis)
    spec = one_layer(node, data_format=data_format)
    assert spec.kwargs == {"axis": want, "data_format": data_format}
    assert spec.inputs == ("x", "x")


def test_the_rest():
    assert one_layer(oh.make_node("Softmax", ["x"], ["y"]), x_shape=(2, 5)).kwargs["axis"] == 1
    spec = one_layer(oh.make_node("Dropout", ["x", "r"], ["y"]),
                     constants={"r": np.float32(0.25)})
    assert (spec.layer, spec.kwargs) == ("Dropout", {"p": 0.25})
    node = oh.make_node("Resize", ["x", "", "s"], ["y"], mode="nearest",
                        coordinate_transformation_mode="asymmetric", nearest_mode="floor")
    spec = one_layer(node, constants={"s": np.array([1, 1, 2, 2], np.float32)})
    assert (spec.layer, spec.kwargs["scale_factor"], spec.kwargs["mode"]) == \
        ("Upsample", (2, 2), "nearest")
    with pytest.raises(UnsupportedOperator, match=r"only a nearest-neighbour Resize"):
        one_layer(oh.make_node("Resize", ["x", "", "s"], ["y"], mode="linear"),
                  constants={"s": np.array([1, 1, 2, 2], np.float32)})
    with pytest.raises(UnsupportedOperator, match=r"adding a constant"):
        one_layer(oh.make_node("Add", ["x", "c"], ["y"]), constants={"c": np.float32(1)})


def test_activations():
    assert one_layer(oh.make_node("Tanh", ["x"], ["y"])).layer == "Tanh"
    assert one_layer(oh.make_node("HardSwish", ["x"], ["y"])).layer == "Hardswish"
    spec = one_layer(oh.make_node("LeakyRelu", ["x"], ["y"], alpha=0.2))
    assert (spec.layer, spec.kwargs) == ("LeakyReLU", {"negative_slope": pytest.approx(0.2)})
    spec = one_layer(oh.make_node("HardSigmoid", ["x"], ["y"], alpha=1 / 6))
    assert spec.layer == "Hardsigmoid"
    with pytest.raises(UnsupportedOperator, match=r"got alpha=0.2"):
        one_layer(oh.make_node("HardSigmoid", ["x"], ["y"]))


def test_every_unsupported_operator_is_named():
    nodes = [oh.make_node("Relu", ["x"], ["a"]), oh.make_node("Sin", ["a"], ["b"]),
             oh.make_node("LpPool", ["b"], ["y"], kernel_shape=[2, 2])]
    model = make_model(nodes, [("x", [1, 4, 8, 8])], [("y", None)])
    with pytest.raises(UnsupportedOperator, match=r"no npconv layer for ONNX operator\(s\) "
                                                  r"LpPool, Sin \(first: Sin node"):
        plan(read_graph(model))
    assert "LpPool" not in SUPPORTED
    with pytest.raises(ValueError, match=r"`data_format` must be"):
        plan(read_graph(model), "NCHW")


W5 = np.ones((2, 4, 3, 3), np.float32)


@pytest.mark.parametrize(("node", "x_shape", "constants", "match"), [
    (oh.make_node("Conv", ["x", "w"], ["y"]), (1, 4, 2, 2, 2, 2, 2),
     {"w": np.ones((2, 4, 1, 1, 1, 1, 1), np.float32)}, r"npconv's layers are 1-, 2- or 3-d"),
    (oh.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[9, 9]), ("N", 4, "H", "W"),
     {"w": W5}, r"output_shape or auto_pad needs the input's spatial size"),
    (oh.make_node("ConvTranspose", ["x", "w"], ["y"], output_shape=[14, 14],
                  auto_pad="SAME_UPPER"), (1, 4, 5, 5), {"w": W5},
     r"an output that starts before the transposed convolution's extent"),
    (oh.make_node("BatchNormalization", ["x", "s", "b", "m", "v"], ["y", "rm", "rv"],
                  training_mode=1), (1, 4, 5, 5),
     {k: np.ones(4, np.float32) for k in "sbmv"}, r"only inference-form batch normalization"),
    (oh.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2]), (1, 4, 5), {},
     r"needs `kernel_shape` and an input of known rank"),
    (oh.make_node("MatMul", ["x", "w"], ["y"]), (1, 4, 5, 5), {"w": np.ones((5, 5, 5))},
     r"only a MatMul by a 2-d constant"),
    (oh.make_node("Concat", ["x", "c"], ["y"], axis=1), (1, 4), {"c": np.ones((1, 4))},
     r"concatenating a constant"),
    (oh.make_node("Flatten", ["x"], ["y"], axis=2), (1, 4, 5, 5), {},
     r"only Flatten\(axis=1\)"),
])
def test_what_has_no_layer_is_named(node, x_shape, constants, match):
    with pytest.raises(UnsupportedOperator, match=match):
        one_layer(node, x_shape=x_shape, constants=constants)


def test_an_axis_of_unknown_rank():
    graph = oh.make_graph([oh.make_node("Concat", ["x", "x"], ["y"], axis=1)], "g",
                          [oh.make_tensor_value_info("x", F32, None)],
                          [oh.make_tensor_value_info("y", F32, None)])
    with pytest.raises(UnsupportedOperator, match=r"needs its input's rank"):
        plan(read_graph(oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])))


def test_a_constant_of_an_unsupported_kind():
    node = oh.make_node("Constant", [], ["s"], value_string="text")
    model = make_model([node, oh.make_node("Relu", ["x"], ["y"])], [("x", [1])], [("y", None)])
    with pytest.raises(ValueError, match=r"a Constant given as `value_string` is not supported"):
        read_graph(model)
