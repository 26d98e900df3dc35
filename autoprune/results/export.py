"""Saving a pruned model for deployment, checking the saved file, and measuring it.

Formats: ``torch`` (weights, plan and the registered model's name, read back with
:func:`load` using ``torch.load(..., weights_only=True)`` only: no pickled code),
``torchscript`` and ``onnx``. TorchScript and ONNX files are reloaded (ONNX with
onnxruntime) and their outputs compared with the PyTorch model's on real inputs.
Latency is measured, not estimated: the median of repeated timed forward passes
with ``torch.utils.benchmark``, at the study's latency batch size.
"""

from __future__ import annotations

import copy
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import atomic_save, load_weights
from ..errors import AutopruneError
from ..files import atomic_write
from ..metrics import measure
from ..provenance import note, provenance
from ..runtimes import PYTORCH_CPU, Runtime, time_ms
from ..zoo import dataset_task

FORMATS = ("torch", "torchscript", "onnx")
MODEL_FORMAT = "autoprune-model-v2"
#: The file suffixes each format is written with; a suffix of one format and not of another contradicts it.
SUFFIXES = {"torch": (".pt", ".pth"), "torchscript": (".pt", ".pth", ".ts", ".torchscript"), "onnx": (".onnx",)}


def output_format(path: str | Path, fmt: str | None = None) -> str:
    """The format an export to ``path`` is written in: ``fmt``, or when it is None the one ``path``'s suffix
    names (``.onnx``: onnx, ``.ts`` or ``.torchscript``: torchscript, any other: torch).

    An empty path, a folder, a path inside a file, an unknown format and a suffix that contradicts
    ``fmt`` (``m.onnx`` as torch) are each a one-line error, before any work.
    """
    if not str(path).strip():
        raise AutopruneError(f"the output file is empty ({str(path)!r}); give the file to write, e.g. pruned.pt")
    path = Path(path)
    if path.is_dir():
        raise AutopruneError(
            f"the output {str(path)!r} is a folder; give the file to write, e.g. {str(path / 'pruned.pt')!r}"
        )
    existing = next(p for p in path.absolute().parents if p.exists())
    if not existing.is_dir():
        raise AutopruneError(f"the output {str(path)!r} is inside {str(existing)!r}, which is a file")
    suffix = path.suffix.lower()
    if fmt is None:
        return {".onnx": "onnx", ".ts": "torchscript", ".torchscript": "torchscript"}.get(suffix, "torch")
    if fmt not in FORMATS:
        raise AutopruneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    named = [f for f in FORMATS if suffix in SUFFIXES[f]]
    if named and fmt not in named:
        raise AutopruneError(
            f"the output {path.name!r} has the suffix of {' or '.join(named)} files but the format is {fmt}; "
            f"name it {' or '.join(SUFFIXES[fmt])}, or give format {named[0]}"
        )
    return fmt


def measure_model(
    model: nn.Module, data: Any, *, latency_batch_size: int, batch_size: int = 256, runtime: Runtime = PYTORCH_CPU
) -> dict[str, float]:
    """The task's scores on the validation and test splits (``val_accuracy``, or ``val_map`` and
    ``val_map_50`` for detection, ``val_miou`` for segmentation; ``test_...`` likewise), FLOPs,
    parameters and latency (ms at ``latency_batch_size`` in ``runtime``: the exported graph in a
    deployment runtime, or PyTorch; the fastest of its timed blocks)."""
    task = dataset_task(data)
    sample = data.val[0][0]
    result: dict[str, float] = {}
    for split in ("val", "test"):
        if getattr(data, split) is not None:
            loader = DataLoader(getattr(data, split), batch_size=batch_size, collate_fn=task.collate)
            result.update({f"{split}_{name}": value for name, value in task.scores(model, loader).items()})
    result.update(measure(model, task.example(sample)))
    result["latency_ms"] = time_ms(model, task.repeated(sample, latency_batch_size), runtime, min_run_time=0.5)
    return result


def check_inputs(task: Any, data: Any, count: int) -> list[Any]:
    """Model inputs from the first ``count`` validation samples, to check exports on real data
    (one batch, or one image at a time for a detector: the task's :meth:`~autoprune.tasks.Task.export_inputs`)."""
    return task.export_inputs([data.val[i][0] for i in range(min(count, len(data.val)))])


def save(
    model: nn.Module,
    path: str | Path,
    fmt: str,
    example: Any,
    checks: list[Any],
    metadata: dict | None = None,
    atol: float = 1e-4,
    unpruned: nn.Module | None = None,
    torchscript: str = "trace",
) -> float:
    """Save ``model`` as ``fmt`` and return the largest output difference on ``checks`` after reloading.

    ``example``: model inputs to trace on (a batch tensor, or a tuple of arguments);
    ``checks``: a list of model inputs the reloaded file must reproduce the model's outputs on
    (every output tensor, nested in lists and dicts or not, compared in order).
    ``torchscript``: ``"trace"`` or ``"script"`` (detectors, whose outputs' shapes depend on
    the data). ``unpruned``: the model before pruning, which :func:`load` needs to rebuild a
    ``torch`` file of a model that :func:`autoprune.create_model` did not build.
    """
    from ..engine import call_model
    from ..engine.inputs import input_shape

    fmt = output_format(path, fmt)
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        expected = [call_model(model, inputs) for inputs in checks]
    if fmt == "torch":
        save_model(model, path, metadata, input_shape=tuple(input_shape(example)[1]))
        reloaded = load(path, model=unpruned)
        with torch.no_grad():
            got = [call_model(reloaded, inputs) for inputs in checks]
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript is deprecated but still deployed widely
            try:
                compiled = (
                    torch.jit.script(model)
                    if torchscript == "script"
                    else torch.jit.trace(model, example if isinstance(example, tuple) else (example,), strict=False)
                )
            except Exception as exc:  # noqa: BLE001 -- Python TorchScript cannot compile, whatever it raises
                detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
                raise AutopruneError(
                    f"this model cannot be {'scripted' if torchscript == 'script' else 'traced'} to TorchScript "
                    f"({detail}); --format onnx or torch can save it"
                ) from None
            atomic_write(path, lambda tmp: compiled.save(str(tmp)))
            reloaded = torch.jit.load(str(path))
            got = [_scripted_outputs(call_model(reloaded, inputs)) for inputs in checks]
    else:
        got = _save_onnx(model, path, example, checks, expected)
    difference = _largest_difference(expected, got, fmt, path, atol)
    if difference > atol:
        raise AutopruneError(
            f"the {fmt} export of {path} differs from the PyTorch model by {difference:.2e} (> {atol})"
        )
    return difference


def _scripted_outputs(out: Any) -> Any:
    """A scripted torchvision detector returns ``(losses, detections)``; the detections are its outputs."""
    if isinstance(out, tuple) and len(out) == 2 and isinstance(out[0], dict) and isinstance(out[1], list):
        return out[1]
    return out


def _onnx_names(inputs: Any, outputs: Any) -> tuple[list[str], list[str], dict[str, dict[int, str]]]:
    """Input and output names and dynamic axes of an ONNX file: a batch tensor in and a tensor (``logits``)
    or a dict of them out, with the batch dynamic; or one image in (``image``, its height and width
    dynamic) and a detector's ``boxes``, ``scores`` and ``labels`` out.

    A dense prediction (a segmenter's: an ``(N, C, H, W)`` output of the input's height and width) has
    its height and width dynamic too, in and out. A classifier's stay those it was traced at: many
    flatten features sized for one input into a linear layer."""
    if isinstance(inputs, tuple) and len(inputs) == 1 and isinstance(inputs[0], list):
        image_out = outputs[0] if isinstance(outputs, list) else outputs
        names = list(image_out) if isinstance(image_out, dict) else ["output"]
        return ["image"], names, {"image": {1: "height", 2: "width"}, **{n: {0: "detections"} for n in names}}
    tensors = outputs if isinstance(outputs, dict) else {"logits": outputs}
    image = inputs[0] if isinstance(inputs, tuple) and len(inputs) == 1 else None
    dense = {
        name
        for name, out in tensors.items()
        if isinstance(image, torch.Tensor)
        and image.dim() == 4
        and isinstance(out, torch.Tensor)
        and out.dim() == 4
        and out.shape[-2:] == image.shape[-2:]
    }
    size = {2: "height", 3: "width"}
    axes = {name: {0: "batch", **(size if name in dense else {})} for name in tensors}
    return ["input"], list(tensors), {"input": {0: "batch", **(size if dense else {})}, **axes}


def _save_onnx(model: nn.Module, path: Path, example: Any, checks: list[Any], expected: list[Any]) -> list[Any]:
    """Export to ONNX (TorchScript-based exporter) and run ``checks`` through onnxruntime."""
    import onnxruntime
    import torch_pruning as tp

    args = example if isinstance(example, tuple) else (example,)
    input_names, output_names, axes = _onnx_names(args, expected[0])

    def write_onnx(tmp: Path) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(
                model,
                args,
                str(tmp),
                input_names=input_names,
                output_names=output_names,
                dynamic_axes=axes,
                dynamo=False,
            )

    try:
        atomic_write(path, write_onnx)
    except AutopruneError:
        raise
    except Exception as exc:  # noqa: BLE001 -- an operator ONNX cannot express, whatever the exporter raises
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutopruneError(
            f"this model cannot be exported to ONNX ({detail}); --format torchscript or torch can save it"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [i.name for i in session.get_inputs()]
    got = []
    for inputs in checks:
        tensors = tp.utils.flatten_as_list(inputs if isinstance(inputs, tuple) else (inputs,))
        got.append([torch.from_numpy(a) for a in session.run(None, {n: t.numpy() for n, t in zip(names, tensors)})])
    return got


#: The share of a detector's detections that may differ between a reloaded export and the
#: PyTorch model: non-maximum suppression and top-k selection order near-equal scores by
#: floating-point noise, so a few detections can swap at the margins (torchvision's own ONNX
#: tests tolerate small mismatches the same way).
DETECTION_MISMATCH = 0.05


def _largest_difference(expected: list[Any], got: list[Any], fmt: str, path: Path, atol: float) -> float:
    """The largest absolute difference between two runs' output tensors, taken in order; a
    detector's detections are matched by label and box instead (:data:`DETECTION_MISMATCH`)."""
    import torch_pruning as tp

    difference = 0.0
    for want, have in zip(expected, got):
        if _detections(want):
            difference = max(difference, _detections_difference(want, _as_detections(have, want), fmt, path, atol))
            continue
        want, have = tp.utils.flatten_as_list(want), tp.utils.flatten_as_list(have)
        shapes = [tuple(t.shape) for t in want], [tuple(t.shape) for t in have]
        if shapes[0] != shapes[1]:
            raise AutopruneError(
                f"the {fmt} export of {path} returns outputs of shapes {shapes[1]}, the PyTorch model {shapes[0]}"
            )
        for a, b in zip(want, have):
            if a.numel():
                difference = max(difference, float((a.float() - b.float()).abs().max()))
    return difference


def _detections(out: Any) -> bool:
    return (
        isinstance(out, list)
        and bool(out)
        and all(isinstance(d, dict) and {"boxes", "scores", "labels"} <= set(d) for d in out)
    )


def _as_detections(out: Any, like: list[dict]) -> list[dict]:
    """An export's outputs as ``[{"boxes", "scores", "labels"}]``: ONNX returns the tensors flat, in order."""
    if _detections(out):
        return out
    flat = list(out)
    keys = list(like[0])
    return [dict(zip(keys, flat[i * len(keys) : (i + 1) * len(keys)])) for i in range(len(like))]


def _detections_difference(want: list[dict], have: list[dict], fmt: str, path: Path, atol: float) -> float:
    """The largest difference between two runs' detections, compared in order where they agree in
    order; otherwise each detection is matched to one of the same label whose box and score are
    within ``atol``, and more than :data:`DETECTION_MISMATCH` of them unmatched is an error.

    Box coordinates are in pixels, so beyond one pixel they are compared relative to their size (float32
    carries about seven digits: a 600-pixel coordinate differs by about 1e-4 after any rewrite)."""
    difference, unmatched, total = 0.0, 0, 0
    for a, b in zip(want, have):
        a = {k: v.float() for k, v in a.items()}
        b = {k: v.float() for k, v in b.items()}
        count = max(len(a["scores"]), len(b["scores"]))
        total += count
        if len(a["scores"]) == len(b["scores"]) and torch.equal(a["labels"], b["labels"]):
            in_order = max(
                (float(_box_gap(a["boxes"], b["boxes"]).max()), float((a["scores"] - b["scores"]).abs().max()))
                if a["scores"].numel()
                else (0.0,)
            )
            if in_order <= atol:
                difference = max(difference, in_order)
                continue
        if not len(a["scores"]) or not len(b["scores"]):
            unmatched += count
            continue
        gap = torch.maximum(
            _box_gap(a["boxes"][:, None, :], b["boxes"][None, :, :]).amax(-1),
            (a["scores"][:, None] - b["scores"][None, :]).abs(),
        )
        gap[a["labels"][:, None] != b["labels"][None, :]] = float("inf")
        nearest = gap.min(1).values
        matched = nearest <= atol
        unmatched += int((~matched).sum()) + max(0, len(b["scores"]) - len(a["scores"]))
        if matched.any():
            difference = max(difference, float(nearest[matched].max()))
    if unmatched > DETECTION_MISMATCH * total:
        raise AutopruneError(
            f"the {fmt} export of {path} differs from the PyTorch model in {unmatched} of its "
            f"{total} detections (more than {DETECTION_MISMATCH:.0%})"
        )
    return difference


def _box_gap(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Each coordinate's difference, relative to the coordinate where it is over one pixel."""
    return (a - b).abs() / torch.maximum(a.abs(), b.abs()).clamp(min=1.0)


def save_model(
    model: nn.Module, path: str | Path, metadata: dict | None = None, input_shape: tuple[int, ...] | None = None
) -> None:
    """Save a pruned model (atomically) so that :func:`load` rebuilds it from tensors and plain data.

    The file holds the weights, the plan (``metadata["rates"]``), one input's shape and,
    when the model came from :func:`autoprune.create_model`, its registered name and
    parameters: :func:`load` builds the model, prunes it to the plan's widths and loads
    the weights, so reading the file unpickles nothing.
    """
    source = provenance(model)
    architecture = {k: source[k] for k in ("model", "model_params", "num_classes", "in_channels") if k in source}
    atomic_save(
        {
            "format": MODEL_FORMAT,
            "state_dict": model.state_dict(),
            "architecture": architecture,
            "input_shape": None if input_shape is None else [int(n) for n in input_shape],
            "metadata": metadata or {},
        },
        Path(path),
    )


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The pruned model in a file written by ``autoprune export --format torch`` (or a search's ``best.pt``).

    The file is read with ``weights_only=True``. ``model``: the unpruned model, needed
    only when the saved one was not built by :func:`autoprune.create_model` (a model of
    your own); it is not changed.
    """
    from ..engine import prune
    from ..zoo import create_model

    path = Path(path)
    if path.is_dir():
        raise AutopruneError(
            f"{str(path)!r} is a folder; give a model file, such as a search's {str(path / 'best.pt')!r}"
        )
    if not path.is_file():
        raise AutopruneError(f"{str(path)!r} does not exist")
    not_a_model = f"{str(path)!r} is not a model saved by autoprune (autoprune export --format torch or best.pt)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - an unreadable or pickled-code file: never retried without weights_only
        raise AutopruneError(not_a_model) from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise AutopruneError(not_a_model)
    architecture, metadata = saved.get("architecture") or {}, saved.get("metadata") or {}
    if model is not None:
        model = copy.deepcopy(model)
    elif "model" in architecture:
        model = create_model(
            architecture["model"],
            architecture["num_classes"],
            architecture["in_channels"],
            **architecture.get("model_params", {}),
        )
    else:
        raise AutopruneError(
            f"{str(path)!r} holds a model autoprune did not build; give the unpruned model: "
            "autoprune.load(path, model=...)"
        )
    rates = metadata.get("rates")
    if rates:
        if saved.get("input_shape") is None:
            raise AutopruneError(f"{str(path)!r} does not record the input shape its plan was pruned for")
        example = torch.zeros(1, *saved["input_shape"])
        # the plan's widths (with its round_to and round_min, Plan.to_dict's keys); the weights come next
        rounding = {"round_to": int(metadata.get("round_to", 1)), "round_min": int(metadata.get("round_min", 0))}
        model = prune(model.eval(), example, rates, "l1", **rounding)
    load_weights(model, saved["state_dict"], f"the weights in {str(path)!r}", "the rebuilt model")
    note(model, **architecture)
    return model.eval()
