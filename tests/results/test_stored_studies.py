"""Studies written by an earlier release (tests/fixtures/studies-0.1.0) are read, and their trials rebuilt as scored."""

from __future__ import annotations

import shutil
from pathlib import Path

import optuna
import pytest
import torch

import autoprune
from autoprune.metrics import accuracy
from autoprune.results import open_study
from autoprune.storage import folder_storage

STORED = Path(__file__).parent.parent / "fixtures" / "studies-0.1.0"
NAMES = ("local", "both-weight", "nm")


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> str:
    """A copy of the stored studies, their artifact store pointed at the copy (as after moving a folder)."""
    folder = tmp_path_factory.mktemp("stored")
    shutil.copytree(STORED, folder, dirs_exist_ok=True)
    url = folder_storage(folder)
    for name in NAMES:
        optuna.load_study(study_name=name, storage=url).set_user_attr("artifact_store", str(folder / "artifacts"))
    return url


@pytest.mark.parametrize("name", NAMES)
def test_every_trial_of_a_stored_study_decodes_to_a_plan_of_its_settings(storage, name):
    record = open_study(storage, name)
    settings = record.settings
    for trial in record.completed():
        plan = record.plan(trial)
        assert set(plan.rates) == set(record.groups)
        assert plan.reconstruct is settings.reconstruct and plan.round_to == settings.round_to
        assert plan.steps == trial.params.get("steps", 1)
        assert record.space.decode(trial.params, trial.user_attrs.get("plan")) == plan
        if "nm" in settings.granularities:
            assert plan.nm_groups == tuple(g for g in record.groups if trial.params[f"{g}.nm"])
    if name == "both-weight":
        scopes = {record.plan(t).scope for t in record.completed()}
        assert scopes == {"local", "global"}


@pytest.mark.parametrize("name", NAMES)
def test_a_rebuilt_trial_of_a_stored_study_has_the_metrics_it_recorded(storage, name):
    record = open_study(storage, name)
    study = autoprune.Study(record.study)
    full = [t for t in record.completed() if t.user_attrs["evaluated"] == record.attrs["splits"]["val"]]
    chosen = record.chosen_trial()
    assert chosen is not None and full
    for trial in {t.number: t for t in [chosen, *full[-2:]]}.values():
        torch.manual_seed(trial.number)  # whatever the global generator holds
        rebuilt = study.rebuild(trial.number)
        x = rebuilt.data.val[0][0].unsqueeze(0)
        measured = autoprune.measure(rebuilt.model, x)
        assert measured["flops"] == trial.user_attrs["flops"] and measured["params"] == trial.user_attrs["params"]
        if trial.user_attrs["evaluated"] == record.attrs["splits"]["val"]:
            val = torch.utils.data.DataLoader(rebuilt.data.val, batch_size=256)
            assert accuracy(rebuilt.model, val) == pytest.approx(trial.user_attrs["accuracy"], abs=1e-9)
