"""`npconv.onnx.to_model`: ONNX graphs as trainable npconv models.

Without torch: a graph written with onnx.helper (every supported node kind a conv net uses)
against `Evaluator`, in both layouts, gradients against central differences, model files. With
torch: a small CNN exported by torch.onnx.export predicts what torch predicts, keeps torch's
state_dict names, gives torch's gradients, and fine-tunes with `npconv.training.fit`.
"""

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")

from onnx import TensorProto, numpy_helper  # noqa: E402
from onnx import helper as oh  # noqa: E402

from npconv import nn, training  # noqa: E402
from npconv.onnx import Evaluator, GraphModel, UnsupportedOperator, to_model  # noqa: E402


def glue_model(rng, dtype=np.float64):
    """x (N, 3, 8, 8) -> Conv -> BatchNorm -> Relu -> MaxPool -> [Conv -> Clip(0, 6)] + it ->
    Concat(it, depthwise Conv(it)) -> ConvTranspose -> AveragePool -> GlobalAveragePool ->
    Flatten -> Gemm -> Dropout -> Softmax."""
    def w(*shape):
        return rng.normal(scale=0.5, size=shape).astype(dtype)

    c = {"stem.weight": w(4, 3, 3, 3), "bn.weight": w(4), "bn.bias": w(4), "bn.mean": w(4),
         "bn.var": rng.uniform(0.5, 2, 4).astype(dtype), "b1.weight": w(4, 4, 3, 3),
         "b1.bias": w(4), "dw.weight": w(4, 1, 3, 3), "up.weight": w(8, 3, 2, 2),
         "fc.weight": w(5, 3), "fc.bias": w(5), "lo": np.array(0, dtype), "hi": np.array(6, dtype),
         "ratio": np.array(0.25, np.float32)}
    n = oh.make_node
    nodes = [
        n("Conv", ["x", "stem.weight"], ["c0"], pads=[1, 1, 1, 1]),
        n("BatchNormalization", ["c0", "bn.weight", "bn.bias", "bn.mean", "bn.var"], ["b0"]),
        n("Relu", ["b0"], ["r0"]),
        n("MaxPool", ["r0"], ["p0"], kernel_shape=[2, 2], strides=[2, 2]),
        n("Conv", ["p0", "b1.weight", "b1.bias"], ["c1"], auto_pad="SAME_UPPER"),
        n("Clip", ["c1", "lo", "hi"], ["r1"]),
        n("Add", ["r1", "p0"], ["s1"]),
        n("Conv", ["s1", "dw.weight"], ["d1"], group=4, pads=[1, 1, 1, 1]),
        n("Concat", ["s1", "d1"], ["cat"], axis=1),
        n("ConvTranspose", ["cat", "up.weight"], ["u"], strides=[2, 2]),
        n("AveragePool", ["u"], ["a"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
          count_include_pad=0),
        n("GlobalAveragePool", ["a"], ["g"]),
        n("Flatten", ["g"], ["f"]),
        n("Gemm", ["f", "fc.weight", "fc.bias"], ["logits"], transB=1),
        n("Dropout", ["logits", "ratio"], ["dropped"]),
        n("Softmax", ["dropped"], ["y"], axis=1),
    ]
    t = oh.np_dtype_to_tensor_dtype(np.dtype(dtype))
    graph = oh.make_graph(nodes, "glue", [oh.make_tensor_value_info("x", t, ["N", 3, 8, 8])],
                          [oh.make_tensor_value_info("y", t, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    return oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])


def layout(x, data_format):
    return x.transpose(0, 2, 3, 1) if data_format == "channels_last" else x


@pytest.mark.parametrize("data_format", ["channels_last", "channels_first"])
def test_predicts_what_the_evaluator_computes(rng, data_format):
    model = glue_model(rng)
    x = rng.normal(size=(3, 3, 8, 8))
    (want,) = Evaluator(model).run(None, {"x": x})
    net = to_model(model, data_format=data_format)
    assert isinstance(net, GraphModel)
    np.testing.assert_allclose(net.forward(layout(x, data_format)), want, rtol=1e-12)
    net.eval()                                          # Conv + BatchNorm folded: same outputs
    np.testing.assert_allclose(net.forward(layout(x, data_format)), want, rtol=1e-10)
    assert [type(getattr(net, name)).__name__ for name, _, _ in net.steps] == [
        "Conv2d", "BatchNorm2d", "ReLU", "MaxPool2d", "Conv2d", "ReLU6", "Add", "Conv2d",
        "Concat", "ConvTranspose2d", "AvgPool2d", "GlobalAvgPool", "Linear", "Dropout",
        "Softmax"]


def test_state_dict_keeps_the_files_names_and_pytorchs_layout(rng):
    model = glue_model(rng)
    net = to_model(model)
    state = net.state_dict()
    assert {"stem.weight", "bn.weight", "bn.running_mean", "b1.bias", "fc.weight"} <= set(state)
    constants = {t.name: numpy_helper.to_array(t) for t in model.graph.initializer}
    np.testing.assert_array_equal(state["stem.weight"], constants["stem.weight"])  # (F, C, K)
    np.testing.assert_array_equal(state["bn.running_var"], constants["bn.var"])
    np.testing.assert_array_equal(state["fc.weight"], constants["fc.weight"])      # (out, in)


def test_input_gradient_matches_central_differences(rng):
    net = to_model(glue_model(rng))
    x = rng.normal(size=(2, 8, 8, 3))
    dy = rng.normal(size=(2, 5))
    with nn.enable_grad():                              # evaluation mode: Dropout is the identity
        y = net.forward(x)
        dx = net.backward(dy)
    eps = 1e-6
    for i in [(0, 0, 0, 0), (1, 3, 4, 2), (0, 7, 5, 1)]:
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        numeric = ((net.forward(xp) - net.forward(xm)) * dy).sum() / (2 * eps)
        assert dx[i] == pytest.approx(numeric, rel=1e-5, abs=1e-9)
    assert y.shape == (2, 5)


def test_model_files_round_trip(rng, tmp_path):
    net = to_model(glue_model(rng, np.float32))
    x = rng.normal(size=(2, 8, 8, 3)).astype(np.float32)
    nn.save(net, tmp_path / "m.npz")
    back = nn.load(tmp_path / "m.npz")
    assert type(back) is GraphModel and back.config() == net.config()
    np.testing.assert_array_equal(back.forward(x), net.forward(x))


def test_one_output_only_and_names_in_errors(rng):
    model = glue_model(rng)
    model.graph.output.append(oh.make_tensor_value_info("logits", TensorProto.DOUBLE, None))
    with pytest.raises(UnsupportedOperator, match=r"returns one array; the graph has 2 outputs"):
        to_model(model)
    net = to_model(glue_model(rng))
    with pytest.raises(TypeError, match=r"GraphModel.forward takes 1 array\(s\) \(x\); got 2"):
        net.forward(np.zeros((1, 8, 8, 3)), np.zeros((1, 8, 8, 3)))


# ---------------------------------------------------------------------------------------------
# A network exported by torch.onnx.export
# ---------------------------------------------------------------------------------------------


def small_cnn(torch):
    """Conv/ReLU/MaxPool, a residual ReLU6 block, a depthwise branch concatenated, global
    pooling and a Linear head: the shapes of ResNet and MobileNetV2, small."""
    tnn = torch.nn

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = tnn.Conv2d(3, 8, 3, padding=1)
            self.relu = tnn.ReLU()
            self.pool = tnn.MaxPool2d(3, 2, 1)
            self.conv = tnn.Conv2d(8, 8, 3, padding=1)
            self.act = tnn.ReLU6()
            self.dw = tnn.Conv2d(8, 8, 3, padding=1, groups=8)
            self.gap = tnn.AdaptiveAvgPool2d(1)
            self.fc = tnn.Linear(16, 4)

        def forward(self, x):
            x = self.pool(self.relu(self.stem(x)))
            x = self.act(self.conv(x)) + x
            x = torch.cat([x, self.dw(x)], 1)
            return self.fc(torch.flatten(self.gap(x), 1))

    torch.manual_seed(0)
    return Net().double().eval()


@pytest.fixture(scope="module")
def exported(torch, tmp_path_factory):
    """The small CNN and its ONNX file, exported once (dynamo, dynamic batch)."""
    pytest.importorskip("onnxscript")
    import warnings

    net = small_cnn(torch)
    path = tmp_path_factory.mktemp("onnx") / "small.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(net, (torch.zeros(2, 3, 16, 16, dtype=torch.float64),),
                                    dynamo=True, verbose=False,
                                    dynamic_shapes=({0: torch.export.Dim("batch")},))
    program.save(str(path))
    return net, path


@pytest.mark.slow
def test_exported_cnn_predicts_and_trains_like_torch(torch, exported, rng):
    tnet, path = exported
    net = to_model(path)
    x = rng.normal(size=(5, 3, 16, 16))
    tx = torch.tensor(x)
    np.testing.assert_allclose(net.forward(x.transpose(0, 2, 3, 1)),
                               tnet(tx).detach().numpy(), rtol=1e-12)
    # the same names as torch's state_dict, the same arrays
    tstate = {k: v.numpy() for k, v in tnet.state_dict().items()}
    assert set(net.state_dict()) == set(tstate)
    for k, v in net.state_dict().items():
        np.testing.assert_array_equal(v, tstate[k])
    # the gradients of a loss, for every parameter, are torch's
    labels = rng.integers(0, 4, 5)
    loss, dlogits = nn.softmax_cross_entropy(net.forward(x.transpose(0, 2, 3, 1),
                                                         training=True), labels)
    net.backward(dlogits)
    tnet.train()
    tloss = torch.nn.functional.cross_entropy(tnet(tx), torch.tensor(labels))
    tloss.backward()
    assert loss == pytest.approx(tloss.item(), rel=1e-12)
    grads = net.named_grads()
    for k, p in tnet.named_parameters():
        np.testing.assert_allclose(grads[k], p.grad.numpy(), rtol=1e-10, atol=1e-13)


@pytest.mark.slow
def test_exported_cnn_fine_tunes_with_fit(torch, exported, rng):
    _, path = exported
    net = to_model(path)
    x = rng.normal(size=(32, 16, 16, 3))
    y = (x[..., 0].mean(axis=(1, 2)) > 0).astype(np.int64)          # a learnable rule
    history = training.fit(net, x, y, optimizer=nn.Adam(lr=1e-2), epochs=4, batch_size=8,
                           rng=np.random.default_rng(0))
    assert history.loss[-1] < history.loss[0]


@pytest.mark.parametrize("nodes", [
    # the BatchNorm right after a Conv reads another value
    [oh.make_node("Relu", ["x"], ["r"]), oh.make_node("Conv", ["x", "w"], ["c"]),
     oh.make_node("BatchNormalization", ["r", "s", "b", "m", "v"], ["n"]),
     oh.make_node("Add", ["c", "n"], ["y"])],
    # the Conv's output has a second reader
    [oh.make_node("Conv", ["x", "w"], ["c"]),
     oh.make_node("BatchNormalization", ["c", "s", "b", "m", "v"], ["n"]),
     oh.make_node("Add", ["c", "n"], ["y"])],
])
def test_values_read_twice_are_never_overwritten(rng, nodes):
    """eval() folds a BatchNorm only into the convolution it alone reads; layers that may write
    into their input (Add, BatchNorm in evaluation mode) never get a value read again later."""
    c = {"w": rng.normal(size=(3, 3, 1, 1)), "s": rng.normal(size=3), "b": rng.normal(size=3),
         "m": rng.normal(size=3), "v": rng.uniform(0.5, 2, 3)}
    graph = oh.make_graph(nodes, "g", [oh.make_tensor_value_info("x", TensorProto.DOUBLE,
                                                                 [2, 3, 4, 4])],
                          [oh.make_tensor_value_info("y", TensorProto.DOUBLE, None)],
                          initializer=[numpy_helper.from_array(v, k) for k, v in c.items()])
    model = oh.make_model(graph, opset_imports=[oh.make_opsetid("", 22)])
    x = rng.normal(size=(2, 3, 4, 4))
    (want,) = Evaluator(model).run(None, {"x": x})
    want, x = want.transpose(0, 2, 3, 1), np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    net = to_model(model)
    np.testing.assert_allclose(net.forward(x), want, rtol=1e-10, atol=1e-12)
    with nn.enable_grad():                                  # recorded: the tape's rules
        np.testing.assert_allclose(net.forward(x), want, rtol=1e-10, atol=1e-12)
        dx = net.backward(np.ones_like(want))
    eps, i = 1e-6, (1, 2, 3, 0)
    xp, xm = x.copy(), x.copy()
    xp[i] += eps
    xm[i] -= eps
    assert dx[i] == pytest.approx((net.forward(xp) - net.forward(xm)).sum() / (2 * eps),
                                  rel=1e-6)
    np.testing.assert_allclose(net.eval().forward(x), want, rtol=1e-10, atol=1e-12)


def test_layers_that_do_not_exist_or_do_not_fit():
    from npconv.onnx.mapping import LayerSpec
    from npconv.onnx.model import _build

    with pytest.raises(UnsupportedOperator, match=r"no npconv layer 'Nope' for Nope node"):
        _build(LayerSpec("Nope", {}, ("x",), "y", nodes=("Nope node",)))
    with pytest.raises(ValueError, match=r"ReLU for Relu node: weights \['weight'\] do not fit"):
        _build(LayerSpec("ReLU", {}, ("x",), "y", params={"weight": np.ones(2)},
                         nodes=("Relu node",)))
