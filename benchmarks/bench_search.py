"""Benchmark autoprune's search against the simple baselines and random search; write docs/benchmarks.md.

    python benchmarks/bench_search.py [STUDY.toml ...] [--budgets 0.5 1.0 2.0] [--trials 100]
                                      [--finetuned-budgets 0.5 1.0] [--finetune-epochs 1]
                                      [--doc docs/benchmarks.md] [--resume]

The studies default to the benchmark's two architectures on Fashion-MNIST: the CIFAR
ResNet-20 (studies/bench-fashion-mnist.toml) and a MobileNetV2-style network with
inverted residuals and depthwise convolutions (studies/bench-fashion-mnist-mobilenet.toml,
its model in benchmarks/bench_models.py, registered here as a plugin module). For every
study, one after the other, and every accuracy budget (points of validation accuracy),
on the study file's model and data:

- **uniform** and **global**: one uniform rate and global pruning, each at its
  largest rate within the budget, found by bisection (the study's own baselines);
- **random**: Optuna's random sampler over the same per-group space, the same trials;
- **autoprune**: the study file's settings (the default search), the same trials;
- **uniform, no reconstruction** and **global, no reconstruction**: the two
  baselines as Torch-Pruning's pruners give them, without autoprune's
  least-squares reconstruction of the layers that lost inputs.

Every candidate is scored as a trial is (BatchNorm recalibration on the same
batches, the same validation images). Each method's best plan is then fine-tuned
with the same short recipe and scored again. The table gives the FLOPs reduction
of each, trials per minute, the median per-trial overhead ratio (a trial's wall
time over the time of the forward passes it ran), and the machine and versions.

The second protocol puts the budget on the fine-tuned model (``study.budget =
"finetuned"``, one fixed recipe of ``--finetune-epochs`` epochs at lr 0.01) at each of
``--finetuned-budgets``: the study's uniform and global baselines bisected on the
fine-tuned score, and autoprune's search climbing its rungs. It reports each one's
FLOPs reduction and the fine-tuning it spent (epochs of the training split),
Spearman's rank correlation of each rung with the last, and the exported chosen
model's validation and test accuracy.
The document covers the studies given, in their order: the first one's sections at the
top, each other's under a heading of its own. `make bench` runs it.
"""

from __future__ import annotations

import argparse
import copy
import json
import statistics
import sys
import tempfile
import textwrap
import time
from dataclasses import dataclass, field
from pathlib import Path

from common import measured_with, study_setup

from autoprune import Study, TrainSettings, plugins, train
from autoprune.files import atomic_write_text
from autoprune.plan import Plan
from autoprune.results.rungs import rung_summary
from autoprune.searcher import Evaluator, search
from autoprune.searcher.references import find_references
from autoprune.settings import StudyFile, load_study_file

#: The baselines as Torch-Pruning gives them (channels removed, BatchNorm recalibrated, no layer refitted),
#: then the baselines and searches scored as autoprune's trials are (with least-squares reconstruction).
PLAIN = ("uniform, no reconstruction", "global, no reconstruction")
METHODS = (*PLAIN, "uniform", "global", "random", "autoprune")
#: The studies of `make bench`, one per architecture, in the order the document gives them.
STUDIES = ("studies/bench-fashion-mnist.toml", "studies/bench-fashion-mnist-mobilenet.toml")
#: The benchmark's own models (benchmarks/bench_models.py), registered as `autoprune --plugin` registers a module.
PLUGIN_MODULES = ("bench_models",)
#: The searches run at every budget, as changes to the study file's settings.
SEARCHES = (
    ("autoprune", {}),
    ("random", {"sampler": "random", "warm_start": "none"}),
)


def run_budget(study_file, data, model, budget: float, trials: int, storage: str) -> dict:
    """Both searches at one budget; the baselines come with the default study."""
    rows = {}
    for method, changes in SEARCHES:
        settings = study_file.settings.replace(max_accuracy_drop=budget, trials=trials, **changes)
        name = f"{study_file.name}-{method}-{budget}"
        started = time.perf_counter()
        result = search(copy.deepcopy(model), data, settings, storage=storage, study_name=name)
        seconds = time.perf_counter() - started
        record = result.record
        best = result.best_trial
        complete = record.completed()
        overhead = [
            t.duration.total_seconds() / (t.user_attrs["recalibrate_seconds"] + t.user_attrs["eval_seconds"])
            for t in complete
        ]
        rows[method] = {
            "plan": None if result.best_plan is None else result.best_plan.to_dict(),
            "flops": best.user_attrs["flops"] if best else None,
            "accuracy": best.user_attrs["accuracy"] if best else None,
            "seconds": seconds,
            "trial_seconds": sum(t.duration.total_seconds() for t in complete),
            "trials": len(complete),
            "overhead": statistics.median(overhead) if overhead else None,
            "record": record,
            "best_number": best.number if best else None,
        }
        if method == "autoprune":
            rows.update(reference_rows(record.references, record.groups, settings.reconstruct))
    plain = study_file.settings.replace(max_accuracy_drop=budget, reconstruct=False)
    references = find_references(Evaluator.build(copy.deepcopy(model), data, plain))
    rows.update(
        {
            f"{kind}, no reconstruction": row
            for kind, row in reference_rows(references, list(references["uniform"]["plan"]), False).items()
        }
    )
    return rows


def run_finetuned_budget(study_file, data, model, budget: float, trials: int, storage: str, epochs: int) -> dict:
    """The fine-tuned protocol at one budget: a study with ``budget = "finetuned"`` and the fixed recipe, its
    baselines (bisected on the fine-tuned score), its rungs, and its chosen model exported and scored."""
    recipe = TrainSettings(epochs=epochs, lr=0.01)
    settings = study_file.settings.replace(max_accuracy_drop=budget, trials=trials, budget="finetuned", finalists=0)
    name = f"{study_file.name}-finetuned-{budget}"
    started = time.perf_counter()
    result = search(copy.deepcopy(model), data, settings, storage=storage, study_name=name, finetune=recipe)
    seconds = time.perf_counter() - started
    record, best = result.record, result.best_trial
    summary = rung_summary(record)
    rows = {
        "autoprune": {
            "flops": best.user_attrs["flops"] if best else None,
            "accuracy": best.user_attrs["accuracy"] if best else None,
            "finetune_epochs": summary["trial_epochs"],
            "seconds": seconds,
            "trials": len(record.completed()),
            "finished": len(summary["finished"]),
        }
    }
    for kind in ("uniform", "global"):
        reference = record.references[kind]
        rows[kind] = {k: reference.get(k) for k in ("flops", "accuracy", "rate", "evaluations", "finetune_epochs")}
    exported = None
    if best is not None:
        score = record.score_name
        with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
            out = Study.load(storage=storage, name=name).export(Path(tmp) / "model.pt")
        exported = {"val": out["pruned"][f"val_{score}"], "test": out["pruned"][f"test_{score}"]}
    return {
        "rows": rows,
        "fractions": summary["fractions"],
        "stopped": {str(k): v for k, v in summary["stopped"].items()},
        "spearman": {str(k): v for k, v in summary["spearman"].items()},
        "exported": exported,
    }


def reference_rows(references: dict, groups: list[str], reconstruct: bool) -> dict[str, dict]:
    """The uniform and global baselines as table rows, each with its plan (None when none was within the budget)."""
    rows = {}
    for kind in ("uniform", "global"):
        reference = references[kind]
        plan = None
        if reference.get("rate") is not None:
            plan = Plan(
                rates=reference["plan"],
                methods=dict.fromkeys(groups, reference["importance"]),
                reconstruct=reconstruct,
            )
        rows[kind] = {
            "plan": None if plan is None else plan.to_dict(),
            "flops": reference.get("flops"),
            "accuracy": reference.get("accuracy"),
            "rate": reference.get("rate"),
            "evaluations": reference["evaluations"],
        }
    return rows


def finetuned_accuracy(evaluator: Evaluator, data, plan, epochs: int, seed: int) -> float | None:
    """Validation accuracy of ``plan`` after the same short fine-tune for every method."""
    if plan is None:
        return None
    from autoprune.metrics import accuracy

    model = Plan.from_dict(plan).apply(evaluator.baseline, evaluator.example, evaluator.calibration)
    train(model, data, TrainSettings(epochs=epochs, lr=0.01), seed=seed)
    return accuracy(model, evaluator.val_batches)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=list(STUDIES), metavar="study", help="study files, in order")
    parser.add_argument("--budgets", type=float, nargs="+", default=[0.5, 1.0, 2.0])
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--finetune-epochs", type=int, default=1)
    parser.add_argument(
        "--finetuned-budgets",
        type=float,
        nargs="*",
        default=[0.5, 1.0],
        help="budgets of the fine-tuned protocol (study.budget = 'finetuned'); none: skip it",
    )
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument(
        "--resume",
        action="store_true",
        help="reuse the budgets an earlier run measured with the same trials and fine-tune "
        "(kept as JSON in benchmarks/results/<study name>/); the document names each one's commit",
    )
    args = parser.parse_args(argv)
    for module in PLUGIN_MODULES:
        plugins.load_plugin_module(module)

    benches = [Bench(load_study_file(path), path) for path in args.studies]
    names = [bench.study_file.name for bench in benches]
    if len(set(names)) < len(names):
        raise SystemExit(f"bench_search.py: study names must differ (their results are kept by name), got {names}")
    if args.resume:
        for bench in benches:
            bench.results.update(kept_results(bench.study_file.name, args))
            bench.finetuned.update(kept_results(bench.study_file.name, args, FINETUNED))
    for bench in benches:
        measure_study(bench, benches, args)
    atomic_write_text(args.doc, with_kept_sections(args.doc, render(benches, args)))
    return 0


@dataclass
class Bench:
    """One study of the benchmark: its study file, the path it was given as, and its results per budget."""

    study_file: StudyFile
    path: str
    results: dict[float, dict] = field(default_factory=dict)
    finetuned: dict[float, dict] = field(default_factory=dict)


#: The protocols, by the prefix of their results' file names: the budget on the recalibrated model, and on the
#: fine-tuned one.
RECALIBRATED, FINETUNED = "budget", "finetuned-budget"


def kept_results(study: str, args, protocol: str = RECALIBRATED) -> dict[float, dict]:
    """The budgets of ``args`` that an earlier run of study ``study`` measured with the same trials and fine-tune,
    read from its JSON in benchmarks/results/<study>/ (what ``--resume`` reuses), for one protocol."""
    found = {}
    for budget in args.budgets if protocol == RECALIBRATED else args.finetuned_budgets:
        path = RESULTS / study / f"{protocol}-{budget}.json"
        if not path.exists():
            continue
        measured = json.loads(path.read_text())
        if (measured["trials"], measured["finetune_epochs"]) == (args.trials, args.finetune_epochs):
            print(
                f"{study}, budget {budget} points: measured at {measured['commit']} on {measured['date']} ({path})",
                file=sys.stderr,
            )
            found[budget] = measured
    return found


def measure_study(bench: Bench, benches: list[Bench], args) -> None:
    """Measure every budget of ``args`` that ``bench`` has no result for; keep each one as JSON and rewrite the
    document (all of ``benches``) after it, so a stop loses none."""
    study_file = bench.study_file
    kept = RESULTS / study_file.name  # in the repository, so a later run (or session) can resume
    kept.mkdir(parents=True, exist_ok=True)
    setup = None  # the data, the baseline and the storage: only when a budget is measured
    tuned = {}  # fine-tuned accuracy per plan: the same plan, the same seed, the same score
    for budget in args.budgets:
        if budget in bench.results:
            continue
        if setup is None:
            _, data, model, storage = setup = study_setup(bench.path, "bench.db")
        print(f"{study_file.name}, budget {budget} points ...", file=sys.stderr)
        rows = run_budget(study_file, data, model, budget, args.trials, storage)
        evaluator = Evaluator.build(copy.deepcopy(model), data, study_file.settings.replace(max_accuracy_drop=budget))
        for method in METHODS:
            key = json.dumps(rows[method]["plan"], sort_keys=True)  # methods often share a plan (a baseline's)
            if key not in tuned:
                tuned[key] = finetuned_accuracy(
                    evaluator, data, rows[method]["plan"], args.finetune_epochs, study_file.settings.seed
                )
            rows[method]["finetuned"] = tuned[key]
            print(f"  {method:<10} {_reduction(evaluator.base['flops'], rows[method]['flops'])}", file=sys.stderr)
        bench.results[budget] = {
            "budget": budget,
            "trials": args.trials,
            "finetune_epochs": args.finetune_epochs,
            "base": evaluator.base,
            **measured_with(),
            "rows": {m: {k: v for k, v in row.items() if k != "record"} for m, row in rows.items()},
        }
        atomic_write_text(kept / f"{RECALIBRATED}-{budget}.json", json.dumps(bench.results[budget], indent=1))
        atomic_write_text(args.doc, with_kept_sections(args.doc, render(benches, args)))
        print(
            f"wrote {args.doc} ({study_file.name}: {len(bench.results)} of {len(args.budgets)} budgets)",
            file=sys.stderr,
        )
    for budget in args.finetuned_budgets:
        if budget in bench.finetuned:
            continue
        if setup is None:
            _, data, model, storage = setup = study_setup(bench.path, "bench.db")
        print(f"{study_file.name}, fine-tuned budget {budget} points ...", file=sys.stderr)
        measured = run_finetuned_budget(study_file, data, model, budget, args.trials, storage, args.finetune_epochs)
        bench.finetuned[budget] = {
            "budget": budget,
            "trials": args.trials,
            "finetune_epochs": args.finetune_epochs,
            "base": Evaluator.build(copy.deepcopy(model), data, study_file.settings).base,
            **measured_with(),
            **measured,
        }
        atomic_write_text(kept / f"{FINETUNED}-{budget}.json", json.dumps(bench.finetuned[budget], indent=1))
        atomic_write_text(args.doc, with_kept_sections(args.doc, render(benches, args)))
        print(f"wrote {args.doc} ({study_file.name}: fine-tuned budget {budget})", file=sys.stderr)


def with_kept_sections(path: str, text: str) -> str:
    """``text``, followed by the sections other benchmarks wrote into the document at ``path`` (between
    ``<!-- name: ... -->`` and ``<!-- /name -->`` markers, such as benchmarks/bench_driving.py's)."""
    import re

    old = Path(path).read_text() if Path(path).exists() else ""
    kept = [m.group(0) for m in re.finditer(r"<!-- ([\w-]+): .*?-->.*?<!-- /\1 -->", old, re.DOTALL)]
    return "\n\n".join([text.rstrip("\n"), *kept]) + "\n"


def _reduction(base: float, flops: float | None) -> str:
    return "none within the budget" if not flops else f"{base / flops:.2f}x"


#: Each budget's numbers, as JSON, per study: what `--resume` reuses.
RESULTS = Path(__file__).resolve().parent / "results"

#: The targets of the search (docs/benchmarks.md): the ratio to the better baseline at each budget.
TARGET_RATIO = {1.0: 1.3}
TARGET_OVERHEAD = 1.2
#: Half the wall time of the default search before this benchmark's work began (689 s at 1.0 points, 100 trials),
#: measured on the ResNet-20 study alone.
TARGET_SECONDS = {"bench-fashion-mnist": {1.0: 689 / 2}}


def targets(results: dict, study: str, level: int = 2) -> list[str]:
    """Each target, with what this run measured and whether it was met, under a heading of ``level``."""
    lines = ["#" * level + " Targets", "", "| target | measured | met |", "| --- | --- | --- |"]
    target_seconds = TARGET_SECONDS.get(study, {})
    for budget, measured in sorted(results.items()):
        base, rows = measured["base"], measured["rows"]
        auto = rows["autoprune"]["flops"]
        best = max((base["flops"] / rows[k]["flops"] for k in ("uniform", "global") if rows[k]["flops"]), default=None)
        ratio = None if not auto or best is None else (base["flops"] / auto) / best
        wanted = TARGET_RATIO.get(budget)
        goal = (
            f">= {wanted:.1f}x the better baseline at {budget} points"
            if wanted
            else f"ahead of the better baseline at {budget} points"
        )
        met = ratio is not None and (ratio >= wanted if wanted else ratio > 1.0)
        lines.append(f"| {goal} | {'-' if ratio is None else f'{ratio:.2f}x'} | {'yes' if met else 'no'} |")
        overhead = rows["autoprune"]["overhead"]
        if overhead is not None:
            lines.append(
                f"| median per-trial overhead ratio <= {TARGET_OVERHEAD} at {budget} points | "
                f"{overhead:.2f} | {'yes' if overhead <= TARGET_OVERHEAD else 'no'} |"
            )
        if budget in target_seconds:
            seconds = rows["autoprune"]["seconds"]
            lines.append(
                f"| autoprune's wall time <= {target_seconds[budget]:.0f} s at {budget} points (half of the "
                f"689 s measured before) | {seconds:.0f} s | {'yes' if seconds <= target_seconds[budget] else 'no'} |"
            )
    return [*lines, ""]


#: The fine-tuned protocol's targets: the ratio to the better baseline, and the most fine-tuning the search may
#: spend, in epochs of the training split.
FINETUNED_TARGET = {0.5: (1.3, 20.0)}


def finetuned_sections(bench: Bench, args, level: int) -> list[str]:
    """The fine-tuned protocol's budgets of one study: each method's FLOPs reduction, fine-tuned accuracy and
    fine-tuning spent, the rungs' rank correlations, the exported model's accuracy, and the targets."""
    heading = "#" * level
    lines: list[str] = []
    pending = [b for b in args.finetuned_budgets if b not in bench.finetuned]
    if pending:
        lines += [f"**Fine-tuned budget, not measured yet:** {', '.join(map(str, pending))} points.", ""]
    for budget, measured in sorted(bench.finetuned.items()):
        base, rows = measured["base"], measured["rows"]
        lines += [
            f"{heading} Fine-tuned budget: {budget} points (baseline {base['accuracy']:.2f} %)",
            "",
            (
                f'Measured on {measured["date"]} at commit {measured["commit"]}: `study.budget = "finetuned"`, '
                f"every plan scored after {measured['finetune_epochs']} epoch(s) of fine-tuning (SGD, lr 0.01, "
                "cosine); the baselines bisected on that score."
            ),
            "",
            "| method | FLOPs reduction | accuracy, fine-tuned | fine-tuning spent | wall time |",
            "| --- | --- | --- | --- | --- |",
        ]
        for method in ("uniform", "global", "autoprune"):
            row = rows[method]
            acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2f} %"
            spent = "-" if row.get("finetune_epochs") is None else f"{row['finetune_epochs']:.1f} epochs"
            timing = f"{row['seconds']:.0f} s" if method == "autoprune" else f"{row['evaluations']} evaluations"
            lines.append(f"| {method} | {_reduction(base['flops'], row['flops'])} | {acc} | {spent} | {timing} |")
        auto = rows["autoprune"]
        lines += [
            "",
            (
                f"autoprune: {auto['trials']} trials, {auto['finished']} fine-tuned to the end; stopped at each rung: "
                + ", ".join(f"{n} at rung {k}" for k, n in measured["stopped"].items())
                + ". Spearman's rank correlation of each rung with the last, over the plans fine-tuned to the end: "
                + ", ".join(
                    f"rung {k} ({measured['fractions'][int(k)]:.0%}) {'-' if rho is None else f'{rho:.2f}'}"
                    for k, rho in measured["spearman"].items()
                )
                + "."
            ),
        ]
        if measured["exported"]:
            lines.append(
                f"The chosen model, exported (`Study.export`): validation {measured['exported']['val']:.2f} %, "
                f"test {measured['exported']['test']:.2f} %."
            )
        better = max(("uniform", "global"), key=lambda k: base["flops"] / rows[k]["flops"] if rows[k]["flops"] else 0)
        ratio = rows[better]["flops"] / auto["flops"] if auto["flops"] and rows[better]["flops"] else None
        if ratio is not None:
            lines.append(f"autoprune found **{ratio:.2f}x** the FLOPs reduction of the better baseline ({better}).")
        if budget in FINETUNED_TARGET:
            wanted, epochs = FINETUNED_TARGET[budget]
            met = ratio is not None and ratio >= wanted and auto["finetune_epochs"] <= epochs
            lines.append(
                f"Target: >= {wanted}x the better baseline with at most {epochs:.0f} epochs of fine-tuning in the "
                f"search: {'-' if ratio is None else f'{ratio:.2f}x'}, {auto['finetune_epochs']:.1f} epochs: "
                f"{'met' if met else 'not met'}."
            )
        lines.append("")
    return lines


def study_sections(bench: Bench, args, level: int) -> list[str]:
    """One study's budgets not measured yet, each measured budget's table and its targets, under headings
    of ``level``."""
    results, heading = bench.results, "#" * level
    lines: list[str] = []
    pending = [b for b in args.budgets if b not in results]
    if pending:
        lines += [
            (
                f"**Not measured yet:** the budgets {', '.join(map(str, pending))} (the command was stopped "
                "before it reached them, or is still running)."
            ),
            "",
        ]
    for budget, measured in sorted(results.items()):
        base, rows = measured["base"], measured["rows"]
        auto, better = (
            rows["autoprune"],
            max(("uniform", "global"), key=lambda k: base["flops"] / rows[k]["flops"] if rows[k]["flops"] else 0),
        )
        lines += [
            f"{heading} Budget: {budget} points (baseline {base['accuracy']:.2f} %, {base['flops'] / 1e6:.1f} MFLOPs)",
            "",
            f"Measured on {measured['date']} at commit {measured['commit']}.",
            "",
            (
                "| method | FLOPs reduction | accuracy, recalibrated | accuracy, fine-tuned | wall time | trials/min |"
                " median overhead ratio |"
            ),
            "| --- | --- | --- | --- | --- | --- | --- |",
        ]
        for method in METHODS:
            row = rows[method]
            acc = "-" if row["accuracy"] is None else f"{row['accuracy']:.2f} %"
            tuned = "-" if row["finetuned"] is None else f"{row['finetuned']:.2f} %"
            if method in dict(SEARCHES):
                rate = f"{row['trials'] / (row['seconds'] / 60):.1f}"
                timing = f"{row['seconds']:.0f} s"
                overhead = "-" if row["overhead"] is None else f"{row['overhead']:.2f}"
            else:
                rate, timing, overhead = "-", f"{row['evaluations']} evaluations", "-"
            lines.append(
                f"| {method} | {_reduction(base['flops'], row['flops'])} | {acc} | {tuned} | {timing} | "
                f"{rate} | {overhead} |"
            )
        if auto["flops"] and rows[better]["flops"]:
            ratio = rows[better]["flops"] / auto["flops"]
            lines += [
                "",
                (
                    f"autoprune found **{ratio:.2f}x** the FLOPs reduction of the better baseline ({better}, "
                    "scored as autoprune's trials are)."
                ),
            ]
        plain = max(PLAIN, key=lambda k: base["flops"] / rows[k]["flops"] if rows[k]["flops"] else 0)
        if auto["flops"] and rows[plain]["flops"]:
            lines += [
                (
                    f"Against the better baseline as Torch-Pruning gives it ({plain}): "
                    f"**{rows[plain]['flops'] / auto['flops']:.2f}x**."
                )
            ]
        lines.append("")
    return [*lines, *targets(results, bench.study_file.name, level)]


#: The search variants the notes quote (benchmarks/compare_search.py keeps them per study and budget), by the
#: start of their names there, and the prose name of each benchmark's architecture.
VARIANT_BUDGET = 1.0
REFINED, UNREFINED, ONE_IMPORTANCE = "default:", "not refined", "one importance"
ARCHITECTURES = {
    "bench-fashion-mnist": "the ResNet-20",
    "bench-fashion-mnist-mobilenet": "the MobileNetV2-style network",
}


def variant_reductions(study: str) -> dict[str, float]:
    """The FLOPs reduction each quoted variant reached on ``study`` at :data:`VARIANT_BUDGET`, by name start."""
    kept = RESULTS / study / f"variants-{VARIANT_BUDGET}.json"
    measured = json.loads(kept.read_text()) if kept.is_file() else {}
    starts = (REFINED, UNREFINED, ONE_IMPORTANCE)
    return {start: row["reduction"] for name, row in measured.items() for start in starts if name.startswith(start)}


def variant_notes(benches: list[Bench]) -> list[str]:
    """The notes' sentences on refinement and one importance for every group, with the numbers
    compare_search.py kept for every study that has them all (none when no study has)."""
    measured = {}
    for bench in benches:
        found = variant_reductions(bench.study_file.name)
        if len(found) == 3:
            measured[ARCHITECTURES.get(bench.study_file.name, f"`{bench.study_file.model}`")] = found
    if not measured:
        return []

    def against(first: str, second: str, verdict) -> str:
        return ", ".join(f"{found[first]:.2f}x against {found[second]:.2f}x on {name}" for name, found in verdict)

    refined = [(name, found) for name, found in measured.items() if found[REFINED] > found[UNREFINED]]
    ahead = [(name, found) for name, found in measured.items() if found[ONE_IMPORTANCE] > found[UNREFINED]]
    behind = [(name, found) for name, found in measured.items() if found[ONE_IMPORTANCE] <= found[UNREFINED]]
    text = (
        "A local refinement around the best feasible plan (`search.refine`), one importance for every group and "
        'the allocation scope (SPDY-style coefficients) are compared under "Search variants" below, at '
        f"{VARIANT_BUDGET} point. Refinement over the last 30 % of the trials found more than the unrefined search on "
        f"{len(refined)} of {len(measured)} architectures ({against(REFINED, UNREFINED, refined) or 'none'}) and is "
        "now the default (`search.refine = 0.3`); the budget tables above were measured before that. One importance "
        "for every group, unrefined, was behind the per-group choice on "
        f"{len(behind)} ({against(ONE_IMPORTANCE, UNREFINED, behind) or 'none'}) and ahead on {len(ahead)} "
        f"({against(ONE_IMPORTANCE, UNREFINED, ahead) or 'none'})"
        + ("." if not behind else ", so the per-group choice stays.")
    )
    return [f"  {line}" for line in textwrap.wrap(text, 106)]


def render(benches: list[Bench], args) -> str:
    """The document: the first study's task, the methods and its sections; each other study's sections under
    a heading of its own ("not run yet" while it has none); what the search does; the machines."""
    first, *others = benches
    study_file = first.study_file
    lines = [
        "# Benchmarks",
        "",
        "Written by `make bench` (`python benchmarks/bench_search.py " + " ".join(sys.argv[1:]) + "`);",
        "every number below is what that command printed on the machine it names.",
        "",
        f"**Task.** `{study_file.model}` on `{study_file.dataset}` ({first.path}), the baseline trained by",
        "the study file's `[train]` recipe. Every candidate is scored after BatchNorm recalibration on the",
        "same training batches, on the same validation images, without fine-tuning; the FLOPs reduction is",
        "the baseline's FLOPs over the candidate's. Each method's best plan is then fine-tuned with the same",
        f"short recipe ({args.finetune_epochs} epoch(s), SGD, lr 0.01, cosine) and scored again.",
        "",
        "**Methods.** Every method but the first two refits, after removing channels, each layer that lost",
        "input channels by least squares to its unpruned outputs on calibration batches (`search.reconstruct`,",
        "the default; He et al., ICCV 2017). *uniform, no reconstruction* and *global, no reconstruction*:",
        "the two baselines as Torch-Pruning's pruners give them (channels removed, BatchNorm recalibrated).",
        "*uniform*: one rate in every group, the largest within the budget (bisection).",
        "*global*: one importance threshold over all groups (mean-normalized scores, as Torch-Pruning's",
        "global pruning), the largest rate within the budget (bisection). *random*: Optuna's random sampler",
        f"over the per-group space, {args.trials} trials. *autoprune*: the default search (the uniform",
        f"baseline and uniform rates as the first trials, multivariate TPE, early stopping), {args.trials} trials,",
        "its baselines' evaluations included in its wall time.",
        "",
    ]
    lines += study_sections(first, args, level=2)
    lines += finetuned_sections(first, args, level=2)
    for bench in others:
        lines += [
            f"## `{bench.study_file.model}` on `{bench.study_file.dataset}`",
            "",
            f"**Task.** `{bench.study_file.model}` on `{bench.study_file.dataset}` ({bench.path}), the baseline",
            "trained by the study file's `[train]` recipe; every method run, scored and fine-tuned as above.",
            "",
        ]
        if bench.results or bench.finetuned:
            lines += study_sections(bench, args, level=3)
            lines += finetuned_sections(bench, args, level=3)
        else:
            lines += [
                "**Not run yet:** the command was stopped before it reached this study, or is still running;",
                "`make bench BENCH_ARGS=--resume` measures it and keeps the budgets measured already.",
                "",
            ]
    lines += [
        "## What the search does to get there, and what was tried",
        "",
        "- Every trial is scored after BatchNorm recalibration on fixed training batches (EagleEye, ECCV 2020),",
        "  so plans are ranked by what they keep, not by how their statistics drifted.",
        "- The first trials are the uniform baseline's plan and uniform rates (`uniform_starts`); TPE then",
        "  searches each group's rate and importance around what was feasible.",
        "- Validation stops early once a trial cannot be (exact) or is almost surely not (statistical) within",
        "  the budget; such trials are recorded infeasible with the bound they reached.",
        "- Gradient-free importance scores are computed once per study and reused by every trial.",
        "- After channels are removed, every layer that lost inputs is refitted by least squares to the outputs",
        "  it had before (closed form from its inputs' Gram matrix, computed once per study), so kept channels",
        "  take over what correlated removed ones carried: the largest single gain measured (the rows without",
        "  reconstruction above). It lifts the baselines as much as the search, since they are scored the same way.",
        "- Tried and measured, and left as options. Sensitivity curves (each group pruned alone) seeding the",
        '  search with knapsack plans and bounding each group\'s range (`warm_start = "sensitivity"`, the default',
        "  before commit 1a31f62), measured by this command at commits 460e2e9 (0.5 and 2.0 points) and b98570b",
        "  (1.0 point): 1.33x, 1.60x and 2.09x, in 1881, 1903 and 709 s. In the same runs, TPE started from",
        '  uniform rates without early stopping (`early_stop = "off"`): 1.40x, 1.62x and 2.16x, in 559, 1857',
        "  and 467 s (the 1.0-point run shared its cores with other work). The uniform start became the default",
        "  for being ahead at every budget there and for its speed; with the statistical early stop (the",
        "  autoprune rows above) it is ahead of the sensitivity start at 1.0 point and behind it at 2.0, and one",
        "  seed per method does not separate them more finely. TPE over the raw per-group space with no warm",
        '  start (`warm_start = "none"`) rarely found a feasible plan at tight budgets. GP, CMA-ES and NSGA-II',
        "  samplers run (`sampler`) but are not in this benchmark.",
        *variant_notes(benches),
        "",
    ]
    lines += ["## Machine", ""]
    measured = [m for bench in benches for _, m in sorted(bench.results.items())]
    for key in ("machine", "versions"):
        seen = dict.fromkeys(m[key] for m in measured) or {measured_with()[key]: None}
        lines += [f"- {line}" for line in seen]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
