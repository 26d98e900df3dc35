from __future__ import annotations

import pytest
import torch

import autoprune
from autoprune import cli

STUDY = """
[study]
name = "tiny"
max_accuracy_drop = 100.0
trials = 3
[model]
name = "small_cnn"
params = { width = 8 }
[dataset]
name = "digits"
[train]
epochs = 2
[search]
importances = ["l1", "fpgm"]
calibration_batches = 3
uniform_starts = [0.5]
"""


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    folder = tmp_path_factory.mktemp("search")
    study = folder / "tiny.toml"
    study.write_text(STUDY)
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
    assert study.plan()["rates"] == study.plan(study.best_trial.number)["rates"]
    result = study.export(tmp_path / "m.pt")
    assert result["trial"] == study.best_trial.number and result["pruned"]["flops"] < result["baseline"]["flops"]
    assert autoprune.load(tmp_path / "m.pt")(torch.randn(1, 1, 8, 8)).shape == (1, 10)
