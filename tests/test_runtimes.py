"""Timing in the runtime a model ships with: the exported graph in ONNX Runtime and OpenVINO, PyTorch itself,
and one-line errors for a runtime this machine does not have."""

from __future__ import annotations

import copy

import numpy as np
import onnxruntime
import pytest
import torch
from torch import nn

import autoprune
from autoprune import runtimes
from autoprune.runtimes import Runtime, fastest_ms, onnx_bytes, time_ms


class Convs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.BatchNorm2d(32), nn.ReLU(), nn.Conv2d(32, 16, 3))
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(self.body(x).mean((2, 3)))


class TwoImages(nn.Module):
    """Takes a list of images, as torchvision's detectors do."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, images):
        return torch.stack([self.conv(image.unsqueeze(0)).sum() for image in images])


@pytest.mark.parametrize("backend", ["torch", "onnxruntime", "openvino"])
def test_each_cpu_runtime_times_a_copy_and_leaves_the_model_as_it_was(backend):
    model = Convs().train()
    before = copy.deepcopy(model.state_dict())
    runtime = Runtime(backend, "cpu", 1)
    assert time_ms(model, torch.randn(2, 3, 16, 16), runtime, min_run_time=0.02) > 0
    assert model.training and all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_the_exported_graph_computes_what_the_model_does_on_nested_inputs_too():
    model, x = Convs().eval(), torch.randn(2, 3, 16, 16)
    session = onnxruntime.InferenceSession(onnx_bytes(model, x), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    np.testing.assert_allclose(out, model(x).detach().numpy(), atol=1e-5)
    images = ([torch.randn(3, 9, 9), torch.randn(3, 9, 9)],)  # a detector's argument: a list of images
    session = onnxruntime.InferenceSession(onnx_bytes(TwoImages(), images), providers=["CPUExecutionProvider"])
    assert len(session.get_inputs()) == 2
    assert time_ms(TwoImages(), images, Runtime("onnxruntime"), min_run_time=0.02) > 0


def test_fastest_ms_warms_up_and_times_at_least_three_blocks():
    calls = []
    assert fastest_ms(lambda: calls.append(1), min_run_time=0.0) > 0
    assert len(calls) >= runtimes.WARMUP_CALLS + 1 + 3


def test_a_runtime_this_machine_lacks_is_one_line_naming_what_would_do(monkeypatch):
    def refused(runtime: Runtime) -> str:
        with pytest.raises(autoprune.AutopruneError) as err:
            runtime.check()
        return str(err.value)

    assert (
        refused(Runtime("tflite")) == "latency_backend is one of torch, onnxruntime, openvino, tensorrt, got 'tflite'"
    )
    assert (
        refused(Runtime("openvino", "cuda")) == "latency_backend = 'openvino' times on cpu, not latency_device = 'cuda'"
    )
    assert (
        refused(Runtime("tensorrt", "cpu")) == "latency_backend = 'tensorrt' times on cuda, not latency_device = 'cpu'"
    )
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert refused(Runtime("onnxruntime", "cuda")).startswith("latency_device = 'cuda' but this machine has no CUDA")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU, but not the runtime's packages
    monkeypatch.setattr(onnxruntime, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert refused(Runtime("onnxruntime", "cuda")) == (
        "this onnxruntime has no CUDAExecutionProvider (it has CPUExecutionProvider); install onnxruntime-gpu to "
        "time on CUDA"
    )
    real_import = runtimes.importlib.import_module
    monkeypatch.setattr(
        runtimes.importlib,
        "import_module",
        lambda name: (_ for _ in ()).throw(ImportError(name)) if name == "tensorrt" else real_import(name),
    )
    assert refused(Runtime("tensorrt", "cuda")) == (
        "latency_backend = 'tensorrt' needs the tensorrt package, which is not installed: pip install "
        "'autoprune[tensorrt]' on a machine with CUDA"
    )


def test_a_model_onnx_cannot_express_says_so_and_names_the_way_out():
    class Untraceable(nn.Module):
        def forward(self, x):
            if torch.jit.is_tracing():
                raise RuntimeError("an operator without an ONNX form")
            return x

    with pytest.raises(autoprune.AutopruneError) as err:
        time_ms(Untraceable(), torch.randn(1, 3), Runtime("onnxruntime"))
    assert str(err.value) == (
        "this model cannot be exported to ONNX to time it (an operator without an ONNX form); "
        "latency_backend = 'torch' times it"
    )
    with pytest.raises(autoprune.AutopruneError, match="takes tensors .* as input, got dict"):
        time_ms(Convs(), {"x": torch.randn(1, 3, 8, 8)}, Runtime("onnxruntime"))


def test_the_runtime_of_a_study_and_its_description():
    settings = autoprune.SearchSettings(max_accuracy_drop=1.0, latency_backend="onnxruntime", latency_threads=1)
    runtime = Runtime.of(settings)
    assert runtime == Runtime("onnxruntime", "cpu", 1)
    assert runtime.describe() == "onnxruntime CPUExecutionProvider, 1 thread"
    assert Runtime().describe() == "torch cpu, default threads" and Runtime("openvino", threads=4).provider == (
        "openvino CPU"
    )
    with pytest.raises(
        autoprune.AutopruneError, match="latency_device must be 'cuda' with latency_backend = 'tensorrt'"
    ):
        autoprune.SearchSettings(max_accuracy_drop=1.0, latency_backend="tensorrt")
