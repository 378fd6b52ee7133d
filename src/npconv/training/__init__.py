"""Training on top of npconv.nn, in four modules by responsibility:

- `npconv.training.data`: seeds (`seed_streams`), the data splits of the `npconv` commands
  (`load_data`, `DataSplits`), batch order (`batch_indices`), augmentation (`random_shift`) and
  images read for prediction (`read_images`, `prepare_images`, `out_of_range`);
- `npconv.training.builders`: the default digits CNN (`digits_cnn`) and `make_optimizer`;
- `npconv.training.loop`: `fit`, the epoch loop it shares with `npconv.distributed.fit`
  (`run_epochs`, `train_step`), `evaluate`, `predict_logits`, `predict_proba`;
- `npconv.training.report`: `summary` and `plot_history`.

Everything is importable from `npconv.training` itself. The command-line modules
(`npconv.commands`) only parse, call these functions and print, so everything they compute can
be used, and is tested, from Python. tqdm and matplotlib are optional: the loop reports progress
through callbacks, and only `plot_history` imports matplotlib.
"""

from npconv.training.builders import digits_cnn, make_optimizer
from npconv.training.data import (
    DataSplits,
    batch_indices,
    load_data,
    out_of_range,
    prepare_images,
    random_shift,
    read_images,
    seed_streams,
)
from npconv.training.loop import (
    History,
    Step,
    check_fit_args,
    check_labelled,
    cosine_lr,
    evaluate,
    fit,
    predict_logits,
    predict_proba,
    run_epochs,
    train_step,
)
from npconv.training.report import plot_history, summary

__all__ = [
    "DataSplits",
    "History",
    "Step",
    "batch_indices",
    "check_fit_args",
    "check_labelled",
    "cosine_lr",
    "digits_cnn",
    "evaluate",
    "fit",
    "load_data",
    "make_optimizer",
    "out_of_range",
    "plot_history",
    "predict_logits",
    "predict_proba",
    "prepare_images",
    "random_shift",
    "read_images",
    "run_epochs",
    "seed_streams",
    "summary",
    "train_step",
]
