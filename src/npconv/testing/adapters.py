"""Adapters: how to call a user's convolution or pooling for one configuration.

The checker only ever asks an adapter one thing: "for this case, with these x (w, b) and dy in
your layout, what are y, dx (dw, db)?". Two adapters cover the common styles:

- `LayerAdapter`: a class (or factory) whose objects have ``forward(x) -> y`` and
  ``backward(dy)`` returning dx, with the weights and their gradients as attributes (the seed
  answer's style, ``w``/``b``/``dw``/``db``; also ``W``/``weight``, ``dW``, ``grads["w"]``...).
- `FunctionsAdapter`: ``forward(x, w, b, stride, pad) -> y`` and ``backward(dy, x, w, b,
  stride, pad) -> (dx, dw, db)``; also CS231n's ``forward(x, w, b, conv_param) -> (y, cache)``
  with ``backward(dy, cache)``, and the pooling forms ``forward(x, pool_param)``,
  ``forward(x, kernel_size, stride, padding)``.

Arguments are passed by name when every required parameter has a recognised name (``x``,
``input``, ``A_prev``; ``w``, ``W``, ``weight``, ``kernel``; ``pad``, ``padding``; ``pool_h``;
``dout``, ``dZ`` ...), and in the documented order otherwise. Anything else is one lambda away:
wrap the code in a function whose parameters have these names. An exception raised by user code
(even ``SystemExit``) becomes a `UserError`, a finding of the check rather than a crash.
"""

from __future__ import annotations

import inspect
import os
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from npconv.testing.layout import Layout

# canonical name -> accepted parameter names, compared lower-case without underscores
_COMMON = {
    "x": ("x", "inp", "input", "inputs", "aprev", "xin", "img", "image", "images", "a"),
    "stride": ("stride", "strides", "s", "step"),
    "padding": ("padding", "pad", "pads", "padsize", "p", "paddingsize", "padwidth"),
    "dilation": ("dilation", "dilations", "dilationrate", "d", "rate"),
    "dy": ("dy", "dout", "dz", "grad", "gradout", "gradoutput", "delta", "doutdescendant",
           "upstream", "gout", "dyout", "grady", "dupstream"),
    "param": ("convparam", "convparams", "poolparam", "poolparams", "params", "hparams",
              "hyperparams"),
    "cache": ("cache", "ctx"),
}
_CONV = {
    "w": ("w", "weight", "weights", "kernel", "kernels", "filters", "filter", "filt"),
    "b": ("b", "bias", "biases"),
    "groups": ("groups", "group", "g", "numgroups", "ngroups"),
    "in_channels": ("inchannels", "cin", "nin", "inputchannels", "channelsin", "nc"),
    "out_channels": ("outchannels", "cout", "nout", "numfilters", "nfilters",
                     "outputchannels", "channelsout", "nf"),
    "kernel_size": ("kernelsize", "ksize", "filtersize", "fsize", "kernelshape"),
    "padding_mode": ("paddingmode", "padmode", "mode"),
    "output_padding": ("outputpadding", "outpadding", "outpad", "opad"),
}
_POOL = {
    "kernel_size": ("kernelsize", "ksize", "poolsize", "pool", "size", "window", "windowsize",
                    "kernel", "k", "f", "filtersize", "fsize", "poolshape", "kernelshape"),
    "kernel_h": ("poolh", "poolheight", "kh", "kernelh", "fh", "filterh", "hh", "ph"),
    "kernel_w": ("poolw", "poolwidth", "kw", "kernelw", "fw", "filterw", "ww", "pw"),
    "ceil_mode": ("ceilmode", "ceil"),
    "count_include_pad": ("countincludepad", "includepad", "countpad"),
}
_LOOKUP = {kind: {alias: name for table in (_COMMON, extra) for name, aliases in table.items()
                  for alias in aliases}
           for kind, extra in (("conv", _CONV), ("pool", _POOL))}
ORDERS = {
    "conv": {"factory": ("w", "b", "stride", "padding", "dilation", "groups"),
             "forward": ("x", "w", "b", "stride", "padding", "dilation", "groups"),
             "backward": ("dy", "x", "w", "b", "stride", "padding", "dilation", "groups")},
    "pool": {"factory": ("kernel_size", "stride", "padding"),
             "forward": ("x", "kernel_size", "stride", "padding"),
             "backward": ("dy", "x", "kernel_size", "stride", "padding")},
}
INT_ARGS = ("stride", "padding", "dilation", "kernel_size", "output_padding")
PARAM_KEYS = {"conv": {"stride", "padding"}, "pool": {"stride", "kernel_size"}}

W_NAMES = ("w", "W", "weight", "weights", "kernel", "filters")
B_NAMES = ("b", "bias", "biases")
DW_NAMES = ("dw", "dW", "dweight", "dweights", "grad_w", "grad_weight", "weight_grad",
            "dkernel", "dfilters", "grads.w", "grads.W", "grads.weight")
DB_NAMES = ("db", "dB", "dbias", "grad_b", "grad_bias", "bias_grad", "grads.b", "grads.bias")
DX_NAMES = ("dx", "dX", "dinput", "dinputs", "dA_prev", "grad_x", "dout")
Y_NAMES = ("out", "y", "output", "outputs", "Z")      # read when forward returns None

Hook = Callable[[str], None]


@dataclass(frozen=True)
class UserError:
    """An exception raised by the code under test: where (stage, file:line) and what."""

    stage: str            # "init", "forward" or "backward"
    type_name: str
    message: str
    location: str         # "seed_answer.py:97 in _windows", or "" when unknown

    def __str__(self) -> str:
        where = f" at {self.location}" if self.location else ""
        if self.type_name == "SystemExit":
            return f"{self.stage} called sys.exit({self.message}){where}"
        return f"{self.stage} raised {self.type_name}{where}: {self.message}"


class UserCodeFailed(Exception):
    """Internal: carries a `UserError` out of an adapter."""

    def __init__(self, error: UserError):
        super().__init__(str(error))
        self.error = error


@dataclass
class Run:
    """What one call of the user's code produced: raw outputs in the user's layout."""

    outputs: dict[str, Any] = field(default_factory=dict)   # "y", "dx", "dw", "db"
    error: UserError | None = None
    bias: bool = True                    # whether the user's code was given a bias
    modified: tuple[str, ...] = ()       # inputs changed in place
    notes: tuple[str, ...] = ()          # out-of-bounds views seen while it ran
    text: str = ""                       # the answer of a job that is not a plain run


def _normalize(name: str) -> str:
    return name.lower().replace("_", "")


def user_frame(frames: list[traceback.FrameSummary]) -> str:
    """"file.py:12 in fn" for the deepest frame of Python code outside NumPy, the standard
    library and npconv ("" when there is none)."""
    package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))     # npconv/
    skip = (package, os.path.dirname(np.__file__), os.path.dirname(os.__file__))
    mine = [f for f in frames if f.filename.endswith(".py") and
            not os.path.abspath(f.filename).startswith(skip)]
    if not mine:
        return ""
    f = mine[-1]
    return f"{os.path.basename(f.filename)}:{f.lineno} in {f.name}"


def capture(stage: str, fn: Callable, *args, before: Hook | None = None, **kwargs):
    """Call user code; an exception (or sys.exit) becomes `UserCodeFailed` with a `UserError`.

    `before(stage)` runs first (the checker uses it to prepare memory and to record where a
    crash happened).
    """
    if before is not None:
        before(stage)
    try:
        return fn(*args, **kwargs)
    except (Exception, SystemExit) as exc:      # user code may raise anything: a finding
        code = exc.code if isinstance(exc, SystemExit) else None
        text = str(code if isinstance(exc, SystemExit) else exc)
        message = text.splitlines()[0] if text else ""
        where = user_frame(traceback.extract_tb(sys.exc_info()[2]))
        raise UserCodeFailed(UserError(stage, type(exc).__name__, message[:300],
                                       where)) from None


def _parameters(fn: Callable) -> list[inspect.Parameter] | None:
    try:
        params = list(inspect.signature(fn).parameters.values())
    except (TypeError, ValueError):          # builtins, some C extensions
        return None
    return [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD,
                                            p.KEYWORD_ONLY)]


def accepted(fn: Callable, kind: str = "conv") -> set[str]:
    """Canonical names of the parameters `fn` takes (empty when unknown)."""
    lookup = _LOOKUP[kind]
    names = {lookup.get(_normalize(p.name)): p for p in _parameters(fn) or ()}
    if {"kernel_h", "kernel_w"} <= set(names):
        names["kernel_size"] = names["kernel_h"]
    return {name for name, p in names.items() if name and not _is_flag(p, name)}


def annotated_int(fn: Callable, kind: str = "conv") -> dict[str, str]:
    """{canonical name: parameter name} of `fn`'s size arguments annotated as plain ``int``."""
    lookup = _LOOKUP[kind]
    out = {}
    for p in _parameters(fn) or ():
        name = lookup.get(_normalize(p.name))
        if name in INT_ARGS and p.annotation in (int, "int"):
            out[name] = p.name
    return out


def bind(fn: Callable, values: dict[str, object], order: tuple[str, ...],
         kind: str = "conv") -> tuple[tuple, dict]:
    """(args, kwargs) for calling `fn` with `values`: by name when possible, else by position.

    Examples
    --------
    >>> def forward(A_prev, W, b, pad, stride): ...
    >>> bind(forward, {"x": 1, "w": 2, "b": 3, "stride": 4, "padding": 5}, ("x",))
    ((), {'A_prev': 1, 'W': 2, 'b': 3, 'pad': 5, 'stride': 4})
    """
    params = _parameters(fn)
    if params is not None:
        lookup, kwargs, complete = _LOOKUP[kind], {}, True
        for p in params:
            name = lookup.get(_normalize(p.name))
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


def _every_value(kind: str) -> dict[str, object]:
    """Every canonical name bound: for checking a signature early."""
    return dict.fromkeys(set(_LOOKUP[kind].values()))


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


def call_values(case, inputs: dict[str, Any]) -> dict[str, object]:
    """Everything a user's function or constructor may ask for, by canonical name."""
    values = dict(case.arguments())
    values.update(x=inputs.get("x"), w=inputs.get("w"), b=inputs.get("b"))
    return values


def namespaces(*objs) -> list[dict]:
    """The global namespaces of the functions in `objs` (of a class: its methods, in MRO)."""
    spaces: dict[int, dict] = {}
    for obj in objs:
        items = [obj]
        if inspect.isclass(obj):
            items = [v for cls in obj.__mro__ if cls is not object for v in vars(cls).values()]
        for item in items:
            found = getattr(getattr(item, "__func__", item), "__globals__", None)
            if isinstance(found, dict):
                spaces[id(found)] = found
    return list(spaces.values())


class Adapter:
    """Base class: calls the code under test for one case.

    Subclasses set `name`, `layout`, `has_backward` and `skip` (outputs not to check) and
    implement `_run`; `run` wraps it so that an exception in user code ends the run with a
    `UserError` and keeps the outputs produced before it.
    """

    name: str = "conv"
    layout: Layout = Layout()
    has_backward: bool = True
    skip: frozenset[str] = frozenset()

    def checks(self, outputs: tuple[str, ...]) -> tuple[str, ...]:
        """The outputs among `outputs` ("y", "dx", ...) that this adapter can check."""
        return tuple(k for k in outputs if k == "y" or (self.has_backward and k not in self.skip))

    def signature_target(self) -> Callable | None:
        """The callable whose parameters say what the code takes (None when unknown)."""
        return None

    def supports(self, feature: str, kind: str = "conv") -> bool | None:
        """Whether the code takes argument `feature` ("dilation", ...); None when unknown. A
        CS231n-style `conv_param` / `pool_param` dict carries the stride (and a conv's pad)."""
        target = self.signature_target()
        if target is None:
            return None
        takes = accepted(target, kind)
        return feature in takes or ("param" in takes and feature in PARAM_KEYS[kind])

    def int_only(self, kind: str = "conv") -> dict[str, str]:
        """{canonical: parameter name} of the size arguments the code's signature declares
        as a plain ``int``."""
        target = self.signature_target()
        return {} if target is None else annotated_int(target, kind)

    def validate(self, kind: str) -> None:
        """Raise TypeError now when the code cannot be called for `kind` ("conv"/"pool")."""

    def namespaces(self) -> list[dict]:
        """The global namespaces of the code under test (where the view check is installed)."""
        return []

    def with_layout(self, layout: Layout) -> Adapter:
        """The same adapter for another layout."""
        copy = object.__new__(type(self))
        copy.__dict__.update(self.__dict__)
        copy.layout = layout
        return copy

    def run(self, case: Any, inputs: dict[str, np.ndarray], before: Hook | None = None) -> Run:
        """y, dx (dw, db) for `case`; `inputs` ("x", "dy", and "w", "b" for a convolution)
        are in the user's layout and may be kept; `before(stage)` runs before each call."""
        run = Run()
        try:
            self._run(case, inputs, run, before)
        except UserCodeFailed as failed:
            run.error = failed.error
        return run

    def _run(self, case, inputs: dict, run: Run, before: Hook | None) -> None:
        raise NotImplementedError


def _check_name(value, name: str) -> None:
    if value is not None and value is not False and not isinstance(value, str):
        raise TypeError(f"`{name}` must be an attribute name (str), None (find it) or False "
                        f"(do not check it); got {value!r}")


def _default_name(obj) -> str:
    return getattr(obj, "__name__", None) or type(obj).__name__


class LayerAdapter(Adapter):
    """A layer class (or factory) with ``forward(x) -> y`` and ``backward(dy) -> dx``.

    For each configuration the checker calls ``factory(...)``, binding its parameters by name
    (conv: w, b, stride, padding, dilation, groups, in_channels, out_channels, kernel_size,
    padding_mode, output_padding; pooling: kernel_size (or pool_h and pool_w), stride,
    padding, dilation, ceil_mode, count_include_pad; and their usual spellings), then
    ``forward(x)`` and ``backward(dy)``, and reads dw and db from the object. A convolution
    factory that does not take the weights gets them assigned to its weight and bias
    attributes after construction.

    (Called ``npconv.testing.Layer`` before; renamed so as not to be confused with the base
    class of npconv's own layers, `npconv.nn.Layer`.)

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
    name : str, optional
        The name reports use (default: the factory's).

    Examples
    --------
    >>> import numpy as np, npconv
    >>> class Conv:
    ...     def __init__(self, w, b, stride, pad):
    ...         self.w, self.b, self.stride, self.pad = w, b, stride, pad
    ...     def forward(self, x):
    ...         self.x = x
    ...         return npconv.conv(x, self.w, self.b, stride=self.stride, padding=self.pad)
    >>> layer = LayerAdapter(Conv, backward=None)
    >>> layer.name, layer.supports("dilation")
    ('Conv', False)
    """

    def __init__(self, factory: Callable, *, w: str | bool | None = None,
                 b: str | bool | None = None, dw: str | bool | None = None,
                 db: str | bool | None = None, dx: str | bool | None = None,
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
        self.factory, self.names = factory, {"w": w, "b": b, "dw": dw, "db": db, "dx": dx}
        self.methods = (forward, backward)
        self.layout = Layout(data_format, weight_layout)
        self.has_backward = backward is not None
        self.name = name or _default_name(factory)
        self.skip = frozenset(k for k in ("dw", "db") if self.names[k] is False or
                              (k == "db" and b is False))

    def signature_target(self) -> Callable:
        return self.factory

    def namespaces(self) -> list[dict]:
        return namespaces(self.factory)

    def validate(self, kind: str) -> None:
        bind(self.factory, _every_value(kind), ORDERS[kind]["factory"], kind)

    def _run(self, case, inputs: dict, run: Run, before: Hook | None) -> None:
        obj, run.bias = self._build(case, inputs, before)
        y = capture("forward", getattr(obj, self.methods[0]), inputs["x"], before=before)
        run.outputs["y"] = y if y is not None else get_attr(obj, find_attr(obj, Y_NAMES) or "_")
        if not self.has_backward:
            return
        grads = split_grads(capture("backward", getattr(obj, str(self.methods[1])),
                                    inputs["dy"], before=before))
        if "dx" not in grads:
            grads["dx"] = self._read(obj, "dx", DX_NAMES)
        if case.kind == "conv":
            for key, names in (("dw", DW_NAMES), ("db", DB_NAMES)):
                found = self._read(obj, key, names)
                grads[key] = found if found is not None else grads.get(key)
        run.outputs.update(grads)

    def _read(self, obj, key: str, names: tuple[str, ...]):
        name = self.names[key]
        if name is False:
            return None
        return get_attr(obj, name) if isinstance(name, str) else \
            get_attr(obj, find_attr(obj, names) or "_")

    def _build(self, case, inputs: dict[str, Any], before: Hook | None):
        """Construct the layer; assign w and b when a conv factory did not take them."""
        kind = case.kind
        takes = accepted(self.factory, kind)
        bias = kind == "conv" and self.names["b"] is not False
        values = call_values(case, {"w": inputs.get("w"), "b": inputs.get("b") if bias else None})
        args, kwargs = bind(self.factory, values, ORDERS[kind]["factory"], kind)
        obj = capture("init", self.factory, *args, before=before, **kwargs)
        if kind == "conv" and "w" not in takes:
            self._assign(obj, "w", W_NAMES, inputs["w"])
        if bias and "b" not in takes:
            bias = self._assign(obj, "b", B_NAMES, inputs["b"], required=False)
        return obj, bias

    def _assign(self, obj, key: str, names, value, required: bool = True) -> bool:
        given = self.names[key]
        name = given if isinstance(given, str) else find_attr(obj, names)
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


class FunctionsAdapter(Adapter):
    """Plain functions: ``forward(x, w, b, stride, pad) -> y`` (or a pooling's
    ``forward(x, kernel_size, stride, pad)``) and a backward.

    The backward is called as ``backward(dy, cache)`` when the forward returns ``(y, cache)``
    (CS231n style), otherwise with dy and the forward's arguments by name
    (``backward(dout, x, w, b, stride, pad)``). It returns dx, ``(dx, dw, db)``, ``(dx, dw)``
    or a dict with those keys.

    (Called ``npconv.testing.Functions`` before.)

    Parameters
    ----------
    forward : callable
        Its parameters are bound by name (x, w, b, stride, padding, dilation, groups,
        conv_param / pool_param, kernel_size, pool_height..., and their usual spellings); when
        some name is not recognised, by position in the order x, w, b, stride, padding,
        dilation, groups (pooling: x, kernel_size, stride, padding).
    backward : callable, optional
        None checks the forward pass only.
    data_format, weight_layout : str
        See `Layout`.
    name : str, optional
        The name reports use (default: the forward function's).

    Examples
    --------
    >>> import npconv
    >>> def forward(x, w, b, stride, pad):
    ...     return npconv.conv(x, w, b, stride=stride, padding=pad)
    >>> adapter = FunctionsAdapter(forward)
    >>> adapter.name, adapter.checks(("y", "dx", "dw", "db")), adapter.supports("groups")
    ('forward', ('y',), False)
    """

    def __init__(self, forward: Callable, backward: Callable | None = None, *,
                 data_format: str = "channels_last", weight_layout: str | None = None,
                 name: str | None = None) -> None:
        for fn, arg in ((forward, "forward"), (backward, "backward")):
            if (fn is not None and not callable(fn)) or (arg == "forward" and fn is None):
                raise TypeError(f"`{arg}` must be a function; got {fn!r}")
        self.forward, self.backward = forward, backward
        self.layout = Layout(data_format, weight_layout)
        self.has_backward = backward is not None
        self.name = name or _default_name(forward)

    def signature_target(self) -> Callable:
        return self.forward

    def namespaces(self) -> list[dict]:
        return namespaces(self.forward, self.backward)

    def validate(self, kind: str) -> None:
        bind(self.forward, _every_value(kind), ORDERS[kind]["forward"], kind)

    def _run(self, case, inputs: dict, run: Run, before: Hook | None) -> None:
        kind = case.kind
        values = call_values(case, inputs)
        args, kwargs = bind(self.forward, values, ORDERS[kind]["forward"], kind)
        run.bias = kind == "conv" and (len(args) > 2 or bool(
            {"b", "param"} & accepted(self.forward, kind)))
        ret = capture("forward", self.forward, *args, before=before, **kwargs)
        cache = None
        if isinstance(ret, (tuple, list)):
            ret, cache = ret[0], (ret[1] if len(ret) == 2 else tuple(ret[1:]))
        run.outputs["y"] = ret
        if self.backward is None:
            return
        values.update(dy=inputs["dy"], cache=cache)
        order = ("dy", "cache") if cache is not None else ORDERS[kind]["backward"]
        args, kwargs = bind(self.backward, values, order, kind)
        run.outputs.update(split_grads(capture("backward", self.backward, *args, before=before,
                                               **kwargs)))


def adapt(obj: Any, backward: Callable | None = None, *, data_format: str | None = None,
          weight_layout: str | None = None) -> Adapter:
    """The adapter for `obj`: itself if it is one, `LayerAdapter` for a class,
    `FunctionsAdapter` otherwise.

    Examples
    --------
    >>> import npconv
    >>> type(adapt(npconv.conv)).__name__
    'FunctionsAdapter'
    """
    if isinstance(obj, Adapter):
        if data_format is not None or weight_layout is not None or backward is not None:
            raise ValueError("pass backward, data_format and weight_layout to the adapter "
                             f"itself; got an adapter ({type(obj).__name__}) together with them")
        return obj
    data_format = data_format or "channels_last"
    if inspect.isclass(obj):
        if backward is not None:
            raise TypeError(f"`backward` must be None for a layer class ({obj.__name__}), "
                            f"whose objects have a backward method; got {backward!r}")
        return LayerAdapter(obj, data_format=data_format, weight_layout=weight_layout)
    if callable(obj):
        return FunctionsAdapter(obj, backward, data_format=data_format,
                                weight_layout=weight_layout)
    raise TypeError(f"`forward` must be a layer class, a function or an Adapter; got {obj!r}")
