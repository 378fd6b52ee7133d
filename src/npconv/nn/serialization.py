"""Save and load a model, architecture and weights, in one .npz file and without pickle.

The file is a NumPy .npz (a zip of .npy arrays), read back with `allow_pickle=False`:

    __npconv_model__   a 0-d string array holding JSON: {"format": "npconv.model", "version": 2,
                       "model": <layer spec>, "metadata": {...}}
    params/<key>       every array of model.params ("params/0.weight", ...)
    buffers/<key>      every array of model.buffers ("buffers/3.running_mean", ...)

A layer spec is {"type": "Conv2d", "config": {...}} (the layer's `config()`),
{"type": "Sequential", "layers": [<layer spec>, ...]}, or for any other Module (a ResNet of
`npconv.models`, a user's subclass) {"type": "Module", "class": "package.module.ClassName",
"config": {...}, "children": {name: <layer spec>, ...}}, rebuilt as ClassName(**config) with
the children whose specs differ replaced; the class must be defined when the file is loaded
(nothing is imported by name, see `npconv.nn.module.build_module`). Version 1 files (npconv
0.1, before the PyTorch names: Dense, "w", "b", "gamma", "beta", Dropout's "rate", no
num_batches_tracked) are converted on load. Arrays are stored bit for bit, so load(save(model))
gives the same outputs exactly. Saving writes a temporary file next to the
target and renames it over the target only once it is complete, and refuses to replace a file
that is not an npconv model.

Loading treats the file as data from anywhere: the JSON header is parsed (never evaluated), the
architecture is built without memory (`npconv.nn.init.meta`), and every key, shape and dtype it
declares is checked against the stored arrays' .npy headers, and each of those against the bytes
that hold it (`npconv._npyfile`), before any array is read or allocated. A damaged, truncated,
foreign or hostile file (a huge declared shape, a non-.npy member, a pickle, Sequentials nested
more than MAX_NESTING deep, more than MAX_LAYERS layers, a Module config whose constructor would
make more than ARRAYS_PER_STORED placeholder arrays per stored array) raises one ValueError
naming the file.
"""

from __future__ import annotations

import functools
import inspect
import json
import os
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from npconv import _backend, _npyfile
from npconv.nn import init
from npconv.nn.layers import LAYERS, Layer, Sequential
from npconv.nn.module import MODULES, Module, build_module, module_spec

__all__ = [
    "FORMAT",
    "VERSION",
    "atomic_write",
    "build",
    "is_model_file",
    "layer_spec",
    "load",
    "load_metadata",
    "load_weights",
    "save",
]

FORMAT = "npconv.model"
VERSION = 2
HEADER_KEY = "__npconv_model__"
MAX_NESTING = 64                   # Sequentials within Sequentials, in a file's architecture
MAX_LAYERS = 100_000               # layers in a file's architecture (ResNet-152 has about 500)
MAX_HEADER_BYTES = 16 << 20        # the JSON header member
# The arrays (params, grads, buffers) building a file's architecture may make, per stored array:
# a layer makes about two per stored one (its grads), and a Module whose constructor makes its
# children and then has them replaced by the file's makes both.
ARRAYS_PER_STORED = 8


class Stored(NamedTuple):
    """An array of a model file, known by its .npy header; `read()` reads it."""

    shape: tuple[int, ...]
    dtype: np.dtype
    read: Callable[[], np.ndarray]


def layer_spec(layer: Layer) -> dict:
    """The JSON-ready description of a layer (recursively for Sequential and Module)."""
    if type(layer) is Sequential:
        return {"type": "Sequential", "layers": [layer_spec(sub) for sub in layer]}
    if isinstance(layer, Module):
        return module_spec(layer, layer_spec)
    return {"type": type(layer).__name__, "config": layer.config()}


def build(spec: Any) -> Layer:
    """A fresh layer from `layer_spec`'s output; ValueError for anything unknown or invalid."""
    if isinstance(spec, dict) and spec.get("type") == "Module":
        _check_child_names(spec)
        return build_module(spec, build, layer_spec)
    if not isinstance(spec, dict) or spec.get("type") not in LAYERS:
        kind = spec.get("type") if isinstance(spec, dict) else type(spec).__name__
        raise ValueError(f"unknown layer type {kind!r}; known: {sorted(LAYERS)}")
    cls = LAYERS[spec["type"]]
    if cls is Sequential:
        if not isinstance(spec.get("layers"), list):
            raise ValueError("a Sequential spec needs a list under 'layers'")
        return Sequential(*map(build, spec["layers"]))
    config = spec.get("config")
    if not isinstance(config, dict):
        raise ValueError(f"a {cls.__name__} spec needs a dict under 'config'; got {config!r}")
    # placeholder weights, overwritten on load, drawn from a local generator so that loading
    # leaves the default generator's stream alone
    extra: dict[str, Any] = {"rng": np.random.default_rng(0)} \
        if "init" in inspect.signature(cls).parameters else {}
    try:
        return cls(**config, **extra)
    except (TypeError, ValueError, OverflowError) as e:
        raise ValueError(f"invalid {cls.__name__} config {config!r:.200}: {e}") from e


def _check_child_names(spec: dict) -> None:
    """A Module spec's children must be named as attributes its class does not have: a child
    named `params`, `forward` or `__class__` would be assigned over the class's own."""
    cls, children = MODULES.get(str(spec.get("class"))), spec.get("children")
    if cls is None or not isinstance(children, dict):
        return                                        # build_module says what is wrong
    for name in children:
        if not (name.isidentifier() or name.isdigit()) or name.startswith("_") or \
                hasattr(cls, name):
            raise ValueError(f"a {cls.__name__} child cannot be named {name!r:.60}: a child's "
                             f"name must be an identifier (or digits) that is not an attribute "
                             f"of the class")


def _arrays(model: Layer) -> dict:
    """Every array to save, as NumPy arrays (a model on a GPU is copied to the host)."""
    return {**{f"params/{k}": _backend.to_numpy(v) for k, v in model.params.items()},
            **{f"buffers/{k}": _backend.to_numpy(v) for k, v in model.buffers.items()}}


def save(model: Layer, path: str | os.PathLike, *, metadata: dict | None = None) -> Path:
    """Write `model` (architecture, params, buffers) and JSON `metadata` to `path`.

    Refuses (ValueError) to replace an existing file that is not an npconv model, and never
    leaves a half-written file: the target changes only when the new file is complete.

    >>> import numpy as np, tempfile, os
    >>> from npconv import nn
    >>> model = nn.Sequential(nn.Linear(3, 2, rng=np.random.default_rng(0)), nn.ReLU())
    >>> path = nn.save(model, os.path.join(tempfile.mkdtemp(), "model.npz"))
    >>> again = nn.load(path)
    >>> all(np.array_equal(again.params[k], v) for k, v in model.params.items())
    True
    """
    if not isinstance(model, Layer):
        raise TypeError(f"`model` must be an npconv.nn Layer; got {type(model).__name__}")
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory; give a file name such as {path / 'model.npz'}")
    if path.exists() and not is_model_file(path):
        raise ValueError(f"{path} exists and is not an npconv model file; refusing to overwrite "
                         f"it (move it away or choose another path)")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    try:
        header = json.dumps({"format": FORMAT, "version": VERSION, "model": layer_spec(model),
                             "metadata": dict(metadata or {})})
    except TypeError as e:
        raise TypeError(f"`metadata` must hold JSON values only: {e}") from e
    arrays: dict[str, Any] = {HEADER_KEY: np.array(header), **_arrays(model)}
    atomic_write(path, lambda f: np.savez(f, **arrays))
    return path


def atomic_write(path: str | os.PathLike, write: Callable[[Any], object], *,
                 mode: str = "wb") -> None:
    """Call write(f) on a temporary file beside `path`, then rename it over `path`: readers
    see the old file or the complete new one, never a partial one. The new file gets the
    permissions of a normally created file (mkstemp's are 0600)."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode) as f:
            write(f)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)


def _open(path) -> zipfile.ZipFile:
    """The model file at `path` as an open zip; FileNotFoundError or ValueError."""
    path = _npyfile.existing_file(path, "an npconv model file")
    try:
        return zipfile.ZipFile(path)
    except (zipfile.BadZipFile, *_npyfile.READ_ERRORS) as e:
        raise ValueError(f"{path}: not an npconv model file (not an .npz archive, or a "
                         f"truncated one: {e})") from None


def _check_size(spec, path) -> None:
    """At most MAX_NESTING levels of Sequentials (and Modules) and MAX_LAYERS layers, counted
    without recursion (`build` and `layer_spec` recurse)."""
    count, todo = 0, [(spec, 0)]
    while todo:
        node, depth = todo.pop()
        count += 1
        if depth > MAX_NESTING or count > MAX_LAYERS:
            what = (f"Sequentials nested more than {MAX_NESTING} deep" if depth > MAX_NESTING
                    else f"more than {MAX_LAYERS} layers")
            raise ValueError(f"{path}: invalid architecture: {what}")
        if isinstance(node, dict) and isinstance(node.get("layers"), list):
            todo.extend((sub, depth + 1) for sub in node["layers"])
        if isinstance(node, dict) and isinstance(node.get("children"), dict):
            todo.extend((sub, depth + 1) for sub in node["children"].values())   # a Module's


def _read_header(zf: zipfile.ZipFile, path) -> dict:
    """The checked JSON header of an open model file."""
    info = next((i for i in zf.infolist() if i.filename == HEADER_KEY + ".npy"), None)
    if info is None:
        names = sorted(i.filename.removesuffix(".npy") for i in zf.infolist())[:5]
        raise ValueError(f"{path}: not an npconv model file (an .npz without the "
                         f"{HEADER_KEY!r} entry; keys {names})")
    if info.file_size > MAX_HEADER_BYTES:
        raise ValueError(f"{path}: corrupt npconv model file (a header of {info.file_size} "
                         f"bytes; at most {MAX_HEADER_BYTES})")
    text = _npyfile.read_member(zf, info, f"{path}: {HEADER_KEY}")
    if text.shape != () or text.dtype.kind != "U":
        raise ValueError(f"{path}: corrupt npconv model file (the header is {text.dtype} of "
                         f"shape {text.shape}, not a JSON string)")
    try:
        header = json.loads(str(text[()]))
    except (ValueError, RecursionError) as e:
        raise ValueError(f"{path}: corrupt npconv model file (header: {type(e).__name__}: "
                         f"{e})") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ValueError(f"{path}: not an npconv model file (format {header!r:.60})")
    if header.get("version") not in (1, VERSION):
        raise ValueError(f"{path}: npconv model format version {header.get('version')!r}; this "
                         f"npconv reads versions 1 and {VERSION}")
    _check_size(header.get("model"), path)
    return header


def _stored(zf: zipfile.ZipFile, path) -> dict:
    """{key: Stored} for every array member, each .npy header checked, no data read."""
    stored = {}
    for info in zf.infolist():
        key = info.filename.removesuffix(".npy")
        if key != HEADER_KEY:
            where = f"{path}: {key}"
            shape, dtype, _ = _npyfile.member_header(zf, info, where)
            read = functools.partial(_npyfile.read_member, zf, info, where)
            stored[key] = Stored(shape, dtype, read)
    return stored


def _read(path, zf: zipfile.ZipFile, *, with_arrays: bool = True) -> tuple[dict, dict]:
    """(header, {key: Stored}) of the open model file, version 1 converted to version 2."""
    header = _read_header(zf, path)
    stored = _stored(zf, path) if with_arrays else {}
    return _upgrade_v1(header, stored) if header["version"] == 1 else (header, stored)


# Version 1 (npconv 0.1) -> 2: PyTorch's class, argument and key names.
_V1_TYPES = {"Dense": "Linear"}
_V1_KEYS = {"w": "weight", "b": "bias", "gamma": "weight", "beta": "bias"}


def _upgrade_spec(spec, prefix: str, counters: list):
    """A version-1 layer spec in version 2's names; the dotted prefixes of its BatchNorm layers
    are appended to `counters` (they gain a num_batches_tracked buffer). Anything malformed is
    left as it is, for `build` to report."""
    if not isinstance(spec, dict):
        return spec
    if spec.get("type") == "Sequential" and isinstance(spec.get("layers"), list):
        return {**spec, "layers": [_upgrade_spec(s, f"{prefix}{i}.", counters)
                                   for i, s in enumerate(spec["layers"])]}
    config = spec.get("config")
    if isinstance(config, dict):
        config = {k: v for k, v in config.items() if k != "init"}
        if spec.get("type") == "Dropout" and "rate" in config:
            config["p"] = config.pop("rate")
    if spec.get("type") == "BatchNorm":
        counters.append(prefix)
    kind = spec.get("type")
    return {**spec, "type": _V1_TYPES.get(kind, kind) if isinstance(kind, str) else kind,
            "config": config}


def _upgrade_key(key: str) -> str:
    """"params/0.w" -> "params/0.weight", "params/gamma" -> "params/weight"; buffers keep
    their names."""
    kind, _, name = key.partition("/")
    if kind != "params":
        return key
    prefix, dot, leaf = name.rpartition(".")
    return f"params/{prefix}{dot}{_V1_KEYS.get(leaf, leaf)}"


def _upgrade_v1(header: dict, stored: dict) -> tuple[dict, dict]:
    """(header, {key: Stored}) of a version-1 file in version 2's names; its BatchNorm layers
    get num_batches_tracked = 0, as PyTorch gives a state_dict that lacks it."""
    counters: list = []
    model = _upgrade_spec(header.get("model"), "", counters)
    stored = {_upgrade_key(k): v for k, v in stored.items()}
    if stored:
        zero = Stored((), np.dtype(np.int64), lambda: np.zeros((), np.int64))
        stored.update({f"buffers/{p}num_batches_tracked": zero for p in counters})
    return {**header, "version": VERSION, "model": model}, stored


def is_model_file(path: str | os.PathLike) -> bool:
    """True if `path` is a readable npconv model file."""
    try:
        with _open(path) as zf:
            _read_header(zf, path)
    except (ValueError, FileNotFoundError):
        return False
    return True


def _check_arrays(model: Layer, stored: dict, path) -> None:
    """Every key, shape and dtype the model needs, and no other."""
    want = _arrays(model)
    if want.keys() != stored.keys():
        missing, extra = sorted(want.keys() - stored.keys()), sorted(stored.keys() - want.keys())
        raise ValueError(f"{path}: weights do not match the architecture: missing {missing}, "
                         f"unexpected {extra}")
    for key, target in want.items():
        got = stored[key]
        if got.shape != target.shape or got.dtype != target.dtype:
            raise ValueError(f"{path}: {key} must be {target.dtype} of shape {target.shape}; "
                             f"got {got.dtype} of shape {got.shape}")


def _leaves(layer: Layer):
    """(key prefix, layer) of every layer that is not a container, as the keys name them."""
    for name, sub in layer.named_modules():
        if not isinstance(sub, Module):
            yield f"{name}." if name else "", sub


def _adopt(model: Layer, arrays: dict) -> None:
    """Give a model built in `init.meta()` the loaded arrays in place of its placeholders."""
    for prefix, layer in _leaves(model):
        layer.params = {k: arrays[f"params/{prefix}{k}"] for k in layer.params}
        layer.grads = {k: np.zeros_like(v) for k, v in layer.params.items()}   # like params
        layer.buffers = {k: arrays[f"buffers/{prefix}{k}"] for k in layer.buffers}


def load(path: str | os.PathLike) -> Layer:
    """The model saved at `path`, rebuilt from its architecture, with its exact weights.

    The architecture is first built without memory and its every array checked against the
    file's; then only the stored arrays are allocated, once each."""
    with _open(path) as zf:
        header, stored = _read(path, zf)
        try:
            with init.meta(max_arrays=ARRAYS_PER_STORED * len(stored) + 64):
                model = build(header.get("model"))
        except ValueError as e:
            raise ValueError(f"{path}: invalid architecture: {e}") from e
        _check_arrays(model, stored, path)
        _adopt(model, {k: v.read() for k, v in stored.items()})
    return model


def load_weights(model: Layer, path: str | os.PathLike) -> None:
    """Copy the weights saved at `path` into `model`, whose architecture must match; on any
    error `model` is left unchanged (everything is read before the first copy)."""
    with _open(path) as zf:
        header, stored = _read(path, zf)
        if header.get("model") != json.loads(json.dumps(layer_spec(model))):
            raise ValueError(f"{path}: the saved architecture differs from the model's")
        _check_arrays(model, stored, path)
        arrays = {k: v.read() for k, v in stored.items()}
    for key, target in _arrays(model).items():
        np.copyto(target, arrays[key])                 # in place: the layers' own arrays


def load_metadata(path: str | os.PathLike) -> dict:
    """The `metadata` dict saved with the model at `path`."""
    with _open(path) as zf:
        header, _ = _read(path, zf, with_arrays=False)
    metadata = header.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{path}: metadata must be a JSON object; got {type(metadata).__name__}")
    return metadata
