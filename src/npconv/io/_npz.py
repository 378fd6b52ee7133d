"""NumPy .npz archives: npconv's own model files (`npconv.nn.save`) and plain `np.savez` files.

An .npz is a zip of .npy files. Each member's .npy header (magic, dtype, shape) is read and
checked against the member's declared size (`npconv._npyfile`) and charged to the budget before
any array is read, so that a header declaring more than its member holds is refused without
allocating. A plain archive gives its arrays by their keys, read with `allow_pickle=False`. An
npconv model file gives its model's state_dict, PyTorch's names and layouts (a convolution
weight (F, C/G, *K), a Linear weight (out_features, in_features)) as `model.state_dict()`
gives them, read through `npconv.nn.load`: its stored arrays are in npconv's layouts, which
`load_state_dict` would otherwise take for PyTorch's (a square Linear weight transposed).
"""

from __future__ import annotations

import math
import zipfile
from pathlib import Path

import numpy as np

from npconv._npyfile import member_header
from npconv.io._files import ZIP_ERRORS, Budget, check_stored, error, native, open_zip
from npconv.nn import serialization

MODEL_HEADER = serialization.HEADER_KEY


def read(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """Every array of the archive by its key, or an npconv model file's state_dict."""
    with open_zip(path) as zf:
        names = [_checked_member(path, zf, info, budget) for info in zf.infolist()]
    if MODEL_HEADER in names:
        model = serialization.load(path)
        return {key: native(v) for key, v in model.state_dict().items()}
    try:
        with np.load(path, allow_pickle=False) as npz:
            return {name: native(npz[name]) for name in names}
    except ZIP_ERRORS as e:
        raise error(path, f"corrupt .npz archive ({type(e).__name__}: {e})") from e


def _checked_member(path: Path, zf: zipfile.ZipFile, info: zipfile.ZipInfo,
                    budget: Budget) -> str:
    """The array name of member `info`, its header checked and its size charged to `budget`."""
    name = info.filename.removesuffix(".npy")
    check_stored(path, info)
    shape, dtype, _ = member_header(zf, info, f"{path}: array {name!r}")
    if name == MODEL_HEADER and dtype.kind == "U":
        return name
    if dtype.kind not in "biufc":
        raise error(path, f"array {name!r} has dtype {dtype}; npconv reads numeric arrays only")
    budget.take(math.prod(shape) * dtype.itemsize, f"array {name!r}")
    return name
