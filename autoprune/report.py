"""Reports of a search, read from the Optuna storage alone.

``write_report(study, folder)`` writes ``trials.csv`` (every trial, one column per
parameter and metric), ``pareto.csv`` (the feasible trials that no other feasible
trial beats on both accuracy and the objective), ``pareto.png``/``pareto.svg``,
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

from .search import best_feasible_trial, is_feasible, plan_from_trial  # noqa: E402

METRICS = ("accuracy", "accuracy_drop", "flops", "params", "latency")


def trials_frame(study: optuna.Study) -> pd.DataFrame:
    """One row per finished trial: number, state, metrics, feasibility, uniform rate, parameters."""
    groups = study.user_attrs.get("groups", [])
    rows = []
    for t in study.get_trials(deepcopy=False):
        if t.state == optuna.trial.TrialState.RUNNING:
            continue
        rates = [t.params.get(f"{g}.rate") for g in groups]
        methods = {t.params.get(f"{g}.method") for g in groups}
        uniform = rates[0] if rates and len(set(rates)) == 1 and len(methods) == 1 else math.nan
        row = {
            "trial": t.number,
            "state": t.state.name,
            **{m: t.user_attrs.get(m, math.nan) for m in METRICS},
            "feasible": is_feasible(t),
            "uniform_rate": uniform,
            "seconds": t.duration.total_seconds() if t.duration else math.nan,
            **t.params,
        }
        rows.append(row)
    if not rows:  # nothing finished yet: keep the columns and their types
        return pd.DataFrame({"trial": pd.Series(dtype=int), "state": pd.Series(dtype=str),
                             **{m: pd.Series(dtype=float) for m in METRICS},
                             "feasible": pd.Series(dtype=bool), "uniform_rate": pd.Series(dtype=float),
                             "seconds": pd.Series(dtype=float)})
    return pd.DataFrame(rows)


def pareto_front(frame: pd.DataFrame, objective: str) -> pd.DataFrame:
    """Feasible trials not beaten on both accuracy (higher) and ``objective`` (lower) by another."""
    feasible = frame[frame["feasible"]].sort_values([objective, "accuracy"], ascending=[True, False])
    keep, best_accuracy = [], -math.inf
    for index, row in feasible.iterrows():
        if row["accuracy"] > best_accuracy:
            keep.append(index)
            best_accuracy = row["accuracy"]
    return feasible.loc[keep]


def front_of(study: optuna.Study, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows of ``frame`` on the study's Pareto front of feasible trials.

    Multi-objective: Optuna's own ``study.best_trials``. Single objective: the
    feasible trials not beaten on both accuracy and the objective.
    """
    objective = x_objective(study.user_attrs)
    if len(study.directions) > 1:
        numbers = [t.number for t in study.best_trials]
        return frame[frame["trial"].isin(numbers)].sort_values(objective)
    return pareto_front(frame, objective)


def _scaled(values, unit: str):
    scale = {"flops": 1e6, "params": 1e3, "latency": 1.0}[unit]
    return values / scale


_LABEL = {"flops": "MFLOPs", "params": "thousand parameters", "latency": "latency, ms"}


def x_objective(attrs: dict) -> str:
    """The size measure drawn against accuracy: the study's first objective other than accuracy."""
    objectives = attrs.get("objectives") or [attrs.get("objective", "flops")]
    return next((o for o in objectives if o != "accuracy"), "flops")


def plot_pareto(frame: pd.DataFrame, front: pd.DataFrame, attrs: dict, objective: str):
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    complete = frame[frame["state"] == "COMPLETE"]
    infeasible = complete[~complete["feasible"]]
    feasible = complete[complete["feasible"]]
    ax.scatter(_scaled(infeasible[objective], objective), infeasible["accuracy"], marker="x", s=22,
               color="#d62728", alpha=0.45, label=f"over the budget ({len(infeasible)} trials)")
    ax.scatter(_scaled(feasible[objective], objective), feasible["accuracy"], s=18, color="#7f7f7f",
               alpha=0.45, label=f"within the budget ({len(feasible)} trials)")
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
    base_acc = attrs.get("baseline_accuracy")
    if base_acc is not None:
        threshold = base_acc - attrs.get("max_accuracy_drop", 0.0)
        ax.axhline(threshold, color="#2ca02c", ls=":", lw=1.5,
                   label=f"budget: {attrs.get('max_accuracy_drop')} points below baseline")
        if f"baseline_{objective}" in attrs:
            ax.scatter([_scaled(attrs[f"baseline_{objective}"], objective)], [base_acc], marker="*", s=160,
                       color="black", zorder=6, label="unpruned baseline")
        budget = max(attrs.get("max_accuracy_drop", 1.0), 0.5)
        best = max([base_acc, *complete["accuracy"].dropna()])
        worst = min([threshold, *complete["accuracy"].dropna()])
        ax.set_ylim(max(worst, threshold - 3 * budget) - 0.2 * budget, best + 0.3 * budget)
    ax.set_xlabel(_LABEL[objective] + " (lower is better)")
    ax.set_ylabel("validation accuracy, % (higher is better)")
    ax.set_title(f"{attrs.get('model', 'model')} on {attrs.get('dataset', 'data')}: accuracy against {objective}")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_rates(study: optuna.Study, trial: optuna.trial.FrozenTrial):
    plan = plan_from_trial(study, trial)
    groups = list(plan["rates"])
    rates = [plan["rates"][g] for g in groups]
    methods = [plan["methods"][g] for g in groups]
    palette = {m: plt.cm.tab10(i) for i, m in enumerate(dict.fromkeys(study.user_attrs.get("importances", methods)))}
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


def _png_data(fig) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return base64.b64encode(buffer.getvalue()).decode()


def write_report(study: optuna.Study, folder: str | Path) -> Path:
    """Write the report files into ``folder`` and return the path of ``index.html``."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    attrs = study.user_attrs
    objective = x_objective(attrs)
    frame = trials_frame(study)
    front = front_of(study, frame)
    frame.to_csv(folder / "trials.csv", index=False)
    front.to_csv(folder / "pareto.csv", index=False)

    figures = {}
    fig = plot_pareto(frame, front, attrs, objective)
    fig.savefig(folder / "pareto.png")
    fig.savefig(folder / "pareto.svg")
    figures["pareto"] = _png_data(fig)
    plt.close(fig)
    best = best_feasible_trial(study)  # the trial that best.pt and best_plan.json hold
    chosen = None if best is None else best.number
    if best is not None:
        fig = plot_rates(study, best)
        fig.savefig(folder / "rates.png")
        figures["rates"] = _png_data(fig)
        plt.close(fig)

    index = folder / "index.html"
    index.write_text(_html(study, frame, front, figures, chosen, objective))
    return index


def _wall_seconds(study: optuna.Study) -> float:
    trials = [t for t in study.get_trials(deepcopy=False) if t.datetime_start and t.datetime_complete]
    if not trials:
        return 0.0
    start = min(t.datetime_start for t in trials)
    return (max(t.datetime_complete for t in trials) - start).total_seconds()


def _html(study, frame, front, figures, chosen, objective) -> str:
    attrs = study.user_attrs
    e = html.escape
    complete = frame[frame["state"] == "COMPLETE"] if len(frame) else frame
    seconds = complete["seconds"].dropna() if len(complete) else pd.Series(dtype=float)
    settings = "".join(
        f"<tr><th>{e(str(k))}</th><td>{e(str(v))}</td></tr>" for k, v in sorted(attrs.items()) if k != "groups"
    )
    columns = ["trial", "accuracy", "accuracy_drop", "flops", "params"]
    table = front[columns].to_html(index=False, escape=True, float_format=lambda v: f"{v:.2f}") if len(front) else "<p>No feasible trial yet.</p>"
    images = "".join(
        f'<h2>{e(title)}</h2><img alt="{e(title)}" src="data:image/png;base64,{figures[key]}">'
        for key, title in (("pareto", "Accuracy against " + objective), ("rates", f"Per-layer plan of trial #{chosen}"))
        if key in figures
    )
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{e(study.study_name)}: autoprune report</title>
<style>body{{font-family:sans-serif;max-width:1000px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}
img{{max-width:100%}}</style></head><body>
<h1>autoprune report: {e(study.study_name)}</h1>
<p>Baseline: {attrs.get('baseline_accuracy', float('nan')):.2f}% validation accuracy,
{attrs.get('baseline_flops', 0):,} FLOPs, {attrs.get('baseline_params', 0):,} parameters.
Budget: at most {e(str(attrs.get('max_accuracy_drop')))} points of accuracy lost.</p>
<p>Search cost: {len(complete)} finished trials ({int(complete['feasible'].sum()) if len(complete) else 0} within the budget),
{_wall_seconds(study):.0f} s of wall time from the first trial's start to the last one's end
({seconds.sum():.0f} s in trials), median {seconds.median() if len(seconds) else float('nan'):.2f} s per trial.</p>
<h2>Pareto front ({len(front)} trials)</h2>{table}
{images}
<h2>Settings</h2><table>{settings}</table>
</body></html>
"""
