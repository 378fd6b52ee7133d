"""U-Net (Ronneberger et al., 2015) with the module structure of the most used PyTorch version
(milesial/Pytorch-UNet): inc, down1..down4, up1..up4, outc, with keys such as
inc.double_conv.0.weight, down1.maxpool_conv.1.double_conv.4.running_var, up1.up.weight and
outc.conv.weight, so its checkpoints load by name.

Each level is forward code: `Up` upsamples, pads to the skip connection's size (inputs whose
sides are not multiples of 2^depth) and concatenates the two along the channels, all recorded
calls, so the skip connections' gradients follow.

>>> import numpy as np
>>> from npconv import models
>>> model = models.unet(num_classes=3, width=4, depth=2, rng=np.random.default_rng(0))
>>> model.forward(np.zeros((1, 20, 22, 3), np.float32)).shape          # (N, H, W, classes)
(1, 20, 22, 3)
"""

from __future__ import annotations

from npconv import _args
from npconv.models._common import check_builder_args, spatial_shape
from npconv.nn import combine
from npconv.nn import layers as L
from npconv.nn.module import Module, Sequential

__all__ = ["DoubleConv", "Down", "OutConv", "UNet", "Up", "unet"]


class DoubleConv(Module):
    """(3x3 convolution without bias, batch norm, ReLU) twice: key double_conv.0 ... .5."""

    def __init__(self, in_channels: int, out_channels: int, mid_channels: int | None = None, *,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        mid = mid_channels or out_channels
        self.kw = dict(in_channels=in_channels, out_channels=out_channels,
                       mid_channels=mid_channels, data_format=data_format, dtype=dtype)
        f = dict(data_format=data_format, dtype=dtype)
        self.double_conv = Sequential(
            L.Conv2d(in_channels, mid, 3, padding=1, bias=False, rng=rng, **f),
            L.BatchNorm2d(mid, **f), L.ReLU(inplace=True),
            L.Conv2d(mid, out_channels, 3, padding=1, bias=False, rng=rng, **f),
            L.BatchNorm2d(out_channels, **f), L.ReLU(inplace=True))

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        return self.double_conv(x)


class Down(Module):
    """2x2 max pool, then DoubleConv: key maxpool_conv.1.double_conv..."""

    def __init__(self, in_channels: int, out_channels: int, *,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        self.kw = dict(in_channels=in_channels, out_channels=out_channels,
                       data_format=data_format, dtype=dtype)
        self.maxpool_conv = Sequential(
            L.MaxPool2d(2, data_format=data_format),
            DoubleConv(in_channels, out_channels, data_format=data_format, dtype=dtype, rng=rng))

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        return self.maxpool_conv(x)


class Up(Module):
    """One decoder level: upsample x (a 2x2 stride-2 transposed convolution halving the
    channels, or with bilinear=True a bilinear x2 upsampling with align_corners=True), zero-pad
    it to the skip connection's size, concatenate [skip, x] along the channels, DoubleConv.

    forward(x, skip): x (N, h, w, in_channels), skip (N, H, W, in_channels // 2) with
    H >= 2h, W >= 2w -> (N, H, W, out_channels).
    """

    def __init__(self, in_channels: int, out_channels: int, bilinear: bool = False, *,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        self.kw = dict(in_channels=in_channels, out_channels=out_channels,
                       bilinear=_args.check_flag(bilinear, "bilinear"),
                       data_format=data_format, dtype=dtype)
        f = dict(data_format=data_format, dtype=dtype)
        self.up: L.Layer
        if bilinear:
            self.up = L.Upsample(scale_factor=2, mode="bilinear", align_corners=True,
                                 data_format=data_format)
            self.conv = DoubleConv(in_channels, out_channels, in_channels // 2, rng=rng, **f)
        else:
            self.up = L.ConvTranspose2d(in_channels, in_channels // 2, 2, stride=2, rng=rng,
                                        **f)
            self.conv = DoubleConv(in_channels, out_channels, rng=rng, **f)

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x, skip):
        fmt = self.kw["data_format"]
        x = self.up(x)
        gaps = [big - small for big, small in zip(spatial_shape(skip, fmt),
                                                    spatial_shape(x, fmt))]
        if any(gaps):
            x = L.ZeroPad(tuple((g // 2, g - g // 2) for g in gaps), data_format=fmt)(x)
        return self.conv(combine.concat(skip, x, data_format=fmt))


class OutConv(Module):
    """The 1x1 convolution to class scores: key conv.weight, conv.bias."""

    def __init__(self, in_channels: int, out_channels: int, *,
                 data_format: str = "channels_last", dtype="float32", rng=None) -> None:
        super().__init__()
        self.kw = dict(in_channels=in_channels, out_channels=out_channels,
                       data_format=data_format, dtype=dtype)
        self.conv = L.Conv2d(in_channels, out_channels, 1, data_format=data_format,
                             dtype=dtype, rng=rng)

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        return self.conv(x)


class UNet(Module):
    """U-Net of `depth` levels: inc = DoubleConv(in_channels, width), down_i doubling the
    channels (the deepest halved again when bilinear), up_i back, outc a 1x1 convolution to
    num_classes. x (N, H, W, in_channels) -> (N, H, W, num_classes), any H, W >= 2^depth.
    PyTorch's default initialization, as the reference implementation keeps."""

    def __init__(self, num_classes: int = 2, in_channels: int = 3, *, width: int = 64,
                 depth: int = 4, bilinear: bool = False, data_format: str = "channels_last",
                 dtype="float32", rng=None) -> None:
        super().__init__()
        dtype = check_builder_args(num_classes, in_channels, data_format, dtype, width=width,
                                   depth=depth)
        self.kw = dict(num_classes=num_classes, in_channels=in_channels, width=width,
                       depth=depth, bilinear=_args.check_flag(bilinear, "bilinear"),
                       data_format=data_format, dtype=dtype)
        f = dict(data_format=data_format, dtype=dtype, rng=rng)
        factor = 2 if bilinear else 1
        self.inc = DoubleConv(in_channels, width, **f)
        for i in range(1, depth + 1):
            c = width * 2 ** (i - 1)
            setattr(self, f"down{i}", Down(c, 2 * c // (factor if i == depth else 1), **f))
        for i in range(1, depth + 1):
            c = width * 2 ** (depth - i + 1)
            out = c // 2 // (factor if i < depth else 1)
            setattr(self, f"up{i}", Up(c, out, bilinear, **f))
        self.outc = OutConv(width, num_classes, **f)

    def config(self) -> dict:
        return dict(self.kw)

    def forward(self, x):
        depth = self.kw["depth"]
        skips = [self.inc(x)]
        for i in range(1, depth + 1):
            skips.append(getattr(self, f"down{i}")(skips[-1]))
        x = skips.pop()
        for i in range(1, depth + 1):
            x = getattr(self, f"up{i}")(x, skips.pop())
        return self.outc(x)


def unet(num_classes: int = 2, in_channels: int = 3, data_format: str = "channels_last",
         **kwargs) -> UNet:
    """A U-Net with milesial/Pytorch-UNet's structure and state_dict keys (at depth 4).

    Keywords: width (64: the first level's channels, doubled at each level down), depth (4),
    bilinear (False: transposed-convolution upsampling; True: bilinear, align_corners=True),
    dtype ("float32"), rng.
    """
    return UNet(num_classes, in_channels, data_format=data_format, **kwargs)
