"""Run the driving-perception studies end to end and write their figures into docs/benchmarks.md.

    python benchmarks/bench_driving.py [--doc docs/benchmarks.md] [--out runs/bench-driving]

Each study (studies/driving-segmentation.toml, studies/driving-detection.toml) runs
as a user runs it, `autoprune search STUDY`, from a fresh output folder: the baseline
is trained, the search runs, the report and the best model are written; then the
chosen model is exported as a user exports it (`autoprune export`, TorchScript and
ONNX, each reloaded and checked against PyTorch on validation images). The section
between the driving markers of the document is replaced; the rest of the document
(`make bench`'s) is kept.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import shutil
import sys
import time
from pathlib import Path

from common import measured_line, write_section

from autoprune import cli
from autoprune.results import open_study

STUDIES = ("studies/driving-segmentation.toml", "studies/driving-detection.toml")
BEGIN, END = "<!-- driving: written by benchmarks/bench_driving.py -->", "<!-- /driving -->"


def run(study: str, out: Path) -> dict:
    """``autoprune search`` on ``study`` into ``out`` (emptied first); what its summary reports."""
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = cli.main(["search", study, "--out", str(out), "--quiet"])
    seconds = time.perf_counter() - started
    print(printed.getvalue(), file=sys.stderr)
    if code != 0:
        raise SystemExit(f"{study}: autoprune search exited with {code}")
    record = open_study(f"sqlite:///{(out / 'study.db').resolve()}")
    best = record.chosen_trial()
    metrics = record.metrics(best)
    exports = {fmt: export(out, fmt) for fmt in ("torchscript", "onnx")}
    return {
        "study": study,
        "model": record.attrs["model"],
        "score": record.score_name,
        "max_drop": record.max_accuracy_drop,
        "baseline": record.baseline,
        "trial": best.number,
        "metrics": metrics,
        "trials": len(record.completed()),
        "feasible": len(record.feasible()),
        "seconds": seconds,
        "exports": exports,
    }


def export(out: Path, fmt: str) -> str:
    """``autoprune export`` of the chosen trial as ``fmt``: the check it printed, or the one-line error."""
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        code = cli.main(["export", str(out), "-o", str(out / f"best.{fmt}"), "--format", fmt])
    if code != 0:
        return "failed: " + errors.getvalue().strip().removeprefix("autoprune: error: ")
    last = printed.getvalue().strip().splitlines()[-1]  # "saved PATH (fmt; outputs match PyTorch within X ...)"
    return "outputs match within " + last.split("within ", 1)[1].split(" ", 1)[0]


def section(results: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Driving perception: detection and segmentation",
        "",
        "Written by `python benchmarks/bench_driving.py`: each study run from a fresh output folder as a",
        "user runs it (`autoprune search STUDY`: baseline trained, search, report, best model saved) on",
        "synthetic road scenes (`driving_scenes`). The score is the task's: mean IoU for segmentation,",
        "COCO mAP@[.5:.95] for detection, in points; the budget is a drop of it.",
        "",
        (
            "| study | model | baseline score | chosen trial | its score (drop) | FLOPs reduction | parameters "
            "reduction | feasible trials | wall time | TorchScript export | ONNX export |"
        ),
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        base, m = r["baseline"], r["metrics"]
        lines.append(
            f"| {r['study']} | `{r['model']}` | {r['score']} {base['accuracy']:.2f} | #{r['trial']} | "
            f"{m['accuracy']:.2f} ({m['accuracy_drop']:.2f} <= {r['max_drop']}) | "
            f"{base['flops'] / m['flops']:.2f}x | {base['params'] / m['params']:.2f}x | "
            f"{r['feasible']} of {r['trials']} | {r['seconds'] / 60:.1f} min | "
            f"{r['exports']['torchscript']} | {r['exports']['onnx']} |"
        )
    lines += ["", measured_line(), "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--out", default="runs/bench-driving")
    args = parser.parse_args(argv)
    results = [run(study, Path(args.out) / Path(study).stem) for study in STUDIES]
    write_section(args.doc, section(results), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
