"""Weights in and out without PyTorch or Keras: read safetensors, PyTorch .pt/.pth, Keras
.keras/.weights.h5/.h5 and NumPy .npz files into a dict of NumPy arrays; write safetensors.

Files from outside are data, never code: the format is recognized by its content (the name is
only a hint, and a file that is not what its name says is refused), every declared size is
checked before anything is allocated, and a PyTorch pickle is parsed by a restricted unpickler
that rebuilds tensors and refuses everything else, so that loading never runs code from the
file. h5py (the `keras` extra) is imported only when a Keras file is read.

    >>> import numpy as np, tempfile, os
    >>> from npconv import io
    >>> path = os.path.join(tempfile.mkdtemp(), "weights.safetensors")
    >>> _ = io.save(path, {"conv1.weight": np.ones((4, 3, 3, 3), np.float32)})
    >>> {k: v.shape for k, v in io.load(path).items()}
    {'conv1.weight': (4, 3, 3, 3)}

See docs/models.md, "Weights in and out", for what each format gives and what is refused.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from npconv.io import _files, _keras, _npz, _safetensors, _torch
from npconv.nn.serialization import atomic_write

__all__ = ["FORMATS", "detect_format", "load", "load_keras", "load_metadata", "save"]

FORMATS = ("safetensors", "torch", "keras", "hdf5", "npz")
_READERS = {"safetensors": _safetensors.read, "torch": _torch.read, "npz": _npz.read,
            "keras": lambda path, budget: _keras.read(path, "keras", budget),
            "hdf5": lambda path, budget: _keras.read(path, "hdf5", budget)}


def detect_format(path: str | os.PathLike) -> str:
    """The format of the file at `path`, one of FORMATS, recognized by its content.

    "torch" is torch.save's zip format, "keras" a Keras 3 .keras archive, "hdf5" a Keras
    .weights.h5 or legacy .h5 file. ValueError for anything else (a TorchScript archive, a
    plain pickle, a legacy torch file...) and for a file whose name promises another format.

    >>> import numpy as np, tempfile, os
    >>> from npconv import io
    >>> path = io.save(os.path.join(tempfile.mkdtemp(), "w.safetensors"), {"b": np.zeros(2)})
    >>> io.detect_format(path)
    'safetensors'
    """
    return _files.detect(_files.existing_file(path))


def load(path: str | os.PathLike, *, max_bytes: int | None = None) -> dict[str, np.ndarray]:
    """The arrays saved at `path`, by name: each a fresh, writeable, C-contiguous NumPy array
    in native byte order.

    Parameters
    ----------
    path : a .safetensors, .pt/.pth (torch.save's zip format; also .bin, .ckpt), .keras,
        .weights.h5/.h5 (needs h5py: `pip install 'npconv[keras]'`) or .npz file. The format
        is read off the content; a file whose name promises another format is refused.
    max_bytes : the most bytes the arrays (and any data inflated from a compressed zip member
        or HDF5 dataset) may take; None: 64 times the file's size, at least 64 MiB. Data
        stored uncompressed is always checked against the file's size as well.

    Returns
    -------
    dict name -> array. The names, by format:

    - safetensors: the header's names, in its order; bfloat16 comes back as float32 (exactly).
    - PyTorch: the state_dict's keys (`layer1.0.conv1.weight`), in its order. A checkpoint that
      nests dicts (`{"model": state_dict, "epoch": 3}`) gives dotted keys (`model.conv1.weight`);
      values that are not tensors (numbers, strings, lists, int-keyed dicts such as an
      optimizer's state) are skipped. bfloat16 comes back as float32.
    - Keras 3: `"<layer path>/vars/<i>"` (`conv2d/vars/0`, `sequential/layers/dense/vars/1`),
      the layer path as stored in the file, in natural name order, variables by index; the
      optimizer's variables are skipped. Keras 2 .h5: `"<layer>/<weight name>"` in the file's
      `layer_names` order. Use `load_keras` for the architecture too.
    - npz: the archive's keys; for an `npconv.nn.save` file, the saved model's `state_dict()`
      (PyTorch's names and layouts), read by `npconv.nn.load`.

    Raises
    ------
    ValueError, naming the file and what was wrong, for a corrupt or hostile file: a truncated
    or inconsistent header, offsets or strides outside the data, a declared size the file
    cannot hold, a pickle naming anything but tensor rebuilds, and so on. Nothing in the file
    is executed. FileNotFoundError if there is no file.

    >>> import numpy as np, tempfile, os
    >>> from npconv import io
    >>> path = os.path.join(tempfile.mkdtemp(), "head.safetensors")
    >>> _ = io.save(path, {"fc.weight": np.eye(2, 3), "fc.bias": np.zeros(2, np.float32)})
    >>> weights = io.load(path)
    >>> weights["fc.weight"].dtype, weights["fc.bias"].shape
    (dtype('float64'), (2,))
    """
    path = _files.existing_file(path)
    kind = _files.detect(path)
    return _READERS[kind](path, _files.Budget.for_file(path, max_bytes))


def load_keras(path: str | os.PathLike, *,
               max_bytes: int | None = None) -> tuple[dict[str, np.ndarray], dict | None]:
    """The weights of a Keras file and its architecture: `(weights, config)`.

    `weights` is what `load` gives for the file; `config` is the parsed JSON of the model's
    config (config.json of a .keras file, the `model_config` attribute of a legacy whole-model
    .h5 file), or None for a weights-only file (.weights.h5). ValueError for a file that is
    not a Keras file; ImportError without h5py.

    Example (after `model.save("m.keras")` in Keras 3)::

        weights, config = io.load_keras("m.keras")
        weights["conv2d/vars/0"]                 # the first Conv2D's kernel, (*K, C, F)
        config["config"]["layers"]               # the layers, in the model's order
    """
    path = _files.existing_file(path)
    kind = _files.detect(path)
    if kind not in ("keras", "hdf5"):
        raise _files.error(path, f"not a Keras file: it holds {_files.DESCRIPTIONS[kind]}")
    return _keras.read_with_config(path, kind, _files.Budget.for_file(path, max_bytes))


def load_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The `__metadata__` strings of a safetensors file (an empty dict when it has none).

    >>> import numpy as np, tempfile, os
    >>> from npconv import io
    >>> path = os.path.join(tempfile.mkdtemp(), "m.safetensors")
    >>> _ = io.save(path, {"w": np.ones(3)}, metadata={"format": "np", "epochs": "3"})
    >>> io.load_metadata(path)
    {'format': 'np', 'epochs': '3'}
    """
    path = _files.existing_file(path)
    if _files.detect(path) != "safetensors":
        raise _files.error(path, "not a safetensors file; only safetensors files hold metadata")
    return _safetensors.read_metadata(path)


def save(path: str | os.PathLike, state_dict: dict[str, np.ndarray], *,
         metadata: dict[str, str] | None = None) -> Path:
    """Write `state_dict` (name -> array) to `path` as safetensors; return the path.

    Float (64/32/16-bit), int, uint and bool arrays are written bit for bit in little-endian
    order (a non-contiguous or big-endian array is copied first; the caller's arrays are never
    changed). `metadata`, if given, is a dict of str -> str stored in the header. The file is
    written to a temporary name beside `path` and renamed over it when complete, so a reader
    never sees half a file. A safetensors file loads in PyTorch with
    `safetensors.torch.load_file(path)`.

    TypeError for a value that is not an array, a dtype safetensors cannot hold (object,
    string, complex) or metadata that is not str -> str; ValueError for a path not ending in
    .safetensors or naming an existing file that is not safetensors (it is never overwritten).

    >>> import numpy as np, tempfile, os
    >>> from npconv import io
    >>> w = np.arange(6, dtype=np.float32).reshape(2, 3)
    >>> path = io.save(os.path.join(tempfile.mkdtemp(), "w.safetensors"), {"w": w.T})
    >>> io.load(path)["w"].tolist()
    [[0.0, 3.0], [1.0, 4.0], [2.0, 5.0]]
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    path = Path(path)
    if path.suffix != ".safetensors":
        raise ValueError(f"`path` must end in .safetensors (npconv writes safetensors only); "
                         f"got {path.name!r}")
    if not path.parent.is_dir():
        raise FileNotFoundError(f"directory {path.parent} does not exist")
    if path.exists() and (not path.is_file() or _files.content_kind(path) != "safetensors"):
        raise ValueError(f"{path} exists and is not a safetensors file; refusing to overwrite "
                         f"it (move it away or choose another path)")
    atomic_write(path, _safetensors.writer(state_dict, metadata))
    return path
