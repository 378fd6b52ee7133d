"""NumPy .npz archives: npconv's own model files (`npconv.nn.save`) and plain `np.savez` files.

An .npz is a zip of .npy files. Each member's .npy header (magic, dtype, shape) is read and
checked against the member's declared size before `np.load(..., allow_pickle=False)` reads any
array, so that a header declaring more than its member holds is refused without allocating.
An npconv model file keeps its architecture in a JSON string array (skipped here) and its
arrays under "params/" and "buffers/"; those prefixes are stripped.
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from npconv.io._files import ZIP_ERRORS, Budget, check_stored, error, native, open_zip

MODEL_HEADER = "__npconv_model__"
PREFIXES = ("params/", "buffers/")


def read(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """Every numeric array of the archive, by its key (npconv's prefixes stripped)."""
    with open_zip(path) as zf:
        names = [name for info in zf.infolist()
                 if (name := _checked_member(path, zf, info, budget)) is not None]
    keys = {name: _strip(name) for name in names}
    if len(set(keys.values())) != len(keys):
        dup = next(k for k in keys.values() if list(keys.values()).count(k) > 1)
        raise error(path, f"two arrays have the key {dup!r} once 'params/' and 'buffers/' are "
                          f"stripped")
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {keys[name]: native(npz[name]) for name in names}
    except ZIP_ERRORS as e:
        raise error(path, f"corrupt .npz archive ({type(e).__name__}: {e})") from e


def _strip(name: str) -> str:
    for prefix in PREFIXES:
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


def _checked_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                    budget: Budget) -> str | None:
    """The array name of member `info`, its header checked; None for npconv's model header."""
    name = info.filename.removesuffix(".npy")
    check_stored(path, info)
    try:
        with zf.open(info) as f:
            version = np.lib.format.read_magic(f)
            read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                           else np.lib.format.read_array_header_2_0)
            shape, _, dtype = read_header(f)
            header_size = f.tell()
    except ZIP_ERRORS as e:
        raise error(path, f"array {name!r}: unreadable .npy header ({e})") from e
    if name == MODEL_HEADER and dtype.kind == "U":
        return None
    if dtype.kind not in "biufc" or dtype.hasobject:
        raise error(path, f"array {name!r} has dtype {dtype}; npconv reads numeric arrays only "
                          f"(object arrays would need pickle)")
    nbytes = math.prod(shape) * dtype.itemsize
    if header_size + nbytes != info.file_size:
        raise error(path, f"array {name!r}: its header declares shape {shape} of {dtype} "
                          f"({nbytes} bytes) but the member holds {info.file_size - header_size}")
    budget.take(nbytes, f"array {name!r}")
    return name
