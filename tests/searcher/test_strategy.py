"""What guides and judges a search: early stopping, the simple baselines, sensitivity, warm starts, samplers."""

from __future__ import annotations

import copy
import random

import pytest
import torch
from torch import nn

import autoprune
from autoprune import SearchSettings, TrainSettings
from autoprune.metrics import count_correct
from autoprune.plan import PlanSpace
from autoprune.searcher import (
    SAMPLERS,
    Budget,
    Evaluator,
    global_plan,
    largest_feasible,
    warm_start_plans,
)

pytestmark = pytest.mark.baseline("long")


# -- early stopping --------------------------------------------------------------------


class Oracle(nn.Module):
    """Answers right exactly where ``right[i]`` is true, for inputs that are sample indices."""

    def __init__(self, right: list[bool]) -> None:
        super().__init__()
        self.right = torch.tensor(right)
        self.scale = nn.Parameter(torch.ones(()))

    def forward(self, index):
        logits = torch.zeros(len(index), 2)
        logits[torch.arange(len(index)), self.right[index].long()] = 1.0
        return logits * self.scale


def _batches(n: int, size: int) -> list:
    index = torch.arange(n)
    return [(index[i : i + size], torch.ones(len(index[i : i + size]), dtype=torch.long)) for i in range(0, n, size)]


@pytest.mark.parametrize("seed", range(20))
def test_exact_early_stop_stops_at_the_first_batch_that_proves_the_budget_lost(seed):
    rng = random.Random(seed)
    n, size = 200, 16
    error_rate = rng.choice([0.02, 0.05, 0.1, 0.2, 0.4])
    right = [rng.random() > error_rate for _ in range(n)]
    budget = Budget(base_correct=190, total=n, max_drop=rng.choice([0.5, 1.0, 2.0, 5.0]))
    correct, seen = count_correct(Oracle(right), _batches(n, size), stop=budget.stop_rule("exact"))
    full = sum(right)
    if budget.allows(full):
        assert seen == n and correct == full  # a feasible candidate is never stopped
    else:
        # the count ends at the first batch after which even a perfect rest would not do
        ends = [min(i + size, n) for i in range(0, n, size)]
        first = next(e for e in ends if not budget.allows(sum(right[:e]) + n - e))
        assert seen == first and correct == sum(right[:first])


@pytest.mark.parametrize("mode", ["exact", "statistical"])
@pytest.mark.parametrize("seed", range(30))
def test_a_stopped_count_always_records_a_drop_over_the_budget(mode, seed):
    """Regression: the statistical rule rounded its projection down, so a stopped count could record
    a drop within the budget and pass as feasible without having been counted in full."""
    rng = random.Random(seed)
    n = 288
    budget = Budget(base_correct=284, total=n, max_drop=1.0)  # the quickstart's validation split
    error_rate = rng.uniform(0.005, 0.08)
    right = [rng.random() > error_rate for _ in range(n)]
    correct, seen = count_correct(Oracle(right), _batches(n, 16), stop=budget.stop_rule(mode))
    if seen < n:
        assert budget.counted_drop(correct, seen) > budget.max_drop
    else:
        assert budget.counted_drop(correct, seen) == budget.drop(sum(right))


def test_statistical_early_stop_stops_clear_losers_early_and_keeps_clear_winners():
    n = 2000
    good = [i % 100 != 0 for i in range(n)]  # 99% right
    bad = [i % 10 != 0 for i in range(n)]  # 90% right, the budget needs 98%
    budget = Budget(base_correct=int(0.99 * n), total=n, max_drop=1.0)
    assert count_correct(Oracle(good), _batches(n, 64), stop=budget.stop_rule("statistical")) == (sum(good), n)
    _correct, seen = count_correct(Oracle(bad), _batches(n, 64), stop=budget.stop_rule("statistical"))
    exact_seen = count_correct(Oracle(bad), _batches(n, 64), stop=budget.stop_rule("exact"))[1]
    assert seen <= 320 and exact_seen >= 384
    assert budget.stop_rule("off") is None


def test_early_stopped_trials_are_infeasible_and_full_counts_exact(baseline, digits):
    evaluator = Evaluator.build(
        copy.deepcopy(baseline),
        digits,
        SearchSettings(max_accuracy_drop=1.0, calibration_batches=4, early_stop="exact"),
    )
    crushed = evaluator.evaluate(evaluator.space.uniform(0.85, "l1"))
    assert crushed["evaluated"] < evaluator.budget.total and crushed["accuracy_drop"] > 1.0
    full = evaluator.evaluate(evaluator.space.uniform(0.85, "l1"), early_stop="off")
    assert full["evaluated"] == evaluator.budget.total and full["accuracy_drop"] > 1.0


def test_recalibration_at_rate_zero_keeps_the_baselines_accuracy(baseline, digits):
    evaluator = Evaluator.build(copy.deepcopy(baseline), digits, SearchSettings(max_accuracy_drop=1.0))
    metrics = evaluator.evaluate(evaluator.space.uniform(0.0, "l1"))
    one_image = 100.0 / evaluator.budget.total
    assert abs(metrics["accuracy_drop"]) <= one_image
    assert metrics["flops"] == evaluator.base["flops"]


# -- the simple baselines ---------------------------------------------------------------


@pytest.mark.parametrize("boundary", [0.0, 0.13, 0.37, 0.61, 0.79])
def test_bisection_finds_the_boundary_of_a_monotone_drop(boundary):
    calls = []

    def evaluate(rate):
        calls.append(rate)
        return {"accuracy_drop": 10 * (rate - boundary) + 1.0, "flops": 1 - rate}

    found = largest_feasible(evaluate, high=0.8, max_drop=1.0, steps=6)
    assert found["rate"] <= boundary + 1e-12
    assert boundary - found["rate"] <= 0.8 / 2**6 + 1e-12
    assert found["evaluations"] == len(calls) <= 8


def test_bisection_with_nothing_within_the_budget():
    found = largest_feasible(lambda rate: {"accuracy_drop": 5.0}, high=0.8, max_drop=1.0, steps=3)
    assert found == {"rate": None, "evaluations": 5}


def test_global_pruning_ranks_channels_across_groups_by_normalized_score():
    scores = {"a": torch.tensor([1.0, 2.0, 3.0, 4.0]), "b": torch.tensor([10.0, 10.0, 10.0, 50.0])}
    sizes = {"a": (4, 1), "b": (4, 1)}
    # normalized: a = [0.4, 0.8, 1.2, 1.6], b = [0.5, 0.5, 0.5, 2.5]
    plan = global_plan(0.5, scores, sizes, "l1", rate_cap=0.8)
    assert plan["rates"] == {"a": 0.25, "b": 0.75}
    capped = global_plan(0.5, scores, sizes, "l1", rate_cap=0.5)
    assert capped["rates"] == {"a": 0.5, "b": 0.5}


def test_every_study_measures_its_baselines_and_the_search_beats_or_matches_them(search_baseline, storage):
    result = search_baseline(max_accuracy_drop=1.0, trials=12, calibration_batches=4, storage=storage)
    record = result.record
    references = record.references
    for kind in ("uniform", "global"):
        reference = references[kind]
        assert reference["rate"] is not None and reference["accuracy_drop"] <= 1.0 and reference["evaluations"] >= 2
    grid = autoprune.plan.rate_grid(0.0, 0.8, 0.05)
    first = result.study.trials[:2]  # the baselines themselves, scored as they were found
    for trial, kind in zip(first, ("uniform", "global")):
        assert record.plan(trial).rates == references[kind]["plan"]  # the bisection's rates, off the grid
        assert all(any(abs(rate - r) < 1e-9 for r in grid) for rate in trial.params.values())  # the sampler's
        for metric in ("flops", "params", "accuracy_drop"):
            assert trial.user_attrs[metric] == references[kind][metric], (kind, metric)
    assert record.uniform_rate(first[0]) == references["uniform"]["rate"] not in grid
    best = result.best_trial
    compared = record.comparison(best)
    assert compared["ratio"] >= 1.0  # the baselines are the first trials, so the search never does worse
    assert compared["reduction"] == pytest.approx(record.baseline["flops"] / best.user_attrs["flops"])


# -- sensitivity and warm starts ---------------------------------------------------------


def test_sensitivity_curves_stop_past_twice_the_budget_and_bound_each_group(search_baseline, storage):
    result = search_baseline(
        max_accuracy_drop=1.0,
        trials=3,
        calibration_batches=4,
        warm_start="sensitivity",
        storage=storage,
    )
    record = result.record
    rows = record.sensitivity
    assert {r["group"] for r in rows} == set(record.groups)
    for group in record.groups:
        curve = [r for r in rows if r["group"] == group]
        assert [r["rate"] for r in curve] == sorted(r["rate"] for r in curve)
        assert all(r["accuracy_drop"] <= 2.0 for r in curve[:-1])  # only the last point may pass the limit
        over = [r["rate"] for r in curve if r["accuracy_drop"] > 2.0]
        assert record.rate_limits[group] == (0.8 if not over else pytest.approx(over[0] - 0.05))
    for trial in record.completed():
        assert all(trial.params[f"{g}.rate"] <= record.rate_limits[g] + 1e-9 for g in record.groups)


def test_warm_start_plans_run_first(search_baseline, storage):
    result = search_baseline(
        max_accuracy_drop=1.0,
        trials=8,
        calibration_batches=4,
        importances=("l1", "fpgm"),
        warm_start="sensitivity",
        storage=storage,
    )
    record = result.record
    uniform = record.references["uniform"]
    space, found = record.space, record.references["global"]
    expected = [space.uniform(uniform["rate"]), space.plan(found["plan"])]  # the baselines, then the curves'
    expected += warm_start_plans(record.sensitivity, space, record.baseline["flops"], "flops", 1.0)
    params = [space.params(p) for p in expected]
    unique = [p for i, p in enumerate(params) if p not in params[:i]]
    assert len(unique) >= 2
    assert [t.params for t in result.study.trials[: len(unique)]] == unique


def test_the_knapsack_spends_the_budget_where_it_saves_the_most():
    rows = [
        {"group": "cheap", "rate": 0.5, "accuracy_drop": 0.1, "flops": 60, "params": 0},
        {"group": "cheap", "rate": 0.8, "accuracy_drop": 0.4, "flops": 40, "params": 0},
        {"group": "dear", "rate": 0.5, "accuracy_drop": 0.9, "flops": 90, "params": 0},
        {"group": "dear", "rate": 0.8, "accuracy_drop": 3.0, "flops": 50, "params": 0},
    ]
    space = PlanSpace(SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm")), ("cheap", "dear"))
    plans = warm_start_plans(rows, space, 100, "flops", 1.0)
    # half the budget and all of it: 0.4 points for 60 FLOPs; 1.5 budgets and more: 1.3 points for 70
    # (the dear group's 0.8 is past the curve's limit, and the same plan is not repeated)
    assert [p.rates for p in plans] == [{"cheap": 0.8, "dear": 0.0}, {"cheap": 0.8, "dear": 0.5}]
    assert plans[0].methods == {"cheap": "l1", "dear": "l1"}


def test_the_sensitivity_command_writes_a_table_and_a_plot_and_caches_them(tmp_path, capsys, monkeypatch, study_file):
    import pandas as pd

    from autoprune import cli
    from autoprune.searcher import optimize

    study = study_file("s.toml", study={"name": "curves"}, train={"epochs": 3})
    args = ["sensitivity", str(study), "--out", str(tmp_path)]
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "sensitivity of 3 groups" in out and "features.0" in out
    table = pd.read_csv(tmp_path / "sensitivity.csv")
    assert set(table["group"]) == {"features.0", "features.3", "features.7"}
    assert (tmp_path / "sensitivity.png").stat().st_size > 0

    def measured_again(evaluator):
        raise AssertionError("the cached curves were measured again")

    monkeypatch.setattr(optimize, "measure_sensitivity", measured_again)
    assert cli.main(args) == 0
    assert cli.main(["search", str(study), "--out", str(tmp_path), "--trials", "3", "--quiet"]) == 0
    assert (tmp_path / "report" / "sensitivity.png").is_file()


# -- samplers ---------------------------------------------------------------------------


@pytest.mark.parametrize("sampler", SAMPLERS)
def test_each_sampler_runs(search_baseline, sampler):
    result = search_baseline(
        max_accuracy_drop=2.0,
        trials=12,
        calibration_batches=2,
        sampler=sampler,
        warm_start="none",
        importances=("l1", "fpgm"),
    )
    trials = result.study.trials
    assert len(trials) == 12 and all(t.state.name == "COMPLETE" for t in trials)
    assert len({tuple(sorted(t.params.items())) for t in trials}) >= 8  # the sampler proposes new plans
    assert result.record.settings.sampler == sampler


# -- finalists --------------------------------------------------------------------------


def test_finalists_are_fine_tuned_and_ranked_against_their_score(search_baseline, tmp_path, storage):
    from autoprune.results import write_report

    recipe = TrainSettings(epochs=1, lr=0.01, batch_size=128)
    result = search_baseline(
        max_accuracy_drop=3.0,
        trials=8,
        calibration_batches=2,
        finalists=3,
        finetune=recipe,
        storage=storage,
    )
    record = result.record
    finalists = record.finalists
    feasible = sorted(record.feasible(), key=lambda t: (t.value, -t.user_attrs["accuracy"], t.number))
    assert [row["trial"] for row in finalists["trials"]] == [t.number for t in feasible[:3]]
    assert finalists["recipe"] == recipe.to_attrs()
    for row in finalists["trials"]:
        assert (
            0 < row["finetuned_accuracy"] <= 100
            and row["accuracy"] == record.study.trials[row["trial"]].user_attrs["accuracy"]
        )
    assert finalists["spearman"] is None or -1.0 <= finalists["spearman"] <= 1.0
    write_report(record, tmp_path / "report")
    assert (tmp_path / "report" / "finalists.png").is_file() and (tmp_path / "report" / "finalists.csv").is_file()


def test_the_study_files_finetune_section_is_the_finalists_recipe():
    from autoprune.settings import FINETUNE, parse_study_file

    study = parse_study_file(
        {
            "study": {"max_accuracy_drop": 1.0},
            "model": {"name": "small_cnn"},
            "dataset": {"name": "digits"},
            "finetune": {"epochs": 3},
        }
    )
    assert study.finetune == FINETUNE.replace(epochs=3) and study.train.epochs == 15
    with pytest.raises(autoprune.AutopruneError, match="finetune.lr must be a number > 0, got -1"):
        parse_study_file(
            {
                "study": {"max_accuracy_drop": 1.0},
                "model": {"name": "small_cnn"},
                "dataset": {"name": "digits"},
                "finetune": {"lr": -1},
            }
        )
