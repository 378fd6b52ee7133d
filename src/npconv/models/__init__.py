"""npconv.models: architectures with torchvision's module structure and state_dict keys, so a
PyTorch checkpoint loads by name (`model.load_state_dict(npconv.io.load(path))`).

    >>> import numpy as np
    >>> from npconv import models
    >>> model = models.resnet18(num_classes=10, width=8, rng=np.random.default_rng(0))
    >>> model.forward(np.zeros((1, 64, 64, 3), np.float32)).shape
    (1, 10)

Builders take (num_classes, in_channels, data_format="channels_last") and keywords for the size
(width, ...), dtype and rng: `resnet18`, `resnet34`, `resnet50`, `mobilenet_v2`, `vgg11`,
`vgg16`, `unet`. `BUILDERS` maps their names to them (the CLI's --arch).
"""

from npconv.models.keras import load_keras
from npconv.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet34, resnet50
from npconv.models.unet import UNet, unet
from npconv.models.vgg import VGG, vgg11, vgg16

BUILDERS = {f.__name__: f for f in (resnet18, resnet34, resnet50, vgg11, vgg16, unet)}

__all__ = [
    "BUILDERS",
    "VGG",
    "BasicBlock",
    "Bottleneck",
    "ResNet",
    "UNet",
    "load_keras",
    "resnet18",
    "resnet34",
    "resnet50",
    "unet",
    "vgg11",
    "vgg16",
]
