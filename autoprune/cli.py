"""The ``autoprune`` command line: a thin layer over the Python API.

A user error (:class:`autoprune.AutopruneError`) prints one line on stderr and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
import time
from collections.abc import Sequence

from . import plugins
from .errors import AutopruneError

KINDS = ("importance", "model", "dataset")


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
            print(f"{'' if kind == entries[0].kind else chr(10)}{kind}s:")
        extra = " [needs grads]" if e.options.get("needs_grads") else ""
        desc = textwrap.shorten(e.description, 70, placeholder="...") if e.description else ""
        print(f"  {e.name:<{width}}  {desc}{extra}  <- {e.source}")
    return 0


def _human(n: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(n) >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n:.0f}"


def _cmd_search(args: argparse.Namespace) -> int:
    import dataclasses
    import json

    from .baseline import build_model, load_or_train
    from .export import save_model
    from .report import write_report
    from .config import load_config, validate
    from .search import is_feasible, search
    from .zoo import create_dataset

    config = load_config(args.study)
    overrides = {k: v for k, v in {"trials": args.trials, "timeout": args.timeout, "storage": args.storage,
                                   "out": args.out, "seed": args.seed}.items() if v is not None}
    config = dataclasses.replace(config, **overrides)
    validate(config)
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()

    data = create_dataset(config.dataset, **config.dataset_params)
    model = build_model(config, data)
    model, weights, trained = load_or_train(config, model, data, log=lambda m: print(m, file=sys.stderr))
    storage = config.storage or f"sqlite:///{(out / 'study.db').resolve()}"
    s = config.search
    result = search(
        model, data, max_accuracy_drop=config.max_accuracy_drop, trials=config.trials,
        importances=s.importances, objective=config.objective, storage=storage, study_name=config.name,
        seed=config.seed, timeout=config.timeout, rate_min=s.rate_min, rate_max=s.rate_max,
        rate_step=s.rate_step, calibration_batches=s.calibration_batches, batch_size=s.batch_size,
        uniform_starts=s.uniform_starts, latency_batch_size=config.latency_batch_size, progress=not args.quiet,
        study_attrs={"study_file": config.path, "model": config.model, "model_params": config.model_params,
                     "dataset": config.dataset, "dataset_params": config.dataset_params,
                     "baseline_weights": str(weights)},
    )
    study = result.study
    attrs = study.user_attrs
    done = [t for t in study.trials if t.state.name == "COMPLETE"]
    feasible = [t for t in done if is_feasible(t)]
    print(f"study {study.study_name!r} in {storage}: {len(done)} trials, {len(feasible)} feasible "
          f"({time.perf_counter() - started:.0f}s{', baseline trained' if trained else ''})")
    print(f"  baseline accuracy   {attrs['baseline_accuracy']:.2f} %")
    report = write_report(study, out / "report")
    best = result.best_trial
    if best is None:
        print(f"  no trial stayed within the {config.max_accuracy_drop} point budget; "
              "allow a larger drop, more trials or a lower search.rate_max")
        print(f"  report              {report}")
        return 1
    u = best.user_attrs
    print(f"  best trial          #{best.number}")
    print(f"  accuracy            {u['accuracy']:.2f} % (drop {u['accuracy_drop']:.2f} <= {config.max_accuracy_drop})")
    for key in ("flops", "params"):
        before, after = attrs[f"baseline_{key}"], u[key]
        print(f"  {key:<19} {_human(before)} -> {_human(after)} ({before / after:.2f}x fewer)")
    save_model(result.best_model, out / "best.pt",
               metadata={"study": study.study_name, "trial": best.number, **result.best_plan})
    plan_path = out / "best_plan.json"
    plan_path.write_text(json.dumps({"trial": best.number, **result.best_plan}, indent=2) + "\n")
    print(f"  saved               {out / 'best.pt'} (plan: {plan_path})")
    print(f"  report              {report}")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    from .study import Study

    print(Study.load(args.out_dir, storage=args.storage, name=args.study).report())
    return 0


def _cmd_export(args: argparse.Namespace) -> int:
    from .study import Study

    study = Study.load(args.out_dir, storage=args.storage, name=args.study)
    if args.finetune_epochs:
        print(f"fine-tuning for {args.finetune_epochs} epochs"
              f"{' with distillation from the baseline' if args.distill else ''}", file=sys.stderr)
    result = study.export(args.output, args.trial, format=args.format, finetune_epochs=args.finetune_epochs,
                          distill=args.distill, lr=args.lr)
    before, after = result["baseline"], result["pruned"]
    print(f"trial #{result['trial']} of study {study.optuna.study_name!r}")
    print(f"  {'':<14} {'baseline':>12} {'pruned':>12}")
    for key in after:
        b, a = before[key], after[key]
        shown = (lambda v: f"{v:.2f}") if "accuracy" in key or key == "latency_ms" else _human
        ratio = f"  ({b / a:.2f}x)" if key in ("flops", "params", "latency_ms") and a else ""
        print(f"  {key:<14} {shown(b):>12} {shown(a):>12}{ratio}")
    print(f"saved {args.output} ({args.format}; outputs match PyTorch within "
          f"{result['max_difference']:.1e} on real inputs)")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(
        prog="autoprune",
        description="Search per-layer structural pruning rates and importance criteria "
        "under an accuracy-drop budget.",
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
    p = sub.add_parser("plugins", help="list registered importances, models and datasets with their source")
    p.add_argument("pattern", nargs="?", help="only names matching this shell-style pattern")
    p.add_argument("--kind", choices=KINDS, help="only this kind")
    p.set_defaults(func=_cmd_plugins)

    p = sub.add_parser("search", help="search per-group pruning rates and importances for a study file")
    p.add_argument("study", help="the study file (TOML)")
    p.add_argument("--trials", type=int, help="total number of trials (overrides study.trials)")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--storage", help="an Optuna storage URL (default: sqlite in the output folder)")
    p.add_argument("--out", help="output folder (default: study.out or runs/<study name>)")
    p.add_argument("--seed", type=int, help="seed of the sampler and the baseline training")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_search)

    p = sub.add_parser("report", help="write the report of a search (also while it runs) into OUT_DIR/report")
    p.add_argument("out_dir", help="the search's output folder")
    p.add_argument("--storage", help="an Optuna storage URL (default: OUT_DIR/study.db)")
    p.add_argument("--study", help="the study's name (default: the only study in the storage)")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("export", help="rebuild a trial's pruned model, optionally fine-tune it, and save it")
    p.add_argument("out_dir", help="the search's output folder")
    p.add_argument("-o", "--output", required=True, help="the file to write")
    p.add_argument("--trial", type=int, help="trial number (default: the best feasible trial)")
    p.add_argument("--format", choices=("torch", "torchscript", "onnx"), default="torch")
    p.add_argument("--finetune-epochs", type=int, default=0, help="fine-tune for this many epochs first")
    p.add_argument("--distill", action="store_true", help="fine-tune with distillation from the baseline")
    p.add_argument("--lr", type=float, default=0.01, help="fine-tuning learning rate")
    p.add_argument("--storage", help="an Optuna storage URL (default: OUT_DIR/study.db)")
    p.add_argument("--study", help="the study's name (default: the only study in the storage)")
    p.set_defaults(func=_cmd_export)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        for module in args.plugin:
            plugins.load_plugin_module(module)
        return args.func(args)
    except AutopruneError as exc:
        if args.debug:
            raise
        print(f"autoprune: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("autoprune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
