"""npconv.models against the same networks in PyTorch (tests/torch_reference.py, torchvision's
module names): state_dict keys, outputs in evaluation and training mode, running statistics,
and the gradients with respect to the input and every parameter, in float64 (1e-10 relative)
and float32 (1e-4), both layouts; weights moved both ways by name."""

import numpy as np
import pytest
from helpers import rel_err
from torch_reference import reference

from npconv import models

R = np.random.default_rng

# builder -> (small-size keywords, input (N, C, H, W)); the torch reference takes the same
# keywords (its own names for them)
CASES = {
    "resnet18": (dict(width=4), (2, 3, 36, 33)),
    "resnet50": (dict(width=2), (2, 2, 36, 33)),
    "vgg11": (dict(width=2, hidden=12, pool_size=2, dropout=0.0), (2, 3, 32, 32)),
    "unet": (dict(width=2, depth=2), (2, 3, 13, 14)),
    "unet_bilinear": (dict(width=4, depth=2, bilinear=True), (2, 3, 13, 14)),
    "mobilenet_v2": (dict(width_mult=0.25, dropout=0.0), (4, 3, 64, 56)),
}
TORCH_KW = {"width": "width", "hidden": "hidden", "pool_size": "pool_size", "depth": "depth",
            "dropout": "dropout", "bilinear": "bilinear", "width_mult": "width_mult"}


def builder(name: str) -> str:
    """The builder of a case ("unet_bilinear" is unet(bilinear=True))."""
    return name.split("_bilinear")[0]


def build(name, fmt="channels_last", dtype="float64", in_channels=None):
    """(npconv model, its keywords, x (N, C, H, W)) with batch-norm statistics and affine
    parameters drawn away from 1 and 0, so evaluation mode is not an identity."""
    kw, shape = CASES[name]
    model = getattr(models, builder(name))(num_classes=5, in_channels=shape[1],
                                           data_format=fmt, dtype=dtype, rng=R(0), **kw)
    rng = R(1)
    state = {}
    for key, v in model.state_dict().items():
        if key.endswith(("running_var", ".weight")) and v.ndim == 1:
            state[key] = rng.uniform(0.5, 1.5, v.shape)
        elif key.endswith(("running_mean", ".bias")) and v.ndim == 1:
            state[key] = rng.uniform(-0.3, 0.3, v.shape)
    model.load_state_dict(state, strict=False)
    return model, kw, R(2).standard_normal(shape)


def torch_twin(torch, name, model, kw, in_channels, dtype):
    """The reference network with the npconv model's weights, in torch's dtype."""
    tkw = {TORCH_KW[k]: v for k, v in kw.items()}
    net = getattr(reference(torch), builder(name))(5, in_channels=in_channels, **tkw)
    net = net.double() if dtype == "float64" else net.float()
    state = {k: torch.from_numpy(np.array(v)) for k, v in model.state_dict().items()}
    net.load_state_dict(state, strict=True)
    return net


def to_fmt(x, fmt):
    """(N, C, H, W) data in the model's layout."""
    return np.ascontiguousarray(np.moveaxis(x, 1, -1)) if fmt == "channels_last" else x


def from_fmt(y, fmt):
    """A model output in PyTorch's layout ((N, K) unchanged)."""
    return np.moveaxis(y, -1, 1) if fmt == "channels_last" and y.ndim > 2 else y


def passes(torch, name, fmt, dtype):
    """npconv's and torch's outputs and gradients for one case in `dtype`: {"eval", "folded",
    "train", "x" (the input gradient), parameter names (gradients), "state" (running stats after
    the training pass)} -> (npconv's, torch's), all in PyTorch's layouts."""
    model, kw, x = build(name, fmt, dtype)
    x = x.astype(dtype)
    net = torch_twin(torch, name, model, kw, x.shape[1], dtype)
    xt = torch.tensor(x, requires_grad=True)
    out = {"eval": (from_fmt(model.forward(to_fmt(x, fmt)), fmt),
                    net.eval()(xt).detach().numpy())}
    out["folded"] = (from_fmt(model.eval().forward(to_fmt(x, fmt)), fmt), out["eval"][1])
    y = model.train().forward(to_fmt(x, fmt), training=True)
    yt = net.train()(xt)
    out["train"] = (from_fmt(y, fmt), yt.detach().numpy())
    dy = R(3).standard_normal(yt.shape).astype(dtype)
    dx = model.backward(to_fmt(dy, fmt) if dy.ndim > 2 else dy)
    yt.backward(torch.from_numpy(dy))
    out["x"] = (from_fmt(dx, fmt), xt.grad.numpy())
    grads = model.named_grads()
    assert sorted(grads) == sorted(k for k, _ in net.named_parameters())
    out.update({k: (grads[k], p.grad.numpy()) for k, p in net.named_parameters()})
    state = model.state_dict()
    out["state"] = (np.concatenate([np.ravel(state[k]) for k in net.state_dict()]),
                    np.concatenate([v.numpy().ravel() for v in net.state_dict().values()]))
    return out


def grad_scale(out: dict) -> float:
    """A thousandth of the largest parameter gradient: the floor of the relative errors, since
    a batch norm's bias that feeds the next batch norm through a linear layer has an exactly
    zero gradient, computed as rounding noise on both sides."""
    return 1e-3 * max(np.abs(b).max() for k, (_, b) in out.items()
                      if k not in ("eval", "folded", "train", "x", "state"))


def compare(torch, name, fmt, tol=1e-10):
    """float64: everything equals torch's to `tol`."""
    out = passes(torch, name, fmt, "float64")
    floor = grad_scale(out)
    for key, (ours, theirs) in out.items():
        assert rel_err(ours, theirs, floor=floor if key not in ("x",) else 1e-300) < tol, key


@pytest.mark.parametrize("name", sorted(CASES))
def test_builder_matches_torch_float64(torch, name):
    compare(torch, name, "channels_last")


@pytest.mark.parametrize("name", ["resnet18", "unet", "mobilenet_v2"])
def test_builder_matches_torch_channels_first(torch, name):
    compare(torch, name, "channels_first")


def norm_err(a, b, floor: float = 0.0) -> float:
    """||a - b|| / max(||b||, floor), Euclidean."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), floor))


@pytest.mark.parametrize("name", ["resnet18", "vgg11", "mobilenet_v2"])
def test_builder_matches_torch_float32(torch, name):
    """float32: outputs (evaluation, folded, training) and running statistics equal torch's
    to 1e-4 (elementwise, relative). Gradients are compared with the float64 pass's, as a
    whole (Euclidean), to 1e-3: a ReLU's gradient jumps at 0, and an activation within float32
    rounding of 0 falls on either side in either library (over 16 inputs, MobileNetV2's ~10^6
    ReLU6 activations had one such element in npconv for 7 inputs and in PyTorch for 4),
    which moves the gradients by about 5e-4 while rounding alone leaves them within 1e-5."""
    out32 = passes(torch, name, "channels_last", "float32")
    truth = passes(torch, name, "channels_last", "float64")
    grads = [k for k in out32 if k not in ("eval", "folded", "train", "state", "x")]
    floor = 1e-2 * max(np.linalg.norm(truth[k][1]) for k in grads)   # exactly-zero gradients
    for key, (ours, theirs) in out32.items():
        if key in ("eval", "folded", "train", "state"):
            assert rel_err(ours, theirs) < 1e-4, key
        else:
            assert norm_err(ours, truth[key][1], 0.0 if key == "x" else floor) < 1e-3, key


def test_torch_weights_load_by_name(torch):
    """A state_dict made in torch (its own initialization) loads into the npconv model and
    gives torch's outputs; missing and unexpected keys name themselves."""
    net = reference(torch).resnet18(7, in_channels=2, width=4).double().eval()
    model = models.resnet18(num_classes=7, in_channels=2, width=4, dtype="float64")
    state = {k: v.numpy() for k, v in net.state_dict().items()}
    assert list(state) == list(model.state_dict())                 # the same keys, in order
    model.load_state_dict(state)
    x = R(4).standard_normal((3, 2, 24, 24))
    y_ref = net(torch.from_numpy(x)).detach().numpy()
    assert rel_err(model.forward(to_fmt(x, "channels_last")), y_ref) < 1e-10


def train_step_grads(torch, dtype, x, dy):
    """(npconv's, torch's) input and parameter gradients of one training-mode pass of a
    full-size ResNet-18 with the same weights, in `dtype`."""
    model = models.resnet18(rng=R(0), dtype=dtype)
    net = reference(torch).resnet18(1000)
    net = net.double() if dtype == "float64" else net.float()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         model.state_dict().items()})
    xt = torch.tensor(x.astype(dtype), requires_grad=True)
    y = model.forward(to_fmt(x.astype(dtype), "channels_last"), training=True)
    yt = net.train()(xt)
    assert rel_err(y, yt.detach().numpy()) < (1e-10 if dtype == "float64" else 1e-4)
    dx = model.backward(dy.astype(dtype))
    yt.backward(torch.from_numpy(dy.astype(dtype)))
    ours = dict(model.named_grads(), x=from_fmt(dx, "channels_last"))
    theirs = dict({k: p.grad.numpy() for k, p in net.named_parameters()}, x=xt.grad.numpy())
    return ours, theirs


@pytest.mark.slow
def test_resnet18_224_matches_torch(torch):
    """Full-size ResNet-18 at 224x224, batch 2: evaluation outputs in float32 (folded) to
    1e-4, a training pass's outputs and every gradient in float64 to 1e-10. In float32 the
    training pass's gradients are ill-conditioned here (batch statistics of 2 images through
    20 batch norms amplify rounding about a thousandfold, for PyTorch as much: its own float32
    gradients are 1e-3 to 1e-2 away from float64's), so there npconv's float32 error must
    stay within a small factor of PyTorch's, both measured against float64."""
    x = R(1).standard_normal((2, 3, 224, 224))
    dy = R(2).standard_normal((2, 1000))
    model = models.resnet18(rng=R(0))
    net = reference(torch).resnet18(1000).float().eval()
    net.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in
                         model.state_dict().items()})
    x32 = x.astype(np.float32)
    with torch.no_grad():
        ref = net(torch.from_numpy(x32)).numpy()
    assert rel_err(model.eval().forward(to_fmt(x32, "channels_last")), ref) < 1e-4
    ours, theirs = train_step_grads(torch, "float64", x, dy)
    for key, g in theirs.items():
        assert rel_err(ours[key], g) < 1e-10, key
    ours32, theirs32 = train_step_grads(torch, "float32", x, dy)
    for key, g in theirs.items():
        assert rel_err(ours32[key], g) < 5 * rel_err(theirs32[key], g) + 1e-5, key


def test_finetuned_model_goes_back_to_torch_through_safetensors(torch, tmp_path):
    """Train an npconv ResNet a few steps, write its state_dict with npconv.io.save, read the
    file with the safetensors library into the torch network: the same outputs."""
    safetensors_torch = pytest.importorskip("safetensors.torch")
    from npconv import io, nn, training

    model = models.resnet18(num_classes=10, width=4, rng=R(0))
    x = R(1).standard_normal((32, 24, 24, 3)).astype(np.float32)
    y = R(2).integers(0, 10, 32)
    training.fit(model, x, y, optimizer=nn.Adam(lr=1e-2), epochs=2, batch_size=8, rng=R(3))
    path = io.save(tmp_path / "tuned.safetensors", model.state_dict())
    net = reference(torch).resnet18(10, width=4).float().eval()
    net.load_state_dict(safetensors_torch.load_file(str(path)))
    with torch.no_grad():
        ref = net(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).numpy()
    assert rel_err(model.forward(x), ref) < 1e-4


def test_example_runs(torch, tmp_path, capsys):
    """examples/resnet18_finetune.py, small: the PyTorch file in, the same logits, a fine-tuning
    epoch, the safetensors file back in PyTorch with the same logits."""
    import runpy
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "examples" / "resnet18_finetune.py"
    example = runpy.run_path(str(path))
    example["main"](["--width", "4", "--limit", "48", "--dir", str(tmp_path)])
    out = capsys.readouterr().out
    errors = [float(line.rsplit("= ", 1)[1].split()[0]) for line in out.splitlines()
              if "max |npconv - PyTorch|" in line]
    assert len(errors) == 2 and max(errors) < 1e-5, out
    assert (tmp_path / "resnet18.pth").is_file() and (tmp_path / "finetuned.safetensors").is_file()
