"""Timing a model in the runtime it is deployed with: PyTorch, ONNX Runtime, OpenVINO or TensorRT.

A pruned model's speed-up in PyTorch eager mode is not the one its user sees: what
ships runs as an exported graph in a deployment runtime, whose kernels favour channel
counts that are multiples of 8 or 16 (a pruned model can even be slower there than
the model it came from; docs/benchmarks.md measures it). A :class:`Runtime` names the
backend (``study.latency_backend``), the device and the threads (``study.latency_threads``);
:func:`time_ms` exports the model as its user would (ONNX, the TorchScript-based
exporter, fixed shapes), loads it in that runtime, and times it:

- ``torch``: the PyTorch module itself, ``torch.utils.benchmark`` (no export).
- ``onnxruntime``: ONNX Runtime's CPU execution provider on ``cpu``, its CUDA
  provider on ``cuda`` (the onnxruntime-gpu package), with its graph optimisations on.
- ``openvino``: OpenVINO's CPU plugin with the latency hint (the ``openvino`` extra).
- ``tensorrt``: an engine built by TensorRT from the ONNX graph, on ``cuda`` (the
  ``tensorrt`` extra); float32, as the other backends.

The two last are imported only when asked for. Every backend is timed the same way
(:func:`fastest_ms`): warm-up calls, then blocks of calls for ``min_run_time``
seconds, the fastest block's mean, which other processes on a shared machine disturb least.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import io
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import AutopruneError

#: The runtimes latency can be timed in (``study.latency_backend``).
BACKENDS = ("torch", "onnxruntime", "openvino", "tensorrt")
#: The devices each runtime times on here (OpenVINO's GPU plugin is Intel's, not CUDA; TensorRT is CUDA's).
DEVICES = {"torch": ("cpu", "cuda"), "onnxruntime": ("cpu", "cuda"), "openvino": ("cpu",), "tensorrt": ("cuda",)}
#: The module each runtime needs, and how to install it.
MODULES = {
    "onnxruntime": ("onnxruntime", "it is one of autoprune's dependencies: pip install onnxruntime"),
    "openvino": ("openvino", "pip install 'autoprune[openvino]'"),
    "tensorrt": ("tensorrt", "pip install 'autoprune[tensorrt]' on a machine with CUDA"),
}
#: ONNX Runtime's execution provider per device.
ORT_PROVIDERS = {"cpu": "CPUExecutionProvider", "cuda": "CUDAExecutionProvider"}
#: Calls before timing starts (kernels chosen, caches and allocators warm).
WARMUP_CALLS = 3


@dataclass(frozen=True)
class Runtime:
    """Where latency is timed: ``backend`` (one of :data:`BACKENDS`) on ``device`` (``cpu`` or ``cuda``)
    with ``threads`` CPU threads (0: the runtime's own default)."""

    backend: str = "torch"
    device: str = "cpu"
    threads: int = 0

    @classmethod
    def of(cls, settings: Any, device: str | None = None) -> Runtime:
        """The runtime a study's settings name (``latency_backend``, ``latency_device``, ``latency_threads``);
        ``device`` in place of ``latency_device`` when given."""
        return cls(settings.latency_backend, device or settings.latency_device, settings.latency_threads)

    @property
    def provider(self) -> str:
        """What runs the model, as the report and the latency table name it: ``onnxruntime
        CPUExecutionProvider``, ``openvino CPU``, ``tensorrt cuda``, ``torch cpu``."""
        if self.backend == "onnxruntime":
            return f"onnxruntime {ORT_PROVIDERS[self.device]}"
        if self.backend == "openvino":
            return "openvino CPU"
        return f"{self.backend} {self.device}"

    def describe(self) -> str:
        """``onnxruntime CPUExecutionProvider, 1 thread`` (or ``default threads``)."""
        threads = "default threads" if not self.threads else f"{self.threads} thread{'s' * (self.threads != 1)}"
        return f"{self.provider}, {threads}"

    def check(self) -> None:
        """Refuse, in one line, a runtime this machine cannot time on: an unknown backend, a device it does
        not run on, a module not installed, no CUDA device, or ONNX Runtime without its CUDA provider."""
        if self.backend not in BACKENDS:
            raise AutopruneError(f"latency_backend is one of {', '.join(BACKENDS)}, got {self.backend!r}")
        if self.device not in DEVICES[self.backend]:
            raise AutopruneError(
                f"latency_backend = {self.backend!r} times on {' or '.join(DEVICES[self.backend])}, "
                f"not latency_device = {self.device!r}"
            )
        if self.device == "cuda" and not torch.cuda.is_available():
            raise AutopruneError(
                "latency_device = 'cuda' but this machine has no CUDA device; use 'cpu' or run "
                "`autoprune latency-table` on the target and give latency_table"
            )
        if self.backend in MODULES:
            module, install = MODULES[self.backend]
            try:
                runtime = importlib.import_module(module)
            except ImportError:
                raise AutopruneError(
                    f"latency_backend = {self.backend!r} needs the {module} package, which is not installed: {install}"
                ) from None
            if self.backend == "onnxruntime" and ORT_PROVIDERS[self.device] not in runtime.get_available_providers():
                raise AutopruneError(
                    f"this onnxruntime has no {ORT_PROVIDERS[self.device]} (it has "
                    f"{', '.join(runtime.get_available_providers())}); install onnxruntime-gpu to time on CUDA"
                )


#: PyTorch on the CPU, with its default threads: where latency is timed unless a study says otherwise.
PYTORCH_CPU = Runtime()


def time_ms(model: nn.Module, inputs: Any, runtime: Runtime = PYTORCH_CPU, min_run_time: float = 0.2) -> float:
    """Milliseconds of one forward pass of ``model`` on ``inputs`` (a tensor or a tuple of them) in ``runtime``,
    the fastest block of :func:`fastest_ms`. ``model`` is not changed (a copy is moved or exported)."""
    runtime.check()
    model = copy.deepcopy(model).eval()
    if runtime.backend == "torch":
        return _time_torch(model, inputs, runtime, min_run_time)
    graph = onnx_bytes(model, inputs)
    arrays = [t.detach().cpu().float().numpy() for t in _tensors(inputs)]
    build = {"onnxruntime": _onnxruntime_call, "openvino": _openvino_call, "tensorrt": _tensorrt_call}
    call, synchronize = build[runtime.backend](graph, arrays, runtime)
    return fastest_ms(call, min_run_time, synchronize)


def fastest_ms(call: Callable[[], Any], min_run_time: float, synchronize: Callable[[], None] = lambda: None) -> float:
    """``call`` run :data:`WARMUP_CALLS` times, then in blocks of about 10 ms (at least 3 blocks, and at least
    ``min_run_time`` seconds in all): the mean milliseconds per call of the fastest block."""
    for _ in range(WARMUP_CALLS):
        call()
    synchronize()
    started = time.perf_counter()
    call()
    synchronize()
    per_call = max(time.perf_counter() - started, 1e-6)
    size = max(1, int(0.01 / per_call))
    best, spent, blocks = float("inf"), 0.0, 0
    while blocks < 3 or spent < min_run_time:
        started = time.perf_counter()
        for _ in range(size):
            call()
        synchronize()
        elapsed = time.perf_counter() - started
        best, spent, blocks = min(best, elapsed / size), spent + elapsed, blocks + 1
    return best * 1e3


def onnx_bytes(model: nn.Module, inputs: Any) -> bytes:
    """``model`` exported to ONNX at ``inputs``' shapes (the TorchScript-based exporter, as ``autoprune export``):
    a tensor, or a tuple of the model's arguments (a detector's list of images is one argument)."""
    buffer = io.BytesIO()
    args = _arguments(inputs)
    _tensors(inputs)  # only tensors, before the exporter says it less clearly
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model.cpu(), _on_cpu(args), buffer, dynamo=False)
    except Exception as exc:  # noqa: BLE001 -- an operator ONNX cannot express, whatever the exporter raises
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutopruneError(
            f"this model cannot be exported to ONNX to time it ({detail}); latency_backend = 'torch' times it"
        ) from None
    return buffer.getvalue()


def _arguments(inputs: Any) -> tuple:
    """The model's positional arguments: ``inputs`` itself where it is a tuple, else the one argument."""
    return inputs if isinstance(inputs, tuple) else (inputs,)


def _on_cpu(value: Any) -> Any:
    if isinstance(value, (tuple, list)):
        return type(value)(_on_cpu(v) for v in value)
    return value.cpu()


def _tensors(inputs: Any) -> list[torch.Tensor]:
    """Every tensor of ``inputs``, in the order the exported graph takes them (nested lists flattened)."""
    if isinstance(inputs, torch.Tensor):
        return [inputs]
    if isinstance(inputs, (tuple, list)) and inputs:
        return [t for item in inputs for t in _tensors(item)]
    raise AutopruneError(
        f"latency in an exported runtime takes tensors (or tuples and lists of them) as input, got "
        f"{type(inputs).__name__}; latency_backend = 'torch' times any input"
    )


@contextlib.contextmanager
def _torch_threads(threads: int) -> Iterator[None]:
    before = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _time_torch(model: nn.Module, inputs: Any, runtime: Runtime, min_run_time: float) -> float:
    from .engine.inputs import move_to
    from .metrics import latency_ms

    device = torch.device(runtime.device)
    with _torch_threads(runtime.threads):
        return latency_ms(model.to(device), move_to(inputs, device), min_run_time=min_run_time, statistic="min")


def _onnxruntime_call(graph: bytes, arrays: list, runtime: Runtime) -> tuple[Callable[[], Any], Callable[[], None]]:
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.graph_optimization_level = onnxruntime.GraphOptimizationLevel.ORT_ENABLE_ALL
    if runtime.threads:
        options.intra_op_num_threads = runtime.threads
        options.inter_op_num_threads = 1
    session = onnxruntime.InferenceSession(graph, options, providers=[ORT_PROVIDERS[runtime.device]])
    names = [i.name for i in session.get_inputs()]
    if runtime.device == "cpu":
        feed = dict(zip(names, arrays))
        return (lambda: session.run(None, feed)), (lambda: None)
    # on CUDA the inputs and outputs stay on the GPU, bound once, as a deployed pipeline keeps them
    tensors = [torch.from_numpy(a).cuda() for a in arrays]
    binding = session.io_binding()
    for name, tensor in zip(names, tensors):
        binding.bind_input(name, "cuda", 0, arrays[0].dtype.type, tuple(tensor.shape), tensor.data_ptr())
    for output in session.get_outputs():
        binding.bind_output(output.name, "cuda")
    return (lambda: session.run_with_iobinding(binding)), binding.synchronize_outputs


def _openvino_call(graph: bytes, arrays: list, runtime: Runtime) -> tuple[Callable[[], Any], Callable[[], None]]:
    import openvino

    core = openvino.Core()
    config: dict[str, Any] = {"PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    if runtime.threads:
        config["INFERENCE_NUM_THREADS"] = runtime.threads
    compiled = core.compile_model(core.read_model(graph), "CPU", config)
    request = compiled.create_infer_request()
    feed = dict(enumerate(arrays))
    return (lambda: request.infer(feed)), (lambda: None)


def _tensorrt_call(graph: bytes, arrays: list, runtime: Runtime) -> tuple[Callable[[], Any], Callable[[], None]]:
    import tensorrt

    logger = tensorrt.Logger(tensorrt.Logger.WARNING)
    builder = tensorrt.Builder(logger)
    network = builder.create_network(0)
    parser = tensorrt.OnnxParser(network, logger)
    if not parser.parse(graph):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise AutopruneError(f"TensorRT cannot parse this model's ONNX graph: {errors}")
    serialized = builder.build_serialized_network(network, builder.create_builder_config())
    if serialized is None:
        raise AutopruneError("TensorRT could not build an engine for this model (its log above says why)")
    engine = tensorrt.Runtime(logger).deserialize_cuda_engine(serialized)
    context = engine.create_execution_context()
    inputs = iter(torch.from_numpy(a).cuda() for a in arrays)
    buffers = []  # kept alive as long as the engine reads and writes them
    for k in range(engine.num_io_tensors):
        name = engine.get_tensor_name(k)
        if engine.get_tensor_mode(name) == tensorrt.TensorIOMode.INPUT:
            tensor = next(inputs)
        else:
            dtype = torch.from_numpy(np.empty(0, dtype=tensorrt.nptype(engine.get_tensor_dtype(name)))).dtype
            tensor = torch.empty(tuple(context.get_tensor_shape(name)), dtype=dtype, device="cuda")
        buffers.append(tensor)
        context.set_tensor_address(name, tensor.data_ptr())
    stream = torch.cuda.current_stream()

    def call() -> None:
        context.execute_async_v3(stream.cuda_stream)

    call.buffers = buffers  # type: ignore[attr-defined]
    return call, stream.synchronize
