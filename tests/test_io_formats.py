"""The format read off the content, the name only a hint; npconv's own .npz model files; the
allocation budget; and the errors shared by every format."""

import json
import pickle
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

import npconv
from npconv import io, nn
from npconv.io import _files


def test_detect_every_readable_format(tmp_path):
    io.save(tmp_path / "w.safetensors", {"a": np.ones(2)})
    np.savez(tmp_path / "w.npz", a=np.ones(2))
    with zipfile.ZipFile(tmp_path / "w.pth", "w") as zf:
        zf.writestr("w/data.pkl", b"\x80\x02}.")
    with zipfile.ZipFile(tmp_path / "m.keras", "w") as zf:
        zf.writestr("config.json", b"{}")
        zf.writestr("model.weights.h5", b"")
    (tmp_path / "w.h5").write_bytes(_files.HDF5_MAGIC + bytes(8))
    for name, kind in [("w.safetensors", "safetensors"), ("w.npz", "npz"), ("w.pth", "torch"),
                       ("m.keras", "keras"), ("w.h5", "hdf5")]:
        assert io.detect_format(tmp_path / name) == kind
        renamed = tmp_path / f"copy_{name}.bin"              # a name that promises nothing
        renamed.write_bytes((tmp_path / name).read_bytes())
        assert io.detect_format(renamed) == kind
    assert set(io.FORMATS) == {"safetensors", "npz", "torch", "keras", "hdf5"}


@pytest.mark.parametrize("name, content, match", [
    ("w.safetensors", b"PK\x05\x06" + bytes(18),
     r"named like a safetensors file \(.safetensors\) but holds a zip archive of unknown"),
    ("w.safetensors", _files.HDF5_MAGIC + bytes(8), "but holds an HDF5 file"),
    ("w.pth", b"\x10\x00\x00\x00\x00\x00\x00\x00{}" + bytes(14),
     r"named like a PyTorch zip archive \(torch.save\) \(.pth\) but holds a safetensors file"),
    ("w.npz", b"hello world, this is text", "named like a NumPy .npz archive .* holds none"),
    ("w.h5", b"", "named like an HDF5 file .* holds none of the formats"),
    ("w.bin", b"hello world, this is text",
     "holds none of the formats npconv reads; npconv reads safetensors, PyTorch"),
    ("w.pt", pickle.dumps({"a": 1}, protocol=4),
     "holds a plain Python pickle; npconv never unpickles"),
    ("w.ckpt", b"\x80\x02\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19.", "legacy format of torch < 1.6"),
    ("w.zip", b"PK\x03\x04 truncated", "holds a zip archive of unknown content"),
])
def test_a_file_that_is_not_what_its_name_says(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(ValueError, match=match) as e:
        io.load(path)
    assert str(path) in str(e.value)


def test_torchscript_zip_is_recognized_and_refused(tmp_path):
    with zipfile.ZipFile(tmp_path / "s.pt", "w") as zf:
        zf.writestr("s/data.pkl", b"\x80\x02}.")
        zf.writestr("s/constants.pkl", b"\x80\x02).")
    with pytest.raises(ValueError, match="holds a TorchScript archive"):
        io.load(tmp_path / "s.pt")


def test_duplicate_zip_members_are_refused(tmp_path):
    path = tmp_path / "w.npz"
    with pytest.warns(UserWarning, match="Duplicate name"), zipfile.ZipFile(path, "w") as zf:
        zf.writestr("a.npy", b"x")
        zf.writestr("a.npy", b"y")
    with pytest.raises(ValueError, match=r"two members named 'a\.npy'"):
        io.load(path)


def test_missing_files_and_bad_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"weights file not found: .*none\.safetensors"):
        io.load(tmp_path / "none.safetensors")
    with pytest.raises(ValueError, match="is a directory, not a weights file"):
        io.load(tmp_path)                                    # was "no such file"
    with pytest.raises(TypeError, match=r"`path` must be a str or os\.PathLike; got dict"):
        io.load({})
    with pytest.raises(ValueError, match="only safetensors files hold metadata"):
        np.savez(tmp_path / "n.npz", a=np.ones(1))
        io.load_metadata(tmp_path / "n.npz")


def test_missing_h5py_says_which_extra(tmp_path, monkeypatch):
    path = tmp_path / "w.weights.h5"
    path.write_bytes(_files.HDF5_MAGIC + bytes(8))
    monkeypatch.setitem(sys.modules, "h5py", None)           # as if h5py were not installed
    with pytest.raises(ImportError, match=r"needs h5py: pip install 'npconv\[keras\]'"):
        io.load(path)


def model():
    rng = np.random.default_rng(0)
    return nn.Sequential(nn.Conv(2, 3, (3, 3), rng=rng), nn.BatchNorm(3), nn.ReLU(),
                         nn.GlobalAvgPool(), nn.Flatten(), nn.Linear(3, 2, rng=rng))


def test_npconv_model_file_gives_its_state_dict(tmp_path):
    m = model()
    path = nn.save(m, tmp_path / "model.npz")
    weights = io.load(path)
    assert list(weights) == list(m.state_dict())
    for k, v in m.state_dict().items():                      # PyTorch's layouts: conv (F, C, K)
        assert weights[k].dtype == v.dtype and np.array_equal(weights[k], v)
        assert weights[k].flags.writeable and weights[k].flags.c_contiguous


def test_a_model_file_loads_into_a_model_through_load_state_dict(tmp_path):
    """Before the fix: io.load gave the stored arrays, in npconv's layouts under PyTorch's
    names, and load_state_dict took a square Linear weight in transposed, silently."""
    rng = np.random.default_rng(0)
    a, b = (nn.Sequential(nn.Linear(4, 4, rng=rng), nn.ReLU(), nn.Linear(4, 4, rng=rng))
            for _ in range(2))
    b.load_state_dict(io.load(nn.save(a, tmp_path / "a.npz")))
    x = rng.standard_normal((3, 4)).astype(np.float32)
    np.testing.assert_array_equal(b.forward(x), a.forward(x))


def test_a_model_file_of_an_unknown_module_class_is_refused(tmp_path):
    with np.load(nn.save(model(), tmp_path / "seq.npz")) as npz:
        arrays = {k: npz[k] for k in npz.files}
    header = json.loads(str(arrays["__npconv_model__"]))
    header["model"] = {"type": "Module", "class": "mylib.Net", "config": {}, "children": {}}
    arrays["__npconv_model__"] = np.array(json.dumps(header))
    np.savez(tmp_path / "net.npz", **arrays)
    with pytest.raises(ValueError, match=r"net\.npz: invalid architecture: unknown Module class "
                                         r"'mylib\.Net': define \(import\) it before loading"):
        io.load(tmp_path / "net.npz")


def test_plain_npz_files_compressed_or_not(tmp_path):
    state = {"w": np.arange(6.0).reshape(2, 3), "f": np.asfortranarray(np.ones((3, 2), ">f4")),
             "n": np.int64(7), "e": np.zeros((0,))}
    np.savez(tmp_path / "a.npz", **state)
    np.savez_compressed(tmp_path / "b.npz", **state)
    for name in ("a.npz", "b.npz"):
        out = io.load(tmp_path / name)
        assert out.keys() == state.keys()
        for k, v in state.items():
            np.testing.assert_array_equal(out[k], v)
            assert out[k].flags.c_contiguous and out[k].dtype.isnative


@pytest.mark.parametrize("arrays, match", [
    ({"o": np.array([{}], dtype=object)}, r"array 'o': holds Python objects \(dtype object\)"),
    ({"s": np.array(["text"])}, "array 's' has dtype <U4; npconv reads numeric arrays only"),
])
def test_npz_refusals(tmp_path, arrays, match):
    np.savez(tmp_path / "bad.npz", **arrays)
    with pytest.raises(ValueError, match=match):
        io.load(tmp_path / "bad.npz")


def npy_member(shape, dtype="<f8", body=b""):
    header = repr({"descr": dtype, "fortran_order": False, "shape": shape}).encode()
    header += b" " * (-(len(header) + 11) % 64) + b"\n"
    return b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header + body


def test_npz_header_declaring_more_than_its_member(tmp_path):
    with zipfile.ZipFile(tmp_path / "big.npz", "w") as zf:
        zf.writestr("w.npy", npy_member((10**6, 10**6), body=bytes(16)))
    with pytest.raises(ValueError, match=r"array 'w': declares shape \(1000000, 1000000\) of "
                                         r"float64 \(8000000000000 bytes of data\) but holds 16 "
                                         r"bytes"):
        io.load(tmp_path / "big.npz")
    with zipfile.ZipFile(tmp_path / "junk.npz", "w") as zf:
        zf.writestr("w.npy", b"\x93NUMPY\x01\x00\xff\xffnot a dict")
    with pytest.raises(ValueError, match=r"array 'w': not an \.npy array"):
        io.load(tmp_path / "junk.npz")


def test_budget_covers_npz_arrays(tmp_path):
    np.savez(tmp_path / "a.npz", a=np.ones(100), b=np.ones(100))
    with pytest.raises(ValueError, match="array 'b' needs 800 bytes, more than the 200 left"):
        io.load(tmp_path / "a.npz", max_bytes=1000)


def test_default_budget_is_64_times_the_file_with_a_floor(tmp_path):
    path = tmp_path / "w.bin"
    path.write_bytes(bytes(2 << 20))
    assert _files.Budget.for_file(path, None).limit == 128 << 20
    path.write_bytes(bytes(10))
    assert _files.Budget.for_file(path, None).limit == 64 << 20
    assert _files.Budget.for_file(path, 5).limit == 5
    for bad in (True, 1.5, "1"):
        with pytest.raises(TypeError, match="`max_bytes` must be an int or None; got"):
            _files.Budget.for_file(path, bad)
    with pytest.raises(ValueError, match="`max_bytes` must be non-negative; got -1"):
        _files.Budget.for_file(path, -1)


def test_importing_npconv_io_stays_light():
    code = ("import sys, npconv.io; heavy = {'torch', 'keras', 'h5py', 'safetensors'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
    assert npconv.io is io


def weights_section_blocks():
    """The ```python blocks of docs/models.md's "Weights in and out" section, joined in order
    (later blocks use the earlier ones' names)."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "models.md").read_text()
    section = text.split("## Weights in and out", 1)[1].split("\n## ", 1)[0]
    return "\n".join(re.findall(r"```python\n(.*?)```", section, flags=re.S))


def test_docs_examples_run():
    code = weights_section_blocks()
    assert "io.load(" in code
    exec(compile(code, "docs/models.md", "exec"), {})


def small_files(folder):
    """One small, valid file of each format npconv reads (Keras ones where h5py is installed)."""
    rng = np.random.default_rng(0)
    state = {"conv.weight": rng.normal(size=(4, 2, 3, 3)).astype(np.float32),
             "bn.num_batches_tracked": np.array(3)}
    files = [io.save(folder / "w.safetensors", state), folder / "w.npz"]
    np.savez(files[1], **state)
    files.append(nn.save(model(), folder / "model.npz"))
    with zipfile.ZipFile(folder / "w.pth", "w") as zf:        # torch.save's layout, by hand
        zf.writestr("w/data.pkl", b"\x80\x02}X\x01\x00\x00\x00wctorch._utils\n_rebuild_tensor_v2"
                                  b"\n((X\x07\x00\x00\x00storagectorch\nFloatStorage\nX\x01\x00"
                                  b"\x00\x000X\x03\x00\x00\x00cpuK\x06tQK\x00K\x02K\x03\x86K"
                                  b"\x03K\x01\x86\x89ccollections\nOrderedDict\n)RtRs.")
        zf.writestr("w/data/0", np.arange(6, dtype="<f4").tobytes())
    files.append(folder / "w.pth")
    assert io.load(files[-1])["w"].shape == (2, 3)
    try:
        import h5py
    except ImportError:
        return files
    with h5py.File(folder / "w.weights.h5", "w") as f:
        f.create_group("layers/conv2d/vars").create_dataset("0", data=state["conv.weight"])
        f.create_group("vars")
    with zipfile.ZipFile(folder / "m.keras", "w") as zf:
        zf.writestr("config.json", b"{}")
        zf.writestr("model.weights.h5", (folder / "w.weights.h5").read_bytes())
    return [*files, folder / "w.weights.h5", folder / "m.keras"]


def test_corrupt_or_truncated_files_give_arrays_or_a_value_error(tmp_path):
    """64 bytes overwritten, or the file cut, at 24 or more places through each file: io.load
    returns arrays (the damage hit array values) or raises ValueError naming the file."""
    outcomes = {"ok": 0, "refused": 0}
    for good in small_files(tmp_path):
        blob = good.read_bytes()
        bad = good.with_name("bad_" + good.name)
        for start in range(0, len(blob), max(16, len(blob) // 24)):
            damaged = bytearray(blob)
            damaged[start:start + 64] = b"\xff" * len(damaged[start:start + 64])
            for content in (bytes(damaged), blob[:start]):
                bad.write_bytes(content)
                try:
                    io.load(bad)
                    outcomes["ok"] += 1
                except ValueError as e:
                    assert str(bad) in str(e)
                    outcomes["refused"] += 1
    assert outcomes["ok"] and outcomes["refused"]


def test_npz_members_compressed_with_bzip2_are_refused_by_method(tmp_path):
    with zipfile.ZipFile(tmp_path / "a.npz", "w", zipfile.ZIP_BZIP2) as zf:
        zf.writestr("w.npy", npy_member((2,), body=bytes(16)))
    with pytest.raises(ValueError, match=r"a\.npz: zip member 'w\.npy' is compressed with "
                                         r"bzip2; npconv reads members stored as is or deflated"):
        io.load(tmp_path / "a.npz")
