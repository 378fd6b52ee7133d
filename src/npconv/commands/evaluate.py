"""`npconv evaluate`: the loss and accuracy of a saved model on the test split it was trained
for (the held-out digits, rebuilt from the seed saved in the model) or on MNIST-format data.
"""

from __future__ import annotations

import argparse

from npconv.commands import DEFAULT_MODEL, fail, positive_int


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", metavar="PATH", default=DEFAULT_MODEL,
                        help=f"model file written by `npconv train` ({DEFAULT_MODEL})")
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="MNIST-format data to evaluate on, its test split (default: the "
                             "data the model was trained on, held-out split)")
    parser.add_argument("--batch-size", type=positive_int, default=512,
                        help="images per pass (512)")


def _inputs(args):
    """(model, data, test images): everything checked before evaluating."""
    from npconv import nn, training

    model = nn.load(args.model)
    meta = nn.load_metadata(args.model)
    data_path = args.data if args.data is not None else meta.get("data")
    split_rng, _, _ = training.seed_streams(int(meta.get("seed", 0)))
    data = training.load_data(data_path, rng=split_rng,
                              test_fraction=float(meta.get("test_fraction", 0.2)),
                              val_fraction=float(meta.get("val_fraction", 0.1)))
    try:                                           # the model's input shape, as predict checks it
        x = training.prepare_images(data.x_test, meta.get("input_shape", (8, 8, 1)), 1.0)
    except ValueError as e:
        raise ValueError(f"{data.name}: {e}") from None
    training.check_labelled(model, x, data.y_test)
    return model, data, x


def run(args: argparse.Namespace) -> int:
    from npconv import training

    try:
        model, data, x = _inputs(args)
    except (ValueError, TypeError, OSError) as e:
        return fail("evaluate", e)
    loss, accuracy = training.evaluate(model, x, data.y_test, batch_size=args.batch_size)
    print(f"model: {args.model}")
    print(f"data: {data.name}, {len(data.y_test)} test images")
    print(f"test loss: {loss:.4f}")
    print(f"test accuracy: {accuracy:.4f}")
    return 0
