"""Fewer FLOPs against measured speed-up in the runtimes models ship with: PyTorch, ONNX Runtime, OpenVINO.

    python benchmarks/bench_runtimes.py [--doc docs/benchmarks.md] [--repeats 3] [--threads 1] [--batch-sizes 1 16]

A pruned model's FLOPs say how much less it computes; its user sees the speed-up of
the exported graph in the runtime it is deployed with, where kernels work on 8 or 16
channels at a time. For each case (the chosen plans of the benchmark study, ResNet-20
on Fashion-MNIST, read from ``benchmarks/results/bench-fashion-mnist``; torchvision's
mobilenet_v2 and resnet18 at one uniform rate), the plan's rates are pruned with
``round_to = 1`` and with the default ``round_to = "auto"``, and the baseline and the
pruned model are timed in each runtime (:func:`autoprune.runtimes.time_ms`, the CPU,
``--threads`` threads; each the fastest of ``--repeats`` timings, taken in turn with
the baseline's). The benchmark study's plans are timed at each of ``--batch-sizes``
(the study's latency batch of 1 first), torchvision's at batch 1. The table gives the
FLOPs reduction, each runtime's measured speed-up, and their ratio: 1.00 means every
FLOP removed is time saved. Weights are random: widths, not weights, decide the time. Run it alone.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import torch
from common import measured_line, write_section

import autoprune
from autoprune.metrics import count_flops
from autoprune.runtimes import DEVICES, Runtime, time_ms
from autoprune.settings import AUTO_ROUND_MIN, AUTO_ROUND_TO

RESULTS = Path(__file__).parent / "results" / "bench-fashion-mnist"
BACKENDS = tuple(b for b in ("torch", "onnxruntime", "openvino") if "cpu" in DEVICES[b])
BEGIN, END = "<!-- runtimes: written by benchmarks/bench_runtimes.py -->", "<!-- /runtimes -->"
#: round_to as a study gives it, and the (round_to, round_min) a plan gets from it.
ROUNDINGS = {"1": (1, 0), "auto": (AUTO_ROUND_TO, AUTO_ROUND_MIN)}
#: Seconds of calls in each timing (its fastest block counts).
MIN_RUN_TIME = 1.0


def cases() -> list[dict]:
    """Every (model, plan) timed: the benchmark study's chosen plans, then torchvision models at uniform rates."""
    found = []
    for path in sorted(RESULTS.glob("budget-*.json")):
        result = json.loads(path.read_text())
        found.append(
            {
                "model": "resnet20",
                "kwargs": {"num_classes": 10, "in_channels": 1},
                "shape": (1, 1, 28, 28),
                "batched": True,
                "plan": f"chosen plan at a {result['budget']} point budget",
                "rates": result["rows"]["autoprune"]["plan"]["rates"],
            }
        )
    for name, rate in (("torchvision/mobilenet_v2", 0.3), ("torchvision/resnet18", 0.5)):
        found.append(
            {
                "model": name,
                "kwargs": {"num_classes": 1000},
                "shape": (1, 3, 224, 224),
                "batched": False,
                "plan": f"uniform {rate}",
                "rates": rate,
            }
        )
    return found


def timed(models: dict, x: torch.Tensor, runtime: Runtime, repeats: int) -> dict[str, list[float]]:
    """Each model's ``repeats`` timings in ``runtime`` (ms), the models taken in turn."""
    times: dict = {key: [] for key in models}
    for _ in range(repeats):
        for key, model in models.items():
            times[key].append(time_ms(model, x, runtime, min_run_time=MIN_RUN_TIME))
    return times


def measure(model_cases: list[dict], threads: int, repeats: int, batch_sizes: tuple[int, ...] = (1,)) -> list[dict]:
    """The rows of one model's cases, one per plan, rounding and batch size: FLOPs reduction and, per runtime,
    the measured speed-up. The baseline and every pruned model are timed in turn, so that all of them share
    one baseline timing and a slow moment of the machine falls on all of them alike."""
    first = model_cases[0]
    torch.manual_seed(0)
    model = autoprune.create_model(first["model"], **first["kwargs"]).eval()
    example = torch.randn(*first["shape"])
    models = {"baseline": model}
    for k, case in enumerate(model_cases):
        for label, (round_to, round_min) in ROUNDINGS.items():
            models[k, label] = autoprune.prune(
                copy.deepcopy(model), example, case["rates"], round_to=round_to, round_min=round_min
            ).eval()
    flops = {key: count_flops(m, example) for key, m in models.items()}
    rows = []
    for batch in batch_sizes if first.get("batched", True) else (1,):
        x = torch.randn(batch, *first["shape"][1:])
        times = {backend: timed(models, x, Runtime(backend, "cpu", threads), repeats) for backend in BACKENDS}
        ms = {backend: {key: min(t) for key, t in by_key.items()} for backend, by_key in times.items()}
        spread = {backend: max(t["baseline"]) / min(t["baseline"]) for backend, t in times.items()}
        for k, case in enumerate(model_cases):
            for label in ROUNDINGS:
                row = {
                    "model": case["model"],
                    "plan": case["plan"],
                    "round_to": label,
                    "batch": batch,
                    "flops_speedup": flops["baseline"] / flops[k, label],
                    "base_ms": {b: ms[b]["baseline"] for b in BACKENDS},
                    "ms": {b: ms[b][k, label] for b in BACKENDS},
                    "base_spread": spread,
                }
                rows.append(row)
                speedups = ", ".join(f"{b} {row['base_ms'][b] / row['ms'][b]:.2f}x" for b in BACKENDS)
                print(
                    f"{case['model']} {case['plan']} round_to {label} batch {batch}: "
                    f"{row['flops_speedup']:.2f}x fewer FLOPs; {speedups}",
                    file=sys.stderr,
                )
    return rows


def section(rows: list[dict], threads: int, repeats: int) -> str:
    header = " | ".join(f"{b} speed-up (ratio)" for b in BACKENDS)
    batch_sizes = sorted({r["batch"] for r in rows})
    lines = [
        BEGIN,
        "## Latency per runtime: FLOPs reduction against measured speed-up",
        "",
        "Written by `make bench-runtimes` (`python benchmarks/bench_runtimes.py`): each plan pruned with",
        '`round_to = 1` and with the default `round_to = "auto"` (multiples of 8 in groups of 32 channels or',
        "more), the baseline and the pruned model exported to ONNX and timed in each runtime on the CPU,",
        f"{threads} thread{'s' * (threads != 1)}, the fastest of {repeats} timings taken in turn with the baseline's;",
        f"the benchmark model at batch {' and '.join(map(str, batch_sizes))}, torchvision's at batch 1.",
        "The ratio is the measured speed-up over the FLOPs reduction: 1.00 turns every FLOP removed into time",
        "saved; a speed-up below 1.00x is a pruned model slower than the baseline in that runtime.",
        "",
        f"| model | plan | round_to | batch | fewer FLOPs | {header} |",
        "| --- | --- | --- | --- | --- | " + " | ".join("---" for _ in BACKENDS) + " |",
    ]
    for r in rows:
        cells = " | ".join(
            f"{r['base_ms'][b] / r['ms'][b]:.2f}x ({r['base_ms'][b] / r['ms'][b] / r['flops_speedup']:.2f})"
            for b in BACKENDS
        )
        lines.append(
            f"| `{r['model']}` | {r['plan']} | {r['round_to']} | {r['batch']} | {r['flops_speedup']:.2f}x | {cells} |"
        )
    baselines = {(r["model"], r["batch"]): r for r in rows}
    lines += [
        "",
        "Baselines: "
        + "; ".join(
            f"`{model}` at batch {batch} "
            + ", ".join(
                f"{b} {r['base_ms'][b]:.3g} ms (slowest timing {r['base_spread'][b]:.2f}x that)" for b in BACKENDS
            )
            for (model, batch), r in baselines.items()
        )
        + ".",
        "",
        measured_line(),
        "",
        END,
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--doc", default="docs/benchmarks.md")
    parser.add_argument("--repeats", type=int, default=7, help="interleaved timings of each model (the fastest counts)")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads of every runtime (default 1)")
    parser.add_argument(
        "--batch-sizes",
        type=int,
        nargs="+",
        default=[1, 16],
        help="batch sizes the benchmark study's plans are timed at (default 1 16; torchvision's at 1)",
    )
    args = parser.parse_args(argv)
    for backend in BACKENDS:
        Runtime(backend).check()  # a runtime not installed is one line before any timing
    by_model: dict[str, list[dict]] = {}
    for case in cases():
        by_model.setdefault(case["model"], []).append(case)
    rows = [
        row
        for model_cases in by_model.values()
        for row in measure(model_cases, args.threads, args.repeats, tuple(args.batch_sizes))
    ]
    write_section(args.doc, section(rows, args.threads, args.repeats), BEGIN, END)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except autoprune.AutopruneError as error:
        print(f"bench_runtimes: error: {error}", file=sys.stderr)
        sys.exit(2)
