"""npconv.models: architectures with torchvision's module structure and state_dict keys, so a
PyTorch checkpoint loads by name (`model.load_state_dict(npconv.io.load(path))`).

    >>> import numpy as np
    >>> from npconv import models
    >>> model = models.resnet18(num_classes=10, width=8, rng=np.random.default_rng(0))
    >>> model.forward(np.zeros((1, 64, 64, 3), np.float32)).shape
    (1, 10)

Builders take (num_classes, in_channels, data_format="channels_last") and keywords for the size
(width, ...), dtype and rng: `resnet18`, `resnet34`, `resnet50`, `mobilenet_v2`, `vgg11`,
`vgg16`, `unet`. `BUILDERS` maps their names to them (the CLI's --arch), and
`from_state_dict(name, state_dict)` builds one with the sizes the arrays imply and loads them.
"""

from npconv.models.keras import load_keras
from npconv.models.loading import (
    BUILDERS,
    CLASSIFIERS,
    from_state_dict,
    prepare_images,
    sizes,
)
from npconv.models.mobilenet import InvertedResidual, MobileNetV2, mobilenet_v2
from npconv.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from npconv.models.unet import UNet, unet
from npconv.models.vgg import VGG, vgg11, vgg16

__all__ = [
    "BUILDERS",
    "CLASSIFIERS",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "InvertedResidual",
    "MobileNetV2",
    "ResNet",
    "UNet",
    "from_state_dict",
    "load_keras",
    "mobilenet_v2",
    "prepare_images",
    "resnet18",
    "resnet34",
    "resnet50",
    "sizes",
    "unet",
    "vgg11",
    "vgg16",
]
