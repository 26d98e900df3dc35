"""Metrics as plugins: any registered metric is an objective or a ``[constraints]`` bound."""

from __future__ import annotations

import copy
import re
from dataclasses import dataclass

import pytest
import torch
from torch import nn

import autoprune
from autoprune import search
from autoprune.errors import PluginError
from autoprune.settings import int_at_least, number_above, setting
from autoprune.storage import folder_storage

pytestmark = pytest.mark.baseline("short")


def conv_channels(model, context):
    """Output channels of every convolution: a size measure a test can predict."""
    return float(sum(m.out_channels for m in model.modules() if isinstance(m, nn.Conv2d)))


def kept_fraction(model, context):
    """Parameters kept, as a fraction of the baseline's (a metric to maximize)."""
    return sum(p.numel() for p in model.parameters()) / context.baseline("params")


class _Plugin:
    @autoprune.hookimpl
    def autoprune_register_metrics(self, register):
        register("conv_channels", conv_channels, unit="channels", description="convolution output channels")
        register("kept_fraction", kept_fraction, direction="maximize", description="parameters kept")
        register("broken", lambda model, context: float("nan"))


@pytest.fixture(scope="module")
def plugin():
    name = autoprune.plugins.register(_Plugin(), name="test-metrics")
    yield name
    autoprune.plugins.unregister(name=name)


def _search(baseline, digits, tmp_path, name, **settings):
    return search(
        copy.deepcopy(baseline),
        digits,
        max_accuracy_drop=100.0,
        trials=8,
        warm_start="none",
        sampler="random",
        seed=0,
        calibration_batches=2,
        storage=folder_storage(tmp_path),
        study_name=name,
        **settings,
    )


def test_a_plugin_metric_as_a_constraint_makes_trials_infeasible_exactly_when_it_is_exceeded(
    plugin, baseline, digits, tmp_path
):
    base = conv_channels(baseline, None)
    bound = 0.6 * base
    result = _search(baseline, digits, tmp_path, "bound", constraints={"conv_channels": bound})
    record = result.record
    trials = record.completed()
    assert record.baseline["conv_channels"] == base
    values = [t.user_attrs["conv_channels"] for t in trials]
    assert any(v <= bound for v in values) and any(v > bound for v in values)  # both sides were tried
    for trial, value in zip(trials, values):
        assert trial.constraints["conv_channels"] == pytest.approx(value - bound)
        assert record.is_feasible(trial) == (value <= bound)
    assert result.best_trial.user_attrs["conv_channels"] <= bound
    from autoprune.results import write_report

    index = write_report(record, tmp_path / "report").read_text()
    assert "<th>conv_channels</th>" in index and "<code>conv_channels</code> &le; " in index
    header = (tmp_path / "report" / "trials.csv").read_text().splitlines()[0].split(",")
    assert "conv_channels" in header


def test_a_metric_to_maximize_is_bounded_from_below_and_can_be_the_objective(plugin, baseline, digits, tmp_path):
    result = _search(baseline, digits, tmp_path, "floor", objective="conv_channels", constraints={"kept_fraction": 0.3})
    record = result.record
    assert record.study.direction.name == "MINIMIZE"
    for trial in record.completed():
        kept = trial.user_attrs["kept_fraction"]
        assert trial.constraints["kept_fraction"] == pytest.approx(0.3 - kept)
        assert record.is_feasible(trial) == (kept >= 0.3)
    feasible = record.feasible()
    assert 0 < len(feasible) < len(record.completed())
    assert result.best_trial.value == min(t.user_attrs["conv_channels"] for t in feasible)
    assert result.best_trial.value == result.best_trial.user_attrs["conv_channels"]


def test_a_metric_that_returns_no_number_is_named_in_one_line(plugin, baseline, digits):
    context = autoprune.MetricContext(digits.val[0][0].unsqueeze(0), digits.val[0][0].unsqueeze(0), [])
    with pytest.raises(PluginError, match=r"^metric 'broken' returned nan; it must return a finite number$"):
        autoprune.measure_metrics(baseline, ["broken"], context)


def test_metrics_sharing_a_measurement_of_one_model_compute_it_once_per_measure_call(temporary_plugin, baseline):
    builds = []

    def shared(model, context):
        return context.of_model(model, "count", lambda: builds.append(model) or float(len(builds)))

    class Pair:
        @autoprune.hookimpl
        def autoprune_register_metrics(self, register):
            register("shared_a", shared)
            register("shared_b", lambda model, context: 10 * shared(model, context))

    temporary_plugin(Pair(), name="shared-pair")
    context = autoprune.MetricContext(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8), [])
    other = copy.deepcopy(baseline)
    assert autoprune.measure_metrics(baseline, ["shared_a", "shared_b"], context) == {"shared_a": 1.0, "shared_b": 10.0}
    assert builds == [baseline]
    assert autoprune.measure_metrics(other, ["shared_a", "shared_b"], context) == {"shared_a": 2.0, "shared_b": 20.0}
    assert autoprune.measure_metrics(baseline, ["shared_a"], context) == {
        "shared_a": 3.0
    }  # measured anew: it may have changed
    assert builds == [baseline, other, baseline]


def test_the_registry_checks_a_metrics_direction(plugin):
    class Bad:
        @autoprune.hookimpl
        def autoprune_register_metrics(self, register):
            register("upward", conv_channels, direction="up")

    name = autoprune.plugins.register(Bad(), name="bad-direction")
    try:
        with pytest.raises(autoprune.AutopruneError, match="with direction='up'; valid: 'minimize', 'maximize'"):
            autoprune.list_metrics()
    finally:
        autoprune.plugins.unregister(name=name)


def test_robust_accuracy_is_deterministic_for_a_seed_and_falls_as_severity_rises(baseline, digits):
    from autoprune.corruptions import corrupted_batches
    from autoprune.searcher import validation_batches

    val = validation_batches(digits, 128, seed=0)
    names = ["gaussian_noise", "gaussian_blur", "brightness", "contrast", "jpeg"]
    first, again, other = (corrupted_batches(val, names, [2], 200, seed) for seed in (0, 0, 1))
    assert all(torch.equal(a[0], b[0]) for a, b in zip(first, again))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other))  # the noise follows the seed
    assert sum(len(y) for _, y in first) == 5 * 200

    def robust(severity):
        options = {"robust_accuracy": {"corruption_severities": [severity]}}
        settings = autoprune.SearchSettings(max_accuracy_drop=1.0, metric_options=options)
        context = autoprune.MetricContext(
            val[0][0][:1], val[0][0][:1], val, seed=0, baseline_model=baseline, settings=settings
        )
        return autoprune.measure_metrics(baseline, ["robust_accuracy", "robust_accuracy_drop"], context)

    clean = autoprune.metrics.accuracy(baseline, val)
    by_severity = [robust(s) for s in (1, 3, 5)]
    accuracies = [m["robust_accuracy"] for m in by_severity]
    assert clean > accuracies[0] > accuracies[1] > accuracies[2], (clean, accuracies)
    assert all(m["robust_accuracy_drop"] == 0.0 for m in by_severity)  # the baseline against itself
    assert robust(3) == by_severity[1]


def test_robust_accuracy_needs_images():
    from autoprune.corruptions import corrupt, corrupted_batches

    with pytest.raises(
        autoprune.AutopruneError,
        match=r"robust accuracy needs image inputs \(N, C, H, W\); "
        r"this dataset's are Tensor \(4, 10\)",
    ):
        corrupted_batches([(torch.zeros(4, 10), torch.zeros(4))], ["contrast"], [1], 10, 0)
    with pytest.raises(autoprune.AutopruneError, match="unknown corruption 'fog'; valid: 'gaussian_noise'"):
        corrupt(torch.zeros(1, 1, 8, 8), "fog", 1, torch.Generator())


def test_a_robustness_constraint_and_a_latency_objective_work_together(baseline, digits, tmp_path):
    from autoprune.results import write_report

    result = _search(
        baseline,
        digits,
        tmp_path,
        "robust",
        objective="latency",
        constraints={"robust_accuracy_drop": 20.0},
        metric_options={"robust_accuracy": {"corruption_severities": [1], "corruption_images": 200}},
    )
    record = result.record
    assert record.study.direction.name == "MINIMIZE" and record.baseline["robust_accuracy_drop"] == 0.0
    assert record.attrs["metric_options"]["robust_accuracy"]["corruption_images"] == 200
    for trial in record.completed():
        drop = trial.user_attrs["robust_accuracy_drop"]
        assert trial.user_attrs["latency"] > 0
        assert trial.constraints["robust_accuracy_drop"] == pytest.approx(drop - 20.0)
        assert record.is_feasible(trial) == (drop <= 20.0)
    assert {record.is_feasible(t) for t in record.completed()} == {True, False}  # the bound decided
    index = write_report(record, tmp_path / "report").read_text()
    assert "Clean against robust accuracy" in index and (tmp_path / "report" / "robustness.png").is_file()
    assert "<code>robust_accuracy_drop</code> &le; 20" in index


# -- a metric's own options -------------------------------------------------------------------


@dataclass(frozen=True)
class TinyWeightsOptions(autoprune.Options):
    threshold: float = setting(1e-3, rule=number_above(0), doc="a weight below this in absolute value is tiny")


def tiny_weights(model, context):
    """Fraction of the weights below the study's threshold in absolute value (docs/plugin_hooks.md's example)."""
    threshold = context.options("tiny_weights").threshold
    weights = torch.cat([p.detach().abs().flatten() for p in model.parameters()])
    return float((weights < threshold).float().mean())


class _OptionsPlugin:
    @autoprune.hookimpl
    def autoprune_register_metrics(self, register):
        register("tiny_weights", tiny_weights, unit="fraction", options=TinyWeightsOptions)


def test_a_third_party_metric_gets_its_options_from_the_study_and_their_defaults_elsewhere(baseline, digits):
    from autoprune.searcher import validation_batches
    from autoprune.settings import parse_study_file

    name = autoprune.plugins.register(_OptionsPlugin(), name="test-options")
    try:
        raw = {"study": {"max_accuracy_drop": 1.0}, "model": {"name": "small_cnn"}, "dataset": {"name": "digits"}}
        settings = parse_study_file({**raw, "metrics": {"tiny_weights": {"threshold": 10}}}).settings
        assert settings.options_of("tiny_weights") == TinyWeightsOptions(threshold=10.0)
        val = validation_batches(digits, 128, seed=0)
        x = val[0][0][:1]
        in_study = autoprune.MetricContext(x, x, val, baseline_model=baseline, settings=settings)
        outside = autoprune.MetricContext(x, x, val, baseline_model=baseline)
        assert outside.options("tiny_weights") == TinyWeightsOptions()
        assert autoprune.measure_metrics(baseline, ["tiny_weights"], in_study)["tiny_weights"] == 1.0
        assert autoprune.measure_metrics(baseline, ["tiny_weights"], outside)["tiny_weights"] < 1.0
        with pytest.raises(
            autoprune.AutopruneError, match=r"^metrics.tiny_weights.threshold must be a number > 0, got -1$"
        ):
            parse_study_file({**raw, "metrics": {"tiny_weights": {"threshold": -1}}})
    finally:
        autoprune.plugins.unregister(name=name)


@dataclass
class _NotFrozen(autoprune.Options):
    images: int = setting(1, rule=int_at_least(1))


@dataclass(frozen=True)
class _Required(autoprune.Options):
    images: int = setting(rule=int_at_least(1))


@dataclass(frozen=True)
class _Resumable(autoprune.Options):
    images: int = setting(1, rule=int_at_least(1), resumable=True)


@dataclass(frozen=True)
class _Plain(autoprune.Options):
    images: int = 1


@pytest.mark.parametrize(
    ("options", "fragment"),
    [
        (dict, "it must be a frozen dataclass derived from autoprune.Options"),
        (_NotFrozen, "_NotFrozen must be a frozen dataclass"),
        (_Required, "_Required.images needs a default"),
        (_Resumable, "_Resumable.images cannot be resumable"),
        (_Plain, "_Plain.images must be declared with autoprune.settings.setting(...)"),
    ],
)
def test_a_metrics_options_declaration_is_checked_when_it_is_registered(options, fragment):
    class Bad:
        @autoprune.hookimpl
        def autoprune_register_metrics(self, register):
            register("bad_options", conv_channels, options=options)

    name = autoprune.plugins.register(Bad(), name="bad-options")
    try:
        with pytest.raises(autoprune.AutopruneError, match=re.escape(fragment)) as err:
            autoprune.list_metrics()
        assert "registered metric 'bad_options' with options=" in str(err.value)
    finally:
        autoprune.plugins.unregister(name=name)
