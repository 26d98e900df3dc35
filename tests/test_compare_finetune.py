"""The fine-tuning-modes benchmark: one plan fine-tuned in each mode to the same widths, the plan the search
kept where there is one, and its section of the document replaced in place."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_study_file

import autoprune
from autoprune.plan import Plan
from autoprune.settings import load_study_file

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import compare_finetune
finally:
    sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def trained(digits):
    torch.manual_seed(0)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1)
    return autoprune.train(model, digits, autoprune.TrainSettings(epochs=2))


def test_every_mode_fine_tunes_the_same_plan_to_the_same_flops(tmp_path, digits, trained):
    study_file = load_study_file(write_study_file(tmp_path / "s.toml", study={"name": "digits-modes"}))
    groups = autoprune.prunable_groups(trained, torch.zeros(1, 1, 8, 8))
    plan = Plan(rates=dict.fromkeys(groups, 0.5), methods=dict.fromkeys(groups, "l1"))
    rows = {mode: compare_finetune.run_mode(study_file, digits, trained, plan, mode, 1) for mode in ("hard", "soft")}
    assert rows["hard"]["flops"] == rows["soft"]["flops"] < autoprune.count_flops(trained, torch.zeros(1, 1, 8, 8))
    for row in rows.values():
        assert row["epochs"] == 1 and 10 < row["val_accuracy"] <= 100 and "test_accuracy" in row


def test_the_plan_is_the_searchs_where_make_bench_kept_one(tmp_path, monkeypatch):
    monkeypatch.setattr(compare_finetune, "RESULTS", tmp_path)
    plan, source = compare_finetune.the_plan("s", 1.0, ["a", "b"], 0.4, "l1")
    assert plan.rates == {"a": 0.4, "b": 0.4} and source == "rate 0.4 everywhere"
    kept = {"rows": {"autoprune": {"plan": {"rates": {"a": 0.3}, "methods": {"a": "fpgm"}, "reconstruct": True}}}}
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "budget-1.0.json").write_text(json.dumps(kept))
    plan, source = compare_finetune.the_plan("s", 1.0, ["a", "b"], 0.4, "l1")
    assert plan == Plan(rates={"a": 0.3}, methods={"a": "fpgm"}, reconstruct=True)
    assert source == "autoprune's plan at 1.0 points"


def test_the_section_names_the_modes_not_run_yet(tmp_path):
    row = {"epochs": 2, "val_accuracy": 91.5, "test_accuracy": 91.0, "flops": 50, "base_flops": 100}
    row.update(seconds=12.0, commit="abc1234", date="2026-12-04", plan="rate 0.5 everywhere")
    section = compare_finetune.render({"bench-a": {"soft": row}}, argparse.Namespace(epochs=2))
    assert "| soft | 2 | 91.50 % | 91.00 % | 2.00x | 12 | abc1234, 2026-12-04 |" in section
    assert section.count("not run yet") == 2 and "**bench-a** (rate 0.5 everywhere)" in section
    doc = tmp_path / "b.md"
    doc.write_text(f"# B\n\n{compare_finetune.BEGIN}\nold\n{compare_finetune.END}\n\nafter\n")
    compare_finetune.write_section(doc, section, compare_finetune.BEGIN, compare_finetune.END)
    text = doc.read_text()
    assert "old" not in text and text.count(compare_finetune.END) == 1 and text.endswith("after\n")
