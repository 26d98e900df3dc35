"""``autoprune dashboard``: the study in optuna-dashboard, on loopback, read back through its HTTP API."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import urllib.request

from autoprune import SearchSettings, cli
from autoprune.testing import FakeStudy


def _watched(storage: str) -> None:
    """Study "watched" in ``storage``: two trials, one within the budget."""
    fake = FakeStudy(
        ["conv"],
        SearchSettings(max_accuracy_drop=1.0, rate_step=0.1),
        baseline={"accuracy": 95.0, "flops": 1_000_000, "params": 10_000},
        run={"versions": {"autoprune": "0.1.0"}},
        storage=storage,
        study_name="watched",
    )
    for drop in (0.4, 2.0):
        fake.trial({"accuracy": 95.0 - drop, "accuracy_drop": drop, "flops": 500_000.0})


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_the_dashboard_serves_the_study_on_loopback_and_stops(tmp_path, storage):
    _watched(storage)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    server = subprocess.Popen(
        [sys.executable, "-m", "autoprune", "dashboard", str(tmp_path), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        line = server.stdout.readline()
        address = re.search(r"http://([\d.]+):(\d+)/dashboard/", line)
        assert address, line + server.stderr.read() if server.poll() is not None else line
        host, port = address.groups()
        assert host == "127.0.0.1"
        base = f"http://{host}:{port}"
        studies = _get(f"{base}/api/studies")["study_summaries"]
        assert [s["study_name"] for s in studies] == ["watched"]
        detail = _get(f"{base}/api/studies/{studies[0]['study_id']}?after=0")
        attrs = {a["key"]: a["value"] for a in detail["user_attrs"]}
        assert attrs["baseline_flops"] == "1000000" and "autoprune" in attrs["versions"]
        trials = detail["trials"]
        assert len(trials) == 2
        assert [{a["key"]: a["value"] for a in t["user_attrs"]}["accuracy_drop"] for t in trials] == ["0.4", "2.0"]
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert server.returncode is not None


def test_the_dashboard_refuses_a_folder_without_a_study_in_one_line(tmp_path, storage, capsys):
    assert cli.main(["dashboard", str(tmp_path), "--port", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "study.db does not exist" in err and "--storage" in err
    _watched(storage)
    assert cli.main(["dashboard", str(tmp_path), "--port", "70000"]) == 2
    assert "from 0 (any free one) to 65535, got 70000" in capsys.readouterr().err
