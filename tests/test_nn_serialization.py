"""Model files: an exact round trip for every layer type, no pickle, and a clear ValueError (with
nothing overwritten) for corrupt, foreign or mismatched files."""

import io
import json
import os
import re
import time
import tracemalloc
import zipfile
from pathlib import Path

import numpy as np
import pytest

from npconv import nn
from npconv.nn import serialization

R = np.random.default_rng


def every_layer_model(dtype="float32"):
    d = dict(dtype=dtype)
    return nn.Sequential(
        nn.Conv2d(1, 4, 3, stride=1, padding=((1, 1), (0, 2)), dilation=(1, 2),
                padding_mode="reflect", rng=R(0), **d),
        nn.BatchNorm2d(4, momentum=0.3, **d), nn.LeakyReLU(0.05),
        nn.ConvTranspose(4, 4, (2, 2), stride=2, groups=2, bias=False, rng=R(1), **d),
        nn.MaxPool2d(2, ceil_mode=True), nn.Tanh(),
        nn.Sequential(nn.AvgPool((2, 2), stride=1, padding=1, count_include_pad=False),
                      nn.Sigmoid()),
        nn.Dropout(0.25, rng=R(2)), nn.BatchNorm(4, momentum=None, **d), nn.GlobalAvgPool(),
        nn.Flatten(),
        nn.Linear(4, 3, rng=R(3), **d), nn.ReLU(),
        nn.Linear(3, 2, bias=False, rng=R(4), **d))


def trained(model, x):
    """A few steps, so that weights and batch-norm statistics are not their initial values."""
    opt = nn.Adam(lr=0.01)
    for _ in range(3):
        y = model.forward(x, training=True)
        model.backward(np.ones_like(y))
        opt.step(model.params, model.grads)
    return model


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64"])
def test_round_trip_is_exact(tmp_path, dtype):
    x = R(6).random((3, 8, 8, 1)).astype(dtype)
    model = trained(every_layer_model(dtype), x)
    path = nn.save(model, tmp_path / "m.npz", metadata={"seed": 3, "note": "é"})
    again = nn.load(path)
    assert serialization.layer_spec(again) == serialization.layer_spec(model)
    for attr in ("params", "buffers"):
        a, b = getattr(model, attr), getattr(again, attr)
        assert a.keys() == b.keys()
        for k in a:
            assert a[k].dtype == b[k].dtype
            np.testing.assert_array_equal(a[k], b[k])
    np.testing.assert_array_equal(model.forward(x), again.forward(x))
    assert nn.load_metadata(path) == {"seed": 3, "note": "é"}
    assert repr(again) == repr(model)


def test_file_has_no_pickled_data(tmp_path):
    path = nn.save(every_layer_model(), tmp_path / "m.npz")
    with np.load(path, allow_pickle=False) as npz:
        arrays = [npz[k] for k in npz.files]                      # raises on any object array
    assert all(a.dtype != object for a in arrays)
    assert zipfile.is_zipfile(path)


def test_save_replaces_a_model_but_never_a_foreign_file(tmp_path):
    model = every_layer_model()
    path = nn.save(model, tmp_path / "m.npz")
    nn.save(model, path)                                          # a model file: replaced
    foreign = tmp_path / "notes.txt"
    foreign.write_text("my notes")
    with pytest.raises(ValueError, match="is not an npconv model file; refusing to overwrite"):
        nn.save(model, foreign)
    assert foreign.read_text() == "my notes"
    np.savez(tmp_path / "data.npz", x=np.ones(3))
    before = (tmp_path / "data.npz").read_bytes()
    with pytest.raises(ValueError, match="refusing to overwrite"):
        nn.save(model, tmp_path / "data.npz")
    assert (tmp_path / "data.npz").read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.npz", "m.npz", "notes.txt"]


def test_failed_save_leaves_the_old_file(tmp_path):
    model = every_layer_model()
    path = nn.save(model, tmp_path / "m.npz")
    before = path.read_bytes()
    with pytest.raises(TypeError, match="`metadata` must hold JSON values only"):
        nn.save(model, path, metadata={"x": np.ones(2)})
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["m.npz"]       # no temporary file left


def write(path, header=None, arrays=None, model=None):
    """An .npz with the given header (dict -> JSON) and arrays; defaults from `model`."""
    model = model or nn.Sequential(nn.Linear(3, 2, rng=R(0)))
    if header is None:
        header = {"format": "npconv.model", "version": 2,
                  "model": serialization.layer_spec(model), "metadata": {}}
    if arrays is None:
        arrays = {f"params/{k}": v for k, v in model.params.items()}
    np.savez(path, __npconv_model__=np.array(json.dumps(header)), **arrays)
    return path


def spec(**changes):
    base = {"format": "npconv.model", "version": 2, "metadata": {},
            "model": {"type": "Sequential", "layers": [{"type": "Linear", "config": {
                "in_features": 3, "out_features": 2, "bias": True, "dtype": "float32"}}]}}
    base.update(changes)
    return base


def save_npy(path, a):
    with open(path, "wb") as f:                                    # no ".npy" suffix added
        np.save(f, a)


BAD_FILES = [
    ("garbage", lambda p: p.write_bytes(b"not a model at all"), "not an .npz archive"),
    ("empty", lambda p: p.write_bytes(b""), "not an .npz archive"),
    ("npy", lambda p: save_npy(p, np.ones(3)), "not an .npz archive"),
    ("foreign-npz", lambda p: np.savez(p, x_train=np.ones(3)),
     "an .npz without the '__npconv_model__' entry"),
    ("pickled", lambda p: np.savez(p, __npconv_model__=np.array([{"a": 1}], dtype=object)),
     "holds Python objects .*never pickles"),
    ("bad-json", lambda p: np.savez(p, __npconv_model__=np.array("{not json")),
     "corrupt npconv model file"),
    ("other-format", lambda p: write(p, header=spec(format="keras")), "format"),
    ("newer-version", lambda p: write(p, header=spec(version=3)),
     "format version 3; this npconv reads versions 1 and 2"),
    ("unknown-layer", lambda p: write(p, header=spec(model={"type": "Attention"})),
     "invalid architecture: unknown layer type 'Attention'"),
    ("bad-config", lambda p: write(p, header=spec(model={"type": "Linear", "config": {
        "in_features": -3, "out_features": 2}})), r"invalid Linear config .* must be >= 1"),
    ("old-name-in-v2", lambda p: write(p, header=spec(model={"type": "Dense", "config": {
        "in_features": 3, "out_features": 2}})), "unknown layer type 'Dense'"),
    ("unknown-config-key", lambda p: write(p, header=spec(model={"type": "ReLU", "config": {
        "alpha": 1}})), "invalid ReLU config"),
    ("missing-weight", lambda p: write(p, arrays={}),
     r"missing \['params/0.bias', 'params/0.weight'\]"),
    ("extra-weight", lambda p: write(p, arrays={"params/0.weight": np.zeros((3, 2), np.float32),
                                                "params/0.bias": np.zeros(2, np.float32),
                                                "params/9.weight": np.zeros(1)}),
     r"unexpected \['params/9.weight'\]"),
    ("wrong-shape", lambda p: write(p, arrays={"params/0.weight": np.zeros((2, 3), np.float32),
                                               "params/0.bias": np.zeros(2, np.float32)}),
     r"params/0.weight must be float32 of shape \(3, 2\); got float32 of shape \(2, 3\)"),
    ("wrong-dtype", lambda p: write(p, arrays={"params/0.weight": np.zeros((3, 2)),
                                               "params/0.bias": np.zeros(2, np.float32)}),
     "params/0.weight must be float32"),
]


@pytest.mark.parametrize("name, make, match", BAD_FILES, ids=[b[0] for b in BAD_FILES])
def test_bad_files_raise_a_clear_error(tmp_path, name, make, match):
    path = tmp_path / "model.npz"
    make(path)
    with pytest.raises(ValueError, match=match) as info:
        nn.load(path)
    assert str(path) in str(info.value)


def test_is_model_file(tmp_path):
    assert nn.is_model_file(nn.save(every_layer_model(), tmp_path / "m.npz"))
    (tmp_path / "t.txt").write_text("text")
    np.savez(tmp_path / "d.npz", x=np.ones(2))
    assert not nn.is_model_file(tmp_path / "t.txt")
    assert not nn.is_model_file(tmp_path / "d.npz")
    assert not nn.is_model_file(tmp_path / "missing.npz")


def test_truncated_and_damaged_files(tmp_path):
    good = nn.save(every_layer_model(), tmp_path / "m.npz").read_bytes()
    (tmp_path / "cut.npz").write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match=r"not an \.npz archive, or a truncated one"):
        nn.load(tmp_path / "cut.npz")
    damaged = bytearray(good)
    damaged[200:230] = b"x" * 30                                   # inside the first member
    (tmp_path / "bad.npz").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match=r"corrupt member .*Bad CRC-32"):
        nn.load(tmp_path / "bad.npz")


def test_missing_file_is_a_file_not_found_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="model file not found"):
        nn.load(tmp_path / "nope.npz")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        nn.save(every_layer_model(), tmp_path / "no" / "dir" / "m.npz")
    with pytest.raises(ValueError, match="is a directory"):
        nn.save(every_layer_model(), tmp_path)
    with pytest.raises(TypeError, match=r"`model` must be an npconv\.nn Layer"):
        nn.save("model", tmp_path / "m.npz")


def test_load_weights_changes_nothing_unless_everything_fits(tmp_path):
    source = trained(every_layer_model(), R(7).random((2, 8, 8, 1), dtype=np.float32))
    path = nn.save(source, tmp_path / "m.npz")
    target = every_layer_model()
    before = {k: v.copy() for k, v in target.params.items()}
    other = nn.Sequential(nn.Linear(3, 2, rng=R(0)))
    with pytest.raises(ValueError, match="the saved architecture differs"):
        nn.load_weights(other, path)
    saved = {**{f"params/{k}": v for k, v in source.params.items()},
             **{f"buffers/{k}": v for k, v in source.buffers.items()}}
    write(tmp_path / "partial.npz", model=target, arrays={
        k: v for k, v in saved.items() if k != "params/11.bias"})
    with pytest.raises(ValueError, match="missing"):
        nn.load_weights(target, tmp_path / "partial.npz")
    for k, v in target.params.items():
        np.testing.assert_array_equal(v, before[k])              # untouched
    nn.load_weights(target, path)
    for k, v in target.params.items():
        np.testing.assert_array_equal(v, source.params[k])


def test_metadata_must_be_an_object(tmp_path):
    write(tmp_path / "m.npz", header=spec(metadata=[1, 2]))
    with pytest.raises(ValueError, match="metadata must be a JSON object"):
        nn.load_metadata(tmp_path / "m.npz")
    assert os.path.exists(tmp_path / "m.npz")


DATA = Path(__file__).parent / "data"


def test_version_1_files_load_with_the_new_names(tmp_path):
    """A file written by npconv 0.1 (tests/data/make_model_v1.py: Dense, "w"/"b"/"gamma"/"beta",
    Dropout(rate=...), no num_batches_tracked) loads as Linear, "weight"/"bias", Dropout(p=...),
    with num_batches_tracked 0, and gives the outputs that npconv 0.1 gave; saving it again
    writes version 2."""
    model = nn.load(DATA / "model_v1.npz")
    io = np.load(DATA / "model_v1_io.npz")
    # equal to float32 rounding: batch norm's fused evaluation pass (npconv.nn.normalization)
    # rounds differently from npconv 0.1's
    np.testing.assert_allclose(model.forward(io["x"]), io["y"], rtol=0, atol=1e-6)
    assert [type(layer).__name__ for layer in model][-3:] == ["Linear", "ReLU", "Linear"]
    assert model[7].p == 0.25 and model[1].momentum == 0.3
    assert sorted(model.params) == ["0.bias", "0.weight", "1.bias", "1.weight", "10.bias",
                                    "10.weight", "12.weight", "3.weight", "6.2.bias",
                                    "6.2.weight"]
    assert sorted(model.buffers) == [f"{p}.{k}" for p in ("1", "6.2") for k in (
        "num_batches_tracked", "running_mean", "running_var")]
    assert int(model.buffers["6.2.num_batches_tracked"]) == 0
    assert nn.load_metadata(DATA / "model_v1.npz") == {"seed": 7}
    assert nn.is_model_file(DATA / "model_v1.npz")
    again = nn.load(nn.save(model, tmp_path / "m.npz"))
    np.testing.assert_array_equal(again.forward(io["x"]), model.forward(io["x"]))
    with np.load(tmp_path / "m.npz") as npz:
        assert json.loads(str(npz["__npconv_model__"]))["version"] == 2
    target = nn.load(DATA / "model_v1.npz")
    nn.load_weights(target, DATA / "model_v1.npz")               # the converted spec matches


# ---------------------------------------------------------------------------------------------
# Hostile files: checked before anything is allocated, one ValueError naming the file
# ---------------------------------------------------------------------------------------------


def npy_bytes(a=None, *, header=None, tail=b"") -> bytes:
    """An .npy of `a`, or an .npy header declaring `header` followed by `tail`."""
    f = io.BytesIO()
    if header is None:
        np.save(f, a)
    else:
        np.lib.format.write_array_header_1_0(f, header)
        f.write(tail)
    return f.getvalue()


def linear_header(d: int, f: int, nest: int = 0) -> bytes:
    model = {"type": "Linear", "config": {"in_features": d, "out_features": f}}
    for _ in range(nest):
        model = {"type": "Sequential", "layers": [model]}
    header = {"format": "npconv.model", "version": 2, "model": model, "metadata": {}}
    return npy_bytes(np.array(json.dumps(header)))


def write_zip(path, members: dict) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)


SMALL = {"params/weight.npy": npy_bytes(np.zeros((3, 2), np.float32)),
         "params/bias.npy": npy_bytes(np.zeros(2, np.float32))}

HOSTILE = [
    ("declares-Linear(20000, 10000)", lambda: {"__npconv_model__.npy": linear_header(
        20000, 10000), **SMALL}, r"params/weight must be float32 of shape \(20000, 10000\); got "
     r"float32 of shape \(3, 2\)"),
    ("declares-Linear(2**20, 2**20)", lambda: {"__npconv_model__.npy": linear_header(
        2**20, 2**20), **SMALL}, r"shape \(1048576, 1048576\); got float32 of shape \(3, 2\)"),
    ("declares-Linear(2**40, 2**40)", lambda: {"__npconv_model__.npy": linear_header(
        2**40, 2**40), **SMALL},
     r"invalid architecture: invalid Linear config .*: an array of shape \(1099511627776, "
     r"1099511627776\) is too large for any machine"),
    ("member-declares-2**40", lambda: {"__npconv_model__.npy": linear_header(3, 2), **SMALL,
                                       "params/weight.npy": npy_bytes(header={
                                           "descr": "<f4", "fortran_order": False,
                                           "shape": (2**40,)}, tail=b"\0" * 1000)},
     r"params/weight: declares shape \(1099511627776,\) of float32 \(4398046511104 bytes of "
     r"data\) but holds 1000 bytes"),
    ("member-not-npy", lambda: {"__npconv_model__.npy": linear_header(3, 2), **SMALL,
                                "params/bias": b"not an array"},
     "member 'params/bias' is not an .npy array"),
    ("member-bad-magic", lambda: {"__npconv_model__.npy": linear_header(3, 2), **SMALL,
                                  "params/bias.npy": b"\x93NUMPY garbage"},
     "params/bias: not an .npy array"),
    ("member-pickled", lambda: {"__npconv_model__.npy": linear_header(3, 2), **SMALL,
                                "params/bias.npy": npy_bytes(np.array([{}], dtype=object))},
     "params/bias: holds Python objects"),
    ("400-nested-Sequentials", lambda: {"__npconv_model__.npy": linear_header(3, 2, nest=400),
                                        **SMALL}, "Sequentials nested more than 64 deep"),
    ("header-not-a-string", lambda: {"__npconv_model__.npy": npy_bytes(np.zeros(3)), **SMALL},
     "the header is float64 of shape \\(3,\\), not a JSON string"),
    ("deeply-nested-json", lambda: {"__npconv_model__.npy": npy_bytes(np.array(
        "[" * 100000 + "]" * 100000)), **SMALL}, "header: RecursionError"),
]


@pytest.mark.parametrize("name, members, match", HOSTILE, ids=[h[0] for h in HOSTILE])
def test_hostile_files_fail_fast_without_allocating(tmp_path, name, members, match):
    """Before the fix: Linear(20000, 10000) in a 1 KB file cost seconds and gigabytes before its
    ValueError, 2**20 x 2**20 and a member declaring (2**40,) a MemoryError, a non-.npy member
    an AttributeError, 400 nested Sequentials a RecursionError."""
    path = tmp_path / "model.npz"
    write_zip(path, members())
    tracemalloc.start()
    start = time.perf_counter()
    try:
        with pytest.raises(ValueError, match=match) as info:
            nn.load(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 8 << 20 and time.perf_counter() - start < 2.0, (peak, name)



def test_members_compressed_with_bzip2_are_refused_before_inflating(tmp_path):
    """Before the fix: zipfile inflated a bzip2 member whole, whatever size it declared (a
    2.4 KB model file took 4 GiB before its CRC error)."""
    path = tmp_path / "model.npz"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("__npconv_model__.npy", linear_header(3, 2))
        for name, data in SMALL.items():
            zf.writestr(name, data, compress_type=zipfile.ZIP_BZIP2)
    with pytest.raises(ValueError, match=r"model\.npz: params/\w+: zip member 'params/\w+\.npy' "
                                         r"is compressed with bzip2"):
        nn.load(path)


def test_encrypted_members_are_a_value_error(tmp_path):
    """Before the fix: zipfile's RuntimeError ("password required"), which `npconv predict`
    did not catch either."""
    from npconv import training

    path = nn.save(nn.Sequential(nn.Linear(2, 2)), tmp_path / "m.npz")
    np.savez(tmp_path / "x.npz", x=np.zeros((2, 8, 8)))
    for target in (path, tmp_path / "x.npz"):
        blob = bytearray(target.read_bytes())
        at = blob.index(b"PK\x01\x02")                        # the first central directory entry
        blob[at + 8] |= 1                                    # flag bit 0: encrypted
        target.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match=r"m\.npz: __npconv_model__: zip member "
                                         r"'__npconv_model__\.npy' is encrypted"):
        nn.load(path)
    with pytest.raises(ValueError, match=r"x\.npz: x: zip member 'x\.npy' is encrypted"):
        training.read_images(tmp_path / "x.npz")

def test_too_many_layers_are_refused_before_building(tmp_path):
    spec = {"format": "npconv.model", "version": 2, "metadata": {},
            "model": {"type": "Sequential", "layers": [{"type": "Tanh"}] * 120_000}}
    write_zip(tmp_path / "m.npz", {"__npconv_model__.npy": npy_bytes(np.array(json.dumps(
        spec, separators=(",", ":"))))})
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"m\.npz: invalid architecture: more than 100000 "
                                         r"layers"):
        nn.load(tmp_path / "m.npz")
    assert time.perf_counter() - start < 2.0



def test_a_module_config_asking_for_many_layers_is_refused_before_building_them(tmp_path):
    """Before the fix: a Module's config is its constructor's arguments, and a small file could
    ask for a ResNet of 200,000 blocks (then replace them by the file's own layer1): loaded,
    after 112 s and 3.2 GB. The architecture may now make 8 arrays per stored one, plus 64."""
    from npconv import models

    model = models.resnet18(num_classes=3, width=4)
    path = nn.save(model, tmp_path / "r.npz")
    with np.load(path) as npz:
        members = {f"{k}.npy": npy_bytes(npz[k]) for k in npz.files}
    header = json.loads(str(np.load(path)["__npconv_model__"]))
    header["model"]["config"]["layers"] = [2000, 2, 2, 2]      # then layer1 comes from the file
    members["__npconv_model__.npy"] = npy_bytes(np.array(json.dumps(header)))
    write_zip(tmp_path / "bad.npz", members)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"bad\.npz: invalid architecture: invalid ResNet config "
                                         r".*: the architecture makes more than 1040 arrays"):
        nn.load(tmp_path / "bad.npz")
    assert time.perf_counter() - start < 1.0
    assert nn.load(path).state_dict().keys() == model.state_dict().keys()



@pytest.mark.parametrize("name", ["params", "forward", "__class__", "__dict__", "_children",
                                  "state_dict", "a.b", ""])
def test_module_children_named_like_the_class_attributes_are_refused(tmp_path, name):
    """Before the fix: AttributeError (`params`), TypeError (`__class__`, `__dict__`), or a model
    whose `forward` / `state_dict` was a ReLU layer."""
    from npconv import models

    path = nn.save(models.resnet18(num_classes=3, width=4), tmp_path / "r.npz")
    with np.load(path) as npz:
        members = {f"{k}.npy": npy_bytes(npz[k]) for k in npz.files}
    header = json.loads(str(np.load(path)["__npconv_model__"]))
    header["model"]["children"][name] = {"type": "ReLU", "config": {}}
    members["__npconv_model__.npy"] = npy_bytes(np.array(json.dumps(header)))
    write_zip(tmp_path / "bad.npz", members)
    with pytest.raises(ValueError, match=rf"bad\.npz: invalid architecture: a ResNet child "
                                         rf"cannot be named '{re.escape(name)}'"):
        nn.load(tmp_path / "bad.npz")

def test_meta_max_arrays():
    from npconv.nn import init

    with init.meta(max_arrays=4):
        nn.Linear(2, 3)                                      # weight, bias and their grads
        with pytest.raises(ValueError, match=r"makes more than 4 arrays \(meta\(max_arrays=4"):
            nn.Linear(2, 3)
    with init.meta():
        nn.Sequential(*[nn.Linear(2, 2) for _ in range(10)])  # no limit
    for bad in (-1, 1.5, True):
        with pytest.raises(ValueError, match=r"`max_arrays` must be None or an int >= 0; got"), \
                init.meta(max_arrays=bad):
            pass

def test_load_reads_each_array_once_without_drawing_weights(tmp_path, monkeypatch):
    """A legitimate file: the architecture is built in nn.init.meta() (nothing drawn), then
    the stored arrays are the model's own."""
    model = nn.Sequential(nn.Linear(300, 200, rng=R(0)), nn.BatchNorm1d(200))
    path = nn.save(model, tmp_path / "m.npz")
    monkeypatch.setattr(nn.init, "kaiming_uniform", None)          # any draw would fail
    again = nn.load(path)
    assert again[0].params["weight"].flags.writeable
    np.testing.assert_array_equal(again[0].params["weight"], model[0].params["weight"])
    assert again[0].grads["weight"].shape == (300, 200) and not again[0].grads["weight"].any()
