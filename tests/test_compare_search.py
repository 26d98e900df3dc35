"""The search-variants benchmark: each variant a real search of the study file with its changes, its ratio to
the study's better baseline, and its section of the document replaced in place."""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_study_file

import autoprune
from autoprune.settings import load_study_file

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import compare_search
finally:
    sys.path.remove(str(BENCHMARKS))


@pytest.mark.parametrize("variant", [name for name, _ in compare_search.VARIANTS])
def test_each_variant_runs_a_real_search_and_reports_its_ratio_to_the_better_baseline(tmp_path, digits, variant):
    study_file = load_study_file(
        write_study_file(tmp_path / "s.toml", study={"name": "digits-variants", "max_accuracy_drop": 3.0})
    )
    torch.manual_seed(0)
    model = autoprune.train(
        autoprune.create_model("small_cnn", num_classes=10, in_channels=1), digits, autoprune.TrainSettings(epochs=1)
    )
    changes = dict(compare_search.VARIANTS)[variant]
    storage = f"sqlite:///{tmp_path / 'v.db'}"
    row = compare_search.run_variant(study_file, digits, copy.deepcopy(model), storage, 3.0, 8, changes)
    assert row["trials"] == 8 and 1 <= row["feasible"] <= 8  # the baselines at least
    assert row["reduction"] >= row["baseline_reduction"] > 1  # never less than the study's own baselines
    assert row["ratio"] == pytest.approx(row["reduction"] / row["baseline_reduction"])
    if changes.get("importances") == "first":
        assert row["changes"]["importances"] == study_file.settings.importances[:1]


def test_the_section_is_replaced_in_place_and_names_the_variants_not_run_yet():
    args = argparse.Namespace(budget=1.0, trials=100)
    row = {"reduction": 1.8, "ratio": 1.31, "best_trial": 77, "feasible": 40, "trials": 100, "commit": "abc1234"}
    measured = {"bench-a": {compare_search.VARIANTS[0][0]: {**row, "date": "2026-12-03"}}}
    section = compare_search.render(measured, args)
    assert "| 1.80x | 1.31x | 77 | 40 of 100 | abc1234, 2026-12-03 |" in section
    assert section.count("not run yet") == len(compare_search.VARIANTS) - 1
    doc = "# Benchmarks\n\ntext\n\n<!-- variants: old -->\nold table\n<!-- /variants -->\n\n<!-- memory: m -->\nm\n"
    replaced = compare_search.with_section(doc, section)
    assert "old table" not in replaced and replaced.count("<!-- /variants -->") == 1
    assert replaced.index("<!-- variants:") < replaced.index("<!-- memory:")  # where it was
    assert compare_search.with_section("# Benchmarks\n", section).endswith("<!-- /variants -->\n")
