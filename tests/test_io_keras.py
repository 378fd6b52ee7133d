"""Keras files through h5py: the arrays Keras itself holds, keyed by layer path, with the
architecture; links, external data, odd dtypes and oversized declarations refused."""

import itertools
import json
import os
import zipfile

import numpy as np
import pytest

from npconv import io

h5py = pytest.importorskip("h5py")
# Keras' own variables on NumPy 2 (not npconv's concern)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
    """Keras 3 on the PyTorch backend, or skip (the test-only way to write real Keras files)."""
    os.environ.setdefault("KERAS_BACKEND", "torch")
    keras = pytest.importorskip("keras")
    if not keras.__version__.startswith("3."):
        pytest.skip(f"Keras 3 writes these files; found {keras.__version__}")
    return keras


@pytest.fixture(scope="module")
def model(keras):
    """A small functional model with a nested Sequential, trained a step so that batch-norm
    statistics and the optimizer hold values."""
    keras.utils.set_random_seed(0)
    x = keras.Input((6, 6, 3))
    y = keras.layers.Conv2D(4, 3, name="c1")(x)
    y = keras.layers.BatchNormalization()(y)
    y = keras.layers.Add()([y, keras.layers.Conv2D(4, 1)(y)])
    y = keras.layers.GlobalAveragePooling2D()(y)
    head = keras.Sequential([keras.layers.Dense(5), keras.layers.Dense(2)], name="head")
    m = keras.Model(x, head(y))
    m.compile("adam", "mse")
    m.fit(np.ones((4, 6, 6, 3)), np.ones((4, 2)), verbose=0)
    return m


EXPECTED_KEYS = [
    "batch_normalization/vars/0", "batch_normalization/vars/1", "batch_normalization/vars/2",
    "batch_normalization/vars/3", "conv2d/vars/0", "conv2d/vars/1", "conv2d_1/vars/0",
    "conv2d_1/vars/1", "sequential/layers/dense/vars/0", "sequential/layers/dense/vars/1",
    "sequential/layers/dense_1/vars/0", "sequential/layers/dense_1/vars/1"]


def check_against_keras(weights, model):
    assert list(weights) == EXPECTED_KEYS
    for i, w in enumerate(model.get_layer("c1").get_weights()):
        np.testing.assert_array_equal(weights[f"conv2d/vars/{i}"], w)
    for i, w in enumerate(model.get_layer("head").layers[1].get_weights()):
        np.testing.assert_array_equal(weights[f"sequential/layers/dense_1/vars/{i}"], w)
    ours = sorted(a.tobytes() for a in weights.values())
    assert ours == sorted(np.asarray(w).tobytes() for w in model.get_weights())


def test_keras_archive(tmp_path, model):
    model.save(tmp_path / "m.keras")
    weights, config = io.load_keras(tmp_path / "m.keras")
    check_against_keras(weights, model)
    assert config["class_name"] == "Functional"
    assert [layer["name"] for layer in config["config"]["layers"]][:2] == ["input_layer", "c1"]
    assert io.load(tmp_path / "m.keras").keys() == weights.keys()
    assert io.detect_format(tmp_path / "m.keras") == "keras"


def test_weights_file(tmp_path, model):
    model.save_weights(tmp_path / "m.weights.h5")
    weights, config = io.load_keras(tmp_path / "m.weights.h5")
    check_against_keras(weights, model)
    assert config is None
    for a in weights.values():
        assert a.flags.writeable and a.flags.c_contiguous and a.dtype.isnative


def test_legacy_h5_model_file(tmp_path, keras):
    m = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, name="d1"),
                          keras.layers.Dense(2, name="d2")], name="seq")
    m.save(tmp_path / "m.h5")                                # Keras 2's whole-model layout
    weights, config = io.load_keras(tmp_path / "m.h5")
    assert list(weights) == ["d1/seq/d1/kernel", "d1/seq/d1/bias", "d2/seq/d2/kernel",
                             "d2/seq/d2/bias"]
    for ours, theirs in zip(weights.values(), m.get_weights()):
        np.testing.assert_array_equal(ours, theirs)
    assert config["class_name"] == "Sequential"


def write_keras2_weights(path):
    """A Keras 2 `save_weights` file, written with h5py as tf.keras 2 did."""
    kernel, bias = np.arange(6, dtype=np.float32).reshape(2, 3), np.ones(3, np.float32)
    with h5py.File(path, "w") as f:
        f.attrs["layer_names"] = [b"dense", b"flatten"]
        dense = f.create_group("dense")
        dense.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
        dense.create_dataset("dense/kernel:0", data=kernel)
        dense.create_dataset("dense/bias:0", data=bias)
        f.create_group("flatten").attrs["weight_names"] = np.array([], dtype="S1")
    return kernel, bias


def test_keras2_weights_file(tmp_path):
    kernel, bias = write_keras2_weights(tmp_path / "w.h5")
    weights, config = io.load_keras(tmp_path / "w.h5")
    assert list(weights) == ["dense/dense/kernel:0", "dense/dense/bias:0"] and config is None
    np.testing.assert_array_equal(weights["dense/dense/kernel:0"], kernel)
    np.testing.assert_array_equal(weights["dense/dense/bias:0"], bias)


def keras3_file(path, build):
    """An HDF5 file in Keras 3's layout, `build(vars_group)` adding the datasets."""
    with h5py.File(path, "w") as f:
        build(f.create_group("layers/dense/vars"))
        f.create_group("vars")
    return path


def test_natural_order_and_numeric_variable_order(tmp_path):
    def build(vars_group):
        for n in range(12):
            vars_group.create_dataset(str(n), data=np.full(2, n, np.int32))

    path = keras3_file(tmp_path / "w.weights.h5", build)
    with h5py.File(path, "a") as f:
        for name in ("dense_10", "dense_2"):
            f.create_group(f"layers/{name}/vars").create_dataset("0", data=np.zeros(1))
    weights = io.load(path)
    assert list(weights)[:12] == [f"dense/vars/{n}" for n in range(12)]
    assert list(weights)[12:] == ["dense_2/vars/0", "dense_10/vars/0"]
    assert [int(w[0]) for w in list(weights.values())[:12]] == list(range(12))


@pytest.mark.parametrize("build, match", [
    (lambda g: g.create_dataset("0", data=np.array([b"abc"])), "is not a plain numeric dtype"),
    (lambda g: g.create_dataset("0", data=np.ones(2, np.complex64)), "not a plain numeric"),
    (lambda g: g.create_dataset("x", data=np.ones(2)), "holds datasets named 0, 1, ...; got"),
    (lambda g: g.create_group("0"), "expected a dataset holding an array"),
    (lambda g: g.__setitem__("0", h5py.SoftLink("/vars")), "is a SoftLink"),
    (lambda g: g.__setitem__("0", h5py.ExternalLink("/etc/passwd", "/x")), "is a ExternalLink"),
    (lambda g: g.create_dataset("0", shape=(2**20, 2**10), dtype=np.float32),
     r"declares 4294967296 bytes, more than the file holds"),
    (lambda g: g.create_dataset("0", shape=(2**20, 2**10), dtype=np.float32, chunks=(64, 64),
                                compression="gzip"),
     r"dataset '/layers/dense/vars/0' needs 4294967296 bytes, more than the 67108864 left"),
    (lambda g: g.create_dataset("0", shape=(4,), dtype=np.float32, external=[("/etc/hosts", 0,
                                                                               16)]),
     "a virtual or external dataset"),
    (lambda g: g.create_dataset("0", shape=(0, 2**40, 2**40), dtype=np.float32, chunks=(1, 1, 1),
                                maxshape=(None,) * 3),      # was NumPy's "array is too big"
     r"shape \(0, 1099511627776, 1099511627776\) has more elements than a NumPy array can"),
])
def test_hostile_hdf5_files(tmp_path, build, match):
    path = keras3_file(tmp_path / "bad.weights.h5", build)
    with pytest.raises(ValueError, match=match) as e:
        io.load(path)
    assert "bad.weights.h5" in str(e.value)



@pytest.mark.parametrize("twice", ["group", "dataset", "keras2-layer"])
def test_an_object_reached_through_two_hard_links_is_refused(tmp_path, twice):
    """Before the fix: a file of 16 groups, each holding two hard links to the next, read 65,536
    paths (40 s for 23 KB; 40 groups would take years), one key per path."""
    path = tmp_path / "links.weights.h5"
    with h5py.File(path, "w") as f:
        if twice == "keras2-layer":
            f.attrs["layer_names"] = [b"dense", b"dense"]
            f.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
            f["dense"].create_dataset("kernel:0", data=np.ones(2))
        else:
            chain = [f.create_group("layers")] + [f.create_group(f"g{i}") for i in range(8)]
            chain[-1].create_group("vars").create_dataset("0", data=np.ones(2))
            if twice == "dataset":
                chain[-1]["vars"]["1"] = chain[-1]["vars"]["0"]
            for parent, child in itertools.pairwise(chain):
                parent["a"] = child
                if twice == "group":
                    parent["b"] = child
    with pytest.raises(ValueError, match=r"links\.weights\.h5: /\S+ is reached twice, through "
                                         r"two hard links"):
        io.load(path)

@pytest.mark.parametrize("signature", [b"HEAP", b"TREE", b"SNOD"])
def test_damaged_hdf5_structures_are_a_value_error(tmp_path, signature):
    path = keras3_file(tmp_path / "w.weights.h5", lambda g: g.create_dataset("0", data=np.ones(4)))
    path.write_bytes(path.read_bytes().replace(signature, b"XXXX"))   # h5py opens, then fails
    with pytest.raises(ValueError, match=r"w\.weights\.h5: not a readable HDF5 file \("):
        io.load(path)


def test_member_names_must_be_text(tmp_path):
    with h5py.File(tmp_path / "n.weights.h5", "w") as f:
        f.create_group("layers").create_group(b"\xff\xfe")
    with pytest.raises(ValueError, match="/layers: member names must be UTF-8 text"):
        io.load(tmp_path / "n.weights.h5")


def test_datasets_outside_vars_and_unknown_layouts(tmp_path):
    with h5py.File(tmp_path / "a.weights.h5", "w") as f:
        f.create_dataset("layers/dense/kernel", data=np.ones(2))
    with pytest.raises(ValueError, match="expected a group of layers"):
        io.load(tmp_path / "a.weights.h5")
    with h5py.File(tmp_path / "b.h5", "w") as f:
        f.create_dataset("data", data=np.ones(2))
    with pytest.raises(ValueError, match="an HDF5 file that is not a Keras weights file"):
        io.load(tmp_path / "b.h5")
    with h5py.File(tmp_path / "c.h5", "w") as f:
        f.attrs["layer_names"] = [b"dense"]
        f.create_group("dense").attrs["weight_names"] = [b"kernel:0"]
    with pytest.raises(ValueError, match="/dense/kernel:0 is listed but missing"):
        io.load(tmp_path / "c.h5")
    with h5py.File(tmp_path / "d.h5", "w") as f:
        f.attrs["layer_names"] = [1, 2]
    with pytest.raises(ValueError, match="attribute 'layer_names' must list names"):
        io.load(tmp_path / "d.h5")


def keras_zip(path, config=b'{"class_name": "Functional"}', weights=None, **members):
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("config.json", config)
        zf.writestr("metadata.json", b"{}")
        zf.writestr("model.weights.h5", weights if weights is not None else b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_broken_keras_archives(tmp_path):
    h5 = keras3_file(tmp_path / "in.h5", lambda g: g.create_dataset("0", data=np.ones(2)))
    good = keras_zip(tmp_path / "good.keras", weights=h5.read_bytes())
    assert io.load_keras(good)[1] == {"class_name": "Functional"}
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        io.load_keras(keras_zip(tmp_path / "a.keras", config=b"{nope", weights=h5.read_bytes()))
    with pytest.raises(ValueError, match=r"config\.json must hold a JSON object; got list"):
        io.load_keras(keras_zip(tmp_path / "b.keras", config=b"[]", weights=h5.read_bytes()))
    with pytest.raises(ValueError, match=r"c\.keras: not a readable HDF5 file"):
        io.load(keras_zip(tmp_path / "c.keras", weights=b"not hdf5"))


def test_keras_name_that_is_not_a_zip(tmp_path):
    (tmp_path / "m.keras").write_bytes(b"\x00" * 64)
    with pytest.raises(ValueError, match=r"m.keras: named like a Keras 3 .keras archive \(.keras\)"
                                         r" but holds none of the formats"):
        io.load(tmp_path / "m.keras")
    h5 = keras3_file(tmp_path / "w.keras", lambda g: None)
    with pytest.raises(ValueError, match=r"named like a Keras 3 \.keras archive .* holds an HDF5"):
        io.load(h5)
    np.savez(tmp_path / "n.npz", a=np.ones(1))
    with pytest.raises(ValueError, match=r"not a Keras file: it holds a NumPy \.npz archive"):
        io.load_keras(tmp_path / "n.npz")


def test_inflated_weights_member_is_charged(tmp_path):
    h5 = keras3_file(tmp_path / "in.h5", lambda g: g.create_dataset("0", data=np.zeros(2**16)))
    path = tmp_path / "z.keras"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("config.json", b"{}")
        zf.writestr("model.weights.h5", h5.read_bytes())
    assert io.load(path)["dense/vars/0"].shape == (2**16,)
    with pytest.raises(ValueError, match=r"inflating zip member 'model\.weights\.h5' needs"):
        io.load(path, max_bytes=2**16)


def test_config_in_a_legacy_file_must_be_json(tmp_path):
    write_keras2_weights(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as f:
        f.attrs["model_config"] = "not json"
    with pytest.raises(ValueError, match="the model_config attribute is not valid JSON"):
        io.load_keras(tmp_path / "w.h5")
    with h5py.File(tmp_path / "w.h5", "a") as f:
        f.attrs["model_config"] = json.dumps({"class_name": "Sequential"})
    assert io.load_keras(tmp_path / "w.h5")[1] == {"class_name": "Sequential"}
