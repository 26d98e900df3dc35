"""Compare the pruning modes within one accuracy budget; write docs/pruning_modes.md.

    python benchmarks/compare_modes.py [studies/modes.toml] [--doc docs/pruning_modes.md]

One search per mode, each with the study file's settings and the mode's changes
(``MODES`` below), on the same baseline, scored the same way (BatchNorm
recalibration, no fine-tuning). For each mode's best plan within the budget the
table gives its accuracy drop and what it saves: FLOPs and parameters (which only
channel pruning reduces), nonzero parameters and the size of the model stored
sparsely (which weight sparsity reduces too), each as a reduction factor.
"""

from __future__ import annotations

import argparse
import copy
import platform
import sys
import time
from importlib.metadata import version

import optuna
import torch
from common import study_setup

from autoprune.engine import sparsity_stats
from autoprune.files import atomic_write_text
from autoprune.metrics import measure
from autoprune.searcher import search

#: Each mode: a name, and its changes to the study file's [study] and [search] settings.
MODES = (
    ("channels, local, one-shot", {}),
    ("channels, global", {"scope": "global"}),
    ("channels, local or global", {"scope": "both"}),
    ("channels, iterative (steps 1, 2 or 4; 10 recovery steps)", {"steps": [1, 2, 4], "recovery_steps": 10}),
    ("weights, unstructured", {"granularity": "weight", "objective": "size_bytes", "warm_start": "uniform"}),
    ("weights, 2:4", {"granularity": "nm", "objective": "size_bytes"}),
    ("channels, then unstructured weights", {"granularity": ["channel", "weight"], "objective": "size_bytes"}),
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("study", nargs="?", default="studies/modes.toml")
    parser.add_argument("--doc", default="docs/pruning_modes.md")
    args = parser.parse_args(argv)
    study_file, data, model, storage = study_setup(args.study, "modes.db")
    example = data.val[0][0].unsqueeze(0)
    base = {**measure(model, example), **sparsity_stats(model)}
    rows = []
    for number, (mode, changes) in enumerate(MODES):
        print(f"{mode} ...", file=sys.stderr)
        settings = study_file.settings.replace(**changes)
        started = time.perf_counter()
        result = search(copy.deepcopy(model), data, settings, storage=storage, study_name=f"mode-{number}")
        seconds = time.perf_counter() - started
        best = result.best_trial
        row = {"mode": mode, "trials": len(result.record.completed()), "seconds": seconds, "best": None}
        if best is not None:
            pruned = result.best_plan.apply(model, example, result.calibration)
            row["best"] = {
                "drop": best.user_attrs["accuracy_drop"],
                **measure(pruned, example),
                **sparsity_stats(pruned),
            }
        rows.append(row)
        print(f"  {_cells(base, row)}", file=sys.stderr)
    atomic_write_text(args.doc, render(study_file, base, rows, args))
    print(f"wrote {args.doc}")
    return 0


def _cells(base: dict, row: dict) -> str:
    best = row["best"]
    if best is None:
        return f"| {row['mode']} | none within the budget | - | - | - | - | {row['trials']} | {row['seconds']:.0f} s |"
    factors = " | ".join(f"{base[k] / best[k]:.2f}x" for k in ("flops", "params", "nonzero_params", "size_bytes"))
    return f"| {row['mode']} | {best['drop']:.2f} | {factors} | {row['trials']} | {row['seconds']:.0f} s |"


def render(study_file, base: dict, rows: list[dict], args) -> str:
    settings = study_file.settings
    lines = [
        "# Pruning modes compared",
        "",
        "Written by `python benchmarks/compare_modes.py " + " ".join(sys.argv[1:]) + "`; every number below is",
        "what that command printed on the machine it names.",
        "",
        f"`{study_file.model}` on `{study_file.dataset}` ({args.study}): baseline {base['flops'] / 1e6:.2f} MFLOPs,",
        (
            f"{base['params']:,} parameters, {base['size_bytes'] / 1e3:.0f} kB. Each mode is one search of "
            f"{settings.trials} trials within {settings.max_accuracy_drop} point(s) of validation accuracy, scored"
        ),
        "after BatchNorm recalibration without fine-tuning; the channel modes minimize FLOPs, the weight modes",
        "the size stored sparsely (a bitmap of nonzeros and their 4-byte values per Conv and Linear weight).",
        "Columns are reduction factors of the best plan within the budget.",
        "",
        "| mode | accuracy drop | FLOPs | parameters | nonzero parameters | stored size | trials | wall time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
        *(_cells(base, row) for row in rows),
        "",
        "Channel pruning is the only mode that makes the dense model faster on any hardware; weight sparsity",
        "leaves FLOPs as they are and pays off with sparse kernels (2:4 on GPUs with sparse tensor cores) or",
        "sparse storage. See docs/concepts.md for scope, granularity and steps.",
        "",
        (
            f"Machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, Python "
            f"{platform.python_version()}; autoprune {version('autoprune')}, torch {torch.__version__}, "
            f"torch-pruning {version('torch-pruning')}, optuna {optuna.__version__}; run on {time.strftime('%Y-%m-%d')}."
        ),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
