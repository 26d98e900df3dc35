"""Tasks: how a dataset's samples feed a model, how the model is trained and how it is scored.

A task is registered through the ``autoprune_register_tasks`` hook as a class (or
any factory) built with the dataset's ``num_classes``; a dataset names its task in
its ``task`` attribute (``"classification"`` when it has none). A task's score is
one number in points, higher is better, and it is what an accuracy budget bounds:
top-1 accuracy for classification, COCO mAP@[.5:.95] for detection, mean IoU for
segmentation.

Subclass :class:`Task` and override what differs; the defaults are classification's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import default_collate

from .engine import call_model
from .engine.inputs import move_to
from .errors import AutopruneError
from .metrics import count_correct

#: The task of a dataset that names none.
DEFAULT_TASK = "classification"
Batches = Iterable[tuple[Any, Any]]


class Task:
    """One kind of prediction: its batches, loss and score (the defaults are top-1 classification).

    ``metric``: the score's name (``accuracy``, ``map``, ``miou``); ``metric_label``: how
    figures name it, with its unit; ``extra_metrics``: other numbers :meth:`scores` reports
    beside it (``map_50``).
    """

    name = "classification"
    metric = "accuracy"
    #: The score as figures and tables name it, with its unit.
    metric_label = "top-1 accuracy, %"
    extra_metrics: tuple[str, ...] = ()
    #: How ``autoprune export --format torchscript`` compiles the model: ``"trace"`` records one
    #: forward pass; ``"script"`` compiles its code, for models whose outputs' shapes depend on
    #: the data (a detector's score threshold and non-maximum suppression), which a trace would freeze.
    torchscript = "trace"
    #: Whether the score is the percentage of samples predicted right (top-1 accuracy), so a count
    #: that stops early bounds it exactly; a task that scores otherwise is scored on the whole split.
    #: A subclass that overrides :meth:`scores` is not countable unless it says so.
    countable = True
    #: Whether fine-tuning can distil from the unpruned model by matching its class probabilities (the
    #: model's outputs are class logits). A subclass that overrides :meth:`loss` is not, unless it says so.
    distillable = True
    #: Whether its models take any number of input channels (``in_channels``): a classifier does;
    #: torchvision's detectors and segmenters, normalizing RGB, take three.
    any_in_channels = True

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "metric" in cls.__dict__ and "metric_label" not in cls.__dict__:  # a new score, not its parent's label
            cls.metric_label = f"{cls.metric}, points"
        if "scores" in cls.__dict__ and "countable" not in cls.__dict__:
            cls.countable = False
        if "loss" in cls.__dict__ and "distillable" not in cls.__dict__:
            cls.distillable = False

    def __init__(self, num_classes: int) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
            raise AutopruneError(f"task {self.name!r} needs num_classes, an integer >= 1; got {num_classes!r}")
        self.num_classes = num_classes

    def collate(self, samples: Sequence[tuple[Any, Any]]) -> tuple[Any, Any]:
        """A DataLoader's ``collate_fn``: ``(inputs, targets)`` of a batch from its samples."""
        return default_collate(samples)

    def example(self, sample_input: Any) -> Any:
        """The model's inputs for one sample: what tracing and FLOPs run on."""
        return sample_input.unsqueeze(0)

    def repeated(self, sample_input: Any, batch_size: int) -> Any:
        """The model's inputs for ``batch_size`` copies of one sample: what latency is timed on."""
        return sample_input.unsqueeze(0).expand(batch_size, *sample_input.shape).contiguous()

    def export_inputs(self, sample_inputs: Sequence[Any]) -> list[Any]:
        """The model inputs an export is checked on, from a few validation samples: one batch of them."""
        return [torch.stack(list(sample_inputs))]

    def predict(self, model: nn.Module, inputs: Any) -> Any:
        """The model's predictions for a batch, in eval mode."""
        return call_model(model, inputs)

    def target_problem(self, target: Any, input_shape: tuple[int, ...]) -> str:
        """What is wrong with one sample's target ("" when nothing): the check
        :class:`autoprune.testing.DatasetConformance` runs for this task's datasets. Classification: a
        class index below num_classes."""
        try:
            label = int(target)
        except (TypeError, ValueError):
            return f"a target {type(target).__name__}, not a class index"
        return "" if 0 <= label < self.num_classes else f"class {label} outside 0..{self.num_classes - 1}"

    def output_problem(self, outputs: Any, batch_size: int, image_size: tuple[int, int]) -> str:
        """What is wrong with a model's eval-mode outputs for ``batch_size`` images of ``image_size``
        ("" when nothing): the check :class:`autoprune.testing.ModelConformance` runs for this task's
        models. Classification: ``(N, num_classes)`` logits."""
        shape = tuple(getattr(outputs, "shape", ()))
        expected = (batch_size, self.num_classes)
        return "" if shape == expected else f"outputs of shape {shape}, not {expected}"

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """The training loss of a batch (the model is in the mode the caller set)."""
        return F.cross_entropy(_logits(call_model(model, inputs)), targets.to(_device(model)))

    def gradient_loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """The loss whose gradients rank channels and weights (Taylor, SNIP, a plugin's ``needs_grads``
        importance): :meth:`loss` with the model in eval mode, so BatchNorm statistics stay as they are.
        The caller restores the model's mode."""
        model.eval()
        return self.loss(model, inputs, targets)

    def scores(self, model: nn.Module, batches: Batches) -> dict[str, float]:
        """``{metric: points, **extra_metrics}`` over ``batches``, in eval mode; the model is left as it was.
        (Override it with ``countable = True`` only for a score that is the percentage of samples right.)"""
        correct, seen = count_correct(model, batches)
        if not seen:
            raise AutopruneError(f"task {self.name!r} was asked for a score on no samples")
        return {self.metric: 100.0 * correct / seen}

    def score(self, model: nn.Module, batches: Batches) -> float:
        """The task's score in points (higher is better)."""
        return self.scores(model, batches)[self.metric]


class Detection(Task):
    """Object detection in torchvision's format, scored by COCO mAP@[.5:.95] in points (Lin et al., ECCV 2014).

    Samples are ``(image (3, H, W), {"boxes": (N, 4) xyxy pixels, "labels": (N,)})``;
    a batch is a list of images and a list of targets, as torchvision's detectors take
    them: ``model(images)`` in eval mode returns ``[{"boxes", "scores", "labels"}]``,
    ``model(images, targets)`` in training mode a dict of losses. mAP and mAP@.5 come
    from torchmetrics' ``MeanAveragePrecision`` with the pycocotools backend, the COCO
    reference evaluation.
    """

    name = "detection"
    any_in_channels = False
    metric = "map"
    metric_label = "COCO mAP@[.5:.95], points"
    extra_metrics = ("map_50",)
    torchscript = "script"

    def collate(self, samples: Sequence[tuple[Any, Any]]) -> tuple[list, list]:
        return [image for image, _ in samples], [target for _, target in samples]

    def example(self, sample_input: Any) -> Any:
        return ([sample_input],)

    def repeated(self, sample_input: Any, batch_size: int) -> Any:
        return ([sample_input] * batch_size,)

    def export_inputs(self, sample_inputs: Sequence[Any]) -> list[Any]:
        """One image at a time: torchvision's detectors export to ONNX for a list of one image."""
        return [([image],) for image in sample_inputs]

    def predict(self, model: nn.Module, inputs: Any) -> Any:
        return model(list(inputs))

    def target_problem(self, target: Any, input_shape: tuple[int, ...]) -> str:
        """torchvision's targets: ``(N, 4)`` xyxy boxes of positive size, one label of the classes each."""
        boxes, labels = target["boxes"], target["labels"]
        if boxes.ndim != 2 or boxes.shape[1:] != (4,) or len(boxes) != len(labels):
            return f"boxes of shape {tuple(boxes.shape)} for {len(labels)} labels, not (N, 4)"
        if not ((labels >= 0) & (labels < self.num_classes)).all():
            return f"a label outside 0..{self.num_classes - 1}"
        return "" if (boxes[:, 2:] > boxes[:, :2]).all() else "a box of no width or height"

    def output_problem(self, outputs: Any, batch_size: int, image_size: tuple[int, int]) -> str:
        """torchvision's detections: one ``{"boxes", "scores", "labels"}`` per image, labels < num_classes."""
        if not isinstance(outputs, list | tuple) or len(outputs) != batch_size:
            return f"not a list of {batch_size} detections"
        if not all(isinstance(d, dict) and {"boxes", "scores", "labels"} <= set(d) for d in outputs):
            return "a detection without boxes, scores and labels"
        if not all(((d["labels"] >= 0) & (d["labels"] < self.num_classes)).all() for d in outputs):
            return f"a label outside 0..{self.num_classes - 1}"
        return ""

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        device = _device(model)
        losses = model(list(_to(inputs, model)), [{k: v.to(device) for k, v in t.items()} for t in targets])
        if not isinstance(losses, dict):
            raise AutopruneError(
                "a detection model must return a dict of losses when called with targets in "
                f"training mode, as torchvision's detectors do; got {type(losses).__name__}"
            )
        return sum(losses.values())

    def gradient_loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        """The detector's training losses (it returns them in training mode only), with every
        normalization and dropout layer in eval mode, so their statistics stay as they are."""
        model.train()
        for module in model.modules():
            if isinstance(module, _FIXED_IN_GRADIENTS):
                module.eval()
        return self.loss(model, inputs, targets)

    def scores(self, model: nn.Module, batches: Batches) -> dict[str, float]:
        from torchmetrics.detection import MeanAveragePrecision

        metric = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", backend="pycocotools")
        seen = 0
        with _evaluating(model):
            for inputs, targets in batches:
                predictions = self.predict(model, _to(inputs, model))
                metric.update(
                    [{k: v.detach().cpu() for k, v in p.items()} for p in predictions],
                    [{k: v.cpu() for k, v in t.items()} for t in targets],
                )
                seen += len(targets)
        if not seen:
            raise AutopruneError(f"task {self.name!r} was asked for a score on no samples")
        result = metric.compute()
        return {"map": 100.0 * max(float(result["map"]), 0.0), "map_50": 100.0 * max(float(result["map_50"]), 0.0)}


class Segmentation(Task):
    """Semantic segmentation scored by mean intersection over union over the classes, in points.

    Samples are ``(image (C, H, W), labels (H, W) int64)``, pixels labelled
    ``IGNORE_INDEX`` counted nowhere. The model returns ``(N, num_classes, H, W)``
    logits, or a dict whose ``"out"`` holds them (torchvision's segmenters; an ``"aux"``
    map, when present, adds half its loss in training, as torchvision's references do).
    The IoU is accumulated over the whole split (torchmetrics' ``MulticlassJaccardIndex``,
    macro average), not averaged per image.
    """

    name = "segmentation"
    any_in_channels = False
    metric = "miou"
    metric_label = "mean IoU, points"
    IGNORE_INDEX = 255

    def target_problem(self, target: Any, input_shape: tuple[int, ...]) -> str:
        """One label per pixel of the image, each of the classes or ``IGNORE_INDEX``."""
        if tuple(target.shape) != tuple(input_shape[1:]):
            return f"labels of shape {tuple(target.shape)} for images of {tuple(input_shape)}"
        valid = (target >= 0) & (target < self.num_classes) | (target == self.IGNORE_INDEX)
        return "" if valid.all() else f"a pixel label outside 0..{self.num_classes - 1} and not {self.IGNORE_INDEX}"

    def output_problem(self, outputs: Any, batch_size: int, image_size: tuple[int, int]) -> str:
        """Per-pixel ``(N, num_classes, H, W)`` logits, or a dict holding them in ``"out"``."""
        logits = outputs["out"] if isinstance(outputs, dict) else outputs
        shape, expected = tuple(getattr(logits, "shape", ())), (batch_size, self.num_classes, *image_size)
        return "" if shape == expected else f"logits of shape {shape}, not {expected}"

    def loss(self, model: nn.Module, inputs: Any, targets: Any) -> torch.Tensor:
        out = call_model(model, inputs)
        targets = targets.to(_device(model))
        main = F.cross_entropy(_logits(out), targets, ignore_index=self.IGNORE_INDEX)
        if isinstance(out, dict) and out.get("aux") is not None:
            main = main + 0.5 * F.cross_entropy(out["aux"], targets, ignore_index=self.IGNORE_INDEX)
        return main

    def scores(self, model: nn.Module, batches: Batches) -> dict[str, float]:
        from torchmetrics.classification import MulticlassJaccardIndex

        metric = MulticlassJaccardIndex(self.num_classes, average="macro", ignore_index=self.IGNORE_INDEX)
        seen = 0
        with _evaluating(model):
            for inputs, targets in batches:
                metric.update(_logits(self.predict(model, _to(inputs, model))).argmax(1).cpu(), targets.cpu())
                seen += len(targets)
        if not seen:
            raise AutopruneError(f"task {self.name!r} was asked for a score on no samples")
        return {"miou": 100.0 * float(metric.compute())}


#: Layers whose training mode would change the model (statistics) or add noise to its gradients.
_FIXED_IN_GRADIENTS = (nn.modules.batchnorm._BatchNorm, nn.GroupNorm, nn.LayerNorm, nn.modules.dropout._DropoutNd)


def _logits(out: Any) -> torch.Tensor:
    """A model's main output: the tensor itself, or the ``"out"`` entry of torchvision's segmenters."""
    if isinstance(out, dict):
        if "out" not in out:
            raise AutopruneError(f"the model returned a dict with keys {sorted(out)}; a dict needs an 'out' entry")
        return out["out"]
    return out


def _device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _to(inputs: Any, model: nn.Module) -> Any:
    return move_to(inputs, _device(model))


@contextlib.contextmanager
def _evaluating(model: nn.Module) -> Iterator[None]:
    """Eval mode and no gradients while scoring; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            yield
    finally:
        model.train(was_training)
