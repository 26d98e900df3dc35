"""The search benchmark's second architecture, as a plugin module: a MobileNetV2-style network for 28x28 inputs.

- ``bench_mobilenet_v2``: the inverted residuals of Sandler et al., "MobileNetV2: Inverted
  Residuals and Linear Bottlenecks", CVPR 2018: each block expands its input with a 1x1
  convolution (expansion factor t), filters it with a 3x3 depthwise convolution, and
  projects it back with a linear 1x1 convolution (no activation), BatchNorm after every
  convolution and ReLU6 after the first two; the input is added back when the stride is 1
  and the channels match. The stem is a CIFAR-style 3x3 convolution of stride 1; the stages
  are the first five of the paper's Table 2 with fewer blocks and strides for 28x28 inputs
  (28 -> 14 -> 7 -> 4), then a 1x1 convolution to 320 channels (the paper's 1280 would hold
  most of the parameters), global average pooling and a linear classifier. ``width`` is the paper's width multiplier, every layer's channels rounded to a
  multiple of 8 as in the paper's reference code (torchvision's ``_make_divisible``).

At width 1, on one 28x28 image: 23.1 MFLOPs (``autoprune.metrics.count_flops``) and 389,130
parameters, against the ResNet-20's 62.0 MFLOPs and 272,186. Sized by training time rather
than FLOPs: a training step (batch 128) takes about 1.6 times the ResNet-20's CPU time. On a CPU
its time follows the size of its activations more than its FLOPs: variants of 40 to 64 MFLOPs
(wider, or a stage of expanded channels at 28x28) took 2.6 to 5.8 times the ResNet-20's time.

Not installed with autoprune: ``benchmarks/bench_search.py`` registers this module with
:func:`autoprune.plugins.load_plugin_module`, the path of ``autoprune --plugin``, so from the
command line ``PYTHONPATH=benchmarks autoprune --plugin bench_models search
studies/bench-fashion-mnist-mobilenet.toml`` (and ``autoprune --plugin bench_models export``) find it.
"""

from __future__ import annotations

from torch import nn

import autoprune

#: (expansion t, output channels c, blocks n, stride of the first block s), as in the paper's Table 2; the side
#: of a 28x28 input's feature maps after each stage.
STAGES = (
    (1, 16, 1, 1),  # 28x28
    (6, 24, 2, 2),  # 14x14
    (6, 32, 2, 2),  # 7x7
    (6, 64, 3, 2),  # 4x4
    (6, 96, 2, 1),  # 4x4
)
STEM = 32
HEAD = 320


def make_divisible(channels: float, divisor: int = 8) -> int:
    """``channels`` rounded to the nearest multiple of ``divisor``, never below it nor more than 10 % down
    (MobileNetV2's reference code; torchvision's ``torchvision.models._utils._make_divisible``)."""
    rounded = max(divisor, int(channels + divisor / 2) // divisor * divisor)
    return rounded + divisor if rounded < 0.9 * channels else rounded


def conv_bn(
    cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1, activation: bool = True
) -> nn.Sequential:
    layers: list[nn.Module] = [
        nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(cout),
    ]
    if activation:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class InvertedResidual(nn.Module):
    """Expansion 1x1 convolution (left out when t = 1), 3x3 depthwise convolution, linear 1x1 projection;
    the input added back when the stride is 1 and the channels match (Sandler et al., CVPR 2018, Table 1)."""

    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers = [conv_bn(cin, hidden, 1)] if expansion != 1 else []
        layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden), conv_bn(hidden, cout, 1, activation=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        return x + self.conv(x) if self.residual else self.conv(x)


class MobileNetV2(nn.Module):
    def __init__(self, num_classes: int, in_channels: int, width: float = 1.0) -> None:
        super().__init__()
        if not width > 0:
            raise autoprune.AutopruneError(f"bench_mobilenet_v2's width must be a number above 0, got {width!r}")
        channels = make_divisible(STEM * width)
        layers: list[nn.Module] = [conv_bn(in_channels, channels, 3)]
        for expansion, c, n, s in STAGES:
            out = make_divisible(c * width)
            for i in range(n):
                layers.append(InvertedResidual(channels, out, s if i == 0 else 1, expansion))
                channels = out
        head = make_divisible(HEAD * max(1.0, width))  # as the paper's last layer, not narrowed below width 1
        layers.append(conv_bn(channels, head, 1))
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(head, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        return self.classifier(self.pool(self.features(x)).flatten(1))


def bench_mobilenet_v2(num_classes: int = 10, in_channels: int = 3, width: float = 1.0) -> nn.Module:
    return MobileNetV2(num_classes, in_channels, width)


@autoprune.hookimpl
def autoprune_register_models(register):
    register(
        "bench_mobilenet_v2",
        bench_mobilenet_v2,
        description="MobileNetV2-style net for 28x28 inputs, inverted residuals (Sandler et al., CVPR 2018)",
    )
