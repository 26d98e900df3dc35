"""Saving a pruned model for deployment, checking the saved file, and measuring it.

Formats: ``torch`` (the whole module, read back with :func:`load`),
``torchscript`` and ``onnx``. TorchScript and ONNX files are reloaded (ONNX with
onnxruntime) and their outputs compared with the PyTorch model's on real inputs.
Latency is measured, not estimated: the median of repeated timed forward passes
with ``torch.utils.benchmark``, at the study's latency batch size.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..checkpoint import atomic_save
from ..errors import AutopruneError
from ..metrics import accuracy, latency_ms, measure

FORMATS = ("torch", "torchscript", "onnx")
MODEL_FORMAT = "autoprune-model-v1"


def measure_model(model: nn.Module, data: Any, *, latency_batch_size: int,
                  batch_size: int = 256) -> dict[str, float]:
    """Validation and test accuracy, FLOPs, parameters and latency (ms at ``latency_batch_size``)."""
    example = data.val[0][0].unsqueeze(0)
    result: dict[str, float] = {"val_accuracy": accuracy(model, DataLoader(data.val, batch_size=batch_size))}
    if data.test is not None:
        result["test_accuracy"] = accuracy(model, DataLoader(data.test, batch_size=batch_size))
    result.update(measure(model, example))
    timing_input = example.expand(latency_batch_size, *example.shape[1:]).contiguous()
    result["latency_ms"] = latency_ms(model, timing_input)
    return result


def real_batch(data: Any, count: int) -> torch.Tensor:
    """The first ``count`` validation inputs, to check exports on real data."""
    return torch.stack([data.val[i][0] for i in range(min(count, len(data.val)))])


def save(model: nn.Module, path: str | Path, fmt: str, example: torch.Tensor, check: torch.Tensor,
         metadata: dict | None = None, atol: float = 1e-4) -> float:
    """Save ``model`` as ``fmt`` and return the largest output difference on ``check`` after reloading."""
    if fmt not in FORMATS:
        raise AutopruneError(f"unknown format {fmt!r}; valid: {', '.join(FORMATS)}")
    path = Path(path)
    model = model.eval()
    with torch.no_grad():
        expected = model(check)
    tmp = path.with_name(path.name + ".tmp")
    if fmt == "torch":
        save_model(model, path, metadata)
        with torch.no_grad():
            got = load(path)(check)
    elif fmt == "torchscript":
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # TorchScript is deprecated but still deployed widely
            torch.jit.trace(model, example).save(str(tmp))
            tmp.replace(path)
            got = torch.jit.load(str(path))(check)
    else:
        import onnxruntime

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (example,), str(tmp), input_names=["input"], output_names=["logits"],
                              dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, dynamo=False)
        tmp.replace(path)
        session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
        got = torch.from_numpy(session.run(None, {"input": check.numpy()})[0])
    difference = float((got - expected).abs().max())
    if difference > atol:
        raise AutopruneError(f"the {fmt} export of {path} differs from the PyTorch model by {difference:.2e} (> {atol})")
    return difference


def save_model(model: nn.Module, path: str | Path, metadata: dict | None = None) -> None:
    """Save a whole pruned model (written atomically) so that :func:`load` reads it without its plan."""
    atomic_save({"format": MODEL_FORMAT, "model": model, "metadata": metadata or {}}, Path(path))


def load(path: str | Path) -> nn.Module:
    """Load a model saved by ``autoprune export --format torch`` (no plan needed).

    The file holds a pickled module: load only files you trust.
    """
    try:
        saved = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise AutopruneError(f"{str(path)!r} does not exist") from None
    if not isinstance(saved, dict) or saved.get("format") != MODEL_FORMAT:
        raise AutopruneError(f"{str(path)!r} is not a model saved by autoprune export --format torch")
    return saved["model"].eval()
