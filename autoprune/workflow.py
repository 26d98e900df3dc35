"""A study file run end to end from Python, leaving what ``autoprune search STUDY`` leaves.

:func:`run_study` checks the study file and its output folder, builds and trains
(or loads) the baseline, searches, and writes into the output folder the report
(``report/index.html``), the chosen pruned model (``best.pt``) and its plan
(``best_plan.json``), as the command line does; the command line is a printer
over it::

    import autoprune

    run = autoprune.run_study("studies/quickstart.toml", trials=20)
    run.result.best_plan, run.best_model_file, run.report
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from torch import nn

from .errors import AutopruneError, SearchInterrupted
from .files import atomic_write_text
from .settings import StudyFile, load_study_file
from .storage import folder_storage, storage_file

#: The file that names the study an output folder belongs to.
FOLDER_MARK = ".autoprune-study.json"


@dataclass
class PreparedStudy:
    """A study file (with its overrides), its data and baseline, and where its study is kept."""

    study_file: StudyFile
    data: Any
    model: nn.Module
    trained: bool
    storage: str

    @property
    def search_args(self) -> dict[str, Any]:
        """The storage arguments :func:`autoprune.search` takes for this study."""
        study_file = self.study_file
        return {
            "storage": self.storage,
            "study_name": study_file.name,
            "artifacts": study_file.out_dir / "artifacts",
            "study_attrs": {"study_file": study_file.path} if study_file.path else None,
        }


@dataclass
class StudyRun:
    """What :func:`run_study` did: the search's result and the files it wrote (None where it wrote none:
    no model without a feasible trial)."""

    prepared: PreparedStudy
    result: Any
    seconds: float
    report: Path
    best_model_file: Path | None = None
    best_plan_file: Path | None = None
    interrupted: bool = field(default=False)


def prepare_study(
    study: str | Path | StudyFile,
    *,
    trials: int | None = None,
    timeout: float | None = None,
    seed: int | None = None,
    device: str | None = None,
    storage: str | None = None,
    out: str | Path | None = None,
    force: bool = False,
    log: Callable[[str], None] | None = None,
) -> PreparedStudy:
    """The study file (with these overrides), its data and trained baseline, every input checked before
    the baseline is trained; the output folder is claimed for the study (``force``: take over a folder
    another study claimed)."""
    from .baseline import build_model, load_or_train
    from .checkpoint import load_checkpoint
    from .devices import resolve_device
    from .searcher import preflight
    from .zoo import create_dataset

    study_file = study if isinstance(study, StudyFile) else load_study_file(study)
    if isinstance(out, str) and not out.strip():
        raise AutopruneError(f"--out {out!r} names no folder; give a folder, or no --out for study.out or runs/<name>")
    if study_file.out is not None and not study_file.out.strip() and out is None:
        raise AutopruneError(f"study.out = {study_file.out!r} names no folder; give a folder, or none for runs/<name>")
    given = {"trials": trials, "timeout": timeout, "seed": seed, "device": device}
    overrides = {k: v for k, v in given.items() if v is not None}
    study_file = study_file.replace(
        settings=study_file.settings.replace(**overrides),
        **{k: v for k, v in {"storage": storage, "out": out and str(out)}.items() if v},
    )
    url = study_file.storage or folder_storage(study_file.out_dir)
    check_folder(study_file.out_dir, study_file.name, url, force=force)
    created = make_folder(study_file.out_dir)  # the default storage lives there
    try:
        data = create_dataset(study_file.dataset, **study_file.dataset_params)
        model = build_model(study_file, data).to(resolve_device(study_file.settings.device))
        if study_file.checkpoint:  # readable, and fits the model, before any work
            load_checkpoint(model, study_file.checkpoint, what="model.checkpoint")
        preflight(model, data, study_file.settings, storage=url, study_name=study_file.name)  # before training
    except BaseException:
        remove_folders(created)  # a refused study leaves no new folder behind
        raise
    claim_folder(study_file.out_dir, study_file.name, url)
    model, trained = load_or_train(study_file, model, data, log=log)
    return PreparedStudy(study_file, data, model, trained, url)


def run_study(
    study: str | Path | StudyFile,
    *,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    phase: str = "all",
    **overrides: Any,
) -> StudyRun:
    """Run study file ``study`` as ``autoprune search`` does and write its outputs (see the module).

    ``overrides``: ``trials``, ``timeout``, ``seed``, ``device``, ``storage``, ``out``, ``force``
    (:func:`prepare_study`); ``phase``: what of the search runs (:func:`autoprune.search`'s ``phase``;
    ``"prepare"`` writes the outputs of the trials the study holds without running more). Ctrl-C fails the running trial, writes the outputs of
    the finished ones and raises :class:`autoprune.SearchInterrupted` with the
    :class:`StudyRun` as its ``result``; running the same study again resumes it.
    """
    from .searcher import search

    started = time.perf_counter()
    log = log or (lambda message: print(message, file=sys.stderr))
    prepared = prepare_study(study, log=log, **overrides)
    study_file = prepared.study_file
    try:
        result = search(
            prepared.model,
            prepared.data,
            study_file.settings,
            progress=progress,
            finetune=study_file.finetune,
            phase=phase,
            **prepared.search_args,
        )
    except SearchInterrupted as stop:
        log("writing the report and model of the finished trials (a second Ctrl-C waits until they are written)")
        with _interrupts_held():
            run = write_outputs(prepared, stop.result, time.perf_counter() - started)
        run.interrupted = True
        raise SearchInterrupted(run) from None
    return write_outputs(prepared, result, time.perf_counter() - started)


@contextlib.contextmanager
def _interrupts_held() -> Iterator[None]:
    """Ctrl-C ignored while the block runs (in the main thread; elsewhere signals do not reach it): a
    second one after the search was interrupted would otherwise leave a report without its files."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def write_outputs(prepared: PreparedStudy, result, seconds: float) -> StudyRun:
    """Write the report, and the chosen model (``best.pt``) with its plan (``best_plan.json``) when the
    study has a feasible trial, into the study's output folder."""
    from .engine import input_shape
    from .results import save_model, write_report

    out, record = prepared.study_file.out_dir, result.record
    report = write_report(record, out / "report", out_dir=out, storage=prepared.storage)
    run = StudyRun(prepared, result, seconds, report)
    best = result.best_trial
    if best is None:
        return run
    plan = result.best_plan
    run.best_model_file, run.best_plan_file = out / "best.pt", out / "best_plan.json"
    save_model(
        result.best_model,
        run.best_model_file,
        metadata={"study": record.name, "trial": best.number, **plan.to_dict()},
        input_shape=tuple(input_shape(result.example_inputs)[1]),
    )
    atomic_write_text(run.best_plan_file, plan.to_json(trial=best.number))
    return run


def claim(out: Path, name: str, storage: str) -> dict[str, str]:
    """What an output folder's mark says: the study, and its storage, relative to the folder when the
    storage file is in it (``study.db``), so a folder moved or copied whole is still its study's."""
    path = storage_file(storage)
    if path is not None and path.resolve().parent == Path(out).resolve():
        return {"study": name, "storage_file": path.name}
    return {"study": name, "storage": storage}


def check_folder(out: Path, name: str, storage: str, *, force: bool) -> None:
    """Refuse an output folder that cannot be one (a file, a path inside a file, a folder that cannot be
    written or made), or that another study claimed (unless ``force``); nothing is created here."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise AutopruneError(f"output folder {str(out)!r} is a file; give a folder (new or existing)")
    existing = next(p for p in (out, *out.absolute().parents) if p.exists())
    if not existing.is_dir():
        raise AutopruneError(f"output folder {str(out)!r} is inside {str(existing)!r}, which is a file; give a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        made = "written in" if existing == out else f"made in {str(existing)!r}"
        raise AutopruneError(f"output folder {str(out)!r} cannot be {made} (no permission); give another --out")
    mark = out / FOLDER_MARK
    if not mark.is_file() or force:
        return
    try:
        theirs = json.loads(mark.read_text())
    except ValueError:
        theirs = None
    ours = claim(out, name, storage)
    if isinstance(theirs, dict) and theirs != ours and theirs != {"study": name, "storage": storage}:
        raise AutopruneError(
            f"output folder {str(out)!r} holds study {theirs.get('study')!r} in "
            f"{theirs.get('storage') or theirs.get('storage_file')}; "
            f"study {name!r} in {storage} would overwrite its best.pt and report: give another --out "
            "(or --force to take the folder over)"
        )


def make_folder(out: Path) -> list[Path]:
    """Make folder ``out`` and its missing parents; return the folders made, the outermost first."""
    out = Path(out)
    missing = [p for p in (out, *out.parents) if not p.exists()][::-1]
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        remove_folders(missing)
        raise AutopruneError(
            f"output folder {str(out)!r} cannot be made ({exc.strerror or type(exc).__name__}); give another --out"
        ) from None
    return missing


def remove_folders(created: list[Path]) -> None:
    """Remove the folders :func:`make_folder` made (the outermost with everything in it: this run put it there)."""
    if created:
        shutil.rmtree(created[0], ignore_errors=True)


def claim_folder(out: Path, name: str, storage: str) -> None:
    """Mark ``out`` as the folder of this study (once its inputs have passed every check)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    atomic_write_text(Path(out) / FOLDER_MARK, json.dumps(claim(out, name, storage)) + "\n")
