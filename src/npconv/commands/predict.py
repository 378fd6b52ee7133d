"""`npconv predict`: the class and its probability for each image of a file, with a saved
model, or with an architecture of npconv.models and a weights file (`--arch resnet18 --weights
resnet18.pth`: a PyTorch, safetensors or npconv file, its sizes read off its arrays); printed
as CSV, or written to --output (only once every prediction is made).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from npconv.commands import DEFAULT_MODEL, FAILURE, check_writable_dir, fail, positive_int, warn
from npconv.models import CLASSIFIERS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGES",
                        help="images as .npy, .npz (key 'x') or IDX: (N, H, W[, C]) or one "
                             "image; integer pixels are scaled like the training data")
    parser.add_argument("--model", metavar="PATH", default=None,
                        help=f"model file written by `npconv train` ({DEFAULT_MODEL})")
    parser.add_argument("--arch", default=None, choices=CLASSIFIERS,
                        help="an architecture of npconv.models instead of --model; needs "
                             "--weights; images (N, H, W, C) of any size, channels last")
    parser.add_argument("--weights", metavar="FILE", default=None,
                        help="the --arch model's state_dict: .pth/.pt (PyTorch), .safetensors "
                             "or .npz, PyTorch's names and layouts")
    parser.add_argument("--pixel-max", type=float, default=255.0,
                        help="with --arch: integer pixels are divided by this (255)")
    parser.add_argument("--mean", type=floats, default=None, metavar="M[,M...]",
                        help="with --arch: per-channel mean subtracted after scaling "
                             "(torchvision's ImageNet models: 0.485,0.456,0.406)")
    parser.add_argument("--std", type=floats, default=None, metavar="S[,S...]",
                        help="with --arch: per-channel divisor after the mean "
                             "(torchvision's: 0.229,0.224,0.225)")
    parser.add_argument("--output", metavar="CSV", default=None,
                        help="write the CSV here instead of printing it")
    parser.add_argument("--batch-size", type=positive_int, default=512,
                        help="images per pass (512)")


def _csv(classes, probabilities) -> str:
    rows = [f"{i},{c},{p:.4f}" for i, (c, p) in enumerate(zip(classes, probabilities))]
    return "\n".join(["index,class,probability", *rows]) + "\n"


def check_output(path: Path) -> None:
    """The CSV can be written at `path` (checked before any prediction is made)."""
    if path.is_dir():
        raise ValueError(f"--output {path}: is a directory; give a file name")
    check_writable_dir(path.parent, f"--output {path}: its directory")


def floats(text: str) -> tuple[float, ...]:
    """argparse type: comma-separated numbers."""
    try:
        return tuple(float(v) for v in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be numbers separated by commas; got "
                                         f"{text!r}") from None


def _check_flags(args) -> None:
    if args.arch is None:
        extra = [f for f, v in (("--weights", args.weights), ("--mean", args.mean),
                                ("--std", args.std)) if v is not None]
        if extra:
            raise ValueError(f"{', '.join(extra)} need --arch")
        return
    if args.model is not None:
        raise ValueError("give --model (a file written by npconv train) or --arch with "
                         "--weights, not both")
    if args.weights is None:
        raise ValueError(f"--arch {args.arch} needs --weights FILE (its state_dict)")
    if args.pixel_max <= 0:
        raise ValueError(f"--pixel-max must be > 0; got {args.pixel_max:g}")


def _arch_inputs(args):
    """(model, images, metadata) for --arch: the builder sized by the weights file."""
    from npconv import io, models, training

    model = models.from_state_dict(args.arch, io.load(args.weights)).eval()
    images = training.read_images(args.images)
    try:
        x = models.prepare_images(images, model.kw["in_channels"], pixel_max=args.pixel_max,
                                  mean=args.mean, std=args.std)              # (N, H, W, C)
    except (ValueError, TypeError) as e:
        raise ValueError(f"{args.images}: {e}") from None
    return model, x, {}


def _inputs(args):
    """(model, images, metadata): everything checked before predicting."""
    from npconv import nn, training

    _check_flags(args)
    if args.output is not None:
        check_output(Path(args.output))
    if args.arch is not None:
        return _arch_inputs(args)
    args.model = args.model or DEFAULT_MODEL
    model = nn.load(args.model)
    meta = nn.load_metadata(args.model)
    images = training.read_images(args.images)
    try:
        x = training.prepare_images(images, meta.get("input_shape", (8, 8, 1)),
                                    float(meta.get("pixel_max", 1.0)))
    except (ValueError, TypeError) as e:
        raise ValueError(f"{args.images}: {e}") from None
    return model, x, meta


def run(args: argparse.Namespace) -> int:
    from npconv import training
    from npconv.nn.serialization import atomic_write

    try:
        model, x, meta = _inputs(args)
        warning = None if args.arch else training.out_of_range(
            x, *meta.get("pixel_range", (0.0, 1.0)))
        if warning is not None:
            warn("predict", f"{args.images}: {warning}; integer pixels are divided by "
                            f"{float(meta.get('pixel_max', 1.0)):g}, float pixels are taken "
                            f"as already scaled")
        proba = training.predict_proba(model, x, batch_size=args.batch_size)  # (N, K)
    except (ValueError, TypeError, OSError, ImportError) as e:   # ImportError: h5py missing
        return fail("predict", e)
    text = _csv(proba.argmax(axis=1), proba.max(axis=1))
    if args.output is None:
        sys.stdout.write(text)
        return 0
    try:
        atomic_write(Path(args.output), lambda f: f.write(text), mode="w")
    except OSError as e:
        return fail("predict", ValueError(f"--output {args.output}: cannot write it "
                                          f"({e.strerror or e})"), FAILURE)
    print(f"wrote {len(x)} predictions to {args.output}")
    return 0
