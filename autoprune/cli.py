"""The ``autoprune`` command line: a thin layer over the Python API.

A user error (:class:`autoprune.AutopruneError`) prints one line on stderr and
exits with status 2; ``--debug`` shows the traceback instead.
"""

from __future__ import annotations

import argparse
import sys
import textwrap
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
