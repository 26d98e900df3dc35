"""The one training loop, used by baseline training and by fine-tuning."""

from __future__ import annotations

import copy

import torch

import autoprune
from autoprune import TrainSettings, train
from autoprune.metrics import accuracy


def _setup():
    data = autoprune.create_dataset("digits")
    torch.manual_seed(0)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=4)
    return data, model


def test_training_learns_and_is_repeatable():
    data, model = _setup()
    val = torch.utils.data.DataLoader(data.val, batch_size=256)
    before = accuracy(model, val)
    a = train(copy.deepcopy(model), data, TrainSettings(epochs=2), seed=0)
    b = train(copy.deepcopy(model), data, TrainSettings(epochs=2), seed=0)
    assert accuracy(a, val) > before + 20
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert not a.training


def test_distillation_changes_what_is_learned():
    data, model = _setup()
    teacher = train(copy.deepcopy(model), data, TrainSettings(epochs=2), seed=0)
    plain = train(copy.deepcopy(model), data, TrainSettings(epochs=1), seed=1)
    distilled = train(copy.deepcopy(model), data, TrainSettings(epochs=1), seed=1, teacher=teacher)
    assert not all(torch.equal(x, y) for x, y in zip(plain.state_dict().values(), distilled.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(teacher.state_dict().values(),
                                                 train(copy.deepcopy(model), data, TrainSettings(epochs=2),
                                                       seed=0).state_dict().values()))


def test_progress_lines():
    data, model = _setup()
    lines = []
    train(model, data, TrainSettings(epochs=2), log=lines.append)
    assert len(lines) == 2 and lines[-1].startswith("  epoch 2/2")
