"""npconv.testing adapters and layouts: every call style reaches the same checks."""

import warnings

import numpy as np
import pytest

import npconv
import npconv.testing
from npconv.testing import (
    Adapter,
    FunctionsAdapter,
    LayerAdapter,
    Layout,
    PoolCase,
    adapt,
    all_cases,
    all_pool_cases,
    run_case,
)
from npconv.testing.adapters import bind

CASE = all_cases(2)[10]                      # 8x8 input, 3x3 kernel, stride 2, padding 1
GROUPED = next(c for c in all_cases(2) if c.groups > 1)


def _conv(x, w, b, stride, padding, dilation=1, groups=1, data_format="channels_last"):
    return npconv.conv(x, w, b, stride=stride, padding=padding, dilation=dilation,
                       groups=groups, data_format=data_format)


def _grads(dy, x, w, stride, padding, dilation=1, groups=1, data_format="channels_last"):
    return npconv.conv_backward(dy, x, w, stride=stride, padding=padding, dilation=dilation,
                                groups=groups, data_format=data_format)


class SeedStyle:
    """forward/backward methods, w/b attributes, dw/db after backward, db kept as (1,1,1,F)."""

    def __init__(self, w, b, stride, pad):
        self.w, self.b, self.stride, self.pad = w, b, stride, pad

    def forward(self, x):
        self.x = x
        return _conv(x, self.w, self.b, self.stride, self.pad)

    def backward(self, dy):
        dx, self.dw, db = _grads(dy, self.x, self.w, self.stride, self.pad)
        self.db = db.reshape(1, 1, 1, -1)
        return dx


class TorchStyle:
    """Builds its own random W (OIHW) and bias (F, 1); gradients in a grads dict; dx stored."""

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0,
                 dilation=1, groups=1, bias=True):
        k = (kernel_size,) * 2 if isinstance(kernel_size, int) else kernel_size
        self.W = np.zeros((out_channels, in_channels // groups, *k))
        self.bias = np.zeros((out_channels, 1))
        self.args = {"stride": stride, "padding": padding, "dilation": dilation,
                     "groups": groups, "data_format": "channels_first"}
        self.grads = {}

    def forward(self, x):
        self.x = x
        return npconv.conv(x, self.W, self.bias.ravel(), **self.args)

    def backward(self, dy):
        self.dX, self.grads["W"], db = npconv.conv_backward(dy, self.x, self.W, **self.args)
        self.grads["bias"] = db.reshape(-1, 1)


def _passes(adapter, case=CASE):
    result = run_case(adapter, case)
    assert result.passed, result.summary()
    return result


def test_layer_in_the_seed_style():
    adapter = LayerAdapter(SeedStyle)
    assert adapter.name == "SeedStyle"
    assert adapter.checks(("y", "dx", "dw", "db")) == ("y", "dx", "dw", "db")
    assert adapter.supports("dilation") is False
    _passes(adapter)


def test_layer_that_builds_its_own_weights_gets_them_assigned():
    adapter = LayerAdapter(TorchStyle, dx="dX", data_format="channels_first")
    assert adapter.supports("groups") is True
    _passes(adapter)
    _passes(adapter, GROUPED)


def test_layer_whose_methods_only_store_their_results():
    class StoresOnly(SeedStyle):                 # as the seed answer itself: no return values
        def forward(self, x):
            self.out = super().forward(x)

        def backward(self, dy):
            self.dout = super().backward(dy)

    _passes(LayerAdapter(StoresOnly))


def test_layer_built_by_a_lambda_and_checked_forward_only():
    adapter = LayerAdapter(lambda w, b, stride, padding: SeedStyle(w, b, stride, padding),
                    backward=None, name="seed")
    assert adapter.checks(("y", "dx", "dw", "db")) == ("y",)
    assert list(_passes(adapter).outputs) == ["y"]


def test_layer_without_bias():
    class NoBias(SeedStyle):
        def __init__(self, w, stride, pad):
            super().__init__(w, None, stride, pad)

    result = _passes(LayerAdapter(NoBias, b=False, db=False))
    assert list(result.outputs) == ["y", "dx", "dw"]


def test_layer_with_weights_of_the_wrong_layout_is_a_finding():
    result = run_case(LayerAdapter(TorchStyle), CASE)                 # W is OIHW, w given as HWIO
    assert result.error.stage == "init"
    assert "attribute `W` has shape (4, 3, 3, 3)" in result.error.message


def test_layer_without_weight_attribute_is_a_finding():
    class Empty:
        def __init__(self, stride, padding):
            pass

        def forward(self, x):
            return x

    result = run_case(LayerAdapter(Empty, backward=None), CASE)
    assert result.error.type_name == "AttributeError"
    assert "no weight attribute found" in result.error.message


def test_functions_by_name_by_position_and_cs231n_style():
    def forward(A_prev, W, b, pad, stride):
        return _conv(A_prev, W, b, stride, pad)

    def backward(dZ, A_prev, W, stride, pad):
        return dict(zip(("dx", "dw", "db"), _grads(dZ, A_prev, W, stride, pad)))

    _passes(FunctionsAdapter(forward, backward))
    _passes(FunctionsAdapter(lambda q, r, s, t, u: _conv(q, r, s, t, u)))         # positional
    _passes(FunctionsAdapter(lambda q, r, s, t, u: _conv(q, r, s, t, u),
                      lambda v, q, r, s, t, u: _grads(v, q, r, t, u)))

    def cs_forward(x, w, b, conv_param):
        y = _conv(x, w, b, conv_param["stride"], conv_param["pad"], data_format="channels_first")
        return y, (x, w, conv_param)

    def cs_backward(dout, cache):
        x, w, p = cache
        return _grads(dout, x, w, p["stride"], p["pad"], data_format="channels_first")

    _passes(FunctionsAdapter(cs_forward, cs_backward, data_format="channels_first"))


def test_exceptions_become_findings_with_their_location():
    def forward(x, w, b, stride, padding):
        if stride != 1:
            raise NotImplementedError("only stride 1")
        return _conv(x, w, b, stride, padding)

    error = run_case(FunctionsAdapter(forward), CASE).error
    assert (error.stage, error.type_name, error.message) == (
        "forward", "NotImplementedError", "only stride 1")
    assert error.location.startswith("test_testing_adapters.py:")
    assert error.location.endswith(" in forward")
    assert str(error).startswith("forward raised NotImplementedError at test_testing_adapters")


def test_bind_by_name_or_position():
    values = {"x": 1, "w": 2, "b": 3, "stride": 4, "padding": 5}
    assert bind(lambda inputs, kernel, bias, strides, pad_size: 0, values, ("x",)) == (
        (), {"inputs": 1, "kernel": 2, "bias": 3, "strides": 4, "pad_size": 5})
    assert bind(lambda a1, a2, a3: 0, values, ("x", "w", "b", "stride")) == ((1, 2, 3), {})
    assert bind(lambda x, w, extra=7: 0, values, ("x",)) == ((), {"x": 1, "w": 2})


@pytest.mark.parametrize("data_format, weight_layout", [
    ("channels_last", "HWIO"), ("channels_first", "OIHW"), ("channels_last", "OHWI"),
    ("channels_first", "IOHW")])
@pytest.mark.parametrize("rank", [1, 2, 3])
def test_layout_round_trips_and_labels(data_format, weight_layout, rank):
    layout = Layout(data_format, weight_layout)
    for kind, ndim in (("x", rank + 2), ("w", rank + 2), ("b", 1)):
        a = np.arange(np.prod(range(2, ndim + 2))).reshape(range(2, ndim + 2))
        np.testing.assert_array_equal(layout.from_user(kind, layout.to_user(kind, a)), a)
    assert sorted(layout.labels("w", rank)) == sorted(Layout().labels("w", rank))
    assert layout.labels("x", 2)[1] == ("C" if data_format == "channels_first" else "H")


def test_adapt_wraps_classes_and_functions_and_passes_adapters_through():
    assert isinstance(adapt(SeedStyle), LayerAdapter)
    assert isinstance(adapt(_conv), FunctionsAdapter)
    layer = LayerAdapter(SeedStyle)
    assert adapt(layer) is layer


@pytest.mark.parametrize("call, error, match", [
    (lambda: Layout("nhwc"), ValueError, "`data_format` must be one of"),
    (lambda: Layout(weight_layout="HWOI"), ValueError, "`weight_layout` must be one of"),
    (lambda: LayerAdapter(3), TypeError, "`factory` must be a class or a callable; got 3"),
    (lambda: LayerAdapter(SeedStyle, dw=1), TypeError, "`dw` must be an attribute name"),
    (lambda: LayerAdapter(SeedStyle, forward=None), TypeError,
     "`forward` and `backward` must be"),
    (lambda: LayerAdapter(SeedStyle, backward="grad"), TypeError,
     "must have a `grad` method"),
    (lambda: LayerAdapter(lambda a, b, c, d, e, f, g: 0).validate("conv"), TypeError,
     "cannot tell how to call"),
    (lambda: FunctionsAdapter(None), TypeError, "`forward` must be a function; got None"),
    (lambda: FunctionsAdapter(_conv, 3), TypeError, "`backward` must be a function; got 3"),
    (lambda: adapt(LayerAdapter(SeedStyle), data_format="channels_first"), ValueError,
     "pass backward, data_format and weight_layout to the adapter itself"),
    (lambda: adapt(SeedStyle, _conv), TypeError, "`backward` must be None for a layer class"),
    (lambda: adapt(3), TypeError, "`forward` must be a layer class, a function or an Adapter"),
])
def test_adapter_errors(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_base_adapter_needs_a_run_method():
    with pytest.raises(NotImplementedError):
        Adapter().run(CASE, {})


def test_the_old_names_still_work_with_a_deprecation_warning():
    with pytest.warns(DeprecationWarning, match="npconv.testing.Layer is now "
                                                "npconv.testing.LayerAdapter"):
        assert npconv.testing.Layer is LayerAdapter
    with pytest.warns(DeprecationWarning, match="Functions is now npconv.testing.Functions"):
        assert npconv.testing.Functions is FunctionsAdapter
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from npconv.testing import LayerAdapter as again  # the new names do not warn
    assert again is LayerAdapter
    with pytest.raises(AttributeError, match="has no attribute 'Layers'"):
        _ = npconv.testing.Layers


def test_sys_exit_in_the_code_is_a_finding_not_an_exit():
    def forward(x, w, b, stride, padding):
        raise SystemExit(3)

    error = run_case(FunctionsAdapter(forward), CASE).error
    assert (error.stage, error.type_name, error.message) == ("forward", "SystemExit", "3")
    assert str(error).startswith("forward called sys.exit(3) at test_testing_adapters.py:")


def test_int_annotations_are_read_from_the_signature():
    class Annotated(SeedStyle):
        def __init__(self, w, b, stride: int, pad: int, dilation: "int | tuple" = 1):
            super().__init__(w, b, stride, pad)

    adapter = LayerAdapter(Annotated)
    assert adapter.int_only() == {"stride": "stride", "padding": "pad"}
    assert LayerAdapter(SeedStyle).int_only() == {}


def _pool(x, kernel_size, stride, padding, data_format="channels_last"):
    return npconv.max_pool(x, kernel_size, stride=stride, padding=padding,
                           data_format=data_format)


def _pool_grad(dy, x, kernel_size, stride, padding, data_format="channels_last"):
    return npconv.max_pool_backward(dy, x, kernel_size, stride=stride, padding=padding,
                                    data_format=data_format)


class SaitoPooling:
    """The constructor of "Deep Learning from Scratch": Pooling(pool_h, pool_w, stride, pad),
    channels_first."""

    def __init__(self, pool_h, pool_w, stride=2, pad=0):
        self.k, self.stride, self.pad = (pool_h, pool_w), stride, pad

    def forward(self, x):
        self.x = x
        return _pool(x, self.k, self.stride, self.pad, "channels_first")

    def backward(self, dout):
        return _pool_grad(dout, self.x, self.k, self.stride, self.pad, "channels_first")


POOL_CASE = all_pool_cases("max")[7]             # 5x5, kernel 3, stride 2, padding 1


def test_pooling_layers_and_functions_in_their_usual_styles():
    assert POOL_CASE.pads == ((1, 1), (1, 1))
    _passes(LayerAdapter(SaitoPooling, data_format="channels_first"), POOL_CASE)
    _passes(FunctionsAdapter(_pool, _pool_grad), POOL_CASE)

    def cs_forward(x, pool_param):
        k = (pool_param["pool_height"], pool_param["pool_width"])
        return _pool(x, k, pool_param["stride"], 0, "channels_first"), (x, pool_param)

    def cs_backward(dout, cache):
        x, p = cache
        return _pool_grad(dout, x, (p["pool_height"], p["pool_width"]), p["stride"], 0,
                          "channels_first")

    tile = all_pool_cases("max")[0]
    result = _passes(FunctionsAdapter(cs_forward, cs_backward, data_format="channels_first"),
                     tile)
    assert list(result.outputs) == ["y", "dx"]
    assert LayerAdapter(SaitoPooling).supports("padding", "pool")
    assert not LayerAdapter(SaitoPooling).supports("ceil_mode", "pool")


def test_pooling_cases_have_no_weights_to_assign():
    case = PoolCase("avg", 1, 2, (4, 4), (2, 2), (2, 2), ((0, 0), (0, 0)), (1, 1))

    class Avg:
        def __init__(self, kernel_size, stride):
            self.k, self.s = kernel_size, stride

        def forward(self, x):
            self.shape = x.shape
            return npconv.avg_pool(x, self.k, stride=self.s)

        def backward(self, dy):
            return npconv.avg_pool_backward(dy, self.shape, self.k, stride=self.s)

    assert not hasattr(run_case(LayerAdapter(Avg), case), "w")
    _passes(LayerAdapter(Avg), case)


def test_the_globals_of_the_code_are_where_the_view_check_goes():
    spaces = LayerAdapter(SeedStyle).namespaces()
    assert any(space is globals() for space in spaces)
    assert FunctionsAdapter(_conv, _grads).namespaces() == [globals()]
