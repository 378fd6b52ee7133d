"""Losses: each returns (value, grad), the mean loss as a Python float and its gradient with
respect to the prediction, in the prediction's dtype.

softmax_cross_entropy(z, labels): L = mean_n [logsumexp(z_n) - z_n[label_n]], computed from
    z - max(z) so exp never overflows; dL/dz = (softmax(z) - onehot(labels)) / N.
mse(pred, target): L = mean((pred - target)^2); dL/dpred = 2 (pred - target) / pred.size.
"""

from __future__ import annotations

import numpy as np

from npconv import _args, _backend
from npconv.nn import functional as F

__all__ = ["LOSSES", "mse", "softmax_cross_entropy"]


def check_labels(labels, n: int, n_classes: int) -> None:
    """Integer labels (N,) in [0, n_classes), else TypeError / ValueError."""
    if not _backend.is_array(labels) or not np.issubdtype(labels.dtype, np.integer):
        kind = labels.dtype if _backend.is_array(labels) else type(labels).__name__
        raise TypeError(f"`labels` must be an integer numpy array; got {kind}")
    if labels.shape != (n,):
        raise ValueError(f"`labels` must have shape ({n},), one per row of `logits`; got "
                         f"{tuple(labels.shape)}")
    if n and (labels.min() < 0 or labels.max() >= n_classes):
        bad = labels[(labels < 0) | (labels >= n_classes)]
        raise ValueError(f"`labels` must be in [0, {n_classes}) for {n_classes} classes; got "
                         f"{bad.size} out of range, e.g. {int(bad[0])}")


def softmax_cross_entropy(logits, labels):
    """Mean cross-entropy of softmax(logits) against integer class labels.

    Parameters
    ----------
    logits : ndarray, (N, K) float
    labels : ndarray, (N,) integer in [0, K)

    Returns
    -------
    value : float
    grad : ndarray, (N, K), logits' dtype

    Examples
    --------
    >>> value, grad = softmax_cross_entropy(np.array([[0.0, 0.0]]), np.array([1]))
    >>> round(value, 4), grad.tolist()                       # log 2
    (0.6931, [[0.5, -0.5]])
    >>> softmax_cross_entropy(np.array([[1000.0, -1000.0]]), np.array([0]))[0]
    0.0
    """
    _args.float_array(logits, "logits")
    if logits.ndim != 2 or logits.shape[1] < 1:
        raise ValueError(f"`logits` must have shape (N, K); got {tuple(logits.shape)}")
    n, k = logits.shape
    check_labels(labels, n, k)
    xp = _backend.namespace(logits, labels)
    rows = xp.arange(n)                                            # (N,)
    logp = F.log_softmax(logits.astype(np.float64))                # (N, K)
    value = float(-logp[rows, labels].mean()) + 0.0 if n else 0.0    # + 0.0: no -0.0
    grad = xp.exp(logp)                                            # (N, K) softmax
    grad[rows, labels] -= 1
    return value, (grad / max(n, 1)).astype(logits.dtype)


def mse(pred, target):
    """Mean squared error over every element.

    >>> value, grad = mse(np.array([1.0, 3.0]), np.array([0.0, 0.0]))
    >>> value, grad.tolist()
    (5.0, [1.0, 3.0])
    """
    _args.float_array(pred, "pred")
    _args.float_array(target, "target")
    if pred.shape != target.shape:
        raise ValueError(f"`pred` and `target` must have the same shape; got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    diff = pred.astype(np.float64) - target                        # like pred
    value = float(np.mean(diff * diff)) if diff.size else 0.0
    return value, (2 * diff / max(diff.size, 1)).astype(pred.dtype)


LOSSES = {"cross_entropy": softmax_cross_entropy, "mse": mse}
