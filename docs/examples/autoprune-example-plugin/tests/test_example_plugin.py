"""The example plugin, checked with autoprune's conformance suite, then used in a search."""

from __future__ import annotations

from pathlib import Path

import autoprune
from autoprune import cli
from autoprune.testing import ImportanceConformance, ModelConformance

HERE = Path(__file__).resolve().parent.parent


class TestMaxAbs(ImportanceConformance):
    importance = "max_abs"


class TestExampleCNN(ModelConformance):
    model = "example_cnn"
    params = {"width": 8}


def test_installed_plugin_is_listed_with_its_distribution(capsys):
    assert cli.main(["plugins", "--kind", "importance", "max_abs"]) == 0
    assert "autoprune-example-plugin 0.1.0" in capsys.readouterr().out


def test_a_short_search_uses_its_importance_and_model(tmp_path, capsys):
    assert cli.main(["search", str(HERE / "study.toml"), "--out", str(tmp_path), "--quiet"]) == 0
    assert "4 trials" in capsys.readouterr().out
    study = autoprune.Study.load(tmp_path)
    assert study.optuna.user_attrs["model"] == "example_cnn"
    methods = {v for t in study.optuna.trials for k, v in t.params.items() if k.endswith(".method")}
    assert "max_abs" in methods
