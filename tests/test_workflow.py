"""A study file run from Python leaves what `autoprune search` leaves."""

from __future__ import annotations

import json
import shutil

import pytest
import torch

import autoprune
from autoprune import cli
from autoprune.workflow import FOLDER_MARK


def test_run_study_writes_the_report_the_model_and_its_plan_and_the_cli_adds_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    run = autoprune.run_study("studies/quickstart.toml", trials=3, out=out, log=lambda m: None)
    record, best = run.result.record, run.result.best_trial
    assert run.prepared.trained and len(record.completed()) == 3 and best is not None
    assert run.best_model_file == out / "best.pt" and run.report == out / "report" / "index.html"
    assert json.loads(run.best_plan_file.read_text()) == json.loads(run.result.best_plan.to_json(trial=best.number))
    model = autoprune.load(run.best_model_file)
    assert autoprune.measure(model, torch.randn(1, 1, 8, 8))["flops"] == record.value(best, "flops")
    written = sorted(p.relative_to(out) for p in out.rglob("*"))
    assert cli.main(["search", "studies/quickstart.toml", "--trials", "3", "--out", str(out), "--quiet"]) == 0
    assert f"best trial          #{best.number}" in capsys.readouterr().out  # resumed: no trial run again
    assert sorted(p.relative_to(out) for p in out.rglob("*")) == written


def test_run_study_refuses_a_folder_another_study_claimed_before_any_work(tmp_path):
    (tmp_path / FOLDER_MARK).write_text(json.dumps({"study": "other", "storage": "sqlite:///x.db"}))
    with pytest.raises(autoprune.AutopruneError, match="holds study 'other'"):
        autoprune.run_study("studies/quickstart.toml", trials=1, out=tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == [FOLDER_MARK]


def test_a_run_folder_moved_whole_is_still_its_study_resumed_and_rebuilt_from_its_new_place(
    tmp_path, quickstart_folder
):
    old = quickstart_folder(tmp_path / "old")
    first = autoprune.run_study("studies/quickstart.toml", trials=2, out=old, log=lambda m: None)
    moved = shutil.move(tmp_path / "old", tmp_path / "new")
    run = autoprune.run_study("studies/quickstart.toml", trials=3, out=moved, log=lambda m: None)
    assert not run.prepared.trained and len(run.result.record.completed()) == 3  # the same study, resumed
    assert run.best_model_file.parent == moved and not (tmp_path / "old").exists()
    study = autoprune.Study.load(moved)
    number = first.result.best_trial.number
    rebuilt = study.rebuild(number)  # the baseline's weights found in the new folder
    x = torch.randn(1, 1, 8, 8)
    assert autoprune.measure(rebuilt.model, x)["flops"] == study.record.value(study.record.trial(number), "flops")


def test_a_refused_study_leaves_no_new_output_folder_behind(tmp_path, study_file):
    """Regression: a study refused by its checks left the output folder (and its parents) made, empty."""
    typo = study_file("typo.toml", search={"importances": ["fpmg"]})  # refused once the folder is there
    with pytest.raises(autoprune.AutopruneError, match="unknown importance 'fpmg'"):
        autoprune.run_study(typo, out=tmp_path / "new" / "deeper")
    assert not (tmp_path / "new").exists()
    (tmp_path / "kept").mkdir()  # a folder that was there before stays
    with pytest.raises(autoprune.AutopruneError, match="unknown importance 'fpmg'"):
        autoprune.run_study(typo, out=tmp_path / "kept")
    assert (tmp_path / "kept").is_dir() and not any((tmp_path / "kept").iterdir())


@pytest.mark.parametrize("out", ["typo.toml", "typo.toml/sub", "/proc/x"])
def test_an_output_folder_that_cannot_be_one_is_refused_before_any_work(tmp_path, study_file, monkeypatch, out):
    from autoprune import zoo

    monkeypatch.chdir(tmp_path)
    study = study_file("typo.toml")
    before = study.read_text()
    monkeypatch.setattr(zoo, "create_dataset", lambda *a, **k: pytest.fail("the data was loaded"))
    with pytest.raises(autoprune.AutopruneError, match=f"output folder '{out}' (is a file|is inside|cannot be)"):
        autoprune.run_study(study, out=out)
    assert study.read_text() == before and sorted(p.name for p in tmp_path.iterdir()) == ["typo.toml"]
