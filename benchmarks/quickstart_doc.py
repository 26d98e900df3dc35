"""Run the quickstart as `make demo` does and write what it printed into docs/quickstart.md.

The sample output in docs/quickstart.md is this command's, never typed by hand: it runs
``autoprune search studies/quickstart.toml`` in a fresh output folder, keeps the summary
it prints (with the folder shown as ``runs/quickstart``) and the wall time, and writes
them with the machine, versions and commit they came from. Other machines and versions
print other figures for the same seed (floating-point sums differ between CPUs and
libraries), so the document claims them for that machine only.

    python benchmarks/quickstart_doc.py --doc docs/quickstart.md
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import measured_line, write_section

BEGIN = "<!-- quickstart output: written by `make quickstart-doc` -->"
END = "<!-- end of quickstart output -->"
STUDY = "studies/quickstart.toml"


def run_quickstart() -> tuple[str, float]:
    """What ``autoprune search`` printed on stdout for the quickstart in a fresh folder, and its wall time."""
    with tempfile.TemporaryDirectory(prefix="autoprune-quickstart-") as tmp:
        out = Path(tmp) / "quickstart"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "autoprune", "search", STUDY, "--out", str(out), "--quiet"],
            capture_output=True,
            text=True,
            check=False,
        )
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise SystemExit(f"the quickstart failed ({done.returncode}): {done.stderr.strip()}")
        printed = done.stdout.replace(f"sqlite:///{out.resolve()}", "sqlite:///.../runs/quickstart")
        return printed.replace(str(out.resolve()), "runs/quickstart").replace(str(out), "runs/quickstart"), seconds


def section(printed: str, seconds: float) -> str:
    return (
        f"{BEGIN}\n"
        f"`make demo` on the machine below took {seconds:.0f} s in all and printed:\n\n"
        f"```\n{printed.rstrip()}\n```\n\n"
        f"{measured_line()}\n"
        f"{END}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/quickstart.md", help="the document to write the output into")
    args = parser.parse_args(argv)
    printed, seconds = run_quickstart()
    write_section(args.doc, section(printed, seconds), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
