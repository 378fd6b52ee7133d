"""`npconv predict`: the class and its probability for each image of a file, with a saved
model; printed as CSV, or written to --output (only once every prediction is made).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from npconv.commands import DEFAULT_MODEL, FAILURE, check_writable_dir, fail, positive_int, warn


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGES",
                        help="images as .npy, .npz (key 'x') or IDX: (N, H, W[, C]) or one "
                             "image; integer pixels are scaled like the training data")
    parser.add_argument("--model", metavar="PATH", default=DEFAULT_MODEL,
                        help=f"model file written by `npconv train` ({DEFAULT_MODEL})")
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


def _inputs(args):
    """(model, images, metadata): everything checked before predicting."""
    from npconv import nn, training

    if args.output is not None:
        check_output(Path(args.output))
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
        warning = training.out_of_range(x, *meta.get("pixel_range", (0.0, 1.0)))
        if warning is not None:
            warn("predict", f"{args.images}: {warning}; integer pixels are divided by "
                            f"{float(meta.get('pixel_max', 1.0)):g}, float pixels are taken "
                            f"as already scaled")
        proba = training.predict_proba(model, x, batch_size=args.batch_size)  # (N, K)
    except (ValueError, TypeError, OSError) as e:
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
