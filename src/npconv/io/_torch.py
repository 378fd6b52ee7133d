"""PyTorch .pt/.pth files (torch.save's zip format, torch >= 1.6) read without torch, and
without running anything the file holds.

torch.save writes a zip archive: `<name>/data.pkl`, a pickle of the saved object;
`<name>/data/<key>`, each storage's raw bytes; `<name>/byteorder` ("little" or "big") and a
few records npconv does not need. The pickle rebuilds each tensor by calling
`torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...)` on a storage
named by a persistent id `('storage', storage_type, key, location, numel)`.

A pickle is a program: each global it names is imported and may be called. So the pickle is
first scanned opcode by opcode (`pickletools.genops`, a parser that runs nothing): every global
must be in `ALLOWED`, the opcodes that build arbitrary objects (INST, OBJ, NEWOBJ, EXT*) must
not appear, memo indices must stay small. Only then is it unpickled, by an Unpickler whose
`find_class` imports nothing: it hands out npconv's stand-ins, whose rebuild calls return
`_Tensor` records (storage, offset, size, stride, dtype) checked against their storage. No array
is allocated until the whole pickle has been read and every record checked; then each storage
is read once and its tensors gathered into fresh arrays.
"""

from __future__ import annotations

import collections
import io
import math
import pickle
import pickletools
import re
import zipfile
from pathlib import Path
from typing import Literal

import numpy as np

from npconv.io._files import Budget, error, from_stored, numpy_can_hold, open_zip, read_member

# torch dtype name -> how its bytes are stored (bfloat16 as uint16 bits, bool as bytes)
DTYPES = {"float64": "f8", "float32": "f4", "float16": "f2", "bfloat16": "u2", "int64": "i8",
          "int32": "i4", "int16": "i2", "int8": "i1", "uint8": "u1", "uint16": "u2",
          "uint32": "u4", "uint64": "u8", "bool": "u1", "complex64": "c8", "complex128": "c16"}
# legacy storage class -> torch dtype name of its elements
STORAGES = {"DoubleStorage": "float64", "FloatStorage": "float32", "HalfStorage": "float16",
            "BFloat16Storage": "bfloat16", "LongStorage": "int64", "IntStorage": "int32",
            "ShortStorage": "int16", "CharStorage": "int8", "ByteStorage": "uint8",
            "BoolStorage": "bool", "ComplexFloatStorage": "complex64",
            "ComplexDoubleStorage": "complex128"}
_FORBIDDEN_OPS = {"INST", "OBJ", "NEWOBJ", "NEWOBJ_EX", "EXT1", "EXT2", "EXT4", "NEXT_BUFFER",
                  "READONLY_BUFFER"}
_NO_NUMPY = re.compile(r"torch(\.cuda)?\.(Q\w*Storage|q\w+|float8\w*|float4\w*|complex32|bits\w*"
                       r"|u?int[1-7])")
_MAX_DEPTH = 64
GATHER_CHUNK = 1 << 20          # elements per step when a strided tensor is gathered

ByteOrder = Literal["<", ">"]
"""How the storages' bytes were saved: little or big endian."""


class _Refused(Exception):
    """Raised inside the unpickler; `read` turns it into a ValueError naming the file."""


class _StandIn:
    """What the unpickler hands the pickle: immune to BUILD (which would set attributes)."""

    __slots__ = ()

    def __setstate__(self, state) -> None:
        raise _Refused(f"the pickle tries to set the state of {self!r} (BUILD)")


class _Call(_StandIn):
    """An allowed callable: one of this module's rebuild functions."""

    __slots__ = ("fn", "name")

    def __init__(self, name: str, fn) -> None:
        self.name, self.fn = name, fn

    def __call__(self, *args):
        return self.fn(*args)

    def __repr__(self) -> str:
        return self.name


class _Type(_StandIn):
    """A storage type, a dtype or a tensor class named by the pickle; `dtype` a key of DTYPES
    (None for UntypedStorage, whose elements are bytes, and for tensor classes)."""

    __slots__ = ("dtype", "name")

    def __init__(self, name: str, dtype: str | None) -> None:
        self.name, self.dtype = name, dtype

    def __repr__(self) -> str:
        return self.name


class _Storage(_StandIn):
    """A storage record of the archive: `nbytes` bytes of elements of `dtype`."""

    __slots__ = ("dtype", "key", "member", "nbytes")

    def __init__(self, key: str, member: str, dtype: str | None, nbytes: int) -> None:
        self.key, self.member, self.dtype, self.nbytes = key, member, dtype, nbytes


class _Tensor(_StandIn):
    """A tensor to gather: elements storage[offset + sum(i_d * stride_d)] of type `dtype`."""

    __slots__ = ("dtype", "offset", "size", "storage", "stride")

    def __init__(self, storage: _Storage, offset: int, size: tuple, stride: tuple,
                 dtype: str) -> None:
        self.storage, self.offset, self.size, self.stride = storage, offset, size, stride
        self.dtype = dtype

    @property
    def out_bytes(self) -> int:
        itemsize = 4 if self.dtype == "bfloat16" else np.dtype(DTYPES[self.dtype]).itemsize
        return math.prod(self.size) * itemsize


def _is_count(n) -> bool:
    return isinstance(n, int) and not isinstance(n, bool) and n >= 0


def _tensor(storage, offset, size, stride, hooks, metadata, dtype: str | None) -> _Tensor:
    """A checked _Tensor: every element it reaches lies inside its storage."""
    if not isinstance(storage, _Storage):
        raise _Refused(f"a tensor rebuild got {type(storage).__name__} instead of a storage")
    if not (isinstance(size, tuple) and isinstance(stride, tuple) and len(size) == len(stride)
            and all(map(_is_count, size)) and all(map(_is_count, stride)) and _is_count(offset)):
        raise _Refused(f"a tensor rebuild got storage_offset={offset!r}, size={size!r}, "
                       f"stride={stride!r}; expected non-negative ints, size and stride of "
                       f"one length")
    if not isinstance(hooks, dict) or hooks:
        raise _Refused("a tensor carries backward hooks; a state_dict has none")
    if metadata:
        raise _Refused(f"a tensor carries metadata {metadata!r:.60} (conj/neg bits), which "
                       f"npconv does not apply")
    dtype = dtype or storage.dtype
    if dtype is None:
        raise _Refused(f"storage {storage.key!r} is untyped and the tensor names no dtype")
    itemsize = np.dtype(DTYPES[dtype]).itemsize
    if not numpy_can_hold(size, itemsize):
        raise _Refused(f"a tensor of size {size!r:.80} has more axes or elements than a NumPy "
                       f"array can")
    if storage.nbytes % itemsize:
        raise _Refused(f"storage {storage.key!r} holds {storage.nbytes} bytes, not a whole "
                       f"number of {dtype} elements")
    numel = storage.nbytes // itemsize
    last = offset + sum((n - 1) * s for n, s in zip(size, stride))
    if offset > numel or (math.prod(size) and last >= numel):
        raise _Refused(f"a tensor with storage_offset={offset}, size={size}, stride={stride} "
                       f"reaches element {last} of storage {storage.key!r}, which holds {numel}")
    return _Tensor(storage, offset, size, stride, dtype)


def _rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    return _tensor(storage, offset, size, stride, hooks, metadata, None)


def _rebuild_tensor_v3(storage, offset, size, stride, requires_grad, hooks, dtype,
                       metadata=None):
    if not isinstance(dtype, _Type) or dtype.dtype is None:
        raise _Refused(f"_rebuild_tensor_v3 got dtype {dtype!r}")
    return _tensor(storage, offset, size, stride, hooks, metadata, dtype.dtype)


def _rebuild_parameter(data, requires_grad, hooks, state=None):
    """A Parameter is its tensor (Python attributes in `state`, being inert data, are dropped)."""
    if not isinstance(data, _Tensor):
        raise _Refused(f"a Parameter rebuild got {type(data).__name__} instead of a tensor")
    if not isinstance(hooks, dict) or hooks:
        raise _Refused("a Parameter carries backward hooks; a state_dict has none")
    return data


def _rebuild_from_type_v2(func, new_type, args, state):
    """A tensor subclass rebuild: allowed for torch.Tensor and Parameter only."""
    if not (isinstance(func, _Call) and func.fn in _REBUILDS and isinstance(new_type, _Type)
            and new_type.name in _TENSOR_TYPES and isinstance(args, tuple)):
        raise _Refused(f"_rebuild_from_type_v2 got {func!r}, {new_type!r}")
    return func(*args)


def _size(dims=()):
    if not (isinstance(dims, tuple) and all(map(_is_count, dims))):
        raise _Refused(f"torch.Size got {dims!r}")
    return dims


_REBUILDS = {_rebuild_tensor_v2, _rebuild_tensor_v3, _rebuild_parameter}
_TENSOR_TYPES = ("torch.Tensor", "torch.nn.parameter.Parameter")


def _allowed() -> dict:
    """Every global a state_dict pickle may name, mapped to npconv's stand-in for it."""
    calls = {"torch._utils._rebuild_tensor_v2": _rebuild_tensor_v2,
             "torch._utils._rebuild_tensor_v3": _rebuild_tensor_v3,
             "torch._utils._rebuild_parameter": _rebuild_parameter,
             "torch._utils._rebuild_parameter_with_state": _rebuild_parameter,
             "torch._tensor._rebuild_from_type_v2": _rebuild_from_type_v2,
             "torch.Size": _size}
    allowed = {"collections.OrderedDict": collections.OrderedDict,
               **{name: _Call(name, fn) for name, fn in calls.items()},
               **{name: _Type(name, None) for name in _TENSOR_TYPES},
               "torch.storage.UntypedStorage": _Type("torch.storage.UntypedStorage", None),
               **{f"torch.{d}": _Type(f"torch.{d}", d) for d in DTYPES}}
    for module in ("torch", "torch.cuda"):
        allowed.update({f"{module}.{s}": _Type(f"{module}.{s}", d) for s, d in STORAGES.items()})
    return allowed


ALLOWED = _allowed()


def _resolve(module, name) -> object:
    full = f"{module}.{name}"
    if full in ALLOWED:
        return ALLOWED[full]
    if _NO_NUMPY.fullmatch(full):
        raise _Refused(f"refused global {full}: tensors of this type have no NumPy equivalent")
    raise _Refused(f"refused global {full}: a state_dict pickle holds only tensors (allowed: "
                   f"tensor rebuilds, storages, dtypes, OrderedDict); loading never imports or "
                   f"calls anything else")


def _scan(data: bytes) -> None:
    """Check the pickle without running it: its globals, its opcodes, its memo indices."""
    ops = memo = 0
    try:
        for opcode, arg, _ in pickletools.genops(data):
            ops += 1
            if opcode.name in _FORBIDDEN_OPS:
                raise _Refused(f"the pickle uses opcode {opcode.name}, which a state_dict never "
                               f"needs (it builds arbitrary objects)")
            if opcode.name == "GLOBAL":
                _resolve(*str(arg).split(" ", 1))
            if opcode.name in ("PUT", "BINPUT", "LONG_BINPUT"):
                memo = max(memo, int(str(arg)))
    except ValueError as e:                 # genops' own complaints: truncated, unknown opcode
        raise _Refused(f"the pickle is malformed ({e})") from e
    if memo > ops:                          # the C unpickler would allocate a memo this large
        raise _Refused(f"the pickle's memo index {memo} exceeds its {ops} opcodes")


class _Archive:
    """The zip archive's storage records, checked as the pickle names them."""

    def __init__(self, path: Path, zf: zipfile.ZipFile, prefix: str) -> None:
        self.path, self.zf, self.prefix = path, zf, prefix
        self.storages: dict[str, _Storage] = {}

    def storage(self, pid) -> _Storage:
        if not (isinstance(pid, tuple) and len(pid) == 5 and pid[0] in ("storage", b"storage")
                and isinstance(pid[1], _Type) and isinstance(pid[2], str | bytes)
                and _is_count(pid[4]) and pid[1].name not in _TENSOR_TYPES):
            raise _Refused(f"persistent id {pid!r:.80} is not ('storage', storage_type, key, "
                           f"location, numel)")
        stype, key, numel = pid[1], _text(pid[2]), pid[4]
        member = f"{self.prefix}/data/{key}"
        try:
            info = self.zf.getinfo(member)
        except KeyError:
            raise _Refused(f"storage {key!r} ({member}) is missing from the archive") from None
        nbytes = numel * (np.dtype(DTYPES[stype.dtype]).itemsize if stype.dtype else 1)
        if info.file_size != nbytes:
            raise _Refused(f"storage {key!r} holds {info.file_size} bytes; the pickle declares "
                           f"{numel} elements of {stype.name} ({nbytes} bytes)")
        known = self.storages.setdefault(key, _Storage(key, member, stype.dtype, nbytes))
        if known.dtype != stype.dtype:
            raise _Refused(f"storage {key!r} is named both {known.dtype} and {stype.dtype}")
        return known


def _text(s: str | bytes) -> str:
    return s.decode("ascii", "replace") if isinstance(s, bytes) else s


class _Unpickler(pickle.Unpickler):
    """Resolves globals to stand-ins only, and persistent ids to checked storage records."""

    def __init__(self, data: bytes, archive: _Archive) -> None:
        super().__init__(io.BytesIO(data))
        self.archive = archive

    def find_class(self, module, name):
        return _resolve(module, name)

    def persistent_load(self, pid):
        return self.archive.storage(pid)


def read(path: Path, budget: Budget) -> dict[str, np.ndarray]:
    """The tensors of the state_dict saved at `path`, by their (dotted) names."""
    with open_zip(path) as zf:
        pickles = [n for n in zf.namelist() if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pickles) != 1:
            raise error(path, f"a PyTorch archive holds one <name>/data.pkl; found {pickles}")
        prefix = pickles[0].rsplit("/", 1)[0]
        byteorder = _byteorder(path, zf, prefix, budget)
        data = read_member(path, zf, pickles[0], budget)
        archive = _Archive(path, zf, prefix)
        try:
            _scan(data)
            obj = _Unpickler(data, archive).load()
            tensors = _collect(obj)
        except _Refused as e:
            raise error(path, str(e)) from None
        except (pickle.UnpicklingError, EOFError, TypeError, ValueError, AttributeError,
                IndexError, KeyError, RecursionError, OverflowError) as e:
            raise error(path, f"malformed PyTorch pickle ({type(e).__name__}: {e})") from e
        return _materialize(path, zf, tensors, byteorder, budget)


def _byteorder(path: Path, zf: zipfile.ZipFile, prefix: str, budget: Budget) -> ByteOrder:
    """'<' or '>': the byte order the storages were saved in (little when unrecorded)."""
    name = f"{prefix}/byteorder"
    if name not in zf.NameToInfo:
        return "<"
    if zf.getinfo(name).file_size > 16:
        raise error(path, f"{name} holds {zf.getinfo(name).file_size} bytes; expected 'little' "
                          f"or 'big'")
    value = read_member(path, zf, name, budget)
    if value not in (b"little", b"big"):
        raise error(path, f"{name} holds {value!r}; expected b'little' or b'big'")
    return "<" if value == b"little" else ">"


def _collect(obj) -> dict[str, _Tensor]:
    """The tensors of a state_dict, or of a checkpoint's nested dicts under dotted keys."""
    if not isinstance(obj, dict):
        kind = "a single tensor" if isinstance(obj, _Tensor) else f"a {type(obj).__name__}"
        raise _Refused(f"the file holds {kind}, not a dict of tensors (a state_dict); save "
                       f"model.state_dict() or a dict of named tensors")
    tensors: dict[str, _Tensor] = {}
    _walk(obj, "", tensors, [])
    if not tensors:
        raise _Refused("the file holds a dict with no tensors under string keys (an optimizer "
                       "state or other object that is not model weights)")
    return tensors


def _walk(d: dict, prefix: str, tensors: dict, parents: list) -> None:
    """Tensors under string keys of `d` and of its nested dicts; anything else is skipped."""
    if any(d is p for p in parents) or len(parents) > _MAX_DEPTH:
        raise _Refused(f"the dicts nest too deep or contain themselves (at {prefix!r:.80})")
    for k, v in d.items():
        if not isinstance(k, str):
            continue
        if isinstance(v, _Tensor):
            if prefix + k in tensors:
                raise _Refused(f"two tensors flatten to the key {prefix + k!r}")
            tensors[prefix + k] = v
        elif isinstance(v, dict):
            _walk(v, f"{prefix}{k}.", tensors, [*parents, d])


def _materialize(path: Path, zf: zipfile.ZipFile, tensors: dict[str, _Tensor], byteorder: ByteOrder,
                 budget: Budget) -> dict[str, np.ndarray]:
    """Read each storage once and gather its tensors into fresh arrays."""
    for key, t in tensors.items():
        budget.take(t.out_bytes, f"tensor {key!r}")
    by_storage: dict[str, list[str]] = {}
    for key, t in tensors.items():
        by_storage.setdefault(t.storage.key, []).append(key)
    arrays = {}
    for keys in by_storage.values():
        raw = read_member(path, zf, tensors[keys[0]].storage.member, budget)
        for key in keys:
            t = tensors[key]
            flat = np.frombuffer(raw, dtype=np.dtype(DTYPES[t.dtype]).newbyteorder(byteorder))
            arrays[key] = from_stored(gather(flat, t.offset, t.size, t.stride), t.dtype)
    return {key: arrays[key] for key in tensors}


def gather(flat: np.ndarray, offset: int, size: tuple, stride: tuple, *,
           chunk: int = GATHER_CHUNK) -> np.ndarray:
    """A new C-contiguous array `out` of shape `size` with
    out[i_0, ..., i_k] = flat[offset + i_0 * stride_0 + ... + i_k * stride_k].

    The caller has checked that every such index lies inside `flat`; NumPy's own slicing and
    indexing check it again, so a wrong stride raises IndexError (or a shape error) instead of
    reading foreign memory. A tensor that is one dense block with its axes permuted
    (contiguous, transposed, channels_last) is a slice, reshape and transposed copy; any other
    strides are gathered `chunk` elements at a time (an int64 index per element).

    >>> gather(np.arange(6.0), 1, (2, 2), (1, 3))      # a transposed view, offset by one
    array([[1., 4.],
           [2., 5.]])
    """
    n = math.prod(size)
    out = np.empty(size, dtype=flat.dtype)                   # (*size,)
    order = _dense_order(size, stride)
    if n and order is not None:                              # a dense block, axes permuted
        block = flat[offset:offset + n].reshape([size[d] for d in order])   # (*size[order],)
        out[...] = block.transpose(np.argsort(order))        # (*size,)
    elif n:
        dst = out.reshape(-1)                                # (n,) a view of out
        for start in range(0, n, chunk):
            pos = np.arange(start, min(start + chunk, n))    # (c,) flat positions in out
            index = np.full_like(pos, offset)                # (c,) positions in the storage
            for coord, step in zip(np.unravel_index(pos, size), stride):
                index += coord * step
            dst[start:start + pos.size] = flat[index]
    return out


def _dense_order(size: tuple, stride: tuple) -> list[int] | None:
    """The axis order (outermost first) in which the tensor is one C-contiguous block, or None.

    [0, 1, ..., k] for a contiguous tensor, [1, 0] for a transposed matrix, [0, 2, 3, 1] for a
    channels_last NCHW weight; None for gaps, overlaps and broadcast (stride-0) axes. The
    stride of a length-1 axis is free.
    """
    order = sorted(range(len(size)), key=lambda d: -stride[d])
    expected = 1
    for d in reversed(order):
        if size[d] != 1 and stride[d] != expected:
            return None
        expected *= size[d]
    return order
