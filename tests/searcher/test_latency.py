"""The latency table: measured once per study, a trial's latency a lookup, checked against timings."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from torch import nn

import autoprune
from autoprune.plan import Plan
from autoprune.searcher.latency import LatencyTable, measure_table, time_model


class Wide(nn.Module):
    """Two wide convolutions: pruning either group clearly shortens a forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.b = nn.Sequential(nn.Conv2d(64, 64, 3, padding=1), nn.BatchNorm2d(64), nn.ReLU())
        self.fc = nn.Linear(64, 10)

    def forward(self, x):
        return self.fc(self.b(self.a(x)).mean((2, 3)))


def test_the_tables_prediction_is_within_a_factor_of_2_of_the_timed_latency():
    """Stated error: predicted / timed within [1/2, 2]. On a 2-core machine with another search running
    beside it, the ratios measured 0.79 to 1.49; timings there are that noisy."""
    torch.manual_seed(0)
    model = Wide().eval()
    x = torch.randn(1, 3, 32, 32)
    timing = x.expand(16, 3, 32, 32).contiguous()
    groups = autoprune.prunable_groups(model, x)
    table = measure_table(model, x, timing, groups, 0.8, "cpu")
    assert table.rates == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8]) and set(table.ms) == set(groups)
    assert all(row[-1] < row[0] for row in table.ms.values())  # 80 % fewer channels: faster
    from autoprune.engine import group_sizes

    sizes = group_sizes(model, x)
    for rates in (
        dict.fromkeys(groups, 0.5),
        {groups[0]: 0.7},
        {groups[0]: 0.3, groups[-1]: 0.6},
        {groups[0]: 0.6, groups[-1]: 0.2},
    ):
        pruned = autoprune.prune(copy.deepcopy(model), x, rates)
        predicted = table.predict(Plan(rates=rates).removed_fractions(sizes))
        timed = time_model(pruned, timing, "cpu", min_run_time=0.5)
        assert 1 / 2 <= predicted / timed <= 2, (rates, predicted, timed)


def test_a_latency_search_predicts_from_the_table_keeps_it_and_checks_it(tmp_path):
    digits = autoprune.create_dataset("digits")
    torch.manual_seed(0)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    result = autoprune.search(
        model,
        digits,
        max_accuracy_drop=100.0,
        objective="latency",
        trials=3,
        warm_start="none",
        calibration_batches=2,
        latency_batch_size=8,
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="lat",
    )
    record = result.record
    table = LatencyTable.from_dict(record.latency_table, "the study's table")
    assert record.baseline["latency"] == table.base_ms and table.batch_size == 8
    from autoprune.engine import group_sizes

    sizes = group_sizes(model, digits.val[0][0].unsqueeze(0))
    for trial in record.completed():
        assert trial.user_attrs["latency"] == pytest.approx(table.predict(record.plan(trial).removed_fractions(sizes)))
    check = record.latency_check
    assert check[0]["trial"] is None and check[0]["predicted_ms"] == table.base_ms
    assert all(row["measured_ms"] > 0 for row in check) and len(check) >= 2
    from autoprune.results import write_report

    index = write_report(record, tmp_path / "report").read_text()
    assert "Latency is predicted from a table" in index and "median error" in index


def test_a_table_from_elsewhere_is_used_and_checked(tmp_path):
    digits = autoprune.create_dataset("digits")
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    x = digits.val[0][0].unsqueeze(0)
    groups = autoprune.prunable_groups(model, x)
    table = LatencyTable(10.0, [0.0, 0.8], {g: [10.0, 2.0] for g in groups}, [10.0, 1.0], "cuda", 1, [1, 8, 8])
    table.write(tmp_path / "table.json")
    result = autoprune.search(
        model,
        digits,
        max_accuracy_drop=100.0,
        objective="latency",
        trials=2,
        warm_start="none",
        calibration_batches=2,
        latency_table=str(tmp_path / "table.json"),
        storage=f"sqlite:///{tmp_path / 'study.db'}",
        study_name="given",
    )
    assert result.record.baseline["latency"] == 10.0  # the given table, not a timing here
    assert result.record.latency_table["device"] == "cuda"
    with pytest.raises(
        autoprune.AutopruneError,
        match=r"measured at batch size 1 on inputs \(1, 8, 8\); this "
        r"study times batch size 4",
    ):
        autoprune.search(
            model,
            digits,
            max_accuracy_drop=100.0,
            objective="latency",
            trials=1,
            latency_table=str(tmp_path / "table.json"),
            latency_batch_size=4,
            storage=f"sqlite:///{tmp_path / 'other.db'}",
            study_name="other",
        )
    (tmp_path / "bad.json").write_text(json.dumps({"base_ms": 1}))
    with pytest.raises(autoprune.AutopruneError, match="is not an autoprune latency table"):
        LatencyTable.read(tmp_path / "bad.json")
    with pytest.raises(autoprune.AutopruneError, match="does not exist"):
        LatencyTable.read(tmp_path / "missing.json")
