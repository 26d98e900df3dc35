"""The GPU check (`make gpu-check`): autoprune's studies run on CUDA as a user runs them, checked against the CPU.

On a machine with a CUDA device it runs, each in a fresh output folder:

- the quickstart (`studies/quickstart.toml`) on ``cuda`` in float32, then with ``amp = "bf16"``;
- the driving detection study (`studies/driving-detection.toml`) on ``cuda`` with ``amp = "bf16"``;
- with two GPUs or more, the quickstart as a 2-worker search pinned to two GPUs (``--gpus 0,1``), checked
  for exactly the asked number of COMPLETE trials, none RUNNING, no plan scored twice;
- the latency table of the quickstart's model, timed on the GPU.

Every fully evaluated trial of the float32 quickstart is scored again on the CPU (same baseline, same
plan, same batches): the two must agree within 0.1 points, or the check fails. The AMP runs print
their largest difference from the CPU's float32 scores (half precision may flip an image or two). It
prints each run's wall time and exits 1 when a check fails. On a machine without CUDA it prints one
line and exits 0.

    python benchmarks/gpu_check.py [--trials N]
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

QUICKSTART = "studies/quickstart.toml"
DETECTION = "studies/driving-detection.toml"
#: How far a trial's accuracy on CUDA may be from the same plan's on the CPU (points).
TOLERANCE = 0.1


@dataclasses.dataclass
class Outcome:
    name: str
    seconds: float
    ok: bool
    detail: str


def run_on_cuda(path: str, out: Path, trials: int, amp: str) -> Any:
    """``autoprune.run_study`` of the study file at ``path`` on ``cuda`` with ``amp``, in ``out``."""
    import autoprune
    from autoprune.settings import load_study_file

    study_file = load_study_file(path)
    study_file = study_file.replace(settings=study_file.settings.replace(amp=amp), out=str(out))
    return autoprune.run_study(study_file, trials=trials, device="cuda", log=lambda message: None)


def cpu_differences(out: Path) -> list[float]:
    """For each trial of the study in ``out`` that scored the whole validation split, its accuracy minus the
    same plan's accuracy re-scored on the CPU in float32 (the study's baseline and batches)."""
    import autoprune
    from autoprune.searcher import Evaluator

    study = autoprune.Study.load(out)
    record = study.record
    rebuilt = study.rebuild()  # the baseline and data, on the CPU
    settings = record.settings.replace(amp="off", device="cpu")
    evaluator = Evaluator.build(rebuilt.baseline, rebuilt.data, settings)
    differences = []
    for trial in record.completed():
        if record.value(trial, "evaluated", 0) < evaluator.budget.total:
            continue  # stopped early: its accuracy is an estimate
        scored = evaluator.evaluate(record.plan(trial), early_stop="off")
        differences.append(record.value(trial, "accuracy") - scored["accuracy"])
    return differences


def check_quickstart(tmp: Path, trials: int, amp: str) -> Outcome:
    started = time.perf_counter()
    run = run_on_cuda(QUICKSTART, tmp / f"quickstart-{amp}", trials, amp)
    seconds = time.perf_counter() - started
    device = run.result.record.run.get("trial_device", "?")
    differences = cpu_differences(tmp / f"quickstart-{amp}")
    worst = max((abs(d) for d in differences), default=0.0)
    ok = device.startswith("cuda") and bool(differences) and (amp != "off" or worst <= TOLERANCE)
    detail = (
        f"trials on {device}; {len(differences)} fully scored trials re-scored on the CPU, largest difference "
        f"{worst:.2f} points{' (must be <= 0.1)' if amp == 'off' else ' (half precision against float32)'}"
    )
    return Outcome(f"quickstart on CUDA, amp {amp}", seconds, ok, detail)


def check_detection(tmp: Path, trials: int) -> Outcome:
    started = time.perf_counter()
    run = run_on_cuda(DETECTION, tmp / "detection", trials, "bf16")
    seconds = time.perf_counter() - started
    record = run.result.record
    device = record.run.get("trial_device", "?")
    complete = len(record.completed())
    ok = device.startswith("cuda") and complete == trials
    return Outcome("driving detection on CUDA, amp bf16", seconds, ok, f"{complete} trials on {device}")


def check_two_workers(tmp: Path, trials: int) -> Outcome:
    import optuna

    import autoprune

    out = tmp / "two-gpus"
    quiet = ["--out", str(out), "--quiet"]
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-m", "autoprune", "search", QUICKSTART, "--gpus", "0,1", "--trials", str(trials), *quiet],
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
        return Outcome("quickstart, 2 workers on 2 GPUs", seconds, False, f"exit {done.returncode}: {tail}")
    record = autoprune.Study.load(out).record
    states = [t.state for t in record.trials()]
    complete = record.trials((optuna.trial.TrialState.COMPLETE,))
    running = states.count(optuna.trial.TrialState.RUNNING)
    plans = {tuple(sorted(t.params.items())) for t in complete}
    ok = len(complete) == trials and running == 0 and len(plans) == len(complete)
    detail = f"{len(complete)} COMPLETE, {running} RUNNING, {len(complete) - len(plans)} plans scored twice"
    return Outcome("quickstart, 2 workers on 2 GPUs", seconds, ok, detail)


def check_latency_table(tmp: Path, device: str = "cuda") -> list[Outcome]:
    """A latency table of the quickstart's model (untrained: timing does not need weights), timed on ``device``
    in every runtime this machine has for it (PyTorch; ONNX Runtime with the provider for ``device``; TensorRT
    on CUDA, OpenVINO on the CPU, where installed): one outcome each, a runtime not installed said so."""
    import autoprune
    from autoprune.baseline import build_model
    from autoprune.engine import prunable_groups
    from autoprune.runtimes import BACKENDS, DEVICES, Runtime
    from autoprune.searcher.latency import measure_table
    from autoprune.settings import load_study_file
    from autoprune.zoo import dataset_task

    study_file = load_study_file(QUICKSTART)
    data = autoprune.create_dataset(study_file.dataset, **study_file.dataset_params)
    model = build_model(study_file, data).eval().to(device)
    task = dataset_task(data)
    example = task.example(data.val[0][0]).to(device)
    groups = prunable_groups(model, example)
    outcomes = []
    for backend in (b for b in BACKENDS if device in DEVICES[b]):
        runtime = Runtime(backend, device)
        name = f"latency table, {runtime.provider}"
        try:
            runtime.check()
        except autoprune.AutopruneError as missing:
            print(f"skip {name}: {missing}")
            continue
        started = time.perf_counter()
        table = measure_table(model, example, example, groups, 0.5, runtime, *study_file.settings.channel_rounding)
        detail = f"{len(groups)} groups; baseline {table.base_ms:.3f} ms, uniform 0.5 {table.uniform_ms[-1]:.3f} ms"
        outcomes.append(Outcome(name, time.perf_counter() - started, table.base_ms > 0, detail))
    return outcomes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=30, help="trials of each quickstart run (default 30)")
    parser.add_argument("--detection-trials", type=int, default=8, help="trials of the detection run (default 8)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("gpu-check: no CUDA device on this machine; nothing to check")
        return 0
    count = torch.cuda.device_count()
    print(f"gpu-check: {count} CUDA device(s), {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    outcomes: list[Outcome] = []
    with tempfile.TemporaryDirectory(prefix="autoprune-gpu-check-") as folder:
        tmp = Path(folder)
        steps = [
            ("quickstart, float32", lambda: [check_quickstart(tmp, args.trials, "off")]),
            ("quickstart, bf16", lambda: [check_quickstart(tmp, args.trials, "bf16")]),
            ("driving detection", lambda: [check_detection(tmp, args.detection_trials)]),
            ("two workers", lambda: [check_two_workers(tmp, args.trials)] if count >= 2 else []),
            ("latency tables", lambda: check_latency_table(tmp)),
        ]
        for name, step in steps:
            for outcome in _guarded(name, step):
                outcomes.append(outcome)
                print(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.name}: {outcome.detail} ({outcome.seconds:.0f} s)")
    failed = [o.name for o in outcomes if not o.ok]
    print(f"gpu-check: {len(outcomes) - len(failed)} of {len(outcomes)} checks passed")
    return 1 if failed else 0


def _guarded(name: str, step) -> list[Outcome]:
    started = time.perf_counter()
    try:
        return step()
    except Exception as error:  # noqa: BLE001 (one failing run does not hide the others)
        return [Outcome(name, time.perf_counter() - started, False, f"{type(error).__name__}: {error}")]


if __name__ == "__main__":
    sys.exit(main())
