"""Adapters: how to call a user's convolution for one configuration, whatever its call style.

`check_conv` only ever asks an adapter one thing: "for this `Case`, with these x, w, b and dy in
your layout, what are y, dx, dw and db?". Two adapters cover the common styles:

- `Layer`: a class (or factory) whose objects have ``forward(x) -> y`` and ``backward(dy)``
  returning dx, with the weights and their gradients as attributes (the seed answer's style,
  ``w``/``b``/``dw``/``db``; also ``W``/``weight``, ``dW``, ``grads["w"]``, ...).
- `Functions`: ``forward(x, w, b, stride, pad) -> y`` and ``backward(dy, x, w, b, stride, pad)
  -> (dx, dw, db)``; also CS231n's ``forward(x, w, b, conv_param) -> (y, cache)`` with
  ``backward(dy, cache)``.

Arguments are passed by name when every required parameter has a recognised name (``x``,
``input``, ``A_prev``; ``w``, ``W``, ``weight``, ``kernel``; ``pad``, ``padding``; ``dout``,
``dZ`` ...), and in the documented order otherwise. Anything else is one lambda away: wrap the
code in a function whose parameters have these names. Exceptions raised by user code are caught and returned as a `UserError`, a finding
of the check rather than a crash.
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from npconv.testing.cases import Case
from npconv.testing.layout import Layout

# canonical name -> accepted parameter names, compared lower-case without underscores
_ALIASES = {
    "x": ("x", "inp", "input", "inputs", "aprev", "xin", "img", "image", "images", "a"),
    "w": ("w", "weight", "weights", "kernel", "kernels", "filters", "filter", "filt"),
    "b": ("b", "bias", "biases"),
    "stride": ("stride", "strides", "s", "step"),
    "padding": ("padding", "pad", "pads", "padsize", "p", "paddingsize", "padwidth"),
    "dilation": ("dilation", "dilations", "dilationrate", "d", "rate"),
    "groups": ("groups", "group", "g", "numgroups", "ngroups"),
    "in_channels": ("inchannels", "cin", "nin", "inputchannels", "channelsin", "nc"),
    "out_channels": ("outchannels", "cout", "nout", "numfilters", "nfilters",
                     "outputchannels", "channelsout", "nf"),
    "kernel_size": ("kernelsize", "ksize", "filtersize", "fsize", "kernelshape"),
    "dy": ("dy", "dout", "dz", "grad", "gradout", "gradoutput", "delta", "doutdescendant",
           "upstream", "gout", "dyout", "grady"),
    "conv_param": ("convparam", "convparams", "params", "hparams", "hyperparams"),
    "cache": ("cache", "ctx"),
}
_LOOKUP = {alias: name for name, aliases in _ALIASES.items() for alias in aliases}
_ALL = dict.fromkeys(_ALIASES)          # every name bound: for checking a signature early
FORWARD_ORDER = ("x", "w", "b", "stride", "padding", "dilation", "groups")
BACKWARD_ORDER = ("dy", "x", "w", "b", "stride", "padding", "dilation", "groups")
FACTORY_ORDER = ("w", "b", "stride", "padding", "dilation", "groups")

W_NAMES = ("w", "W", "weight", "weights", "kernel", "filters")
B_NAMES = ("b", "bias", "biases")
DW_NAMES = ("dw", "dW", "dweight", "dweights", "grad_w", "grad_weight", "weight_grad",
            "dkernel", "dfilters", "grads.w", "grads.W", "grads.weight")
DB_NAMES = ("db", "dB", "dbias", "grad_b", "grad_bias", "bias_grad", "grads.b", "grads.bias")
DX_NAMES = ("dx", "dX", "dinput", "dinputs", "dA_prev", "grad_x", "dout")
Y_NAMES = ("out", "y", "output", "outputs", "Z")      # read when forward returns None


@dataclass(frozen=True)
class UserError:
    """An exception raised by the code under test: where (stage, file:line) and what."""

    stage: str            # "init", "forward" or "backward"
    type_name: str
    message: str
    location: str         # "seed_answer.py:97 in _windows", or "" when unknown

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        return f"{self.stage} raised {self.type_name}{where}: {self.message}"


class UserCodeFailed(Exception):
    """Internal: carries a `UserError` out of an adapter."""

    def __init__(self, error: UserError):
        super().__init__(str(error))
        self.error = error


@dataclass
class Run:
    """What one call of the user's code produced: raw arrays in the user's layout."""

    outputs: dict[str, object] = field(default_factory=dict)    # "y", "dx", "dw", "db"
    error: UserError | None = None
    bias: bool = True                    # whether the user's code was given a bias


def _normalize(name: str) -> str:
    return name.lower().replace("_", "")


def _user_frame(tb) -> str:
    """The deepest traceback frame outside NumPy, the standard library and npconv."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # npconv/
    skip = (package, os.path.dirname(np.__file__), os.path.dirname(os.__file__))
    frames = [f for f in traceback.extract_tb(tb)
              if not os.path.abspath(f.filename).startswith(skip)]
    if not frames:
        return ""
    f = frames[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def capture(stage: str, fn: Callable, *args, **kwargs):
    """Call user code; any exception becomes `UserCodeFailed` with a `UserError`."""
    try:
        return fn(*args, **kwargs)
    except Exception as exc:                # user code may raise anything: that is a finding
        message = str(exc).splitlines()[0] if str(exc) else ""
        raise UserCodeFailed(UserError(stage, type(exc).__name__, message[:300],
                                       _user_frame(sys.exc_info()[2]))) from None


def call_values(case: Case, x, w, b) -> dict[str, object]:
    """Every value a user's function or constructor may ask for, by canonical name."""
    values = {"x": x, "w": w, "b": b, "stride": case.stride_arg, "padding": case.padding_arg,
              "dilation": case.dilation_arg, "groups": case.groups,
              "in_channels": case.in_channels, "out_channels": case.out_channels,
              "kernel_size": _simplest(case.kernel_size)}
    values["conv_param"] = {"stride": case.stride_arg, "pad": case.padding_arg,
                            "padding": case.padding_arg, "dilation": case.dilation_arg,
                            "groups": case.groups}
    return values


def _simplest(values):
    return values[0] if len(set(values)) == 1 else values


def _parameters(fn: Callable) -> list[inspect.Parameter] | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):          # builtins, some C extensions
        return None
    return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                            p.KEYWORD_ONLY)]


def accepted(fn: Callable) -> set[str]:
    """Canonical names of the parameters `fn` takes (empty when unknown)."""
    names = {_LOOKUP.get(_normalize(p.name)): p for p in _parameters(fn) or ()}
    return {name for name, p in names.items() if name and not _is_flag(p, name)}


def bind(fn: Callable, values: dict[str, object], order: tuple[str, ...]):
    """(args, kwargs) for calling `fn` with `values`: by name when possible, else by position.

    Examples
    --------
    >>> def forward(A_prev, W, b, pad, stride): ...
    >>> bind(forward, {"x": 1, "w": 2, "b": 3, "stride": 4, "padding": 5}, ("x",))
    ((), {'A_prev': 1, 'W': 2, 'b': 3, 'pad': 5, 'stride': 4})
    """
    params = _parameters(fn)
    if params is not None:
        kwargs, complete = {}, True
        for p in params:
            name = _LOOKUP.get(_normalize(p.name))
            if name is not None and name in values and not _is_flag(p, name):
                kwargs[p.name] = values[name]
            elif name == "b" and _is_flag(p, name):
                kwargs[p.name] = values["b"] is not None
            elif p.default is p.empty:
                complete = False
        if complete:
            return (), kwargs
        positional = [p for p in params if p.kind != p.KEYWORD_ONLY]
        if len(positional) > len(order):
            raise TypeError(
                f"cannot tell how to call {_name(fn)}{inspect.signature(fn)}: parameters "
                f"{[p.name for p in params]} are not all recognised and there are more than "
                f"{len(order)} ({', '.join(order)}); wrap it in a lambda whose parameters have "
                f"these names")
        order = order[:len(positional)]
    return tuple(values.get(name) for name in order), {}


def _is_flag(p: inspect.Parameter, name: str) -> bool:
    """A `bias=True` flag (PyTorch-style constructors), not a bias array."""
    return name == "b" and isinstance(p.default, bool)


def _name(obj) -> str:
    return getattr(obj, "__qualname__", None) or type(obj).__name__


def get_attr(obj, name: str):
    """obj.name, or obj.grads["w"] for "grads.w"; None when absent."""
    head, _, key = name.partition(".")
    value = getattr(obj, head, None)
    if key and value is not None:
        value = value.get(key) if isinstance(value, dict) else getattr(value, key, None)
    return value


def find_attr(obj, names: tuple[str, ...]) -> str | None:
    """The first of `names` that `obj` has."""
    return next((n for n in names if get_attr(obj, n) is not None), None)


def split_grads(ret) -> dict[str, object]:
    """A backward's return value -> {"dx": ..., "dw": ..., "db": ...} (only what it returned)."""
    if ret is None:
        return {}
    if isinstance(ret, dict):
        return {k: ret[k] for k in ("dx", "dw", "db") if k in ret}
    if isinstance(ret, (tuple, list)):
        return dict(zip(("dx", "dw", "db"), ret))
    return {"dx": ret}


class Adapter:
    """Base class: calls the code under test for one `Case`.

    Subclasses set `name`, `layout`, `has_backward`, `has_bias` and implement `_run`; `run`
    wraps it so that an exception in user code ends the run with a `UserError` and keeps the
    outputs produced before it.
    """

    name: str = "conv"
    layout: Layout = Layout()
    has_backward: bool = True
    has_bias: bool = True
    checks: tuple[str, ...] = ("y", "dx", "dw", "db")

    def supports(self, feature: str) -> bool | None:
        """Whether the code takes `feature` ("dilation", "groups"); None when unknown."""
        return None

    def run(self, case: Case, x, w, b, dy) -> Run:
        """y, dx, dw, db for `case`; inputs are in the user's layout and may be kept."""
        run = Run()
        try:
            self._run(case, x, w, b, dy, run)
        except UserCodeFailed as failed:
            run.error = failed.error
        return run

    def _run(self, case: Case, x, w, b, dy, run: Run) -> None:
        raise NotImplementedError


def _check_name(value, name: str) -> None:
    if value is not None and value is not False and not isinstance(value, str):
        raise TypeError(f"`{name}` must be an attribute name (str), None (find it) or False "
                        f"(do not check it); got {value!r}")


def _default_name(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


class Layer(Adapter):
    """A layer class (or factory) with ``forward(x) -> y`` and ``backward(dy) -> dx``.

    For each configuration the checker calls ``factory(...)``, binding its parameters by name
    (w, b, stride, padding, dilation, groups, in_channels, out_channels, kernel_size and their
    usual spellings), then ``forward(x)`` and ``backward(dy)``, and reads dw and db from the
    object. A factory that does not take the weights gets them assigned to its weight and bias
    attributes after construction.

    Parameters
    ----------
    factory : class or callable
        Builds one layer; wrap anything unusual in a lambda, e.g.
        ``lambda w, b, stride, padding: MyConv(w.shape[0], stride, padding, weights=(w, b))``.
    w, b, dw, db, dx : str, None or False
        Attribute names ("W", "grads.w" for ``obj.grads["w"]``); None finds the usual names;
        False: there is none (b=False: a layer without bias; dw/db=False: not checked). `dx`
        is read only when backward returns None.
    forward, backward : str
        Method names; backward=None checks the forward pass only.
    data_format, weight_layout : str
        See `Layout`.

    Examples
    --------
    >>> import numpy as np, npconv
    >>> class Conv:
    ...     def __init__(self, w, b, stride, pad):
    ...         self.w, self.b, self.stride, self.pad = w, b, stride, pad
    ...     def forward(self, x):
    ...         self.x = x
    ...         return npconv.conv(x, self.w, self.b, stride=self.stride, padding=self.pad)
    >>> layer = Layer(Conv, backward=None)
    >>> layer.name, layer.supports("dilation")
    ('Conv', False)
    """

    def __init__(self, factory, *, w=None, b=None, dw=None, db=None, dx=None,
                 forward: str = "forward", backward: str | None = "backward",
                 data_format: str = "channels_last", weight_layout: str | None = None,
                 name: str | None = None) -> None:
        if not callable(factory):
            raise TypeError(f"`factory` must be a class or a callable; got {factory!r}")
        for value, arg in ((w, "w"), (b, "b"), (dw, "dw"), (db, "db"), (dx, "dx")):
            _check_name(value, arg)
        if not isinstance(forward, str) or (backward is not None and not isinstance(backward,
                                                                                   str)):
            raise TypeError(f"`forward` and `backward` must be method names; got "
                            f"forward={forward!r}, backward={backward!r}")
        if inspect.isclass(factory):
            missing = [m for m in (forward, backward) if m and not hasattr(factory, m)]
            if missing:
                raise TypeError(f"`factory` {factory.__name__} must have a `{missing[0]}` "
                                f"method; got one without it")
        bind(factory, _ALL, FACTORY_ORDER)             # fails early on an unusable signature
        self.factory, self.names = factory, {"w": w, "b": b, "dw": dw, "db": db, "dx": dx}
        self.methods = (forward, backward)
        self.layout = Layout(data_format, weight_layout)
        self.has_backward = backward is not None
        self.name = name or _default_name(factory)
        if b is False:
            self.names["db"] = False                    # no bias, no bias gradient
        self.checks = tuple(k for k in ("y", "dx", "dw", "db")
                            if k == "y" or (self.has_backward and self.names.get(k) is not False))

    def supports(self, feature: str) -> bool | None:
        return feature in accepted(self.factory)

    def _run(self, case: Case, x, w, b, dy, run: Run) -> None:
        obj, run.bias = self._build(case, w, b)
        y = capture("forward", lambda: getattr(obj, self.methods[0])(x))
        run.outputs["y"] = y if y is not None else get_attr(obj, find_attr(obj, Y_NAMES) or "_")
        if not self.has_backward:
            return
        grads = split_grads(capture("backward", lambda: getattr(obj, self.methods[1])(dy)))
        if "dx" not in grads:
            grads["dx"] = self._read(obj, "dx", DX_NAMES)
        for key, names in (("dw", DW_NAMES), ("db", DB_NAMES)):
            found = self._read(obj, key, names)
            grads[key] = found if found is not None else grads.get(key)
        run.outputs.update(grads)

    def _read(self, obj, key: str, names: tuple[str, ...]):
        name = self.names[key]
        if name is False:
            return None
        return get_attr(obj, name) if name else get_attr(obj, find_attr(obj, names) or "_")

    def _build(self, case: Case, w, b):
        """Construct the layer; assign w and b when the factory did not take them."""
        takes = accepted(self.factory)
        bias = self.names["b"] is not False
        values = call_values(case, None, w, b if bias else None)
        args, kwargs = bind(self.factory, values, FACTORY_ORDER)
        obj = capture("init", self.factory, *args, **kwargs)
        if "w" not in takes:
            self._assign(obj, "w", W_NAMES, w)
        if bias and "b" not in takes:
            bias = self._assign(obj, "b", B_NAMES, b, required=False)
        return obj, bias

    def _assign(self, obj, key: str, names, value, required: bool = True) -> bool:
        name = self.names[key] or find_attr(obj, names)
        if name is None:
            if required:
                raise UserCodeFailed(UserError(
                    "init", "AttributeError", f"no weight attribute found (looked for "
                    f"{', '.join(names)}); pass {key}='name' or a factory that takes {key}", ""))
            return False
        old = get_attr(obj, name)
        if key == "b" and old is not None and np.size(old) == value.size:
            value = value.reshape(np.shape(old))            # keep the layer's bias shape
        elif old is not None and np.shape(old) != value.shape:
            raise UserCodeFailed(UserError(
                "init", "ValueError", f"attribute `{name}` has shape {np.shape(old)}, but the "
                f"weights are {value.shape} ({self.layout.describe()}); pass weight_layout= "
                f"or a factory that takes {key}", ""))
        _set_attr(obj, name, value)
        return True


def _set_attr(obj, name: str, value) -> None:
    head, _, key = name.partition(".")
    if key and isinstance(getattr(obj, head), dict):
        getattr(obj, head)[key] = value
    elif key:
        setattr(getattr(obj, head), key, value)
    else:
        setattr(obj, name, value)


class Functions(Adapter):
    """Plain functions: ``forward(x, w, b, stride, pad) -> y`` and a backward.

    The backward is called as ``backward(dy, cache)`` when the forward returns ``(y, cache)``
    (CS231n style), otherwise with dy and the forward's arguments by name
    (``backward(dout, x, w, b, stride, pad)``). It returns dx, ``(dx, dw, db)``, ``(dx, dw)``
    or a dict with those keys.

    Parameters
    ----------
    forward : callable
        Its parameters are bound by name (x, w, b, stride, padding, dilation, groups,
        conv_param, and their usual spellings); when some name is not recognised, by position
        in the order x, w, b, stride, padding, dilation, groups.
    backward : callable, optional
        None checks the forward pass only.
    data_format, weight_layout : str
        See `Layout`.

    Examples
    --------
    >>> import npconv
    >>> def forward(x, w, b, stride, pad):
    ...     return npconv.conv(x, w, b, stride=stride, padding=pad)
    >>> adapter = Functions(forward)
    >>> adapter.name, adapter.checks, adapter.supports("groups")
    ('forward', ('y',), False)
    """

    def __init__(self, forward, backward=None, *, data_format: str = "channels_last",
                 weight_layout: str | None = None, name: str | None = None) -> None:
        for fn, arg in ((forward, "forward"), (backward, "backward")):
            if (fn is not None and not callable(fn)) or (arg == "forward" and fn is None):
                raise TypeError(f"`{arg}` must be a function; got {fn!r}")
        bind(forward, _ALL, FORWARD_ORDER)              # fails early on an unusable signature
        self.forward, self.backward = forward, backward
        self.layout = Layout(data_format, weight_layout)
        self.has_backward = backward is not None
        self.name = name or _default_name(forward)
        self.checks = ("y", "dx", "dw", "db") if backward is not None else ("y",)

    def supports(self, feature: str) -> bool | None:
        return feature in accepted(self.forward)

    def _run(self, case: Case, x, w, b, dy, run: Run) -> None:
        values = call_values(case, x, w, b)
        args, kwargs = bind(self.forward, values, FORWARD_ORDER)
        run.bias = len(args) > 2 or bool({"b", "conv_param"} & accepted(self.forward))
        ret = capture("forward", self.forward, *args, **kwargs)
        cache = None
        if isinstance(ret, (tuple, list)):
            ret, cache = ret[0], (ret[1] if len(ret) == 2 else tuple(ret[1:]))
        run.outputs["y"] = ret
        if self.backward is None:
            return
        values.update(dy=dy, cache=cache)
        order = ("dy", "cache") if cache is not None else BACKWARD_ORDER
        args, kwargs = bind(self.backward, values, order)
        run.outputs.update(split_grads(capture("backward", self.backward, *args, **kwargs)))


def adapt(obj, backward=None, *, data_format: str | None = None,
          weight_layout: str | None = None) -> Adapter:
    """The adapter for `obj`: itself if it is one, `Layer` for a class, `Functions` otherwise.

    Examples
    --------
    >>> import npconv
    >>> type(adapt(npconv.conv)).__name__
    'Functions'
    """
    if isinstance(obj, Adapter):
        if data_format is not None or weight_layout is not None or backward is not None:
            raise ValueError("pass backward, data_format and weight_layout to the adapter "
                             f"itself; got an adapter ({type(obj).__name__}) together with them")
        return obj
    layout = {"data_format": data_format or "channels_last", "weight_layout": weight_layout}
    if inspect.isclass(obj):
        if backward is not None:
            raise TypeError(f"`backward` must be None for a layer class ({obj.__name__}), "
                            f"whose objects have a backward method; got {backward!r}")
        return Layer(obj, **layout)
    if callable(obj):
        return Functions(obj, backward, **layout)
    raise TypeError(f"`forward` must be a layer class, a function or an Adapter; got {obj!r}")
