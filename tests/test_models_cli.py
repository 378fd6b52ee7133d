"""`npconv predict --arch NAME --weights FILE`, `npconv.models.from_state_dict` (a builder
sized by the weights' shapes) and `models.prepare_images`."""

import numpy as np
import pytest
from torch_reference import reference

from npconv import io, models
from npconv.cli import main

R = np.random.default_rng


@pytest.mark.parametrize("arch, kw", [
    ("resnet18", dict(num_classes=5, in_channels=1, width=8)),
    ("resnet50", dict(num_classes=3, in_channels=3, width=4)),
    ("vgg11", dict(num_classes=4, in_channels=2, width=2, hidden=6, pool_size=3,
                   batch_norm=True)),
    ("vgg16", dict(num_classes=4, in_channels=3, width=2, hidden=6, pool_size=1,
                   batch_norm=False)),
    ("unet", dict(num_classes=3, in_channels=2, width=4, depth=3, bilinear=False)),
])
def test_sizes_are_read_off_the_state_dict(arch, kw):
    state = models.BUILDERS[arch](**kw, rng=R(0)).state_dict()
    assert models.sizes(arch, state) == kw
    again = models.from_state_dict(arch, state)
    assert all(np.array_equal(again.state_dict()[k], v) for k, v in state.items())


def test_from_state_dict_errors():
    state = models.resnet18(num_classes=5, width=4).state_dict()
    with pytest.raises(ValueError, match=r"`arch` must be one of .*got 'resnet19'"):
        models.from_state_dict("resnet19", state)
    with pytest.raises(ValueError, match=r"not a vgg11 state_dict: it has no 'features.0.weight'"):
        models.from_state_dict("vgg11", state)
    with pytest.raises(ValueError, match=r"missing keys \(96\): layer1.2.conv1.weight, "):
        models.from_state_dict("resnet34", state)                  # 2-2-2-2 is not 3-4-6-3



def test_a_small_file_declaring_a_huge_model_is_refused_before_building_it(tmp_path, capsys):
    """Before the fix: the builder ran at the sizes the shapes declared, then load_state_dict
    found the keys missing: 144 bytes declaring a 512-wide stem cost 34 s and 7 GB."""
    import tracemalloc

    tiny = {"conv1.weight": np.zeros((128, 3, 1, 1), np.float32),
            "fc.weight": np.zeros((5, 1024), np.float32)}
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=r"does not fit ResNet:\n  missing keys \(120\)"):
            models.from_state_dict("resnet18", tiny)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20                                     # the real model: 180 MB
    path = io.save(tmp_path / "tiny.safetensors", tiny)
    assert main(["predict", "--arch", "resnet18", "--weights", str(path), "x.npy"]) == 2
    assert "missing keys (120)" in capsys.readouterr().err


@pytest.mark.parametrize("arch, key, shape", [
    ("resnet18", "conv1.weight", (8, 3)),
    ("vgg11", "features.0.weight", (0, 3, 3, 3)),            # was a ZeroDivisionError
])
def test_sizes_need_arrays_of_the_right_rank(arch, key, shape):
    state = {key: np.zeros(shape, np.float32)}
    with pytest.raises(ValueError, match=rf"not a {arch} state_dict: '{key}' has shape "
                                         rf"\({shape[0]}, 3.*\); expected 4 non-zero sizes"):
        models.from_state_dict(arch, state)

def test_prepare_images():
    x = models.prepare_images(np.full((2, 5, 6, 3), 255, np.uint8), 3, mean=(0.5, 0.5, 0.5),
                              std=(0.25,))
    assert x.shape == (2, 5, 6, 3) and x.dtype == np.float32 and np.all(x == 2.0)
    assert models.prepare_images(np.zeros((5, 6, 3), np.float32), 3).shape == (1, 5, 6, 3)
    assert models.prepare_images(np.zeros((4, 5, 6), np.uint8), 1).shape == (4, 5, 6, 1)
    with pytest.raises(ValueError, match="`mean` needs 1 or 3 values"):
        models.prepare_images(np.zeros((1, 2, 2, 3)), 3, mean=(0.1, 0.2))
    with pytest.raises(ValueError, match="`std` must be > 0"):
        models.prepare_images(np.zeros((1, 2, 2, 3)), 3, std=(0.0,))
    with pytest.raises(ValueError, match=r"images must have shape \(N, 2, 2, 3\)"):
        models.prepare_images(np.zeros((1, 2, 2, 1)), 3)
    with pytest.raises(ValueError, match=r"images must be \(N, H, W, C\)"):
        models.prepare_images(np.zeros((2, 3)), 3)


@pytest.fixture
def resnet_files(tmp_path):
    """(weights path, images path, the model, the images): a small ResNet-18's safetensors
    and four uint8 images."""
    model = models.resnet18(num_classes=6, width=4, rng=R(0))
    weights = io.save(tmp_path / "r.safetensors", model.state_dict())
    images = R(1).integers(0, 256, (4, 40, 36, 3)).astype(np.uint8)
    np.save(tmp_path / "x.npy", images)
    return weights, tmp_path / "x.npy", model, images


def classes_printed(out: str) -> list:
    rows = out.strip().splitlines()
    assert rows[0] == "index,class,probability"
    return [int(r.split(",")[1]) for r in rows[1:]]


def test_predict_with_an_architecture(resnet_files, capsys):
    weights, images_path, model, images = resnet_files
    mean, std = "0.485,0.456,0.406", "0.229,0.224,0.225"
    assert main(["predict", "--arch", "resnet18", "--weights", str(weights), str(images_path),
                 "--mean", mean, "--std", std]) == 0
    x = models.prepare_images(images, 3, mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225))
    assert classes_printed(capsys.readouterr().out) == \
        model.eval().forward(x).argmax(axis=1).tolist()



def test_predict_with_an_npconv_model_file_as_weights(resnet_files, tmp_path, capsys):
    """Before the fix: io.load gave the file's arrays in npconv's layouts, and --arch sized a
    ResNet of width 7 from the stem's (7, 7, 3, 4) kernel: a 100-line mismatch error."""
    from npconv import nn

    _, images_path, model, images = resnet_files
    path = nn.save(model, tmp_path / "model.npz")
    assert main(["predict", "--arch", "resnet18", "--weights", str(path), str(images_path)]) == 0
    x = models.prepare_images(images, 3)
    assert classes_printed(capsys.readouterr().out) == \
        model.eval().forward(x).argmax(axis=1).tolist()

def test_predict_with_pytorch_weights(torch, tmp_path, capsys):
    """A .pth written by torch.save: the CLI's classes are PyTorch's."""
    torch.manual_seed(0)
    net = reference(torch).resnet18(7, width=4).eval()
    torch.save(net.state_dict(), tmp_path / "r.pth")
    images = R(2).standard_normal((5, 32, 32, 3)).astype(np.float32)
    np.save(tmp_path / "x.npy", images)
    assert main(["predict", "--arch", "resnet18", "--weights", str(tmp_path / "r.pth"),
                 str(tmp_path / "x.npy")]) == 0
    with torch.no_grad():
        ref = net(torch.from_numpy(np.moveaxis(images, -1, 1).copy())).numpy()
    assert classes_printed(capsys.readouterr().out) == ref.argmax(axis=1).tolist()


@pytest.mark.parametrize("extra, message", [
    (["--arch", "resnet18"], "--arch resnet18 needs --weights FILE"),
    (["--weights", "w.safetensors"], "--weights need --arch"),
    (["--mean", "0.5"], "--mean need --arch"),
    (["--arch", "resnet18", "--weights", "{w}", "--model", "m.npz"], "not both"),
    (["--arch", "resnet18", "--weights", "{w}", "--pixel-max", "0"], "--pixel-max must be > 0"),
    (["--arch", "vgg11", "--weights", "{w}"], "not a vgg11 state_dict"),
    (["--arch", "resnet34", "--weights", "{w}"], "missing keys"),
    (["--arch", "resnet18", "--weights", "{w}", "--mean", "1,2"], "`mean` needs 1 or 3"),
    (["--arch", "resnet18", "--weights", "{x}"], "holds none of the formats npconv reads"),
])
def test_predict_arch_errors_exit_2(resnet_files, capsys, extra, message):
    weights, images_path, _, _ = resnet_files
    argv = [a.format(w=weights, x=images_path) for a in extra]
    assert main(["predict", *argv, str(images_path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("npconv predict: error:") and message in err, err



def test_predict_with_keras_weights_and_no_h5py_says_which_extra(tmp_path, capsys,
                                                                   monkeypatch):
    """Before the fix: the ImportError's traceback."""
    import sys

    (tmp_path / "w.weights.h5").write_bytes(b"\x89HDF\r\n\x1a\n" + bytes(100))
    monkeypatch.setitem(sys.modules, "h5py", None)
    assert main(["predict", "--arch", "resnet18", "--weights", str(tmp_path / "w.weights.h5"),
                 "x.npy"]) == 2
    assert "reading Keras files needs h5py: pip install 'npconv[keras]'" in \
        capsys.readouterr().err

def test_predict_arch_flag_errors(capsys):
    with pytest.raises(SystemExit) as info:
        main(["predict", "--arch", "alexnet", "--weights", "w", "x.npy"])
    assert info.value.code == 2 and "invalid choice: 'alexnet'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["predict", "--arch", "resnet18", "--mean", "a,b", "x.npy"])
    assert "must be numbers separated by commas" in capsys.readouterr().err
