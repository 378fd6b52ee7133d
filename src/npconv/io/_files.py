"""What every reader shares: the format a file holds (by its first bytes, its name as a hint),
the allocation budget, safe reading of zip members, and arrays made native.

Every reader checks a size before it allocates from it. Data stored as is must lie inside the
file; data that has to be inflated (a compressed zip member, a compressed HDF5 dataset) and the
arrays handed back are also charged to a `Budget`, whose default (64 times the file, at least
64 MiB) lets real weights through and stops a file that declares far more than it holds.
"""

from __future__ import annotations

import math
import os
import re
import zipfile
import zlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npconv import _npyfile
from npconv._npyfile import check_packing

ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
LEGACY_TORCH_MAGIC = b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"   # pickled 0x1950a86a20f9469cfc6c

# What a file name promises; a name not listed here (.bin, .ckpt, none) promises nothing.
SUFFIXES = {".safetensors": "safetensors", ".pt": "torch", ".pth": "torch", ".keras": "keras",
            ".h5": "hdf5", ".hdf5": "hdf5", ".npz": "npz"}
DESCRIPTIONS = {
    "safetensors": "a safetensors file",
    "torch": "a PyTorch zip archive (torch.save)",
    "keras": "a Keras 3 .keras archive",
    "hdf5": "an HDF5 file (Keras .weights.h5 or legacy .h5)",
    "npz": "a NumPy .npz archive",
    "torchscript": "a TorchScript archive (torch.jit.save)",
    "legacy-torch": "a PyTorch file in the legacy format of torch < 1.6",
    "pickle": "a plain Python pickle",
    "zip": "a zip archive of unknown content",
    "unknown": "none of the formats npconv reads",
}
# Formats recognized only to be refused, and why.
REFUSED = {
    "torchscript": "load the model in PyTorch and torch.save(model.state_dict(), ...) instead",
    "legacy-torch": "re-save it with a recent torch: torch.save(torch.load(f), 'new.pt')",
    "pickle": "npconv never unpickles a plain pickle (it could run any code)",
}
_READABLE = ("npconv reads safetensors, PyTorch .pt/.pth, Keras .keras/.weights.h5/.h5 and .npz "
             "files")
# What zipfile raises for a damaged or unsupported archive (RuntimeError: encrypted members)
ZIP_ERRORS = (zipfile.BadZipFile, OSError, ValueError, EOFError, NotImplementedError,
              RuntimeError, zlib.error)
DEFAULT_FLOOR = 64 << 20                 # the default budget is max(DEFAULT_FLOOR, 64 x file size)
_TORCH_PICKLE = re.compile(r"[^/]+/data\.pkl")
_TORCHSCRIPT = re.compile(r"[^/]+/constants\.pkl")


def error(path, message: str) -> ValueError:
    """The ValueError every reader raises: the file first, then what was wrong."""
    return ValueError(f"{path}: {message}")


def existing_file(path) -> Path:
    """`path` as a Path to a regular file (`npconv._npyfile.existing_file`); TypeError for
    what is not a path."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"`path` must be a str or os.PathLike; got {type(path).__name__}")
    return _npyfile.existing_file(path, "a weights file")


class Budget:
    """The bytes one load may still allocate for arrays and inflated data.

    >>> budget = Budget("w.safetensors", 100)
    >>> budget.take(60, "tensor 'a'")
    >>> budget.take(60, "tensor 'b'")
    Traceback (most recent call last):
    ...
    ValueError: w.safetensors: tensor 'b' needs 60 bytes, more than the 40 left of max_bytes=100...
    """

    def __init__(self, path, limit: int) -> None:
        self.path, self.limit, self.left = path, limit, limit

    @classmethod
    def for_file(cls, path: Path, max_bytes: int | None) -> Budget:
        if max_bytes is None:
            return cls(path, max(DEFAULT_FLOOR, 64 * path.stat().st_size))
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int):
            raise TypeError(f"`max_bytes` must be an int or None; got {max_bytes!r}")
        if max_bytes < 0:
            raise ValueError(f"`max_bytes` must be non-negative; got {max_bytes}")
        return cls(path, max_bytes)

    def take(self, nbytes: int, what: str) -> None:
        if nbytes > self.left:
            raise error(self.path, f"{what} needs {nbytes} bytes, more than the {self.left} left "
                                   f"of max_bytes={self.limit} (pass a larger max_bytes if you "
                                   f"trust this file)")
        self.left -= nbytes


def detect(path: Path) -> str:
    """The format `path` holds, from its content; ValueError where its name promises another.

    A name ending in .safetensors with no other format's signature goes to the safetensors
    reader, which says precisely what is wrong with its header.
    """
    kind = content_kind(path)
    promised = SUFFIXES.get(path.suffix.lower())
    if promised == "safetensors" and kind == "unknown":
        return "safetensors"
    if kind in REFUSED or (kind in ("zip", "unknown") and promised is None):
        raise error(path, f"holds {DESCRIPTIONS[kind]}; {REFUSED.get(kind, _READABLE)}")
    if promised not in (None, kind):
        raise error(path, f"named like {DESCRIPTIONS[promised]} ({path.suffix}) but holds "
                          f"{DESCRIPTIONS[kind]}")
    return kind


def content_kind(path: Path) -> str:
    """A key of DESCRIPTIONS, read off the first bytes (and a zip's member names)."""
    with open(path, "rb") as f:
        head = f.read(16)
    if head.startswith(ZIP_MAGICS):
        return _zip_kind(path)
    if head.startswith(HDF5_MAGIC):
        return "hdf5"
    if head.startswith(LEGACY_TORCH_MAGIC):
        return "legacy-torch"
    if head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05"):
        return "pickle"
    if len(head) > 8 and head[8:9] == b"{":
        length = int.from_bytes(head[:8], "little")
        if 2 <= length <= path.stat().st_size - 8:
            return "safetensors"
    return "unknown"


def _zip_kind(path: Path) -> str:
    try:
        with zipfile.ZipFile(path) as zf:
            names = zf.namelist()
    except ZIP_ERRORS:
        return "zip"
    if any(_TORCHSCRIPT.fullmatch(n) for n in names):
        return "torchscript"
    if any(_TORCH_PICKLE.fullmatch(n) for n in names):
        return "torch"
    if {"config.json", "model.weights.h5"} <= set(names):
        return "keras"
    if names and all(n.endswith(".npy") for n in names):
        return "npz"
    return "zip"


def open_zip(path: Path) -> zipfile.ZipFile:
    """The archive at `path`, its member names checked unique (no two members one name)."""
    try:
        zf = zipfile.ZipFile(path)
    except ZIP_ERRORS as e:
        raise error(path, f"not a readable zip archive ({e})") from e
    names = zf.namelist()
    if len(set(names)) != len(names):
        zf.close()
        dup = next(n for n in names if names.count(n) > 1)
        raise error(path, f"the zip archive holds two members named {dup!r}")
    return zf


def check_stored(path: Path, info: zipfile.ZipInfo) -> None:
    """Refuse a zip member stored as is whose declared size the file cannot hold (before any
    allocation), and one encrypted or compressed otherwise than by deflate (`check_packing`).
    Deflated members are charged to a Budget instead: a zip bomb declares far more than its
    file, and reads never inflate more than the size it declares."""
    check_packing(info, str(path))
    if info.compress_type != zipfile.ZIP_STORED:
        return
    end = info.header_offset + 30 + len(info.filename) + info.compress_size   # a lower bound
    if info.file_size != info.compress_size or end > path.stat().st_size:
        raise error(path, f"zip member {info.filename!r} declares {info.file_size} bytes, more "
                          f"than the file holds ({path.stat().st_size} bytes)")


def read_member(path: Path, zf: zipfile.ZipFile, name: str, budget: Budget) -> bytes:
    """The bytes of member `name`, its size checked first and its CRC after. Exactly the size
    it declares is inflated (`zf.read` would inflate up to 2 GiB in one step, whatever the
    member declares, before cutting it to that size)."""
    info = zf.getinfo(name)
    check_stored(path, info)
    if info.compress_type != zipfile.ZIP_STORED:
        budget.take(info.file_size, f"inflating zip member {name!r}")
    try:
        with zf.open(info) as f:
            data = f.read(info.file_size)
    except ZIP_ERRORS as e:
        raise error(path, f"cannot read zip member {name!r} ({type(e).__name__}: {e})") from e
    if len(data) != info.file_size:
        raise error(path, f"zip member {name!r} is truncated: {len(data)} of {info.file_size} "
                          f"bytes")
    return data


def numpy_can_hold(shape: Sequence[int], itemsize: int) -> bool:
    """Whether NumPy can make an array of `shape` (non-negative ints): at most 64 axes, and its
    byte count, zero sizes left out as NumPy leaves them out, within int64. A file may declare a
    zero-size tensor of shape (0, 2**70), which holds no byte but no array either.

    >>> numpy_can_hold((0, 2**40, 2**40), 4), numpy_can_hold((0, 2**40), 4)
    (False, True)
    """
    return len(shape) <= 64 and math.prod(n for n in shape if n) * itemsize < 2**63


def from_stored(a: np.ndarray, kind: str) -> np.ndarray:
    """The array a file's values stand for, from `a` as read: "bfloat16" bits (uint16) become
    float32 exactly (they are its high half), "bool" bytes become bool (any non-zero byte is
    True), anything else is made `native`.

    >>> from_stored(np.array([0x3FC0, 0xC000], dtype="<u2"), "bfloat16").tolist()
    [1.5, -2.0]
    """
    if kind == "bfloat16":
        out = np.empty(a.shape, dtype=np.float32)            # (*a.shape,)
        bits = out.view(np.uint32)
        bits[...] = a
        bits <<= 16
        return out
    if kind == "bool":
        return a != 0
    return native(a)


def native(a: np.ndarray) -> np.ndarray:
    """`a` as an ordinary array: native byte order, C-contiguous, writeable, owning its memory
    (a copy unless `a` already is all that).

    >>> big = np.array([1.5, -2.0], dtype=">f8")
    >>> out = native(big)
    >>> out.dtype.isnative, out.tolist()
    (True, [1.5, -2.0])
    """
    if a.dtype.isnative and a.flags.c_contiguous and a.flags.writeable and a.flags.owndata:
        return a
    return np.array(a, dtype=a.dtype.newbyteorder("="), order="C")     # a copy: new memory
