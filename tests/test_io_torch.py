"""PyTorch .pt/.pth files read without torch: bit-for-bit equal to what torch.save wrote, and
every hostile file (code in the pickle, storages missing or too small, strides outside their
storage, sizes the archive cannot hold) refused with a ValueError naming the file, with nothing
executed."""

import os
import pickle
import struct
import subprocess
import zipfile
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from npconv import io
from npconv.io import _torch

# A small assembler for torch.save's protocol-2 pickles, so that hostile files can be built
# without torch (and the well-formed ones are checked against torch where it is installed).


def g(module, name):
    return f"c{module}\n{name}\n".encode()


def s(text):
    data = text.encode()
    return b"X" + struct.pack("<I", len(data)) + data


def i(n):
    return b"J" + struct.pack("<i", n)


def tup(*items):
    return b"(" + b"".join(items) + b"t"


def tensor(key, numel, offset, size, stride, storage="FloatStorage", rebuild="_rebuild_tensor_v2",
           extra=b"", hooks=b"ccollections\nOrderedDict\n)R"):
    pid = tup(s("storage"), g("torch", storage), s(key), s("cpu"), i(numel))
    return (g("torch._utils", rebuild) + b"(" + pid + b"Q" + i(offset) + tup(*map(i, size))
            + tup(*map(i, stride)) + b"\x89" + hooks + extra + b"tR")


def state_dict(**entries):
    return b"\x80\x02}(" + b"".join(s(k) + v for k, v in entries.items()) + b"u."


def archive(path, pickled, storages=(), *, prefix="archive", byteorder=b"little",
            compress=zipfile.ZIP_STORED):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr(f"{prefix}/data.pkl", pickled, compress_type=compress)
        zf.writestr(f"{prefix}/version", b"3\n")
        if byteorder is not None:
            zf.writestr(f"{prefix}/byteorder", byteorder)
        for key, data in dict(storages).items():
            zf.writestr(f"{prefix}/data/{key}", data)
    return path


def floats(n):
    return np.arange(n, dtype="<f4").tobytes()


# --- well-formed files -------------------------------------------------------------------------


def test_crafted_state_dict_reads_offsets_and_strides_exactly(tmp_path):
    data = state_dict(
        w=tensor("0", 12, 0, (3, 4), (4, 1)),
        t=tensor("0", 12, 0, (4, 3), (1, 4)),                # the transpose, sharing storage 0
        row=tensor("0", 12, 4, (4,), (1,)),                  # a view with a storage offset
        step=tensor("0", 12, 1, (2, 2), (6, 2)),             # strided in both axes
        wide=tensor("0", 12, 2, (2, 3), (0, 1)),             # stride 0: an expanded row
        scalar=tensor("0", 12, 11, (), ()),
        empty=tensor("0", 12, 0, (0, 5), (5, 1)))
    out = io.load(archive(tmp_path / "w.pth", data, {"0": floats(12)}))
    base = np.arange(12, dtype=np.float32)
    np.testing.assert_array_equal(out["w"], base.reshape(3, 4))
    np.testing.assert_array_equal(out["t"], base.reshape(3, 4).T)
    np.testing.assert_array_equal(out["row"], base[4:8])
    np.testing.assert_array_equal(out["step"], [[1, 3], [7, 9]])
    np.testing.assert_array_equal(out["wide"], [[2, 3, 4], [2, 3, 4]])
    assert out["scalar"].shape == () and out["scalar"] == 11
    assert out["empty"].shape == (0, 5)
    for a in out.values():                                   # fresh, independent arrays
        assert a.flags.c_contiguous and a.flags.writeable and a.flags.owndata
    out["t"][0, 0] = 100
    assert out["w"][0, 0] == 0


def test_crafted_files_load_the_same_in_torch(tmp_path, torch):
    data = state_dict(t=tensor("0", 12, 1, (2, 3), (1, 4)), n=tensor("1", 1, 0, (), (),
                                                                     storage="LongStorage"))
    path = archive(tmp_path / "w.pth", data, {"0": floats(12), "1": struct.pack("<q", -5)})
    ours, theirs = io.load(path), torch.load(path, weights_only=True)
    assert ours.keys() == theirs.keys()
    for k in ours:
        np.testing.assert_array_equal(ours[k], theirs[k].numpy())


def test_big_endian_archive_is_byteswapped(tmp_path):
    data = state_dict(w=tensor("0", 3, 0, (3,), (1,)))
    path = archive(tmp_path / "be.pth", data, {"0": np.array([1.5, -2, 3], ">f4").tobytes()},
                   byteorder=b"big")
    out = io.load(path)["w"]
    assert out.dtype == np.float32 and out.dtype.isnative and out.tolist() == [1.5, -2, 3]


def test_missing_byteorder_means_little_endian(tmp_path):
    path = archive(tmp_path / "w.pth", state_dict(w=tensor("0", 2, 0, (2,), (1,))),
                   {"0": floats(2)}, byteorder=None)
    assert io.load(path)["w"].tolist() == [0, 1]


@st.composite
def geometries(draw):
    """(offset, size, stride, numel): a tensor that reaches exactly the last storage element,
    built from its geometry (so always valid) rather than filtered."""
    size = tuple(draw(st.lists(st.integers(1, 4), max_size=3)))
    stride = tuple(draw(st.integers(0, 6)) for _ in size)
    offset = draw(st.integers(0, 5))
    return offset, size, stride, offset + sum((n - 1) * s for n, s in zip(size, stride)) + 1


@given(geometries())
def test_any_offset_and_stride_equals_the_definition(tmp_path_factory, geometry):
    offset, size, stride, numel = geometry
    storage = np.arange(numel, dtype="<f4")
    want = np.empty(size, np.float32)
    for index in np.ndindex(*size):                          # one element at a time
        want[index] = storage[offset + sum(i * s for i, s in zip(index, stride))]
    folder = tmp_path_factory.mktemp("g")
    path = archive(folder / "w.pth", state_dict(w=tensor("0", numel, offset, size, stride)),
                   {"0": storage.tobytes()})
    np.testing.assert_array_equal(io.load(path)["w"], want)
    short = archive(folder / "short.pth",                   # one element too few: refused
                    state_dict(w=tensor("0", numel - 1, offset, size, stride)),
                    {"0": storage[:-1].tobytes()})
    with pytest.raises(ValueError, match="reaches element"):
        io.load(short)


@pytest.mark.parametrize("size, stride, dense", [
    ((3, 4), (4, 1), True), ((3, 4), (1, 3), True), ((2, 3, 4, 5), (60, 1, 15, 3), True),
    ((2, 1, 3), (3, 99, 1), True), ((3, 4), (1, 4), False), ((3, 4), (0, 1), False),
    ((3, 4), (5, 1), False), ((2, 2), (1, 1), False)])
def test_dense_blocks_with_permuted_axes_take_the_block_path(size, stride, dense, rng):
    assert (_torch._dense_order(size, stride) is not None) == dense
    numel = 1 + sum((n - 1) * s for n, s in zip(size, stride))
    flat = rng.normal(size=numel + 2)
    want = flat[2 + sum(np.indices(size)[d] * stride[d] for d in range(len(size)))]
    np.testing.assert_array_equal(_torch.gather(flat, 2, size, stride), want)


@pytest.mark.parametrize("chunk", [1, 5, 7, 1000])
def test_gather_in_chunks_equals_fancy_indexing(chunk, rng):
    flat = rng.normal(size=200)
    size, stride, offset = (3, 4, 5), (2, 30, 7), 3
    want = flat[offset + sum(np.indices(size)[d] * stride[d] for d in range(3))]
    got = _torch.gather(flat, offset, size, stride, chunk=chunk)
    np.testing.assert_array_equal(got, want)
    assert got.flags.c_contiguous and got.flags.owndata


def checkpoint_module(torch):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4),
                              torch.nn.Conv2d(4, 2, 1, bias=False))
    net.train()
    net(torch.randn(2, 3, 6, 6))                           # running statistics and the counter move
    return net


def test_torch_save_state_dict_is_read_bit_for_bit(tmp_path, torch):
    sd = checkpoint_module(torch).state_dict()
    base = torch.randn(6, 5)
    sd.update({"half": torch.randn(3).half(), "bf16": torch.randn(4, 2).to(torch.bfloat16),
               "transposed": base.t(), "view": base[2], "offset": base[1:, 2:],
               "expanded": torch.randn(3, 1).expand(3, 4), "mask": torch.tensor([True, False]),
               "int8": torch.tensor([-3, 4], dtype=torch.int8), "double": torch.randn(2).double(),
               "u16": torch.tensor([1, 65535], dtype=torch.uint16),
               "complex": torch.randn(2, 3, dtype=torch.complex64).t(),
               "nhwc": torch.randn(4, 3, 2, 2).to(memory_format=torch.channels_last),
               "param": torch.nn.Parameter(torch.randn(2, 2))})
    torch.save(sd, tmp_path / "w.pth")
    out = io.load(tmp_path / "w.pth")
    assert list(out) == list(sd)
    for k, v in sd.items():
        want = (v.float() if v.dtype == torch.bfloat16 else v).detach().contiguous().numpy()
        assert out[k].dtype == want.dtype, k
        assert out[k].shape == want.shape and out[k].tobytes() == want.tobytes(), k
    assert out["1.num_batches_tracked"].dtype == np.int64 and out["1.num_batches_tracked"] == 1


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_every_pickle_protocol(tmp_path, torch, protocol):
    sd = {"w": torch.randn(3, 2).t(), "b": torch.arange(4)}
    torch.save(sd, tmp_path / "w.pt", pickle_protocol=protocol)
    out = io.load(tmp_path / "w.pt")
    for k, v in sd.items():
        np.testing.assert_array_equal(out[k], v.numpy())


def test_checkpoint_nesting_gives_dotted_keys(tmp_path, torch):
    net = checkpoint_module(torch)
    opt = torch.optim.Adam(net.parameters())
    net(torch.randn(2, 3, 6, 6)).sum().backward()
    opt.step()
    ckpt = {"model": net.state_dict(), "optimizer": opt.state_dict(), "epoch": 3,
            "arch": "tiny", "lr": [0.1, 0.01], "ema": {"decay": 0.99, "0.weight": net[0].weight}}
    torch.save(ckpt, tmp_path / "ckpt.pth")
    out = io.load(tmp_path / "ckpt.pth")
    assert list(out) == [f"model.{k}" for k in net.state_dict()] + ["ema.0.weight"]
    np.testing.assert_array_equal(out["model.0.weight"], net[0].weight.detach().numpy())


def test_tensors_with_python_attributes_and_size_leaves(tmp_path, torch):
    param = torch.nn.Parameter(torch.randn(2))
    param.tag = "frozen"                                     # _rebuild_parameter_with_state
    plain = torch.randn(3)
    plain.note = 5                                           # _rebuild_from_type_v2
    torch.save({"p": param, "t": plain, "size": torch.Size([2, 3])}, tmp_path / "a.pth")
    out = io.load(tmp_path / "a.pth")
    assert list(out) == ["p", "t"]
    np.testing.assert_array_equal(out["p"], param.detach().numpy())
    np.testing.assert_array_equal(out["t"], plain.numpy())


def test_optimizer_state_alone_is_refused(tmp_path, torch):
    net = torch.nn.Linear(2, 2)
    opt = torch.optim.Adam(net.parameters())
    net(torch.ones(1, 2)).sum().backward()
    opt.step()
    torch.save(opt.state_dict(), tmp_path / "opt.pth")
    with pytest.raises(ValueError, match="no tensors under string keys"):
        io.load(tmp_path / "opt.pth")


def test_whole_pickled_module_is_refused(tmp_path, torch):
    torch.save(torch.nn.Linear(2, 2), tmp_path / "model.pth")
    with pytest.raises(ValueError, match=r"refused global torch\.nn\.modules\.linear\.Linear"):
        io.load(tmp_path / "model.pth")


def test_single_tensor_is_refused(tmp_path, torch):
    torch.save(torch.ones(3), tmp_path / "t.pt")
    with pytest.raises(ValueError, match="holds a single tensor, not a dict of tensors"):
        io.load(tmp_path / "t.pt")


@pytest.mark.filterwarnings("ignore::DeprecationWarning")     # torch.jit.script, .save
def test_legacy_format_and_torchscript_are_refused(tmp_path, torch):
    torch.save({"w": torch.ones(2)}, tmp_path / "old.pth", _use_new_zipfile_serialization=False)
    with pytest.raises(ValueError, match=r"legacy format of torch < 1\.6; re-save it"):
        io.load(tmp_path / "old.pth")
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), tmp_path / "script.pt")
    with pytest.raises(ValueError, match="TorchScript archive"):
        io.load(tmp_path / "script.pt")


def test_quantized_and_float8_tensors_are_refused(tmp_path, torch):
    torch.save({"q": torch.zeros(2, dtype=torch.float8_e4m3fn)}, tmp_path / "f8.pth")
    with pytest.raises(ValueError, match=r"torch\.float8_e4m3fn: tensors of this type have no "
                                         r"NumPy equivalent"):
        io.load(tmp_path / "f8.pth")


# --- hostile files -----------------------------------------------------------------------------


class Payload:
    """Unpickled by pickle itself, this would run `call(*args)`: here, create a file."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


def payloads(marker):
    code = f"open({str(marker)!r}, 'w').close()"
    return {
        "os.system": Payload(os.system, f"touch {marker}"),
        "builtins.exec": Payload(exec, code),
        "builtins.eval": Payload(eval, code),
        "subprocess.Popen": Payload(subprocess.Popen, ["touch", str(marker)]),
    }


@pytest.mark.parametrize("name", ["os.system", "builtins.exec", "builtins.eval",
                                  "subprocess.Popen"])
@pytest.mark.parametrize("protocol", [2, 4])
def test_code_in_the_pickle_is_refused_and_never_run(tmp_path, name, protocol):
    marker = tmp_path / "pwned"
    payload = payloads(marker)[name]
    blob = pickle.dumps({"w": payload}, protocol=protocol)
    # protocol 2 writes Python 2's names: __builtin__.exec, commands.Popen
    with pytest.raises(ValueError, match=r"refused global (posix|nt|os|builtins|__builtin__|"
                                         r"subprocess|commands)\.(system|exec|eval|Popen)") as e:
        io.load(archive(tmp_path / "evil.pth", blob))
    assert "evil.pth" in str(e.value)
    assert not marker.exists()
    live = pickle.loads(blob)["w"]                           # plain pickle runs the payload...
    if name == "subprocess.Popen":
        live.wait()
    assert marker.exists()                                   # ...which the refusal prevented


def test_refused_inside_a_real_state_dict(tmp_path):
    marker = tmp_path / "pwned"
    good = tensor("0", 2, 0, (2,), (1,))
    evil = pickle.dumps(Payload(os.system, f"touch {marker}"), protocol=2)[2:-1]
    path = archive(tmp_path / "evil.pth", state_dict(w=good, x=evil), {"0": floats(2)})
    with pytest.raises(ValueError, match="refused global"):
        io.load(path)
    assert not marker.exists()


@pytest.mark.parametrize("blob, match", [
    (b"\x80\x02cnumpy.core.multiarray\nscalar\n.", r"refused global numpy\.core\.multiarray"),
    (b"\x80\x02c__builtin__\ngetattr\n.", r"refused global __builtin__\.getattr"),
    (b"\x80\x02ctorch._utils\n_rebuild_qtensor\n.", r"refused global torch\._utils\._rebuild_q"),
    (b"\x80\x02(ccollections\nOrderedDict\no.", "opcode OBJ"),
    (b"\x80\x02ccollections\nOrderedDict\n)\x81.", "opcode NEWOBJ"),
    (b"\x80\x02\x82\x01.", "opcode EXT1"),
    (b"(iposix\nsystem\n.", "opcode INST"),
    (b"\x80\x02}r\xff\xff\xff\x7f.", "memo index 2147483647 exceeds its 4 opcodes"),
    (b"\x80\x02}(X\x01\x00\x00", "the pickle is malformed"),
    (b"\x80\x02\xff.", "the pickle is malformed"),
    (b"\x80\x02].", "holds a list, not a dict of tensors"),
    (b"\x80\x02}.", "no tensors under string keys"),
    (b"\x80\x02ccollections\nOrderedDict\n)R}b.", "no tensors"),        # BUILD on a dict: inert
    (b"\x80\x02ctorch\nfloat32\n}b.", r"set the state of torch\.float32 \(BUILD\)"),
    (b"\x80\x02ctorch._utils\n_rebuild_parameter\n}b.", r"set the state of torch\._utils"),
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(X\x01\x00\x00\x00aK\x00)))\x89}tR.",
     "got str instead of a storage"),
    (b"\x80\x02ctorch._utils\n_rebuild_tensor_v2\n(K\x01tR.", "malformed PyTorch pickle"),
    (b"\x80\x02ctorch._tensor\n_rebuild_from_type_v2\n(ctorch._utils\n_rebuild_tensor_v2\n"
     b"ctorch\nfloat32\n)}tR.", r"_rebuild_from_type_v2 got torch\._utils\._rebuild_tensor_v2, "
                               r"torch\.float32"),
    (b"\x80\x02ctorch\nSize\n(X\x01\x00\x00\x00a\x85tR.", r"torch\.Size got \('a',\)"),
    (b"\x80\x02ctorch._utils\n_rebuild_parameter\n(K\x01\x89}tR.",
     "a Parameter rebuild got int instead of a tensor"),
    (b"\x80\x02(X\x07\x00\x00\x00storageK\x01X\x01\x00\x00\x000X\x03\x00\x00\x00cpuK\x01tQ.",
     "is not \\('storage', storage_type"),
])
def test_hostile_pickles(tmp_path, blob, match):
    with pytest.raises(ValueError, match=match) as e:
        io.load(archive(tmp_path / "bad.pth", blob))
    assert "bad.pth" in str(e.value)



def long1(n):
    data = n.to_bytes(n.bit_length() // 8 + 1, "little", signed=True)
    return b"\x8a" + bytes([len(data)]) + data


@pytest.mark.parametrize("size", [(0, 2**70), (0, 2**40, 2**40), (1,) * 65])
def test_sizes_numpy_cannot_make_are_refused_naming_the_file(tmp_path, size):
    """Zero elements (so no byte to check) or 65 axes: before the fix, NumPy's own ValueError
    ("Maximum allowed dimension exceeded", ...) without the file's name."""
    pid = tup(s("storage"), g("torch", "FloatStorage"), s("0"), s("cpu"), i(1))
    dims = tup(*(i(n) if n < 2**31 else long1(n) for n in size))
    rebuild = (g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + i(0) + dims
               + tup(*map(i, [1] * len(size))) + b"\x89ccollections\nOrderedDict\n)RtR")
    path = archive(tmp_path / "big.pth", state_dict(w=rebuild), {"0": floats(1)})
    with pytest.raises(ValueError, match=r"big\.pth: a tensor of size .* has more axes or "
                                         r"elements than a NumPy array can"):
        io.load(path)

def test_dicts_that_contain_themselves_are_refused(tmp_path):
    blob = b"\x80\x02}q\x00X\x01\x00\x00\x00ah\x00s."       # d = {}; d["a"] = d
    with pytest.raises(ValueError, match="contain themselves"):
        io.load(archive(tmp_path / "loop.pth", blob))


@pytest.mark.parametrize("entry, storages, match", [
    (tensor("7", 2, 0, (2,), (1,)), {"0": floats(2)},
     r"storage '7' \(archive/data/7\) is missing from the archive"),
    (tensor("0", 4, 0, (4,), (1,)), {"0": floats(2)},
     r"storage '0' holds 8 bytes; the pickle declares 4 elements of torch\.FloatStorage"),
    (tensor("0", 6, 0, (2, 3), (3, 2)), {"0": floats(6)},
     r"stride=\(3, 2\) reaches element 7 of storage '0', which holds 6"),
    (tensor("0", 6, 4, (3,), (1,)), {"0": floats(6)},
     r"storage_offset=4, size=\(3,\), stride=\(1,\) reaches element 6"),
    (tensor("0", 6, 9, (0,), (1,)), {"0": floats(6)}, "storage_offset=9"),
    (tensor("0", 6, 0, (2,), (-1,)), {"0": floats(6)}, "expected non-negative ints"),
    (tensor("0", 6, 0, (2, 2), (1,)), {"0": floats(6)}, "size and stride of one length"),
    (tensor("0", 6, 0, (2,), (1,), extra=s("x")), {"0": floats(6)}, "conj/neg bits"),
    (tensor("0", 6, 0, (2,), (1,), hooks=b"}K\x01K\x02s"), {"0": floats(6)}, "backward hooks"),
    (tensor("0", 6, 0, (2,), (1,), storage="UntypedStorage"), {"0": floats(6)},
     "refused global torch.UntypedStorage"),
    (tensor("0", 6, 0, (2,), (1,), storage="QInt8Storage"), {"0": floats(6)},
     "no NumPy equivalent"),
])
def test_storages_and_strides_are_checked_before_reading(tmp_path, entry, storages, match):
    with pytest.raises(ValueError, match=match):
        io.load(archive(tmp_path / "bad.pth", state_dict(w=entry), storages))


def test_one_storage_named_as_two_types_is_refused(tmp_path):
    data = state_dict(a=tensor("0", 2, 0, (2,), (1,)),
                      b=tensor("0", 1, 0, (1,), (1,), storage="LongStorage"))
    with pytest.raises(ValueError, match="storage '0' is named both float32 and int64"):
        io.load(archive(tmp_path / "bad.pth", data, {"0": floats(2)}))


def test_untyped_storage_without_dtype_is_refused(tmp_path):
    pid = tup(s("storage"), g("torch.storage", "UntypedStorage"), s("0"), s("cpu"), i(8))
    entry = (g("torch._utils", "_rebuild_tensor_v2") + b"(" + pid + b"Q" + i(0) + tup(i(2))
             + tup(i(1)) + b"\x89}tR")
    with pytest.raises(ValueError, match="storage '0' is untyped and the tensor names no dtype"):
        io.load(archive(tmp_path / "bad.pth", state_dict(w=entry), {"0": floats(2)}))


def untyped_v3(nbytes, size, dtype=("torch", "float32")):
    pid = tup(s("storage"), g("torch.storage", "UntypedStorage"), s("0"), s("cpu"), i(nbytes))
    return (g("torch._utils", "_rebuild_tensor_v3") + b"(" + pid + b"Q" + i(0) + tup(i(size))
            + tup(i(1)) + b"\x89}" + g(*dtype) + b"tR")


def test_rebuild_v3_reads_bytes_as_its_dtype(tmp_path):
    data = np.array([1, 65535, 7], "<u2").tobytes()
    path = archive(tmp_path / "w.pth", state_dict(w=untyped_v3(6, 3, ("torch", "uint16"))),
                   {"0": data})
    out = io.load(path)["w"]
    assert out.dtype == np.uint16 and out.tolist() == [1, 65535, 7]


@pytest.mark.parametrize("entry, match", [
    (untyped_v3(6, 1), "storage '0' holds 6 bytes, not a whole number of float32 elements"),
    (untyped_v3(6, 1, ("torch", "Tensor")), r"_rebuild_tensor_v3 got dtype torch\.Tensor"),
])
def test_rebuild_v3_refusals(tmp_path, entry, match):
    with pytest.raises(ValueError, match=match):
        io.load(archive(tmp_path / "bad.pth", state_dict(w=entry), {"0": bytes(6)}))


def test_bad_byteorder_and_pickle_count(tmp_path):
    path = archive(tmp_path / "bad.pth", state_dict(w=tensor("0", 2, 0, (2,), (1,))),
                   {"0": floats(2)}, byteorder=b"middle")
    with pytest.raises(ValueError, match="byteorder holds b'middle'"):
        io.load(path)
    with zipfile.ZipFile(tmp_path / "two.pth", "w") as zf:
        zf.writestr("a/data.pkl", b"\x80\x02}.")
        zf.writestr("b/data.pkl", b"\x80\x02}.")
    with pytest.raises(ValueError, match=r"one <name>/data\.pkl; found"):
        io.load(tmp_path / "two.pth")


def set_declared_size(path, member, size):
    """Overwrite the central directory's sizes of `member`: a zip that lies about its content."""
    blob = bytearray(path.read_bytes())
    at = blob.index(b"PK\x01\x02")
    while True:
        name_len = struct.unpack("<H", blob[at + 28:at + 30])[0]
        if blob[at + 46:at + 46 + name_len].decode() == member:
            break
        at = blob.index(b"PK\x01\x02", at + 4)
    stored = struct.unpack("<H", blob[at + 10:at + 12])[0] == 0
    blob[at + 24:at + 28] = struct.pack("<I", size)          # uncompressed size
    if stored:
        blob[at + 20:at + 24] = struct.pack("<I", size)      # compressed size
    path.write_bytes(bytes(blob))


def test_declared_sizes_larger_than_the_file_are_refused_before_reading(tmp_path):
    numel = 2**30 - 1                                        # 4 GiB of floats
    path = archive(tmp_path / "big.pth", state_dict(w=tensor("0", numel, 0, (2,), (1,))),
                   {"0": floats(2)})
    set_declared_size(path, "archive/data/0", 4 * numel)
    with pytest.raises(ValueError, match="'archive/data/0' declares 4294967292 bytes, more "
                                         "than the file holds"):
        io.load(path)


def test_zip_bomb_pickle_is_refused_before_inflating(tmp_path):
    pickled = b"\x80\x02}." + bytes(80 << 20)               # 80 MiB of zeros inflate from ~80 KiB
    path = archive(tmp_path / "bomb.pth", pickled, compress=zipfile.ZIP_DEFLATED)
    assert path.stat().st_size < 1 << 20
    with pytest.raises(ValueError, match=r"inflating zip member 'archive/data\.pkl' needs 83886084 "
                                         "bytes, more than the 67108864 left"):
        io.load(path)
    set_declared_size(path, "archive/data.pkl", 2**32 - 1)
    with pytest.raises(ValueError, match="needs 4294967295 bytes"):
        io.load(path)


def test_corrupt_member_is_a_value_error(tmp_path):
    path = archive(tmp_path / "w.pth", state_dict(w=tensor("0", 2, 0, (2,), (1,))),
                   {"0": floats(2)})
    blob = bytearray(path.read_bytes())
    at = blob.index(floats(2))
    blob[at] ^= 0xFF                                         # the CRC no longer matches
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"cannot read zip member 'archive/data/0'.*CRC"):
        io.load(path)


def test_encrypted_member_is_a_value_error(tmp_path):
    path = archive(tmp_path / "w.pth", state_dict(w=tensor("0", 2, 0, (2,), (1,))),
                   {"0": floats(2)})
    blob = bytearray(path.read_bytes())
    at = blob.index(b"PK\x01\x02")                         # data.pkl's central directory entry
    blob[at + 8] |= 1                                        # flag bit 0: encrypted
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"w\.pth: zip member 'archive/data\.pkl' is "
                                         r"encrypted; npconv reads unencrypted archives only"):
        io.load(path)


def test_compressed_storage_is_read_and_charged(tmp_path):
    data = state_dict(w=tensor("0", 4, 0, (4,), (1,)))
    with zipfile.ZipFile(tmp_path / "z.pth", "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("archive/data.pkl", data)
        zf.writestr("archive/data/0", floats(4))
    assert io.load(tmp_path / "z.pth")["w"].tolist() == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="tensor 'w' needs 16 bytes"):
        io.load(tmp_path / "z.pth", max_bytes=len(data) + 8)
    assert zlib                                              # deflate is available here


@pytest.mark.parametrize("method", [zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA], ids=["bzip2", "lzma"])
def test_members_compressed_otherwise_than_by_deflate_are_refused(tmp_path, method):
    # zipfile inflates bzip2 and LZMA in one step, whatever the member declares: 2 KB of bzip2
    # declaring 4 bytes took 4 GiB before the refusal. Refused by method, before reading.
    path = tmp_path / "w.pth"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("archive/data.pkl", state_dict(w=tensor("0", 1, 0, (1,), (1,))))
        zf.writestr("archive/data/0", floats(1), compress_type=method)
    name = "bzip2" if method == zipfile.ZIP_BZIP2 else "LZMA"
    with pytest.raises(ValueError, match=rf"w\.pth: zip member 'archive/data/0' is compressed "
                                         rf"with {name}; npconv reads members stored as is or "
                                         rf"deflated only"):
        io.load(path)


def test_a_deflated_member_inflates_no_more_than_it_declares(tmp_path):
    import tracemalloc

    data = state_dict(w=tensor("0", 1, 0, (1,), (1,)))
    path = archive(tmp_path / "w.pth", data + bytes(32 << 20), compress=zipfile.ZIP_DEFLATED)
    set_declared_size(path, "archive/data.pkl", len(data))   # 32 MiB more than it says
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"cannot read zip member 'archive/data\.pkl'.*CRC"):
            io.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 4 << 20                                    # was 32 MiB: zf.read inflated all
