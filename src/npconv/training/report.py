"""Reporting: a model summary table and the plot of a run's loss and accuracy curves.

matplotlib is optional: only `plot_history` imports it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from npconv.nn.layers import Layer, Sequential
from npconv.training.loop import History

__all__ = ["plot_history", "summary"]


def summary(model: Layer, input_shape: Sequence[int]) -> str:
    """A table of the model's layers, output shapes and parameter counts, for an input of
    shape (N, *input_shape).

    >>> from npconv import nn
    >>> print(summary(nn.Sequential(nn.Flatten(), nn.Linear(4, 2)), (2, 2)))
    layer                                    output            params
    Flatten                                  (N, 4)                 0
    Linear [weight (4, 2), bias (2,)]        (N, 2)                10
    total                                                          10
    """
    x = np.zeros((1, *input_shape), dtype=np.float32)              # (1, *input_shape)
    layers = list(model) if isinstance(model, Sequential) else [model]
    rows, total = [("layer", "output", "params")], 0
    for layer in layers:
        x = layer.forward(x, training=False)
        shapes = ", ".join(f"{k} {v.shape}" for k, v in layer.params.items())
        count = sum(v.size for v in layer.params.values())
        total += count
        name = f"{type(layer).__name__}" + (f" [{shapes}]" if shapes else "")
        rows.append((name, "(N, " + ", ".join(map(str, x.shape[1:])) + ")", str(count)))
    rows.append(("total", "", str(total)))
    return "\n".join(f"{a:<40} {b:<16} {c:>7}" for a, b, c in rows)


def plot_history(history: History, path: str | os.PathLike) -> Path:
    """Write a PNG of the loss and accuracy curves (train and validation) to `path`.

    Needs matplotlib (ImportError otherwise); uses its Agg canvas directly, so no GUI backend
    and no global pyplot state are involved.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(9, 3.5), layout="constrained")
    FigureCanvasAgg(fig)
    for ax, key in zip(fig.subplots(1, 2), ("loss", "accuracy")):
        ax.plot(history.epoch, getattr(history, key), marker="o", label="train")
        ax.plot(history.epoch, getattr(history, f"val_{key}"), marker="o", label="validation")
        ax.set(xlabel="epoch", title=key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=100)
    return Path(path)
