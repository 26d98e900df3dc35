"""Fine-tune one plan hard, soft and gradually at the same epochs; write their section of docs/benchmarks.md.

    python benchmarks/compare_finetune.py [STUDY.toml ...] [--budget 1.0] [--epochs 2] [--rate 0.5]
                                          [--modes hard soft gradual] [--doc docs/benchmarks.md] [--resume]

The studies default to the benchmark's two architectures (those of benchmarks/bench_search.py). The
plan is the one autoprune's search found at ``--budget`` points where ``make bench`` kept it
(benchmarks/results/<study>/budget-<budget>.json), else one rate for every group (``--rate``, the
study's first importance). Each mode (:mod:`autoprune.plan.elastic`) fine-tunes it from the same
baseline with the study file's ``[finetune]`` recipe for ``--epochs`` epochs, and the table gives
the validation and test accuracy of the cut model, its FLOPs (the same in every mode: the plan's
widths) and the wall time. Each study's numbers are kept as JSON in
benchmarks/results/<study>/finetune-modes.json, and ``--resume`` measures only the modes not kept
yet; the document's section sits between ``<!-- finetune-modes: ... -->`` markers, which
`make bench-finetune` keeps.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common import measured_with, study_setup, write_section
from torch.utils.data import DataLoader

from autoprune import plugins
from autoprune.batches import calibration_batches
from autoprune.engine import prunable_groups
from autoprune.files import atomic_write_text
from autoprune.metrics import accuracy, count_flops
from autoprune.plan import Plan
from autoprune.plan.elastic import MODES, finetune_plan
from autoprune.settings import load_study_file
from autoprune.zoo import dataset_task

STUDIES = ("studies/bench-fashion-mnist.toml", "studies/bench-fashion-mnist-mobilenet.toml")
PLUGIN_MODULES = ("bench_models",)
RESULTS = Path(__file__).resolve().parent / "results"
BEGIN, END = "<!-- finetune-modes: written by benchmarks/compare_finetune.py -->", "<!-- /finetune-modes -->"


def the_plan(study_name: str, budget: float, groups: list[str], rate: float, importance: str) -> tuple[Plan, str]:
    """The plan to fine-tune and where it came from: the search's at ``budget`` where kept, else ``rate`` everywhere."""
    kept = RESULTS / study_name / f"budget-{budget}.json"
    if kept.exists():
        row = json.loads(kept.read_text())["rows"].get("autoprune")
        if row and row.get("plan"):
            return Plan(**row["plan"]), f"autoprune's plan at {budget} points"
    return Plan(rates=dict.fromkeys(groups, rate), methods=dict.fromkeys(groups, importance)), f"rate {rate} everywhere"


def run_mode(study_file, data, model, plan: Plan, mode: str, epochs: int) -> dict:
    """``plan`` fine-tuned in ``mode`` for ``epochs`` epochs: its accuracies, FLOPs and seconds."""
    settings = study_file.settings
    task = dataset_task(data)
    example = task.example(data.val[0][0])
    calibration = calibration_batches(data, settings.calibration_batches, settings.batch_size, settings.seed)
    recipe = study_file.finetune.replace(epochs=epochs)
    start = time.perf_counter()
    tuned = finetune_plan(model, example, plan, data, recipe, calibration, mode=mode, seed=settings.seed, task=task)
    seconds = time.perf_counter() - start
    splits = {"val": data.val, "test": getattr(data, "test", None)}
    scores = {
        f"{split}_accuracy": accuracy(tuned, DataLoader(dataset, batch_size=256))
        for split, dataset in splits.items()
        if dataset is not None
    }
    return {"mode": mode, "epochs": epochs, **scores, "flops": count_flops(tuned, example), "seconds": seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=list(STUDIES), metavar="study")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--rate", type=float, default=0.5)
    parser.add_argument("--modes", nargs="*", default=list(MODES), choices=MODES)
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep the modes measured before")
    args = parser.parse_args(argv)
    for module in PLUGIN_MODULES:
        plugins.load_plugin_module(module)
    measured: dict[str, dict] = {}
    for path in args.studies:
        study_file = load_study_file(path)
        kept = RESULTS / study_file.name / "finetune-modes.json"
        results = json.loads(kept.read_text()) if args.resume and kept.exists() else {}
        results = {k: v for k, v in results.items() if v.get("epochs") == args.epochs}
        setup = None
        for mode in args.modes:
            if mode in results:
                continue
            if setup is None:
                _, data, model, _ = setup = study_setup(path, "finetune-modes.db")
                example = dataset_task(data).example(data.val[0][0])
                groups = prunable_groups(model, example)
                plan, source = the_plan(
                    study_file.name, args.budget, groups, args.rate, study_file.settings.importances[0]
                )
                base_flops = count_flops(model, example)
            print(f"{study_file.name}: {mode} fine-tuning of {source} ...", file=sys.stderr)
            row = run_mode(study_file, data, model, plan, mode, args.epochs)
            results[mode] = {**row, "plan": source, "base_flops": base_flops, **measured_with()}
            print(f"  val {results[mode]['val_accuracy']:.2f} %, {results[mode]['seconds']:.0f} s", file=sys.stderr)
            kept.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(kept, json.dumps(results, indent=1))
        measured[study_file.name] = results
    if Path(args.doc).exists():
        write_section(args.doc, render(measured, args), BEGIN, END)
    return 0


def render(measured: dict[str, dict], args) -> str:
    lines = [
        BEGIN,
        "## Fine-tuning a plan: hard, soft and gradual",
        "",
        (
            f"Written by `python benchmarks/compare_finetune.py --epochs {args.epochs}`: one plan per study "
            "fine-tuned from the same baseline with the study's [finetune] recipe in each mode "
            "(docs/pruning.md); every mode ends in the plan's widths, so the FLOPs are the same."
        ),
    ]
    for study, results in measured.items():
        source = next((row["plan"] for row in results.values()), "")
        lines += [
            "",
            f"**{study}** ({source})",
            "",
            "| mode | epochs | val accuracy | test accuracy | FLOPs reduction | seconds | measured |",
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for mode in MODES:
            row = results.get(mode)
            if row is None:
                lines.append(f"| {mode} | not run yet | | | | | |")
                continue
            test = f"{row['test_accuracy']:.2f} %" if "test_accuracy" in row else "-"
            lines.append(
                f"| {mode} | {row['epochs']} | {row['val_accuracy']:.2f} % | {test} "
                f"| {row['base_flops'] / row['flops']:.2f}x | {row['seconds']:.0f} | {row['commit']}, {row['date']} |"
            )
    lines.append(END)
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
