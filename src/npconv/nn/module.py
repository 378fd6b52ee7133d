"""Composition: the Layer contract, Modules written as forward code, and Sequential.

A `Module` is PyTorch's `nn.Module` for npconv: layers assigned as attributes become its
children, reached by dotted names (`layer1.0.conv1.weight`), and its `forward` is ordinary
Python that calls them. Nobody writes its backward. While a forward that will need one runs
(training, or inside `enable_grad()`), every layer call made in it is recorded on a small tape:
the layer, its input arrays, its output array and what the layer saved for its backward (its
cache, which a second call of the same layer would otherwise overwrite). `backward(dy)` walks
the tape in reverse, restores each call's saved state, calls that layer's own backward and adds
up the gradients of arrays that fed several calls (a residual sum, a concatenation, a skip
connection). Arrays are matched by identity, so the tape never looks at values. A Module called
inside another one is one call on its parent's tape and keeps a tape of its own.

What the tape cannot see it refuses: an array that no recorded call produced (NumPy arithmetic
between layers) raises at the call that uses it, and the arrays passed between layers are
read-only while a forward is recorded, so that `out += identity`, which would silently lose a
gradient, raises instead (`nn.Add`, `nn.add` and `nn.Concat` are the recorded merges). An
evaluation-mode forward records and keeps nothing, so inference holds about two activations
plus the weights; `enable_grad()` asks for input gradients in evaluation mode, `no_grad()`
keeps nothing even in training mode. docs/models.md discusses the design and its trade-offs.

>>> import numpy as np
>>> from npconv import nn
>>> class Residual(nn.Module):
...     def __init__(self, c):
...         super().__init__()
...         self.conv = nn.Conv2d(c, c, 3, padding=1, rng=np.random.default_rng(0))
...         self.relu = nn.ReLU()
...     def forward(self, x):
...         return self.relu(nn.add(self.conv(x), x))
>>> block = Residual(4)
>>> y = block.forward(np.ones((2, 5, 5, 4), np.float32), training=True)    # (N, H, W, C)
>>> dx = block.backward(np.ones_like(y))                                    # (N, H, W, C)
>>> sorted(block.params), dx.shape
(['conv.bias', 'conv.weight'], (2, 5, 5, 4))
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import itertools
import json
import weakref
from collections import namedtuple
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

import numpy as np

from npconv import _args, _backend, _chunks
from npconv.nn import init as initializers

__all__ = [
    "MODULES",
    "IncompatibleKeys",
    "Layer",
    "Module",
    "Sequential",
    "can_overwrite",
    "enable_grad",
    "grad_enabled",
    "no_grad",
]

# None: a forward keeps what backward needs when training; True: always (enable_grad, and
# the children of a recorded forward); False: never (no_grad).
_GRAD: ContextVar[bool | None] = ContextVar("npconv_grad", default=None)
_RECORDING: ContextVar[_Tape | None] = ContextVar("npconv_tape", default=None)
_PASS: ContextVar[object | None] = ContextVar("npconv_backward_pass", default=None)

MODULES: dict[str, type] = {}            # "module.qualname" -> Module subclass (for model files)

IncompatibleKeys = namedtuple("IncompatibleKeys", ["missing_keys", "unexpected_keys"])


# ---------------------------------------------------------------------------------------------
# Gradient mode
# ---------------------------------------------------------------------------------------------


@contextlib.contextmanager
def enable_grad():
    """Inside, every forward keeps what its backward needs, in evaluation mode too: the way to
    the gradient of an evaluation-mode output with respect to the input (saliency maps,
    adversarial examples). `backward` may run after the block ends.

    >>> import numpy as np
    >>> from npconv import nn
    >>> layer = nn.Linear(3, 2, rng=np.random.default_rng(0))
    >>> with nn.enable_grad():
    ...     y = layer.forward(np.ones((1, 3), np.float32))          # evaluation mode
    >>> layer.backward(np.ones_like(y)).shape
    (1, 3)
    """
    token = _GRAD.set(True)
    try:
        yield
    finally:
        _GRAD.reset(token)


@contextlib.contextmanager
def no_grad():
    """Inside, no forward keeps anything for a backward pass, in training mode either (batch
    norm still updates its running statistics): for recalibrating statistics without the
    memory of a training step."""
    token = _GRAD.set(False)
    try:
        yield
    finally:
        _GRAD.reset(token)


def grad_enabled(training: bool = False) -> bool:
    """Whether a forward in this mode keeps what backward needs: when training, unless inside
    `no_grad()`; in evaluation mode only inside `enable_grad()` (or a recorded forward)."""
    mode = _GRAD.get()
    return bool(training) if mode is None else mode


def can_overwrite(x, *, claim: bool = True) -> bool:
    """True when the layer being called may write into `x` (its output, for an activation or
    `Add` with inplace=True; its input gradient, for batch norm's backward): x was made by an
    earlier call of the forward that is running, no recorded call has used or kept it, and it
    is not a view of an array that one has. Never true for arrays the caller passed in, nor
    outside a Module's forward. With `claim` (for a write now) x is made writeable when True;
    without, it stays read-only (`reclaim` it in backward)."""
    tape = _RECORDING.get()
    return tape is not None and tape.can_overwrite(x, claim)


def recording() -> bool:
    """True inside a Module forward that records its calls for backward. An array a layer
    call makes there is seen by the calls after it and, once it is recorded, by nobody else
    (a result handed back to the caller is a copy when a layer keeps it); so when backward
    reaches that layer, every use of the array is behind it, and the layer may write its
    input gradient into what it kept (`reclaim`). The same holds for an input the layer was
    allowed to overwrite (`can_overwrite`)."""
    tape = _RECORDING.get()
    return tape is not None and tape.keep


def reclaim(x):
    """x, writeable again, for a layer's backward to write into (see `recording`): arrays
    between layers are read-only while a forward is recorded."""
    _set_writeable(x, True)
    return x


# ---------------------------------------------------------------------------------------------
# The tape
# ---------------------------------------------------------------------------------------------


def _array_ids(state) -> set[int]:
    """Ids of the arrays in a layer's saved state (its cache: an array, a tuple of them, a
    Module's tape)."""
    if isinstance(state, _Tape):
        return state.kept
    if isinstance(state, (tuple, list)):
        return set().union(*map(_array_ids, state)) if state else set()
    return {id(state)} if _backend.is_array(state) else set()


def _weak(x) -> weakref.ref | None:
    try:
        return weakref.ref(x)
    except TypeError:                                   # an array type without weak references
        return None


def _set_writeable(x, flag: bool) -> bool:
    """Set a NumPy array's WRITEABLE flag; False when NumPy refuses (a view of a read-only
    array). Other array types are left alone."""
    if not isinstance(x, np.ndarray):
        return True
    try:
        x.flags.writeable = flag
    except ValueError:
        return False
    return True


class _Tape:
    """The calls of one Module forward. In a recorded forward (`keep`), each call's layer,
    inputs, output and saved state, and what `can_overwrite` must know; otherwise only which
    arrays the calls produced (weakly)."""

    def __init__(self, owner: Layer, inputs: tuple, training: bool, keep: bool) -> None:
        self.owner, self.inputs, self.training, self.keep = owner, inputs, training, keep
        self.records: list[tuple] = []                  # (layer, inputs, output, state)
        self.known = {id(x): x for x in inputs}         # arrays the tape can trace a gradient to
        self.produced: dict[int, weakref.ref] = {}      # id -> weakref of a call's output
        self.consumed: set[int] = set()                 # ids used as an input by a call
        self.kept: set[int] = set()                     # ids held by the calls' saved states
        self.output = None
        self.blas_held = False                          # by the forward's network pass

    def record(self, layer: Layer, inputs: tuple, y) -> None:
        ref = _weak(y)
        if ref is not None:
            self.produced[id(y)] = ref
        if not self.keep:
            return
        for i, x in enumerate(inputs):
            if id(x) not in self.known:
                raise ValueError(_untraced(self.owner, f"argument {i} of the call to {layer!r}",
                                           x))
        state = layer._state()
        self.records.append((layer, inputs, y, state))
        self.consumed.update(map(id, inputs))
        self.kept |= _array_ids(state)
        self.known[id(y)] = y
        if any(y is x for x in inputs):                  # in place (or the identity): y is a
            self.consumed.discard(id(y))                # new value no recorded call has used
        if not any(y is x for x in self.inputs):
            _set_writeable(y, False)                    # `out += identity` raises

    def can_overwrite(self, x, claim: bool = True) -> bool:
        ref = self.produced.get(id(x))
        if ref is None or ref() is not x or any(x is i for i in self.inputs):
            return False                                # (Identity "produces" its input)
        if self.keep and (id(x) in self.consumed or id(x) in self.kept):
            return False
        base = getattr(x, "base", None)
        while base is not None:                         # a view of a tracked array is shared
            if id(base) in self.known or id(base) in self.produced:
                return False
            base = getattr(base, "base", None)
        if not _set_writeable(x, True):                 # NumPy refuses: a read-only base
            return False
        if not claim:
            _set_writeable(x, False)
        return True

    def finish(self, y, nested: bool):
        """Check and return the forward's result; it becomes the seed of backward. Returned
        to a recorded parent forward, it stays read-only (the parent records it); returned to
        the caller, it is writeable, a copy if a layer keeps it for backward."""
        if id(y) not in self.known:
            raise ValueError(_untraced(self.owner, "the result of forward", y))
        self.output = y
        if nested or any(y is x for x in self.inputs):
            return y
        if id(y) in self.kept or not _set_writeable(y, True):
            y = y.copy()                                # a layer keeps it: the caller gets a copy
        return y

    def backward(self, dy, token, input_grad: bool = True):
        """Gradients of the forward's inputs: the calls in reverse, each call's saved state put
        back before its layer's backward, the gradients of shared arrays summed. With
        `input_grad` False, nothing is computed that only the inputs' gradients need, and
        None comes back."""
        _check_seed(self.owner, dy, self.output)
        needed = self._needed(input_grad)
        grads, owned = {id(self.output): dy}, set()
        for layer, inputs, y, state in reversed(self.records):
            g = grads.pop(id(y), None)
            owned.discard(id(y))
            layer._restore(state)
            wanted = [needed[id(x)] for x in inputs]
            if g is not None and (any(wanted) or _has_params(layer)):   # else: nothing to do
                dxs = _layer_backward(layer, g, token, any(wanted))
                dxs = dxs if len(inputs) > 1 else (dxs,)
                for x, dx, want in zip(inputs, dxs, wanted):
                    if want:
                        _accumulate(grads, owned, id(x), dx)
            layer._restore(None)                        # what the call kept is freed
        self.records.clear()
        if not input_grad:
            return None
        xp = _backend.namespace(dy)
        dxs = tuple(grads[id(x)] if id(x) in grads else xp.zeros_like(x) for x in self.inputs)
        return dxs if len(dxs) > 1 else dxs[0]

    def _needed(self, input_grad: bool) -> dict[int, bool]:
        """{id(array): whether backward must compute its gradient} for the inputs and every
        call's output, in forward order: an input's when `input_grad`; a call's output's when
        its layer has parameters or one of its inputs needs a gradient (as PyTorch's
        requires_grad spreads)."""
        needed = {id(x): input_grad for x in self.inputs}
        for layer, inputs, y, _ in self.records:
            needed[id(y)] = _has_params(layer) or any(needed[id(x)] for x in inputs)
        return needed


def _untraced(owner: Layer, what: str, x) -> str:
    shape = getattr(x, "shape", None)
    got = f"an array of shape {tuple(shape)}" if shape is not None else type(x).__name__
    return (f"{type(owner).__name__}.forward: {what} is {got} that no recorded layer call "
            f"produced and that is not an input of forward, so its gradient cannot be traced. "
            f"Arithmetic between layers must go through layers: nn.add / nn.Add for sums, "
            f"nn.Concat for concatenations, or a Layer with its own backward")


def _check_seed(owner: Layer, dy, y) -> None:
    if not _backend.is_array(dy):
        raise TypeError(f"{type(owner).__name__}.backward: `dy` must be an array; got "
                        f"{type(dy).__name__}")
    if tuple(dy.shape) != tuple(y.shape):
        raise ValueError(f"{type(owner).__name__}.backward: `dy` must have the shape of the "
                         f"forward's result {tuple(y.shape)}; got {tuple(dy.shape)}")


def _accumulate(grads: dict, owned: set, key: int, dx) -> None:
    """grads[key] += dx, without writing into an array a layer returned (Add returns dy for
    both of its inputs): the first sum is a new array, later ones add into it."""
    if key not in grads:
        grads[key] = dx
    elif key in owned:
        grads[key] += dx
    else:
        grads[key] = grads[key] + dx
        owned.add(key)


def _layer_backward(layer: Layer, dy, token, input_grad: bool = True):
    """layer.backward(dy); a layer with parameters whose backward already ran in this pass (a
    layer called twice in one forward) adds the new gradients to the earlier ones. Without
    `input_grad`, the layer is asked not to compute dx when its backward takes that option
    (`takes_input_grad`); otherwise its dx is computed and dropped by the caller."""
    skip = {} if input_grad or not takes_input_grad(layer) else {"input_grad": False}
    if isinstance(layer, Module) or not layer.params:       # a Module's params: a tree walk
        return layer.backward(dy, **skip)
    earlier = layer.grads if layer._grad_pass is token else None
    dx = layer.backward(dy, **skip)
    if earlier is not None:
        layer.grads = {k: g + earlier[k] for k, g in layer.grads.items()}
    layer._grad_pass = token
    return dx


def _has_params(layer: Layer) -> bool:
    """Whether the layer or one of its descendants has parameters to train."""
    return any(m.params for m in layer.modules() if not isinstance(m, Module))


_TAKES_INPUT_GRAD: dict[type, bool] = {}               # per class, from its signature


def takes_input_grad(layer: Layer) -> bool:
    """Whether `layer.backward` takes `input_grad` (Modules, Conv, Linear; a Layer subclass
    written before the option existed does not, and computes dx anyway)."""
    cls = type(layer)
    if cls not in _TAKES_INPUT_GRAD:
        _TAKES_INPUT_GRAD[cls] = "input_grad" in inspect.signature(layer.backward).parameters
    return _TAKES_INPUT_GRAD[cls]


# ---------------------------------------------------------------------------------------------
# Layer: the contract every layer and every composition keeps
# ---------------------------------------------------------------------------------------------


class Layer:
    """Base of every layer.

    The contract every layer (and every composition of layers) keeps:

    - `forward(x, training=False) -> y`, keeping what `backward` needs when training (or inside
      `enable_grad()`); a layer with several inputs (`Add`, `Concat`) takes them positionally;
    - `backward(dy) -> dx` for the input of the last forward, filling `grads` (a tuple of
      gradients, one per input, for a layer with several inputs); Modules and the layers
      whose dx costs most (Conv, Linear) also take `input_grad=False`: `grads` only, None
      returned (`takes_input_grad`);
    - `params` (trained arrays, updated in place by an optimizer), `grads` (the same keys),
      `buffers` (saved, not trained: batch norm's running statistics);
    - `config()`: the constructor's keyword arguments, JSON-ready, so that
      `type(layer)(**layer.config())` builds the same architecture;
    - `to(xp)`: move every array to the array module xp (numpy or cupy);
    - `state_dict()` / `load_state_dict(d)`: the params and buffers under PyTorch's names and
      in PyTorch's layouts.

    Calling a layer, `layer(x)`, is `forward` plus its record on the tape of the Module whose
    forward is running (and that Module's training flag when `training` is not given).
    """

    _grad_pass: object = None               # the backward pass that last filled grads
    _cache: Any = None                      # what the last forward kept for backward

    def __init__(self, params: dict | None = None, buffers: dict | None = None) -> None:
        self.params = dict(params or {})
        self.grads = {k: initializers.zeros_like(v) for k, v in self.params.items()}
        self.buffers = dict(buffers or {})
        self._cache = None

    def forward(self, x, training: bool = False):
        """y = layer(x); `training` selects batch statistics and dropout."""
        raise NotImplementedError

    def backward(self, dy):
        """dx from dy = dL/dy, for the input of the last `forward`; fills `grads`."""
        raise NotImplementedError

    def config(self) -> dict:
        """Constructor keyword arguments, JSON-ready (the initializer and generator excluded:
        they only matter before the weights exist)."""
        return {}

    def __call__(self, *inputs, training: bool | None = None):
        tape = _RECORDING.get()
        if training is None:
            training = tape.training if tape is not None else False
        forward: Callable[..., Any] = self.forward                # one input or several
        y = forward(*inputs, training=training)
        if tape is not None:
            tape.record(self, inputs, y)
        return y

    def to(self, xp):
        """Move params, grads and buffers to the array module `xp` (numpy or cupy); returns self.

        >>> from npconv import nn
        >>> layer = nn.Linear(3, 2, rng=np.random.default_rng(0)).to(np)
        >>> type(layer.params["weight"]).__name__
        'ndarray'
        """
        for attr in ("params", "grads", "buffers"):
            setattr(self, attr, {k: xp.asarray(v) for k, v in getattr(self, attr).items()})
        self._cache = None
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.config().items())
        return f"{type(self).__name__}({args})"

    # -- what backward needs ------------------------------------------------------------------

    def _start(self, training, cache) -> None:
        """Check the mode flag; keep `cache` for backward when this forward needs one."""
        training = _args.check_flag(training, "training")
        self._cache = cache if grad_enabled(training) else None

    def _saved(self):
        if self._cache is None:
            raise RuntimeError(
                f"{type(self).__name__}.backward called without a recorded forward: run "
                f"forward(x, training=True) first, or forward inside `with "
                f"npconv.nn.enable_grad():` for gradients in evaluation mode (an evaluation-mode "
                f"forward keeps nothing for backward, and a Module's backward uses up its "
                f"forward's record)")
        return self._cache

    def _state(self):
        """What the last forward kept for backward (restored by the tape for a layer called
        more than once in one forward)."""
        return self._cache

    def _restore(self, state) -> None:
        self._cache = state

    # -- children and names -------------------------------------------------------------------

    def named_children(self):
        """(name, layer) of the direct children, in the order they were assigned."""
        return iter(())

    def children(self):
        """The direct children."""
        return (layer for _, layer in self.named_children())

    def named_modules(self, prefix: str = ""):
        """(dotted name, layer) of this layer and every descendant, depth first, each layer
        once (a layer used twice keeps its first name)."""
        seen: set[int] = set()

        def walk(layer, name):
            if id(layer) in seen:
                return
            seen.add(id(layer))
            yield name, layer
            for child_name, child in layer.named_children():
                yield from walk(child, f"{name}.{child_name}" if name else child_name)

        return walk(self, prefix)

    def modules(self):
        """This layer and every descendant."""
        return (layer for _, layer in self.named_modules())

    # -- PyTorch's state_dict -----------------------------------------------------------------

    def _to_torch(self, key: str, array):
        """An array of params/buffers in PyTorch's layout (a view where it differs)."""
        return array

    def _from_torch(self, key: str, array):
        """The inverse of `_to_torch`."""
        return array

    def _state_items(self):
        """(name, array) of everything state_dict holds, own arrays first, then the children's
        under "child." prefixes, as PyTorch orders them (a shared layer under every name)."""
        if not isinstance(self, Module):                # a Module's dicts gather its children's
            for k, v in (*self.params.items(), *self.buffers.items()):
                yield k, self, k, v
        for name, child in self.named_children():
            for full, layer, key, v in child._state_items():
                yield f"{name}.{full}", layer, key, v

    def state_dict(self) -> dict:
        """Every parameter and buffer under PyTorch's names ("layer1.0.conv1.weight",
        "bn1.running_var", "bn1.num_batches_tracked") in PyTorch's layouts: a convolution weight
        (F, C/G, *K) and a Linear weight (out_features, in_features), whatever the model's
        data_format. The arrays share memory with the model, as PyTorch's do; copy them to
        keep a snapshot.

        >>> from npconv import nn
        >>> conv = nn.Conv2d(3, 8, 3, rng=np.random.default_rng(0))        # channels_last
        >>> conv.params["weight"].shape, conv.state_dict()["weight"].shape
        ((3, 3, 3, 8), (8, 3, 3, 3))
        """
        return {full: layer._to_torch(key, v) for full, layer, key, v in self._state_items()}

    def named_grads(self) -> dict:
        """The gradients of the last backward under state_dict's names and in PyTorch's
        layouts (what torch leaves in each parameter's .grad)."""
        return {full: layer._to_torch(key, layer.grads[key])
                for full, layer, key, _ in self._state_items() if key in layer.grads}

    def load_state_dict(self, state_dict: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy the arrays of `state_dict` (PyTorch's names and layouts, as `state_dict` gives
        them; from `npconv.io.load` or a torch state_dict converted to arrays) into this model,
        cast to each parameter's dtype.

        Everything is checked before anything is written: missing keys, unexpected keys and
        shape mismatches are reported together, each named, in one ValueError (with
        strict=False, missing and unexpected keys are allowed and returned). Returns
        (missing_keys, unexpected_keys), as PyTorch does.

        >>> from npconv import nn
        >>> a, b = (nn.Linear(3, 2, rng=np.random.default_rng(s)) for s in (0, 1))
        >>> b.load_state_dict(a.state_dict())
        IncompatibleKeys(missing_keys=[], unexpected_keys=[])
        >>> bool((a.params["weight"] == b.params["weight"]).all())
        True
        """
        if not isinstance(state_dict, dict):
            raise TypeError(f"`state_dict` must be a dict of arrays; got "
                            f"{type(state_dict).__name__}")
        strict = _args.check_flag(strict, "strict")
        targets = {full: (layer, key, v) for full, layer, key, v in self._state_items()}
        values, problems = _check_state(targets, state_dict, strict)
        if problems:
            raise ValueError(f"load_state_dict: the state_dict does not fit "
                             f"{type(self).__name__}:\n  " + "\n  ".join(problems))
        for full, value in values.items():
            layer, key, target = targets[full]
            xp = _backend.namespace(target)
            target[...] = xp.asarray(layer._from_torch(key, value))   # in place, cast
        self._refold()
        return IncompatibleKeys(sorted(targets.keys() - state_dict.keys()),
                                sorted(state_dict.keys() - targets.keys()))

    # -- inference mode -----------------------------------------------------------------------

    def eval(self) -> Layer:
        """Prepare for inference and return self: every BatchNorm that directly follows a
        convolution among its container's children (adjacent in a Sequential, assigned right
        after it in a Module) is folded into that convolution's weights and bias, so that an
        evaluation-mode forward skips it (the same outputs, to rounding). In a Sequential, a
        ReLU or ReLU6 right after the convolution (or after its folded BatchNorm) is fused too:
        the convolution clips its output chunk by chunk (`npconv.conv(..., clip=)`), the same
        bits as the activation's own pass, which is skipped; in a Module the forward code may
        read the convolution's output again, so activations there run as written. Training, a
        forward that keeps gradients, or `train()` undo it; call eval() again after changing
        weights by hand. `forward(x, training=False)` works without it, unfolded."""
        for layer in self.modules():
            kids = list(layer.children())
            for first, second in itertools.pairwise(kids):
                fold = getattr(first, "_fold_batch_norm", None)
                if fold is not None:
                    fold(second)
            if isinstance(layer, Sequential):
                for first, second, third in zip(kids, kids[1:], [*kids[2:], None]):
                    fuse = getattr(first, "_fuse_activation", None)
                    if fuse is not None:
                        fuse(third if getattr(second, "_folded_into", None) is first else second)
        return self

    def train(self) -> Layer:
        """Undo `eval()`'s folding; returns self."""
        for layer in self.modules():
            unfold = getattr(layer, "_unfold", None)
            if unfold is not None:
                unfold()
        return self

    def _refold(self) -> None:
        """Recompute the folds of `eval()` after the weights changed (load_state_dict, to)."""
        for layer in self.modules():
            refold = getattr(layer, "_refold_batch_norm", None)
            if refold is not None:
                refold()


def _check_state(targets: dict, state_dict: dict, strict: bool):
    """({key: array} to copy, [problem, ...]) for load_state_dict."""
    problems, values = [], {}
    missing = [k for k in targets if k not in state_dict]
    unexpected = [k for k in state_dict if k not in targets]
    if strict and missing:
        problems.append(f"missing keys ({len(missing)}): {', '.join(missing)}")
    if strict and unexpected:
        problems.append(f"unexpected keys ({len(unexpected)}): "
                        f"{', '.join(map(str, unexpected))}")
    for key in (k for k in targets if k in state_dict):
        layer, name, target = targets[key]
        value = _as_array(state_dict[key])
        want = tuple(layer._to_torch(name, target).shape)
        if value is None:
            problems.append(f"{key}: expected a numeric array; got "
                            f"{type(state_dict[key]).__name__}")
        elif tuple(value.shape) != want:
            problems.append(f"{key}: shape mismatch: expected {want} (PyTorch's layout), got "
                            f"{tuple(value.shape)}")
        else:
            values[key] = value
    return values, problems


def _as_array(value):
    """A numeric array (NumPy or CuPy) from a state_dict value, or None."""
    if not _backend.is_array(value):
        try:
            value = np.asarray(value)
        except Exception:                               # a torch tensor that needs grad, ...
            return None
    return value if value.dtype.kind in "biuf" else None


# ---------------------------------------------------------------------------------------------
# Module
# ---------------------------------------------------------------------------------------------


def _recorded(user_forward):
    """The public forward(*inputs, training=False) of a Module subclass around the user's
    forward code: the mode, the tape, and the checks of what came back."""
    wants_training = "training" in inspect.signature(user_forward).parameters

    @functools.wraps(user_forward)
    def forward(self, *inputs, training: bool = False):
        outer = _RECORDING.get()
        extra = {"training": training} if wants_training else {}
        if outer is not None and outer.owner is self:   # super().forward(...) inside forward
            return user_forward(self, *inputs, **extra)
        return self._record(user_forward, inputs, training, extra)

    forward._recorded = True
    return forward


class Module(Layer):
    """A layer composed of layers in forward code, as PyTorch's nn.Module.

    Subclasses call `super().__init__()`, assign layers as attributes (they become children,
    named by the attribute) and define `forward(self, x)` (or several input arrays, and an
    optional `training` argument) calling them; the backward is derived (module docstring).
    `params`, `grads` and `buffers` gather the descendants' dicts under dotted names, the
    arrays being the layers' own; `state_dict()` gives PyTorch's names and layouts.

    Rules for forward code: call children (or any layer: `nn.add(a, b)`) rather than their
    `.forward`; combine arrays only through layers; return one array. A layer may be called
    several times (its gradients add up). `nn.save` stores a Module by its class (any subclass
    defined when the file is loaded) and `config()`, which a subclass with constructor
    arguments must return, plus the specs of its children.
    """

    _children: dict[str, Layer]

    def __init__(self) -> None:
        object.__setattr__(self, "_children", {})
        self._cache = None

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        user = cls.__dict__.get("forward")
        if user is not None and not getattr(user, "_recorded", False):
            cls.forward = _recorded(user)                        # type: ignore[method-assign]
        MODULES[f"{cls.__module__}.{cls.__qualname__}"] = cls

    def forward(self, *inputs, training: bool = False):
        raise NotImplementedError(f"{type(self).__name__} must define forward(self, x)")

    def __setattr__(self, name: str, value) -> None:
        children = self.__dict__.get("_children")
        if isinstance(value, Layer):
            if children is None:
                raise AttributeError(f"{type(self).__name__}: call super().__init__() before "
                                     f"assigning layers (assigning {name!r})")
            children[name] = value
        elif children is not None and name in children:
            raise TypeError(f"{type(self).__name__}.{name} is a child layer; it can be "
                            f"replaced by another Layer, not by {type(value).__name__}")
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        self._children.pop(name, None)
        object.__delattr__(self, name)

    def named_children(self):
        return iter(self._children.items())

    def _gather(self, attr: str) -> dict:
        return {f"{name}.{k}" if name else k: v for name, layer in self.named_modules()
                if not isinstance(layer, Module) for k, v in getattr(layer, attr).items()}

    params = property(lambda self: self._gather("params"), doc="Every descendant's params.")
    grads = property(lambda self: self._gather("grads"), doc="Every descendant's grads.")
    buffers = property(lambda self: self._gather("buffers"), doc="Every descendant's buffers.")

    def to(self, xp):
        """Move every descendant's arrays to the array module `xp`; returns self."""
        for child in self.children():
            child.to(xp)
        self._cache = None
        self._refold()
        return self

    def __repr__(self) -> str:
        head = f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in self.config().items())}"
        kids = [f"  ({name}): " + repr(child).replace("\n", "\n  ")
                for name, child in self.named_children()]
        return head + (")" if not kids else "\n" + "\n".join(kids) + "\n)")

    def _record(self, user_forward, inputs: tuple, training, extra: dict):
        training = _args.check_flag(training, "training")
        keep = grad_enabled(training)
        outermost = _RECORDING.get() is None
        tape = _Tape(self, inputs, training, keep)
        token, grad = _RECORDING.set(tape), _GRAD.set(True) if keep else None
        try:
            with (_chunks.network_pass(inputs[0] if inputs else None) if outermost
                  else contextlib.nullcontext()) as run:
                y = user_forward(self, *inputs, **extra)
            tape.blas_held = run is not None and run.held
        except ValueError as e:
            if "read-only" not in str(e):
                raise
            raise ValueError(f"{type(self).__name__}.forward: {e}. While a forward is recorded "
                             f"the arrays between layers are read-only, because in-place "
                             f"arithmetic on them (out += identity) is invisible to the tape; "
                             f"write out = nn.add(out, identity) or use an nn.Add layer") from e
        finally:
            _RECORDING.reset(token)
            if grad is not None:
                _GRAD.reset(grad)
        self._cache = tape if keep else None
        if not keep:
            return y
        parent = _RECORDING.get()
        return tape.finish(y, nested=parent is not None and parent.keep)

    def _state(self):
        return self._cache

    def backward(self, dy, input_grad: bool = True):
        """dx (a tuple for several inputs) from dy, through the recorded calls in reverse;
        fills every descendant's grads (zeros for layers the forward did not reach).

        With input_grad=False only the parameters' gradients are computed and None is
        returned: what only dx needs is skipped, as PyTorch skips it for an input without
        requires_grad (a training step: the first convolution's input gradient, the costliest
        part of its backward, is never computed).

        >>> import numpy as np
        >>> from npconv import nn
        >>> model = nn.Sequential(nn.Conv2d(3, 4, 3, rng=np.random.default_rng(0)), nn.ReLU())
        >>> y = model.forward(np.ones((1, 5, 5, 3), np.float32), training=True)
        >>> model.backward(np.ones_like(y), input_grad=False) is None, sorted(model.grads)
        (True, ['0.bias', '0.weight'])
        """
        tape = self._saved()
        self._cache = None
        input_grad = _args.check_flag(input_grad, "input_grad")
        token = _PASS.get()
        if token is not None:                           # inside a parent's backward
            return tape.backward(dy, token, input_grad)
        token = object()
        reset = _PASS.set(token)
        try:
            with _chunks.network_pass(tape.inputs[0] if tape.inputs else None,  # as forward
                                      hold=tape.blas_held):
                dx = tape.backward(dy, token, input_grad)
        finally:
            _PASS.reset(reset)
        for layer in self.modules():
            if not isinstance(layer, Module) and layer.params and layer._grad_pass is not token:
                layer.grads = {k: _backend.namespace(v).zeros_like(v)
                               for k, v in layer.params.items()}
        return dx


# ---------------------------------------------------------------------------------------------
# Model files: a Module by its class, config() and its children's specs
# ---------------------------------------------------------------------------------------------


def module_spec(module: Module, layer_spec) -> dict:
    """{"type": "Module", "class": ..., "config": ..., "children": {name: spec}} for
    `npconv.nn.save`; `layer_spec` describes the children. TypeError when the class could not
    be rebuilt: defined inside a function, or config() missing constructor arguments."""
    cls = type(module)
    name = f"{cls.__module__}.{cls.__qualname__}"
    config = module.config()
    try:
        inspect.signature(cls).bind(**config)
        ok = "<locals>" not in cls.__qualname__
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(
            f"{name} cannot be saved by architecture: a saved Module is rebuilt as "
            f"cls(**config()), so its class must be defined at module level and its config() "
            f"must return the constructor's arguments (got {config!r:.100}); or save the "
            f"weights alone: npconv.io.save(path, model.state_dict())")
    return {"type": "Module", "class": name, "config": config,
            "children": {k: layer_spec(child) for k, child in module.named_children()}}


def build_module(spec: dict, build, layer_spec) -> Module:
    """The Module of a `module_spec` (its class must be defined in this process: nothing is
    imported by name), its children rebuilt with `build` where their specs differ from
    `layer_spec` of the ones its constructor makes (a replaced head); ValueError for anything
    unknown or invalid."""
    cls, config, children = MODULES.get(str(spec.get("class"))), spec.get("config"), \
        spec.get("children")
    if cls is None:
        raise ValueError(f"unknown Module class {spec.get('class')!r:.100}: define (import) it "
                         f"before loading; known: {sorted(MODULES)[:20]}")
    if not isinstance(config, dict) or not isinstance(children, dict):
        raise ValueError(f"a Module spec needs a dict under 'config' and one under 'children'; "
                         f"got {config!r:.100}, {children!r:.100}")
    rng = {"rng": np.random.default_rng(0)} if "rng" in inspect.signature(cls).parameters \
        else {}
    try:
        module = cls(**config, **rng)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"invalid {cls.__name__} config {config!r:.200}: {e}") from e
    for name, child_spec in children.items():
        current = module._children.get(name) if isinstance(name, str) else None
        if current is None or child_spec != json.loads(json.dumps(layer_spec(current))):
            setattr(module, str(name), build(child_spec))
    return module


class Sequential(Module):
    """Layers applied in order, as PyTorch's nn.Sequential: children named "0", "1", ...,
    so params and state_dict keys are "0.weight", "3.running_mean".

    >>> from npconv import nn
    >>> model = nn.Sequential(nn.Linear(4, 3, rng=np.random.default_rng(0)), nn.ReLU())
    >>> len(model), type(model[1]).__name__, sorted(model.params)
    (2, 'ReLU', ['0.bias', '0.weight'])
    """

    def __init__(self, *layers: Layer) -> None:
        super().__init__()
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(f"Sequential takes Layer instances; argument {i} is "
                                f"{type(layer).__name__}")
            setattr(self, str(i), layer)

    @property
    def layers(self) -> tuple:
        """The layers, in order."""
        return tuple(self._children.values())

    def __len__(self) -> int:
        return len(self._children)

    def __getitem__(self, i: int) -> Layer:
        return self.layers[i]

    def __setitem__(self, i: int, layer: Layer) -> None:
        """Replace layer i (a new head: model.classifier[1] = nn.Linear(1280, 10))."""
        if not isinstance(layer, Layer):
            raise TypeError(f"Sequential items must be Layer instances; got "
                            f"{type(layer).__name__}")
        name = list(self._children)[i]                  # IndexError as for a tuple
        setattr(self, name, layer)

    def __iter__(self):
        return iter(self.layers)

    def __repr__(self) -> str:
        inner = ",\n".join("  " + repr(layer).replace("\n", "\n  ") for layer in self)
        return f"{type(self).__name__}(\n{inner}\n)"

    def forward(self, x):
        for layer in self._children.values():
            x = layer(x)
        return x
