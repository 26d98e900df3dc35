"""Compare variants of the search at one recalibrated budget; write their section of docs/benchmarks.md.

    python benchmarks/compare_search.py [STUDY.toml ...] [--budget 1.0] [--trials 100]
                                        [--variants NAME ...] [--doc docs/benchmarks.md] [--resume]

The studies default to the benchmark's two architectures (those of benchmarks/bench_search.py).
Each variant (``VARIANTS`` below) is the study file's search with a few settings changed: the
default (a rate and an importance per group, multivariate TPE, a local refinement of the best plan
over the last 30 % of the trials: ``search.refine``), the same not refined, one importance for every
group instead of a choice per group, and the allocation scope (a level and a coefficient per group
turned into rates by dynamic programming over the sensitivity curves, as SPDY does), alone and
refined.
Every variant runs the same number of trials on the same baseline, scored the same way (BatchNorm
recalibration, least-squares reconstruction, no fine-tuning); the table gives each one's FLOPs
reduction, its ratio to the better of the study's uniform and global baselines, and the trial that
found it. Each study's numbers are kept as JSON in benchmarks/results/<study>/variants-<budget>.json
and ``--resume`` measures only the variants not kept yet; the document's section sits between
``<!-- variants: ... -->`` markers, which `make bench` keeps.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import re
import sys
from pathlib import Path

from common import measured_with, study_setup

from autoprune import plugins
from autoprune.files import atomic_write_text
from autoprune.searcher import search
from autoprune.settings import load_study_file

#: Each variant: its name and its changes to the study file's settings.
VARIANTS = (
    ("default: a rate and an importance per group, refined over the last 30 % of the trials", {}),
    ("not refined (search.refine = 0, the default before 0.3 won)", {"refine": 0.0}),
    ("one importance (the study's first) for every group, not refined", {"importances": "first", "refine": 0.0}),
    ("allocation (SPDY-style coefficients), not refined", {"scope": "allocation", "refine": 0.0}),
    ("allocation, refined over the last 30 %", {"scope": "allocation"}),
)
STUDIES = ("studies/bench-fashion-mnist.toml", "studies/bench-fashion-mnist-mobilenet.toml")
PLUGIN_MODULES = ("bench_models",)
RESULTS = Path(__file__).resolve().parent / "results"
MARKER = "variants"


def run_variant(study_file, data, model, storage: str, budget: float, trials: int, changes: dict) -> dict:
    """One search of the study file with ``changes``; its best plan, the baselines it found and when it was found."""
    changes = dict(changes)
    if changes.get("importances") == "first":
        changes["importances"] = study_file.settings.importances[:1]
    settings = study_file.settings.replace(max_accuracy_drop=budget, trials=trials, **changes)
    digest = hashlib.sha256(json.dumps(changes, sort_keys=True).encode()).hexdigest()[:8]
    name = f"{study_file.name}-variant-{digest}-{budget}"
    result = search(copy.deepcopy(model), data, settings, storage=storage, study_name=name)
    record, best = result.record, result.best_trial
    base = record.baseline["flops"]
    found = {k: record.references[k].get("flops") for k in ("uniform", "global")}
    better = min((f for f in found.values() if f), default=None)
    return {
        "changes": changes,
        "reduction": base / best.user_attrs["flops"] if best else None,
        "accuracy": best.user_attrs["accuracy"] if best else None,
        "best_trial": best.number if best else None,
        "baseline_reduction": base / better if better else None,
        "ratio": (better / best.user_attrs["flops"]) if best and better else None,
        "feasible": len(record.feasible()),
        "trials": len(record.completed()),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("studies", nargs="*", default=list(STUDIES), metavar="study")
    parser.add_argument("--budget", type=float, default=1.0)
    parser.add_argument("--trials", type=int, default=100)
    parser.add_argument("--variants", nargs="*", default=None, help="names (or unique prefixes) of the variants")
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--resume", action="store_true", help="keep the variants measured before")
    args = parser.parse_args(argv)
    for module in PLUGIN_MODULES:
        plugins.load_plugin_module(module)
    chosen = [v for v in VARIANTS if args.variants is None or any(v[0].startswith(p) for p in args.variants)]
    measured: dict[str, dict] = {}
    for path in args.studies:
        study_file = load_study_file(path)
        kept = RESULTS / study_file.name / f"variants-{args.budget}.json"
        results = json.loads(kept.read_text()) if args.resume and kept.exists() else {}
        results = {k: v for k, v in results.items() if v.get("trials") == args.trials}
        setup = None
        for name, changes in chosen:
            if name in results:
                continue
            if setup is None:
                _, data, model, storage = setup = study_setup(path, "variants.db")
            print(f"{study_file.name}: {name} ...", file=sys.stderr)
            results[name] = {**run_variant(study_file, data, model, storage, args.budget, args.trials, changes)}
            results[name].update(measured_with())
            print(f"  {results[name]['reduction']}x, {results[name]['ratio']}x the better baseline", file=sys.stderr)
            kept.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_text(kept, json.dumps(results, indent=1))
        measured[study_file.name] = results
    if Path(args.doc).exists():
        atomic_write_text(args.doc, with_section(Path(args.doc).read_text(), render(measured, args)))
    return 0


def render(measured: dict[str, dict], args) -> str:
    lines = [
        f"<!-- {MARKER}: written by benchmarks/compare_search.py -->",
        f"## Search variants at {args.budget} points",
        "",
        (
            f"Written by `python benchmarks/compare_search.py --budget {args.budget} --trials {args.trials}`: each "
            "variant is the study file's search with a few settings changed, the same trials, scored as above "
            "(recalibrated). The ratio is to the better of the study's uniform and global baselines."
        ),
    ]
    for study, results in measured.items():
        lines += [
            "",
            f"**{study}**",
            "",
            "| variant | FLOPs reduction | ratio to the better baseline | found at trial | feasible trials | measured |",
            "| --- | --- | --- | --- | --- | --- |",
        ]
        for name, _ in VARIANTS:
            row = results.get(name)
            if row is None:
                lines.append(f"| {name} | not run yet | | | | |")
                continue
            reduction = "none" if row["reduction"] is None else f"{row['reduction']:.2f}x"
            ratio = "-" if row["ratio"] is None else f"{row['ratio']:.2f}x"
            lines.append(
                f"| {name} | {reduction} | {ratio} | {row['best_trial']} | {row['feasible']} of {row['trials']} "
                f"| {row['commit']}, {row['date']} |"
            )
    lines.append(f"<!-- /{MARKER} -->")
    return "\n".join(lines)


def with_section(text: str, section: str) -> str:
    """``text`` with its search-variants section replaced by ``section`` (appended when it has none)."""
    pattern = re.compile(rf"<!-- {MARKER}: .*?-->.*?<!-- /{MARKER} -->", re.DOTALL)
    if pattern.search(text):
        return pattern.sub(lambda _: section, text)
    return text.rstrip("\n") + "\n\n" + section + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
