"""The latency table: measured once per study, a trial's latency a lookup, checked against timings."""

from __future__ import annotations

import copy
import json
import math

import pytest
import torch
from torch import nn

import autoprune
from autoprune.engine import group_sizes
from autoprune.metrics import count_flops
from autoprune.plan import Plan
from autoprune.runtimes import Runtime
from autoprune.searcher import latency
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


def flop_cost(model, timing_input, runtime, min_run_time=0.2):
    """A deterministic stand-in for a timing: a fixed overhead plus one unit per MFLOP. A timed test on a
    shared machine fails by chance (the wall-clock accuracy is `make bench-latency`'s to measure)."""
    return 0.05 + count_flops(model, timing_input) / 1e6


def test_the_tables_prediction_is_within_a_factor_of_2_of_the_cost_it_was_built_from(monkeypatch):
    """Built from one cost per entry, the table predicts other plans' cost (groups alone, together, uneven)
    within 15 % (the stated error of real timings is a factor of 2): its per-group speed-ups and the fitted interaction do what they claim."""
    monkeypatch.setattr(latency, "time_model", flop_cost)
    torch.manual_seed(0)
    model = Wide().eval()
    x = torch.randn(1, 3, 32, 32)
    timing = x.expand(16, 3, 32, 32).contiguous()
    groups = autoprune.prunable_groups(model, x)
    table = measure_table(model, x, timing, groups, 0.8, Runtime())
    assert table.rates == pytest.approx([0.0, 0.2, 0.4, 0.6, 0.8]) and set(table.ms) == set(groups)
    assert table.base_ms == pytest.approx(flop_cost(model, timing, "cpu"))
    assert all(row[-1] < row[0] for row in table.ms.values())  # 80 % fewer channels: cheaper
    sizes = group_sizes(model, x)
    for k, rate in enumerate(table.rates):  # the uniform plans fit the interaction: predicted all but exactly
        uniform = dict.fromkeys(groups, rate)  # (whole channels: 0.2 of 64 removes 12, a fraction of 0.19)
        assert table.predict(Plan(rates=uniform).removed_fractions(sizes)) == pytest.approx(
            table.uniform_ms[k], rel=0.05
        )
    ratios = []
    for rates in (
        dict.fromkeys(groups, 0.5),
        {groups[0]: 0.7},
        {groups[0]: 0.3, groups[-1]: 0.6},
        {groups[0]: 0.6, groups[-1]: 0.2},
    ):
        pruned = autoprune.prune(copy.deepcopy(model), x, rates)
        predicted = table.predict(Plan(rates=rates).removed_fractions(sizes))
        ratios.append(predicted / flop_cost(pruned, timing, "cpu"))
    assert all(1 / 1.15 <= ratio <= 1.15 for ratio in ratios), ratios
    assert max(abs(math.log(r)) for r in ratios) > 1e-6  # a real prediction, not a lookup of the same plans


def test_a_fixed_tables_prediction_is_its_arithmetic_and_stays_sane_when_one_timing_was_disturbed():
    rates = [0.0, 0.4, 0.8]
    table = LatencyTable(10.0, rates, {"a": [10.0, 8.0, 6.0], "b": [10.0, 5.0, 2.0]}, [10.0, 4.0, 1.2], "cpu", 1, [3])
    # at rate 0.4: alone 0.8 * 0.5 = 0.4, together 0.4, so the exponent is 1 and the prediction the product
    assert table.predict({"a": 0.4, "b": 0.4}) == pytest.approx(4.0)
    assert table.predict({"b": 0.4}) == pytest.approx(10.0 * 0.5 ** table._interaction(0.2))
    assert table.predict({"a": 0.0, "b": 0.0}) == pytest.approx(10.0)
    assert table.predict({"b": 1.5}) == table.predict({"b": 0.8})  # beyond the table: its last column
    # a cell timed under load (a group pruned at 0.4 "taking" 900 ms) and uniform plans timed slow: the
    # prediction stays within the table's own range instead of a power of the disturbance
    noisy = LatencyTable(
        10.0, rates, {"a": [10.0, 900.0, 6.0], "b": [10.0, 9.99999, 2.0]}, [10.0, 5000.0, 1.2], "cpu", 1, [3]
    )
    for plan in ({"a": 0.4}, {"a": 0.4, "b": 0.4}, {"a": 0.8, "b": 0.2}, {"b": 0.4}):
        assert 1.0 <= noisy.predict(plan) <= 10.0, plan
    low, high = latency.EXPONENT_RANGE
    assert all(low <= noisy._interaction(r) <= high for r in (0.0, 0.2, 0.4, 0.8))


def test_time_model_times_a_copy_on_the_device_and_refuses_a_missing_cuda(monkeypatch):
    model = Wide().eval()
    timing = torch.randn(2, 3, 32, 32)
    assert time_model(model, timing, Runtime(), min_run_time=0.01) > 0
    assert next(model.parameters()).device.type == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(autoprune.AutopruneError, match="latency_device = 'cuda' but this machine has no CUDA"):
        time_model(model, timing, Runtime("torch", "cuda"))


def test_a_latency_search_predicts_from_the_table_keeps_it_and_checks_it(digits, tmp_path, storage):
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
        storage=storage,
        study_name="lat",
    )
    record = result.record
    table = LatencyTable.from_dict(record.latency_table, "the study's table")
    assert record.baseline["latency"] == table.base_ms and table.batch_size == 8
    sizes = group_sizes(model, digits.val[0][0].unsqueeze(0))
    for trial in record.completed():
        assert trial.user_attrs["latency"] == pytest.approx(table.predict(record.plan(trial).removed_fractions(sizes)))
    check = record.latency_check
    assert check[0]["trial"] is None and check[0]["predicted_ms"] == table.base_ms
    assert all(row["measured_ms"] > 0 for row in check) and len(check) >= 2
    from autoprune.results import write_report

    index = write_report(record, tmp_path / "report").read_text()
    assert "Latency is predicted from a table" in index and "median error" in index


def test_a_table_from_elsewhere_is_used_and_checked(digits, tmp_path, storage):
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    x = digits.val[0][0].unsqueeze(0)
    groups = autoprune.prunable_groups(model, x)
    table = LatencyTable(10.0, [0.0, 0.8], {g: [10.0, 2.0] for g in groups}, [10.0, 1.0], "cpu", 1, [1, 8, 8])
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
        storage=storage,
        study_name="given",
    )
    assert result.record.baseline["latency"] == 10.0  # the given table, not a timing here
    assert result.record.latency_table["device"] == "cpu"
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


def test_a_table_file_that_cannot_be_read_or_is_malformed_is_one_clear_error(tmp_path):
    good = LatencyTable(10.0, [0.0, 0.8], {"a": [10.0, 2.0]}, [10.0, 2.0], "cpu", 1, [1, 8, 8])
    good.write(tmp_path / "good.json")
    assert LatencyTable.read(tmp_path / "good.json") == good
    with pytest.raises(autoprune.AutopruneError, match=r"^latency table '.*' cannot be read: Is a directory$"):
        LatencyTable.read(tmp_path)
    raw = json.loads((tmp_path / "good.json").read_text())
    for change, named in (
        ({"base_ms": None}, "base_ms"),
        ({"ms": {"a": [10.0]}}, "ms"),  # a row shorter than the rates
        ({"uniform_ms": [10.0, -1.0]}, "uniform_ms"),
        ({"rates": "0, 0.8"}, "rates"),
    ):
        (tmp_path / "bad.json").write_text(json.dumps({**raw, **change}))
        with pytest.raises(autoprune.AutopruneError) as err:
            LatencyTable.read(tmp_path / "bad.json")
        assert f"is not a valid latency table: {named} missing or malformed (write it again" in str(err.value)
    del raw["device"]
    (tmp_path / "bad.json").write_text(json.dumps(raw))
    with pytest.raises(autoprune.AutopruneError, match="device missing or malformed"):
        LatencyTable.read(tmp_path / "bad.json")


def test_a_latency_study_on_a_missing_cuda_fails_before_the_baseline_is_trained(tmp_path, monkeypatch, capsys):
    """Regression (issue 23): the missing device was found only after the baseline was trained."""
    from conftest import write_study_file

    from autoprune import baseline, cli

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(baseline, "train", lambda *a, **k: pytest.fail("the baseline was trained"))
    monkeypatch.chdir(tmp_path)
    study = {"max_accuracy_drop": 1.0, "objective": "latency", "latency_device": "cuda"}
    write_study_file(tmp_path / "s.toml", study=study, train={"epochs": 1})
    assert cli.main(["search", "s.toml", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err == (
        "autoprune: error: latency_device = 'cuda' but this machine has no CUDA device; use 'cpu' or run "
        "`autoprune latency-table` on the target and give latency_table\n"
    )
    assert not list(tmp_path.rglob("baseline-*.pt"))


def test_a_table_measured_on_cuda_is_searched_here_and_its_check_left_out(
    digits, tmp_path, storage, monkeypatch, caplog
):
    """The way out the missing-CUDA error names: a table measured on the target predicts; only the timings
    that would check it are left out, with a warning (they raised after the search)."""
    from autoprune.searcher.latency import check_latency_settings

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    groups = autoprune.prunable_groups(model, digits.val[0][0].unsqueeze(0))
    table = LatencyTable(10.0, [0.0, 0.8], {g: [10.0, 2.0] for g in groups}, [10.0, 1.0], "cuda", 1, [1, 8, 8])
    table.write(tmp_path / "table.json")
    settings = autoprune.SearchSettings(
        max_accuracy_drop=100.0,
        objective="latency",
        trials=2,
        warm_start="none",
        calibration_batches=2,
        latency_device="cuda",
        latency_table=str(tmp_path / "table.json"),
    )
    check_latency_settings(settings, groups, digits.val[0][0].unsqueeze(0))  # the preflight lets it through
    result = autoprune.search(model, digits, settings, storage=storage, study_name="target")
    assert result.record.feasible() and result.record.baseline["latency"] == 10.0
    assert result.record.latency_check is None
    assert "the latency table's predictions are not checked against timings: latency_device = 'cuda'" in caplog.text


def test_a_table_timed_in_another_runtime_is_refused_naming_both(digits, tmp_path):
    """Milliseconds of ONNX Runtime are not PyTorch's: a table of one backend (or device) never predicts
    for a study that times in another."""
    from autoprune.searcher.latency import check_latency_settings

    x = digits.val[0][0].unsqueeze(0)
    groups = ["a"]
    table = LatencyTable(10.0, [0.0, 0.8], {"a": [10.0, 2.0]}, [10.0, 2.0], "cpu", 1, [1, 8, 8], "onnxruntime", 1)
    table.write(tmp_path / "t.json")
    assert LatencyTable.read(tmp_path / "t.json").runtime == Runtime("onnxruntime", "cpu", 1)
    settings = autoprune.SearchSettings(
        max_accuracy_drop=1.0, objective="latency", latency_table=str(tmp_path / "t.json")
    )
    with pytest.raises(autoprune.AutopruneError) as err:
        check_latency_settings(settings, groups, x)
    assert str(err.value) == (
        f"latency table {str(tmp_path / 't.json')!r} was timed in onnxruntime CPUExecutionProvider; this study "
        "times latency in torch cpu (set latency_backend and latency_device as the table was measured, or "
        "measure it again)"
    )
    check_latency_settings(settings.replace(latency_backend="onnxruntime"), groups, x)  # the same runtime: used
    raw = json.loads((tmp_path / "t.json").read_text())
    del raw["backend"], raw["threads"]  # a table written before backends: PyTorch's
    (tmp_path / "old.json").write_text(json.dumps(raw))
    assert LatencyTable.read(tmp_path / "old.json").runtime == Runtime()
    (tmp_path / "bad.json").write_text(json.dumps({**raw, "backend": "tflite"}))
    with pytest.raises(autoprune.AutopruneError, match="backend missing or malformed"):
        LatencyTable.read(tmp_path / "bad.json")


def test_a_table_measured_in_onnxruntime_times_the_exported_graph(monkeypatch):
    """measure_table hands its runtime to every timing and writes it into the table."""
    seen = []
    monkeypatch.setattr(latency, "time_model", lambda m, t, runtime, min_run_time=0.2: seen.append(runtime) or 1.0)
    model = Wide().eval()
    x = torch.randn(1, 3, 16, 16)
    runtime = Runtime("onnxruntime", "cpu", 1)
    table = measure_table(model, x, x, autoprune.prunable_groups(model, x), 0.5, runtime, 8, 32)
    assert set(seen) == {runtime} and (table.backend, table.device, table.threads) == ("onnxruntime", "cpu", 1)
