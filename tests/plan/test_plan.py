"""The Plan and its space: every mode round-trips through trial parameters and JSON, and applies as scored."""

from __future__ import annotations

import json
import random

import optuna
import pytest

from autoprune import AutopruneError, SearchSettings
from autoprune.plan import Plan, PlanSpace

GROUPS = ("stem", "block.conv1", "block.conv2", "head")

#: One space per mode a study can search; each is sampled at random and round-tripped.
MODES = {
    "local": {"importances": ("l1", "fpgm", "bn_scale")},
    "local, one importance": {"importances": ("l1",)},
    "global": {"scope": "global", "importances": ("l1", "fpgm")},
    "both": {"scope": "both", "importances": ("l1", "fpgm")},
    "weight": {"granularity": "weight"},
    "channel and weight": {"granularity": ("channel", "weight"), "scope": "both"},
    "nm": {"granularity": "nm", "nm": (1, 4)},
    "channel and nm": {"granularity": ("channel", "nm"), "weight_importance": "snip"},
    "steps": {"steps": (1, 2, 4), "recovery_steps": 3},
    "fixed steps": {"steps": 3},
    "round_to": {"round_to": 8, "reconstruct": False},
    "reconstruct": {"reconstruct": True, "rate_step": 0.1, "rate_max": 0.7},
}


class Ranking:
    """A stand-in for the study's global ranking: rates that depend on the global rate, cap and method."""

    def __init__(self, space: PlanSpace) -> None:
        self.space = space

    def plan(self, rate, method, rate_cap):
        caps = rate_cap if isinstance(rate_cap, dict) else dict.fromkeys(self.space.groups, rate_cap)
        rates = {g: round(min(caps[g], rate * (k + 1) / len(caps)), 6) for k, g in enumerate(self.space.groups)}
        return self.space.plan(rates, dict.fromkeys(rates, method))


def sampled(space: PlanSpace, count: int, seed: int) -> list[tuple[optuna.trial.FrozenTrial, Plan]]:
    """``count`` plans drawn at random from ``space``, each with the trial it was drawn in."""
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    ranking, plans = Ranking(space), {}

    def objective(trial):
        plans[trial.number] = space.suggest(trial, ranking)
        return 0.0

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=count)
    return [(trial, plans[trial.number]) for trial in study.trials]


def rounded(plan: Plan) -> dict:
    """The plan's JSON form with every number rounded to 9 places."""

    def walk(value):
        if isinstance(value, float):
            return round(value, 9)
        if isinstance(value, dict):
            return {k: walk(v) for k, v in value.items()}
        return [walk(v) for v in value] if isinstance(value, list) else value

    return walk(plan.to_dict())


@pytest.mark.parametrize("mode", sorted(MODES))
def test_every_mode_round_trips_through_trial_parameters_and_json(mode):
    settings = SearchSettings(max_accuracy_drop=1.0, **MODES[mode])
    limits = dict(zip(GROUPS, (0.8, 0.5, 0.6, 0.3)))
    space = PlanSpace(settings, GROUPS, limits)
    for trial, plan in sampled(space, 25, seed=len(mode)):
        resolved = {"rates": plan.rates, "methods": plan.methods} if plan.scope == "global" else None
        assert space.params(plan) == pytest.approx(trial.params)  # encoded as the sampler asked for it
        assert space.decode(trial.params, resolved) == plan  # decoded from a stored trial
        assert Plan.from_json(plan.to_json(trial=trial.number)) == plan
        assert Plan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
        # the study's own parts come from its settings, whatever the sampler drew
        assert (plan.round_to, plan.round_min, plan.reconstruct) == (*settings.channel_rounding, settings.reconstruct)
        assert plan.recovery_steps == (settings.recovery_steps if plan.steps > 1 else 0)
        if plan.scope == "local" and "channel" in settings.granularities:
            assert all(plan.rates[g] <= limits[g] + 1e-9 for g in GROUPS)


@pytest.mark.parametrize("mode", sorted(MODES))
def test_an_enqueued_plan_is_the_plan_the_trial_then_draws(mode):
    settings = SearchSettings(max_accuracy_drop=1.0, **MODES[mode])
    space = PlanSpace(settings, GROUPS)
    ranking = Ranking(space)
    for _, plan in sampled(space, 6, seed=1):
        study = optuna.create_study()
        study.enqueue_trial(space.params(plan))
        trial = study.ask()
        assert rounded(space.suggest(trial, ranking)) == rounded(plan)  # the same, but for float noise


def test_a_plan_off_the_grid_is_encoded_on_it_and_within_each_groups_limit():
    settings = SearchSettings(max_accuracy_drop=1.0, importances=("l1", "fpgm"), granularity=("channel", "weight"))
    space = PlanSpace(settings, ("a", "b"), {"a": 0.8, "b": 0.3})
    params = space.params(space.plan({"a": 0.491, "b": 0.6}, {"a": "fpgm"}, sparsity={"a": 0.33}))
    assert params == {
        "a.rate": 0.45,
        "a.method": "fpgm",
        "b.rate": 0.3,
        "b.method": "l1",
        "a.sparsity": 0.3,
        "b.sparsity": 0.0,
    }


def test_the_json_form_names_only_what_differs_from_the_defaults():
    assert Plan(rates={"a": 0.5}, methods={"a": "l1"}).to_dict() == {"rates": {"a": 0.5}, "methods": {"a": "l1"}}
    full = Plan(
        rates={"a": 0.5},
        methods={"a": "l1"},
        global_rate=0.4,
        global_max_rate=0.6,
        sparsity={"a": 0.2, "b": 0.0},
        nm_groups=("a",),
        steps=2,
        recovery_steps=4,
        round_to=8,
        reconstruct=True,
    )
    assert full.to_dict() == {
        "rates": {"a": 0.5},
        "methods": {"a": "l1"},
        "global": {"rate": 0.4, "max_rate": 0.6},
        "sparsity": {"a": 0.2},
        "nm": {"groups": ["a"], "pattern": [2, 4]},
        "weight_importance": "magnitude",
        "round_to": 8,
        "reconstruct": True,
        "steps": 2,
        "recovery_steps": 4,
    }
    assert Plan(rates={"a": 0.5}, steps=1, recovery_steps=4).recovery_steps == 0  # no step to recover between


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"rates": {"a": 1.0}}, r"rates and sparsities are in \[0, 1\); group 'a' has 1.0"),
        ({"sparsity": {"a": -0.1}}, r"group 'a' has -0.1"),
        ({"steps": 0}, "steps is an integer >= 1, got 0"),
        ({"round_to": 2.5}, "round_to is an integer >= 1, got 2.5"),
        ({"global_rate": 0.3}, "both global_rate and global_max_rate, or neither"),
        ({"nm_pattern": (4, 2)}, r"nm_pattern is \(N, M\) with 0 < N < M, got \(4, 2\)"),
    ],
)
def test_a_malformed_plan_is_refused_with_what_was_given(fields, message):
    with pytest.raises(AutopruneError, match=message):
        Plan(**fields)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{", "is not JSON"),
        ('{"methods": {}}', "is not an autoprune plan: it needs 'rates'"),
        ('{"rates": {"a": "x"}}', "is not an autoprune plan"),
    ],
)
def test_a_malformed_plan_file_is_one_line_naming_the_file(text, message):
    with pytest.raises(AutopruneError, match=f"best_plan.json {message}"):
        Plan.from_json(text, "best_plan.json")


def test_removed_fractions_apply_the_floors_and_round_to():
    sizes = {"a": (16, 1), "b": (12, 4)}  # b: 4 channel groups of 3
    assert Plan(rates={"a": 0.3, "b": 0.5}).removed_fractions(sizes) == {"a": 4 / 16, "b": 1 / 3}
    assert Plan(rates={"a": 0.3}, round_to=8).removed_fractions(sizes) == {"a": 0.0}  # 16 - 4 rounds up to 16
    # round_min: a group narrower than it is not rounded (round_to = "auto" keeps 8 from a 12-channel group)
    assert Plan(rates={"a": 0.3}, round_to=8, round_min=32).removed_fractions(sizes) == {"a": 4 / 16}
    assert Plan(rates={"a": 0.3}, round_to=8, round_min=16).removed_fractions(sizes) == {"a": 0.0}


def test_round_to_auto_is_8_in_groups_of_32_channels_or_more_and_round_trips():
    settings = SearchSettings(max_accuracy_drop=1.0)
    assert settings.round_to == "auto" and settings.channel_rounding == (8, 32)
    assert SearchSettings(max_accuracy_drop=1.0, round_to=4).channel_rounding == (4, 0)
    plan = PlanSpace(settings, ("a",)).uniform(0.3)
    assert (plan.round_to, plan.round_min) == (8, 32)
    assert plan.to_dict()["round_min"] == 32 and Plan.from_dict(plan.to_dict()) == plan
    assert Plan(round_to=1, round_min=32).round_min == 0  # nothing rounded: no width to hold it to
    with pytest.raises(AutopruneError, match=r"round_to must be 'auto' or an integer >= 1, got str 'eight'"):
        SearchSettings(max_accuracy_drop=1.0, round_to="eight")


def test_the_study_parts_of_a_plan_come_from_the_settings_alone():
    settings = SearchSettings(max_accuracy_drop=1.0, round_to=4, reconstruct=False, steps=(2, 3), recovery_steps=5)
    space = PlanSpace(settings, ("a", "b"))
    uniform = space.uniform(0.3)
    assert (uniform.round_to, uniform.reconstruct, uniform.steps, uniform.recovery_steps) == (4, False, 2, 5)
    assert uniform.rates == {"a": 0.3, "b": 0.3} and uniform.methods == {"a": "l1", "b": "l1"}
    assert space.global_start(0.25).scope == "global"
    rng = random.Random(0)
    rates = {g: rng.choice(space.grid) for g in space.groups}
    assert space.decode(space.params(space.plan(rates))) == space.plan(rates)


def test_rates_are_written_and_shown_without_float_noise_and_prune_the_same_channels():
    """Regression (issue 23): ``0.30000000000000004`` in best_plan.json, ``0.6000000000000001`` in the
    plan's repr. A rate on the grid but for float noise is that grid value; any other is kept exact."""
    from autoprune.engine import removal_count

    noisy = {"a": 0.1 * 3, "b": 0.05 * 12, "c": 1 / 3, "d": 0.45}
    assert (noisy["a"], noisy["b"]) == (0.30000000000000004, 0.6000000000000001)
    plan = Plan(rates=noisy, methods=dict.fromkeys(noisy, "l1"), sparsity={"a": 0.1 * 3})
    text = plan.to_json(trial=3)
    assert json.loads(text)["rates"] == {"a": 0.3, "b": 0.6, "c": 1 / 3, "d": 0.45}
    assert "00000000" not in text.replace("0.3333333333333333", "")
    assert "'a': 0.3, 'b': 0.6, 'c': 0.333333, 'd': 0.45" in repr(plan) and "sparsity={'a': 0.3}" in repr(plan)
    assert Plan.from_json(text) == plan
    for rate in (*noisy.values(), *(k * 0.05 for k in range(20)), *(k / 7 for k in range(7))):
        tidied = Plan(rates={"g": rate}).rates["g"]
        assert all(removal_count(size, tidied) == removal_count(size, rate) for size in range(1, 4097))
