"""Bad inputs, as a new user gives them: each is exit status 2 and one line on stderr, with no traceback and no
baseline trained (issue 23's list, one parametrized test of the command line).

A case is ``(id, study file sections, command line, message)``. The study file is written as ``s.toml`` in the
test's folder (from conftest's :data:`STUDY_FILE`, one epoch of training); in the command line ``{run}`` is the
output folder of a small finished search (made once for the module), ``{tmp}`` the test's folder. The search's
default output folder is ``out`` (given as ``--out out`` unless the case gives its own ``--out``).
"""

from __future__ import annotations

import shutil

import pytest
from conftest import write_study_file

from autoprune import cli

# Output folders and command-line values.
COMMAND_LINE = [
    ("workers-0", {}, ["search", "s.toml", "--workers", "0"], "--workers must be at least 1, got 0"),
    ("gpus-not-numbers", {}, ["search", "s.toml", "--gpus", "a,b"], "--gpus takes GPU numbers separated by commas"),
    ("gpus-repeated", {}, ["search", "s.toml", "--gpus", "0,0"], "--gpus names a GPU twice"),
    (
        "workers-with-one-gpu-device",
        {},
        ["search", "s.toml", "--workers", "2", "--device", "cuda:1"],
        "device 'cuda:1' with several workers: pin them to GPUs with --gpus instead",
    ),
    ("out-that-cannot-be-made", {}, ["search", "s.toml", "--out", "/proc/x"], "output folder '/proc/x' cannot be"),
    ("out-a-file", {}, ["search", "s.toml", "--out", "s.toml"], "output folder 's.toml' is a file"),
    ("out-inside-a-file", {}, ["search", "s.toml", "--out", "s.toml/sub"], "output folder 's.toml/sub' is inside"),
    ("out-empty", {}, ["search", "s.toml", "--out", ""], "--out '' names no folder"),
    ("device-this-machine-lacks", {}, ["search", "s.toml", "--device", "cuda:99"], "device 'cuda:99' but "),
    ("device-misspelled", {}, ["search", "s.toml", "--device", "gpu"], "device must be 'auto', 'cpu', 'cuda' or"),
]

# Study-file settings: conflicts and values refused before the baseline is trained.
SETTINGS = [
    (
        "amp-unknown",
        {"study": {"amp": "fp8"}},
        ["search", "s.toml"],
        "study.amp must be one of 'off', 'bf16', 'fp16'",
    ),
    (
        "seed-beyond-2**32",
        {},
        ["search", "s.toml", "--seed", str(2**70)],
        "seed must be an integer from 0 to 2**32 - 1",
    ),
    (
        "seed-negative",
        {"study": {"seed": -1}},
        ["search", "s.toml"],
        "study.seed must be an integer from 0 to 2**32 - 1",
    ),
    (
        "model-that-cannot-run-on-the-data",
        {"model": {"name": "small_cnn", "params": {"width": 0}}},
        ["search", "s.toml"],
        "model 'small_cnn' with width=0 fails on a (1, 1, 8, 8) input: RuntimeError: ",
    ),
    (
        "latency-table-missing",
        {"study": {"max_accuracy_drop": 1.0, "objective": "latency", "latency_table": "nope.json"}},
        ["search", "s.toml"],
        "latency table 'nope.json' does not exist",
    ),
    (
        "latency-table-not-json",
        {"study": {"max_accuracy_drop": 1.0, "objective": "latency", "latency_table": "s.toml"}},
        ["search", "s.toml"],
        "latency table 's.toml' is not JSON",
    ),
    (
        "latency-table-a-folder",
        {"study": {"max_accuracy_drop": 1.0, "objective": "latency", "latency_table": "."}},
        ["search", "s.toml"],
        "latency table '.' cannot be read",
    ),
    (
        "finetuned-budget-without-finetuning-epochs",
        {"study": {"max_accuracy_drop": 1.0, "budget": "finetuned"}, "finetune": {"epochs": 0}},
        ["search", "s.toml"],
        "budget = 'finetuned' scores every plan after the [finetune] recipe, but finetune.epochs = 0",
    ),
    (
        "rungs-not-ending-in-1",
        {"study": {"max_accuracy_drop": 1.0, "budget": "finetuned"}, "search": {"rungs": [0.5, 0.25]}},
        ["search", "s.toml"],
        "search.rungs must be a rising list of fractions in (0, 1] ending in 1, got",
    ),
    (
        "finalists-with-a-finetuned-budget",
        {"study": {"max_accuracy_drop": 1.0, "budget": "finetuned"}, "search": {"finalists": 2}},
        ["search", "s.toml"],
        "search.finalists = 2 fine-tunes the best plans after the search, but study.budget = 'finetuned'",
    ),
    (
        "refine-out-of-range",
        {"study": {"max_accuracy_drop": 1.0}, "search": {"refine": 1.0}},
        ["search", "s.toml"],
        "search.refine must be a share of the trials from 0 to 0.9, got 1.0",
    ),
    (
        "budget-unknown",
        {"study": {"max_accuracy_drop": 1.0, "budget": "after-finetuning"}},
        ["search", "s.toml"],
        "study.budget must be one of 'recalibrated', 'finetuned', got str 'after-finetuning'",
    ),
    (
        "latency-backend-unknown",
        {"study": {"max_accuracy_drop": 1.0, "objective": "latency", "latency_backend": "tflite"}},
        ["search", "s.toml"],
        "study.latency_backend must be one of 'torch', 'onnxruntime', 'openvino', 'tensorrt', got str 'tflite'",
    ),
    (
        "latency-backend-on-a-device-it-does-not-run-on",
        {"study": {"max_accuracy_drop": 1.0, "latency_backend": "openvino", "latency_device": "cuda"}},
        ["search", "s.toml"],
        "study.latency_device must be 'cpu' with latency_backend = 'openvino', got 'cuda'",
    ),
    (
        "round-to-neither-auto-nor-a-count",
        {"search": {"round_to": "eight"}},
        ["search", "s.toml"],
        "search.round_to must be 'auto' or an integer >= 1, got str 'eight'",
    ),
    (
        "prune-only-matching-no-group",
        {"search": {"prune_only": ["nomatch*"]}},
        ["search", "s.toml"],
        "search.prune_only ['nomatch*'] matches none of the model's 3 prunable groups (it takes module-name prefixes",
    ),
    (
        "constraint-below-zero",
        {"constraints": {"params": -1}},
        ["search", "s.toml"],
        "constraints.params = -1 cannot be met: params (parameters) is never below 0",
    ),
    (
        "constraint-below-the-most-pruned-plan",
        {"constraints": {"flops": 10}},
        ["search", "s.toml"],
        "constraints.flops = 10 cannot be met: the most pruned plan (every searched group at rate_max = 0.8)",
    ),
    (
        "constraint-above-a-fraction",
        {"constraints": {"sparsity": 1.5}, "search": {"granularity": "weight"}},
        ["search", "s.toml"],
        "constraints.sparsity = 1.5 cannot be met: sparsity (fraction) is never above 1",
    ),
    (
        "importances-repeated",
        {"search": {"importances": ["l1", "l1"]}},
        ["search", "s.toml"],
        "search.importances must be a non-empty list of distinct registered importance names, got ['l1', 'l1']",
    ),
    (
        "steps-repeated",
        {"search": {"steps": [1, 1, 2]}},
        ["search", "s.toml"],
        "search.steps must be an integer >= 1, or a list of distinct ones",
    ),
    (
        "recovery-steps-with-one-step",
        {"search": {"recovery_steps": 3}},
        ["search", "s.toml"],
        "search.recovery_steps = 3 fine-tunes between pruning steps, but steps = 1 prunes in one step",
    ),
    (
        "finalists-without-fine-tuning",
        {"search": {"finalists": 2}, "finetune": {"epochs": 0}},
        ["search", "s.toml"],
        "search.finalists = 2 fine-tunes the best plans with [finetune], but finetune.epochs = 0",
    ),
]

# Data that a dataset plugin refuses when it is built.
DATA = [
    (
        "digits-test-fraction-1",
        {"dataset": {"name": "digits", "params": {"test_fraction": 1.0}}},
        ["search", "s.toml"],
        "digits test_fraction must be a number between 0 and 1 (exclusive), got 1.0",
    ),
    (
        "digits-val-fraction-0",
        {"dataset": {"name": "digits", "params": {"val_fraction": 0.0}}},
        ["search", "s.toml"],
        "digits val_fraction must be a number between 0 and 1 (exclusive), got 0.0",
    ),
    (
        "digits-no-training-image",
        {"dataset": {"name": "digits", "params": {"test_fraction": 0.9999}}},
        ["search", "s.toml"],
        "digits test_fraction=0.9999 and val_fraction=0.2 leave no training image",
    ),
    (
        "coco-folder-val-fraction-1",
        {
            "model": {"name": "small_detector"},
            "dataset": {"name": "coco_folder", "params": {"images": ".", "annotations": "a.json", "val_fraction": 1}},
        },
        ["search", "s.toml"],
        "coco_folder val_fraction must be a number between 0 and 1 (exclusive), got 1",
    ),
    (
        "seg-folder-val-fraction-0",
        {
            "model": {"name": "small_segmenter"},
            "dataset": {"name": "seg_folder", "params": {"images": ".", "masks": ".", "val_fraction": 0}},
        },
        ["search", "s.toml"],
        "seg_folder val_fraction must be a number between 0 and 1 (exclusive), got 0",
    ),
]

# Exports of the finished search in {run}.
EXPORTS = [
    ("export-output-empty", {}, ["export", "{run}", "-o", ""], "the output file is empty"),
    ("export-to-a-folder", {}, ["export", "{run}", "-o", "{tmp}"], "is a folder; give the file to write"),
    ("distill-without-finetuning", {}, ["export", "{run}", "-o", "m.pt", "--distill"], "give --finetune-epochs"),
    (
        "suffix-contradicts-format",
        {},
        ["export", "{run}", "-o", "m.onnx", "--format", "torch"],
        "'m.onnx' has the suffix of onnx files but the format is torch",
    ),
    (
        "finetune-epochs-negative",
        {},
        ["export", "{run}", "-o", "m.pt", "--finetune-epochs", "-1"],
        "--finetune-epochs must be an integer >= 0",
    ),
]

CASES = COMMAND_LINE + SETTINGS + DATA + EXPORTS


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """The output folder of a two-trial search of the test study file."""
    folder = tmp_path_factory.mktemp("finished")
    study = write_study_file(folder / "s.toml", study={"name": "finished"}, train={"epochs": 1})
    assert cli.main(["search", str(study), "--trials", "2", "--out", str(folder / "run"), "--quiet"]) == 0
    return folder / "run"


@pytest.mark.parametrize("sections, command, message", [case[1:] for case in CASES], ids=[c[0] for c in CASES])
def test_a_bad_input_is_one_line_and_exit_2_before_any_training(
    tmp_path, monkeypatch, capsys, request, sections, command, message
):
    from autoprune import baseline

    run = None
    if any("{run}" in part for part in command):
        run = tmp_path / "run"
        shutil.copytree(request.getfixturevalue("finished_run"), run)
    cached = sorted(tmp_path.rglob("baseline-*.pt"))
    capsys.readouterr()

    def no_training(*args, **kwargs):
        raise AssertionError("the baseline was trained before the bad input was refused")

    monkeypatch.setattr(baseline, "train", no_training)
    monkeypatch.chdir(tmp_path)
    write_study_file(tmp_path / "s.toml", **{"train": {"epochs": 1}, **sections})
    argv = [part.replace("{run}", str(run)).replace("{tmp}", str(tmp_path)) for part in command]
    if argv[0] == "search" and "--out" not in argv:
        argv += ["--out", "out"]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert err.count("\n") == 1, err
    assert err.startswith("autoprune: error: ") and message in err, err
    assert sorted(tmp_path.rglob("baseline-*.pt")) == cached
