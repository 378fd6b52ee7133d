"""`npconv predict`: the class and its probability for each image of a file, with a saved
model; printed as CSV, or written to --output (only once every prediction is made).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from npconv.commands import DEFAULT_MODEL, fail


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("images", metavar="IMAGES",
                        help="images as .npy, .npz (key 'x') or IDX: (N, H, W[, C]) or one "
                             "image; integer pixels are scaled like the training data")
    parser.add_argument("--model", metavar="PATH", default=DEFAULT_MODEL,
                        help=f"model file written by `npconv train` ({DEFAULT_MODEL})")
    parser.add_argument("--output", metavar="CSV", default=None,
                        help="write the CSV here instead of printing it")
    parser.add_argument("--batch-size", type=int, default=512, help="images per pass (512)")


def _csv(classes, probabilities) -> str:
    rows = [f"{i},{c},{p:.4f}" for i, (c, p) in enumerate(zip(classes, probabilities))]
    return "\n".join(["index,class,probability", *rows]) + "\n"


def run(args: argparse.Namespace) -> int:
    from npconv import nn, training
    from npconv.nn.serialization import atomic_write

    try:
        model = nn.load(args.model)
        meta = nn.load_metadata(args.model)
        x = training.prepare_images(training.read_images(args.images),
                                    meta.get("input_shape", (8, 8, 1)),
                                    float(meta.get("pixel_max", 1.0)))
        proba = training.predict_proba(model, x, batch_size=args.batch_size)  # (N, K)
        text = _csv(proba.argmax(axis=1), proba.max(axis=1))
        if args.output is not None:
            atomic_write(Path(args.output), lambda f: f.write(text), mode="w")
    except (ValueError, TypeError, OSError) as e:
        return fail("predict", e)
    if args.output is None:
        sys.stdout.write(text)
    else:
        print(f"wrote {len(x)} predictions to {args.output}")
    return 0
