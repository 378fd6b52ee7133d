"""Reference networks in plain torch, with torchvision's (and milesial/Pytorch-UNet's) module
names, for the parity tests of npconv.models: torchvision itself does not load with the CPU
torch used here. Written from the published structures (the papers and the libraries' module
layouts), with torchvision's argument names; only the state_dict keys and the maths matter.

`reference(torch)` returns a namespace of builders; nothing imports torch at module level, so
the test modules that import this one still load without it.
"""

import functools
import types


@functools.lru_cache(maxsize=1)
def reference(torch):
    nn = torch.nn

    class BasicBlock(nn.Module):
        expansion = 1

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.relu = nn.ReLU(inplace=True)
            self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.bn2(self.conv2(out))
            identity = x if self.downsample is None else self.downsample(x)
            out += identity
            return self.relu(out)

    class Bottleneck(nn.Module):
        expansion = 4

        def __init__(self, inplanes, planes, stride=1, downsample=None):
            super().__init__()
            self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(planes)
            self.conv2 = nn.Conv2d(planes, planes, 3, stride, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(planes)
            self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
            self.bn3 = nn.BatchNorm2d(planes * 4)
            self.relu = nn.ReLU(inplace=True)
            self.downsample = downsample

        def forward(self, x):
            out = self.relu(self.bn1(self.conv1(x)))
            out = self.relu(self.bn2(self.conv2(out)))
            out = self.bn3(self.conv3(out))
            identity = x if self.downsample is None else self.downsample(x)
            out += identity
            return self.relu(out)

    class ResNet(nn.Module):
        def __init__(self, block, layers, num_classes, in_channels=3, width=64):
            super().__init__()
            self.inplanes = width
            self.conv1 = nn.Conv2d(in_channels, width, 7, 2, 3, bias=False)
            self.bn1 = nn.BatchNorm2d(width)
            self.relu = nn.ReLU(inplace=True)
            self.maxpool = nn.MaxPool2d(3, 2, 1)
            for i, n in enumerate(layers):
                setattr(self, f"layer{i + 1}",
                        self._make_layer(block, width * 2**i, n, 1 if i == 0 else 2))
            self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
            self.fc = nn.Linear(8 * width * block.expansion, num_classes)

        def _make_layer(self, block, planes, blocks, stride):
            downsample = None
            if stride != 1 or self.inplanes != planes * block.expansion:
                downsample = nn.Sequential(
                    nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                    nn.BatchNorm2d(planes * block.expansion))
            out = [block(self.inplanes, planes, stride, downsample)]
            self.inplanes = planes * block.expansion
            out += [block(self.inplanes, planes) for _ in range(1, blocks)]
            return nn.Sequential(*out)

        def forward(self, x):
            x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
            x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
            return self.fc(torch.flatten(self.avgpool(x), 1))

    def conv_norm_act(c, f, k=3, stride=1, groups=1):
        """torchvision's Conv2dNormActivation with BatchNorm2d and ReLU6."""
        return nn.Sequential(nn.Conv2d(c, f, k, stride, (k - 1) // 2, groups=groups,
                                       bias=False),
                             nn.BatchNorm2d(f), nn.ReLU6(inplace=True))

    class InvertedResidual(nn.Module):
        def __init__(self, inp, oup, stride, expand_ratio):
            super().__init__()
            hidden = round(inp * expand_ratio)
            self.use_res_connect = stride == 1 and inp == oup
            layers = [conv_norm_act(inp, hidden, 1)] if expand_ratio != 1 else []
            layers += [conv_norm_act(hidden, hidden, 3, stride, hidden),
                       nn.Conv2d(hidden, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup)]
            self.conv = nn.Sequential(*layers)

        def forward(self, x):
            return x + self.conv(x) if self.use_res_connect else self.conv(x)

    def make_divisible(v, divisor=8):
        new = max(divisor, int(v + divisor / 2) // divisor * divisor)
        return new + divisor if new < 0.9 * v else new

    class MobileNetV2(nn.Module):
        SETTING = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                   (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1))

        def __init__(self, num_classes, in_channels=3, width_mult=1.0, dropout=0.2):
            super().__init__()
            c = make_divisible(32 * width_mult)
            last = make_divisible(1280 * max(1.0, width_mult))
            features = [conv_norm_act(in_channels, c, 3, 2)]
            for t, ch, n, s in self.SETTING:
                f = make_divisible(ch * width_mult)
                for i in range(n):
                    features.append(InvertedResidual(c, f, s if i == 0 else 1, t))
                    c = f
            features.append(conv_norm_act(c, last, 1))
            self.features = nn.Sequential(*features)
            self.classifier = nn.Sequential(nn.Dropout(dropout), nn.Linear(last, num_classes))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), (1, 1))
            return self.classifier(torch.flatten(x, 1))

    def vgg(cfg, num_classes, in_channels=3, width=64, hidden=4096, pool_size=7,
            batch_norm=False, dropout=0.5):
        layers, c = [], in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
                continue
            layers.append(nn.Conv2d(c, v * width, 3, padding=1))
            if batch_norm:
                layers.append(nn.BatchNorm2d(v * width))
            layers.append(nn.ReLU(inplace=True))
            c = v * width

        class VGG(nn.Module):
            def __init__(self):
                super().__init__()
                self.features = nn.Sequential(*layers)
                self.avgpool = nn.AdaptiveAvgPool2d((pool_size, pool_size))
                self.classifier = nn.Sequential(
                    nn.Linear(c * pool_size * pool_size, hidden), nn.ReLU(True),
                    nn.Dropout(dropout), nn.Linear(hidden, hidden), nn.ReLU(True),
                    nn.Dropout(dropout), nn.Linear(hidden, num_classes))

            def forward(self, x):
                x = self.avgpool(self.features(x))
                return self.classifier(torch.flatten(x, 1))

        return VGG()

    class DoubleConv(nn.Module):
        def __init__(self, c, f, mid=None):
            super().__init__()
            mid = mid or f
            self.double_conv = nn.Sequential(
                nn.Conv2d(c, mid, 3, padding=1, bias=False), nn.BatchNorm2d(mid),
                nn.ReLU(inplace=True), nn.Conv2d(mid, f, 3, padding=1, bias=False),
                nn.BatchNorm2d(f), nn.ReLU(inplace=True))

        def forward(self, x):
            return self.double_conv(x)

    class Down(nn.Module):
        def __init__(self, c, f):
            super().__init__()
            self.maxpool_conv = nn.Sequential(nn.MaxPool2d(2), DoubleConv(c, f))

        def forward(self, x):
            return self.maxpool_conv(x)

    class Up(nn.Module):
        def __init__(self, c, f, bilinear):
            super().__init__()
            if bilinear:
                self.up = nn.Upsample(scale_factor=2, mode="bilinear", align_corners=True)
                self.conv = DoubleConv(c, f, c // 2)
            else:
                self.up = nn.ConvTranspose2d(c, c // 2, 2, stride=2)
                self.conv = DoubleConv(c, f)

        def forward(self, x1, x2):
            x1 = self.up(x1)
            dy, dx = x2.size(2) - x1.size(2), x2.size(3) - x1.size(3)
            x1 = nn.functional.pad(x1, [dx // 2, dx - dx // 2, dy // 2, dy - dy // 2])
            return self.conv(torch.cat([x2, x1], dim=1))

    class OutConv(nn.Module):
        def __init__(self, c, f):
            super().__init__()
            self.conv = nn.Conv2d(c, f, 1)

        def forward(self, x):
            return self.conv(x)

    class UNet(nn.Module):
        def __init__(self, num_classes, in_channels=3, width=64, depth=4, bilinear=False):
            super().__init__()
            factor = 2 if bilinear else 1
            self.depth = depth
            self.inc = DoubleConv(in_channels, width)
            for i in range(1, depth + 1):
                c = width * 2 ** (i - 1)
                setattr(self, f"down{i}", Down(c, 2 * c // (factor if i == depth else 1)))
            for i in range(1, depth + 1):
                c = width * 2 ** (depth - i + 1)
                setattr(self, f"up{i}", Up(c, c // 2 // (factor if i < depth else 1), bilinear))
            self.outc = OutConv(width, num_classes)

        def forward(self, x):
            skips = [self.inc(x)]
            for i in range(1, self.depth + 1):
                skips.append(getattr(self, f"down{i}")(skips[-1]))
            x = skips.pop()
            for i in range(1, self.depth + 1):
                x = getattr(self, f"up{i}")(x, skips.pop())
            return self.outc(x)

    vgg_a = (1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M")
    return types.SimpleNamespace(
        resnet18=lambda num_classes, **kw: ResNet(BasicBlock, (2, 2, 2, 2), num_classes, **kw),
        resnet50=lambda num_classes, **kw: ResNet(Bottleneck, (3, 4, 6, 3), num_classes, **kw),
        mobilenet_v2=lambda num_classes, **kw: MobileNetV2(num_classes, **kw),
        vgg11=lambda num_classes, **kw: vgg(vgg_a, num_classes, **kw),
        unet=lambda num_classes, **kw: UNet(num_classes, **kw))
