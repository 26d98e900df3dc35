"""Common corruptions of images, after Hendrycks & Dietterich, "Benchmarking Neural Network
Robustness to Common Corruptions and Perturbations", ICLR 2019 (ImageNet-C).

A pruned model for a car or a phone must keep its accuracy on noisy, blurred, dark or
washed-out images, not only on clean ones. :func:`corrupted_batches` builds, once per
study and deterministically from its seed, a corrupted copy of a fixed subset of the
validation images: every corruption at every severity (1 to 5, ImageNet-C's scale).

Inputs are usually normalized (mean and standard deviation); each corruption works
in pixel space, which is recovered per channel from the lowest and highest value of
the images (mapped to 0 and 1), and the result is mapped back and clipped to that
range. The severities' constants are ImageNet-C's for images in [0, 1] (blur: CIFAR-10-C's).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch
import torchvision.transforms.functional as TF

from .errors import AutopruneError

#: Per severity 1..5: noise standard deviation, blur sigma (pixels of a 32-pixel image,
#: CIFAR-10-C's values, scaled up for larger images), brightness shift, contrast factor,
#: JPEG quality (ImageNet-C's values).
NOISE = (0.08, 0.12, 0.18, 0.26, 0.38)
BLUR = (0.4, 0.6, 0.7, 0.8, 1.0)
BRIGHTNESS = (0.1, 0.2, 0.3, 0.4, 0.5)
CONTRAST = (0.4, 0.3, 0.2, 0.1, 0.05)
JPEG = (25, 18, 15, 10, 7)


def _noise(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return x + torch.randn(x.shape, generator=generator) * NOISE[severity - 1]


def _blur(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    sigma = BLUR[severity - 1] * max(1.0, max(x.shape[-2:]) / 32)  # CIFAR-10-C's, scaled up for larger images
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * (min(x.shape[-2:]) // 2) - 1)  # odd, padding within the image
    return TF.gaussian_blur(x, [size, size], [sigma, sigma]) if size >= 3 else x


def _brightness(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    return x + BRIGHTNESS[severity - 1]


def _contrast(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    mean = x.mean(dim=(-3, -2, -1), keepdim=True)
    return (x - mean) * CONTRAST[severity - 1] + mean


def _jpeg(x: torch.Tensor, severity: int, generator: torch.Generator) -> torch.Tensor:
    """Saved and read back as JPEG by Pillow, as ImageNet-C does."""
    import io

    import numpy as np
    from PIL import Image

    if x.shape[-3] not in (1, 3):
        raise AutopruneError(f"the jpeg corruption needs 1 or 3 channels, got {x.shape[-3]}")
    pixels = (x.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    out = []
    for image in pixels:
        buffer = io.BytesIO()
        Image.fromarray(image.squeeze(-1) if image.shape[-1] == 1 else image).save(
            buffer, format="JPEG", quality=JPEG[severity - 1]
        )
        decoded = np.asarray(Image.open(io.BytesIO(buffer.getvalue())), dtype=np.float32) / 255
        out.append(torch.from_numpy(decoded.reshape(image.shape)).permute(2, 0, 1))
    return torch.stack(out)


#: name -> f(images in [0, 1], severity 1..5, generator) -> images
CORRUPTIONS: dict[str, Callable[[torch.Tensor, int, torch.Generator], torch.Tensor]] = {
    "gaussian_noise": _noise,
    "gaussian_blur": _blur,
    "brightness": _brightness,
    "contrast": _contrast,
    "jpeg": _jpeg,
}


def corrupt(
    images: torch.Tensor,
    name: str,
    severity: int,
    generator: torch.Generator,
    low: torch.Tensor | None = None,
    high: torch.Tensor | None = None,
) -> torch.Tensor:
    """``images`` (N, C, H, W) with corruption ``name`` at ``severity`` (1 to 5).

    ``low`` and ``high``: per-channel values that stand for black and white (the
    images' own extremes when not given).
    """
    if name not in CORRUPTIONS:
        raise AutopruneError(f"unknown corruption {name!r}; valid: {', '.join(map(repr, CORRUPTIONS))}")
    if not 1 <= severity <= 5:
        raise AutopruneError(f"a corruption's severity must be 1 to 5, got {severity!r}")
    if images.dim() != 4:
        raise AutopruneError(f"corruptions need image batches (N, C, H, W), got shape {tuple(images.shape)}")
    low = images.amin(dim=(0, 2, 3), keepdim=True) if low is None else low
    high = images.amax(dim=(0, 2, 3), keepdim=True) if high is None else high
    span = (high - low).clamp_min(1e-12)
    pixels = (images - low) / span
    return CORRUPTIONS[name](pixels, severity, generator).clamp(0, 1) * span + low


def corrupted_batches(
    val_batches: Sequence[tuple[torch.Tensor, torch.Tensor]],
    corruptions: Sequence[str],
    severities: Sequence[int],
    images: int,
    seed: int,
    batch_size: int = 128,
) -> list:
    """Batches of the first ``images`` validation images under every corruption at every severity.

    The same for the same batches and seed: the noise draws from a generator seeded
    from ``seed``, the corruption's position and the severity.
    """
    inputs, targets, seen = [], [], 0
    for x, y in val_batches:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise AutopruneError(
                "robust accuracy needs image inputs (N, C, H, W); this dataset's are "
                f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else ' ' + str(tuple(x.shape))}"
            )
        inputs.append(x[: images - seen])
        targets.append(y[: images - seen])
        seen += len(inputs[-1])
        if seen >= images:
            break
    clean, labels = torch.cat(inputs), torch.cat(targets)
    low, high = clean.amin(dim=(0, 2, 3), keepdim=True), clean.amax(dim=(0, 2, 3), keepdim=True)
    batches = []
    for i, name in enumerate(corruptions):
        for severity in severities:
            generator = torch.Generator().manual_seed(seed * 1000 + i * 10 + severity)
            corrupted = corrupt(clean, name, severity, generator, low, high)
            batches += [
                (corrupted[k : k + batch_size], labels[k : k + batch_size]) for k in range(0, len(clean), batch_size)
            ]
    return batches
