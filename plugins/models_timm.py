"""Every timm model, as ``timm/<name>``, when timm is installed (``pip install 'autoprune[timm]'``).

The factories call ``timm.create_model(name, pretrained=..., num_classes=...,
in_chans=...)``: ``pretrained`` is false by default, since weights need a download
(from the Hugging Face Hub, as timm does it); ``pretrained=True`` fetches them as
usual. timm resizes the classifier and the stem itself, so pretrained weights keep
their filters. Any other keyword goes to timm (``img_size=64`` for a ViT,
``drop_path_rate=0.1``). Without timm, this plugin registers nothing.
"""

from __future__ import annotations

from functools import partial
from typing import Any

from torch import nn

import autoprune


def build(
    name: str, num_classes: int = 1000, in_channels: int = 3, pretrained: bool = False, **params: Any
) -> nn.Module:
    """Build timm model ``name`` for ``num_classes`` classes and ``in_channels`` inputs."""
    import timm

    return timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **params)


def input_size(name: str) -> tuple[int, int, int]:
    """The ``(channels, height, width)`` the model was designed for (its pretrained configuration's)."""
    import timm

    size = getattr(timm.models.get_pretrained_cfg(name), "input_size", None)
    return tuple(size) if size else (3, 224, 224)


@autoprune.hookimpl
def autoprune_register_models(register):
    try:
        import timm
    except ImportError:  # the extra is not installed: no timm models
        return
    for name in timm.list_models():
        register(
            f"timm/{name}",
            partial(build, name),
            description=f"timm {name} (pretrained=False unless pretrained=True; in_channels, num_classes)",
        )
