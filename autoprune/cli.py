"""The ``autoprune`` command line: a thin layer over the Python API.

A user error (:class:`autoprune.AutopruneError`) prints one line on stderr and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import math
import os
import sys
import textwrap
from collections.abc import Iterator, Sequence
from pathlib import Path

from . import plugins
from .errors import AutopruneError, SearchInterrupted
from .settings import FINETUNE, FINETUNE_MODES

KINDS = plugins.KIND_NAMES


def _cmd_plugins(args: argparse.Namespace) -> int:
    entries = plugins.list_entries(args.kind)
    if args.pattern:
        import fnmatch

        entries = [e for e in entries if fnmatch.fnmatchcase(e.name, args.pattern)]
    if not entries:
        print("no matching plugins")
        return 0
    width = max(len(e.name) for e in entries)
    kind = None
    for e in entries:
        if e.kind != kind:
            kind = e.kind
            print(f"{'' if kind == entries[0].kind else chr(10)}{kind.replace('_', ' ')}s:")
        extra = " [needs grads]" if e.options.get("needs_grads") else ""
        if e.kind == "metric":
            unit = ", " + e.options["unit"] if e.options.get("unit") else ""
            options = f", options: [metrics.{e.name}]" if e.options.get("options") else ""
            extra = f" [{e.options.get('direction', 'minimize')}{unit}{options}]"
        desc = textwrap.shorten(e.description, 70, placeholder="...") if e.description else ""
        print(f"  {e.name:<{width}}  {desc}{extra}  <- {e.source}")
    if plugins.broken_plugins and not args.kind and not args.pattern:
        print("\nleft out (cannot be loaded):")
        for broken in plugins.broken_plugins:
            print(f"  {broken.name}  {textwrap.shorten(broken.error, 90, placeholder='...')}  <- {broken.package}")
    return 0


def _overrides(args: argparse.Namespace) -> dict:
    """What the command line changes of a study file, as :func:`autoprune.workflow.prepare_study` takes it."""
    return {
        "trials": getattr(args, "trials", None),
        "timeout": getattr(args, "timeout", None),
        "seed": args.seed,
        "device": args.device,
        "storage": args.storage,
        "out": args.out,
        "force": args.force,
    }


def _prepare(args: argparse.Namespace):
    """The study file (with the command line's overrides), its data and trained baseline, checked first."""
    from .workflow import prepare_study

    return prepare_study(args.study, log=lambda m: print(m, file=sys.stderr), **_overrides(args))


def _cmd_search(args: argparse.Namespace) -> int:
    from .training import WithoutEpochLines
    from .workflow import run_study

    def log(message: str) -> None:
        print(message, file=sys.stderr)

    try:
        if args.workers is not None or args.gpus is not None:
            run = _run_workers(args, WithoutEpochLines(log) if args.quiet else log)
        else:
            run = run_study(
                args.study,
                progress=not args.quiet,
                log=WithoutEpochLines(log) if args.quiet else log,
                **_overrides(args),
            )
    except SearchInterrupted as stop:
        done = len(stop.result.result.record.completed())
        print(
            f"autoprune: interrupted; the running trial is marked failed, the {done} finished trials are "
            "saved (run the same command to resume)",
            file=sys.stderr,
        )
        _summarize(stop.result)
        return 130
    return _summarize(run)


def _run_workers(args: argparse.Namespace, log):
    """``--workers N`` / ``--gpus LIST``: the study prepared once, then N worker processes on this machine."""
    from .settings import load_study_file
    from .workers import gpu_count, parse_gpus, plan_workers, run_workers

    gpus = parse_gpus(args.gpus) if args.gpus is not None else None
    device = args.device or load_study_file(args.study).settings.device
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    workers = plan_workers(args.workers, gpus, None if device == "auto" else device, gpu_count(), cores)
    return run_workers(
        args.study, _overrides(args), workers, progress=not args.quiet, log=log, plugin_modules=tuple(args.plugin)
    )


def _cmd_latency_table(args: argparse.Namespace) -> int:
    """Time the study's model on this machine, each group alone at a few rates: a table for the study file."""
    from .baseline import build_model
    from .engine import prunable_groups
    from .runtimes import Runtime
    from .searcher.evaluation import searched_groups
    from .searcher.latency import measure_table
    from .settings import load_study_file
    from .zoo import create_dataset, dataset_task

    study_file = load_study_file(args.study)
    settings = study_file.settings
    runtime = Runtime.of(settings, args.device)
    runtime.check()  # a missing CUDA device or runtime package is an error before any work
    output = Path(args.output)
    if not output.parent.is_dir():
        raise AutopruneError(f"cannot write {str(output)!r}: folder {str(output.parent)!r} does not exist")
    data = create_dataset(study_file.dataset, **study_file.dataset_params)
    model = build_model(study_file, data).eval()  # latency does not depend on the weights
    task = dataset_task(data)
    example, timing = task.example(data.val[0][0]), task.repeated(data.val[0][0], settings.latency_batch_size)
    groups = searched_groups(prunable_groups(model, example), settings.prune_only)  # the groups the study searches
    table = measure_table(model, example, timing, groups, settings.rate_max, runtime, *settings.channel_rounding)
    table.write(output)
    print(
        f"timed {len(groups)} group{'' if len(groups) == 1 else 's'} at rates {', '.join(f'{r:.2f}' for r in table.rates)} in {runtime.describe()}, "
        f"batch {table.batch_size}: the baseline takes {table.base_ms:.3f} ms; wrote {output} "
        f"(give it as study.latency_table)"
    )
    return 0


def _cmd_sensitivity(args: argparse.Namespace) -> int:
    from .results import write_sensitivity
    from .searcher import ensure_sensitivity, open_search

    prepared = _prepare(args)
    study_file = prepared.study_file
    record, evaluator = open_search(prepared.model, prepared.data, study_file.settings, **prepared.search_args)
    rows = ensure_sensitivity(record, evaluator)
    table, figure = write_sensitivity(record, study_file.out_dir)
    budget = record.max_accuracy_drop
    print(
        f"sensitivity of {len(record.groups)} groups ({len(rows)} plans, each group pruned alone), "
        f"baseline accuracy {record.baseline['accuracy']:.2f} %"
    )
    print(f"  {'group':<28} {'largest rate within ' + str(budget) + ' points':>30} {'searched up to':>15}")
    for group, limit in record.rate_limits.items():
        within = [r["rate"] for r in rows if r["group"] == group and "failed" not in r and r["accuracy_drop"] <= budget]
        print(f"  {group:<28} {max(within, default=0.0):>30.2f} {limit:>15.2f}")
    print(f"saved {table} and {figure}")
    return 0


def _summarize(run) -> int:
    """Print what a study run found and the files it wrote (:class:`autoprune.workflow.StudyRun`)."""
    from .results.rungs import rung_summary
    from .results.units import factor, human, score

    result, storage, seconds, trained = run.result, run.prepared.storage, run.seconds, run.prepared.trained
    record = result.record
    done, feasible, failed = record.completed(), record.feasible(), result.failed_trials
    print(
        f"study {record.name!r} in {storage}: {len(done)} trials, {len(feasible)} feasible"
        f"{f', {len(failed)} failed' if failed else ''} ({seconds:.0f}s{', baseline trained' if trained else ''})"
    )
    baseline = record.baseline
    print(f"  {'baseline ' + record.score_name:<19} {score(record.score_name, baseline['accuracy'])}")
    report = run.report
    best = result.best_trial
    max_drop = record.max_accuracy_drop
    if best is None:
        if failed and not done:
            print(f"  every trial failed; the last one: {record.fail_reason(failed[-1]) or 'no reason recorded'}")
        elif len(record.constraint_names) == 1:
            print(
                f"  no trial stayed within the {max_drop} point budget; "
                "allow a larger drop, more trials or a lower search.rate_max"
            )
        else:  # say which bounds no trial met, and how close each came
            closest = {
                name: min((t.constraints.get(name, math.inf) for t in done), default=math.inf)
                for name in record.constraint_names
            }
            unmet = [name for name, over in closest.items() if over > 0]
            shown = {"accuracy_drop": f"{record.score_name}_drop"}  # the budget, named by the task's score
            print(
                "  no trial met every constraint at once; "
                + (
                    "never met: "
                    + ", ".join(f"{shown.get(name, name)} (closest {closest[name]:.4g} over)" for name in unmet)
                    if unmet
                    else "each was met by some trial, none by one trial"
                )
                + "; loosen them or allow more trials"
            )
        print(f"  report              {report}")
        return 1
    metrics = record.metrics(best)
    print(f"  best trial          #{best.number}")
    print(
        f"  {record.score_name:<19} {score(record.score_name, metrics['accuracy'])} (drop {metrics['accuracy_drop']:.2f} "
        f"<= {max_drop}{' after fine-tuning' if record.settings.budget == 'finetuned' else ''})"
    )
    bounds, rows = record.settings.bounds, []
    for key in ("flops", "params", "latency"):
        if key in baseline and key in metrics and math.isfinite(metrics[key]):
            before, after = baseline[key], metrics[key]
            limit = f"; limit {bounds[key]:g}" if key in bounds else ""
            print(f"  {key:<19} {human(before, key)} -> {human(after, key)} ({factor(before, after, key)}{limit})")
            rows.append(key)
    for line in _constraint_lines(record, metrics, leave_out=rows):
        print(line)
    compared = record.comparison(best)
    if compared:
        name = {"uniform": "one uniform rate", "global": "global pruning"}[compared["baseline"]]
        others = f"(uniform {compared['uniform_reduction']:.2f}x, global {compared['global_reduction']:.2f}x)"
        if compared["ratio"] <= 1 + 1e-9:
            rate = record.references[compared["baseline"]].get("rate")
            print(
                f"  vs the baselines    no per-layer plan beat {name}; best.pt is {name} at rate "
                f"{rate:.3g}, {compared['reduction']:.2f}x fewer {compared['measure']} {others}"
            )
        else:
            print(
                f"  vs the baselines    {compared['reduction']:.2f}x fewer {compared['measure']} vs "
                f"{compared['baseline_reduction']:.2f}x for {name}: {compared['ratio']:.2f}x more {others}"
            )
    summary = rung_summary(record)
    if summary is not None:
        stopped = sum(summary["stopped"].values())
        print(
            f"  fine-tuning         {len(summary['finished'])} plans fine-tuned to the end, {stopped} stopped at a rung; "
            f"{summary['trial_epochs']:.1f} epochs in the trials, {summary['reference_epochs']:.1f} in the baselines"
        )
    print(f"  saved               {run.best_model_file} (plan: {run.best_plan_file})")
    print(f"  report              {report}")
    return 0


def _constraint_lines(record, metrics: dict[str, float], leave_out: Sequence[str] = ()) -> list[str]:
    """One summary line per ``[constraints]`` bound (but those in ``leave_out``, shown already): the chosen
    trial's value with the metric's unit (as its plugin registered it), the bound and the baseline's value:
    ``weight_kib  150.2 KiB (limit 200; baseline 367.9 KiB)``."""
    from .results.units import UNITS, human
    from .zoo import get_metric

    lines = []
    for name, bound in record.settings.bounds.items():
        if name in leave_out:
            continue
        try:
            unit = get_metric(name).options.get("unit", "")
        except AutopruneError:  # a plugin's metric that is not installed here
            unit = ""

        def shown(value, name=name, unit=unit) -> str:
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                return "-"
            return human(value, name) if name in UNITS else f"{value:.4g}{' ' + unit if unit else ''}"

        lines.append(
            f"  {name:<19} {shown(metrics.get(name))} (limit {bound:g}; baseline {shown(record.baseline.get(name))})"
        )
    return lines


def _infeasibility(record, trial) -> str:
    """Why a completed trial is not feasible: each bound it is over, or the constraints it did not record."""
    constraints = trial.constraints
    unrecorded = [name for name in record.constraint_names if name not in constraints]
    reasons = [f"no value recorded for {', '.join(unrecorded)}"] if unrecorded else []
    metrics = record.metrics(trial)
    for name in record.constraint_names:
        if constraints.get(name, 0) <= 0:
            continue
        if name == "accuracy_drop":
            drop = record.value(trial, "accuracy_drop")
            reasons.append(f"{record.score_name}_drop {drop:.2f} > {record.max_accuracy_drop} (the budget)")
        else:
            bound, value = record.settings.bounds.get(name, math.nan), metrics.get(name, math.nan)
            beyond = "<" if value < bound else ">"  # a metric to maximize is under its bound
            reasons.append(f"{name} {value:.4g} {beyond} {bound:g} (its bound)")
    return "; ".join(reasons) or "it is not among the study's feasible trials"


def _cmd_report(args: argparse.Namespace) -> int:
    from .results import Study

    print(Study.load(args.out_dir, storage=args.storage, name=args.study).report())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .results import Study
    from .results.export import output_format
    from .results.units import factor, human

    if args.finetune_epochs < 0:
        raise AutopruneError(
            f"--finetune-epochs must be an integer >= 0 (0: no fine-tuning), got {args.finetune_epochs}"
        )
    if not args.lr > 0:
        raise AutopruneError(f"--lr must be a number > 0, got {args.lr}")
    if args.distill and not args.finetune_epochs:
        raise AutopruneError("--distill distils while fine-tuning; give --finetune-epochs N too (N >= 1)")
    if args.finetune_mode not in FINETUNE_MODES:
        raise AutopruneError(f"--finetune-mode must be one of {', '.join(FINETUNE_MODES)}, got {args.finetune_mode!r}")
    if args.finetune_mode != "hard" and not args.finetune_epochs:
        raise AutopruneError(
            f"--finetune-mode {args.finetune_mode} prunes while fine-tuning; give --finetune-epochs N too (N >= 1)"
        )
    fmt = output_format(args.output, args.format)  # the suffix's format when --format is not given
    study = Study.load(args.out_dir, storage=args.storage, name=args.study)
    trial = study.record.trial(args.trial)
    if not study.record.is_feasible(trial):
        print(
            f"autoprune: trial {trial.number} is not feasible: {_infeasibility(study.record, trial)}", file=sys.stderr
        )
    if args.finetune_epochs:
        how = {"hard": "", "soft": " (soft: the baseline, its pruned channels zeroed)", "gradual": " (gradual)"}
        print(
            f"fine-tuning for {args.finetune_epochs} epochs{how[args.finetune_mode]}"
            f"{' with distillation from the baseline' if args.distill else ''}",
            file=sys.stderr,
        )
    result = study.export(
        args.output,
        trial.number,
        format=fmt,
        finetune_epochs=args.finetune_epochs,
        distill=args.distill,
        lr=args.lr,
        finetune_mode=args.finetune_mode,
    )
    before, after = result["baseline"], result["pruned"]
    kept = " (its fine-tuned weights, kept by the study's fine-tuned budget)" if result.get("finetuned") else ""
    print(f"trial #{result['trial']} of study {study.record.name!r}{kept}")
    print(f"  {'':<14} {'baseline':>15} {'pruned':>15}")
    for key in after:
        b, a = before[key], after[key]
        shown = (
            (lambda v: f"{v:.2f}")
            if key.startswith(("val_", "test_")) or key == "latency_ms"
            else (lambda v, key=key: human(v, key))
        )
        measure = "latency" if key == "latency_ms" else key
        ratio = f"  ({factor(b, a, measure)})" if measure in ("flops", "params", "latency") else ""
        label = f"latency_ms@{result['latency_batch_size']}" if key == "latency_ms" else key
        print(f"  {label:<14} {shown(b):>15} {shown(a):>15}{ratio}")
    print(f"  latency timed in {result['latency_runtime']}")
    print(f"saved {args.output} ({fmt}; outputs match PyTorch within {result['max_difference']:.1e} on real inputs)")
    return 0


def _cmd_dashboard(args: argparse.Namespace) -> int:
    from .dashboard import dashboard_server, is_loopback, serve

    if not 0 <= args.port <= 65535:
        raise AutopruneError(f"--port must be a port number from 0 (any free one) to 65535, got {args.port}")
    server = dashboard_server(args.out_dir, args.storage, args.host, args.port)
    if not is_loopback(args.host):
        print(
            f"autoprune: serving on {args.host}: anyone who can reach this machine can read the study and "
            "change its notes",
            file=sys.stderr,
        )
    serve(server, lambda line: print(line, flush=True))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Search per-layer structural pruning rates and importance criteria under an accuracy-drop budget.",
    )
    parser.add_argument("--version", action="version", version=f"autoprune {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks of errors")
    parser.add_argument(
        "--plugin",
        action="append",
        default=[],
        metavar="MODULE",
        help="import MODULE (a dotted path) and register it as a plugin; repeatable",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    # the options several commands share, declared once
    study_file = argparse.ArgumentParser(add_help=False)  # commands that run a study file
    study_file.add_argument("study", help="the study file (TOML)")
    study_file.add_argument("--storage", help="an Optuna storage URL (default: sqlite in the output folder)")
    study_file.add_argument("--out", help="output folder (default: study.out or runs/<study name>)")
    study_file.add_argument("--seed", type=int, help="the study's seed (sampler, calibration batches, baseline)")
    study_file.add_argument(
        "--device",
        help="where to train and score: auto (CUDA when present), cpu, cuda or cuda:N (default: study.device)",
    )
    study_file.add_argument("--force", action="store_true", help="take over an output folder that holds another study")
    folder = argparse.ArgumentParser(add_help=False)  # commands that read a search's output folder
    folder.add_argument("out_dir", help="the search's output folder")
    folder.add_argument("--storage", help="an Optuna storage URL (default: OUT_DIR/study.db)")
    named = argparse.ArgumentParser(add_help=False)
    named.add_argument("--study", help="the study's name (default: the only study in the storage)")

    p = sub.add_parser("plugins", help="list registered importances, models and datasets with their source")
    p.add_argument("pattern", nargs="?", help="only names matching this shell-style pattern")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser(
        "search", parents=[study_file], help="search per-group pruning rates and importances for a study file"
    )
    p.add_argument("--trials", type=int, help="total number of trials (overrides study.trials)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="run N worker processes on this machine, one per GPU (round robin) or sharing the CPU cores",
    )
    p.add_argument("--gpus", metavar="LIST", help="one worker per listed GPU, pinned to it (e.g. 0,1,2,3)")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser(
        "sensitivity",
        parents=[study_file],
        help="prune each group alone at each rate; write a CSV and a plot (cached in the study)",
    )
    p.set_defaults(func=_cmd_sensitivity)

    p = sub.add_parser(
        "latency-table",
        help="time the study's model on this machine, each group alone at a few "
        "rates, for study.latency_table (run it on the target device)",
    )
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument("-o", "--output", required=True, help="the JSON file to write")
    p.add_argument("--device", choices=("cpu", "cuda"), help="time on this device (default: study.latency_device)")
    p.set_defaults(func=_cmd_latency_table)

    p = sub.add_parser(
        "report",
        parents=[folder, named],
        help="write the report of a search (also while it runs) into OUT_DIR/report",
    )
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser(
        "dashboard",
        parents=[folder],
        help="serve a search's study in optuna-dashboard (pip install "
        "'autoprune[dashboard]'), on this machine only unless --host says otherwise",
    )
    p.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: any free one)")
    p.add_argument("--host", default="127.0.0.1", help="the address to listen on (default 127.0.0.1, loopback)")
    p.set_defaults(func=_cmd_dashboard)

    p = sub.add_parser(
        "export",
        parents=[folder, named],
        help="rebuild a trial's pruned model, optionally fine-tune it, and save it",
    )
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--trial", type=int, help="trial number (default: the best feasible trial)")
    p.add_argument(
        "--format",
        choices=("torch", "torchscript", "onnx"),
        help="default: the one the output's suffix names (.onnx: onnx, .ts or .torchscript: torchscript, else torch)",
    )
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune for this many epochs first")
    p.add_argument("--distill", action="store_true", help="fine-tune with distillation from the baseline")
    p.add_argument(
        "--finetune-mode",
        default="hard",
        metavar="MODE",
        help="hard: fine-tune the pruned model; soft: fine-tune the baseline with the plan's channels zeroed but "
        "recoverable, then cut them; gradual: raise the rates from 0 while fine-tuning (default hard)",
    )
    p.add_argument("--lr", type=float, default=FINETUNE.lr, help=f"fine-tuning learning rate (default {FINETUNE.lr})")
    p.set_defaults(func=_cmd_export)
    return parser


class _OneLineToStderr(logging.Handler):
    """autoprune's warnings (a failed trial, say) as one line each on the current stderr; written through
    tqdm, which lifts a progress bar off its line first and draws it again below, so no line joins the bar."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        tqdm.write(f"autoprune: {record.getMessage()}", file=sys.stderr)


@contextlib.contextmanager
def one_line_logging() -> Iterator[None]:
    """autoprune's log records as one line each on stderr (``autoprune: ...``) while the block runs: the command
    line's, and a worker process's (:mod:`autoprune.workers`)."""
    logger = logging.getLogger("autoprune")
    handler, propagate = _OneLineToStderr(logging.INFO), logger.propagate
    logger.addHandler(handler)
    logger.propagate = False
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.propagate = propagate


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        with one_line_logging():
            for module in args.plugin:
                plugins.load_plugin_module(module)
            status = args.func(args)
            sys.stdout.flush()  # a closed pipe shows here, not at exit
            return status
    except BrokenPipeError:
        return _stdout_closed()
    except AutopruneError as exc:
        if args.debug:
            raise
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


#: The exit status of a command whose output was closed early (``autoprune plugins | head -1``):
#: 128 + SIGPIPE, what a shell reports for a process killed by the signal.
CLOSED_OUTPUT = 141


def _stdout_closed() -> int:
    """The reader of stdout went away (``| head``): stop quietly, as the Python documentation's recipe for
    SIGPIPE does, pointing stdout at devnull so the flush at exit does not raise again."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError, io.UnsupportedOperation):  # a stdout that is no file
        pass
    return CLOSED_OUTPUT


if __name__ == "__main__":
    sys.exit(main())
