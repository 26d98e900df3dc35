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

from ..checkpoint import atomic_save
from ..files import atomic_write
from ..errors import AutopruneError
from ..metrics import latency_ms, measure
from ..zoo import dataset_task
from ..provenance import note, provenance

FORMATS = ("torch", "torchscript", "onnx")
MODEL_FORMAT = "autoprune-model-v2"


def measure_model(model: nn.Module, data: Any, *, latency_batch_size: int,
                  batch_size: int = 256) -> dict[str, float]:
    """The task's score on the validation and test splits (top-1 accuracy for classification), FLOPs,
    parameters and latency (ms at ``latency_batch_size``)."""
    task = dataset_task(data)
    sample = data.val[0][0]
    result: dict[str, float] = {
        "val_accuracy": task.score(model, DataLoader(data.val, batch_size=batch_size, collate_fn=task.collate))}
    if data.test is not None:
        result["test_accuracy"] = task.score(model, DataLoader(data.test, batch_size=batch_size,
                                                               collate_fn=task.collate))
    result.update(measure(model, task.example(sample)))
    result["latency_ms"] = latency_ms(model, task.repeated(sample, latency_batch_size))
    return result


def real_batch(data: Any, count: int) -> torch.Tensor:
    """The first ``count`` validation inputs, to check exports on real data."""
    return torch.stack([data.val[i][0] for i in range(min(count, len(data.val)))])


def save(model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, check: torch.Tensor,
         metadata: dict | None = None, atol: float = 1e-4, unpruned: nn.Module | None = None) -> float:
    """Save ``model`` as ``fmt`` and return the largest output difference on ``check`` after reloading.

    ``unpruned``: the model before pruning, which :func:`load` needs to rebuild a
    ``torch`` file of a model that :func:`autoprune.create_model` did not build.
    """
    if fmt not in FORMATS:
        raise AutopruneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        expected = model(check)
    if fmt == "torch":
        save_model(model, path, metadata, input_shape=tuple(example.shape[1:]))
        with torch.no_grad():
            got = load(path, model=unpruned)(check)
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still deployed widely
            traced = torch.jit.trace(model, example)
            atomic_write(path, lambda tmp: traced.save(str(tmp)))
            got = torch.jit.load(str(path))(check)
    else:
        import onnxruntime

        def write_onnx(tmp: Path) -> None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                                  dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)

        atomic_write(path, write_onnx)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": check.numpy()})[0])
    difference = float((got - expected).abs().max())
    if difference > atol:
        raise AutopruneError(f"the {fmt} export of {path} differs from the PyTorch model by {difference:.2e} (> {atol})")
    return difference


def save_model(model: nn.Module, path: str | Path, metadata: dict | None = None,
               input_shape: tuple[int, ...] | None = None) -> None:
    """Save a pruned model (atomically) so that :func:`load` rebuilds it from tensors and plain data.

    The file holds the weights, the plan (``metadata["rates"]``), one input's shape and,
    when the model came from :func:`autoprune.create_model`, its registered name and
    parameters: :func:`load` builds the model, prunes it to the plan's widths and loads
    the weights, so reading the file unpickles nothing.
    """
    source = provenance(model)
    architecture = {k: source[k] for k in ("model", "model_params", "num_classes", "in_channels") if k in source}
    atomic_save({"format": MODEL_FORMAT, "state_dict": model.state_dict(), "architecture": architecture,
                 "input_shape": None if input_shape is None else [int(n) for n in input_shape],
                 "metadata": metadata or {}}, Path(path))


def load(path: str | Path, model: nn.Module | None = None) -> nn.Module:
    """The pruned model in a file written by ``autoprune export --format torch`` (or a search's ``best.pt``).

    The file is read with ``weights_only=True``. ``model``: the unpruned model, needed
    only when the saved one was not built by :func:`autoprune.create_model` (a model of
    your own); it is not changed.
    """
    from ..engine import prune
    from ..zoo import create_model

    path = Path(path)
    if not path.is_file():
        raise AutopruneError(f"{str(path)!r} does not exist")
    not_a_model = f"{str(path)!r} is not a model saved by autoprune (autoprune export --format torch or best.pt)"
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # an unreadable or pickled-code file: never retried without weights_only
        raise AutopruneError(not_a_model) from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise AutopruneError(not_a_model)
    architecture, metadata = saved.get("architecture") or {}, saved.get("metadata") or {}
    if model is not None:
        model = copy.deepcopy(model)
    elif "model" in architecture:
        model = create_model(architecture["model"], architecture["num_classes"], architecture["in_channels"],
                             **architecture.get("model_params", {}))
    else:
        raise AutopruneError(f"{str(path)!r} holds a model autoprune did not build; give the unpruned model: "
                             "autoprune.load(path, model=...)")
    rates = metadata.get("rates")
    if rates:
        if saved.get("input_shape") is None:
            raise AutopruneError(f"{str(path)!r} does not record the input shape its plan was pruned for")
        example = torch.zeros(1, *saved["input_shape"])
        model = prune(model.eval(), example, rates, "l1")  # the plan's widths; the weights come next
    try:
        model.load_state_dict(saved["state_dict"])
    except RuntimeError as exc:
        detail = " ".join(line.strip() for line in str(exc).strip().splitlines()[:3])
        raise AutopruneError(f"the weights in {str(path)!r} do not fit the rebuilt model: {detail}") from None
    note(model, **architecture)
    return model.eval()
