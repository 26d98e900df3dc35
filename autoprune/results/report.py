"""Reports of a search, read from the Optuna storage alone.

``write_report(study, folder)`` writes ``trials.csv`` (every trial, one column per
parameter and metric), ``pareto.csv`` (the feasible trials that no other feasible
trial beats: on accuracy and the objective, or on every objective of a
multi-objective study), ``pareto.png``/``pareto.svg``,
``history.png`` (the best reduction within the budget, trial by trial),
``importance.png`` (which parameters mattered, by fANOVA), ``rates.png`` and a
self-contained ``index.html`` that reads without JavaScript: the chosen trial
first, in human units with its reduction factors and a ready-to-run
``autoprune export`` command, then the figures, the Pareto front, and how the
search ran (wall time, trials per minute, seed, data splits, machine, versions). It can run while a search is
still going: it reads whatever trials are finished.
"""

from __future__ import annotations

import base64
import functools
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
import pandas as pd

from ..errors import AutopruneError
from ..files import atomic_savefig, atomic_to_csv, atomic_write_text
from ..metrics import metric_direction
from ..runtimes import Runtime
from ..storage import folder_storage, shown_url
from .figures import (
    plot_finalists,
    plot_history,
    plot_importance,
    plot_pareto,
    plot_rates,
    plot_robustness,
    plot_sensitivity,
)
from .record import StudyRecord
from .rungs import rung_summary
from .units import change, duration, factor, fixed, human, plural, score, score_label, score_name


class _Snapshot(StudyRecord):
    """A study record that reads the study's attributes from the storage once.

    A report reads them for every trial (each trial's plan is decoded through the study's space, built
    from its settings and groups): five storage queries per trial, 73 s of a 1,000-trial report on
    SQLite, spent after Ctrl-C with nothing printed, long enough for a second Ctrl-C to stop it before
    ``trials.csv`` and the figures were written. The attributes do not change while a report is written
    (a running search writes trials, not study attributes).
    """

    @functools.cached_property
    def attrs(self) -> dict:
        return StudyRecord.attrs.fget(self)

    @functools.cached_property
    def settings(self):
        return StudyRecord.settings.fget(self)

    @functools.cached_property
    def space(self):
        return StudyRecord.space.fget(self)


def as_record(study: optuna.Study | StudyRecord) -> StudyRecord:
    """The study's record, its attributes read once (:class:`_Snapshot`)."""
    if isinstance(study, _Snapshot):
        return study
    if isinstance(study, StudyRecord):
        return _Snapshot(study.study, study.home)
    return _Snapshot(study)


def trials_frame(study: optuna.Study | StudyRecord) -> pd.DataFrame:
    """One row per finished trial: number, state, metrics, feasibility, uniform rate, parameters."""
    record = as_record(study)
    rows = []
    for t in record.trials():
        if not t.state.is_finished():
            continue
        uniform = record.uniform_rate(t)
        rows.append(
            {
                "trial": t.number,
                "state": t.state.name,
                **record.metrics(t),
                "feasible": record.is_feasible(t),
                "scope": record.scope(t),
                "uniform_rate": math.nan if uniform is None else uniform,
                "seconds": t.duration.total_seconds() if t.duration else math.nan,
                **_rung_columns(record, t),
                **t.params,
            }
        )
    if not rows:  # nothing finished yet: keep the columns and their types
        return pd.DataFrame(
            {
                "trial": pd.Series(dtype=int),
                "state": pd.Series(dtype=str),
                **{m: pd.Series(dtype=float) for m in record.metric_names},
                "feasible": pd.Series(dtype=bool),
                "scope": pd.Series(dtype=str),
                "uniform_rate": pd.Series(dtype=float),
                "seconds": pd.Series(dtype=float),
            }
        )
    return pd.DataFrame(rows)


def _rung_columns(record: StudyRecord, trial) -> dict:
    """A fine-tuned budget's columns: the recalibrated score, the epochs fine-tuned, the rung a plan stopped at."""
    if record.settings.budget != "finetuned":
        return {}
    stopped = record.stopped(trial)
    return {
        "recalibrated_accuracy": record.value(trial, "recalibrated_accuracy"),
        "finetune_epochs": record.finetune_epochs(trial),
        "stopped_at_rung": math.nan if stopped is None else stopped["rung"],
    }


def front_frame(study: optuna.Study | StudyRecord, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` on the study's Pareto front of feasible trials (:meth:`StudyRecord.pareto_trials`)."""
    order = [t.number for t in as_record(study).pareto_trials()]
    rows = frame.set_index("trial", drop=False)
    return rows.loc[[n for n in order if n in rows.index]].reset_index(drop=True)


def sensitivity_frame(record: StudyRecord) -> pd.DataFrame:
    """The study's sensitivity curves, one row per (group, rate), groups in layer order."""
    columns = ["group", "rate", "accuracy_drop", "flops", "params", "evaluated", "failed"]
    return pd.DataFrame(record.sensitivity or [], columns=columns)


def write_sensitivity(study: optuna.Study | StudyRecord, folder: str | Path) -> tuple[Path, Path]:
    """Write ``sensitivity.csv`` and ``sensitivity.png`` into ``folder``; return their paths."""
    record = as_record(study)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, figure = folder / "sensitivity.csv", folder / "sensitivity.png"
    atomic_to_csv(sensitivity_frame(record), table)
    fig = plot_sensitivity(record, sensitivity_frame(record))
    atomic_savefig(fig, figure)
    plt.close(fig)
    return table, figure


def _png_data(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(
    study: optuna.Study | StudyRecord,
    folder: str | Path,
    *,
    out_dir: str | Path | None = None,
    storage: str | None = None,
) -> Path:
    """Write the report files into ``folder`` and return the path of ``index.html``.

    ``out_dir`` and ``storage`` (the search's output folder and storage URL, default:
    ``folder``'s parent and its ``study.db``) only shape the ready-to-run
    ``autoprune export`` command the report prints.
    """
    record = as_record(study)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    objective = record.size_objective
    frame = trials_frame(record)
    front = front_frame(record, frame)
    atomic_to_csv(frame, folder / "trials.csv")
    atomic_to_csv(front, folder / "pareto.csv")

    figures = {}

    def keep(name: str, fig, svg: bool = False) -> None:
        if fig is None:
            return
        atomic_savefig(fig, folder / f"{name}.png")
        if svg:
            atomic_savefig(fig, folder / f"{name}.svg")
        figures[name] = _png_data(fig)
        plt.close(fig)

    keep("pareto", plot_pareto(frame, front, record, objective), svg=True)
    keep("history", plot_history(frame, record))
    best = record.chosen_trial()  # the trial that best.pt and best_plan.json hold
    if best is not None:
        keep("rates", plot_rates(record, best))
    keep("importance", plot_importance(record))
    keep("robustness", plot_robustness(frame, front, record))
    if record.sensitivity:
        write_sensitivity(record, folder)
        figures["sensitivity"] = base64.b64encode((folder / "sensitivity.png").read_bytes()).decode()
    if record.finalists:
        atomic_to_csv(pd.DataFrame(record.finalists["trials"]), folder / "finalists.csv")
        keep("finalists", plot_finalists(record))

    index = folder / "index.html"
    command = None if best is None else export_command(record, best.number, out_dir or folder.parent, storage)
    atomic_write_text(index, _html(record, frame, front, figures, best, objective, command))
    return index


def export_command(record: StudyRecord, trial: int, out_dir: str | Path, storage: str | None = None) -> str:
    """The ``autoprune export`` command line that writes trial ``trial`` as ONNX into ``out_dir``.

    The storage is named only when it is not ``out_dir``'s ``study.db``, with any
    password in its URL hidden.
    """
    import shlex

    out_dir = Path(out_dir)
    words = [
        "autoprune",
        "export",
        str(out_dir),
        "--trial",
        str(trial),
        "--format",
        "onnx",
        "-o",
        str(out_dir / f"trial-{trial}.onnx"),
    ]
    if storage is not None and storage not in (folder_storage(out_dir), f"sqlite:///{out_dir / 'study.db'}"):
        words += ["--storage", shown_url(storage), "--study", record.name]
    return " ".join(shlex.quote(w) for w in words)


def _median_error(check: list[dict]) -> float:
    """The median of |predicted / timed - 1| over a latency check's rows."""
    errors = sorted(abs(row["predicted_ms"] / row["measured_ms"] - 1) for row in check if row["measured_ms"] > 0)
    return errors[len(errors) // 2] if errors else math.nan


def _wall_seconds(record: StudyRecord) -> float:
    trials = [t for t in record.trials() if t.datetime_start and t.datetime_complete]
    if not trials:
        return 0.0
    start = min(t.datetime_start for t in trials)
    return (max(t.datetime_complete for t in trials) - start).total_seconds()


#: Measures shown in human units in the report's tables (the CSV files keep the raw numbers).
_MEASURES = ("flops", "params", "latency", "nonzero_params", "size_bytes")


def _chosen_section(record: StudyRecord, best, command: str | None) -> str:
    """The chosen trial first: each measure before and after with its factor, the baselines, the export command."""
    e = html.escape
    if best is None:
        return "<h2>Chosen trial</h2><p>No trial within the budget yet.</p>"
    baseline, metrics, bounds = record.baseline, record.metrics(best), record.settings.bounds
    rows = [
        (
            f"validation {score_name(record.score_name)}",
            score(record.score_name, baseline.get("accuracy", math.nan)),
            score(record.score_name, metrics["accuracy"]),
            change(metrics["accuracy_drop"]),
        )
    ]
    for measure in _MEASURES:
        if measure in baseline and math.isfinite(metrics.get(measure, math.nan)):
            rows.append(
                (
                    _with_bound(measure, bounds),
                    human(baseline[measure], measure),
                    human(metrics[measure], measure),
                    factor(baseline[measure], metrics[measure], measure),
                )
            )
    for name in bounds:  # every other constrained metric, with its bound
        if name not in _MEASURES and math.isfinite(metrics.get(name, math.nan)):
            before, after = baseline.get(name, math.nan), metrics[name]
            difference = after - before if math.isfinite(before) else math.nan
            rows.append(
                (
                    _with_bound(name, bounds),
                    metric_value(before, name),
                    metric_value(after, name),
                    "-" if not math.isfinite(difference) else metric_value(difference, name, signed=True),
                )
            )
    table = "".join(
        f"<tr><th>{e(name)}</th><td>{e(before)}</td><td>{e(after)}</td><td>{e(change)}</td></tr>"
        for name, before, after, change in rows
    )
    compared = record.comparison(best)
    versus = (
        ""
        if compared is None
        else (
            f"<p>Against the simple baselines, each at its largest rate within the budget (found by bisection and "
            f"scored as the trials are): {compared['reduction']:.2f}x fewer {e(compared['measure'])} here, "
            f"{compared['uniform_reduction']:.2f}x with one uniform rate, {compared['global_reduction']:.2f}x with "
            f"global pruning: <strong>{compared['ratio']:.2f}x</strong> the better baseline.</p>"
        )
    )
    export = (
        ""
        if command is None
        else (
            "<p>Export it (ONNX here; <code>--format torch</code> or <code>torchscript</code> also work, and "
            "<code>--finetune-epochs N</code> fine-tunes it first):</p>"
            f"<pre><code>{e(command)}</code></pre>"
        )
    )
    return (
        f"<h2>Chosen trial: #{best.number}</h2>"
        f"<p>{e(_what_was_chosen(record))}: what <code>best.pt</code> and <code>best_plan.json</code> hold.</p>"
        '<div class="scroll"><table><tr><th></th><th>baseline</th>'
        f"<th>trial #{best.number}</th><th>change</th></tr>{table}</table></div>{versus}{export}"
    )


def _what_was_chosen(record: StudyRecord) -> str:
    """What the chosen trial is (:meth:`StudyRecord.chosen_trial`), in words."""
    shown = score_name(record.score_name)
    if len(record.objectives) > 1:
        objectives = ", ".join(shown if o == "accuracy" else o for o in record.objectives)
        return f"The point of the Pareto front (of {objectives}) with the highest {shown} within the budget"
    objective = record.objectives[0]
    highest = _direction(objective) == "maximize"
    return f"The {'highest' if highest else 'lowest'} {objective} within the budget"


def _direction(name: str) -> str:
    """Which way metric ``name`` is better; ``"minimize"`` for a metric no plugin registers here."""
    try:
        return metric_direction(name)
    except AutopruneError:
        return "minimize"


def metric_unit(name: str) -> str:
    """The unit metric ``name`` was registered with (``KiB``), empty for none, a fraction, or a metric no
    plugin registers where the report is written."""
    from ..zoo import get_metric

    try:
        unit = get_metric(name).options.get("unit", "")
    except AutopruneError:
        return ""
    return "" if unit in ("fraction", None) else str(unit)


def metric_value(value: float, name: str, *, signed: bool = False, digits: int = 4) -> str:
    """A value of metric ``name`` with its unit: ``4.76 MFLOPs``, ``1.23 ms`` for the built-in measures,
    ``367.9 KiB`` for a plugin's metric registered with ``unit="KiB"``; ``signed``: a change (``-12.5 KiB``)."""
    if value is None or not math.isfinite(value):
        return "-"
    if name in _MEASURES and not signed:
        return human(value, name)
    unit = metric_unit(name)
    text = f"{value:+.{digits}g}" if signed else f"{value:.{digits}g}"
    return f"{text} {unit}" if unit else text


def _with_bound(name: str, bounds: dict[str, float]) -> str:
    """A metric's name, with its bound when the study constrains it: ``weight_kib (<= 200 KiB)``."""
    if name not in bounds:
        return name
    return f"{name} ({'>=' if _direction(name) == 'maximize' else '<='} {metric_value(bounds[name], name, digits=6)})"


def _front_table(record: StudyRecord, front: pd.DataFrame) -> str:
    """The Pareto front as an HTML table, measures in human units."""
    if not len(front):
        return "<p>No feasible trial yet.</p>"
    columns = list(
        dict.fromkeys(
            [
                "trial",
                "accuracy",
                "accuracy_drop",
                "flops",
                "params",
                *(o for o in record.objectives if o in front),
                *record.settings.bounds,
            ]
        )
    )
    if record.settings.granularities != ("channel",):
        columns += ["sparsity", "nonzero_params", "size_bytes"]
    if record.settings.scope in ("global", "both"):
        columns.append("scope")  # the scope each Pareto trial pruned in
    if "steps" in front:
        columns.append("steps")  # searched: the steps each Pareto trial pruned in
    shown = front[[c for c in dict.fromkeys(columns) if c in front]].copy()
    for measure in _MEASURES:
        if measure in shown:
            shown[measure] = [human(v, measure) for v in shown[measure]]
    named = {"accuracy": score_name(record.score_name), "accuracy_drop": f"{score_name(record.score_name)} drop"}
    return (
        '<div class="scroll">'
        + shown.rename(columns=named).to_html(index=False, escape=True, float_format=fixed)
        + "</div>"
    )


def _run_section(record: StudyRecord, complete: pd.DataFrame) -> str:
    """How the search ran: trials, wall time and rate, seed, data splits, machine and versions."""
    e = html.escape
    seconds = complete["seconds"].dropna() if len(complete) else pd.Series(dtype=float)
    wall = _wall_seconds(record)
    feasible = int(complete["feasible"].sum()) if len(complete) else 0
    settings, run = record.settings, record.run
    rows = [
        ("trials", f"{len(complete)} finished, {feasible} within the budget"),
        (
            "search wall time",
            (
                f"{duration(wall)} from the first trial's start to the last one's end "
                f"({duration(seconds.sum())} in trials; the baseline and its bisections not counted)"
            ),
        ),
        ("trials per minute", f"{len(complete) / (wall / 60):.1f}" if wall > 0 else "-"),
        ("median trial", f"{seconds.median():.2f} s" if len(seconds) else "-"),
        ("seed", str(settings.seed)),
        ("sampler, warm start", f"{settings.sampler}, {settings.warm_start}"),
    ]
    if run.get("splits"):
        rows.append(("data", ", ".join(f"{n:,} {split}" for split, n in run["splits"].items()) + " samples"))
    rows.append(
        (
            "model, dataset",
            (f"{record.source.get('model', 'not registered')}, {record.source.get('dataset', 'not registered')}"),
        )
    )
    if run.get("machine"):
        rows.append(
            ("machine", run["machine"] + (f"; trials on {run['trial_device']}" if run.get("trial_device") else ""))
        )
    if run.get("versions"):
        rows.append(("versions", ", ".join(f"{package} {v}" for package, v in run["versions"].items())))
    table = "".join(f"<tr><th>{e(k)}</th><td>{e(v)}</td></tr>" for k, v in rows)
    return f"<h2>How the search ran</h2><table>{table}</table>"


def _rungs_section(record: StudyRecord) -> str:
    """A fine-tuned budget's rungs: where plans stopped, the fine-tuning spent, and each finished trial's
    score at every rung with how well each rung ranks them (:func:`~.rungs.rung_summary`)."""
    summary = rung_summary(record)
    if summary is None:
        return ""
    e, shown = html.escape, score_name(record.score_name)
    recipe, fractions = summary["recipe"], summary["fractions"]
    labels = ["recalibrated"] + [f"{f:.0%} of the recipe" for f in fractions[1:]]
    stopped = ", ".join(f"{n} at {labels[k]}" for k, n in summary["stopped"].items() if n) or "none"
    header = "".join(f"<th>{e(label)}</th>" for label in labels)
    rows = "".join(
        f"<tr><th>#{row['trial']}{'' if row['feasible'] else ' (over the budget)'}</th>"
        + "".join(f"<td>{e(score(record.score_name, a))}</td>" for a in row["accuracy"])
        + "</tr>"
        for row in summary["finished"][:FINISHED_SHOWN]
    )
    rho = "".join(
        f"<td>{'-' if summary['spearman'].get(k) is None else format(summary['spearman'][k], '.2f')}</td>"
        for k in range(len(fractions) - 1)
    )
    table = (
        f'<div class="scroll"><table><tr><th>trial</th>{header}</tr>{rows}'
        f"<tr><th>Spearman with the last</th>{rho}<td>1.00</td></tr></table></div>"
        if summary["finished"]
        else ""
    )
    return (
        f"<h2>Fine-tuned budget: {shown} at every rung</h2>"
        f"<p>Each plan is scored after BatchNorm recalibration, then during one fine-tuning run with the study's "
        f"recipe ({e(str(recipe.get('epochs', '?')))} epochs, learning rate {e(str(recipe.get('lr', '?')))}) after "
        f"{e(', '.join(labels[1:]))}; a rung that rules a plan out stops it. Stopped: {e(stopped)} "
        f"({summary['dominated']} of them because a feasible trial already had a lower {e(record.size_objective)}). "
        f"Fine-tuning spent: {summary['trial_epochs']:.1f} epochs of the training split in the trials, "
        f"{summary['reference_epochs']:.1f} in the baselines' bisection.</p>"
        f"{table}"
        f"<p>{len(summary['finished'])} trials climbed every rung"
        f"{f'; the {FINISHED_SHOWN} with the lowest {e(record.size_objective)} are shown' if len(summary['finished']) > FINISHED_SHOWN else ''}.</p>"
    )


#: Finished trials the rung table of a fine-tuned budget shows.
FINISHED_SHOWN = 15


def _latency_paragraph(record: StudyRecord) -> str:
    """How latency was predicted and in which runtime, and the check: each timed plan's prediction, its
    timing, its measured speed-up over the baseline beside its FLOPs reduction (``1.14x slower`` where it is)."""
    check = record.latency_check
    if not check:
        return ""
    e = html.escape
    table = record.latency_table or {}
    runtime = Runtime(table.get("backend", "torch"), table.get("device", "cpu"), table.get("threads", 0))
    base = check[0]
    rows = []
    for row in check:
        timed = f"{'the baseline' if row['trial'] is None else '#' + str(row['trial'])} predicted {row['predicted_ms']:.3g} ms, timed {row['measured_ms']:.3g} ms"
        if row["trial"] is not None:
            timed += f" ({factor(base['measured_ms'], row['measured_ms'], 'latency')}"
            if row.get("flops") and base.get("flops"):  # a check written before FLOPs were kept has none
                timed += f"; {factor(base['flops'], row['flops'], 'flops')} FLOPs"
            timed += ")"
        rows.append(timed)
    return (
        f"<p>Latency is predicted from a table measured once per study in {e(runtime.describe())}, batch "
        f"{e(str(table.get('batch_size', '')))} (each group alone at a few rates). Checked against timings in "
        f"that runtime: {e('; '.join(rows))}; median error {_median_error(check):.0%}.</p>"
    )


def _html(record: StudyRecord, frame, front, figures, best, objective, command: str | None) -> str:
    attrs, baseline = record.summary_attrs(), record.baseline
    e = html.escape
    complete = frame[frame["state"] == "COMPLETE"] if len(frame) else frame
    settings = "".join(f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in sorted(attrs.items()))
    bounds = (
        ""
        if not record.settings.bounds
        else f"<p>Constraints besides the {e(score_name(record.score_name))} budget: "
        + ", ".join(
            f"<code>{e(n)}</code> {'&ge;' if _direction(n) == 'maximize' else '&le;'} {e(metric_value(b, n, digits=6))}"
            for n, b in record.settings.bounds.items()
        )
        + " (the baseline: "
        + ", ".join(e(metric_value(record.baseline.get(n, math.nan), n)) for n in record.settings.bounds)
        + ").</p>"
    )
    latency = _latency_paragraph(record)
    granularities = record.settings.granularities
    sparse = (
        ""
        if granularities == ("channel",)
        else (
            f"<p>Granularity {e(', '.join(granularities))}: zeroed weights leave the dense FLOPs as they are; they "
            "save time only with sparse kernels (N:M on GPUs with sparse tensor cores) and save space when the "
            "model is stored sparsely (<code>size_bytes</code>).</p>"
        )
    )
    notes = {
        "history": (
            "Each grey dot is a trial within the budget; the blue steps are the best so far. The dashed "
            "lines are what one uniform rate and global pruning reach within the same budget."
        ),
        "importance": (
            "fANOVA over the completed trials: each parameter's share of the variance of the score's "
            "drop and of the size. A trial whose validation stopped early counts with the drop it had "
            "reached."
        ),
    }
    warning = record.resolution_warning
    resolution = "" if not warning else f'<p class="warning"><strong>Warning:</strong> {e(warning)}.</p>\n'
    chosen = None if best is None else best.number
    images = "".join(
        f'<h2>{e(title)}</h2><img alt="{e(title)}" src="data:image/png;base64,{figures[key]}">'
        + (f"<p>{e(notes[key])}</p>" if key in notes else "")
        for key, title in (
            ("pareto", f"{score_name(record.score_name)} against {objective}"),
            ("history", "Best reduction within the budget, trial by trial"),
            ("rates", f"Per-layer plan of trial #{chosen}"),
            ("importance", "Which parameters mattered"),
            ("robustness", "Clean against robust accuracy"),
            ("sensitivity", "Sensitivity of each group alone"),
            ("finalists", "How well the search's score ranks fine-tuned plans"),
        )
        if key in figures
    )
    source = record.source
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(record.name)}: autoprune report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;line-height:1.4}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
.scroll{{overflow-x:auto}}pre{{background:#f4f4f4;padding:.6em;white-space:pre-wrap;word-break:break-all}}
img{{max-width:100%;height:auto}}</style></head><body>
<h1>autoprune report: {e(record.name)}</h1>
<p>{e(source.get("model", "A model"))} on {e(source.get("dataset", "its data"))}:
baseline validation {e(score_name(record.score_name))} {e(score(record.score_name, baseline.get("accuracy", float("nan"))))},
{e(human(baseline.get("flops"), "flops"))}, {e(human(baseline.get("params"), "params"))}.
Budget: at most {e(str(record.max_accuracy_drop))} points of {e(score_label(record.score_name, record.score_label).split(",")[0])} lost{" after fine-tuning" if record.settings.budget == "finetuned" else ""}.</p>
{resolution}{_chosen_section(record, best, command)}
{_rungs_section(record)}
{bounds}{latency}{sparse}
{images}
<h2>Pareto front ({plural(len(front), "trial")})</h2>{_front_table(record, front)}
{_run_section(record, complete)}
<details><summary>Every setting of the study</summary><div class="scroll"><table>{settings}</table></div></details>
</body></html>
"""
