"""How well a latency table predicts real timings: the error `objective = "latency"` searches with.

    python benchmarks/bench_latency.py [--doc docs/benchmarks.md] [--plans 12]

For each model (random weights), the table is measured as a study measures it
(:func:`autoprune.searcher.latency.measure_table`, on the CPU, batch 1), then
random plans (each group at its own rate in [0, 0.8], some groups left whole) are
pruned, timed (the fastest of the timed blocks) and set beside the table's
prediction. The section between the latency markers of the document is replaced;
the rest of the document is kept. Timings are only as quiet as the machine: run it
alone.
"""

from __future__ import annotations

import argparse
import copy
import math
import random
import statistics
import sys
import time

import torch
from common import measured_line, write_section

import autoprune
from autoprune.engine import group_sizes
from autoprune.plan import Plan
from autoprune.runtimes import Runtime
from autoprune.searcher.latency import measure_table, time_model

#: (registered model, input shape): a residual network and an inverted-residual one.
MODELS = (("torchvision/resnet18", (1, 3, 224, 224)), ("torchvision/mobilenet_v2", (1, 3, 224, 224)))
RATE_MAX = 0.8
BEGIN, END = "<!-- latency: written by benchmarks/bench_latency.py -->", "<!-- /latency -->"


def random_plan(groups: list[str], rng: random.Random) -> dict[str, float]:
    """Each group pruned at its own rate in [0, RATE_MAX], about a quarter of them left whole."""
    return {g: round(rng.uniform(0.0, RATE_MAX), 2) for g in groups if rng.random() > 0.25}


def measure(name: str, shape: tuple[int, ...], plans: int) -> dict:
    """The table of ``name`` and the predicted / timed ratio of ``plans`` random plans."""
    torch.manual_seed(0)
    model = autoprune.create_model(name, num_classes=1000).eval()
    x = torch.randn(*shape)
    groups = autoprune.prunable_groups(model, x)
    sizes = group_sizes(model, x)
    started = time.perf_counter()
    table = measure_table(model, x, x, groups, RATE_MAX, Runtime())
    table_seconds = time.perf_counter() - started
    rng = random.Random(0)
    ratios = []
    for _ in range(plans):
        rates = random_plan(groups, rng)
        pruned = autoprune.prune(copy.deepcopy(model), x, rates)
        predicted = table.predict(Plan(rates=rates).removed_fractions(sizes))
        timed = time_model(pruned, x, Runtime(), min_run_time=0.5)
        ratios.append(predicted / timed)
        print(f"{name}: predicted {predicted:.2f} ms, timed {timed:.2f} ms", file=sys.stderr)
    errors = [abs(math.log(r)) for r in ratios]
    return {
        "model": name,
        "groups": len(groups),
        "base_ms": table.base_ms,
        "table_seconds": table_seconds,
        "plans": plans,
        "median_error": math.exp(statistics.median(errors)) - 1,
        "worst_ratio": max(ratios, key=lambda r: abs(math.log(r))),
        "within_2x": sum(0.5 <= r <= 2 for r in ratios),
    }


def section(results: list[dict]) -> str:
    lines = [
        BEGIN,
        "## Latency table: predicted against timed",
        "",
        "Written by `make bench-latency` (`python benchmarks/bench_latency.py`): each model's table measured",
        "as a study measures it (every group alone, then all together, at 5 rates up to 0.8; CPU, batch 1,",
        "224x224), then random plans (each group at its own rate, about a quarter left whole) pruned, timed",
        "and set beside the prediction. The stated error of a prediction is a factor of 2.",
        "",
        "| model | groups | baseline | table measured in | plans | median error | worst predicted / timed | within 2x |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results:
        lines.append(
            f"| `{r['model']}` | {r['groups']} | {r['base_ms']:.1f} ms | {r['table_seconds']:.0f} s | {r['plans']} | "
            f"{100 * r['median_error']:.0f} % | {r['worst_ratio']:.2f} | {r['within_2x']} of {r['plans']} |"
        )
    lines += ["", measured_line(), "", END]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--plans", type=int, default=12, help="random plans timed per model")
    args = parser.parse_args(argv)
    results = [measure(name, shape, args.plans) for name, shape in MODELS]
    write_section(args.doc, section(results), BEGIN, END)
    return 0


if __name__ == "__main__":
    sys.exit(main())
