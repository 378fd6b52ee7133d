"""A PyTorch ResNet-18 into npconv and back: load, compare, replace the head, fine-tune, save.

Run it from the repository root:

    python examples/resnet18_finetune.py                  # 1-2 minutes on 2 cores
    python examples/resnet18_finetune.py --epochs 3 --dir runs/resnet18

What it does:

1. Weights from PyTorch. With torch installed, it builds a ResNet-18 in plain torch with
   torchvision's module names (torchvision itself is not needed, and nothing is downloaded, so
   the weights are torch's random initialization) and saves its state_dict with torch.save:
   DIR/resnet18.pth, the kind of file a user brings. Without torch it writes an npconv model's
   state_dict as DIR/resnet18.safetensors instead and skips every comparison with PyTorch.
2. Into npconv: `npconv.io.load` reads the file (a restricted unpickler: nothing in it runs)
   and `model.load_state_dict` takes it by name, converting PyTorch's OIHW kernels to
   npconv's channels_last layout.
3. Same predictions: the logits of a few images, npconv against PyTorch.
4. New head, fine-tuning: `model.fc = nn.Linear(512, 10)`, then `npconv.training.fit` on the
   digits that ship with npconv, upsampled from 8x8 to 32x32 and repeated on 3 channels; the
   held-out accuracy is printed.
5. Back to PyTorch: `npconv.io.save(DIR/finetuned.safetensors, model.state_dict())`; with
   torch, the file is loaded into the torch network (new head included) and its outputs are
   compared with npconv's again.

Without `--dir` the files go to a temporary directory that is removed at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from npconv import datasets, io, models, nn, training

try:
    import torch
except ImportError:
    torch = None


def torch_resnet18(num_classes: int, width: int):
    """torchvision's ResNet-18 structure in plain torch (the tests' reference network)."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from torch_reference import reference

    return reference(torch).resnet18(num_classes, width=width)


def digits_32(seed: int):
    """The built-in digits as (N, 32, 32, 3) float32 in [0, 1], split 80 / 20."""
    x, y = datasets.load_digits()                                  # (1797, 8, 8, 1), (1797,)
    x = np.repeat(np.repeat(x, 4, axis=1), 4, axis=2)              # (N, 32, 32, 1)
    x = np.repeat(x, 3, axis=3).astype(np.float32)                 # (N, 32, 32, 3)
    order = np.random.default_rng(seed).permutation(len(y))
    cut = int(0.8 * len(y))
    return (x[order[:cut]], y[order[:cut]]), (x[order[cut:]], y[order[cut:]])


def bring_weights(folder: Path, width: int, seed: int):
    """Step 1: the file a user brings (a .pth from torch, else a .safetensors); and the torch
    network that wrote it (None without torch)."""
    if torch is None:
        path = folder / "resnet18.safetensors"
        io.save(path, models.resnet18(width=width, rng=np.random.default_rng(seed)).state_dict())
        return path, None
    torch.manual_seed(seed)
    net = torch_resnet18(1000, width).eval()
    path = folder / "resnet18.pth"
    torch.save(net.state_dict(), path)
    return path, net


def compare(model, net, x, what: str) -> None:
    """npconv's and PyTorch's logits for the (N, H, W, C) images x, in evaluation mode."""
    if net is None:
        print(f"{what}: PyTorch not installed, comparison skipped")
        return
    with torch.no_grad():
        ref = net.eval()(torch.from_numpy(np.moveaxis(x, -1, 1).copy())).numpy()
    ours = model.forward(x)
    err = np.abs(ours - ref).max() / np.abs(ref).max()
    print(f"{what}: max |npconv - PyTorch| / max |PyTorch| = {err:.1e} over {ours.size} logits")


def run(folder: Path, epochs: int, width: int, seed: int, limit: int | None) -> float:
    path, net = bring_weights(folder, width, seed)
    model = models.resnet18(width=width, rng=np.random.default_rng(seed))
    model.load_state_dict(io.load(path))                          # step 2
    print(f"loaded {path.name}: {len(model.state_dict())} arrays into {type(model).__name__}")
    (x, y), (x_test, y_test) = digits_32(seed)
    if limit is not None:
        x, y, x_test, y_test = x[:limit], y[:limit], x_test[:limit], y_test[:limit]
    compare(model, net, x_test[:8], "same weights")               # step 3

    model.fc = nn.Linear(model.fc.in_features, 10, rng=np.random.default_rng(seed))  # step 4
    start = time.perf_counter()
    training.fit(model, x, y, optimizer=nn.Adam(lr=1e-3), epochs=epochs, batch_size=32,
                 rng=np.random.default_rng(seed),
                 on_epoch=lambda h: print(f"epoch {h.epoch[-1]}: loss {h.loss[-1]:.3f}, "
                                          f"accuracy {h.accuracy[-1]:.3f}"))
    loss, accuracy = training.evaluate(model, x_test, y_test)
    print(f"fine-tuned in {time.perf_counter() - start:.0f} s; held-out accuracy "
          f"{accuracy:.3f} (loss {loss:.3f}) on {len(y_test)} images")

    out = io.save(folder / "finetuned.safetensors", model.state_dict())   # step 5
    print(f"wrote {out}")
    if net is not None:
        net.fc = torch.nn.Linear(model.fc.in_features, 10)
        net.load_state_dict({k: torch.from_numpy(v) for k, v in io.load(out).items()})
    compare(model.eval(), net, x_test[:8], "back in PyTorch")
    return accuracy


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dir", default=None, help="where the files go (a temp dir if unset)")
    parser.add_argument("--epochs", type=int, default=1, help="fine-tuning epochs (1)")
    parser.add_argument("--width", type=int, default=64,
                        help="ResNet width (64: the real ResNet-18; smaller for a quick look)")
    parser.add_argument("--limit", type=int, default=None,
                        help="use only this many training and test images")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        folder = Path(args.dir) if args.dir else Path(stack.enter_context(
            tempfile.TemporaryDirectory()))
        folder.mkdir(parents=True, exist_ok=True)
        run(folder, args.epochs, args.width, args.seed, args.limit)


if __name__ == "__main__":
    main()
