"""The report's figures, each a matplotlib figure drawn from the study record and its trial tables.

``plot_pareto`` (the score against the size objective, with the baselines and the
budget), ``plot_history`` (the best reduction within the budget as trials go by),
``plot_importance`` (which groups' parameters the accuracy drop and the size
depended on, by Optuna's fANOVA), ``plot_rates`` (the chosen plan per group),
``plot_sensitivity``, ``plot_finalists`` and ``plot_robustness``. The caller saves
and closes them (:mod:`autoprune.results.report`).
"""

from __future__ import annotations

import math

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import optuna
import pandas as pd
from matplotlib.ticker import MaxNLocator

from .record import StudyRecord
from .units import plural, score_label, score_name


def _scaled(values, unit: str):
    scale = {"flops": 1e6, "params": 1e3, "latency": 1.0, "nonzero_params": 1e3, "size_bytes": 1e3}[unit]
    return values / scale


_LABEL = {
    "flops": "MFLOPs",
    "params": "thousand parameters",
    "latency": "latency, ms",
    "nonzero_params": "thousand nonzero parameters",
    "size_bytes": "kB stored sparsely",
}


def _within_view(line: float, low: float, high: float) -> bool:
    """Whether a budget line at ``line`` is near the data in [``low``, ``high``] (points): no further from
    it than three times the data's span or 5 points, so keeping the line in view does not squash the data
    into a sliver (and a budget of 1e308 points does not overflow matplotlib's transforms)."""
    reach = max(3 * (high - low), 5.0)
    return math.isfinite(line) and low - reach <= line <= high + reach


def plot_pareto(frame: pd.DataFrame, front: pd.DataFrame, record: StudyRecord, objective: str):
    """The score against the size objective: every completed trial (each one the legend counts is in
    view), the Pareto front, the one-rate trials, the baselines and the budget line."""
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    complete = frame[frame["state"] == "COMPLETE"]
    complete = complete[complete[objective].notna() & complete["accuracy"].notna()]  # the points that are drawn
    front = front[front[objective].notna() & front["accuracy"].notna()] if len(front) else front
    drawn = list(complete["accuracy"])
    infeasible = complete[~complete["feasible"]]
    feasible = complete[complete["feasible"]]
    ax.scatter(
        _scaled(infeasible[objective], objective),
        infeasible["accuracy"],
        marker="x",
        s=22,
        color="#d62728",
        alpha=0.45,
        label=f"over the budget ({plural(len(infeasible), 'trial')})",
    )
    ax.scatter(
        _scaled(feasible[objective], objective),
        feasible["accuracy"],
        s=18,
        color="#7f7f7f",
        alpha=0.45,
        label=f"within the budget ({plural(len(feasible), 'trial')})",
    )
    scoped = feasible[feasible["scope"] == "global"]
    if len(scoped) and len(scoped) < len(feasible):  # scope = "both": tell the two apart
        ax.scatter(
            _scaled(scoped[objective], objective),
            scoped["accuracy"],
            marker="^",
            s=30,
            facecolor="none",
            edgecolor="#9467bd",
            label=f"global scope, within the budget ({plural(len(scoped), 'trial')})",
        )
    uniform = complete[complete["uniform_rate"].notna()].sort_values(objective)
    if len(uniform):
        ax.plot(
            _scaled(uniform[objective], objective),
            uniform["accuracy"],
            "s--",
            color="#ff7f0e",
            ms=6,
            label="same rate in every layer",
        )
        for _, row in uniform.iterrows():
            ax.annotate(
                f"{row['uniform_rate']:.2f}",
                (_scaled(row[objective], objective), row["accuracy"]),
                textcoords="offset points",
                xytext=(4, -11),
                fontsize=7,
                color="#ff7f0e",
            )
    if len(front):
        ax.plot(
            _scaled(front[objective], objective),
            front["accuracy"],
            "o-",
            color="#1f77b4",
            ms=7,
            lw=2,
            label="Pareto front (searched per layer)",
            zorder=5,
        )
    for kind, marker, colour, label in (
        ("uniform", "D", "#ff7f0e", "uniform-rate baseline"),
        ("global", "P", "#9467bd", "global-pruning baseline"),
    ):
        reference = (record.references or {}).get(kind, {})
        if reference.get("rate") is not None and objective in reference:
            drawn.append(reference["accuracy"])
            ax.scatter(
                [_scaled(reference[objective], objective)],
                [reference["accuracy"]],
                marker=marker,
                s=110,
                color=colour,
                edgecolor="black",
                zorder=7,
                label=f"{label} (rate {reference['rate']:.3f}, by bisection)",
            )
    baseline, max_drop = record.baseline, record.max_accuracy_drop
    base_acc = baseline.get("accuracy")
    if base_acc is not None and objective in baseline:
        drawn.append(base_acc)
        ax.scatter(
            [_scaled(baseline[objective], objective)],
            [base_acc],
            marker="*",
            s=160,
            color="black",
            zorder=6,
            label="unpruned baseline",
        )
    drawn = [float(v) for v in drawn if math.isfinite(v)]
    if drawn:
        low, high = min(drawn), max(drawn)
        if base_acc is not None and max_drop is not None:
            threshold = base_acc - max_drop
            label = f"budget: {max_drop} points below baseline"
            if _within_view(threshold, low, high):
                ax.axhline(threshold, color="#2ca02c", ls=":", lw=1.5, label=label)
                low, high = min(low, threshold), max(high, threshold)
            else:  # far below every trial: named in the legend, not drawn
                ax.plot([], [], color="#2ca02c", ls=":", lw=1.5, label=f"{label} (below every trial)")
        pad = 0.06 * max(high - low, 0.5)
        ax.set_ylim(low - pad, high + pad)  # every point the legend counts is in view
    ax.set_xlabel(_LABEL[objective] + " (lower is better)")
    ax.set_ylabel(f"validation {score_label(record.score_name, record.score_label)} (higher is better)")
    source = record.source
    ax.set_title(
        f"{source.get('model', 'model')} on {source.get('dataset', 'data')}: "
        f"{score_name(record.score_name)} against {objective}"
    )
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


def plot_rates(record: StudyRecord, trial: optuna.trial.FrozenTrial):
    plan = record.plan(trial)
    groups = list(plan.rates)
    rates = [plan.rates[g] for g in groups]
    methods = [plan.methods[g] for g in groups]
    palette = {m: plt.cm.tab10(i) for i, m in enumerate(dict.fromkeys([*record.settings.importances, *methods]))}
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


def plot_sensitivity(record: StudyRecord, frame: pd.DataFrame):
    """One curve per group (``frame``: :func:`~autoprune.results.report.sensitivity_frame`): the score's
    drop with that group alone pruned, against its rate."""
    max_drop = record.max_accuracy_drop
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    groups = list(dict.fromkeys(frame["group"])) if len(frame) else []
    colours = plt.cm.viridis([i / max(1, len(groups) - 1) for i in range(len(groups))])
    for colour, group in zip(colours, groups):
        rows = frame[(frame["group"] == group) & frame["accuracy_drop"].notna()]
        ax.plot(rows["rate"], rows["accuracy_drop"], "o-", ms=3, lw=1.2, color=colour, label=group)
    drops = frame["accuracy_drop"].dropna() if len(frame) else pd.Series(dtype=float)
    drops = [float(v) for v in drops if math.isfinite(v)]
    low, high = min([0.0, *drops]), max([0.0, *drops])
    label = f"budget: {max_drop} points"
    if _within_view(max_drop, low, high):  # the view: up to 2.5 budgets, where the curves cross the budget
        ax.axhline(max_drop, color="#2ca02c", ls=":", lw=1.5, label=label)
        ax.set_ylim(min(-0.5 * max_drop, low - 0.1), 2.5 * max_drop)
    else:  # a budget far above every drop: named in the legend, the view the data's
        ax.plot([], [], color="#2ca02c", ls=":", lw=1.5, label=f"{label} (above every drop)")
        pad = 0.06 * max(high - low, 0.5)
        ax.set_ylim(low - pad, high + pad)
    ax.set_xlabel("rate of the one group pruned (fraction of its channels removed)")
    ax.set_ylabel(f"validation {score_name(record.score_name)} drop, points")
    ax.set_title(f"sensitivity of each group alone ({plural(len(groups), 'group')})")
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
        ax.annotate(
            f"#{int(row['trial'])}",
            (row["accuracy"], row["finetuned_accuracy"]),
            fontsize=7,
            textcoords="offset points",
            xytext=(4, 3),
        )
    rho = finalists.get("spearman")
    ax.set_title(f"{len(frame)} finalists: Spearman rank correlation {'n/a' if rho is None else f'{rho:.2f}'}")
    ax.set_xlabel(
        f"validation {score_label(record.score_name, record.score_label)} after BatchNorm recalibration (the search's score)"
    )
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
    if drops:  # the bounds as lines, where they are near the trials (a budget of 1e308 is not drawn)
        xs, ys = done[x].dropna(), done[y].dropna()
        if len(xs) and _within_view(record.max_accuracy_drop, float(xs.min()), float(xs.max())):
            ax.axvline(record.max_accuracy_drop, color="#555555", ls="--", lw=1, label="accuracy budget")
        bound = record.settings.bounds.get(y)
        if bound is not None and len(ys) and _within_view(bound, float(ys.min()), float(ys.max())):
            ax.axhline(bound, color="#555555", ls=":", lw=1, label=f"{y} bound")
    ax.set_xlabel("clean accuracy drop, points" if drops else "clean validation accuracy, %")
    ax.set_ylabel("robust accuracy drop, points" if drops else "accuracy on corrupted images, %")
    corruptions = ", ".join(record.settings.options_of("robust_accuracy").corruptions)
    ax.set_title(
        f"Clean against robust: {corruptions}\nat severities "
        f"{', '.join(map(str, record.settings.options_of('robust_accuracy').corruption_severities))}",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.25)
    fig.tight_layout()
    return fig


def reduction_history(frame: pd.DataFrame, record: StudyRecord) -> pd.DataFrame:
    """Per completed trial, in trial order: its reduction of the size objective and the best
    reduction within the budget so far (NaN until a trial is feasible)."""
    measure, base = record.size_objective, record.baseline.get(record.size_objective)
    done = frame[frame["state"] == "COMPLETE"].sort_values("trial")
    reduction = base / done[measure] if base and measure in done else pd.Series(math.nan, index=done.index)
    within = reduction.where(done["feasible"].astype(bool))
    return pd.DataFrame(
        {
            "trial": done["trial"],
            "reduction": reduction,
            "feasible": done["feasible"],
            "best_within_budget": within.ffill().cummax(),
        }
    ).reset_index(drop=True)


def plot_history(frame: pd.DataFrame, record: StudyRecord):
    """The best reduction within the budget against the trial number, with the simple baselines as lines;
    None before any trial completed."""
    history = reduction_history(frame, record)
    if not len(history):
        return None
    measure = record.size_objective
    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=110)
    feasible = history[history["feasible"].astype(bool)]
    ax.scatter(
        feasible["trial"],
        feasible["reduction"],
        s=14,
        color="#7f7f7f",
        alpha=0.5,
        label=f"a trial within the budget ({len(feasible)})",
    )
    ax.step(
        history["trial"],
        history["best_within_budget"],
        where="post",
        color="#1f77b4",
        lw=2,
        label="best within the budget so far",
    )
    for kind, colour, label in (("uniform", "#ff7f0e", "one uniform rate"), ("global", "#9467bd", "global pruning")):
        reference = (record.references or {}).get(kind, {})
        base = record.baseline.get(measure)
        if reference.get("rate") is not None and reference.get(measure) and base:
            ax.axhline(
                base / reference[measure],
                color=colour,
                ls="--",
                lw=1.3,
                label=f"{label}: {base / reference[measure]:.2f}x (bisection)",
            )
    ax.set_xlabel("trial number")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # trials are counted: no tick at trial 2.5
    ax.set_ylabel(f"{measure} reduction, x (higher is better)")
    ax.set_title(f"Optimisation history: {measure} reduction within the {record.max_accuracy_drop} point budget")
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    return fig


#: Fewer completed trials than this tell nothing about which parameters mattered.
IMPORTANCE_MIN_TRIALS = 10


def parameter_importances(record: StudyRecord, target: str, top: int = 12) -> dict[str, float] | None:
    """The ``top`` parameters that trial metric ``target`` depended on most, by fANOVA (Hutter et al.,
    ICML 2014; Optuna's evaluator), over the completed trials; None with too few trials to tell."""
    import warnings

    done = [t for t in record.completed() if math.isfinite(record.value(t, target))]
    if len(done) < IMPORTANCE_MIN_TRIALS or not done[0].params:
        return None
    evaluator = optuna.importance.FanovaImportanceEvaluator(n_trees=32, seed=0)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            scores = optuna.importance.get_param_importances(
                record.study, evaluator=evaluator, target=lambda t: record.value(t, target)
            )
    except (ValueError, RuntimeError, ZeroDivisionError):  # e.g. no parameter that varied
        return None
    return dict(list(scores.items())[:top])


def plot_importance(record: StudyRecord):
    """Which parameters the score's drop and the size objective depended on, side by side; None with
    fewer than :data:`IMPORTANCE_MIN_TRIALS` completed trials."""
    measure = record.size_objective
    panels = [
        (f"{score_name(record.score_name)} drop", parameter_importances(record, "accuracy_drop")),
        (measure, parameter_importances(record, measure)),
    ]
    panels = [(name, scores) for name, scores in panels if scores]
    if not panels:
        return None
    rows = max(len(scores) for _, scores in panels)
    fig, axes = plt.subplots(1, len(panels), figsize=(5.2 * len(panels), 0.32 * rows + 1.6), dpi=110, squeeze=False)
    for ax, (name, scores) in zip(axes[0], panels):
        names = list(scores)[::-1]
        ax.barh(range(len(names)), [scores[n] for n in names], color="#1f77b4")
        ax.set_yticks(range(len(names)), names, fontsize=7)
        ax.set_xlabel("importance (fANOVA, share of variance)")
        ax.set_title(f"what the {name} depended on", fontsize=10)
        ax.grid(axis="x", alpha=0.25)
    fig.tight_layout()
    return fig
