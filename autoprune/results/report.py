"""Reports of a search, read from the Optuna storage alone.

``write_report(study, folder)`` writes ``trials.csv`` (every trial, one column per
parameter and metric), ``pareto.csv`` (the feasible trials that no other feasible
trial beats: on accuracy and the objective, or on every objective of a
multi-objective study), ``pareto.png``/``pareto.svg``,
``rates.png`` and a self-contained ``index.html``. It can run while a search is
still going: it reads whatever trials are finished.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import optuna  # noqa: E402
import pandas as pd  # noqa: E402

from ..files import atomic_savefig, atomic_to_csv, atomic_write_text  # noqa: E402
from ..metrics import metric_direction  # noqa: E402
from .record import StudyRecord  # noqa: E402


def as_record(study: optuna.Study | StudyRecord) -> StudyRecord:
    return study if isinstance(study, StudyRecord) else StudyRecord(study)


def trials_frame(study: optuna.Study | StudyRecord) -> pd.DataFrame:
    """One row per finished trial: number, state, metrics, feasibility, uniform rate, parameters."""
    record = as_record(study)
    rows = []
    for t in record.trials():
        if not t.state.is_finished():
            continue
        uniform = record.uniform_rate(t)
        rows.append({
            "trial": t.number,
            "state": t.state.name,
            **record.metrics(t),
            "feasible": record.is_feasible(t),
            "scope": record.scope(t),
            "uniform_rate": math.nan if uniform is None else uniform,
            "seconds": t.duration.total_seconds() if t.duration else math.nan,
            **t.params,
        })
    if not rows:  # nothing finished yet: keep the columns and their types
        return pd.DataFrame({"trial": pd.Series(dtype=int), "state": pd.Series(dtype=str),
                             **{m: pd.Series(dtype=float) for m in record.metric_names},
                             "feasible": pd.Series(dtype=bool), "scope": pd.Series(dtype=str),
                             "uniform_rate": pd.Series(dtype=float),
                             "seconds": pd.Series(dtype=float)})
    return pd.DataFrame(rows)


def front_frame(study: optuna.Study | StudyRecord, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` on the study's Pareto front of feasible trials (:meth:`StudyRecord.pareto_trials`)."""
    order = [t.number for t in as_record(study).pareto_trials()]
    rows = frame.set_index("trial", drop=False)
    return rows.loc[[n for n in order if n in rows.index]].reset_index(drop=True)


def _scaled(values, unit: str):
    scale = {"flops": 1e6, "params": 1e3, "latency": 1.0, "nonzero_params": 1e3, "size_bytes": 1e3}[unit]
    return values / scale


_LABEL = {"flops": "MFLOPs", "params": "thousand parameters", "latency": "latency, ms",
          "nonzero_params": "thousand nonzero parameters", "size_bytes": "kB stored sparsely"}


def plot_pareto(frame: pd.DataFrame, front: pd.DataFrame, record: StudyRecord, objective: str):
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    complete = frame[frame["state"] == "COMPLETE"]
    infeasible = complete[~complete["feasible"]]
    feasible = complete[complete["feasible"]]
    ax.scatter(_scaled(infeasible[objective], objective), infeasible["accuracy"], marker="x", s=22,
               color="#d62728", alpha=0.45, label=f"over the budget ({len(infeasible)} trials)")
    ax.scatter(_scaled(feasible[objective], objective), feasible["accuracy"], s=18, color="#7f7f7f",
               alpha=0.45, label=f"within the budget ({len(feasible)} trials)")
    scoped = feasible[feasible["scope"] == "global"]
    if len(scoped) and len(scoped) < len(feasible):  # scope = "both": tell the two apart
        ax.scatter(_scaled(scoped[objective], objective), scoped["accuracy"], marker="^", s=30, facecolor="none",
                   edgecolor="#9467bd", label=f"global scope, within the budget ({len(scoped)} trials)")
    uniform = complete[complete["uniform_rate"].notna()].sort_values(objective)
    if len(uniform):
        ax.plot(_scaled(uniform[objective], objective), uniform["accuracy"], "s--", color="#ff7f0e", ms=6,
                label="same rate in every layer")
        for _, row in uniform.iterrows():
            ax.annotate(f"{row['uniform_rate']:.2f}", (_scaled(row[objective], objective), row["accuracy"]),
                        textcoords="offset points", xytext=(4, -11), fontsize=7, color="#ff7f0e")
    if len(front):
        ax.plot(_scaled(front[objective], objective), front["accuracy"], "o-", color="#1f77b4", ms=7,
                lw=2, label="Pareto front (searched per layer)", zorder=5)
    for kind, marker, colour, label in (("uniform", "D", "#ff7f0e", "uniform-rate baseline"),
                                        ("global", "P", "#9467bd", "global-pruning baseline")):
        reference = (record.references or {}).get(kind, {})
        if reference.get("rate") is not None and objective in reference:
            ax.scatter([_scaled(reference[objective], objective)], [reference["accuracy"]], marker=marker, s=110,
                       color=colour, edgecolor="black", zorder=7,
                       label=f"{label} (rate {reference['rate']:.3f}, by bisection)")
    baseline, max_drop = record.baseline, record.max_accuracy_drop
    base_acc = baseline.get("accuracy")
    if base_acc is not None and max_drop is not None:
        threshold = base_acc - max_drop
        ax.axhline(threshold, color="#2ca02c", ls=":", lw=1.5, label=f"budget: {max_drop} points below baseline")
        if objective in baseline:
            ax.scatter([_scaled(baseline[objective], objective)], [base_acc], marker="*", s=160,
                       color="black", zorder=6, label="unpruned baseline")
        budget = max(max_drop, 0.5)
        best = max([base_acc, *complete["accuracy"].dropna()])
        worst = min([threshold, *complete["accuracy"].dropna()])
        ax.set_ylim(max(worst, threshold - 3 * budget) - 0.2 * budget, best + 0.3 * budget)
    ax.set_xlabel(_LABEL[objective] + " (lower is better)")
    ax.set_ylabel(f"validation {record.score_label} (higher is better)")
    source = record.source
    ax.set_title(f"{source.get('model', 'model')} on {source.get('dataset', 'data')}: {record.score_name} "
                 f"against {objective}")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_rates(record: StudyRecord, trial: optuna.trial.FrozenTrial):
    plan = record.plan(trial)
    groups = list(plan["rates"])
    rates = [plan["rates"][g] for g in groups]
    methods = [plan["methods"][g] for g in groups]
    palette = {m: plt.cm.tab10(i) for i, m in enumerate(dict.fromkeys([*record.importances, *methods]))}
    fig, ax = plt.subplots(figsize=(max(6, 0.35 * len(groups) + 2), 4.5), dpi=110)
    ax.bar(range(len(groups)), rates, color=[palette.get(m, "gray") for m in methods])
    ax.set_xticks(range(len(groups)), groups, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("fraction of channels removed")
    ax.set_ylim(0, 1)
    ax.set_title(f"trial #{trial.number}: rate and importance per layer group (in layer order)")
    handles = [plt.Rectangle((0, 0), 1, 1, color=c) for m, c in palette.items() if m in methods]
    ax.legend(handles, [m for m in palette if m in methods], title="importance", fontsize=8)
    ax.grid(axis="y", alpha=0.25)
    fig.tight_layout()
    return fig


def sensitivity_frame(record: StudyRecord) -> pd.DataFrame:
    """The study's sensitivity curves, one row per (group, rate), groups in layer order."""
    columns = ["group", "rate", "accuracy_drop", "flops", "params", "evaluated", "failed"]
    return pd.DataFrame(record.sensitivity or [], columns=columns)


def plot_sensitivity(record: StudyRecord):
    """One curve per group: the score's drop with that group alone pruned, against its rate."""
    frame = sensitivity_frame(record)
    max_drop = record.max_accuracy_drop
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    groups = list(dict.fromkeys(frame["group"])) if len(frame) else []
    colours = plt.cm.viridis([i / max(1, len(groups) - 1) for i in range(len(groups))])
    for colour, group in zip(colours, groups):
        rows = frame[(frame["group"] == group) & frame["accuracy_drop"].notna()]
        ax.plot(rows["rate"], rows["accuracy_drop"], "o-", ms=3, lw=1.2, color=colour, label=group)
    ax.axhline(max_drop, color="#2ca02c", ls=":", lw=1.5, label=f"budget: {max_drop} points")
    ax.set_ylim(-0.5 * max_drop, 2.5 * max_drop)
    ax.set_xlabel("rate of the one group pruned (fraction of its channels removed)")
    ax.set_ylabel(f"validation {record.score_name} drop, points")
    ax.set_title(f"sensitivity of each group alone ({len(groups)} groups)")
    ax.grid(alpha=0.25)
    if len(groups) <= 24:
        ax.legend(fontsize=6, ncol=2, loc="upper left")
    fig.tight_layout()
    return fig


def plot_finalists(record: StudyRecord):
    """The finalists' recalibrated accuracy (the search's score) against their fine-tuned accuracy."""
    finalists = record.finalists
    frame = pd.DataFrame(finalists["trials"])
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=110)
    ax.scatter(frame["accuracy"], frame["finetuned_accuracy"], s=30, color="#1f77b4")
    for _, row in frame.iterrows():
        ax.annotate(f"#{int(row['trial'])}", (row["accuracy"], row["finetuned_accuracy"]), fontsize=7,
                    textcoords="offset points", xytext=(4, 3))
    rho = finalists.get("spearman")
    ax.set_title(f"{len(frame)} finalists: Spearman rank correlation "
                 f"{'n/a' if rho is None else f'{rho:.2f}'}")
    ax.set_xlabel(f"validation {record.score_label} after BatchNorm recalibration (the search's score)")
    ax.set_ylabel(f"after fine-tuning {finalists['recipe']['epochs']} epoch(s)")
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def plot_robustness(frame, front, record: StudyRecord):
    """Clean against robust accuracy (or their drops, when only the drop was measured): every
    completed trial in grey, the Pareto trials highlighted, the bounds as lines; None when the
    study measured no robust accuracy."""
    pairs = (("accuracy", "robust_accuracy"), ("accuracy_drop", "robust_accuracy_drop"))
    x, y = next(((a, b) for a, b in pairs if b in frame and frame[b].notna().any()), (None, None))
    if x is None:
        return None
    drops = x == "accuracy_drop"
    done = frame[frame["state"] == "COMPLETE"]
    fig, ax = plt.subplots(figsize=(6.5, 5), dpi=110)
    ax.scatter(done[x], done[y], s=14, color="#bbbbbb", label="trials")
    if len(front) and y in front:
        ax.scatter(front[x], front[y], s=34, color="#d62728", label="Pareto trials")
    if drops:
        ax.axvline(record.max_accuracy_drop, color="#555555", ls="--", lw=1, label="accuracy budget")
        bound = record.settings.bounds.get(y)
        if bound is not None:
            ax.axhline(bound, color="#555555", ls=":", lw=1, label=f"{y} bound")
    ax.set_xlabel("clean accuracy drop, points" if drops else "clean validation accuracy, %")
    ax.set_ylabel("robust accuracy drop, points" if drops else "accuracy on corrupted images, %")
    corruptions = ", ".join(record.settings.corruptions)
    ax.set_title(f"Clean against robust: {corruptions}\nat severities "
                 f"{', '.join(map(str, record.settings.corruption_severities))}", fontsize=9)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def write_sensitivity(study: optuna.Study | StudyRecord, folder: str | Path) -> tuple[Path, Path]:
    """Write ``sensitivity.csv`` and ``sensitivity.png`` into ``folder``; return their paths."""
    record = as_record(study)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    table, figure = folder / "sensitivity.csv", folder / "sensitivity.png"
    atomic_to_csv(sensitivity_frame(record), table)
    fig = plot_sensitivity(record)
    atomic_savefig(fig, figure)
    plt.close(fig)
    return table, figure


def _png_data(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(study: optuna.Study | StudyRecord, folder: str | Path) -> Path:
    """Write the report files into ``folder`` and return the path of ``index.html``."""
    record = as_record(study)
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    objective = record.size_objective
    frame = trials_frame(record)
    front = front_frame(record, frame)
    atomic_to_csv(frame, folder / "trials.csv")
    atomic_to_csv(front, folder / "pareto.csv")

    figures = {}
    fig = plot_pareto(frame, front, record, objective)
    atomic_savefig(fig, folder / "pareto.png")
    atomic_savefig(fig, folder / "pareto.svg")
    figures["pareto"] = _png_data(fig)
    plt.close(fig)
    best = record.chosen_trial()  # the trial that best.pt and best_plan.json hold
    chosen = None if best is None else best.number
    if best is not None:
        fig = plot_rates(record, best)
        atomic_savefig(fig, folder / "rates.png")
        figures["rates"] = _png_data(fig)
        plt.close(fig)
    fig = plot_robustness(frame, front, record)
    if fig is not None:
        atomic_savefig(fig, folder / "robustness.png")
        figures["robustness"] = _png_data(fig)
        plt.close(fig)
    if record.sensitivity:
        write_sensitivity(record, folder)
        figures["sensitivity"] = base64.b64encode((folder / "sensitivity.png").read_bytes()).decode()
    if record.finalists:
        atomic_to_csv(pd.DataFrame(record.finalists["trials"]), folder / "finalists.csv")
        fig = plot_finalists(record)
        atomic_savefig(fig, folder / "finalists.png")
        figures["finalists"] = _png_data(fig)
        plt.close(fig)

    index = folder / "index.html"
    atomic_write_text(index, _html(record, frame, front, figures, chosen, objective))
    return index


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


def _html(record: StudyRecord, frame, front, figures, chosen, objective) -> str:
    attrs, baseline = record.attrs, record.baseline
    e = html.escape
    complete = frame[frame["state"] == "COMPLETE"] if len(frame) else frame
    seconds = complete["seconds"].dropna() if len(complete) else pd.Series(dtype=float)
    settings = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in sorted(attrs.items())
        if k not in ("groups", "sensitivity", "rate_limits", "references", "finetuned_finalists")
    )
    best = record.chosen_trial()
    compared = record.comparison(best) if best is not None else None
    versus = "" if compared is None else (
        f"<p>Against the simple baselines, each at its largest rate within the budget (found by bisection): "
        f"trial #{best.number} has {compared['reduction']:.2f}x fewer {e(compared['measure'])}, one uniform rate "
        f"{compared['uniform_reduction']:.2f}x, global pruning {compared['global_reduction']:.2f}x: "
        f"<strong>{compared['ratio']:.2f}x</strong> the better baseline.</p>")
    columns = list(dict.fromkeys(["trial", "accuracy", "accuracy_drop", "flops", "params",
                                  *(o for o in record.objectives if o in front), *record.settings.bounds]))
    bounds = "" if not record.settings.bounds else f"<p>Constraints besides the {e(record.score_name)} budget: " + ", ".join(
        f"<code>{e(n)}</code> {'&ge;' if metric_direction(n) == 'maximize' else '&le;'} {b:g}"
        for n, b in record.settings.bounds.items()) + " (the baseline: " + ", ".join(
        f"{record.baseline.get(n, math.nan):.4g}" for n in record.settings.bounds) + ").</p>"
    check = record.latency_check
    latency = "" if not check else (
        "<p>Latency is predicted from a table measured once per study on "
        f"{e(str((record.latency_table or {}).get('device', 'cpu')))}, batch "
        f"{e(str((record.latency_table or {}).get('batch_size', '')))} (each group alone at a few rates). "
        "Checked against timings: " + ", ".join(
            f"{'the baseline' if row['trial'] is None else '#' + str(row['trial'])} predicted "
            f"{row['predicted_ms']:.3g} ms, timed {row['measured_ms']:.3g} ms"
            for row in check) + f"; median error {_median_error(check):.0%}.</p>")
    granularities = record.settings.granularities
    sparse = "" if granularities == ("channel",) else (
        f"<p>Granularity {e(', '.join(granularities))}: zeroed weights leave the dense FLOPs as they are; they "
        "save time only with sparse kernels (N:M on GPUs with sparse tensor cores) and save space when the "
        "model is stored sparsely (<code>size_bytes</code>).</p>")
    if len(front) and granularities != ("channel",):
        columns += ["sparsity", "nonzero_params", "size_bytes"]
    if len(front) and record.settings.scope != "local":
        columns.append("scope")  # the scope each Pareto trial pruned in
    if len(front) and "steps" in front:
        columns.append("steps")  # searched: the steps each Pareto trial pruned in
    named = {"accuracy": record.score_name, "accuracy_drop": f"{record.score_name}_drop"}
    table = front[columns].rename(columns=named).to_html(index=False, escape=True, float_format=lambda v: f"{v:.2f}") if len(front) else "<p>No feasible trial yet.</p>"
    images = "".join(
        f'<h2>{e(title)}</h2><img alt="{e(title)}" src="data:image/png;base64,{figures[key]}">'
        for key, title in (("pareto", f"{record.score_name} against {objective}"), ("rates", f"Per-layer plan of trial #{chosen}"),
                           ("robustness", "Clean against robust accuracy"),
                           ("sensitivity", "Sensitivity of each group alone"),
                           ("finalists", "How well the search's score ranks fine-tuned plans"))
        if key in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(record.name)}: autoprune report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>autoprune report: {e(record.name)}</h1>
<p>Baseline: validation {e(record.score_name)} {e(record.score_text(baseline.get('accuracy', float('nan'))))},
{baseline.get('flops', 0):,} FLOPs, {baseline.get('params', 0):,} parameters.
Budget: at most {e(str(record.max_accuracy_drop))} points of {e(record.score_label.split(',')[0])} lost.</p>
<p>Search cost: {len(complete)} finished trials ({int(complete['feasible'].sum()) if len(complete) else 0} within the budget),
{_wall_seconds(record):.0f} s of wall time from the first trial's start to the last one's end
({seconds.sum():.0f} s in trials), median {seconds.median() if len(seconds) else float('nan'):.2f} s per trial.</p>
{versus}
{bounds}{latency}{sparse}
<h2>Pareto front ({len(front)} trials)</h2>{table}
{images}
<h2>Settings</h2><table>{settings}</table>
</body></html>
"""
