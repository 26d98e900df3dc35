from __future__ import annotations

import html
import re
import shlex
import sys
import types
from pathlib import Path

import pytest
import torch

import autoprune
from autoprune import cli, plugins
from autoprune.results import StudyRecord
from autoprune.storage import folder_storage


def test_plugins_lists_every_kind_with_its_source(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "importances:" in out and "models:" in out and "datasets:" in out
    line = next(row for row in out.splitlines() if row.strip().startswith("fpgm "))
    assert "He et al., CVPR 2019" in line and "autoprune" in line and "importance_fpgm" in line
    assert "[needs grads]" in next(row for row in out.splitlines() if row.strip().startswith("taylor "))


def test_plugins_filters_by_kind_and_pattern(capsys):
    assert cli.main(["plugins", "--kind", "model", "resnet*"]) == 0
    out = capsys.readouterr().out
    assert "resnet20" in out and "torchvision/resnet18" not in out and "l1" not in out


def test_plugin_option_loads_a_module(capsys, monkeypatch):
    module = types.ModuleType("cli_plugin_example")

    @autoprune.hookimpl
    def autoprune_register_importances(register):
        register("cli_metric", lambda g: g.weights[0].flatten(1).abs().sum(1), description="from --plugin")

    module.autoprune_register_importances = autoprune_register_importances
    monkeypatch.setitem(sys.modules, "cli_plugin_example", module)
    try:
        assert cli.main(["--plugin", "cli_plugin_example", "plugins", "--kind", "importance"]) == 0
        assert "cli_metric" in capsys.readouterr().out
    finally:
        plugins.unregister(name="cli_plugin_example")


def test_user_errors_are_one_line_and_exit_2(capsys):
    assert cli.main(["--plugin", "no.such.module", "plugins"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("autoprune: error: cannot import plugin module 'no.such.module'")
    with pytest.raises(autoprune.AutopruneError):
        cli.main(["--debug", "--plugin", "no.such.module", "plugins"])


def test_a_wrong_metric_option_in_a_study_file_is_one_line_and_exit_2(tmp_path, capsys):
    study = tmp_path / "robust.toml"
    text = Path("studies/robust.toml").read_text()
    study.write_text(text.replace("corruption_severities = [1, 2]", "corruption_severities = [0]"))
    assert cli.main(["search", str(study), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err == (
        "autoprune: error: metrics.robust_accuracy.corruption_severities must be a non-empty list of integers "
        "from 1 to 5, got [0]\n"
    )


def test_quickstart_end_to_end_with_few_trials(tmp_path, capsys, monkeypatch):
    import json

    import optuna
    import torch

    from autoprune import baseline

    out = tmp_path / "run"
    args = ["search", "studies/quickstart.toml", "--trials", "6", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    printed = capsys.readouterr()
    assert "training the baseline" in printed.err
    assert "epoch " not in printed.err  # --quiet: no line per epoch of the baseline's training
    assert "6 trials" in printed.out and "baseline accuracy" in printed.out and "x fewer" in printed.out
    plan = json.loads((out / "best_plan.json").read_text())
    model = autoprune.load(out / "best.pt")
    x = torch.randn(1, 1, 8, 8)
    assert model(x).shape == (1, 10)
    study = optuna.load_study(study_name="quickstart", storage=folder_storage(out))
    assert plan["trial"] == study.best_trial.number
    assert autoprune.measure(model, x)["flops"] == study.best_trial.user_attrs["flops"]
    assert (out / "report" / "index.html").is_file() and (out / "report" / "pareto.png").is_file()
    assert "MFLOPs -> " in printed.out and "x fewer)" in printed.out

    # the report says what the search ran on, and its export command runs as printed
    page = (out / "report" / "index.html").read_text()
    run = StudyRecord(study).run
    assert f"torch {torch.__version__}" in page and f"optuna {optuna.__version__}" in page and run["machine"] in page
    data = autoprune.create_dataset("digits", val_fraction=0.35)  # as studies/quickstart.toml splits it
    assert run["splits"] == {"train": len(data.train), "val": len(data.val), "test": len(data.test)}
    assert f"{len(data.train):,} train, {len(data.val):,} val, {len(data.test):,} test samples" in page
    command = shlex.split(html.unescape(re.search(r"<pre><code>(.*?)</code></pre>", page, re.DOTALL).group(1)))
    assert cli.main(command[1:]) == 0 and (out / f"trial-{study.best_trial.number}.onnx").stat().st_size > 0
    assert "Traceback" not in _with_stdout_closed("report", str(out))  # `autoprune report DIR | head`

    # the second run neither trains again nor repeats trials
    def no_training(*a, **k):
        raise AssertionError("the cached baseline was trained again")

    monkeypatch.setattr(baseline, "train", no_training)
    assert cli.main([*args[:3], "8", *args[4:]]) == 0
    assert "training the baseline" not in capsys.readouterr().err
    assert len(optuna.load_study(study_name="quickstart", storage=folder_storage(out)).trials) == 8


def test_search_with_a_third_party_plugin_runs_like_builtins(
    third_party_dist, tmp_path, study_file, capsys, monkeypatch
):
    monkeypatch.syspath_prepend(str(third_party_dist))
    monkeypatch.setattr(plugins, "_manager", None)
    monkeypatch.setattr(plugins, "_registries", None)
    study = study_file(
        "third.toml",
        study={"max_accuracy_drop": 100.0, "trials": 3},
        model={"name": "tiny_thirdparty", "params": {"width": 8}},
        dataset={"name": "noise", "params": {"size": 48}},
        train={"epochs": 1, "batch_size": 16},
        search={"importances": ["producer_l1", "l1"], "calibration_batches": 2, "uniform_starts": [0.5]},
    )
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    assert "3 trials, 3 feasible" in capsys.readouterr().out
    import thirdparty_autoprune

    assert thirdparty_autoprune.calls  # its importance was used by the search


def test_search_user_errors_exit_2(tmp_path, study_file, capsys):
    study = study_file("bad.toml", model={"name": "resnet21"})
    assert cli.main(["search", str(study), "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "unknown model 'resnet21'; did you mean" in err and "'resnet20'" in err


def test_study_errors_come_before_the_baseline_is_trained(tmp_path, study_file, capsys, monkeypatch, quickstart_folder):
    from autoprune import baseline

    out = quickstart_folder(tmp_path / "run")
    args = ["search", "studies/quickstart.toml", "--trials", "2", "--out", str(out), "--quiet"]
    assert cli.main(args) == 0
    capsys.readouterr()

    def no_training(*a, **k):
        raise AssertionError("the baseline was trained before the study was checked")

    monkeypatch.setattr(baseline, "train", no_training)
    assert cli.main([*args, "--seed", "1"]) == 2  # another seed would train another baseline
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "was created with study.seed=0 (not 1)" in err
    assert len(list(out.glob("baseline-*.pt"))) == 1
    study = study_file("typo.toml", search={"importances": ["l1", "fpmg"]})
    assert cli.main(["search", str(study), "--out", str(tmp_path / "typo")]) == 2
    assert "unknown importance 'fpmg'; did you mean 'fpgm'?" in capsys.readouterr().err


def test_a_search_whose_every_trial_fails_says_why(tmp_path, capsys, monkeypatch, quickstart_folder):
    from autoprune.searcher.evaluation import Evaluator

    def broken(self, plan, **kwargs):
        raise autoprune.PruningError("Torch-Pruning failed on group 'x'")

    monkeypatch.setattr(Evaluator, "evaluate", broken)
    args = ["search", "studies/quickstart.toml", "--trials", "2", "--out", str(quickstart_folder(tmp_path)), "--quiet"]
    assert cli.main(args) == 2
    err = capsys.readouterr().err
    assert err.count("autoprune: trial ") == 10  # search.max_failures, one line each
    last = err.splitlines()[-1]
    assert last.startswith("autoprune: error: 10 trials in a row failed") and "failed on group 'x'" in last


def test_one_study_per_output_folder(tmp_path, study_file, capsys, quickstart_folder):
    args = ["search", "studies/quickstart.toml", "--trials", "2", "--out", str(quickstart_folder(tmp_path)), "--quiet"]
    assert cli.main(args) == 0
    capsys.readouterr()
    other = study_file("other.toml", study={"name": "other"}, train={"epochs": 1})
    before = (tmp_path / "best.pt").read_bytes()
    assert cli.main(["search", str(other), "--trials", "2", "--out", str(tmp_path), "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "holds study 'quickstart'" in err and "study 'other'" in err and "--force" in err
    assert (tmp_path / "best.pt").read_bytes() == before
    assert cli.main(args) == 0  # the folder's own study resumes


@pytest.mark.parametrize("name", ["../x", "a/b", ".hidden", "with space", ""])
def test_study_names_that_are_not_folder_names_are_refused(tmp_path, study_file, capsys, monkeypatch, name):
    monkeypatch.chdir(tmp_path)
    study = study_file("s.toml", study={"name": name})
    assert cli.main(["search", str(study)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "letters, digits" in err
    assert [p.name for p in tmp_path.iterdir()] == ["s.toml"]  # no folder made anywhere


def test_an_importance_that_raises_is_one_line_before_the_baseline_is_trained(
    tmp_path, study_file, capsys, temporary_plugin
):
    def boom(group):
        if group.name == "features.3":
            raise ValueError("cannot score this layer")
        return group.weights[0].flatten(1).abs().sum(1).double()

    plugin = types.ModuleType("boom_plugin")
    plugin.autoprune_register_importances = autoprune.hookimpl(lambda register: register("boom", boom))
    temporary_plugin(plugin, "boom_plugin")
    study = study_file("boom.toml", search={"importances": ["l1", "boom"]})
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out")]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        "autoprune: error: importance 'boom' on group 'features.3' raised ValueError: cannot score this layer\n"
    )
    assert "training" not in captured.out and not list((tmp_path / "out").glob("baseline-*.pt"))


@pytest.mark.parametrize(
    "model, message",
    [
        ({"params": {"width": "eight"}}, "model 'small_cnn' (autoprune"),
        ({"params": {"widht": 8}}, "has no parameter 'widht'; its parameters: num_classes, in_channels, width"),
        ({"checkpoint": "garbage.pt"}, "is not a PyTorch checkpoint"),
    ],
    ids=["width-not-an-int", "misspelled-parameter", "not-a-checkpoint"],
)
def test_bad_model_inputs_are_one_line_before_any_work(tmp_path, study_file, capsys, monkeypatch, model, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "garbage.pt").write_bytes(bytes(range(256)) * 8)
    study_file("s.toml", model=model, train={"epochs": 1})
    assert cli.main(["search", "s.toml", "--out", "out"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "weights_only=False" not in err
    assert "parameter 'width' must be int, got 'eight'" in err or "eight" not in str(model)
    assert not list(tmp_path.glob("out/baseline-*.pt")) and not (tmp_path / "out" / ".autoprune-study.json").exists()


@pytest.mark.parametrize(
    "url, message",
    [
        ("mysql://u:secret@127.0.0.1:1/db", "needs a database driver that is not installed: pip install pymysql"),
        (
            "postgresql+psycopg://u:secret@127.0.0.1:1/db",
            "cannot open the storage 'postgresql+psycopg://u:***@127.0.0.1:1/db'",
        ),
        ("foo://x", "names a database SQLAlchemy does not know; valid forms: sqlite:///PATH.db"),
        ("not a url", "is not a storage URL; valid forms:"),
        ("sqlite:///no/such/folder/s.db", "whose folder does not exist"),
        ("journal:///no/such/folder/s.log", "whose folder does not exist"),
    ],
)
def test_storages_that_cannot_be_opened_are_one_line_before_any_work(
    tmp_path, study_file, capsys, monkeypatch, url, message
):
    monkeypatch.chdir(tmp_path)
    study_file("s.toml", train={"epochs": 1})
    assert cli.main(["search", "s.toml", "--out", "out", "--storage", url]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and "secret" not in err
    assert not list(tmp_path.glob("out/baseline-*.pt"))


def test_autoprune_load_of_a_file_that_is_not_a_model_is_one_error(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(bytes(range(256)) * 8)
    with pytest.raises(autoprune.AutopruneError, match="is not a model saved by autoprune"):
        autoprune.load(garbage)
    weights = tmp_path / "weights.pt"
    torch.save({"w": torch.zeros(2)}, weights)
    with pytest.raises(autoprune.AutopruneError, match="is not a model saved by autoprune"):
        autoprune.load(weights)


def test_latency_table_writes_a_table_a_study_can_use_and_refuses_bad_outputs(tmp_path, study_file, capsys):
    import json

    study = study_file("lat.toml", study={"latency_batch_size": 4}, model={"params": {"width": 8}})
    assert cli.main(["latency-table", str(study), "-o", str(tmp_path / "table.json")]) == 0
    assert "timed 3 groups at rates 0.00, 0.20, 0.40, 0.60, 0.80 in torch cpu, default threads, batch 4" in (
        capsys.readouterr().out
    )
    table = json.loads((tmp_path / "table.json").read_text())
    assert table["format"] == "autoprune-latency-table-v1" and table["batch_size"] == 4
    assert set(table["ms"]) == {"features.0", "features.3", "features.7"} and len(table["uniform_ms"]) == 5
    assert cli.main(["latency-table", str(study), "-o", str(tmp_path / "missing" / "t.json")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "folder" in err and "does not exist" in err
    if not torch.cuda.is_available():
        assert cli.main(["latency-table", str(study), "-o", str(tmp_path / "t.json"), "--device", "cuda"]) == 2
        assert "has no CUDA device" in capsys.readouterr().err
    only = study_file("only.toml", study={"latency_batch_size": 4}, search={"prune_only": ["features.3"]})
    assert cli.main(["latency-table", str(only), "-o", str(tmp_path / "only.json")]) == 0
    assert "timed 1 group at rates" in capsys.readouterr().out  # the groups the study searches, so it can use the table
    assert set(json.loads((tmp_path / "only.json").read_text())["ms"]) == {"features.3"}
    ort = study_file(
        "ort.toml",
        study={"latency_backend": "onnxruntime", "latency_threads": 1},
        search={"prune_only": ["features.3"]},
    )
    assert cli.main(["latency-table", str(ort), "-o", str(tmp_path / "ort.json")]) == 0
    assert "in onnxruntime CPUExecutionProvider, 1 thread, batch 1" in capsys.readouterr().out
    assert json.loads((tmp_path / "ort.json").read_text())["backend"] == "onnxruntime"


def _with_stdout_closed(*args: str) -> str:
    """The stderr of ``python -m autoprune.cli ARGS`` whose stdout reader closes before it prints, as
    ``| head -1`` does once it has its line; the exit status must be the closed pipe's."""
    import subprocess

    proc = subprocess.Popen(
        [sys.executable, "-m", "autoprune.cli", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait() == cli.CLOSED_OUTPUT, err
    return err


def test_a_closed_stdout_ends_the_command_quietly():
    """Regression: `autoprune plugins | head -1` ended in a BrokenPipeError traceback."""
    err = _with_stdout_closed("plugins")
    assert "Traceback" not in err and "BrokenPipeError" not in err and err == ""


def test_the_summary_shows_each_constrained_metric_with_its_unit(tmp_path, study_file, capsys, temporary_plugin):
    plugin = types.ModuleType("kib_plugin")

    def weight_kib(model, context):
        return 4 * sum(p.numel() for p in model.parameters()) / 1024

    plugin.autoprune_register_metrics = autoprune.hookimpl(
        lambda register: register("weight_kib", weight_kib, unit="KiB", description="float32 weights in KiB")
    )
    temporary_plugin(plugin, "kib_plugin")
    study = study_file(
        "kib.toml",
        study={"max_accuracy_drop": 100.0, "trials": 2},
        train={"epochs": 1},
        constraints={"weight_kib": 200},
        search={"uniform_starts": [0.5], "calibration_batches": 2},
    )
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    best = autoprune.Study.load(tmp_path / "out").best_trial
    baseline = 4 * sum(p.numel() for p in autoprune.create_model("small_cnn", 10, 1).parameters()) / 1024
    line = next(row for row in out.splitlines() if row.strip().startswith("weight_kib"))
    assert line.split() == [
        "weight_kib",
        f"{best.user_attrs['weight_kib']:.4g}",
        "KiB",
        "(limit",
        "200;",
        "baseline",
        f"{baseline:.4g}",
        "KiB)",
    ]


def test_a_warning_while_the_progress_bar_is_drawn_is_a_line_of_its_own(capsys):
    import logging

    from tqdm import tqdm

    with cli.one_line_logging():
        bar = tqdm(total=3, file=sys.stderr, desc="study", unit="trial")
        bar.update(1)
        logging.getLogger("autoprune").warning("trial 1 was left running by a worker that stopped")
        bar.update(1)
        bar.close()
    pieces = re.split(r"[\r\n]", capsys.readouterr().err)
    assert "autoprune: trial 1 was left running by a worker that stopped" in pieces  # not glued onto the bar


def test_a_search_that_found_nothing_better_than_a_baseline_says_so(tmp_path, study_file, capsys):
    # any drop allowed and two trials: the global baseline (everything pruned that it can) is the best
    study = study_file("s.toml", study={"name": "plain", "max_accuracy_drop": 100.0}, train={"epochs": 1})
    assert cli.main(["search", str(study), "--trials", "2", "--out", str(tmp_path / "out"), "--quiet"]) == 0
    line = next(line for line in capsys.readouterr().out.splitlines() if "vs the baselines" in line)
    assert "no per-layer plan beat" in line and "best.pt is" in line and "at rate" in line and "x more" not in line
