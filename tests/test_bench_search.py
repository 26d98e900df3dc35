"""The search benchmark's own parts: per-study results, resumed per study and budget, and the document it renders
for two architectures, the sections other benchmarks wrote kept."""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import pytest
import torch
from conftest import write_study_file

import autoprune
from autoprune import plugins
from autoprune.settings import load_study_file

ROOT = Path(__file__).parent.parent
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))
try:
    import bench_models  # noqa: F401 - imported here, where the benchmarks folder is on the path, for main's plugin
    import bench_search
finally:
    sys.path.remove(str(BENCHMARKS))

RESNET, MOBILE = (str(ROOT / path) for path in bench_search.STUDIES)
BUDGETS = [0.5, 1.0, 2.0]


@pytest.fixture
def benches():
    """The benchmark's two studies, with no results yet (the MobileNet's model registered for the test)."""
    name = plugins.load_plugin_module("bench_models")
    yield [bench_search.Bench(load_study_file(path), path) for path in (RESNET, MOBILE)]
    if plugins.get_plugin_manager().has_plugin(name):
        plugins.unregister(name=name)


def result(budget: float, base_flops: float, auto: float, *, machine: str = "machine A") -> dict:
    """One budget's measurement as bench_search keeps it: autoprune reaches ``auto`` times fewer FLOPs,
    the other methods 1.25x (the random search and the baselines without reconstruction none)."""
    plan = {"rates": {"g": 0.3}, "methods": {"g": "l1"}}

    def row(reduction: float | None, **extra) -> dict:
        flops = None if reduction is None else base_flops / reduction
        accuracy = None if reduction is None else 91.5
        return {"plan": plan if flops else None, "flops": flops, "accuracy": accuracy, "finetuned": accuracy, **extra}

    search = {"seconds": 600.0, "trials": 100, "overhead": 1.1, "trial_seconds": 550.0}
    rows = {
        "uniform, no reconstruction": row(None, rate=None, evaluations=7),
        "global, no reconstruction": row(None, rate=None, evaluations=7),
        "uniform": row(1.25, rate=0.2, evaluations=7),
        "global": row(1.25, rate=0.2, evaluations=7),
        "random": row(None, **search),
        "autoprune": row(auto, **search),
    }
    return {
        "budget": budget,
        "trials": 100,
        "finetune_epochs": 1,
        "base": {"flops": base_flops, "accuracy": 92.0},
        "machine": machine,
        "versions": "torch x",
        "commit": "abc1234",
        "date": "2026-12-03",
        "rows": rows,
    }


def args(**changes) -> argparse.Namespace:
    return argparse.Namespace(
        **{"budgets": BUDGETS, "trials": 100, "finetune_epochs": 1, "finetuned_budgets": [], **changes}
    )


def test_both_architectures_render_each_under_its_own_headings_between_the_first_ones_targets_and_the_notes(benches):
    resnet, mobile = benches
    resnet.results = {b: result(b, 62e6, 2.0) for b in BUDGETS}
    mobile.results = {b: result(b, 23e6, 3.0, machine="machine B") for b in BUDGETS}
    text = bench_search.render(benches, args())
    order = [
        "**Task.** `resnet20` on `fashion_mnist`",
        "## Budget: 0.5 points (baseline 92.00 %, 62.0 MFLOPs)",
        "## Targets",
        "## `bench_mobilenet_v2` on `fashion_mnist`",
        "**Task.** `bench_mobilenet_v2` on `fashion_mnist` (" + MOBILE + ")",
        "### Budget: 0.5 points (baseline 92.00 %, 23.0 MFLOPs)",
        "### Budget: 2.0 points (baseline 92.00 %, 23.0 MFLOPs)",
        "### Targets",
        "## What the search does to get there",
        "## Machine",
    ]
    assert [text.index(line) for line in order] == sorted(text.index(line) for line in order)
    first, second = text.split("## `bench_mobilenet_v2` on `fashion_mnist`")
    assert first.count("| autoprune | 2.00x |") == 3 and "3.00x" not in first
    mobile_section = second.split("## What the search does")[0]
    assert mobile_section.count("| autoprune | 3.00x |") == 3 and "2.00x" not in mobile_section
    assert "autoprune found **2.40x** the FLOPs reduction of the better baseline" in second  # 3.00x over 1.25x
    assert "autoprune's wall time <= 344 s" in first and "wall time <=" not in second  # measured on ResNet-20 alone
    assert "- machine A\n- machine B\n" in text  # both studies' machines


def test_adding_the_second_architecture_only_inserts_its_sections(benches, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_search, "RESULTS", tmp_path)  # no search variants kept: the notes quote none
    resnet, mobile = benches
    resnet.results = {b: result(b, 62e6, 2.0) for b in BUDGETS}
    alone = bench_search.render([resnet], args())
    for results in ({}, {1.0: result(1.0, 23e6, 3.0)}):
        mobile.results = results
        both = bench_search.render(benches, args())
        start = both.index("## `bench_mobilenet_v2`")
        end = both.index("## What the search does")
        assert both[:start] + both[end:] == alone
    assert "**Not measured yet:** the budgets 0.5, 2.0" in both[start:end]


def test_a_study_not_run_yet_says_so_and_shows_no_numbers(benches):
    resnet, _ = benches
    resnet.results = {1.0: result(1.0, 62e6, 2.0)}
    text = bench_search.render(benches, args())
    section = text[text.index("## `bench_mobilenet_v2`") : text.index("## What the search does")]
    assert "**Not run yet:**" in section
    assert "MFLOPs" not in section and "|" not in section and "Targets" not in section
    assert "**Not measured yet:** the budgets 0.5, 2.0" in text.split("## `bench_mobilenet_v2`")[0]


def test_main_resumes_each_study_from_its_own_kept_results_and_keeps_the_other_sections(benches, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_search, "RESULTS", tmp_path / "results")
    for bench, flops in zip(benches, (62e6, 23e6), strict=True):
        kept = tmp_path / "results" / bench.study_file.name
        kept.mkdir(parents=True)
        for budget in BUDGETS:
            (kept / f"budget-{budget}.json").write_text(json.dumps(result(budget, flops, 2.0)))
    (tmp_path / "results" / "bench-fashion-mnist-mobilenet" / "budget-2.0.json").write_text(
        json.dumps({**result(2.0, 23e6, 2.0), "trials": 50})  # measured with other trials: measured again
    )
    measured = []

    def setup(path, database):  # stands for the baseline's training and the searches
        measured.append(Path(path).name)
        raise RuntimeError("measuring")

    monkeypatch.setattr(bench_search, "study_setup", setup)
    doc = tmp_path / "benchmarks.md"
    other = "<!-- driving: written by benchmarks/bench_driving.py -->\n## Driving\n\n| a | b |\n<!-- /driving -->"
    doc.write_text("# Benchmarks\n\nan older run\n\n" + other + "\n")
    with pytest.raises(RuntimeError, match="measuring"):
        bench_search.main([RESNET, MOBILE, "--doc", str(doc), "--resume", "--finetuned-budgets"])
    assert measured == ["bench-fashion-mnist-mobilenet.toml"]  # the ResNet-20 all kept: no baseline trained

    (tmp_path / "results" / "bench-fashion-mnist-mobilenet" / "budget-2.0.json").write_text(
        json.dumps(result(2.0, 23e6, 2.0))
    )
    assert bench_search.main([RESNET, MOBILE, "--doc", str(doc), "--resume", "--finetuned-budgets"]) == 0
    text = doc.read_text()
    assert measured == ["bench-fashion-mnist-mobilenet.toml"]
    assert text.count("\n## Budget:") == 3 and text.count("\n### Budget:") == 3
    assert "an older run" not in text and text.endswith(other + "\n")  # the other benchmark's section kept


def test_main_refuses_two_studies_of_one_name_before_measuring_anything(benches, tmp_path, monkeypatch):
    monkeypatch.setattr(bench_search, "study_setup", lambda *a: pytest.fail("measured"))
    with pytest.raises(SystemExit, match="study names must differ"):
        bench_search.main([RESNET, RESNET, "--doc", str(tmp_path / "doc.md")])


def test_the_fine_tuned_protocol_measures_a_study_and_renders_its_methods_rungs_and_export(tmp_path, digits):
    study_file = load_study_file(
        write_study_file(
            tmp_path / "s.toml", study={"name": "digits-bench", "max_accuracy_drop": 3.0}, search={"rate_max": 0.6}
        )
    )
    torch.manual_seed(0)
    model = autoprune.train(
        autoprune.create_model("small_cnn", num_classes=10, in_channels=1), digits, autoprune.TrainSettings(epochs=1)
    )
    storage = f"sqlite:///{tmp_path / 'bench.db'}"
    measured = bench_search.run_finetuned_budget(study_file, digits, copy.deepcopy(model), 3.0, 4, storage, 1)
    rows = measured["rows"]
    assert set(rows) == {"uniform", "global", "autoprune"} and rows["autoprune"]["trials"] == 4
    assert rows["uniform"]["finetune_epochs"] == rows["uniform"]["evaluations"]  # one epoch per bisection probe
    assert measured["fractions"] == [0.0, 0.1, 0.3, 1.0]
    assert sum(measured["stopped"].values()) + rows["autoprune"]["finished"] == 4
    assert measured["exported"]["val"] == pytest.approx(rows["autoprune"]["accuracy"])
    bench = bench_search.Bench(study_file, "s.toml")
    bench.finetuned[3.0] = {
        "budget": 3.0,
        "finetune_epochs": 1,
        "base": {"flops": 1e6, "accuracy": 90.0},
        "commit": "abc1234",
        "date": "2026-12-03",
        **measured,
    }
    text = "\n".join(bench_search.finetuned_sections(bench, args(finetuned_budgets=[0.5, 3.0]), level=2))
    assert "**Fine-tuned budget, not measured yet:** 0.5 points." in text
    assert "## Fine-tuned budget: 3.0 points (baseline 90.00 %)" in text
    assert text.count("| autoprune |") == 1 and "| uniform |" in text and "| global |" in text
    assert f"validation {measured['exported']['val']:.2f} %" in text and "Spearman" in text


def test_the_notes_quote_the_search_variants_each_study_kept_and_none_when_none_are_kept(
    benches, tmp_path, monkeypatch
):
    monkeypatch.setattr(bench_search, "RESULTS", tmp_path)
    resnet, mobile = benches
    resnet.results = {b: result(b, 62e6, 2.0) for b in BUDGETS}
    assert "Refinement over" not in bench_search.render(benches, args())
    reductions = {
        resnet.study_file.name: {"default: refined": 2.1, "not refined (x)": 1.8, "one importance (y)": 1.7},
        mobile.study_file.name: {"default: refined": 1.5, "not refined (x)": 1.6, "one importance (y)": 1.9},
    }
    for study, rows in reductions.items():
        (tmp_path / study).mkdir()
        kept = {name: {"reduction": reduction, "accuracy": 92.0} for name, reduction in rows.items()}
        (tmp_path / study / "variants-1.0.json").write_text(json.dumps(kept))
    notes = " ".join(bench_search.render(benches, args()).split("## What the search does")[1].split())
    assert (
        "found more than the unrefined search on 1 of 2 architectures (2.10x against 1.80x on the ResNet-20)" in notes
    )
    assert "behind the per-group choice on 1 (1.70x against 1.80x on the ResNet-20)" in notes
    assert "ahead on 1 (1.90x against 1.60x on the MobileNetV2-style network), so the per-group choice stays" in notes
