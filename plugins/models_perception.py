"""Small perception models that train on two CPU cores in minutes: ``small_segmenter`` and ``small_detector``.

``small_segmenter``: a three-level encoder-decoder with skip connections (the
U-Net layout of Ronneberger et al., MICCAI 2015, at a fraction of its width) that
returns ``(N, num_classes, H, W)`` logits.

``small_detector``: torchvision's FCOS (Tian et al., "FCOS: Fully Convolutional
One-Stage Object Detection", ICCV 2019) on a four-stage convolutional backbone
with a two-level feature pyramid (strides 4 and 8, for objects of a few to a few
dozen pixels) and a two-convolution head; it takes and returns what torchvision's
detectors do. ``num_classes`` counts the background, as torchvision's does.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

import autoprune


def _block(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SmallSegmenter(nn.Module):
    """Encoder at full, half and quarter resolution; decoder upsamples and concatenates the skips."""

    def __init__(self, num_classes: int, in_channels: int = 3, width: int = 16) -> None:
        super().__init__()
        w = width
        self.enc1 = nn.Sequential(_block(in_channels, w), _block(w, w))
        self.enc2 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.enc3 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))
        self.dec2 = _block(6 * w, 2 * w)
        self.dec1 = _block(3 * w, w)
        self.classifier = nn.Conv2d(w, num_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        e1 = self.enc1(x)
        e2 = self.enc2(e1)
        e3 = self.enc3(e2)
        d2 = self.dec2(torch.cat([F.interpolate(e3, size=e2.shape[-2:], mode="bilinear", align_corners=False), e2], 1))
        d1 = self.dec1(torch.cat([F.interpolate(d2, size=e1.shape[-2:], mode="bilinear", align_corners=False), e1], 1))
        return self.classifier(d1)


class _PyramidBackbone(nn.Module):
    """Four stride-2 stages; the last two give the pyramid's levels (strides 4 and 8) after a top-down sum."""

    def __init__(self, in_channels: int, width: int, out_channels: int) -> None:
        super().__init__()
        w = width
        self.stem = _block(in_channels, w, 2)
        self.stage1 = nn.Sequential(_block(w, 2 * w, 2), _block(2 * w, 2 * w))
        self.stage2 = nn.Sequential(_block(2 * w, 4 * w, 2), _block(4 * w, 4 * w))
        self.lateral1 = nn.Conv2d(2 * w, out_channels, 1)
        self.lateral2 = nn.Conv2d(4 * w, out_channels, 1)
        self.smooth = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        c1 = self.stage1(self.stem(x))
        c2 = self.stage2(c1)
        p2 = self.lateral2(c2)
        p1 = self.smooth(self.lateral1(c1) + F.interpolate(p2, size=c1.shape[-2:], mode="nearest"))
        return OrderedDict([("p1", p1), ("p2", p2)])


def small_segmenter(num_classes: int, in_channels: int = 3, width: int = 16) -> nn.Module:
    """A small encoder-decoder segmenter (``width`` channels at full resolution)."""
    return SmallSegmenter(num_classes, in_channels, width)


def small_detector(
    num_classes: int, in_channels: int = 3, width: int = 16, image_size: int = 96, score_thresh: float = 0.05
) -> nn.Module:
    """FCOS on a small backbone, for images of ``image_size`` pixels (torchvision resizes others to it)."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.fcos import FCOSHead

    if in_channels != 3:
        raise autoprune.AutopruneError(f"small_detector takes RGB images (in_channels=3), got {in_channels}")
    channels = 4 * width
    if channels % 32:
        raise autoprune.AutopruneError(
            f"small_detector needs width divisible by 8 (its head's GroupNorm has 32 groups), got width={width}"
        )
    backbone = _PyramidBackbone(in_channels, width, channels)
    anchors = AnchorGenerator(sizes=((8,), (16,)), aspect_ratios=((1.0,), (1.0,)))  # FCOS: one point per location
    return FCOS(
        backbone,
        num_classes,
        min_size=image_size,
        max_size=image_size,
        anchor_generator=anchors,
        head=FCOSHead(channels, 1, num_classes, num_convs=2),
        score_thresh=score_thresh,
        detections_per_img=50,
        topk_candidates=200,
    )


@autoprune.hookimpl
def autoprune_register_models(register):
    register(
        "small_segmenter",
        small_segmenter,
        task="segmentation",
        description="small encoder-decoder segmenter (width=16)",
    )
    register(
        "small_detector",
        small_detector,
        task="detection",
        description="FCOS on a small two-level pyramid (width=16, image_size=96)",
    )
