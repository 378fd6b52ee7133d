"""safetensors, read and written with NumPy alone.

The format: an 8-byte little-endian header length N, N bytes of UTF-8 JSON, then the data
section. The JSON maps each tensor name to {"dtype": "F32", "shape": [...], "data_offsets":
[begin, end]} (byte offsets into the data section, little-endian values) and may hold a
"__metadata__" dict of strings. The tensors tile the data section exactly: no gap, no overlap,
no trailing byte (the format forbids them so that a file cannot also be something else).

Reading checks the whole header against the file before it allocates anything, then reads each
tensor straight into its own array (no memory map: the arrays stay valid after the file goes).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from npconv import _backend
from npconv.io._files import Budget, error, from_stored, numpy_can_hold

MAX_HEADER = 100_000_000            # the safetensors library's own limit on the JSON header
METADATA = "__metadata__"

# safetensors dtype -> the little-endian NumPy dtype its bytes are read as
DTYPES = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2", "I64": "<i8", "I32": "<i4",
          "I16": "<i2", "I8": "i1", "U64": "<u8", "U32": "<u4", "U16": "<u2", "U8": "u1",
          "BOOL": "u1"}
# (kind, itemsize) of a NumPy dtype -> its safetensors name, for writing
NAMES = {("f", 8): "F64", ("f", 4): "F32", ("f", 2): "F16", ("i", 8): "I64", ("i", 4): "I32",
         ("i", 2): "I16", ("i", 1): "I8", ("u", 8): "U64", ("u", 4): "U32", ("u", 2): "U16",
         ("u", 1): "U8", ("b", 1): "BOOL"}


class _Entry:
    """One tensor of the header, checked: name, dtype name, shape, [begin, end) in the data."""

    __slots__ = ("begin", "dtype", "end", "name", "shape")

    def __init__(self, name: str, dtype: str, shape: tuple, begin: int, end: int) -> None:
        self.name, self.dtype, self.shape, self.begin, self.end = name, dtype, shape, begin, end

    @property
    def out_bytes(self) -> int:
        """Bytes of the array handed back (BF16 comes back as float32: twice its file size)."""
        return 2 * (self.end - self.begin) if self.dtype == "BF16" else self.end - self.begin


def read(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """Every tensor of the safetensors file at `path`, in the header's order."""
    with open(path, "rb") as f:
        entries, _, data_start = _header(path, f)
        for entry in entries:
            budget.take(entry.out_bytes, f"tensor {entry.name!r}")
        arrays = {}
        for entry in sorted(entries, key=lambda e: e.begin):      # one forward pass over the file
            f.seek(data_start + entry.begin)
            arrays[entry.name] = _read_tensor(path, f, entry)
    return {entry.name: arrays[entry.name] for entry in entries}


def read_metadata(path: Path) -> dict[str, str]:
    """The header's "__metadata__" (an empty dict when there is none)."""
    with open(path, "rb") as f:
        return _header(path, f)[1]


def _read_tensor(path: Path, f, entry: _Entry) -> np.ndarray:
    raw = np.empty(entry.shape, dtype=DTYPES[entry.dtype])   # (*shape,) the bytes as stored
    got = f.readinto(raw.reshape(-1).view(np.uint8).data)
    if got != entry.end - entry.begin:
        raise error(path, f"tensor {entry.name!r} is truncated: {got} of "
                          f"{entry.end - entry.begin} bytes")
    return from_stored(raw, {"BF16": "bfloat16", "BOOL": "bool"}.get(entry.dtype, ""))


def _header(path: Path, f) -> tuple[list[_Entry], dict[str, str], int]:
    """(entries, metadata, offset of the data section), every rule of the format checked."""
    size = path.stat().st_size
    first = f.read(8)
    if len(first) < 8:
        raise error(path, f"not a safetensors file: {size} bytes, fewer than the 8-byte header "
                          f"length")
    length = int.from_bytes(first, "little")
    if length > min(MAX_HEADER, size - 8):
        raise error(path, f"safetensors header length {length} is larger than the file "
                          f"({size} bytes)" if length > size - 8 else
                          f"safetensors header length {length} exceeds the {MAX_HEADER}-byte "
                          f"limit")
    text = f.read(length)
    if not text.startswith(b"{"):
        raise error(path, f"not a safetensors file: the header does not start with '{{' "
                          f"(first bytes {text[:16]!r})")
    header = _parse_json(path, text)
    metadata = _metadata(path, header.pop(METADATA, {}))
    entries = [_entry(path, name, info) for name, info in header.items()]
    _check_tiling(path, entries, size - 8 - length)
    return entries, metadata, 8 + length


class _Twice(Exception):
    """A name the JSON header holds twice (raised through json.loads)."""


def _parse_json(path: Path, text: bytes) -> dict:
    def unique(pairs):
        keys = [k for k, _ in pairs]
        if len(set(keys)) != len(keys):
            raise _Twice(next(k for k in keys if keys.count(k) > 1))
        return dict(pairs)

    try:
        return json.loads(text.decode("utf-8"), object_pairs_hook=unique)
    except _Twice as e:
        raise error(path, f"the safetensors header names {e.args[0]!r} twice") from None
    except (ValueError, RecursionError) as e:          # ValueError: also ints of 4300+ digits
        raise error(path, f"the safetensors header is not valid JSON ({e})") from e


def _metadata(path: Path, value) -> dict[str, str]:
    if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
        raise error(path, f"the safetensors {METADATA!r} must map strings to strings; got "
                          f"{value!r:.80}")
    return value


def _entry(path: Path, name: str, info) -> _Entry:
    """The header's entry for `name`, its dtype, shape and offsets checked against each other."""
    if not isinstance(info, dict) or not {"dtype", "shape", "data_offsets"} <= info.keys():
        raise error(path, f"tensor {name!r}: the header entry must be an object with 'dtype', "
                          f"'shape' and 'data_offsets'; got {info!r:.80}")
    dtype, shape, offsets = info["dtype"], info["shape"], info["data_offsets"]
    if dtype not in DTYPES:
        raise error(path, f"tensor {name!r}: dtype {dtype!r} is not one npconv reads "
                          f"({', '.join(DTYPES)}; 8-bit floats have no NumPy equivalent)")
    if not isinstance(shape, list) or not all(_is_count(n) for n in shape):
        raise error(path, f"tensor {name!r}: shape must be a list of non-negative ints; got "
                          f"{shape!r:.80}")
    if (not isinstance(offsets, list) or len(offsets) != 2 or not all(map(_is_count, offsets))
            or offsets[0] > offsets[1]):
        raise error(path, f"tensor {name!r}: data_offsets must be [begin, end] with "
                          f"0 <= begin <= end; got {offsets!r:.80}")
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if not numpy_can_hold(shape, itemsize):
        raise error(path, f"tensor {name!r}: shape {shape!r:.80} has more axes or elements than "
                          f"a NumPy array can")
    nbytes = math.prod(shape) * itemsize
    if offsets[1] - offsets[0] != nbytes:
        raise error(path, f"tensor {name!r}: shape {shape} of {dtype} needs {nbytes} bytes but "
                          f"data_offsets {offsets} span {offsets[1] - offsets[0]}")
    return _Entry(name, dtype, tuple(shape), *offsets)


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _check_tiling(path: Path, entries: list[_Entry], data_size: int) -> None:
    """The entries cover the data section exactly once: inside it, no overlap, no gap."""
    for e in entries:
        if e.end > data_size:
            raise error(path, f"tensor {e.name!r}: data_offsets [{e.begin}, {e.end}] point "
                              f"outside the {data_size}-byte data section")
    position, previous = 0, None
    for e in sorted(entries, key=lambda e: (e.begin, e.end)):
        if e.begin < position:
            raise error(path, f"tensors {previous!r} and {e.name!r} overlap (bytes "
                              f"{e.begin}..{position} of the data section)")
        if e.begin > position:
            raise error(path, f"bytes {position}..{e.begin} of the data section belong to no "
                              f"tensor")
        position, previous = e.end, e.name
    if position != data_size:
        raise error(path, f"bytes {position}..{data_size} of the data section belong to no "
                          f"tensor")


def writer(state_dict: dict, metadata: dict | None) -> Callable[[BinaryIO], None]:
    """A function that writes `state_dict` as safetensors to an open file; everything is
    checked (TypeError for what safetensors cannot hold) before it is returned."""
    arrays = {name: _array(name, value) for name, value in _items(state_dict)}
    header: dict = {METADATA: _metadata_to_write(metadata)} if metadata else {}
    position = 0
    # Data laid out by decreasing item size, so that every tensor starts aligned to its own item
    # size; the header keeps the caller's order.
    layout = sorted(arrays, key=lambda name: -arrays[name].dtype.itemsize)
    offsets = {}
    for name in layout:
        offsets[name] = [position, position + arrays[name].nbytes]
        position += arrays[name].nbytes
    for name, a in arrays.items():
        header[name] = {"dtype": NAMES[a.dtype.kind, a.dtype.itemsize], "shape": list(a.shape),
                        "data_offsets": offsets[name]}
    text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    text += b" " * (-len(text) % 8)                          # the data section starts 8-aligned

    def emit(f) -> None:
        f.write(len(text).to_bytes(8, "little"))
        f.write(text)
        for name in layout:
            f.write(_little_endian(arrays[name]).data)

    return emit


def _items(state_dict) -> list:
    if not isinstance(state_dict, dict):
        raise TypeError(f"`state_dict` must be a dict of name -> array; got "
                        f"{type(state_dict).__name__}")
    for name in state_dict:
        if not isinstance(name, str) or name == METADATA:
            raise TypeError(f"`state_dict` keys must be strings other than {METADATA!r}; got "
                            f"{name!r}")
    return list(state_dict.items())


def _array(name: str, value) -> np.ndarray:
    """`value` as a NumPy array safetensors can hold (a CuPy array is copied to the host)."""
    if not _backend.is_array(value):
        raise TypeError(f"`state_dict[{name!r}]` must be a NumPy or CuPy array; got "
                        f"{type(value).__name__}")
    a = _backend.to_numpy(value)
    if (a.dtype.kind, a.dtype.itemsize) not in NAMES:
        raise TypeError(f"`state_dict[{name!r}]` has dtype {a.dtype}, which safetensors cannot "
                        f"hold; expected a float, int, uint or bool dtype")
    return a


def _little_endian(a: np.ndarray) -> np.ndarray:
    """`a` as C-contiguous little-endian bytes (a copy only when `a` is not that already)."""
    return np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))   # (*a.shape,)


def _metadata_to_write(metadata) -> dict[str, str]:
    if not isinstance(metadata, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise TypeError(f"`metadata` must be a dict of str -> str; got {metadata!r:.80}")
    return dict(metadata)
