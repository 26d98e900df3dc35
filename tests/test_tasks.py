"""Tasks' scores: the reference implementations give 100 for perfect predictions and less for worse ones."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader

import autoprune


class Replay(nn.Module):
    """A model that answers each batch with the predictions it was given, in order."""

    def __init__(self, answers: list) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.answers = list(answers)

    def forward(self, inputs):
        return self.answers.pop(0)


def _batches(task_name: str, seed: int = 0):
    data = autoprune.create_dataset("driving_scenes", task=task_name, images=24, test_images=0, size=64, seed=seed)
    task = autoprune.create_task(task_name, data.num_classes)
    return task, list(DataLoader(data.val, batch_size=2, collate_fn=task.collate))


def _shifted(boxes: torch.Tensor, pixels: float) -> torch.Tensor:
    return boxes + torch.tensor([pixels, pixels, pixels, pixels])


def test_detection_scores_100_for_the_ground_truth_and_less_as_boxes_shift():
    task, batches = _batches("detection")
    assert task.metric == "map" and task.extra_metrics == ("map_50",)
    scores = {}
    for shift in (0.0, 2.0, 6.0):
        answers = [
            [
                {"boxes": _shifted(t["boxes"], shift), "scores": torch.ones(len(t["boxes"])), "labels": t["labels"]}
                for t in targets
            ]
            for _, targets in batches
        ]
        scores[shift] = task.scores(Replay(answers), batches)
    assert scores[0.0] == {"map": pytest.approx(100.0), "map_50": pytest.approx(100.0)}
    assert 100.0 > scores[2.0]["map"] > scores[6.0]["map"]
    assert scores[2.0]["map_50"] > scores[2.0]["map"]  # a loose threshold forgives a small shift
    wrong_class = [
        [{"boxes": t["boxes"], "scores": torch.ones(len(t["boxes"])), "labels": t["labels"] % 3 + 1} for t in targets]
        for _, targets in batches
    ]
    assert task.score(Replay(wrong_class), batches) < 5.0
    nothing = [
        [
            {"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0, dtype=torch.int64)}
            for _ in targets
        ]
        for _, targets in batches
    ]
    assert task.score(Replay(nothing), batches) == 0.0


def test_segmentation_scores_100_for_the_ground_truth_and_less_for_a_worse_map():
    task, batches = _batches("segmentation")
    assert task.metric == "miou"

    def logits(labels: torch.Tensor) -> dict:  # as torchvision's segmenters answer
        return {"out": nn.functional.one_hot(labels, 6).permute(0, 3, 1, 2).float()}

    assert task.score(Replay([logits(y) for _, y in batches]), batches) == pytest.approx(100.0)
    shifted = task.score(Replay([logits(torch.roll(y, 2, dims=2)) for _, y in batches]), batches)
    road_only = task.score(Replay([logits(torch.where(y > 0, 1, 0)) for _, y in batches]), batches)
    assert 100.0 > shifted > road_only > 0.0
    ignored = [(x, torch.where(y == 2, 255, y)) for x, y in batches]  # lane markings not labelled (255)
    no_lanes = [logits(torch.where(y == 2, 1, y)) for _, y in batches]  # and called road
    assert task.score(Replay(no_lanes), ignored) == pytest.approx(100.0)  # ignored pixels count nowhere
    assert task.score(Replay(no_lanes), batches) < 100.0


@pytest.mark.baseline("brief")
def test_classification_scores_top_1_accuracy(baseline, digits):
    task = autoprune.create_task("classification", digits.num_classes)
    val = DataLoader(digits.val, batch_size=64)
    assert task.score(baseline, val) == pytest.approx(autoprune.metrics.accuracy(baseline, val))


def test_a_dataset_names_its_task_and_an_unknown_task_is_a_clear_error(digits):
    from autoprune.zoo import dataset_task

    assert dataset_task(digits).name == "classification"
    scenes = autoprune.create_dataset("driving_scenes", task="segmentation", images=4, size=32)
    assert dataset_task(scenes).name == "segmentation" and dataset_task(scenes).num_classes == 6
    with pytest.raises(autoprune.AutopruneError, match="unknown task 'detectoin'; did you mean 'detection'"):
        autoprune.create_task("detectoin", 4)


#: How the studies of detectors and segmenters search: three trials, one of them at a uniform 30 %.
SCENE_SEARCH = {
    "max_accuracy_drop": 100.0,
    "trials": 3,
    "calibration_batches": 2,
    "uniform_starts": (0.3,),
    "warm_start": "uniform",
}


def _trained_gain(kind: str, model_name: str, params: dict, epochs: int, lr: float):
    data = autoprune.create_dataset("driving_scenes", task=kind, images=60, test_images=0, size=64)
    task = autoprune.create_task(data.task, data.num_classes)
    torch.manual_seed(0)
    model = autoprune.create_model(model_name, num_classes=data.num_classes, **params)
    batch = task.collate([data.train[i] for i in range(8)])
    val = list(DataLoader(data.val, batch_size=6, collate_fn=task.collate))
    model.train()
    with torch.no_grad():
        before = (float(task.loss(model, *batch)), task.score(model, val))
    autoprune.train(model, data, autoprune.TrainSettings(epochs=epochs, batch_size=8, lr=lr), seed=0)
    model.train()
    with torch.no_grad():
        after = (float(task.loss(model, *batch)), task.score(model, val))
    return before, after


def test_training_follows_the_dataset_s_task_segmentation():
    (loss0, score0), (loss1, score1) = _trained_gain("segmentation", "small_segmenter", {"width": 8}, 8, 0.1)
    assert loss1 < 0.7 * loss0 and score1 > score0 + 10, (loss0, score0, loss1, score1)


def test_training_follows_the_dataset_s_task_detection():
    (loss0, _), (loss1, _) = _trained_gain("detection", "small_detector", {"width": 8, "image_size": 64}, 3, 0.01)
    assert loss1 < 0.8 * loss0, (loss0, loss1)


def test_a_task_declares_whether_it_can_be_distilled_and_a_new_loss_is_not_unless_it_says_so():
    class OwnLoss(autoprune.Task):
        def loss(self, model, inputs, targets):
            return model(inputs).sum()

    class OwnLossWithLogits(OwnLoss):
        distillable = True

    from autoprune.tasks import Detection, Segmentation

    assert autoprune.Task.distillable and not Detection.distillable and not Segmentation.distillable
    assert not OwnLoss.distillable and OwnLossWithLogits.distillable


def test_distillation_is_refused_for_a_task_without_class_probabilities():
    data = autoprune.create_dataset("driving_scenes", task="segmentation", images=4, size=32)
    model = autoprune.create_model("small_segmenter", num_classes=6, width=8)
    with pytest.raises(autoprune.AutopruneError, match="distillation matches class probabilities; the 'segmentation'"):
        autoprune.train(model, data, autoprune.TrainSettings(epochs=1), teacher=model)


@pytest.mark.parametrize(
    ("kind", "model_name", "params", "lr"),
    [
        ("segmentation", "small_segmenter", {"width": 8}, 0.1),
        ("detection", "small_detector", {"width": 8, "image_size": 64}, 0.01),
    ],
)
def test_a_search_scores_trials_by_the_dataset_s_task_and_its_best_model_replays_the_score(
    kind, model_name, params, lr
):
    data = autoprune.create_dataset("driving_scenes", task=kind, images=60, test_images=0, size=64)
    task = autoprune.create_task(kind, data.num_classes)
    torch.manual_seed(0)
    model = autoprune.create_model(model_name, num_classes=data.num_classes, **params)
    autoprune.train(model, data, autoprune.TrainSettings(epochs=3, batch_size=8, lr=lr))
    val = list(DataLoader(data.val, batch_size=16, collate_fn=task.collate))
    baseline_score = task.score(model, val)
    result = autoprune.search(model, data, batch_size=16, seed=0, importances=("l1",), **SCENE_SEARCH)
    trials = result.record.completed()
    assert len(trials) == 3
    assert result.record.study.user_attrs["baseline_accuracy"] == pytest.approx(baseline_score)
    assert result.record.study.user_attrs[f"baseline_{task.metric}"] == pytest.approx(baseline_score)
    for trial in trials:  # the task's score, and its drop from the baseline's
        assert trial.user_attrs["accuracy_drop"] == pytest.approx(baseline_score - trial.user_attrs["accuracy"])
        score = task.metric  # recorded under its own name too, with the task's other scores
        assert trial.user_attrs[score] == trial.user_attrs["accuracy"]
        assert trial.user_attrs[f"{score}_drop"] == trial.user_attrs["accuracy_drop"]
        assert all(0.0 <= trial.user_attrs[name] <= 100.0 for name in task.extra_metrics)
    best = result.best_trial
    assert best.user_attrs["flops"] < result.record.study.user_attrs["baseline_flops"]
    assert task.score(result.best_model, val) == pytest.approx(best.user_attrs["accuracy"], abs=1e-6)


def test_settings_a_task_cannot_serve_are_refused_before_any_work():
    data = autoprune.create_dataset("driving_scenes", task="detection", images=8, size=32)
    model = autoprune.create_model("small_detector", num_classes=4, width=8, image_size=32)
    with pytest.raises(autoprune.AutopruneError, match="small_detector needs width divisible by 8"):
        autoprune.create_model("small_detector", num_classes=4, width=4)
    with pytest.raises(
        autoprune.AutopruneError,
        match="^the dataset's task is 'detection'; the corruption metrics \\('robust_accuracy'\\) "
        "serve classification only$",
    ):
        autoprune.search(model, data, max_accuracy_drop=1.0, trials=1, constraints={"robust_accuracy": 50.0})


def test_taylor_importance_and_recovery_steps_take_a_detectors_own_loss():
    """Gradient importances rank a detector's channels by its training losses (Molchanov et al., CVPR 2019),
    with its normalization statistics untouched; recovery steps train on the same losses."""
    data = autoprune.create_dataset("driving_scenes", task="detection", images=24, test_images=0, size=32)
    torch.manual_seed(0)
    model = autoprune.create_model("small_detector", num_classes=data.num_classes, width=8, image_size=32)
    autoprune.train(model, data, autoprune.TrainSettings(epochs=1, batch_size=8, lr=0.01))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = autoprune.search(
        model, data, importances=("taylor",), steps=2, recovery_steps=1, batch_size=8, **SCENE_SEARCH
    )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the baseline is not changed
    trials = result.record.completed()
    assert len(trials) == 3 and all(result.record.plan(t).methods for t in trials)
    assert {m for t in trials for m in result.record.plan(t).methods.values()} == {"taylor"}
    best = result.best_trial
    task = autoprune.create_task("detection", data.num_classes)
    val = list(DataLoader(data.val, batch_size=8, collate_fn=task.collate))
    assert task.score(result.best_model, val) == pytest.approx(best.user_attrs["map"], abs=1e-6)
    scores = autoprune.engine.group_scores(
        model,
        task.example(data.val[0][0]),
        "taylor",
        calibration=val[:1],
        batch_loss=task.gradient_loss,
    )
    assert all(s.shape[0] > 0 and torch.isfinite(s).all() and s.abs().sum() > 0 for s in scores.values())
    assert not model.training and all(p.grad is None for p in model.parameters())


def test_a_detection_study_runs_from_the_command_line(tmp_path, study_file, capsys):
    from autoprune import cli

    study = study_file(
        "det.toml",
        study={"max_accuracy_drop": 100.0, "trials": 2},
        model={"name": "small_detector", "params": {"width": 8, "image_size": 32}},
        dataset={"name": "driving_scenes", "params": {"task": "detection", "images": 24, "test_images": 4, "size": 32}},
        train={"epochs": 1, "batch_size": 8, "lr": 0.01},
        search={"importances": ["l1"], "batch_size": 8, "calibration_batches": 2, "uniform_starts": [0.3]},
    )
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out"), "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "2 trials" in out and "baseline map" in out and "best trial" in out
    assert (tmp_path / "out" / "best.pt").is_file() and (tmp_path / "out" / "report" / "index.html").is_file()
    page = (tmp_path / "out" / "report" / "index.html").read_text()
    assert "validation mAP" in page and "points of COCO mAP@[.5:.95] lost" in page and "<th>mAP drop</th>" in page
    rebuilt_study = autoprune.Study.load(tmp_path / "out")  # every trial rebuilt from the record scores as recorded
    for trial in rebuilt_study.record.completed():
        rebuilt = rebuilt_study.rebuild(trial.number)
        task = autoprune.create_task("detection", rebuilt.data.num_classes)
        val = list(DataLoader(rebuilt.data.val, batch_size=8, collate_fn=task.collate))
        assert task.score(rebuilt.model, val) == pytest.approx(trial.user_attrs["map"], abs=1e-6)

    # the chosen detector exports with its post-processing: scripted, and to ONNX checked by onnxruntime
    image = autoprune.create_dataset("driving_scenes", task="detection", images=24, test_images=4, size=32).val[0][0]
    for fmt in ("torchscript", "onnx"):
        target = tmp_path / f"detector.{fmt}"
        assert cli.main(["export", str(tmp_path / "out"), "-o", str(target), "--format", fmt]) == 0
        shown = capsys.readouterr().out
        assert "val_map " in shown and "val_map_50" in shown and "test_map" in shown and "outputs match" in shown
    scripted = torch.jit.load(str(tmp_path / "detector.torchscript"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # torchvision says it returns (losses, detections) when scripted
        _, detections = scripted([image])
    assert set(detections[0]) == {"boxes", "scores", "labels"} and detections[0]["boxes"].shape[1] == 4

    import onnxruntime

    session = onnxruntime.InferenceSession(str(tmp_path / "detector.onnx"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["image"]
    boxes, scores, labels = session.run(None, {"image": image.numpy()})
    assert boxes.shape == (len(scores), 4) and labels.shape == scores.shape


@pytest.mark.parametrize(
    ("model", "dataset", "message"),
    [
        (
            "small_detector",
            {"name": "digits"},
            (
                "model 'small_detector' is registered for detection, but dataset "
                "'digits' gives classification samples; classification models: "
            ),
        ),
        (
            "small_cnn",
            {"name": "driving_scenes", "params": {"task": "segmentation", "images": 8, "size": 32}},
            (
                "model 'small_cnn' is registered for classification, but dataset 'driving_scenes' gives segmentation "
                "samples; segmentation models: small_segmenter, torchvision/deeplabv3_mobilenet_v3_large"
            ),
        ),
    ],
    ids=["detector-on-classification-data", "classifier-on-segmentation-data"],
)
def test_a_model_for_another_task_than_the_dataset_s_is_one_line_before_any_work(
    tmp_path, study_file, capsys, model, dataset, message
):
    from autoprune import cli

    study = study_file("mismatch.toml", study={"trials": 2}, model={"name": model}, dataset=dataset)
    assert cli.main(["search", str(study), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"autoprune: error: {message}") and err.count("\n") == 1
    assert not (tmp_path / "out" / "study.db").exists()  # nothing trained or recorded


def test_each_task_says_what_is_wrong_with_a_target_or_an_output_and_nothing_for_a_right_one():
    classification, detection, segmentation = (
        autoprune.create_task(n, 3) for n in ("classification", "detection", "segmentation")
    )
    assert classification.target_problem(torch.tensor(2), (1, 8, 8)) == ""
    assert "outside 0..2" in classification.target_problem(torch.tensor(3), (1, 8, 8))
    assert classification.output_problem(torch.zeros(2, 3), 2, (8, 8)) == ""
    assert "not (2, 3)" in classification.output_problem(torch.zeros(2, 4), 2, (8, 8))
    box = {"boxes": torch.tensor([[1.0, 1.0, 4.0, 5.0]]), "labels": torch.tensor([2])}
    assert detection.target_problem(box, (3, 8, 8)) == ""
    flat = {"boxes": torch.tensor([[1.0, 1.0, 1.0, 5.0]]), "labels": torch.tensor([2])}
    assert detection.target_problem(flat, (3, 8, 8)) == "a box of no width or height"
    found = {"boxes": torch.zeros(1, 4), "scores": torch.ones(1), "labels": torch.tensor([5])}
    assert "a label outside" in detection.output_problem([found, found], 2, (8, 8))
    assert segmentation.target_problem(torch.full((8, 8), 255), (3, 8, 8)) == ""  # every pixel ignored
    assert "not 255" in segmentation.target_problem(torch.full((8, 8), 3), (3, 8, 8))
    assert segmentation.output_problem({"out": torch.zeros(2, 3, 8, 8)}, 2, (8, 8)) == ""
    assert "not (2, 3, 8, 8)" in segmentation.output_problem(torch.zeros(2, 3, 4, 4), 2, (8, 8))
    assert classification.any_in_channels and not detection.any_in_channels and not segmentation.any_in_channels
