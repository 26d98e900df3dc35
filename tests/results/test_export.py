from __future__ import annotations

import copy

import pytest
import torch
from conftest import write_study_file
from torch import nn

import autoprune
from autoprune import cli

#: A three-trial study of small_cnn on digits, searched once for the module's tests.
TINY = {
    "study": {"name": "tiny", "max_accuracy_drop": 100.0, "trials": 3},
    "model": {"params": {"width": 8}},
    "train": {"epochs": 2},
    "search": {"importances": ["l1", "fpgm"], "calibration_batches": 3, "uniform_starts": [0.5]},
}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    study = write_study_file(folder / "tiny.toml", **TINY)
    assert cli.main(["search", str(study), "--out", str(folder / "out"), "--quiet"]) == 0
    return folder / "out"


@pytest.mark.parametrize("fmt", ["torch", "torchscript", "onnx"])
def test_export_round_trip(finished, tmp_path, capsys, fmt):
    target = tmp_path / f"model.{fmt}"
    assert cli.main(["export", str(finished), "-o", str(target), "--format", fmt]) == 0
    out = capsys.readouterr().out
    assert "val_accuracy" in out and "test_accuracy" in out and "latency_ms" in out
    assert f"saved {target} ({fmt}; outputs match PyTorch" in out
    saved = autoprune.load(finished / "best.pt")  # what the search saved
    x = torch.randn(3, 1, 8, 8)
    if fmt == "torch":
        loaded = autoprune.load(target)
        assert torch.allclose(loaded(x), saved(x), atol=1e-5)
        plain = torch.load(target, weights_only=True)  # tensors and plain data: nothing to unpickle
        assert plain["architecture"]["model"] == "small_cnn" and plain["metadata"]["rates"]
    elif fmt == "torchscript":
        assert torch.allclose(torch.jit.load(str(target))(x), saved(x), atol=1e-5)
    else:
        import onnxruntime

        session = onnxruntime.InferenceSession(str(target), providers=["CPUExecutionProvider"])
        assert torch.allclose(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), saved(x), atol=1e-4)


def test_export_a_chosen_trial_with_distillation(finished, tmp_path, capsys):
    target = tmp_path / "trial0.pt"
    args = ["export", str(finished), "-o", str(target), "--trial", "0", "--finetune-epochs", "1", "--distill"]
    assert cli.main(args) == 0
    assert "trial #0" in capsys.readouterr().out
    model = autoprune.load(target)
    rebuilt = autoprune.Study.load(finished).rebuild(0)
    assert autoprune.count_params(model) == autoprune.count_params(rebuilt.model)
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.model.state_dict().values()))


@pytest.mark.parametrize("mode", ["soft", "gradual"])
def test_export_fine_tuned_softly_or_gradually_has_the_trials_widths(finished, tmp_path, capsys, mode):
    target = tmp_path / f"{mode}.pt"
    args = ["export", str(finished), "-o", str(target), "--finetune-epochs", "1", "--finetune-mode", mode]
    assert cli.main(args) == 0
    out = capsys.readouterr()
    assert f"({mode}" in out.err and "outputs match PyTorch" in out.out
    model, rebuilt = autoprune.load(target), autoprune.Study.load(finished).rebuild()
    assert {k: v.shape for k, v in model.state_dict().items()} == {
        k: v.shape for k, v in rebuilt.model.state_dict().items()
    }
    assert not all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), rebuilt.model.state_dict().values()))


def test_a_finetune_mode_needs_epochs_and_a_known_name(finished, tmp_path, capsys):
    target = str(tmp_path / "x.pt")
    assert cli.main(["export", str(finished), "-o", target, "--finetune-mode", "soft"]) == 2
    assert "give --finetune-epochs N too" in capsys.readouterr().err
    assert cli.main(["export", str(finished), "-o", target, "--finetune-epochs", "1", "--finetune-mode", "x"]) == 2
    assert "--finetune-mode must be one of hard, soft, gradual, got 'x'" in capsys.readouterr().err
    with pytest.raises(autoprune.AutopruneError, match="give finetune epochs too"):
        autoprune.Study.load(finished).export(target, finetune_mode="gradual")


def test_export_errors(finished, tmp_path, capsys):
    assert cli.main(["export", str(finished), "-o", str(tmp_path / "x"), "--trial", "99"]) == 2
    assert "trial 99 is not a completed trial" in capsys.readouterr().err
    bogus = tmp_path / "bogus.pt"
    torch.save({"weights": 1}, bogus)
    with pytest.raises(autoprune.AutopruneError, match="not a model saved by autoprune"):
        autoprune.load(bogus)


def test_study_api_gives_what_the_command_line_gives(finished, tmp_path):
    import pandas as pd

    study = autoprune.Study.load(finished)
    trials, front = study.trials(), study.pareto()
    assert len(trials) == 3 and set(front["trial"]) <= set(trials["trial"])
    assert list(front["trial"]) == list(pd.read_csv(finished / "report" / "pareto.csv")["trial"])
    assert study.plan() == study.plan(study.best_trial.number)
    result = study.export(tmp_path / "m.pt")
    assert result["trial"] == study.best_trial.number and result["pruned"]["flops"] < result["baseline"]["flops"]
    assert autoprune.load(tmp_path / "m.pt")(torch.randn(1, 1, 8, 8)).shape == (1, 10)


def test_a_search_run_with_a_relative_output_folder_exports_from_anywhere(tmp_path, monkeypatch, capsys):
    """Regression: baseline_weights was stored relative to the working directory."""
    (tmp_path / "work").mkdir()
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "work")
    write_study_file(tmp_path / "work" / "tiny.toml", **TINY)
    assert cli.main(["search", "tiny.toml", "--out", "runs/tiny", "--quiet"]) == 0
    study = autoprune.Study.load("runs/tiny")
    assert study.record.source["baseline_weights"].startswith(str(tmp_path / "work"))
    monkeypatch.chdir(tmp_path / "elsewhere")
    target = tmp_path / "elsewhere" / "m.onnx"
    assert cli.main(["export", str(tmp_path / "work" / "runs" / "tiny"), "-o", str(target), "--format", "onnx"]) == 0
    assert target.is_file()


@pytest.mark.baseline("default_short")
def test_a_python_study_is_reported_and_exported_by_the_cli_from_another_folder(
    baseline, digits, tmp_path, monkeypatch, capsys
):
    (tmp_path / "made").mkdir()
    (tmp_path / "other").mkdir()
    monkeypatch.chdir(tmp_path / "made")
    result = autoprune.search(
        baseline,  # its weights only in memory
        digits,
        max_accuracy_drop=50.0,
        trials=3,
        importances=("l1", "fpgm"),
        calibration_batches=2,
        uniform_starts=(0.3,),
        latency_batch_size=4,
        storage="sqlite:///study.db",
        study_name="from-python",
    )
    source = result.record.source
    assert source["model"] == "small_cnn" and source["dataset"] == "digits" and "baseline_artifact" in source
    monkeypatch.chdir(tmp_path / "other")
    made = str(tmp_path / "made")
    assert cli.main(["report", made]) == 0
    assert (tmp_path / "made" / "report" / "index.html").is_file()
    assert cli.main(["export", made, "-o", "m.pt"]) == 0
    out = capsys.readouterr().out
    assert "latency_ms@4" in out  # the study's latency batch size
    exported = autoprune.load(tmp_path / "other" / "m.pt")
    x = torch.randn(2, 1, 8, 8)
    assert torch.allclose(exported(x), result.best_model(x), atol=1e-5)


def _one_trial(baseline, digits, storage: str, **settings) -> None:
    """A one-trial search of ``baseline`` kept in ``storage`` (a uniform start at 0.2, any accuracy drop)."""
    options = {"max_accuracy_drop": 100.0, "trials": 1, "uniform_starts": (0.2,), "calibration_batches": 1}
    autoprune.search(baseline, digits, storage=storage, **options, **settings)


@pytest.mark.baseline("narrow_brief")
def test_export_measures_latency_at_the_studys_batch_size(baseline, digits, tmp_path, storage, monkeypatch):
    """Regression: export timed batches of one whatever the study's latency_batch_size."""
    from autoprune.results import export
    from autoprune.runtimes import Runtime

    _one_trial(baseline, digits, storage, latency_batch_size=3)
    batches = []
    runtimes = []
    monkeypatch.setattr(
        export, "time_ms", lambda m, x, runtime, **kw: batches.append(len(x)) or runtimes.append(runtime) or 1.0
    )
    result = autoprune.Study.load(tmp_path).export(tmp_path / "m.pt")
    assert batches == [3, 3] and result["pruned"]["latency_ms"] == 1.0
    # timed in the study's runtime (PyTorch on the CPU by default), which the result names
    assert runtimes == [Runtime()] * 2 and result["latency_runtime"] == "torch cpu, default threads"


def test_a_study_of_an_unregistered_model_exports_with_the_baseline_given(tmp_path, storage, capsys):
    data = autoprune.create_dataset("digits")
    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(8, 10),
    )
    autoprune.train(model, data, autoprune.TrainSettings(epochs=1))
    autoprune.search(
        model,
        data,
        max_accuracy_drop=100.0,
        trials=2,
        uniform_starts=(0.5,),
        calibration_batches=1,
        storage=storage,
        study_name="custom",
    )
    assert cli.main(["export", str(tmp_path), "-o", str(tmp_path / "m.pt")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "does not name a registered model" in err and "baseline=model" in err
    study = autoprune.Study.load(tmp_path)
    result = study.export(tmp_path / "m.pt", baseline=model)  # the dataset was registered
    assert result["pruned"]["params"] < result["baseline"]["params"]
    with pytest.raises(autoprune.AutopruneError, match=r"give the unpruned model: autoprune.load\(path, model=...\)"):
        autoprune.load(tmp_path / "m.pt")
    x = data.val[0][0].unsqueeze(0)
    assert torch.allclose(
        autoprune.load(tmp_path / "m.pt", model=model)(x), study.rebuild(baseline=model).model(x), atol=1e-5
    )
    assert sum(p.numel() for p in model.parameters()) == result["baseline"]["params"]  # the model given is kept
    model[0].weight.data.mul_(2)  # not the weights that were searched
    with pytest.raises(autoprune.AutopruneError, match="fingerprint differs"):
        study.export(tmp_path / "m.pt", baseline=model)


def test_a_rebuilt_trial_scores_what_the_trial_scored_on_augmented_data(tmp_path, storage, temporary_plugin):
    """Regression: a rebuild recalibrated on other augmented images than its trial did."""
    import types

    from autoprune.metrics import accuracy

    class Noisy(torch.utils.data.Dataset):
        def __init__(self, base):
            self.base = base

        def __len__(self):
            return len(self.base)

        def __getitem__(self, i):
            x, y = self.base[i]
            return x + 0.5 * torch.randn_like(x), y

    def noisy_digits():
        d = autoprune.create_dataset("digits")
        return autoprune.DataSplits(Noisy(d.train), d.val, d.test, d.num_classes, d.input_shape)

    plugin = types.ModuleType("noisy_plugin")
    plugin.autoprune_register_datasets = autoprune.hookimpl(
        lambda register: register("noisy_digits", noisy_digits, description="digits with noise")
    )
    temporary_plugin(plugin, "noisy_plugin")
    data = autoprune.create_dataset("noisy_digits")
    torch.manual_seed(0)
    model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=8)
    autoprune.train(model, data, autoprune.TrainSettings(epochs=2))
    result = autoprune.search(
        model,
        data,
        max_accuracy_drop=100.0,
        trials=3,
        uniform_starts=(0.3, 0.5),
        calibration_batches=3,
        batch_size=32,
        storage=storage,
    )
    study = autoprune.Study.load(tmp_path, storage=storage)
    val = torch.utils.data.DataLoader(data.val, batch_size=128)
    for trial in result.record.completed():  # the queued warm starts past the budget wait
        torch.manual_seed(trial.number + 100)  # whatever the global generator holds
        rebuilt = study.rebuild(trial.number)
        assert accuracy(rebuilt.model, val) == trial.user_attrs["accuracy"]


@pytest.mark.parametrize("fmt", ["torch", "torchscript", "onnx"])
def test_a_pruned_segmenter_exports_and_its_outputs_are_checked(tmp_path, fmt):
    from autoprune.results.export import save

    torch.manual_seed(0)
    unpruned = autoprune.create_model("small_segmenter", num_classes=5, width=8).eval()
    task = autoprune.create_task("segmentation", 5)
    images = [torch.rand(3, 32, 32) for _ in range(3)]
    pruned = autoprune.prune(copy.deepcopy(unpruned), task.example(images[0]), 0.3)
    target = tmp_path / f"segmenter.{fmt}"
    difference = save(
        pruned,
        target,
        fmt,
        task.example(images[0]),
        task.export_inputs(images),
        metadata={"rates": 0.3},
        unpruned=unpruned,
    )
    assert difference <= 1e-4 and target.is_file()


def test_an_export_whose_outputs_differ_is_refused(tmp_path):
    """The check compares every output tensor: a file that reloads to a different model is an error."""
    from autoprune.results import export

    class Drifting(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3)

        def forward(self, x):
            return self.conv(x) + (0 if torch.jit.is_scripting() or torch.jit.is_tracing() else 1)

    x = torch.randn(2, 1, 8, 8)
    with pytest.raises(autoprune.AutopruneError, match="torchscript export of .* differs from the PyTorch model by"):
        export.save(Drifting(), tmp_path / "m.ts", "torchscript", x, [x])


@pytest.mark.baseline("narrow_brief")
def test_exporting_an_infeasible_trial_warns_on_one_line_and_still_exports(baseline, digits, tmp_path, storage, capsys):
    _one_trial(baseline, digits, storage, constraints={"params": 10})  # below any pruned small_cnn: none feasible
    target = tmp_path / "m.pt"
    assert cli.main(["export", str(tmp_path), "-o", str(target), "--trial", "0"]) == 0
    captured = capsys.readouterr()
    assert captured.err.startswith("autoprune: trial 0 is not feasible: params ") and "> 10 (its bound)" in captured.err
    assert captured.err.count("\n") == 1 and target.is_file() and "trial #0" in captured.out


def test_the_format_follows_the_outputs_suffix_unless_given_and_a_contradiction_is_refused(tmp_path):
    from autoprune.results.export import output_format

    assert [output_format(tmp_path / n) for n in ("m.onnx", "m.ts", "m.torchscript", "m.pt", "m")] == [
        "onnx",
        "torchscript",
        "torchscript",
        "torch",
        "torch",
    ]
    assert output_format(tmp_path / "m.pt", "torchscript") == "torchscript"  # .pt serves both
    with pytest.raises(autoprune.AutopruneError, match="'m.pt' has the suffix of torch or torchscript files"):
        output_format(tmp_path / "m.pt", "onnx")
    with pytest.raises(autoprune.AutopruneError, match="is a folder; give the file to write"):
        output_format(tmp_path, "onnx")
    (tmp_path / "afile").write_text("x")
    with pytest.raises(autoprune.AutopruneError, match="which is a file"):
        output_format(tmp_path / "afile" / "m.pt")


def test_autoprune_load_of_a_folder_says_it_is_a_folder(tmp_path):
    with pytest.raises(autoprune.AutopruneError, match=r"is a folder; give a model file, such as .*best\.pt"):
        autoprune.load(tmp_path)


def test_a_segmenters_onnx_export_takes_other_image_sizes(tmp_path):
    """Regression: the segmenter's ONNX file had the traced height and width fixed (the detector's are dynamic)."""
    import onnxruntime

    from autoprune.results.export import save

    torch.manual_seed(0)
    unpruned = autoprune.create_model("small_segmenter", num_classes=5, width=8).eval()
    task = autoprune.create_task("segmentation", 5)
    images = [torch.rand(3, 32, 32) for _ in range(2)]
    pruned = autoprune.prune(copy.deepcopy(unpruned), task.example(images[0]), 0.3)
    save(pruned, tmp_path / "s.onnx", "onnx", task.example(images[0]), task.export_inputs(images))
    session = onnxruntime.InferenceSession(str(tmp_path / "s.onnx"), providers=["CPUExecutionProvider"])
    assert session.get_inputs()[0].shape == ["batch", 3, "height", "width"]
    x = torch.rand(3, 3, 41, 56)
    (got,) = session.run(None, {"input": x.numpy()})
    with torch.no_grad():
        assert torch.allclose(torch.from_numpy(got), pruned(x), atol=1e-4)
