"""safetensors read and written by npconv: exact round trips, agreement with the safetensors
library and PyTorch where installed, and a ValueError naming the file for every broken header."""

import json
import os
import struct

import numpy as np
import pytest

from npconv import io
from npconv.io import _files, _safetensors

DTYPES = ["float64", "float32", "float16", "int64", "int32", "int16", "int8", "uint64", "uint32",
          "uint16", "uint8", "bool"]


def arrays(rng):
    out = {f"a.{d}": (rng.normal(size=(2, 3)) * 50).astype(d) for d in DTYPES}
    out["scalar"] = np.array(2.5)
    out["empty"] = np.zeros((0, 4), np.float32)
    out["nan"] = np.array([np.nan, np.inf, -np.inf, -0.0], np.float32)
    return out


def raw_file(path, header, data=b"", *, length=None, pad=b""):
    """A safetensors file from a header dict (or raw bytes) and data bytes, nothing checked."""
    text = header if isinstance(header, bytes) else json.dumps(header).encode()
    text += pad
    path.write_bytes(struct.pack("<Q", len(text) if length is None else length) + text + data)
    return path


def test_round_trip_is_exact_for_every_dtype(tmp_path, rng):
    state = arrays(rng)
    path = io.save(tmp_path / "w.safetensors", state)
    back = io.load(path)
    assert list(back) == list(state)                       # the caller's order
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape
        assert back[k].tobytes() == v.tobytes()             # bit for bit, NaN and -0.0 included
        assert back[k].flags.writeable and back[k].flags.c_contiguous


def test_data_section_is_aligned_and_header_padded(tmp_path, rng):
    path = io.save(tmp_path / "w.safetensors", arrays(rng))
    blob = path.read_bytes()
    n = struct.unpack("<Q", blob[:8])[0]
    assert n % 8 == 0
    header = json.loads(blob[8:8 + n])
    for name, info in header.items():
        itemsize = np.dtype(_safetensors.DTYPES[info["dtype"]]).itemsize
        assert info["data_offsets"][0] % itemsize == 0, name


def test_save_copies_non_contiguous_and_big_endian_without_changing_them(tmp_path):
    base = np.arange(24, dtype=np.float64).reshape(4, 6)
    big = np.arange(5, dtype=">i4")
    state = {"t": base.T, "step": base[::2, 1::3], "big": big}
    before = {k: v.copy() for k, v in state.items()}
    back = io.load(io.save(tmp_path / "w.safetensors", state))
    for k, v in state.items():
        np.testing.assert_array_equal(back[k], v)
        np.testing.assert_array_equal(v, before[k])
    assert back["big"].dtype == np.dtype("=i4") and back["big"].dtype.isnative


def test_metadata_round_trip_and_empty_file(tmp_path):
    path = io.save(tmp_path / "m.safetensors", {}, metadata={"format": "np", "ü": "ß"})
    assert io.load(path) == {}
    assert io.load_metadata(path) == {"format": "np", "ü": "ß"}
    assert io.load_metadata(io.save(tmp_path / "n.safetensors", {"a": np.ones(1)})) == {}


def test_bf16_is_the_high_half_of_float32(tmp_path):
    bits = np.array([0x0000, 0x8000, 0x3F80, 0xC2F7, 0x7F80, 0xFF80, 0x7FC1, 0x0001, 0x7F7F],
                    dtype="<u2")
    header = {"x": {"dtype": "BF16", "shape": [9], "data_offsets": [0, 18]}}
    out = io.load(raw_file(tmp_path / "b.safetensors", header, bits.tobytes()))["x"]
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out.view(np.uint32), bits.astype(np.uint32) << 16)
    assert out[2] == 1.0 and out[3] == -123.5 and np.isinf(out[4]) and np.isnan(out[6])


def test_bool_bytes_are_read_as_bool(tmp_path):
    header = {"m": {"dtype": "BOOL", "shape": [3], "data_offsets": [0, 3]}}
    out = io.load(raw_file(tmp_path / "m.safetensors", header, b"\x00\x01\x02"))["m"]
    assert out.dtype == bool and out.tolist() == [False, True, True]


def test_from_stored_makes_big_endian_native():
    out = _files.from_stored(np.array([1.5, -2.0], dtype=">f4"), "")
    assert out.dtype.isnative and out.tolist() == [1.5, -2.0]
    assert out.flags.owndata and out.flags.writeable


def test_library_reads_what_npconv_writes_and_the_reverse(tmp_path, rng):
    st = pytest.importorskip("safetensors.numpy")
    state = arrays(rng)
    ours = io.save(tmp_path / "ours.safetensors", state, metadata={"k": "v"})
    theirs = st.load_file(str(ours))
    assert theirs.keys() == state.keys()
    for k, v in state.items():
        assert theirs[k].dtype == v.dtype and theirs[k].tobytes() == v.tobytes()
    st.save_file(state, str(tmp_path / "theirs.safetensors"), metadata={"a": "b"})
    back = io.load(tmp_path / "theirs.safetensors")
    for k, v in state.items():
        assert back[k].dtype == v.dtype and back[k].tobytes() == v.tobytes()
    assert io.load_metadata(tmp_path / "theirs.safetensors") == {"a": "b"}


def test_torch_bfloat16_through_safetensors(tmp_path, torch):
    stt = pytest.importorskip("safetensors.torch")
    x = torch.randn(3, 5).to(torch.bfloat16)
    stt.save_file({"x": x, "n": torch.tensor(7)}, str(tmp_path / "t.safetensors"))
    back = io.load(tmp_path / "t.safetensors")
    np.testing.assert_array_equal(back["x"], x.float().numpy())
    assert back["n"].dtype == np.int64 and back["n"] == 7
    again = stt.load_file(str(io.save(tmp_path / "u.safetensors", back)))
    assert torch.equal(again["x"], x.float()) and again["n"].item() == 7


GOOD = {"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}


@pytest.mark.parametrize("header, data, match", [
    (b'{"a": 1', b"", "not valid JSON"),
    (b"{\xff}", b"", "not valid JSON"),
    (b'{"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "a": {}}', b"",
     "names 'a' twice"),
    (b"[1, 2]", b"", "does not start with"),
    ({"a": {"dtype": "F8_E4M3", "shape": [2], "data_offsets": [0, 2]}}, b"..",
     "dtype 'F8_E4M3' is not one npconv reads"),
    ({"a": {"dtype": "Q4", "shape": [2], "data_offsets": [0, 2]}}, b"..", "dtype 'Q4'"),
    ({"a": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8),
     r"shape \[3\] of F32 needs 12 bytes but data_offsets \[0, 8\] span 8"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(4),
     r"data_offsets \[0, 8\] point outside the 4-byte data section"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
      "b": {"dtype": "F32", "shape": [2], "data_offsets": [4, 12]}}, bytes(12),
     "tensors 'a' and 'b' overlap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, bytes(8),
     "bytes 0..4 of the data section belong to no tensor"),
    (GOOD, bytes(12), "bytes 8..12 of the data section belong to no tensor"),
    ({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}}, bytes(8),
     "shape must be a list of non-negative ints"),
    ({"a": {"dtype": "F32", "shape": [True], "data_offsets": [0, 4]}}, bytes(4),
     "shape must be a list of non-negative ints"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [8, 0]}}, bytes(8),
     "data_offsets must be"),
    ({"a": {"dtype": "F32", "shape": [2]}}, bytes(8), "must be an object with"),
    ({"a": [1, 2]}, b"", "must be an object with"),
    ({"__metadata__": {"k": 1}, **GOOD}, bytes(8), "must map strings to strings"),
    ({"__metadata__": [], **GOOD}, bytes(8), "must map strings to strings"),
    # ValueErrors that named no file before (NumPy's "Maximum allowed dimension exceeded",
    # "array is too big", "maximum supported dimension", and int()'s 4300-digit limit)
    ({"a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}, b"",
     r"tensor 'a': shape \[0, 1180591620717411303424\] has more axes or elements than a NumPy"),
    ({"a": {"dtype": "F32", "shape": [0, 2**40, 2**40], "data_offsets": [0, 0]}}, b"",
     "has more axes or elements than a NumPy array can"),
    ({"a": {"dtype": "U8", "shape": [1] * 65, "data_offsets": [0, 1]}}, b"\0",
     "has more axes or elements than a NumPy array can"),
    (b'{"a": {"dtype": "U8", "shape": [' + b"9" * 5000 + b'], "data_offsets": [0, 1]}}', b"\0",
     r"not valid JSON \(Exceeds the limit"),
])
def test_broken_headers_are_refused_naming_the_file(tmp_path, header, data, match):
    path = raw_file(tmp_path / "bad.safetensors", header, data)
    with pytest.raises(ValueError, match=match) as e:
        io.load(path)
    assert str(path) in str(e.value)


def test_truncated_and_oversized_header_lengths(tmp_path):
    short = tmp_path / "short.safetensors"
    short.write_bytes(b"\x10\x00\x00")
    with pytest.raises(ValueError, match="fewer than the 8-byte header length"):
        io.load(short)
    with pytest.raises(ValueError, match="header length 1000 is larger than the file"):
        io.load(raw_file(tmp_path / "long.safetensors", GOOD, bytes(8), length=1000))
    with pytest.raises(ValueError, match=r"header length \d+ is larger than the file"):
        io.load(raw_file(tmp_path / "huge.safetensors", GOOD, bytes(8), length=2**63))
    big = raw_file(tmp_path / "limit.safetensors", b"{}", length=_safetensors.MAX_HEADER + 1)
    with open(big, "ab") as f:
        f.truncate(_safetensors.MAX_HEADER + 20)             # sparse: no real 100 MB written
    with pytest.raises(ValueError, match="exceeds the 100000000-byte limit"):
        io.load(big)


def test_data_cut_short_after_the_header_check(tmp_path, monkeypatch):
    header = {"a": {"dtype": "F32", "shape": [2**14], "data_offsets": [0, 2**16]}}
    path = raw_file(tmp_path / "cut.safetensors", header, bytes(2**16))   # more than a buffer
    real = _safetensors._header

    def header_then_truncate(p, f):
        out = real(p, f)
        os.truncate(p, p.stat().st_size - 3)                # the file shrinks while being read
        return out

    monkeypatch.setattr(_safetensors, "_header", header_then_truncate)
    with pytest.raises(ValueError, match="tensor 'a' is truncated: 65533 of 65536 bytes"):
        io.load(path)


def test_padding_after_the_header_json_is_accepted(tmp_path):
    path = raw_file(tmp_path / "pad.safetensors", GOOD, np.ones(2, "<f4").tobytes(), pad=b"   ")
    np.testing.assert_array_equal(io.load(path)["a"], [1, 1])


def test_budget_refuses_before_reading(tmp_path):
    path = io.save(tmp_path / "w.safetensors", {"a": np.ones(100), "b": np.ones(100)})
    with pytest.raises(ValueError, match="tensor 'b' needs 800 bytes, more than the 200 left of "
                                         "max_bytes=1000"):
        io.load(path, max_bytes=1000)
    assert io.load(path, max_bytes=1600).keys() == {"a", "b"}
    with pytest.raises(ValueError, match="`max_bytes` must be non-negative"):
        io.load(path, max_bytes=-1)


def test_bf16_counts_twice_against_the_budget(tmp_path):
    header = {"x": {"dtype": "BF16", "shape": [4], "data_offsets": [0, 8]}}
    path = raw_file(tmp_path / "b.safetensors", header, bytes(8))
    with pytest.raises(ValueError, match="needs 16 bytes"):
        io.load(path, max_bytes=15)


@pytest.mark.parametrize("state, error, match", [
    ([np.ones(2)], TypeError, "`state_dict` must be a dict"),
    ({"a": [1.0, 2.0]}, TypeError, r"`state_dict\['a'\]` must be a NumPy or CuPy array; got list"),
    ({"a": np.float32(1)}, TypeError, "got float32"),
    ({"a": np.array([None])}, TypeError, "dtype object, which safetensors cannot hold"),
    ({"a": np.array(["x"])}, TypeError, "dtype <U1"),
    ({"a": np.ones(2, np.complex64)}, TypeError, "dtype complex64"),
    ({1: np.ones(2)}, TypeError, "keys must be strings"),
    ({"__metadata__": np.ones(2)}, TypeError, "keys must be strings other than"),
])
def test_save_refuses_what_safetensors_cannot_hold(tmp_path, state, error, match):
    with pytest.raises(error, match=match):
        io.save(tmp_path / "w.safetensors", state)
    assert not any(tmp_path.iterdir())                      # nothing written, no temporary left


@pytest.mark.parametrize("metadata", [{"a": 1}, {1: "a"}, ["a"]])
def test_save_refuses_metadata_that_is_not_str_to_str(tmp_path, metadata):
    with pytest.raises(TypeError, match="`metadata` must be a dict of str -> str"):
        io.save(tmp_path / "w.safetensors", {"a": np.ones(1)}, metadata=metadata)


def test_save_paths(tmp_path):
    with pytest.raises(ValueError, match=r"must end in \.safetensors"):
        io.save(tmp_path / "w.pth", {})
    with pytest.raises(FileNotFoundError, match="does not exist"):
        io.save(tmp_path / "no" / "w.safetensors", {})
    with pytest.raises(TypeError, match=r"`path` must be a str or os\.PathLike; got int"):
        io.save(3, {})
    other = tmp_path / "keep.safetensors"
    other.write_bytes(b"my notes")
    with pytest.raises(ValueError, match="exists and is not a safetensors file"):
        io.save(other, {"a": np.ones(1)})
    assert other.read_bytes() == b"my notes"
    path = io.save(tmp_path / "w.safetensors", {"a": np.ones(1)})
    io.save(path, {"b": np.zeros(2)})                       # a safetensors file is replaced
    assert io.load(path).keys() == {"b"}


def test_a_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = io.save(tmp_path / "w.safetensors", {"old": np.ones(3)})

    def broken(a):
        raise OSError("disk full")

    monkeypatch.setattr(_safetensors, "_little_endian", broken)
    with pytest.raises(OSError, match="disk full"):
        io.save(path, {"new": np.ones(3)})
    assert io.load(path).keys() == {"old"}
    assert [p.name for p in tmp_path.iterdir()] == ["w.safetensors"]
