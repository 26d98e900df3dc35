"""`autoprune search --workers N` / `--gpus LIST`: the study prepared once, N worker processes pinned to GPUs or
sharing the cores, one end of the search; Ctrl-C stops them all."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from autoprune import cli, workers
from autoprune.storage import folder_storage, open_storage
from autoprune.workers import Worker, parse_gpus, plan_workers


def test_cpu_workers_split_the_cores_and_see_no_gpu():
    planned = plan_workers(3, None, "cpu", gpu_count=2, cores=8)
    assert planned == [Worker(0, None, 2), Worker(1, None, 2), Worker(2, None, 2)]
    env = planned[0].environment({"PATH": "/bin"})
    assert env["CUDA_VISIBLE_DEVICES"] == "" and env["OMP_NUM_THREADS"] == "2" and env["PATH"] == "/bin"
    assert plan_workers(4, None, None, gpu_count=0, cores=2)[0].threads == 1  # never below one thread


def test_workers_take_one_gpu_each_round_robin_and_gpus_pins_the_listed_ones():
    assert [w.gpu for w in plan_workers(3, None, None, gpu_count=2, cores=16)] == [0, 1, 0]
    pinned = plan_workers(None, parse_gpus("1, 3"), "cuda", gpu_count=4, cores=16)
    assert [(w.gpu, w.threads, w.device) for w in pinned] == [(1, 8, "cuda"), (3, 8, "cuda")]
    assert [w.environment({})["CUDA_VISIBLE_DEVICES"] for w in pinned] == ["1", "3"]
    # GPU numbers count the GPUs the caller sees: with CUDA_VISIBLE_DEVICES=4,5,6,7, GPU 1 is the machine's 5
    assert pinned[0].environment({"CUDA_VISIBLE_DEVICES": "4,5,6,7"})["CUDA_VISIBLE_DEVICES"] == "5"


@pytest.mark.parametrize(
    ("workers_", "gpus", "device", "count", "message"),
    [
        (None, "2", None, 2, "--gpus names GPU 2 but this machine has GPUs 0 to 1"),
        (None, "0", None, 0, "--gpus names GPU 0 but this machine has no CUDA device"),
        (3, "0,1", None, 2, "--workers 3 but --gpus names 2: one worker runs per GPU"),
        (None, "0", "cpu", 1, "--gpus with device 'cpu'"),
        (2, None, "cuda", 0, "device 'cuda' but torch sees no CUDA device"),
    ],
)
def test_gpu_requests_this_machine_cannot_meet_are_one_line_errors(workers_, gpus, device, count, message):
    with pytest.raises(workers.AutopruneError, match="^" + message.replace("(", r"\(").replace(")", r"\)")):
        plan_workers(workers_, None if gpus is None else parse_gpus(gpus), device, gpu_count=count, cores=4)


def test_gpus_on_a_machine_without_cuda_is_refused_before_any_work(tmp_path, study_file, capsys, monkeypatch):
    monkeypatch.setattr(workers, "gpu_count", lambda: 0)
    study = study_file("s.toml", study={"name": "w"}, train={"epochs": 1})
    assert cli.main(["search", str(study), "--gpus", "0,1", "--out", str(tmp_path / "out")]) == 2
    assert capsys.readouterr().err == "autoprune: error: --gpus names GPU 0 but this machine has no CUDA device\n"
    assert not (tmp_path / "out").exists()


def _search(study: Path, out: Path, *extra: str) -> subprocess.Popen:
    command = [sys.executable, "-m", "autoprune", "search", str(study), "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _trials(out: Path, name: str) -> list:
    return optuna.load_study(study_name=name, storage=open_storage(folder_storage(out))).get_trials(deepcopy=False)


def _workers_running(out: Path) -> list[str]:
    """The worker processes of the study in ``out`` still alive (their command line names the folder)."""
    listing = subprocess.run(["ps", "-ww", "-eo", "pid,args"], capture_output=True, text=True, check=True).stdout
    return [line for line in listing.splitlines() if "autoprune.workers" in line and str(out) in line]


def _until_trials_finish(search: subprocess.Popen, out: Path, name: str, count: int) -> None:
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        running = len(_workers_running(out)) == 2
        if running and len([t for t in _trials(out, name) if t.state == TrialState.COMPLETE]) >= count:
            return
        time.sleep(0.5)
    search.send_signal(signal.SIGINT)
    pytest.fail(f"the workers did not finish {count} trials in 300 s: {search.communicate(timeout=120)[1]}")


def test_two_workers_finish_exactly_the_budget_with_the_baseline_trained_once(tmp_path, study_file):
    study = study_file("s.toml", study={"name": "two"}, train={"epochs": 1}, search={"rate_step": 0.05})
    out = tmp_path / "out"
    done = _search(study, out, "--workers", "2", "--trials", "14")
    stdout, stderr = done.communicate(timeout=600)
    assert done.returncode == 0, stderr
    trials = _trials(out, "two")
    states = [t.state for t in trials]
    assert states.count(TrialState.COMPLETE) == 14 and TrialState.RUNNING not in states
    complete = [tuple(sorted(t.params.items())) for t in trials if t.state == TrialState.COMPLETE]
    assert len(set(complete)) == len(complete)  # no plan scored twice
    assert stderr.count("training the baseline") == 1 and "started 2 workers (on the CPU" in stderr
    logs = [out / "worker-1.log", out / "worker-2.log"]
    assert all(log.exists() and "training the baseline" not in log.read_text() for log in logs)
    assert "14 trials" in stdout and (out / "best.pt").exists() and (out / "report" / "index.html").exists()
    assert not _workers_running(out)


def test_ctrl_c_stops_every_worker_and_writes_the_outputs_of_the_finished_trials(tmp_path, study_file):
    study = study_file("s.toml", study={"name": "stop"}, train={"epochs": 1}, search={"rate_step": 0.05})
    out = tmp_path / "out"
    search = _search(study, out, "--workers", "2", "--trials", "400")
    _until_trials_finish(search, out, "stop", 4)
    search.send_signal(signal.SIGINT)
    stdout, stderr = search.communicate(timeout=300)
    assert search.returncode == 130, stderr
    assert "Traceback" not in stderr and "stopped the workers" in stderr
    assert not _workers_running(out)  # none left behind
    states = [t.state for t in _trials(out, "stop")]
    assert TrialState.RUNNING not in states and states.count(TrialState.COMPLETE) < 400
    assert (out / "best.pt").exists() and (out / "report" / "index.html").exists()
    assert f"{states.count(TrialState.COMPLETE)} trials" in stdout


def test_workers_whose_command_was_killed_stop_on_their_own(tmp_path, study_file):
    """kill -9 of the command leaves no worker running on: each fails its trial and stops."""
    study = study_file("s.toml", study={"name": "orphans"}, train={"epochs": 1}, search={"rate_step": 0.05})
    out = tmp_path / "out"
    search = _search(study, out, "--workers", "2", "--trials", "400")
    _until_trials_finish(search, out, "orphans", 2)
    search.kill()
    search.communicate(timeout=60)
    deadline = time.monotonic() + 60
    while _workers_running(out) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert not _workers_running(out)
    assert TrialState.RUNNING not in [t.state for t in _trials(out, "orphans")]
