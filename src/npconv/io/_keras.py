"""Keras weights through h5py (the optional `keras` extra): Keras 3 `.weights.h5` and `.keras`
files, and Keras 2's legacy `.h5` files.

Keras 3 writes one HDF5 group per layer, `layers/<layer>/vars/<i>` holding the layer's i-th
variable, nested for models inside models (`layers/<model>/layers/<layer>/vars/<i>`), plus the
optimizer's variables under `optimizer/`. A `.keras` file is a zip of `config.json` (the
architecture), `metadata.json` and that HDF5 file as `model.weights.h5`. Keras 2 listed the
layers in the `layer_names` attribute and each layer's variables in its `weight_names`
attribute (under `model_weights/` in a whole-model file, whose `model_config` attribute holds
the architecture).

Only hard links, plain numeric datasets stored in the file itself are read (no external
links, external raw data or virtual datasets: they would read other files), each checked
(dtype, shape, size against the budget) before its array is allocated. Each group and dataset
is read at most once: hard links can make a group its own descendant or reach one group from
many places, and a 20 KB file of 16 groups each linking twice to the next holds 65,536 paths.
"""

from __future__ import annotations

import io
import json
import math
import re
from pathlib import Path

import numpy as np

from npconv.io._files import Budget, error, numpy_can_hold, open_zip, read_member

_MAX_DEPTH = 64


def _h5py():
    try:
        import h5py
    except ImportError as e:
        raise ImportError("reading Keras files needs h5py: pip install 'npconv[keras]'") from e
    return h5py


def read(path: Path, kind: str, budget: Budget) -> dict[str, np.ndarray]:
    """The weights of a Keras file: `kind` "keras" (a .keras zip) or "hdf5"."""
    return read_with_config(path, kind, budget)[0]


def read_with_config(path: Path, kind: str,
                     budget: Budget) -> tuple[dict[str, np.ndarray], dict | None]:
    """(weights, architecture): the config of a .keras file or a whole-model legacy .h5 file
    (parsed JSON), None for a weights-only file."""
    h5py = _h5py()
    config, size = None, path.stat().st_size
    source: Path | io.BytesIO = path
    if kind == "keras":
        with open_zip(path) as zf:
            config = _json(path, read_member(path, zf, "config.json", budget), "config.json")
            data = read_member(path, zf, "model.weights.h5", budget)
        source, size = io.BytesIO(data), len(data)
    try:
        with h5py.File(source, "r") as f:
            if kind == "hdf5" and "model_config" in f.attrs:
                config = _json(path, f.attrs["model_config"], "the model_config attribute")
            return _weights(h5py, path, f, size, budget), config
    except (OSError, KeyError, RuntimeError) as e:           # what h5py raises for corrupt files
        raise error(path, f"not a readable HDF5 file ({type(e).__name__}: {e})") from e


def _json(path: Path, text, what: str) -> dict:
    try:
        value = json.loads(text)
    except (ValueError, RecursionError, TypeError) as e:   # ValueError: also 4300-digit ints
        raise error(path, f"{what} is not valid JSON ({e})") from e
    if not isinstance(value, dict):
        raise error(path, f"{what} must hold a JSON object; got {type(value).__name__}")
    return value


def _weights(h5py, path: Path, f, size: int, budget: Budget) -> dict[str, np.ndarray]:
    reader = _Reader(h5py, path, size, budget)
    if "layer_names" in f.attrs:
        return reader.keras2(f)
    if "model_weights" in f and "layer_names" in f["model_weights"].attrs:
        return reader.keras2(f["model_weights"])
    if "layers" in f or "vars" in f:
        return reader.keras3(f)
    raise error(path, f"an HDF5 file that is not a Keras weights file (no 'layers' or 'vars' "
                      f"group of Keras 3, no 'layer_names' of Keras 2; top level: "
                      f"{sorted(f.keys())[:8]})")


def _natural(name: str) -> list:
    """A sort key putting conv2d_2 before conv2d_10."""
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", name)]


class _Reader:
    """Walks one HDF5 file, reading each dataset after checking it."""

    def __init__(self, h5py, path: Path, size: int, budget: Budget) -> None:
        self.h5py, self.path, self.size, self.budget = h5py, path, size, budget
        self.seen: set = set()                   # h5py object ids: equal for one object's links

    def _once(self, obj) -> None:
        """Refuse a group or dataset reached a second time (through another hard link)."""
        if obj.id in self.seen:
            raise error(self.path, f"{obj.name} is reached twice, through two hard links; a "
                                   f"Keras file links each group and dataset once")
        self.seen.add(obj.id)

    def keras3(self, f) -> dict[str, np.ndarray]:
        """Keys "<layer path>/vars/<i>", "layers/" dropped from the front; the optimizer's
        variables are not model weights and are skipped."""
        out: dict[str, np.ndarray] = {}
        for name in self._children(f):
            if name == "layers":
                self._walk(f[name], "", out, 1)
            elif name == "vars":
                self._vars(f[name], "vars", out)
            elif name != "optimizer":
                self._walk(f[name], f"{name}/", out, 1)
        return out

    def _walk(self, group, prefix: str, out: dict, depth: int) -> None:
        if not isinstance(group, self.h5py.Group) or depth > _MAX_DEPTH:
            raise error(self.path, f"{group.name}: expected a group of layers (nested at most "
                                   f"{_MAX_DEPTH} deep)")
        self._once(group)
        for name in self._children(group):
            if name == "vars":
                self._vars(group[name], f"{prefix}vars", out)
            else:
                self._walk(group[name], f"{prefix}{name}/", out, depth + 1)

    def _vars(self, group, key: str, out: dict) -> None:
        names = self._children(group)
        if not isinstance(group, self.h5py.Group) or not all(n.isdigit() for n in names):
            raise error(self.path, f"{group.name}: a Keras 3 'vars' group holds datasets named "
                                   f"0, 1, ...; got {names[:8]}")
        for name in sorted(names, key=int):
            if f"{key}/{name}" in out:
                raise error(self.path, f"two variables have the key {key}/{name}")
            out[f"{key}/{name}"] = self._read(group[name])

    def keras2(self, group) -> dict[str, np.ndarray]:
        """Keys "<layer name>/<weight name>", in the file's `layer_names` order."""
        out = {}
        for layer in self._names(group, "layer_names"):
            sub = self._child(group, layer)
            for weight in self._names(sub, "weight_names"):
                dataset = sub
                for part in weight.split("/"):               # "dense/kernel:0": nested groups
                    dataset = self._child(dataset, part)
                out[f"{layer}/{weight}"] = self._read(dataset)
        return out

    def _names(self, group, attribute: str) -> list[str]:
        value = group.attrs.get(attribute, [])
        names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n
                 for n in np.asarray(value).reshape(-1).tolist()]
        if not all(isinstance(n, str) for n in names):
            raise error(self.path, f"{group.name}: attribute {attribute!r} must list names; got "
                                   f"{value!r:.80}")
        return names

    def _children(self, group) -> list[str]:
        """The group's members in natural name order, each a hard link inside this file."""
        names = list(group.keys())
        if not all(isinstance(name, str) for name in names):
            raise error(self.path, f"{group.name}: member names must be UTF-8 text; got "
                                   f"{names!r:.80}")
        names.sort(key=_natural)
        for name in names:
            self._child(group, name)
        return names

    def _child(self, group, name: str):
        if not isinstance(group, self.h5py.Group):
            raise error(self.path, f"{group.name} is not a group; cannot hold {name!r}")
        link = group.get(name, getlink=True)
        if link is None:
            raise error(self.path, f"{group.name}/{name} is listed but missing")
        if not isinstance(link, self.h5py.HardLink):
            raise error(self.path, f"{group.name}/{name} is a {type(link).__name__}; npconv "
                                   f"follows no soft or external links")
        return group[name]

    def _read(self, ds) -> np.ndarray:
        """The dataset's array, after checking its kind, dtype and size."""
        where = ds.name
        if not isinstance(ds, self.h5py.Dataset) or ds.shape is None:
            raise error(self.path, f"{where}: expected a dataset holding an array")
        self._once(ds)
        if ds.is_virtual or getattr(ds, "external", None):
            raise error(self.path, f"{where}: a virtual or external dataset (its data lives in "
                                   f"other files); npconv reads data stored in this file only")
        dtype = ds.dtype
        if dtype.kind not in "biuf" or dtype.fields is not None or dtype.subdtype is not None:
            raise error(self.path, f"{where}: dtype {dtype} is not a plain numeric dtype")
        if not numpy_can_hold(ds.shape, dtype.itemsize):
            raise error(self.path, f"{where}: shape {ds.shape} has more elements than a NumPy "
                                   f"array can")
        nbytes = math.prod(ds.shape) * dtype.itemsize
        if ds.chunks is None and nbytes > self.size:
            raise error(self.path, f"{where}: shape {ds.shape} of {dtype} declares {nbytes} "
                                   f"bytes, more than the file holds ({self.size})")
        self.budget.take(nbytes, f"dataset {where!r}")
        out = np.empty(ds.shape, dtype=dtype.newbyteorder("="))    # (*ds.shape,)
        if out.size:
            try:
                ds.read_direct(out)
            except (OSError, ValueError, TypeError) as e:
                raise error(self.path, f"{where}: unreadable dataset ({e})") from e
        return out
