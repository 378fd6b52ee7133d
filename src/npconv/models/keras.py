"""Keras weights onto an npconv model, matched by layer kind and order, checked by shape.

A Keras 3 file names a layer's variables by its class, numbered in the order of the model's
layers (`conv2d/vars/0`, `conv2d_1/vars/0`, `batch_normalization_3/vars/2`; the names users
choose live only in the config), so the weights of an npconv model with the same architecture
are found kind by kind: its k-th convolution (in the order its layers were assigned) takes the
file's k-th Conv2D, its k-th BatchNorm the k-th BatchNormalization, and so on. With the config
(a `.keras` file), layers nested in sub-models come in the config's order and each BatchNorm
takes its layer's epsilon and momentum; a weights-only file is ordered by name. Everything is
checked before anything is written: a file of another architecture (another count of a kind,
or a shape that differs) is one ValueError naming every mismatch.

Layouts: Keras kernels are (*K, C, F) (Conv), (*K, C, M) (DepthwiseConv, F = C * M),
(*K, F, C) (ConvTranspose) and (C_in, C_out) (Dense): npconv's channels_last layouts, so a
channels_last model takes them as they are; a channels_first model gets them transposed.
A Keras BatchNormalization holds [gamma, beta, moving_mean, moving_variance] (gamma without
scale, beta without center).
"""

from __future__ import annotations

import math
import os
import re
from typing import cast

import numpy as np

from npconv import io
from npconv.nn import layers as L
from npconv.nn.module import Layer, Module

__all__ = ["keras_kind", "load_keras"]

_SUFFIX = re.compile(r"^(.*?)(?:_(\d+))?$")
_NATURAL = re.compile(r"(\d+)")


def keras_kind(layer: Layer) -> str | None:
    """The Keras file stem of an npconv layer with weights ("conv2d", "depthwise_conv2d",
    "conv2d_transpose", "batch_normalization", "dense"), or None for one Keras has not."""
    if isinstance(layer, L.Conv):
        if layer.kw["groups"] == 1:
            return f"conv{layer.rank}d"
        if layer.kw["groups"] == layer.in_channels:
            return f"depthwise_conv{layer.rank}d"
        return None
    if isinstance(layer, L.ConvTranspose) and layer.kw["groups"] == 1:
        return f"conv{layer.rank}d_transpose"
    if isinstance(layer, L.BatchNorm):
        return "batch_normalization"
    if isinstance(layer, L.Linear):
        return "dense"
    return None


def _snake(name: str) -> str:
    """Keras' file name of a class: Conv2DTranspose -> conv2d_transpose."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _groups(weights: dict) -> dict:
    """{layer path: [arrays in variable order]} of `io.load`'s Keras keys."""
    groups: dict = {}
    for key, array in weights.items():
        path, sep, index = key.rpartition("/vars/")
        if not sep or not index.isdigit():
            path, _, index = key.rpartition("/")                   # Keras 2: layer/weight name
            index = str(len(groups.get(path, {})))
        groups.setdefault(path, {})[int(index)] = array
    return {path: [v[i] for i in sorted(v)] for path, v in groups.items()}


def _config_order(config: dict | None) -> list | None:
    """[(file path, layer config)] of every layer in a Keras model config, depth first, in the
    model's order, each path named as Keras 3 names it in the file."""
    if not isinstance(config, dict):
        return None
    out: list = []

    def walk(model_config: dict, prefix: str) -> None:
        counts: dict = {}
        for entry in model_config.get("layers", []):
            if not isinstance(entry, dict) or not isinstance(entry.get("class_name"), str):
                continue
            stem = _snake(entry["class_name"])
            n = counts[stem] = counts.get(stem, -1) + 1
            path = prefix + (stem if n == 0 else f"{stem}_{n}")
            layer = entry.get("config")
            layer = layer if isinstance(layer, dict) else {}
            if isinstance(layer.get("layers"), list):
                walk(layer, path + "/layers/")
            else:
                out.append((path, layer))

    top = config.get("config")
    walk(top if isinstance(top, dict) else config, "")
    return out


def _natural(path: str):
    return [int(t) if t.isdigit() else t for t in _NATURAL.split(path)]


def _stem(path: str) -> str:
    """conv2d_3 -> conv2d (the pattern matches every string)."""
    match = _SUFFIX.match(path.rsplit("/", 1)[-1])
    return match.group(1) if match else path


def _file_layers(groups: dict, config) -> list:
    """[(kind, path, arrays, layer config or {})] in the model's order (by config), else by
    name."""
    order = _config_order(config)
    if order is None:
        return [(_stem(p), p, groups[p], {}) for p in sorted(groups, key=_natural)]
    seen = [(_stem(p), p, groups[p], cfg) for p, cfg in order if p in groups]
    missing = sorted(set(groups) - {p for _, p, _, _ in seen}, key=_natural)
    return seen + [(_stem(p), p, groups[p], {}) for p in missing]


def _by_kind(items) -> dict:
    out: dict = {}
    for item in items:
        out.setdefault(item[0], []).append(item[1:])
    return out


def _bn_arrays(layer: L.BatchNorm, arrays: list, cfg: dict) -> dict:
    """{key: array} of a BatchNormalization's variables, by its center/scale flags (both
    assumed without a config)."""
    names = [*(["weight"] if cfg.get("scale", True) else []),
             *(["bias"] if cfg.get("center", True) else []), "running_mean", "running_var"]
    if len(arrays) != len(names):
        return {"(variables)": (len(names), len(arrays))}
    return dict(zip(names, arrays))


def _converted(layer: Layer, arrays: list, cfg: dict):
    """{key: array in the layer's layout} of one Keras layer's variables, or a problem."""
    if isinstance(layer, L.BatchNorm):
        return _bn_arrays(layer, arrays, cfg)
    names = ["weight", "bias"][:len(arrays)]
    if len(arrays) != len(layer.params):
        return {"(variables)": (len(layer.params), len(arrays))}
    out = dict(zip(names, arrays))
    w = out["weight"]
    if isinstance(layer, L.Conv) and layer.kw["groups"] > 1 and w.ndim >= 3:
        w = w.reshape(*w.shape[:-2], 1, w.shape[-2] * w.shape[-1])   # (*K, 1, C * M)
    if isinstance(layer, (L.Conv, L.ConvTranspose)) and \
            layer.kw["data_format"] == "channels_first":
        w = np.moveaxis(w, (-1, -2), (0, 1))                          # (F, C/G, *K)
    out["weight"] = w
    return out


def _pairs(model: Layer, groups: dict, config) -> tuple[list, list]:
    """([(layer, name, path, {key: array}, config)], [problem]) for the whole model."""
    ours: list = []
    problems: list = []
    for name, layer in model.named_modules():
        if not isinstance(layer, Module) and layer.params:
            kind = keras_kind(layer)
            if kind is None:
                problems.append(f"{name} ({type(layer).__name__}): no Keras layer kind holds "
                                f"its weights")
            ours.append((kind, name, layer))
    theirs = _by_kind(_file_layers(groups, config))
    mine = _by_kind(ours)
    for kind in sorted(set(mine) | set(theirs), key=str):
        a, b = mine.get(kind, []), theirs.get(kind, [])
        if kind is not None and len(a) != len(b):
            problems.append(f"{kind}: the model has {len(a)}, the file {len(b)}")
    out = []
    for kind, layers in mine.items():
        for (name, layer), (path, arrays, cfg) in zip(layers, theirs.get(kind, [])):
            out.append((layer, name, path, _converted(layer, arrays, cfg), cfg))
    return out, problems


def _bn_settings(cfg: dict) -> tuple[float, float] | None:
    """(epsilon, momentum) of a Keras BatchNormalization config (Keras' defaults where absent),
    or None when they are not numbers Keras would accept (eps > 0, momentum in [0, 1])."""
    eps, momentum = cfg.get("epsilon", 1e-3), cfg.get("momentum", 0.99)
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool)
                  for v in (eps, momentum))
    return (float(eps), float(momentum)) if numbers and 0 < eps < math.inf and \
        0 <= momentum <= 1 else None


def _check(pairs: list, problems: list) -> None:
    for layer, name, path, arrays, cfg in pairs:
        if isinstance(layer, L.BatchNorm) and cfg and _bn_settings(cfg) is None:
            problems.append(f"{name}: the config of {path} gives epsilon="
                            f"{cfg.get('epsilon')!r:.40} and momentum="
                            f"{cfg.get('momentum')!r:.40}; expected epsilon > 0 and momentum "
                            f"in [0, 1]")
        if "(variables)" in arrays:
            want, got = arrays["(variables)"]
            hint = (" (a BatchNormalization without center or scale: give the model's config, "
                    "from its .keras file)") if isinstance(layer, L.BatchNorm) and not cfg \
                else ""
            problems.append(f"{name}: expects {want} variables, the file's {path} holds "
                            f"{got}{hint}")
            continue
        for key, array in arrays.items():
            target = layer.params.get(key, layer.buffers.get(key))
            if tuple(array.shape) != tuple(target.shape):
                problems.append(f"{name}.{key}: expects shape {tuple(target.shape)}, the file's "
                                f"{path} holds {tuple(array.shape)}")


def load_keras(model: Layer, source: str | os.PathLike | dict,
               config: dict | None = None) -> dict:
    """Copy the weights of a Keras model into `model`, an npconv model of the same architecture;
    returns {npconv layer name: Keras file path} of what went where.

    `source`: a `.keras` / `.weights.h5` / legacy `.h5` path (read with `npconv.io.load_keras`,
    which gives the config of a .keras file too), or the dict `npconv.io.load` returns. The
    config orders nested sub-models and gives each BatchNorm Keras' convention with its
    layer's epsilon and momentum (`nn.BatchNorm(convention="keras")`: training continues as in
    Keras); without it, BatchNorm layers keep theirs: build them with Keras' eps=1e-3.
    ValueError, naming every mismatch, for a file of another architecture;
    `model` is unchanged then.

    Example (after `keras_model.save("m.keras")`)::

        net = MyNet()                          # the same layers, in the same order
        npconv.models.load_keras(net, "m.keras")
    """
    if not isinstance(source, dict):
        source, stored = io.load_keras(source)
        config = stored if config is None else config
    groups = _groups(source)
    pairs, problems = _pairs(model, groups, config)
    _check(pairs, problems)
    if problems:
        raise ValueError(f"the Keras weights do not fit {type(model).__name__} (another "
                         f"architecture?):\n  " + "\n  ".join(problems))
    for layer, _, _, arrays, cfg in pairs:
        for key, array in arrays.items():
            target = layer.params.get(key, layer.buffers.get(key))
            target[...] = array
        if isinstance(layer, L.BatchNorm) and cfg:                 # Keras' statistics rule
            layer.eps, layer.momentum = cast(tuple, _bn_settings(cfg))
            layer.convention = "keras"
    model._refold()
    return {name: path for _, name, path, _, _ in pairs}
