"""Optimizers: SGD (momentum, Nesterov, weight decay), Adam and AdamW, with PyTorch's update
rules, so a step here equals a step of torch.optim for the same gradients.

`opt.step(params, grads)` updates every array of `params` in place from the array of `grads`
under the same key (a layer's or a Sequential's dicts); the optimizer's per-parameter state
(`opt.state[key]`: momentum buffer, moments, step count) is keyed alike and created on the first
step. `opt.lr` may be changed between steps (a schedule). With g the gradient and p the
parameter (lr, momentum mu, weight decay wd, betas b1 and b2):

    SGD     g += wd * p;  v = mu * v + g (v = g at the first step);  p -= lr * (g + mu * v if
            nesterov else v)   (plain p -= lr * g when mu = 0)
    Adam    g += wd * p;  m = b1 m + (1 - b1) g;  s = b2 s + (1 - b2) g^2;
            p -= lr * (m / (1 - b1^t)) / (sqrt(s / (1 - b2^t)) + eps)
    AdamW   p *= 1 - lr * wd (decoupled decay), then Adam's step without the g += wd * p
"""

from __future__ import annotations

import numpy as np

from npconv import _args
from npconv.nn.functional import real_in

__all__ = ["OPTIMIZERS", "SGD", "Adam", "AdamW", "Optimizer"]


def _positive(value, name: str) -> float:
    value = real_in(value, 0.0, np.inf, name)
    if value <= 0:
        raise ValueError(f"`{name}` must be > 0; got {value!r}")
    return value


class Optimizer:
    """Base: checks that params and grads match, then updates each key with `_update`."""

    def __init__(self, *, lr: float, weight_decay: float = 0.0) -> None:
        self.lr = _positive(lr, "lr")
        self.weight_decay = real_in(weight_decay, 0.0, np.inf, "weight_decay")
        self.state: dict[str, dict] = {}

    def step(self, params: dict, grads: dict) -> None:
        """Update every params[k] in place from grads[k]."""
        if not isinstance(params, dict) or not isinstance(grads, dict):
            raise TypeError(f"`params` and `grads` must be dicts; got {type(params).__name__} "
                            f"and {type(grads).__name__}")
        if params.keys() != grads.keys():
            raise ValueError(f"`params` and `grads` must have the same keys; got "
                             f"{sorted(params)} and {sorted(grads)}")
        for key, p in params.items():
            g = grads[key]
            _args.float_array(g, f"grads[{key!r}]")
            if g.shape != p.shape:
                raise ValueError(f"grads[{key!r}] must have the shape of params[{key!r}], "
                                 f"{tuple(p.shape)}; got {tuple(g.shape)}")
            # float16 parameters keep their state and compute their step in float32 (Adam's
            # eps = 1e-8 and small squared gradients underflow in float16)
            self._update(key, p, g.astype(_args.compute_dtype(p.dtype), copy=False))

    def _update(self, key: str, p, g) -> None:
        raise NotImplementedError


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay."""

    def __init__(self, *, lr: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay)
        self.momentum = real_in(momentum, 0.0, 1.0, "momentum")
        if not isinstance(nesterov, bool):
            raise TypeError(f"`nesterov` must be True or False; got {nesterov!r}")
        if nesterov and self.momentum == 0:
            raise ValueError("`nesterov` needs momentum > 0; got momentum=0")
        self.nesterov = nesterov

    def _update(self, key: str, p, g) -> None:
        if self.weight_decay:
            g = g + self.weight_decay * p
        if self.momentum:
            state = self.state.setdefault(key, {})
            if "v" not in state:
                state["v"] = g.copy()                              # like g
            else:
                state["v"] *= self.momentum
                state["v"] += g
            g = g + self.momentum * state["v"] if self.nesterov else state["v"]
        p -= self.lr * g


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; weight_decay adds wd * p to the gradient."""

    decoupled = False

    def __init__(self, *, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(lr=lr, weight_decay=weight_decay)
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise TypeError(f"`betas` must be a pair of floats; got {betas!r}")
        self.betas = tuple(real_in(b, 0.0, 1.0, "betas") for b in betas)
        self.eps = _positive(eps, "eps")

    def _update(self, key: str, p, g) -> None:
        b1, b2 = self.betas
        if self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        elif self.weight_decay:
            g = g + self.weight_decay * p
        state = self.state.setdefault(key, {"t": 0, "m": np.zeros_like(g),  # m, s like p
                                            "s": np.zeros_like(g)})
        state["t"] += 1
        state["m"] += (1 - b1) * (g - state["m"])                  # b1 m + (1 - b1) g
        state["s"] *= b2
        state["s"] += (1 - b2) * g * g                             # b2 s + (1 - b2) g^2
        # PyTorch's arrangement of the bias corrections, for bit-level agreement
        denom = np.sqrt(state["s"]) / np.sqrt(1 - b2 ** state["t"]) + self.eps
        p -= (self.lr / (1 - b1 ** state["t"])) * state["m"] / denom


class AdamW(Adam):
    """Adam with decoupled weight decay (Loshchilov & Hutter): p *= 1 - lr * wd each step."""

    decoupled = True

    def __init__(self, *, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.01) -> None:
        super().__init__(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)


OPTIMIZERS: dict[str, type[Optimizer]] = {"sgd": SGD, "adam": Adam, "adamw": AdamW}
