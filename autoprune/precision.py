"""Mixed precision (``study.amp``): trials scored, and finalists fine-tuned, under torch's autocast.

``"bf16"`` and ``"fp16"`` run the convolutions and matrix products of evaluation and
fine-tuning in bfloat16 or float16 on the model's device (the tensor cores of a GPU;
on a CPU, bfloat16 where the processor has the instructions), while reductions, the
loss and BatchNorm statistics stay in float32, as torch's autocast decides (Micikevicius
et al., "Mixed Precision Training", ICLR 2018). Float16 training scales the loss
(torch's GradScaler) so that small gradients do not underflow; bfloat16 has float32's
range and needs no scaling. The baseline and every trial of a study are scored the same
way, so drops compare like with like; BatchNorm recalibration, importance scores and the
least-squares reconstruction stay in float32.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

#: What ``study.amp`` accepts: full precision, or autocast to one of torch's half types.
AMP_MODES = ("off", "bf16", "fp16")
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def model_device(model: nn.Module) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


@contextlib.contextmanager
def autocast(model: nn.Module, amp: str = "off") -> Iterator[None]:
    """Autocast to ``amp``'s type on ``model``'s device while the block runs; nothing when ``amp`` is "off"."""
    if amp == "off":
        yield
        return
    with torch.autocast(device_type=model_device(model).type, dtype=_DTYPES[amp]):
        yield


def grad_scaler(model: nn.Module, amp: str = "off") -> torch.amp.GradScaler:
    """The loss scaler training under ``amp`` needs: enabled for float16, a pass-through otherwise."""
    device = model_device(model).type
    return torch.amp.GradScaler(device, enabled=amp == "fp16")
