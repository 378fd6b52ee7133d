"""nn.Module: the derived backward against central differences (residual sums, a layer called
twice, several inputs, nesting, Concat), what the tape refuses, evaluation mode keeping
nothing, state_dict / load_state_dict, batch-norm folding, and the rest of the library with
Modules: fit, save / load, to(xp), data-parallel training."""

import gc
import re
import tracemalloc

import numpy as np
import pytest
from helpers import central_difference, rel_err

import npconv
from npconv import models, nn, training
from npconv.nn import serialization

R = np.random.default_rng
F64 = dict(dtype="float64")
FORMATS = ("channels_last", "channels_first")


def grad_close(a, b, tol=1e-7) -> bool:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    assert a.shape == b.shape, (a.shape, b.shape)
    return float(np.abs(a - b).max(initial=0.0)) <= tol * max(np.abs(b).max(initial=0.0), 1.0)


def image(rng, n, size, c, fmt="channels_last"):
    x = rng.standard_normal((n, *size, c))
    return np.ascontiguousarray(np.moveaxis(x, -1, 1)) if fmt == "channels_first" else x


def check_gradients(model, xs, training=True):
    """Every input gradient and parameter gradient of sum(dy * model(*xs)) against central
    differences."""
    def run():
        return model.forward(*xs, training=training)

    dy = R(99).standard_normal(run().shape)
    with nn.enable_grad():
        run()
    dxs = model.backward(dy)
    dxs = dxs if isinstance(dxs, tuple) else (dxs,)
    grads = {k: g.copy() for k, g in model.grads.items()}
    assert sorted(grads) == sorted(model.params)

    def loss():
        return float(np.sum(dy * run()))

    for i, (x, dx) in enumerate(zip(xs, dxs, strict=True)):
        assert grad_close(dx, central_difference(loss, x)), f"input {i}"
    for key, p in model.params.items():
        assert grad_close(grads[key], central_difference(loss, p)), key


class Residual(nn.Module):
    """conv, batch norm, in-place ReLU, the SAME conv again (shared weights), + x, ReLU."""

    def __init__(self, channels: int = 3, data_format: str = "channels_last") -> None:
        super().__init__()
        self.channels, self.data_format = channels, data_format
        f = dict(data_format=data_format, **F64)
        self.conv = nn.Conv2d(channels, channels, 3, padding=1, rng=R(0), **f)
        self.bn = nn.BatchNorm2d(channels, **f)
        self.relu = nn.ReLU(inplace=True)

    def config(self):
        return dict(channels=self.channels, data_format=self.data_format)

    def forward(self, x):
        out = self.relu(self.bn(self.conv(x)))
        out = self.conv(out)                                      # called twice: grads add
        return self.relu(nn.add(out, x))


class Merge(nn.Module):
    """Two inputs: a 1x1 conv of x concatenated with skip, then a nested Sequential."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Conv2d(2, 3, 1, rng=R(1), **F64)
        self.tail = nn.Sequential(nn.Conv2d(5, 2, 3, padding=1, rng=R(2), **F64), nn.Tanh())

    def forward(self, x, skip):
        return self.tail(nn.concat(self.proj(x), skip))


class Outer(nn.Module):
    """x feeds both a conv and, as the skip connection, the nested two-input Merge."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, rng=R(3), **F64)
        self.merge = Merge()
        self.pool = nn.AdaptiveAvgPool2d((2, 1))

    def forward(self, x):
        return self.pool(self.merge(self.conv(x), x))


@pytest.mark.parametrize("fmt", FORMATS)
def test_residual_block_gradients(fmt):
    check_gradients(Residual(3, fmt), (image(R(4), 3, (4, 5), 3, fmt),))


def test_nested_modules_with_two_inputs():
    x = image(R(5), 2, (4, 3), 2)
    check_gradients(Outer(), (x,))
    check_gradients(Merge(), (x, image(R(6), 2, (4, 3), 2)))        # a tuple of two dx


def test_shared_layer_in_a_sequential():
    conv = nn.Conv2d(2, 2, 3, padding=1, rng=R(7), **F64)
    model = nn.Sequential(conv, nn.Tanh(), conv)
    assert sorted(model.params) == ["0.bias", "0.weight"]          # one name per array
    check_gradients(model, (image(R(8), 2, (3, 3), 2),))


def test_evaluation_mode_gradients_with_enable_grad():
    """Input and parameter gradients of a model in evaluation mode (batch norm frozen, its
    running statistics away from 0 and 1) on request."""
    model = Residual()
    model.bn.buffers["running_mean"][...] = [0.3, -0.2, 0.1]
    model.bn.buffers["running_var"][...] = [0.5, 1.5, 2.0]
    check_gradients(model, (image(R(11), 2, (3, 4), 3),), training=False)


class Counted(nn.Tanh):
    """Tanh counting its backward calls; its backward(dy) predates `input_grad`."""

    calls = 0

    def backward(self, dy):
        Counted.calls += 1
        return super().backward(dy)


class Stem(nn.Module):
    """A parameter-free layer on the input, then a strided conv, a nested Module (Outer: x
    feeds two branches) and a Linear head: what input_grad=False may skip and what not."""

    def __init__(self, data_format: str = "channels_last") -> None:
        super().__init__()
        f = dict(data_format=data_format, **F64)
        self.pre = Counted()
        self.conv = nn.Conv2d(2, 2, 3, stride=2, padding=1, rng=R(12), **f)
        self.outer = Outer() if data_format == "channels_last" else nn.Identity()
        self.flat = nn.Flatten()
        self.head = nn.Linear(4 if data_format == "channels_last" else 12, 3, rng=R(13), **F64)

    def forward(self, x):
        return self.head(self.flat(self.outer(self.conv(self.pre(x)))))


def backward_twice(model, xs, **kw):
    """(dx, grads) of one recorded forward with kw, the grads copied."""
    with nn.enable_grad():
        y = model.forward(*xs)
    dx = model.backward(R(14).standard_normal(y.shape), **kw)
    return dx, {k: g.copy() for k, g in model.grads.items()}


@pytest.mark.parametrize("fmt", FORMATS)
def test_backward_without_the_input_gradient(fmt, monkeypatch):
    """input_grad=False: the same parameter gradients (bit for bit), None for dx, the first
    convolution's input gradient never computed, the parameter-free layer before it never
    called."""
    from npconv import _kernels

    model, x = Stem(fmt), image(R(15), 2, (6, 4), 2, fmt)
    calls = []
    grad_input = _kernels.grad_input
    monkeypatch.setattr(_kernels, "grad_input", lambda *a, **k: calls.append(1) or
                        grad_input(*a, **k))
    Counted.calls = 0
    dx, full = backward_twice(model, (x,))
    assert dx.shape == x.shape and Counted.calls == 1
    with_dx = len(calls)
    Counted.calls, calls[:] = 0, []
    none, grads = backward_twice(model, (x,), input_grad=False)
    assert none is None and Counted.calls == 0
    assert len(calls) == with_dx - 1                              # the stem's dx only
    assert grads.keys() == full.keys()
    for key in full:
        np.testing.assert_array_equal(grads[key], full[key], err_msg=key)


def test_backward_without_the_input_gradient_of_several_inputs_and_old_layers():
    """A Module of two inputs returns None; a leading layer whose backward has no
    `input_grad` (a Layer written before it) computes its dx, which is dropped."""
    x, skip = image(R(16), 2, (4, 3), 2), image(R(17), 2, (4, 3), 2)
    merge = Merge()
    _, full = backward_twice(merge, (x, skip))
    none, grads = backward_twice(merge, (x, skip), input_grad=False)
    assert none is None
    assert all(np.array_equal(grads[k], full[k]) for k in full)

    class Old(nn.Linear):
        def backward(self, dy):                                 # no input_grad option
            return super().backward(dy)

    model = nn.Sequential(Old(3, 4, rng=R(18), **F64), nn.Tanh(), nn.Linear(4, 2, rng=R(19),
                                                                          **F64))
    assert not nn.module.takes_input_grad(model[0]) and nn.module.takes_input_grad(model)
    data = R(20).standard_normal((5, 3))
    _, full = backward_twice(model, (data,))
    assert backward_twice(model, (data,), input_grad=False)[0] is None
    assert all(np.array_equal(model.grads[k], full[k]) for k in full)


def test_layers_without_the_input_gradient():
    """Conv and Linear alone: grads equal, None returned; a non-bool flag is a TypeError."""
    for layer, shape in ((nn.Conv2d(2, 3, 3, rng=R(21), **F64), (2, 5, 5, 2)),
                         (nn.Linear(4, 3, rng=R(22), **F64), (5, 4))):
        x = R(23).standard_normal(shape)
        _, full = backward_twice(layer, (x,))
        assert backward_twice(layer, (x,), input_grad=False)[0] is None
        assert all(np.array_equal(layer.grads[k], full[k]) for k in full)
        with nn.enable_grad():
            y = layer.forward(x)
        with pytest.raises(TypeError, match="`input_grad` must be True or False; got 0"):
            layer.backward(np.ones_like(y), input_grad=0)
    model = nn.Sequential(nn.Linear(4, 3, rng=R(24)))
    model.forward(np.ones((2, 4), np.float32), training=True)
    with pytest.raises(TypeError, match="`input_grad` must be True or False; got 'no'"):
        model.backward(np.ones((2, 3), np.float32), input_grad="no")


def test_conv_backward_without_the_input_gradient():
    import npconv

    x, w = R(28).standard_normal((2, 6, 6, 3)), R(29).standard_normal((3, 3, 3, 4))
    dy = R(30).standard_normal((2, 2, 2, 4))
    full = npconv.conv_backward(dy, x, w, stride=2)
    part = npconv.conv_backward(dy, x, w, stride=2, input_grad=False)
    assert part.dx is None
    np.testing.assert_array_equal(part.dw, full.dw)
    np.testing.assert_array_equal(part.db, full.db)
    with pytest.raises(TypeError, match="`input_grad` must be True or False; got 1"):
        npconv.conv_backward(dy, x, w, stride=2, input_grad=1)


def test_train_step_skips_the_input_gradient(monkeypatch):
    """fit's step asks the model for parameter gradients only: a first convolution of a
    model computes no input gradient in training."""
    from npconv import _kernels

    calls = []
    grad_input = _kernels.grad_input
    monkeypatch.setattr(_kernels, "grad_input", lambda *a, **k: calls.append(1) or
                        grad_input(*a, **k))
    model = nn.Sequential(nn.Conv2d(1, 2, 3, rng=R(25)), nn.Flatten(), nn.Linear(18, 3,
                                                                            rng=R(26)))
    x, y = R(27).standard_normal((4, 5, 5, 1)).astype(np.float32), np.array([0, 1, 2, 0])
    training.train_step(model, x, y, nn.SGD(lr=0.1))
    assert calls == []


class Reuse(nn.Module):
    """conv -> bn -> relu -> conv, plus the first conv's output read again after the batch
    norm (by a second conv, which keeps it for its backward) and the ReLU output read twice."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 3, 3, padding=1, rng=R(31), **F64)
        self.bn = nn.BatchNorm2d(3, **F64)
        self.relu = nn.ReLU()
        self.side = nn.Conv2d(3, 3, 1, rng=R(32), **F64)
        self.head = nn.Conv2d(3, 3, 3, padding=1, rng=R(33), **F64)

    def forward(self, x):
        c = self.conv(x)
        r = self.relu(self.bn(c))
        return nn.add(nn.add(self.head(r), self.side(c)), self.side(r))


def test_backward_writes_into_arrays_the_forward_owned(monkeypatch):
    """In a recorded forward, a batch norm's input that the forward made and nothing had used
    (a convolution's output), and an activation's output, are dead once backward has passed
    their layer: dx is written into them, no new activation-sized array. The gradients stay
    those of the definition, also where the array is read again after the batch norm."""
    from npconv.nn import module

    model, x = Reuse(), image(R(34), 2, (5, 4), 2)
    check_gradients(model, (x,))
    outputs, grads = {}, {}
    call, back = module.Layer.__call__, module._layer_backward

    def traced(self, *a, **k):
        outputs[id(self)] = y = call(self, *a, **k)
        return y

    def traced_back(layer, *a):
        grads[id(layer)] = dx = back(layer, *a)
        return dx

    monkeypatch.setattr(module.Layer, "__call__", traced)
    monkeypatch.setattr(module, "_layer_backward", traced_back)
    y = model.forward(x, training=True)
    model.backward(np.ones_like(y))
    assert np.shares_memory(grads[id(model.bn)], outputs[id(model.conv)])
    assert np.shares_memory(grads[id(model.relu)], outputs[id(model.relu)])
    relu, bn = nn.ReLU(), nn.BatchNorm2d(2, **F64)               # no Module: the caller's
    y, z = relu.forward(x, training=True), bn.forward(x, training=True)
    kept = y.copy()
    assert not np.shares_memory(relu.backward(-y), y) and np.array_equal(y, kept)
    assert not np.shares_memory(bn.backward(z), x)


class Branchy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Linear(3, 3, rng=R(0), **F64)
        self.b = nn.Linear(3, 3, rng=R(1), **F64)
        self.use_b = True

    def forward(self, x):
        return self.b(self.a(x)) if self.use_b else self.a(x)


def test_layers_the_forward_did_not_reach_get_zero_gradients():
    model = Branchy()
    x = R(0).standard_normal((4, 3))
    model.forward(x, training=True)
    model.backward(np.ones((4, 3)))
    assert np.abs(model.grads["b.weight"]).max() > 0
    model.use_b = False
    model.forward(x, training=True)
    model.backward(np.ones((4, 3)))
    assert not model.grads["b.weight"].any() and not model.grads["b.bias"].any()


# ---------------------------------------------------------------------------------------------
# What the tape refuses
# ---------------------------------------------------------------------------------------------


class Arithmetic(nn.Module):
    def __init__(self, how: str) -> None:
        super().__init__()
        self.how = how
        self.conv = nn.Conv2d(2, 2, 1, rng=R(0))
        self.relu = nn.ReLU()

    def forward(self, x):
        out = self.conv(x)
        if self.how == "untraced input":
            return self.relu(out * 2)
        if self.how == "untraced result":
            return out + x
        out += x                                                   # "in place"
        return self.relu(out)


X = np.ones((1, 3, 3, 2), np.float32)


@pytest.mark.parametrize("how, match", [
    ("untraced input", r"argument 0 of the call to ReLU\(\) is an array of shape \(1, 3, 3, 2\) "
                       r"that no recorded layer call produced.*nn.add"),
    ("untraced result", r"the result of forward is an array .* no recorded layer call"),
    ("in place", r"read-only.*out \+= identity.*nn.add"),
])
def test_arithmetic_between_layers_is_refused_when_recorded(how, match):
    model = Arithmetic(how)
    with pytest.raises(ValueError, match=match):
        model.forward(X, training=True)
    assert model.forward(X).shape == X.shape                      # evaluation: plain NumPy


def test_backward_needs_a_recorded_forward():
    model = Residual()
    x = image(R(0), 2, (3, 3), 3)
    with pytest.raises(RuntimeError, match="without a recorded forward"):
        model.backward(x)
    model.forward(x)                                               # evaluation: keeps nothing
    with pytest.raises(RuntimeError, match="enable_grad"):
        model.backward(x)
    model.forward(x, training=True)
    model.backward(x)
    with pytest.raises(RuntimeError, match="uses up its forward's record"):
        model.backward(x)                                          # one backward per forward


def test_module_errors():
    class NoInit(nn.Module):
        def __init__(self):
            self.conv = nn.Linear(2, 2)

    with pytest.raises(AttributeError, match=r"call super\(\).__init__\(\) before"):
        NoInit()
    model = Residual()
    with pytest.raises(TypeError, match=r"Residual.conv is a child layer"):
        model.conv = np.zeros(3)
    with pytest.raises(NotImplementedError, match="must define forward"):
        nn.Module().forward(X)
    with pytest.raises(TypeError, match="Sequential takes Layer instances; argument 1"):
        nn.Sequential(nn.ReLU(), "relu")
    seq = nn.Sequential(nn.ReLU())
    with pytest.raises(TypeError, match="must be Layer instances"):
        seq[0] = "relu"
    x = image(R(0), 2, (3, 3), 3)
    model.forward(x, training=True)
    with pytest.raises(ValueError, match=r"`dy` must have the shape .* \(2, 3, 3, 3\)"):
        model.backward(np.zeros((2, 3)))
    model.forward(x, training=True)
    with pytest.raises(TypeError, match="`dy` must be an array"):
        model.backward([1.0])


# ---------------------------------------------------------------------------------------------
# Memory: evaluation keeps nothing; the caller's arrays are left alone
# ---------------------------------------------------------------------------------------------


def test_evaluation_mode_keeps_nothing_and_no_grad_keeps_nothing_in_training():
    model = models.resnet18(num_classes=3, width=2, rng=R(0))
    x = image(R(1), 2, (16, 16), 3).astype(np.float32)
    model.forward(x)
    assert all(layer._cache is None for layer in model.modules())
    with nn.no_grad():
        model.forward(x, training=True)
    assert all(layer._cache is None for layer in model.modules())
    assert int(model.buffers["bn1.num_batches_tracked"]) == 1     # statistics still updated
    model.forward(x, training=True)
    assert model._cache is not None


probed: list = []


def blas_threads():
    """BLAS's thread count now, or None without threadpoolctl."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:                                          # pragma: no cover
        return None
    return min((i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"),
               default=None)


class Probe(nn.Identity):
    """Identity noting in probed, per forward and backward, the window-matrix size below which
    convolutions run serially and BLAS's thread count."""

    def note(self, kind):
        from npconv import _config
        probed.append((kind, _config.current().tuning.min_parallel_bytes, blas_threads()))

    def forward(self, x, training: bool = False):
        self.note("fwd")
        return super().forward(x, training=training)

    def backward(self, dy):
        self.note("bwd")
        return super().backward(dy)


@pytest.mark.parametrize("large", [False, True])
def test_a_network_pass_holds_blas_to_one_thread_from_its_first_worker_run_layer(
        large, monkeypatch):
    """A forward of at least one image per worker (evaluation or training) and the backward
    after it run in a network pass (`_chunks.network_pass`): convolutions on the workers but
    the smallest, and BLAS held to one thread from the first that runs there to the end of the
    pass, and through the backward of a forward that held it. A pass whose layers are all
    small keeps BLAS's threads; a smaller batch and a layer called alone keep the per-layer
    rule. `large`: the pass's thresholds at 0, so that the tiny convolution counts as large."""
    from npconv import _chunks, _config
    if large:
        monkeypatch.setattr(_chunks, "PASS_SERIAL_BYTES", 0)
        monkeypatch.setattr(_chunks, "PASS_SERIAL_MACS", 0)
    default, free = _config.current().tuning.min_parallel_bytes, blas_threads()
    held = free if free is None or not large else 1             # after a worker-run conv
    model = nn.Sequential(nn.Conv2d(2, 2, 3, rng=R(0)), Probe())
    x = R(1).standard_normal((2, 6, 6, 2)).astype(np.float32)
    in_pass, per_layer = (_chunks.PASS_SERIAL_BYTES, held), (default, free)
    cases = [(dict(threads=2), x, {}, in_pass), (dict(threads=3), x, {}, per_layer),
             (dict(threads=1), x[:1], {}, (_chunks.PASS_SERIAL_BYTES, free)),
             (dict(threads=2), x[:1], {}, per_layer),
             (dict(threads=2), x, dict(training=True), in_pass),
             (dict(threads=2), x[:1], dict(training=True), per_layer)]
    for settings, xs, kw, (limit, threads) in cases:
        probed.clear()
        with npconv.config(**settings):
            y = model.forward(xs, **kw)
            assert blas_threads() == free                        # given back
            if kw:
                model.backward(np.ones_like(y))
            Probe().forward(xs)
        passes = [("fwd", limit, threads), *[("bwd", limit, threads)] * bool(kw)]
        assert probed == [*passes, ("fwd", default, free)], (settings, xs.shape, kw)
        assert blas_threads() == free
    probed.clear()
    with nn.enable_grad(), npconv.config(threads=2):
        model.forward(x)
    assert probed == [("fwd", _chunks.PASS_SERIAL_BYTES, held)]


def live_memory(model, x, monkeypatch, **kw):
    """(the most memory held between two layer calls, the memory held at the end) of one
    forward, as tracemalloc counts it: what the composition keeps, without the transient
    workspace of each op, nor the garbage cycles (threadpoolctl's, a window view's) that the
    collector has yet to free: 25-30 KB, a tenth of the activation, once the test ran alone."""
    from npconv.nn import module

    call, seen = module.Layer.__call__, []

    def traced(self, *args, **kwargs):
        y = call(self, *args, **kwargs)
        seen.append(tracemalloc.get_traced_memory()[0])
        return y

    monkeypatch.setattr(module.Layer, "__call__", traced)
    tracemalloc.start()
    try:
        y = model.forward(x, **kw)
        gc.collect()
        end = tracemalloc.get_traced_memory()[0] - y.nbytes
    finally:
        tracemalloc.stop()
        monkeypatch.undo()
    return max(seen), end


def test_inference_keeps_about_two_activations(monkeypatch):
    """Between layer calls an evaluation forward of a ResNet-18 holds at most about two of its
    largest activations (the stem's convolution output and the max pool's; in a block, its
    input for the shortcut and two convolution outputs at a quarter of that size); nothing
    stays once it returns. A training forward keeps every activation for backward."""
    model = models.resnet18(num_classes=10, width=16, rng=R(0)).eval()
    x = R(1).standard_normal((4, 64, 64, 3)).astype(np.float32)
    model.forward(x)                                               # warm the workspace pool
    activation = 4 * 32 * 32 * 16 * 4                              # the stem's output, bytes
    most, end = live_memory(model, x, monkeypatch)
    assert most < 1.5 * activation and end < 0.1 * activation, (most, end, activation)
    most, end = live_memory(model, x, monkeypatch, training=True)
    assert end > 6 * activation, (end, activation)


def test_callers_arrays_are_left_alone():
    model = Residual()
    x = image(R(0), 2, (3, 3), 3)
    x.flags.writeable = False
    before = x.copy()
    for mode in (False, True):
        y = model.forward(x, training=mode)
        assert y.flags.writeable and np.array_equal(x, before) and not x.flags.writeable
        assert not np.shares_memory(y, x)


class Owner(nn.Module):
    """Records what Add returned, to check where it wrote."""

    def __init__(self) -> None:
        super().__init__()
        self.bn = nn.BatchNorm2d(2, **F64)
        self.relu = nn.ReLU(inplace=True)
        self.inplace = True

    def forward(self, x):
        a = self.bn(x)
        s = nn.add(a, x, inplace=self.inplace)
        r = self.relu(s)
        self.seen = (a, s, r)
        return r


@pytest.mark.parametrize("training", [False, True])
def test_add_and_relu_write_into_arrays_the_forward_owns(training):
    model = Owner()
    model.inplace = True
    x = image(R(0), 2, (3, 3), 2)
    before = x.copy()
    y = model.forward(x, training=training)
    a, s, r = model.seen
    assert s is a and r is a                                       # no new activation
    assert (y is r) != training and np.array_equal(y, r)          # a copy of what ReLU keeps
    assert np.array_equal(x, before)
    assert nn.add(x, x, inplace=True) is not x and np.array_equal(x, before)   # outside: new
    model.inplace = False                                          # Add's default: a new sum
    model.forward(x, training=training)
    a, s, r = model.seen
    assert s is not a and r is s


# Random forward code over a few layers whose calls reuse earlier arrays at random: what the
# library does in place on its own must never show. Each step is (kind, input indices, inplace)
# over the list of arrays so far (index 0: the input).
_KINDS = ("conv", "bn", "relu", "relu6", "hardswish", "add", "add3", "identity")


def _program(rng, steps: int, safe_inplace: bool) -> list:
    program = []
    for i in range(steps):
        kind = _KINDS[rng.integers(len(_KINDS))]
        arity = 3 if kind == "add3" else 2 if kind == "add" else 1
        program.append([kind, [int(rng.integers(i + 1)) for _ in range(arity)], False])
    program.append(["add", [steps, int(rng.integers(steps))], False])    # reads an early array
    if safe_inplace:                       # in place where the inputs are not read afterwards
        last = {}
        for i, (_, ins, _) in enumerate(program):
            for j in ins:
                last[j] = i
        for i, step in enumerate(program):
            step[2] = bool(rng.integers(2)) and all(last[j] == i for j in step[1]) \
                and len(set(step[1])) == len(step[1])
    return program


def _program_layer(kind: str, inplace: bool, rng):
    if kind == "conv":
        return nn.Conv2d(2, 2, 3, padding=1, rng=rng, **F64)
    if kind == "bn":
        bn = nn.BatchNorm2d(2, **F64)
        bn.buffers["running_mean"][...] = rng.standard_normal(2)
        bn.params["weight"][...] = rng.uniform(0.5, 2, 2)
        return bn
    if kind in ("add", "add3"):
        return nn.Add(inplace)
    if kind == "identity":
        return nn.Identity()
    return {"relu": nn.ReLU, "relu6": nn.ReLU6, "hardswish": nn.Hardswish}[kind](inplace=inplace)


class Program(nn.Module):
    def __init__(self, program: list, seed: int) -> None:
        super().__init__()
        self.program, rng = program, R(seed)
        for i, (kind, _, inplace) in enumerate(program):
            setattr(self, f"l{i}", _program_layer(kind, inplace, rng))

    def forward(self, x):
        values = [x]
        for i, (_, ins, _) in enumerate(self.program):
            values.append(getattr(self, f"l{i}")(*(values[j] for j in ins)))
        return values[-1]

    def plain(self, x, training: bool):
        """The same calls outside a Module, every input a fresh copy: nothing in place."""
        values = [x]
        for i, (_, ins, _) in enumerate(self.program):
            layer = getattr(self, f"l{i}")
            values.append(layer.forward(*(values[j].copy() for j in ins), training=training))
        return values[-1]


@pytest.mark.parametrize("safe_inplace", [False, True])
@pytest.mark.parametrize("seed", range(12))
def test_random_forward_code_never_sees_an_overwrite(seed, safe_inplace):
    """Forward results (evaluation and training mode) equal the same calls made on copies,
    with Add's and the activations' defaults and with inplace=True wherever the forward code
    does not read an input again; gradients equal central differences (backward's own writes
    into dead arrays)."""
    rng = R(seed)
    program = _program(rng, 7, safe_inplace)
    x = image(rng, 2, (3, 3), 2)
    x0 = x.copy()
    for mode in (False, True):
        model, plain = Program(program, seed), Program(program, seed)
        for grad in (False, True):
            with nn.enable_grad() if grad else nn.no_grad():
                y = model.forward(x, training=mode)
            assert x.flags.writeable and np.array_equal(x, x0)   # the caller's: untouched
            want = plain.plain(x, mode)
            np.testing.assert_allclose(y, want, rtol=1e-13, atol=1e-13,
                                       err_msg=f"{program} training={mode} grad={grad}")
    check_gradients(Program(program, seed), (x,), training=True)
    check_gradients(Program(program, seed), (x,), training=False)


# ---------------------------------------------------------------------------------------------
# state_dict
# ---------------------------------------------------------------------------------------------


def small_resnet(**kw):
    return models.resnet18(num_classes=4, width=2, rng=R(0), **kw)


@pytest.mark.parametrize("fmt", FORMATS)
def test_state_dict_uses_pytorch_layouts_and_shares_memory(fmt):
    model = small_resnet(data_format=fmt)
    state = model.state_dict()
    assert state["conv1.weight"].shape == (2, 3, 7, 7)            # (F, C, kh, kw)
    assert state["fc.weight"].shape == (4, 16)                    # (out, in)
    assert state["layer1.0.bn1.num_batches_tracked"].shape == ()
    assert np.shares_memory(state["conv1.weight"], model.params["conv1.weight"])
    other = small_resnet(data_format=FORMATS[fmt == "channels_last"])
    other.load_state_dict(state)                                   # the other layout
    x = image(R(1), 2, (16, 16), 3, fmt)
    x_other = np.moveaxis(x, -1, 1) if fmt == "channels_last" else np.moveaxis(x, 1, -1)
    assert rel_err(model.forward(x.astype(np.float32)),
                   other.forward(np.ascontiguousarray(x_other, np.float32))) < 1e-5


def test_load_state_dict_reports_every_problem_at_once():
    model = small_resnet()
    state = {k: np.array(v) for k, v in model.state_dict().items()}
    del state["fc.bias"], state["layer1.0.bn1.running_var"]
    state["head.weight"] = np.zeros(3)
    state["conv1.weight"] = np.zeros((2, 3, 5, 5))
    state["layer1.0.conv1.weight"] = "not an array"
    before = model.params["bn1.weight"].copy()
    state["bn1.weight"] = before + 1
    with pytest.raises(ValueError) as info:
        model.load_state_dict(state)
    message = str(info.value)
    for part in (r"missing keys \(2\): layer1.0.bn1.running_var, fc.bias",
                 r"unexpected keys \(1\): head.weight",
                 r"conv1.weight: shape mismatch: expected \(2, 3, 7, 7\) \(PyTorch's layout\), "
                 r"got \(2, 3, 5, 5\)",
                 r"layer1.0.conv1.weight: expected a numeric array; got str"):
        assert re.search(part, message), part
    assert np.array_equal(model.params["bn1.weight"], before)     # nothing written
    with pytest.raises(ValueError, match=r"conv1.weight: shape mismatch"):
        model.load_state_dict(state, strict=False)                 # shapes always count
    del state["conv1.weight"], state["layer1.0.conv1.weight"]
    result = model.load_state_dict(state, strict=False)
    assert result.missing_keys == sorted(["fc.bias", "layer1.0.bn1.running_var",
                                          "conv1.weight", "layer1.0.conv1.weight"])
    assert result.unexpected_keys == ["head.weight"]
    assert np.array_equal(model.params["bn1.weight"], before + 1)
    with pytest.raises(TypeError, match="`state_dict` must be a dict"):
        model.load_state_dict([("fc.bias", np.zeros(4))])
    with pytest.raises(TypeError, match="`strict` must be True or False"):
        model.load_state_dict({}, strict="no")


def test_load_state_dict_casts_to_the_parameter_dtype():
    model = small_resnet()
    state = {k: np.array(v, np.float64 if v.dtype.kind == "f" else v.dtype)
             for k, v in model.state_dict().items()}
    state["fc.bias"][...] = 1 / 3
    model.load_state_dict(state)
    assert model.params["fc.bias"].dtype == np.float32
    assert model.params["fc.bias"][0] == np.float32(1 / 3)


# ---------------------------------------------------------------------------------------------
# Batch norm folded into the convolutions by eval()
# ---------------------------------------------------------------------------------------------


def randomized(model):
    """Batch-norm statistics and affine parameters away from 1 and 0."""
    rng = R(5)
    model.load_state_dict({k: rng.uniform(0.5, 1.5, v.shape) for k, v in
                           model.state_dict().items()
                           if v.ndim == 1 and "num_batches" not in k}, strict=False)
    return model


@pytest.mark.parametrize("fmt", FORMATS)
def test_eval_folds_batch_norm_exactly(fmt):
    model = randomized(models.resnet50(num_classes=3, width=2, data_format=fmt, **F64,
                                       rng=R(0)))
    x = image(R(1), 2, (20, 20), 3, fmt)
    plain = model.forward(x)
    model.eval()
    folded = [m for m in model.modules() if getattr(m, "_fold", None) is not None]
    assert len(folded) == 53                                       # every conv of ResNet-50
    assert rel_err(model.forward(x), plain) < 1e-13
    assert rel_err(model.train().forward(x), plain) < 1e-15
    assert not any(getattr(m, "_fold", None) is not None for m in model.modules())


def test_folding_follows_weight_changes():
    model = randomized(small_resnet(**F64)).eval()
    x = image(R(1), 2, (16, 16), 3)
    fresh = randomized(small_resnet(**F64))
    y = model.forward(x, training=True)                            # unfolds: weights may change
    assert rel_err(y, fresh.forward(x, training=True)) < 1e-15
    assert not any(getattr(m, "_fold", None) is not None for m in model.modules())
    model.eval()
    state = {k: np.array(v) * 1.1 for k, v in model.state_dict().items()
             if "num_batches" not in k}
    model.load_state_dict(state, strict=False)                     # refolded
    fresh.load_state_dict(state, strict=False)
    assert rel_err(model.forward(x), fresh.forward(x)) < 1e-13


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("act", [nn.ReLU, nn.ReLU6])
def test_eval_fuses_a_sequentials_activation_into_its_convolution(fmt, act):
    """conv, bn, act and conv, act in a Sequential: after eval() the convolution clips its
    output in cache and the activation's own pass is skipped, with the bits of the batch norm
    folded alone and then the activation (NaN kept); the activation called on another array
    computes; train() undoes the fusion."""
    def layers(with_bn):
        conv = nn.Conv2d(3, 4, 3, padding=1, data_format=fmt, rng=R(0), **F64)
        return [conv, nn.BatchNorm2d(4, data_format=fmt, **F64)] if with_bn else [conv]

    for with_bn in (True, False):
        relu = act()
        fused = randomized(nn.Sequential(*layers(with_bn), relu)).eval()
        plain = randomized(nn.Sequential(*layers(with_bn))).eval()
        assert fused[0]._fused_act is relu
        x = image(R(1), 2, (6, 5), 3, fmt) * 4
        x.reshape(-1)[7] = np.nan
        relu._f = None                                             # never called
        got = fused.forward(x)
        del relu._f
        want = np.clip(plain.forward(x), *relu.clip)
        assert np.isnan(got).any() and np.array_equal(got, want, equal_nan=True)
        other = image(R(2), 2, (6, 5), 4, fmt) * 8
        assert np.array_equal(relu.forward(other), np.clip(other, *relu.clip))
        fused.train()
        assert fused[0]._fused_act is None and relu._folded_into is None
        np.testing.assert_allclose(fused.forward(x), got, rtol=1e-12, atol=1e-12)


class PreActivation(nn.Module):
    """conv, bn and relu are adjacent children, and the forward reads the batch norm's output
    after the ReLU: in a Module activations stay unfused."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 3, padding=1, rng=R(0), **F64)
        self.bn = nn.BatchNorm2d(2, **F64)
        self.relu = nn.ReLU()

    def forward(self, x):
        n = self.bn(self.conv(x))
        return nn.add(self.relu(n), n)


def test_a_modules_activation_is_not_fused():
    model = randomized(PreActivation())
    x = image(R(1), 2, (5, 5), 2)
    want = model.forward(x)
    model.eval()
    assert model.conv._fold is not None and model.conv._fused_act is None
    assert rel_err(model.forward(x), want) < 1e-13


class Misfolded(nn.Module):
    """conv and bn are adjacent children, but forward puts a ReLU between them."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(2, 2, 1, rng=R(0))
        self.bn = nn.BatchNorm2d(2)
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.bn(self.relu(self.conv(x)))


def test_a_fold_the_forward_contradicts_raises():
    model = Misfolded().eval()
    with pytest.raises(RuntimeError, match=r"folded into the convolution before it.*train()"):
        model.forward(X)
    assert model.train().forward(X).shape == X.shape


# ---------------------------------------------------------------------------------------------
# The rest of the library with Modules
# ---------------------------------------------------------------------------------------------


def digits_3ch(n):
    from npconv import datasets

    x, y = datasets.load_digits()
    return np.repeat(x[:n], 2, axis=1).repeat(2, axis=2).astype(np.float32), y[:n]


def test_fit_trains_a_resnet():
    x, y = digits_3ch(256)                                         # (N, 16, 16, 1)
    model = models.resnet18(num_classes=10, in_channels=1, width=4, rng=R(0))
    history = training.fit(model, x, y, optimizer=nn.Adam(lr=3e-3), epochs=4, batch_size=32,
                           rng=R(1))
    assert history.loss[-1] < 0.7 * history.loss[0], history.loss
    assert training.evaluate(model, x, y)[1] > 0.4


def test_save_and_load_modules(tmp_path):
    model = randomized(small_resnet())
    model.fc = nn.Linear(16, 7, rng=R(1))                          # a replaced head
    path = nn.save(model, tmp_path / "resnet.npz")
    again = nn.load(path)
    assert type(again) is models.ResNet and again.fc.out_features == 7
    x = image(R(2), 2, (16, 16), 3).astype(np.float32)
    assert np.array_equal(again.forward(x), model.forward(x))
    custom = Residual(3)
    again = nn.load(nn.save(custom, tmp_path / "custom.npz"))
    xc = image(R(3), 2, (3, 3), 3)
    assert type(again) is Residual and np.array_equal(again.forward(xc), custom.forward(xc))
    nn.load_weights(custom, path=tmp_path / "custom.npz")


def test_save_refuses_what_it_could_not_rebuild(tmp_path):
    class Local(nn.Module):
        def __init__(self, width):
            super().__init__()
            self.lin = nn.Linear(width, 2)

        def forward(self, x):
            return self.lin(x)

    with pytest.raises(TypeError, match=r"cannot be saved by architecture.*state_dict"):
        nn.save(Local(3), tmp_path / "local.npz")
    with pytest.raises(ValueError, match=r"unknown Module class 'nowhere.Thing'"):
        serialization.build({"type": "Module", "class": "nowhere.Thing", "config": {},
                             "children": {}})
    with pytest.raises(ValueError, match="needs a dict under 'config'"):
        serialization.build({"type": "Module", "class": f"{__name__}.Residual",
                             "config": [], "children": {}})
    with pytest.raises(ValueError, match="invalid Residual config"):
        serialization.build({"type": "Module", "class": f"{__name__}.Residual",
                             "config": {"channels": -1}, "children": {}})


def test_to_moves_every_array():
    model = small_resnet().eval()
    x = image(R(0), 1, (16, 16), 3).astype(np.float32)
    y = model.forward(x)
    assert model.to(np) is model and np.array_equal(model.forward(x), y)


def test_docs_models_examples_run(capsys):
    """The python blocks of docs/models.md outside "Weights in and out" (npconv.io's section,
    run by its own tests), joined in order: later blocks use earlier names."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    head, rest = text.split("## Weights in and out", 1)
    text = head + rest.split("\n## ", 1)[1]
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    assert "class BasicBlock" in code and "load_state_dict" in code
    exec(compile(code, "docs/models.md", "exec"), {})
    assert "missing keys (1): fc.bias" in capsys.readouterr().out
