"""Several workers of one study on this machine: ``autoprune search STUDY --workers N`` or ``--gpus 0,1,2,3``.

The workers share the study through its storage, as workers on several machines do
(docs/multi_machine.md); this module starts and stops them:

1. One process trains the baseline (or reads it from the output folder's cache), records
   the study and measures what it learns before its trials (the sensitivity curves, the
   uniform and global baselines), so that N workers never do that N times.
2. N worker processes run the trials. With GPUs, each is pinned to its own GPU through
   ``CUDA_VISIBLE_DEVICES`` (it sees that GPU as ``cuda``); without them, each runs on the
   CPU with the cores split between them (``OMP_NUM_THREADS``). They stop together once
   the study holds its ``trials`` completed trials. Each worker's log goes to
   ``worker-K.log`` in the output folder; this process shows one progress bar for the study.
3. This process ends the search once: the finalists, the latency check, the report,
   ``best.pt`` and its plan, as ``autoprune search`` does.

Ctrl-C stops every worker (each fails its running trial, as one worker's Ctrl-C does),
then writes the outputs of the finished trials. A worker that dies does not stop the
others; the trial it left running is failed and run again by a live worker once its
heartbeat is stale (:mod:`autoprune.storage`).

``python -m autoprune.workers ROLE SPEC`` is a worker process's own entry point (ROLE:
``prepare`` or ``trials``; SPEC: the study file and overrides, as JSON).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import AutopruneError, SearchInterrupted

#: Seconds the workers get to stop after a Ctrl-C (they fail their running trial) before they are killed.
STOP_SECONDS = 60.0
#: How often the progress bar reads the study's trial count.
POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Worker:
    """One worker process to start: its number, the GPU it is pinned to (None: the CPU) and its CPU threads."""

    number: int
    gpu: int | None
    threads: int

    def environment(self, base: dict[str, str]) -> dict[str, str]:
        """``base`` with this worker's threads and GPU; GPU numbers count the GPUs ``base`` makes visible
        (with ``CUDA_VISIBLE_DEVICES=2,3``, GPU 0 is the machine's GPU 2)."""
        env = {**base, "OMP_NUM_THREADS": str(self.threads), "MKL_NUM_THREADS": str(self.threads)}
        visible = [v for v in base.get("CUDA_VISIBLE_DEVICES", "").split(",") if v.strip()]
        pinned = "" if self.gpu is None else (visible[self.gpu] if "CUDA_VISIBLE_DEVICES" in base else str(self.gpu))
        env["CUDA_VISIBLE_DEVICES"] = pinned
        return env

    @property
    def device(self) -> str:
        return "cpu" if self.gpu is None else "cuda"


def parse_gpus(text: str) -> list[int]:
    """``"0,1,3"`` as GPU numbers; anything else is a one-line error."""
    parts = [p.strip() for p in text.split(",")]
    if not all(p.isdigit() for p in parts):
        raise AutopruneError(f"--gpus takes GPU numbers separated by commas (e.g. 0,1,2,3), got {text!r}")
    gpus = [int(p) for p in parts]
    if len(set(gpus)) != len(gpus):
        raise AutopruneError(f"--gpus names a GPU twice: {text!r}; give each GPU once")
    return gpus


def plan_workers(
    workers: int | None, gpus: list[int] | None, device: str | None, gpu_count: int, cores: int
) -> list[Worker]:
    """The workers to start for ``--workers``/``--gpus`` on a machine with ``gpu_count`` GPUs and ``cores`` CPU
    cores, with ``device`` the study's device (``--device`` or ``study.device``)."""
    if workers is not None and workers < 1:
        raise AutopruneError(f"--workers must be at least 1, got {workers}")
    if device is not None and device.startswith("cuda:"):
        raise AutopruneError(f"device {device!r} with several workers: pin them to GPUs with --gpus instead")
    if gpus is not None:
        if device == "cpu":
            raise AutopruneError("--gpus with device 'cpu': give one or the other")
        if workers is not None and workers != len(gpus):
            raise AutopruneError(f"--workers {workers} but --gpus names {len(gpus)}: one worker runs per GPU")
        missing = [g for g in gpus if g >= gpu_count]
        if missing:
            have = "no CUDA device" if gpu_count == 0 else f"GPUs 0 to {gpu_count - 1}"
            raise AutopruneError(f"--gpus names GPU {missing[0]} but this machine has {have}")
        return [Worker(k, g, max(1, cores // len(gpus))) for k, g in enumerate(gpus)]
    count = workers or 1
    if device == "cuda" and gpu_count == 0:
        raise AutopruneError("device 'cuda' but torch sees no CUDA device on this machine; use 'cpu' or 'auto'")
    if gpu_count and device != "cpu":  # one GPU each, round robin when there are more workers than GPUs
        return [Worker(k, k % gpu_count, max(1, cores // count)) for k in range(count)]
    return [Worker(k, None, max(1, cores // count)) for k in range(count)]


def gpu_count() -> int:
    """The CUDA devices this machine has, counted in a child process so that this one initialises no CUDA
    (it pins itself to the first worker's GPU later)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES") == "":
        return 0
    done = subprocess.run(
        [sys.executable, "-c", "import torch; print(torch.cuda.device_count())"],
        capture_output=True,
        text=True,
        check=False,
    )
    return int(done.stdout.strip()) if done.returncode == 0 and done.stdout.strip().isdigit() else 0


def run_workers(
    study: str,
    overrides: dict[str, Any],
    workers: list[Worker],
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda message: print(message, file=sys.stderr),
    plugin_modules: tuple[str, ...] = (),
) -> Any:
    """Prepare the study once, run ``workers`` on it, and end it here: the :class:`~autoprune.workflow.StudyRun`
    of :func:`~autoprune.workflow.run_study` (raised in :class:`SearchInterrupted` after a Ctrl-C).

    ``plugin_modules``: modules every worker imports as plugins (``--plugin``); ``progress``: one bar of the
    study's trials, and the baseline's epoch lines."""
    from .workflow import run_study

    first, base = workers[0], dict(os.environ)
    os.environ["CUDA_VISIBLE_DEVICES"] = first.environment(base)["CUDA_VISIBLE_DEVICES"]  # before CUDA starts here
    spec = {
        "study": study,
        "overrides": {**overrides, "device": first.device},
        "plugins": list(plugin_modules),
        "epoch_lines": getattr(log, "epoch_lines", True),
    }
    out = _out_dir(study, overrides)
    started, interrupted = time.perf_counter(), False
    try:
        _prepare(spec, _all_cores(first.environment(base), base), log)
        log(
            f"started {len(workers)} workers ({_where(workers)}); their logs: {out / 'worker-K.log'}, K = 1 to {len(workers)}"
        )
        with _started(spec, workers, base, out) as processes:
            _wait(processes, _TrialCount(study, overrides) if progress else None, log)
    except KeyboardInterrupt:
        log(
            "autoprune: stopped the workers (each failed its running trial); writing the outputs of the finished trials"
        )
        interrupted = True
    # this process ends the search: whatever the workers left undone, the finalists and the outputs, once
    # (after a Ctrl-C, only the outputs of what is finished)
    run = run_study(study, log=log, phase="prepare" if interrupted else "all", **spec["overrides"])
    run.seconds = time.perf_counter() - started
    if interrupted:
        run.interrupted = True
        raise SearchInterrupted(run)
    return run


def _all_cores(environment: dict[str, str], base: dict[str, str]) -> dict[str, str]:
    """``environment`` with the threads of ``base``: the preparation (the baseline's training) runs alone, on
    every core, as a single search's does (so it trains the same baseline)."""
    pinned = dict(environment)
    for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        pinned.pop(name, None)
        if name in base:
            pinned[name] = base[name]
    return pinned


def _where(workers: list[Worker]) -> str:
    if workers[0].gpu is None:
        return f"on the CPU, {workers[0].threads} thread{'' if workers[0].threads == 1 else 's'} each"
    return "on GPU " + ", ".join(str(w.gpu) for w in workers)


def _out_dir(study: str, overrides: dict[str, Any]) -> Path:
    from .settings import load_study_file

    out = overrides.get("out")
    return Path(out) if out else load_study_file(study).out_dir


def _command(role: str, spec: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", "autoprune.workers", role, json.dumps(spec)]


def _prepare(spec: dict[str, Any], environment: dict[str, str], log: Callable[[str], None]) -> None:
    """The study's preparation, in a worker process whose lines (the baseline's training) are this command's;
    its one-line error is this command's error."""
    process = subprocess.Popen(
        _command("prepare", spec), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment
    )
    last = ""
    try:
        for line in process.stdout:
            last = line.rstrip("\n")
            if not last.startswith("autoprune: error: "):
                log(last)
        status = process.wait()
    except KeyboardInterrupt:
        _stop([process])
        raise
    if status != 0:
        raise AutopruneError(last.removeprefix("autoprune: error: ") or f"the study's preparation stopped ({status})")


@contextlib.contextmanager
def _started(
    spec: dict[str, Any], workers: list[Worker], base: dict[str, str], out: Path
) -> Iterator[list[subprocess.Popen]]:
    """The workers' processes, each in a session of its own (a Ctrl-C in the terminal reaches this process,
    which stops them); stopped on the way out if they still run."""
    processes, sinks = [], []
    try:
        for worker in workers:
            sink = open(out / f"worker-{worker.number + 1}.log", "w")  # noqa: SIM115 (closed below)
            sinks.append(sink)
            environment = worker.environment(base)
            processes.append(
                subprocess.Popen(
                    _command("trials", spec),
                    stdout=sink,
                    stderr=subprocess.STDOUT,
                    env=environment,
                    start_new_session=True,
                )
            )
        yield processes
    finally:
        _stop(processes)
        for sink in sinks:
            sink.close()


def _stop(processes: list[subprocess.Popen]) -> None:
    """Ctrl-C to each process still running; killed after :data:`STOP_SECONDS`."""
    running = [p for p in processes if p.poll() is None]
    for process in running:
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT)
    deadline = time.monotonic() + STOP_SECONDS
    for process in running:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait(processes: list[subprocess.Popen], count: _TrialCount | None, log: Callable[[str], None]) -> None:
    """Until every worker has ended, with one progress bar of the study's completed trials (``count``; None: no
    bar); a worker that failed is said in one line (the others go on)."""
    said: set[int] = set()
    try:
        while True:
            statuses = [p.poll() for p in processes]
            for number, status in enumerate(statuses):
                if status not in (None, 0) and number not in said:
                    said.add(number)
                    log(f"autoprune: worker {number + 1} stopped with status {status}; the others go on")
            if count is not None:
                count.show()
            if all(s is not None for s in statuses):
                return
            time.sleep(POLL_SECONDS)
    finally:
        if count is not None:
            count.close()


class _TrialCount:
    """A progress bar of the completed trials of the study the workers share, read from its storage."""

    def __init__(self, study: str, overrides: dict[str, Any]) -> None:
        from .settings import load_study_file
        from .storage import folder_storage

        study_file = load_study_file(study)
        out = Path(overrides["out"]) if overrides.get("out") else study_file.out_dir
        self.url = overrides.get("storage") or study_file.storage or folder_storage(out)
        self.name, self.total = study_file.name, overrides.get("trials") or study_file.settings.trials
        self.study, self.bar = None, None

    def show(self) -> None:
        import optuna
        from tqdm import tqdm

        from .storage import open_storage

        if self.study is None:
            self.study = optuna.load_study(study_name=self.name, storage=open_storage(self.url))
            self.bar = tqdm(total=self.total, desc="trials", unit="trial", dynamic_ncols=True)
        self.bar.n = len(self.study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,)))
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _worker_main(role: str, spec_text: str) -> int:
    """A worker process: ``prepare`` trains (or reads) the baseline and records the study; ``trials`` runs trials
    until the study holds its budget. Errors are one line, as the command line's."""
    from . import plugins
    from .cli import one_line_logging
    from .searcher import search
    from .training import WithoutEpochLines
    from .workflow import prepare_study

    spec = json.loads(spec_text)
    _interrupt_when_orphaned()
    log = lambda message: print(message, file=sys.stderr, flush=True)  # noqa: E731
    try:
        with one_line_logging():
            for module in spec["plugins"]:
                plugins.load_plugin_module(module)
            prepared = prepare_study(
                spec["study"], log=log if spec["epoch_lines"] else WithoutEpochLines(log), **spec["overrides"]
            )
            study_file = prepared.study_file
            search(
                prepared.model,
                prepared.data,
                study_file.settings,
                finetune=study_file.finetune,
                phase=role,
                **prepared.search_args,
            )
    except AutopruneError as error:
        print(f"autoprune: error: {error}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, SearchInterrupted):
        print("autoprune: worker interrupted; its running trial is marked failed", file=sys.stderr)
        return 130
    return 0


def _interrupt_when_orphaned() -> None:
    """A Ctrl-C to this worker once the process that started it is gone (killed with ``kill -9``, say), so no
    worker outlives its command: it fails its running trial and stops, as after a Ctrl-C."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(POLL_SECONDS)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=watch, name="autoprune-orphan-watch", daemon=True).start()


if __name__ == "__main__":
    sys.exit(_worker_main(sys.argv[1], sys.argv[2]))
