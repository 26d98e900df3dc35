"""Every timm model, as ``timm/<name>``, when timm is installed (``pip install 'autoprune[timm]'``).

The factories call ``timm.create_model(name, pretrained=..., num_classes=...,
in_chans=...)``: ``pretrained`` is false by default, since weights need a download
(from the Hugging Face Hub, as timm does it); ``pretrained=True`` fetches them as
usual. timm resizes the classifier and the stem itself, so pretrained weights keep
their filters. Any other keyword goes to timm (``img_size=64`` for a ViT,
``drop_path_rate=0.1``). Each linear ``GluMlp`` (EVA-02) is built as timm's equivalent ``SwiGLU``, two
layers in place of one split at run time, so its hidden channels prune. Without timm, this plugin
registers nothing.
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

    model = timm.create_model(name, pretrained=pretrained, num_classes=num_classes, in_chans=in_channels, **params)
    _separate_glu_halves(model)
    return model


def _separate_glu_halves(model: nn.Module) -> None:
    """Replace every linear ``GluMlp`` (EVA-02's SwiGLU) by timm's ``SwiGLU`` holding the same weights, in place.

    ``GluMlp`` splits one layer's output into a value half and a gate half at run time (``chunk``), which
    Torch-Pruning maps past the end of the next layer, so its hidden channels could not be pruned; ``SwiGLU``
    computes the same with the halves as two layers (``fc1_x`` and ``fc1_g``). The state dict's keys change
    with it, after any pretrained weights are loaded.
    """
    from timm.layers.mlp import GluMlp, SwiGLU

    for parent in list(model.modules()):
        for child_name, glu in list(parent.named_children()):
            if type(glu) is not GluMlp or not isinstance(glu.fc1, nn.Linear) or glu.chunk_dim != -1:
                continue
            hidden = glu.fc1.out_features // 2
            biased = (glu.fc1.bias is not None, glu.fc2.bias is not None)
            split = SwiGLU(glu.fc1.in_features, hidden, glu.fc2.out_features, bias=biased)
            split.act, split.drop1, split.norm, split.fc2, split.drop2 = (
                glu.act,
                glu.drop1,
                glu.norm,
                glu.fc2,
                glu.drop2,
            )
            value, gate = (
                (slice(0, hidden), slice(hidden, None)) if glu.gate_last else (slice(hidden, None), slice(0, hidden))
            )
            for layer, rows in ((split.fc1_x, value), (split.fc1_g, gate)):
                layer.weight = nn.Parameter(glu.fc1.weight.detach()[rows].clone())
                if glu.fc1.bias is not None:
                    layer.bias = nn.Parameter(glu.fc1.bias.detach()[rows].clone())
            split.to(glu.fc1.weight.device, glu.fc1.weight.dtype).train(glu.training)
            setattr(parent, child_name, split)


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
