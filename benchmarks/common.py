"""What the benchmark scripts share: a study file's data and cached baseline, and a fresh storage."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

import autoprune
from autoprune.baseline import build_model, load_or_train
from autoprune.files import atomic_write_text
from autoprune.provenance import environment
from autoprune.settings import StudyFile, load_study_file
from autoprune.zoo import create_dataset


def study_setup(path: str, database: str) -> tuple[StudyFile, Any, nn.Module, str]:
    """The study file at ``path``, its data, its baseline (trained once and cached in the output folder)
    and a SQLite storage ``database`` in that folder, emptied so that a run starts afresh."""
    study_file = load_study_file(path)
    out = study_file.out_dir
    out.mkdir(parents=True, exist_ok=True)
    data = create_dataset(study_file.dataset, **study_file.dataset_params)
    model, _ = load_or_train(study_file, build_model(study_file, data), data, log=lambda m: print(m, file=sys.stderr))
    storage = f"sqlite:///{(out / database).resolve()}"
    for name in optuna.get_all_study_names(storage):
        optuna.delete_study(study_name=name, storage=storage)
    return study_file, data, model, storage


def measured_with() -> dict[str, str]:
    """The machine, versions, commit and date of a measurement."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()
        changed = subprocess.run(
            [
                "git",
                "status",
                "--porcelain",
                "--untracked-files=no",
                "--",
                ":(top)",
                ":(exclude,top)docs/benchmarks.md",
                ":(exclude,top)benchmarks/results",
            ],
            capture_output=True,
            text=True,
            cwd=Path(__file__).parent,
            check=True,
        ).stdout.strip()  # the benchmark's own outputs are not code
        commit += " with local changes" if changed else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown (not a git checkout)"
    env = environment()
    return {
        "machine": env["machine"],
        "versions": ", ".join(f"{package} {v}" for package, v in env["versions"].items()),
        "commit": commit,
        "date": time.strftime("%Y-%m-%d"),
    }


def measured_line() -> str:
    """The line a document's section ends with: the machine, versions, commit and date it was measured on."""
    measured = measured_with()
    return f"Machine: {measured['machine']}; {measured['versions']}; commit {measured['commit']}, {measured['date']}."


def write_section(doc: str | Path, block: str, begin: str, end: str) -> None:
    """Put ``block`` (which starts with ``begin`` and ends with ``end``) in place of the document's section
    between those markers, or at its end when it has none; the rest of the document is kept."""
    doc = Path(doc)
    text = doc.read_text() if doc.exists() else "# Benchmarks\n"
    if begin in text and end in text:
        text = text[: text.index(begin)] + block + text[text.index(end) + len(end) :]
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    atomic_write_text(doc, text)
    print(f"wrote {doc}", file=sys.stderr)


def survey(name: str, input_shape: tuple[int, ...], rate: float) -> dict:
    """Build registered model ``name`` (random weights), prune it at ``rate`` in every group and check it.

    ``{"model", "params", "pruned_params", "flops_reduction", "same_shape", "unprunable",
    "ok", "seconds"}``, with ``"reason"`` when it is not ok (an exception's type and
    message, or which check failed).
    """
    torch.manual_seed(0)
    started = time.perf_counter()
    row: dict[str, Any] = {"model": name}
    try:
        model = autoprune.create_model(name, num_classes=1000).eval()
        x = torch.randn(*input_shape)
        before = autoprune.measure(model, x)
        with torch.no_grad():
            shape = model(x).shape
        row["unprunable"] = len(autoprune.unprunable_groups(model, x))
        autoprune.prune(model, x, rate)
        after = autoprune.measure(model, x)
        with torch.no_grad():
            same = model(x).shape == shape
        row.update(
            params=before["params"],
            pruned_params=after["params"],
            flops_reduction=before["flops"] / max(after["flops"], 1),
            same_shape=same,
            ok=same and after["params"] < before["params"],
        )
        if not row["ok"]:
            row["reason"] = "the output shape changed" if not same else "no parameter was removed"
    except Exception as exc:  # noqa: BLE001 - report and go on: this is a survey
        row.update(ok=False, reason=f"{type(exc).__name__}: {' '.join(str(exc).split())[:240]}")
    row["seconds"] = time.perf_counter() - started
    return row
