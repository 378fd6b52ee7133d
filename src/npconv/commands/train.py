"""`npconv train`: train a CNN (default: the small CNN on the built-in 8x8 digits), print a
summary per epoch, save the model and a plot of the curves, and print the test accuracy last.
With --scheduler, every batch is split across the workers of a dask.distributed cluster
(`npconv.distributed.fit`); without it, dask is never imported.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from npconv.commands import (
    FAILURE,
    check_writable_dir,
    fail,
    fraction,
    int_at_least,
    number_in,
    positive_int,
)

EXTRAS_HINT = "pip install 'npconv[demo]'"
DASK_HINT = "pip install 'npconv[dask]'"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--data", metavar="PATH", default=None,
                        help="MNIST or Fashion-MNIST: a directory of IDX files (.gz or not) or "
                             "an .npz with x_train, y_train, x_test, y_test (default: the "
                             "built-in 8x8 digits)")
    parser.add_argument("--epochs", type=positive_int, default=30,
                        help="passes over the data (30)")
    parser.add_argument("--batch-size", type=positive_int, default=32,
                        help="images per step (32)")
    parser.add_argument("--lr", type=number_in(0.0, float("inf")), default=5e-3,
                        help="initial learning rate, cosine-decayed to 0 (0.005)")
    parser.add_argument("--optimizer", choices=("adam", "adamw", "sgd"), default="adam",
                        help="adam (default), adamw, or sgd with Nesterov momentum 0.9")
    parser.add_argument("--weight-decay", type=number_in(0.0, float("inf"), low_open=False),
                        default=0.0, help="weight decay (0)")
    parser.add_argument("--width", type=positive_int, default=32,
                        help="channels of the first conv layer; the second has twice (32)")
    parser.add_argument("--seed", type=int_at_least(0), default=0,
                        help="seed of the split, the initial weights and the batch order (0)")
    parser.add_argument("--test-fraction", type=fraction, default=0.2,
                        help="share of the digits held out for the test (0.2)")
    parser.add_argument("--val-fraction", type=fraction, default=0.1,
                        help="share of the training images used for validation (0.1)")
    parser.add_argument("--out", metavar="DIR", default=None,
                        help="output directory for model.npz, history.json and history.png "
                             "(default: runs/digits, or runs/<data name>)")
    parser.add_argument("--no-augment", action="store_true",
                        help="do not shift training images by up to one pixel")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--scheduler", metavar="ADDRESS", type=_scheduler, default=None,
                        help="train data-parallel on a dask.distributed cluster: a scheduler "
                             "address (tcp://host:8786), or local:N to start N worker processes "
                             f"on this machine ({DASK_HINT})")


def _scheduler(text: str) -> str:
    from npconv.distributed import check_scheduler

    try:
        return check_scheduler(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Reporter:
    """Progress bar (tqdm, when installed) and one summary line per epoch."""

    def __init__(self, epochs: int, progress: bool) -> None:
        self.epochs, self.epoch = epochs, 0
        self.bar: Any = None                   # a tqdm bar while an epoch runs
        self.tqdm: Any = None
        if progress:
            try:
                from tqdm import tqdm
                self.tqdm = tqdm
            except ImportError:
                print(f"tqdm is not installed: skipping the progress bar ({EXTRAS_HINT})")

    def on_batch(self, i: int, n: int, loss: float, accuracy: float) -> None:
        if self.tqdm is None:
            return
        if self.bar is None:
            self.bar = self.tqdm(total=n, desc=f"epoch {self.epoch + 1}/{self.epochs}",
                                 unit="batch",
                                 leave=False, file=sys.stderr)
        self.bar.set_postfix(loss=f"{loss:.4f}", acc=f"{accuracy:.4f}", refresh=False)
        self.bar.update(1)

    def on_epoch(self, history) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        r = history.row()
        self.epoch = r["epoch"]
        print(f"epoch {r['epoch']:>3}/{self.epochs}  loss {r['loss']:.4f}  acc "
              f"{r['accuracy']:.4f}  val_loss {r['val_loss']:.4f}  val_acc "
              f"{r['val_accuracy']:.4f}  {r['seconds']:.1f}s", flush=True)


def _out_dir(args, name: str) -> Path:
    return Path(args.out) if args.out else Path("runs") / Path(name).stem


def _check_out(out: Path) -> None:
    """The output directory exists (made now) and takes files; model.npz there, if any, is an
    npconv model: checked before training, so that a finished run is never lost."""
    from npconv import nn

    check_writable_dir(out, "--out", create=True)
    model = out / "model.npz"
    if model.is_dir() or (model.exists() and not nn.is_model_file(model)):
        raise ValueError(f"{model} exists and is not an npconv model file; refusing to "
                         f"overwrite it (choose another --out)")


def _setup(args):
    """Data, output paths, model and optimizer; every check that can fail before training."""
    from npconv import training

    split_rng, init_rng, order_rng = training.seed_streams(args.seed)
    data = training.load_data(args.data, rng=split_rng, test_fraction=args.test_fraction,
                              val_fraction=args.val_fraction)
    out = _out_dir(args, "digits" if args.data is None else data.name)
    _check_out(out)
    model = training.digits_cnn(rng=init_rng, input_shape=data.x_train.shape[1:],
                                n_classes=int(data.y_train.max()) + 1, width=args.width)
    optimizer = training.make_optimizer(args.optimizer, lr=args.lr,
                                        weight_decay=args.weight_decay)
    return data, out, model, optimizer, order_rng


def _save(args, out: Path, model, data, history, test_accuracy: float) -> None:
    from npconv import nn

    metadata = dict(data=None if args.data is None else str(Path(args.data).resolve()),
                    dataset=data.name, seed=args.seed, test_fraction=args.test_fraction,
                    val_fraction=args.val_fraction, input_shape=list(data.x_train.shape[1:]),
                    pixel_max=data.pixel_max, test_accuracy=test_accuracy,
                    pixel_range=[float(data.x_train.min()), float(data.x_train.max())])
    nn.save(model, out / "model.npz", metadata=metadata)
    (out / "history.json").write_text(json.dumps(history.as_dict(), indent=1))
    print(f"saved model: {out / 'model.npz'}")


def _plot(history, path: Path) -> str:
    from npconv import training

    try:
        training.plot_history(history, path)
    except ImportError:
        return f"matplotlib is not installed: skipping the plot {path} ({EXTRAS_HINT})"
    return f"saved plot: {path}"


def _fit(args, data, model, optimizer, order_rng, reporter):
    """training.fit, or distributed.fit on the cluster of --scheduler (closed afterwards)."""
    from npconv import training

    kwargs = dict(optimizer=optimizer, epochs=args.epochs, batch_size=args.batch_size,
                  rng=order_rng, validation=(data.x_val, data.y_val),
                  augment=None if args.no_augment else training.random_shift,
                  on_batch=reporter.on_batch, on_epoch=reporter.on_epoch)
    if args.scheduler is None:
        return training.fit(model, data.x_train, data.y_train, **kwargs)
    from npconv import distributed

    with distributed.connect(args.scheduler) as client:
        print(f"cluster: {len(client.nthreads())} workers, scheduler {client.scheduler.address}",
              flush=True)
        return distributed.fit(model, data.x_train, data.y_train, client=client, **kwargs,
                               seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from npconv import training

    if args.scheduler is not None:
        try:
            from npconv import distributed

            distributed.require()
        except ImportError:
            print(f"npconv train: error: --scheduler needs dask.distributed, which is not "
                  f"installed; install it with {DASK_HINT}", file=sys.stderr)
            return 2
    try:
        data, out, model, optimizer, order_rng = _setup(args)
    except (ValueError, TypeError, OSError) as e:
        return fail("train", e)
    reporter = Reporter(args.epochs, progress=not args.no_progress)
    print(f"data: {data.describe()}; seed {args.seed}")
    print(training.summary(model, data.x_train.shape[1:]))
    start = time.perf_counter()
    try:
        history = _fit(args, data, model, optimizer, order_rng, reporter)
        print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.1f}s")
        test_loss, test_accuracy = training.evaluate(model, data.x_test, data.y_test)
        _save(args, out, model, data, history, test_accuracy)
    except (ValueError, TypeError, OSError) as e:
        return fail("train", e, FAILURE)
    print(_plot(history, out / "history.png"))
    print(f"test loss: {test_loss:.4f}")
    print(f"test accuracy: {test_accuracy:.4f}")
    return 0
