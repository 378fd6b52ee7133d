"""Reading .npy arrays, alone or as members of an .npz, from files that may be broken or hostile.

The header is read first (`numpy.lib.format`'s header readers, which parse a Python literal
without evaluating it), and the declared shape and dtype are checked against the bytes that
actually hold the data before anything is allocated: a 1 KB file declaring a (2**40,) array is
refused, not allocated. Object dtypes (pickles) are refused. A zip member must be an .npy,
stored as is or deflated, whose declared size is within what its stored bytes can hold (deflate
expands at most 1032:1), and zipfile checks each member's CRC as it is read. Every failure is a
ValueError that starts with `where` (the file, and the member).
"""

from __future__ import annotations

import math
import os
import zipfile
import zlib
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy

__all__ = [
    "READ_ERRORS",
    "ArrayHeader",
    "check_packing",
    "existing_file",
    "member_header",
    "read_header",
    "read_member",
    "read_npy",
]

MAX_DEFLATE_RATIO = 1032          # the most a deflate stream can expand: 258 bytes per 2 bits
_METHODS = {zipfile.ZIP_BZIP2: "bzip2", zipfile.ZIP_LZMA: "LZMA"}

# what reading a damaged zip member or .npy stream can raise besides ValueError
READ_ERRORS = (OSError, EOFError, zipfile.BadZipFile, zlib.error, UnicodeError)

ArrayHeader = tuple[tuple[int, ...], np.dtype, bool]     # shape, dtype, fortran_order


def existing_file(path: str | os.PathLike, what: str) -> Path:
    """`path` as a Path to a regular file, `what` it should be ("an image file") naming it in
    the errors: FileNotFoundError when there is nothing, ValueError for a directory or another
    kind of file (a device, a pipe: "not found" would be wrong, and reading one may never end).

    >>> existing_file("/", "an image file")
    Traceback (most recent call last):
    ...
    ValueError: / is a directory, not an image file
    """
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not {what}")
    if path.exists() and not path.is_file():
        raise ValueError(f"{path} is not a regular file (a device or a pipe), not {what}")
    if not path.exists():
        raise FileNotFoundError(f"{what.split(' ', 1)[1]} not found: {path}")
    return path


def read_header(f: IO[bytes], nbytes: int, where: str) -> ArrayHeader:
    """(shape, dtype, fortran_order) of the .npy that `f` starts reading, `nbytes` long in
    all; ValueError unless it is an .npy of plain numbers whose data fills exactly the rest."""
    try:
        version = npy.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = npy.read_array_header_1_0(f)
        elif version == (2, 0):
            shape, fortran, dtype = npy.read_array_header_2_0(f)
        else:
            raise ValueError(f".npy format version {version[0]}.{version[1]} is not supported")
        start = f.tell()
    except ValueError as e:                  # a damaged stream's errors reach the caller
        raise ValueError(f"{where}: not an .npy array ({e})") from None
    if dtype.hasobject:
        raise ValueError(f"{where}: holds Python objects (dtype {dtype}); npconv loads plain "
                         f"numbers only, never pickles")
    need = math.prod(shape) * dtype.itemsize
    if need != nbytes - start:
        raise ValueError(f"{where}: declares shape {shape} of {dtype} ({need} bytes of data) "
                         f"but holds {nbytes - start} bytes")
    return tuple(shape), dtype, fortran


def read_npy(path: os.PathLike | str) -> np.ndarray:
    """The array of the .npy file at `path`, its header checked against the file's size first.

    >>> import tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "a.npy")
    >>> np.save(path, np.arange(3))
    >>> read_npy(path)
    array([0, 1, 2])
    """
    with open(path, "rb") as f:
        try:
            read_header(f, os.fstat(f.fileno()).st_size, str(path))
            f.seek(0)
            return npy.read_array(f, allow_pickle=False)
        except READ_ERRORS as e:
            raise ValueError(f"{path}: unreadable .npy ({type(e).__name__}: {e})") from None


def check_packing(info: zipfile.ZipInfo, where: str) -> None:
    """Refuse a zip member that is encrypted (zipfile would raise RuntimeError) or neither
    stored as is nor deflated.

    zipfile inflates a bzip2 or LZMA member in one step, whatever size the member declares and
    however small the read asked for (a 2 KB bzip2 member becomes gigabytes before the size it
    declared cuts it short), while it inflates deflate only as far as each read asks. NumPy,
    PyTorch and Keras write stored or deflated members only, never encrypted ones.
    """
    if info.flag_bits & 0x1:
        raise ValueError(f"{where}: zip member {info.filename!r} is encrypted; npconv reads "
                         f"unencrypted archives only")
    if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
        method = _METHODS.get(info.compress_type, f"method {info.compress_type}")
        raise ValueError(f"{where}: zip member {info.filename!r} is compressed with {method}; "
                         f"npconv reads members stored as is or deflated only")


def _check_member_size(info: zipfile.ZipInfo, where: str) -> None:
    """The member's declared size must be one its stored bytes can produce."""
    stored = info.compress_type == zipfile.ZIP_STORED
    if (info.file_size != info.compress_size if stored
            else info.file_size > MAX_DEFLATE_RATIO * info.compress_size + 64):
        raise ValueError(f"{where}: declares {info.file_size} bytes, more than its "
                         f"{info.compress_size} stored bytes can hold")


def member_header(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> ArrayHeader:
    """`read_header` of an .npz member: its name must end in .npy."""
    if not info.filename.endswith(".npy"):
        raise ValueError(f"{where}: member {info.filename!r} is not an .npy array")
    check_packing(info, where)
    _check_member_size(info, where)
    try:
        with zf.open(info) as f:
            return read_header(f, info.file_size, where)
    except READ_ERRORS as e:
        raise ValueError(f"{where}: corrupt member ({type(e).__name__}: {e})") from None


def read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, where: str) -> np.ndarray:
    """The array of an .npz member, after `member_header`'s checks; the CRC is checked as the
    data is read."""
    member_header(zf, info, where)
    try:
        with zf.open(info) as f:
            return npy.read_array(f, allow_pickle=False)
    except (ValueError, *READ_ERRORS) as e:
        raise ValueError(f"{where}: corrupt member ({type(e).__name__}: {e})") from None
