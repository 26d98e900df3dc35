"""Help Torch-Pruning with architectures whose channel coupling it cannot trace.

Each adapter names the architecture, what goes wrong without it, and what it
does instead:

- Window attention (torchvision Swin V1/V2): the block calls ``F.linear`` on
  ``qkv.weight`` and ``proj.weight`` instead of calling its Linear layers, so
  Torch-Pruning sees no layer at all and its index mapping explodes through the
  window reshapes. :class:`WindowAttentionPruner` makes the attention block one
  layer that Torch-Pruning prunes like ``nn.MultiheadAttention``: the embedding
  width shrinks evenly across heads, in q, k, v and the output projection.
- Patch merging (torchvision Swin): four strided slices of the same tensor are
  concatenated on the last dimension, which Torch-Pruning's concatenation
  mapping gets wrong; :class:`PatchMergingPruner` prunes the four copies of
  each channel together.
- Channel shuffle (ShuffleNet V2): its view-transpose-view defeats Torch-Pruning's
  reshape index mapping (ZeroDivisionError). While tracing, the shuffle runs as
  one opaque operation, and every group whose channels pass through it is left
  unpruned: the branch-internal channels, which are most of the computation,
  stay prunable.
- timm EVA (EVA-02) attention with q and v biases calls ``F.linear`` on ``qkv.weight``,
  which the trace cannot see; while tracing, :func:`tracing_patches` makes it call the layer.
- torchvision ViT caches its width in ``hidden_dim``, and timm MetaFormer's (PoolFormer's)
  ``Scale`` the shape it views its vector as; :func:`sync_attributes` updates them after pruning.
- torchvision detectors (Faster/Mask/Keypoint R-CNN, RetinaNet, FCOS, SSD, SSDlite)
  return post-processed detections whose number depends on the weights, and the
  R-CNN family detaches its region-proposal outputs, so tracing the full model
  misses the proposal head and a shape check cannot compare outputs.
  :func:`network_forward` runs their network alone (the transform, backbone and
  heads, with two fixed proposals per image for the box, mask and keypoint heads)
  for tracing, checking and counting FLOPs; the outputs are the heads' raw maps,
  so the class and box layers are the model's outputs and keep their width.
- ``FrozenBatchNorm2d`` (torchvision's pretrained detection backbones) keeps its
  statistics in buffers Torch-Pruning does not prune; :class:`FrozenBatchNormPruner`
  slices them with the channels.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import torch
from torch import nn
from torch_pruning import ops
from torch_pruning.pruner.function import BasePruningFunc

from .inputs import call_model

_SHUFFLE_OP = "ChannelShuffleBackward"


class WindowAttentionPruner(BasePruningFunc):
    """Prunes the embedding width of a window-attention block (``qkv`` and ``proj`` Linears)."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        width = layer.qkv.in_features
        keep = sorted(set(range(width)) - {int(i) for i in idxs})
        keep3 = keep + [k + width for k in keep] + [k + 2 * width for k in keep]
        _prune_linear(layer.qkv, rows=keep3, cols=keep)
        _prune_linear(layer.proj, rows=keep, cols=keep)
        return layer

    prune_in_channels = prune_out_channels  # input and output widths are one

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.qkv.in_features

    get_in_channels = get_out_channels

    def get_out_channel_groups(self, layer: nn.Module) -> int:
        return layer.num_heads

    get_in_channel_groups = get_out_channel_groups


class PatchMergingPruner(BasePruningFunc):
    """Prunes a Swin patch-merging layer: four strided slices concatenated, normalized, reduced.

    Its input width ``C`` appears four times in the concatenation, so pruning
    input channel ``i`` removes columns ``i, i+C, i+2C, i+3C``; its output width
    (``2C``) is independent of the input width.
    """

    def prune_in_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        width = layer.reduction.in_features // 4
        keep = sorted(set(range(width)) - {int(i) for i in idxs})
        keep4 = [k + j * width for j in range(4) for k in keep]
        _prune_linear(layer.reduction, rows=list(range(layer.reduction.out_features)), cols=keep4)
        if layer.norm.normalized_shape[0] == 4 * width:  # V1 normalizes before the reduction
            _prune_layernorm(layer.norm, keep4)
        layer.dim = len(keep)
        return layer

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.reduction.out_features)) - {int(i) for i in idxs})
        _prune_linear(layer.reduction, rows=keep, cols=list(range(layer.reduction.in_features)))
        if layer.norm.normalized_shape[0] != layer.reduction.in_features:  # V2 normalizes after it
            _prune_layernorm(layer.norm, keep)
        return layer

    def get_in_channels(self, layer: nn.Module) -> int:
        return layer.reduction.in_features // 4

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.reduction.out_features


def _prune_layernorm(norm: nn.LayerNorm, keep: list[int]) -> None:
    with torch.no_grad():
        if norm.weight is not None:
            norm.weight = nn.Parameter(norm.weight[keep].clone())
        if norm.bias is not None:
            norm.bias = nn.Parameter(norm.bias[keep].clone())
    norm.normalized_shape = (len(keep),)


def _prune_linear(linear: nn.Linear, rows: list[int], cols: list[int]) -> None:
    with torch.no_grad():
        linear.weight = nn.Parameter(linear.weight[rows][:, cols].clone())
        if linear.bias is not None:
            linear.bias = nn.Parameter(linear.bias[rows].clone())
    linear.out_features, linear.in_features = len(rows), len(cols)


class FrozenBatchNormPruner(BasePruningFunc):
    """Prunes torchvision's ``FrozenBatchNorm2d``: its weight, bias and statistics are buffers."""

    def prune_out_channels(self, layer: nn.Module, idxs: Sequence[int]) -> nn.Module:
        keep = sorted(set(range(layer.weight.numel())) - {int(i) for i in idxs})
        for name in ("weight", "bias", "running_mean", "running_var"):
            setattr(layer, name, getattr(layer, name)[keep].clone())
        return layer

    prune_in_channels = prune_out_channels

    def get_out_channels(self, layer: nn.Module) -> int:
        return layer.weight.numel()

    get_in_channels = get_out_channels


def customized_pruners() -> dict[type, BasePruningFunc]:
    """Layer types that Torch-Pruning should treat as one layer, with their pruners."""
    pruners: dict[type, BasePruningFunc] = {}
    with contextlib.suppress(ImportError):
        from torchvision.ops.misc import FrozenBatchNorm2d

        pruners[FrozenBatchNorm2d] = FrozenBatchNormPruner()
    with contextlib.suppress(ImportError):
        from torchvision.models import swin_transformer as swin

        attention, merging = WindowAttentionPruner(), PatchMergingPruner()
        pruners[swin.ShiftedWindowAttention] = attention
        pruners[swin.ShiftedWindowAttentionV2] = attention
        pruners[swin.PatchMerging] = merging
        pruners[swin.PatchMergingV2] = merging
    return pruners


class _ChannelShuffle(torch.autograd.Function):
    """Channel shuffle as one autograd node, so the traced graph shows it as one op."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, groups: int) -> torch.Tensor:
        ctx.groups = groups
        b, c, h, w = x.shape
        return x.view(b, groups, c // groups, h, w).transpose(1, 2).reshape(b, c, h, w)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        b, c, h, w = grad.shape
        g = ctx.groups
        return grad.view(b, c // g, g, h, w).transpose(1, 2).reshape(b, c, h, w), None


class _Opaque(torch.autograd.Function):
    """Runs a layer's forward as one autograd node, hiding its internals from the trace."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, module: nn.Module, forward) -> torch.Tensor:
        return forward(module, x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # pragma: no cover - tracing never runs backward
        raise RuntimeError("autoprune's opaque tracing node is not differentiable")


@contextlib.contextmanager
def tracing_patches(model: nn.Module) -> Iterator[None]:
    """Swap in traceable stand-ins for operations Torch-Pruning cannot follow, while ``model`` is traced.

    Layers with a customized pruner run as one opaque node, so the trace links
    their input straight to their output; the channel shuffle runs as one node;
    timm's EVA attention calls its ``qkv`` layer instead of ``F.linear`` on its weight.
    """
    with contextlib.ExitStack() as stack:
        for m in model.modules():
            # timm EvaAttention: with q/v biases it calls F.linear(x, qkv.weight, bias), a layer the trace
            # cannot see, whose inputs would then not be pruned with the stream; the same sum, through qkv.
            if getattr(m, "qkv_bias_separate", None) is False and isinstance(getattr(m, "qkv", None), nn.Linear):
                m.qkv_bias_separate = True
                stack.callback(setattr, m, "qkv_bias_separate", False)
        for cls in customized_pruners():
            original_forward = cls.forward
            cls.forward = lambda self, x, _f=original_forward: _Opaque.apply(x, self, _f)
            stack.callback(setattr, cls, "forward", original_forward)
        with contextlib.suppress(ImportError):
            from torchvision.models import shufflenetv2

            original = shufflenetv2.channel_shuffle
            shufflenetv2.channel_shuffle = _ChannelShuffle.apply
            stack.callback(setattr, shufflenetv2, "channel_shuffle", original)
        yield


def barrier_reason(node) -> str | None:
    """Why channels passing through ``node`` cannot be pruned, or None."""
    if node.type == ops.OPTYPE.ELEMENTWISE and _SHUFFLE_OP in repr(node.module):
        return "its channels pass through a channel shuffle"
    if node.type == ops.OPTYPE.SLICE and _takes_part_of_the_channels(node):
        return "its channels are sliced at run time (a residual added to part of them)"
    return None


def _takes_part_of_the_channels(node) -> bool:
    """Whether a slice keeps only some channels (RexNet's and DPN's partial residuals): Torch-Pruning maps
    each slice of a chain of them anew, and its group for one channel stream grows without end."""
    sizes = getattr(node.grad_fn, "_saved_self_sym_sizes", None)
    if sizes is None or len(sizes) not in (3, 4):
        return False
    slice_op = node.module
    channel_dim = 1 if len(sizes) == 4 else 2  # NCHW's channels, a sequence's last dimension (Torch-Pruning's)
    if slice_op.dim != channel_dim:
        return False
    size = int(sizes[slice_op.dim])
    return slice_op.step != 1 or slice_op.start > 0 or min(slice_op.end, size) < size


def sync_attributes(model: nn.Module) -> None:
    """Update attributes that cache a width and that Torch-Pruning does not know about."""
    for m in model.modules():
        conv_proj = getattr(m, "conv_proj", None)  # torchvision VisionTransformer
        if isinstance(conv_proj, nn.Conv2d) and hasattr(m, "hidden_dim"):
            m.hidden_dim = conv_proj.out_channels
        scale = getattr(m, "scale", None)  # timm MetaFormer's Scale (PoolFormer): views its vector as ``shape``
        if isinstance(scale, nn.Parameter) and isinstance(getattr(m, "shape", None), tuple) and m.shape:
            m.shape = (scale.shape[0], *m.shape[1:])


def network_forward(model: nn.Module) -> Callable[[nn.Module, Any], Any] | None:
    """``forward(model, inputs)`` running a detector's network without its post-processing, or None for a
    model that is called as it is.

    A model of any library says what its network is by defining ``network_outputs``, called with the
    model's inputs (as :func:`~autoprune.engine.call_model` passes them; a list of images as one argument)
    and returning tensors of shapes
    that do not depend on the weights, such as a detection head's maps before decoding
    (plugins/models_ultralytics.py); torchvision's detectors are known here.
    """
    if callable(getattr(model, "network_outputs", None)):
        return _own_network
    try:
        from torchvision.models.detection import fcos, generalized_rcnn, retinanet, ssd
    except ImportError:  # pragma: no cover - torchvision is a dependency
        return None
    if isinstance(model, (retinanet.RetinaNet, fcos.FCOS, ssd.SSD)):
        return _dense_detector_network
    if isinstance(model, generalized_rcnn.GeneralizedRCNN):
        return _rcnn_network
    return None


def _own_network(model: nn.Module, inputs: Any) -> Any:
    if isinstance(inputs, list):  # a batch of a detection task: one list of images, the model's one argument
        return model.network_outputs(inputs)
    return call_model(model.network_outputs, inputs)


def _features(model: nn.Module, inputs: Any):
    """The transformed images and the backbone's feature maps of a torchvision detector's inputs."""
    images = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else inputs
    image_list, _ = model.transform(list(images))
    features = model.backbone(image_list.tensors)
    if isinstance(features, torch.Tensor):
        features = OrderedDict([("0", features)])
    return image_list, features


def _dense_detector_network(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    """The heads' maps of every level, before the heads flatten and concatenate them (Torch-Pruning's
    index mapping through that reshape grows with the image and takes minutes)."""
    from torchvision.models.detection import fcos, ssd

    _, features = _features(model, inputs)
    levels = list(features.values())
    head = model.head
    if isinstance(model, ssd.SSD):
        return [
            part.module_list[i](x)
            for part in (head.classification_head, head.regression_head)
            for i, x in enumerate(levels)
        ]
    outputs = []
    for x in levels:
        outputs.append(head.classification_head.cls_logits(head.classification_head.conv(x)))
        box = head.regression_head.conv(x)
        outputs.append(head.regression_head.bbox_reg(box))
        if isinstance(model, fcos.FCOS):
            outputs.append(head.regression_head.bbox_ctrness(box))
    return outputs


def _rcnn_network(model: nn.Module, inputs: Any) -> list[torch.Tensor]:
    images, features = _features(model, inputs)
    objectness, deltas = model.rpn.head(list(features.values()))
    height, width = images.tensors.shape[-2:]
    fixed = torch.tensor(
        [[0.0, 0.0, width / 2, height / 2], [width / 4, height / 4, width, height]], device=images.tensors.device
    )
    proposals = [fixed] * len(images.image_sizes)
    heads = model.roi_heads
    outputs = [*objectness, *deltas]
    outputs += heads.box_predictor(heads.box_head(heads.box_roi_pool(features, proposals, images.image_sizes)))
    if heads.has_mask():
        outputs.append(
            heads.mask_predictor(heads.mask_head(heads.mask_roi_pool(features, proposals, images.image_sizes)))
        )
    if heads.has_keypoint():
        outputs.append(
            heads.keypoint_predictor(
                heads.keypoint_head(heads.keypoint_roi_pool(features, proposals, images.image_sizes))
            )
        )
    return outputs
