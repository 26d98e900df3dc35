"""Small image classifiers for CIFAR-sized (and smaller) inputs.

- ``resnet20``, ``resnet32``, ``resnet56``: the CIFAR ResNets of He et al.,
  "Deep Residual Learning for Image Recognition", CVPR 2016 (section 4.2),
  with projection shortcuts (option B) where the shape changes.
- ``vgg_small``: a VGG-style network with BatchNorm (Simonyan & Zisserman,
  "Very Deep Convolutional Networks for Large-Scale Image Recognition", ICLR 2015),
  global-average-pooled so it takes any input size.
- ``small_cnn``: three convolution blocks and a linear classifier, for the
  8x8 digits quickstart.

All take ``num_classes`` and ``in_channels``; ``width`` scales every layer.
"""

from __future__ import annotations

from torch import nn

import autoprune


class BasicBlock(nn.Module):
    def __init__(self, in_planes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride, bias=False), nn.BatchNorm2d(planes))

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    def __init__(self, depth: int, num_classes: int, in_channels: int, width: int = 16) -> None:
        super().__init__()
        if (depth - 2) % 6:
            raise autoprune.AutopruneError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        layers, planes = [], width
        for stage, stride in enumerate((1, 2, 2)):
            out_planes = width * 2**stage
            blocks = [BasicBlock(planes, out_planes, stride)]
            blocks += [BasicBlock(out_planes, out_planes, 1) for _ in range(n - 1)]
            layers.append(nn.Sequential(*blocks))
            planes = out_planes
        self.layer1, self.layer2, self.layer3 = layers
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(planes, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x):
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.pool(x).flatten(1))


def _conv_bn(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class VGGSmall(nn.Module):
    CONFIG = (64, "M", 128, "M", 256, 256, "M", 512, 512)

    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        c = in_channels
        for item in self.CONFIG:
            if item == "M":
                layers.append(nn.MaxPool2d(2, ceil_mode=True))
            else:
                out = max(1, int(item * width))
                layers += _conv_bn(c, out)
                c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(c, c), nn.ReLU(inplace=True), nn.Linear(c, num_classes))

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


class SmallCNN(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: int = 32) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_conv_bn(in_channels, width),
            *_conv_bn(width, 2 * width),
            nn.MaxPool2d(2, ceil_mode=True),
            *_conv_bn(2 * width, 4 * width),
            nn.AdaptiveAvgPool2d(1),
        )
        self.fc = nn.Linear(4 * width, num_classes)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


def resnet20(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    return CifarResNet(20, num_classes, in_channels, width)


def resnet32(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    return CifarResNet(32, num_classes, in_channels, width)


def resnet56(num_classes: int = 10, in_channels: int = 3, width: int = 16) -> nn.Module:
    return CifarResNet(56, num_classes, in_channels, width)


def vgg_small(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return VGGSmall(num_classes, in_channels, width)


def small_cnn(num_classes: int = 10, in_channels: int = 3, width: int = 32) -> nn.Module:
    return SmallCNN(num_classes, in_channels, width)


@autoprune.hookimpl
def autoprune_register_models(register):
    register("resnet20", resnet20, description="CIFAR ResNet-20 (He et al., CVPR 2016)")
    register("resnet32", resnet32, description="CIFAR ResNet-32 (He et al., CVPR 2016)")
    register("resnet56", resnet56, description="CIFAR ResNet-56 (He et al., CVPR 2016)")
    register("vgg_small", vgg_small, description="VGG-style CNN with BatchNorm (Simonyan & Zisserman, ICLR 2015)")
    register("small_cnn", small_cnn, description="three conv blocks and a linear classifier, for tiny inputs")
