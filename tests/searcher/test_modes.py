"""Pruning modes: the search's scope (a rate per group, one global rate, or both) and iterative pruning."""

from __future__ import annotations

import pytest
import torch

import autoprune
from autoprune.plan import Plan
from autoprune.results import trials_frame, write_report
from autoprune.searcher import global_plan

pytestmark = pytest.mark.baseline("short")

#: How the scope and steps studies search: a few trials within 3 points, the uniform baseline first.
WITHIN_3_POINTS = {"max_accuracy_drop": 3.0, "seed": 0, "calibration_batches": 2, "warm_start": "uniform"}
#: How the granularity and rounding studies search: what their plans do matters, not the accuracy.
ANY_DROP = {"max_accuracy_drop": 100.0, "calibration_batches": 2}


def test_global_plan_removes_the_lowest_mean_normalized_scores_of_all_groups():
    scores = {
        "even": torch.full((8,), 100.0, dtype=torch.float64),  # all high, all alike
        "skewed": torch.tensor([0.1, 0.2, 0.3, 0.4, 1.6, 1.7, 1.8, 1.9], dtype=torch.float64),
    }
    sizes = {"even": (8, 1), "skewed": (8, 1)}
    plan = global_plan(0.25, scores, sizes, "l1", 0.8)
    assert plan["rates"] == {"even": 0.0, "skewed": 0.5}  # the 4 lowest of 16, all in the skewed group
    capped = global_plan(0.25, scores, sizes, "l1", {"even": 0.8, "skewed": 0.25})
    assert capped["rates"] == {"even": 0.25, "skewed": 0.25}  # the cap moves the rest to the next-lowest


def test_a_global_scope_search_searches_one_rate_and_records_each_trials_plan(
    search_baseline, baseline, digits, tmp_path
):
    result = search_baseline(trials=5, scope="global", **WITHIN_3_POINTS)
    record = result.record
    for trial in record.completed():
        assert set(trial.params) == {"global.rate", "global.max_rate"}
        plan = record.plan(trial)
        assert {"rates": plan.rates, "methods": plan.methods} == trial.user_attrs["plan"]
        assert set(plan.rates) == set(record.groups) and plan.reconstruct is True  # the study's setting
        assert plan.scope == "global" and plan.global_max_rate == pytest.approx(trial.params["global.max_rate"])
        assert all(rate <= trial.params["global.max_rate"] + 1e-9 for rate in plan.rates.values())
    first = record.completed()[0]  # the warm start: the global baseline's rate
    assert first.params["global.rate"] == pytest.approx(
        max(r for r in autoprune.plan.rate_grid(0.0, 0.8, 0.05) if r <= record.references["global"]["rate"] + 1e-9)
    )
    frame = trials_frame(record)
    assert set(frame["scope"]) == {"global"} and frame["uniform_rate"].isna().all()
    rebuilt = autoprune.Study(record.study).rebuild(result.best_trial.number, baseline=baseline, data=digits)
    assert rebuilt.plan == record.plan(result.best_trial)


def test_scope_both_lets_the_sampler_pick_per_trial_and_the_report_tells_them_apart(search_baseline, tmp_path):
    result = search_baseline(trials=8, scope="both", uniform_starts=(0.1,), **WITHIN_3_POINTS)
    record = result.record
    scopes = {t.params["scope"] for t in record.completed()}
    assert scopes == {"local", "global"}
    for trial in record.completed():
        assert record.scope(trial) == trial.params["scope"]
        assert ("global.rate" in trial.params) == (trial.params["scope"] == "global")
    index = write_report(record, tmp_path / "report")
    table = (tmp_path / "report" / "trials.csv").read_text().splitlines()
    assert "scope" in table[0].split(",")
    assert "<th>scope</th>" in index.read_text()


def test_scope_both_needs_a_sampler_for_parameters_some_trials_lack():
    with pytest.raises(autoprune.AutopruneError, match="'both' needs a sampler .*'tpe' or 'random', got sampler 'gp'"):
        autoprune.SearchSettings(max_accuracy_drop=1.0, scope="both", sampler="gp")


def test_a_k_step_plan_prunes_in_k_steps_and_ends_at_the_one_shot_widths(baseline, digits, monkeypatch):
    from autoprune.plan import apply
    from autoprune.searcher import evaluation

    calibration = evaluation.calibration_batches(digits, 2, 64, seed=0)
    example = digits.val[0][0].unsqueeze(0)
    plan = Plan(
        rates={"features.0": 0.5, "features.3": 0.3, "features.7": 0.7},
        methods=dict.fromkeys(("features.0", "features.3", "features.7"), "l1"),
    )
    one_shot = plan.apply(baseline, example, calibration)
    calls, prune = [], apply.prune

    def counted(model, example_inputs, rates, **kwargs):
        calls.append(dict(rates))
        return prune(model, example_inputs, rates, **kwargs)

    monkeypatch.setattr(apply, "prune", counted)
    stepped = plan.replace(steps=3, recovery_steps=2).apply(baseline, example, calibration)
    assert len(calls) == 3 and all(0 < rates["features.0"] < 0.5 for rates in calls)
    evaluator = evaluation.Evaluator.build(
        baseline, digits, autoprune.SearchSettings(max_accuracy_drop=100.0, calibration_batches=2, batch_size=64)
    )
    calls.clear()
    three_steps = plan.replace(steps=3, recovery_steps=2)
    assert evaluator.evaluate(three_steps)["flops"] == evaluator.evaluate(plan)["flops"]
    assert len(calls) == 3 + 1  # a trial's evaluation follows the schedule too
    assert [p.shape for p in stepped.parameters()] == [p.shape for p in one_shot.parameters()]
    assert not torch.equal(stepped(example), one_shot(example))  # re-ranked and recovered between steps
    assert next(p.shape for p in baseline.parameters())[0] == 8  # the baseline is not touched


def test_steps_as_a_searched_parameter_is_recorded_replayed_and_reported(search_baseline, baseline, digits, tmp_path):
    result = search_baseline(trials=8, steps=[1, 2], uniform_starts=(0.3,), **WITHIN_3_POINTS)
    record = result.record
    chosen = {t.params["steps"] for t in record.completed()}
    assert chosen == {1, 2}
    two = next(t for t in record.completed() if t.params["steps"] == 2)
    assert record.plan(two).steps == 2
    rebuilt = autoprune.Study(record.study).rebuild(two.number, baseline=baseline, data=digits)  # as export does
    assert rebuilt.plan == record.plan(two)
    x = torch.stack([digits.val[i][0] for i in range(8)])
    one_shot = rebuilt.plan.replace(steps=1).apply(baseline, x[:1], result.calibration)
    again = rebuilt.plan.apply(baseline, x[:1], result.calibration)  # the trial's own schedule
    assert torch.allclose(again(x), rebuilt.model(x), atol=1e-5)
    assert not torch.allclose(one_shot(x), rebuilt.model(x), atol=1e-5)
    index = write_report(record, tmp_path / "report").read_text()
    header = (tmp_path / "report" / "trials.csv").read_text().splitlines()[0].split(",")
    assert "steps" in header and "<th>steps</th>" in index


def test_weight_granularity_reaches_each_groups_sparsity_within_one_weight_per_layer(baseline, digits):
    from autoprune.engine import group_layers
    from autoprune.engine.sparsity import maskable_layers

    calibration = autoprune.searcher.calibration_batches(digits, 2, 64, seed=0)
    example = digits.val[0][0].unsqueeze(0)
    plan = Plan(
        rates={"features.3": 0.25},
        methods={"features.3": "l1"},
        sparsity={"features.0": 0.3, "features.3": 0.6, "features.7": 0.85},
    )
    model = plan.apply(baseline, example, calibration)
    layers, modules = group_layers(model, example), maskable_layers(model)
    for group, sparsity in plan.sparsity.items():
        for name in layers[group]:
            weight = modules[name].weight
            assert abs(int((weight == 0).sum()) - sparsity * weight.numel()) <= 1, name
    assert modules["features.3"].out_channels == 12  # 16 less 25 %: channels first, then weights of what remains


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_an_nm_study_exports_models_whose_2_4_blocks_hold_at_most_2_nonzeros(
    search_baseline, baseline, digits, tmp_path, storage
):
    import onnx
    from onnx import numpy_helper

    from autoprune.engine import group_layers, n_m_violations

    result = search_baseline(
        trials=3, granularity="nm", objective="size_bytes", seed=0, storage=storage, study_name="nm", **ANY_DROP
    )
    record = result.record
    best = result.best_trial
    assert record.plan(best).nm_groups and best.user_attrs["sparsity"] > 0.3
    assert best.user_attrs["size_bytes"] < record.baseline["size_bytes"]
    assert best.user_attrs["flops"] == record.baseline["flops"]  # dense FLOPs stay as they are
    study = autoprune.Study(record.study)
    study.export(tmp_path / "m.pt", baseline=baseline, data=digits)
    reloaded = autoprune.load(tmp_path / "m.pt")
    layers = group_layers(reloaded, digits.val[0][0].unsqueeze(0))
    masked = [name for group in record.plan(best).nm_groups for name in layers[group]]
    assert "features.3" in masked and n_m_violations(reloaded, 2, 4, masked) == {}
    study.export(tmp_path / "m.onnx", format="onnx", baseline=baseline, data=digits)
    convs = [numpy_helper.to_array(t) for t in onnx.load(str(tmp_path / "m.onnx")).graph.initializer]
    convs = [torch.from_numpy(w.copy()) for w in convs if w.ndim == 4 and w.shape[1] % 4 == 0]
    assert convs
    for weight in convs:
        assert int(((weight.movedim(1, -1).reshape(-1, 4) != 0).sum(1) > 2).sum()) == 0
    index = write_report(record, tmp_path / "report").read_text()
    assert "sparse kernels" in index and "<th>size_bytes</th>" in index


def test_weight_pruning_ranks_by_the_studys_weight_importance_and_export_replays_it(
    search_baseline, baseline, digits, tmp_path, storage
):
    from autoprune.engine import group_layers
    from autoprune.errors import UnknownNameError

    with pytest.raises(UnknownNameError, match="unknown weight_importance 'snap'.*'snip'"):
        search_baseline(
            max_accuracy_drop=1.0,
            trials=1,
            granularity="weight",
            weight_importance="snap",
            storage=f"sqlite:///{tmp_path / 'bad.db'}",
            study_name="bad",
        )
    result = search_baseline(
        trials=2,
        granularity="weight",
        weight_importance="snip",
        objective="nonzero_params",
        warm_start="none",
        seed=0,
        storage=storage,
        study_name="snip",
        **ANY_DROP,
    )
    record, best = result.record, result.best_trial
    plan = record.plan(best)
    assert plan.weight_importance == "snip" and plan.sparsity
    example = digits.val[0][0].unsqueeze(0)
    replayed = plan.apply(baseline, example, result.calibration)
    by_magnitude = plan.replace(weight_importance="magnitude").apply(baseline, example, result.calibration)
    layers = group_layers(replayed, example)
    modules, magnitude_modules = dict(replayed.named_modules()), dict(by_magnitude.named_modules())
    group = max(plan.sparsity, key=plan.sparsity.get)
    name = layers[group][0]
    zeros = modules[name].weight == 0
    assert abs(int(zeros.sum()) - plan.sparsity[group] * zeros.numel()) <= 1
    assert not torch.equal(zeros, magnitude_modules[name].weight == 0)  # another criterion, other weights
    assert best.user_attrs["nonzero_params"] == pytest.approx(sum(int((p != 0).sum()) for p in replayed.parameters()))


def test_round_to_holds_for_every_trial_and_for_plans_in_several_steps(
    search_baseline, baseline, digits, tmp_path, storage
):
    from autoprune.engine import group_sizes

    result = search_baseline(
        trials=3, round_to=4, steps=[1, 2], warm_start="none", seed=1, storage=storage, study_name="round", **ANY_DROP
    )
    record = result.record
    example = digits.val[0][0].unsqueeze(0)
    for trial in record.completed():
        plan = record.plan(trial)
        assert plan.round_to == 4
        model = plan.apply(baseline, example, result.calibration)
        sizes = group_sizes(model, example)
        assert all(channels % 4 == 0 for channels, _ in sizes.values()), sizes
        assert sum(p.numel() for p in model.parameters()) == trial.user_attrs["params"]
    assert any(record.plan(t).rates[g] > 0 for t in record.completed() for g in record.groups)
    plan = Plan(rates=dict.fromkeys(record.groups, 0.3), methods=dict.fromkeys(record.groups, "l1"), round_to=4)
    one_shot = group_sizes(plan.apply(baseline, example, result.calibration), example)
    two_steps = group_sizes(plan.replace(steps=2).apply(baseline, example, result.calibration), example)
    assert one_shot == two_steps and all(channels % 4 == 0 for channels, _ in one_shot.values())
    exported = autoprune.Study(record.study).export(tmp_path / "m.pt", baseline=baseline, data=digits)
    reloaded = autoprune.load(tmp_path / "m.pt")  # rebuilt to the rounded widths the file's weights have
    assert sum(p.numel() for p in reloaded.parameters()) == record.trial(exported["trial"]).user_attrs["params"]
