"""A builder's model from a state_dict alone (the size arguments read off the arrays' shapes),
and images prepared for it.

`from_state_dict("resnet18", npconv.io.load("resnet18.pth"))` needs no other argument: the
number of classes is the head's output size, the input channels and the width are the stem's,
and so on for each builder; keywords override what is read. The state_dict is checked against
the model built without memory first (`npconv.nn.init.meta`: every key and shape, one
ValueError naming each mismatch), so that a file of another architecture is refused, not
half-loaded, and a small file whose shapes declare a huge model is refused before that model
is allocated; only then is the model built and the state_dict loaded into it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from npconv.models import mobilenet, resnet, unet, vgg
from npconv.nn import init
from npconv.nn.module import Module
from npconv.training import data

__all__ = ["BUILDERS", "CLASSIFIERS", "from_state_dict", "prepare_images", "sizes"]

BUILDERS = {f.__name__: f for f in (resnet.resnet18, resnet.resnet34, resnet.resnet50,
                                    mobilenet.mobilenet_v2, vgg.vgg11, vgg.vgg16, unet.unet)}
CLASSIFIERS = tuple(name for name in BUILDERS if name != "unet")   # (N, num_classes) outputs


def _shape(state: dict, key: str, arch: str, ndim: int) -> tuple:
    """The shape of `state[key]`, which must have `ndim` axes of non-zero sizes."""
    if key not in state:
        raise ValueError(f"not a {arch} state_dict: it has no {key!r} (keys: "
                         f"{', '.join(list(state)[:4])}, ...)")
    shape = tuple(np.shape(state[key]))
    if len(shape) != ndim or 0 in shape:
        raise ValueError(f"not a {arch} state_dict: {key!r} has shape {shape}; expected "
                         f"{ndim} non-zero sizes")
    return shape


def sizes(arch: str, state: dict) -> dict:
    """The builder keywords (num_classes, in_channels, width, ...) that the shapes of `state`
    imply for `arch`.

    >>> import numpy as np
    >>> sizes("resnet18", {"conv1.weight": np.zeros((32, 1, 7, 7)),
    ...                    "fc.weight": np.zeros((5, 256))})
    {'num_classes': 5, 'in_channels': 1, 'width': 32}
    """
    if arch.startswith("resnet"):
        f, c = _shape(state, "conv1.weight", arch, 4)[:2]
        return dict(num_classes=_shape(state, "fc.weight", arch, 2)[0], in_channels=c, width=f)
    if arch.startswith("mobilenet"):
        f, c = _shape(state, "features.0.0.weight", arch, 4)[:2]
        return dict(num_classes=_shape(state, "classifier.1.weight", arch, 2)[0], in_channels=c,
                    width_mult=f / 32)
    if arch.startswith("vgg"):
        f, c = _shape(state, "features.0.weight", arch, 4)[:2]
        hidden, d = _shape(state, "classifier.0.weight", arch, 2)
        return dict(num_classes=_shape(state, "classifier.6.weight", arch, 2)[0], in_channels=c,
                    width=f, hidden=hidden, pool_size=math.isqrt(d // (8 * f)),
                    batch_norm="features.1.running_var" in state)
    f, c = _shape(state, "inc.double_conv.0.weight", arch, 4)[:2]
    depth = sum(1 for k in state if k.startswith("down") and k.endswith(".0.weight")
                and "double_conv.0" in k)
    return dict(num_classes=_shape(state, "outc.conv.weight", arch, 4)[0], in_channels=c,
                width=f, depth=depth, bilinear="up1.up.weight" not in state)


def from_state_dict(arch: str, state: dict, **kwargs) -> Module:
    """`BUILDERS[arch]` with the sizes `state` implies (keywords override them), `state`
    loaded strictly; ValueError for an unknown arch or a state_dict that does not fit.

    >>> from npconv import models
    >>> trained = models.resnet18(num_classes=7, width=8)
    >>> again = from_state_dict("resnet18", trained.state_dict())
    >>> again.fc.out_features, again.conv1.out_channels
    (7, 8)
    """
    if arch not in BUILDERS:
        raise ValueError(f"`arch` must be one of {tuple(BUILDERS)}; got {arch!r}")
    sized = {**sizes(arch, state), **kwargs}
    _check_fits(arch, sized, state)
    model = BUILDERS[arch](**sized)
    model.load_state_dict(state)
    return model


def _check_fits(arch: str, sized: dict, state: dict) -> None:
    """load_state_dict's ValueError, naming every missing, unexpected or mis-shaped key, raised
    from the model built without memory: a 144-byte file whose stem declares 512 channels
    would otherwise cost a ResNet-18 of 7 GB before its error."""
    with init.meta():
        skeleton = BUILDERS[arch](**sized)
    want = {k: v.shape for k, v in skeleton.state_dict().items()}
    if want != {k: tuple(np.shape(v)) for k, v in state.items()}:
        skeleton.load_state_dict(state)           # raises before it would write anything


def prepare_images(images: np.ndarray, in_channels: int, *, pixel_max: float = 255.0,
                   mean: Sequence[float] | None = None,
                   std: Sequence[float] | None = None) -> np.ndarray:
    """float32 (N, H, W, C) images for a channels_last model with `in_channels` channels:
    integer pixels divided by `pixel_max`, then (x - mean) / std per channel when given
    (torchvision's ImageNet models: mean (0.485, 0.456, 0.406), std (0.229, 0.224, 0.225)).

    Accepts (N, H, W, C), one image (H, W, C), and (N, H, W) when in_channels is 1, of any
    size; ValueError for another shape, NaN or infinite pixels, or a mean / std of another
    length than 1 or C.

    >>> prepare_images(np.full((2, 4, 4, 3), 255, np.uint8), 3, mean=(0.5,), std=(0.5,)).max()
    np.float32(1.0)
    """
    if not isinstance(images, np.ndarray) or images.ndim not in (3, 4):
        raise ValueError(f"images must be (N, H, W, C), (H, W, C) or, with one channel, "
                         f"(N, H, W); got {getattr(images, 'shape', type(images).__name__)}")
    one = images.ndim == 3 and not (in_channels == 1 and images.shape[-1] != 1)
    size = images.shape[:2] if one else images.shape[1:3]
    x = data.prepare_images(images, (*size, in_channels), pixel_max)        # (N, H, W, C)
    for name, v in (("mean", mean), ("std", std)):
        if v is not None and len(v) not in (1, in_channels):
            raise ValueError(f"`{name}` needs 1 or {in_channels} values (one per channel); "
                             f"got {len(v)}")
    if mean is not None:
        x -= np.asarray(mean, np.float32)
    if std is not None:
        if min(std) <= 0:
            raise ValueError(f"`std` must be > 0 for every channel; got {tuple(std)}")
        x /= np.asarray(std, np.float32)
    return x
