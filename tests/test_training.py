"""The one training loop, used by baseline training and by fine-tuning."""

from __future__ import annotations

import copy
import itertools

import pytest
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
    assert all(
        torch.equal(x, y)
        for x, y in zip(
            teacher.state_dict().values(),
            train(copy.deepcopy(model), data, TrainSettings(epochs=2), seed=0).state_dict().values(),
        )
    )


def test_progress_lines():
    data, model = _setup()
    lines = []
    train(model, data, TrainSettings(epochs=2), log=lines.append)
    assert len(lines) == 2 and lines[-1].startswith("  epoch 2/2")


def test_warm_up_rises_linearly_to_the_learning_rate_then_the_cosine_decays_it_to_zero():
    from autoprune.training import _optimizer

    model = torch.nn.Linear(2, 2)
    optimizer, schedule = _optimizer(model, TrainSettings(lr=0.1, warmup_epochs=1), total_steps=12, steps_per_epoch=4)
    rates = []
    for _ in range(12):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        schedule.step()
    assert rates[:5] == pytest.approx([0.02, 0.04, 0.06, 0.08, 0.1])  # 4 warm-up steps, then the full rate
    assert all(a > b for a, b in itertools.pairwise(rates[4:])) and rates[-1] < 0.01
    plain, _ = _optimizer(model, TrainSettings(lr=0.1), total_steps=12)
    assert plain.param_groups[0]["lr"] == pytest.approx(0.1) and isinstance(plain, torch.optim.SGD)
    adamw, _ = _optimizer(model, TrainSettings(lr=0.1, optimizer="adamw"), total_steps=12)
    assert isinstance(adamw, torch.optim.AdamW)


def test_gradient_clipping_bounds_each_step():
    from autoprune.training import train_steps

    data, model = _setup()
    batches = [next(iter(torch.utils.data.DataLoader(data.train, batch_size=64)))]
    moved = {}
    for clip in (0.0, 0.01):
        stepped = train_steps(
            copy.deepcopy(model), batches, 1, TrainSettings(lr=1.0, momentum=0.0, weight_decay=0.0, clip_grad_norm=clip)
        )
        moved[clip] = torch.cat(
            [(a - b).detach().flatten() for a, b in zip(stepped.parameters(), model.parameters())]
        ).norm()
    assert float(moved[0.01]) <= 0.01 + 1e-6 < float(moved[0.0])


def test_adamw_trains_and_a_new_recipe_field_at_its_default_keeps_cached_baselines():
    data, model = _setup()
    val = torch.utils.data.DataLoader(data.val, batch_size=256)
    trained = train(
        copy.deepcopy(model),
        data,
        TrainSettings(epochs=2, lr=0.003, optimizer="adamw", warmup_epochs=0.5, clip_grad_norm=5.0, weight_decay=1e-4),
    )
    assert accuracy(trained, val) > accuracy(model, val) + 20
    assert set(TrainSettings().cache_identity()) == {"epochs", "batch_size", "lr", "momentum", "weight_decay"}
    assert TrainSettings(optimizer="adamw").cache_identity()["optimizer"] == "adamw"
    with pytest.raises(autoprune.AutopruneError, match="^optimizer must be one of 'sgd', 'adamw', got str 'adam'"):
        TrainSettings(optimizer="adam")


def test_a_log_without_epoch_lines_gets_no_line_per_epoch():
    """``autoprune search --quiet`` passes the baseline's training such a log: its own line, no epochs'."""
    from autoprune.training import WithoutEpochLines

    data, model = _setup()
    lines = []
    log = WithoutEpochLines(lines.append)
    log("training the baseline")
    train(model, data, TrainSettings(epochs=2), log=log)
    assert lines == ["training the baseline"]
