"""A conformance suite for plugin authors, in the style of Optuna's reusable test suites.

Subclass one of the classes below in your own test module (its name must start
with ``Test`` for pytest to collect it) and set the class attributes::

    from autoprune.testing import (DatasetConformance, ImportanceConformance, MetricConformance,
                                   ModelConformance, TaskConformance, WeightImportanceConformance)

    class TestMyImportance(ImportanceConformance):
        importance = "my_metric"          # a registered name, or the function itself

    class TestMyWeightImportance(WeightImportanceConformance):
        weight_importance = "my_weight_metric"

    class TestMyMetric(MetricConformance):
        metric = "my_metric"

    class TestMyModel(ModelConformance):
        model = "my_model"
        params = {"width": 8}

    class TestMyDataset(DatasetConformance):
        dataset = "my_data"

    class TestMyTask(TaskConformance):
        task = "my_task"                  # run on a registered dataset and model of that task
        dataset, dataset_params = "driving_scenes", {"task": "segmentation", "images": 8, "size": 64}
        model = "torchvision/lraspp_mobilenet_v3_large"

autoprune's own plugins are tested with exactly these classes.

:class:`FakeStudy` builds a study without a model, for tests of what reads studies
(a report, a figure, a progress line): its trials carry metrics the test makes up,
written by the study record as a search writes them.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import optuna
import torch
from torch import nn
from torch.utils.data import Subset

from .engine import (
    call_model,
    channel_groups,
    make_permanent,
    n_m_violations,
    prunable_groups,
    prune,
    prune_n_m,
    prune_weights,
    resolve_importance,
    resolve_weight_importance,
    weight_scores,
)
from .engine.sparsity import maskable_layers
from .metrics import MetricContext, measure_metrics, metric_direction
from .plan import Plan, PlanSpace
from .plugins import get_registries
from .results import StudyRecord
from .settings import SearchSettings
from .zoo import create_dataset, create_model, create_task, dataset_task, get_metric, model_task


class _Plain(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(3, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(), nn.Conv2d(12, 16, 3, padding=1), nn.ReLU()
        )
        self.fc = nn.Linear(16 * 4 * 4, 5)

    def forward(self, x):
        return self.fc(self.features(x).flatten(1))


class _Residual(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.a = nn.Sequential(
            nn.Conv2d(8, 10, 3, padding=1),
            nn.BatchNorm2d(10),
            nn.ReLU(),
            nn.Conv2d(10, 8, 3, padding=1),
            nn.BatchNorm2d(8),
        )
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        x = self.stem(x)
        return self.fc(torch.relu(x + self.a(x)).mean((2, 3)))


class _Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.expand = nn.Sequential(nn.Conv2d(3, 16, 1), nn.BatchNorm2d(16), nn.ReLU6())
        self.dw = nn.Sequential(nn.Conv2d(16, 16, 3, padding=1, groups=16), nn.BatchNorm2d(16), nn.ReLU6())
        self.project = nn.Conv2d(16, 8, 1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(self.project(self.dw(self.expand(x))).mean((2, 3)))


class _Grouped(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Sequential(nn.Conv2d(3, 16, 1), nn.GroupNorm(4, 16), nn.ReLU())
        self.g = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.fc = nn.Linear(16, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.g(self.a(x))).mean((2, 3)))


#: The couplings every importance must handle: plain, residual, depthwise, grouped convolution.
CONFORMANCE_MODELS: dict[str, Callable[[], nn.Module]] = {
    "plain": _Plain,
    "residual": _Residual,
    "depthwise": _Depthwise,
    "grouped": _Grouped,
}


def _models():
    torch.manual_seed(0)
    x = torch.randn(4, 3, 4, 4, generator=torch.Generator().manual_seed(0))
    y = torch.tensor([0, 1, 2, 3])
    for kind, make in CONFORMANCE_MODELS.items():
        yield kind, make().eval(), x, [(x, y)]


class ImportanceConformance:
    """Checks an importance: shape, dtype, finiteness, determinism, no side effects, pruning."""

    importance: ClassVar[str | Callable[..., torch.Tensor] | None] = None

    def _resolved(self):
        assert self.importance is not None, f"{type(self).__name__} must set `importance`"
        return resolve_importance(self.importance)

    def _scored(self):
        imp = self._resolved()
        for kind, model, x, calibration in _models():
            groups = channel_groups(model, x, calibration=calibration if imp.needs_grads else None)
            assert groups, f"the {kind} model has no groups"
            for group in groups:
                yield kind, group, imp

    def test_one_finite_float_score_per_channel(self):
        for kind, group, imp in self._scored():
            scores = imp.fn(group)
            where = f"{imp.name} on the {kind} model, group {group.name}"
            assert isinstance(scores, torch.Tensor), f"{where} returned {type(scores).__name__}"
            assert scores.shape == (group.num_channels,), f"{where} returned shape {tuple(scores.shape)}"
            assert scores.is_floating_point(), f"{where} returned dtype {scores.dtype}"
            assert torch.isfinite(scores).all(), f"{where} returned non-finite scores"

    def test_deterministic_for_the_same_inputs(self):
        for kind, group, imp in self._scored():
            assert torch.equal(imp.fn(group), imp.fn(group)), f"{imp.name} is not deterministic on {kind}"

    def test_does_not_modify_its_inputs_or_the_model(self):
        imp = self._resolved()
        for kind, model, x, calibration in _models():
            before = copy.deepcopy(model.state_dict())
            groups = channel_groups(model, x, calibration=calibration if imp.needs_grads else None)
            for group in groups:
                weights = [w.clone() for w in group.weights]
                imp.fn(group)
                assert all(torch.equal(a, b) for a, b in zip(weights, group.weights)), (
                    f"{imp.name} changed group.weights in place on {kind}"
                )
            after = model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before), f"{imp.name} changed the {kind} model"

    def test_prunes_every_coupling(self):
        imp = self._resolved()
        for kind, model, x, calibration in _models():
            shape = model(x).shape
            prune(model, x, 0.5, importance=self.importance, calibration=calibration)
            assert model(x).shape == shape, f"pruning the {kind} model with {imp.name} changed its output"


class WeightImportanceConformance:
    """Checks a weight importance: one finite float per weight, determinism, no side effects,
    and that weight and 2:4 pruning by its scores reach their targets."""

    weight_importance: ClassVar[str | Callable[..., torch.Tensor] | None] = None

    def _scored(self):
        assert self.weight_importance is not None, f"{type(self).__name__} must set `weight_importance`"
        method = resolve_weight_importance(self.weight_importance)
        for kind, model, _x, calibration in _models():
            layers = list(maskable_layers(model))
            yield kind, model, calibration, layers, method

    def test_one_finite_float_score_per_weight(self):
        for kind, model, calibration, layers, _method in self._scored():
            scores = weight_scores(model, layers, self.weight_importance, calibration)
            for name in layers:  # weight_scores checks shape, dtype and finiteness, naming the layer
                assert scores[name].shape == dict(model.named_modules())[name].weight.shape, (kind, name)

    def test_deterministic_and_leaves_the_model_alone(self):
        for kind, model, calibration, layers, method in self._scored():
            before = copy.deepcopy(model.state_dict())
            first = weight_scores(model, layers, self.weight_importance, calibration)
            second = weight_scores(model, layers, self.weight_importance, calibration)
            assert all(torch.equal(first[n], second[n]) for n in layers), (
                f"{method.name} is not deterministic on {kind}"
            )
            after = model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before), f"{method.name} changed the {kind} model"
            assert all(p.grad is None for p in model.parameters()), f"gradients left behind on {kind}"

    def test_weight_and_2_4_pruning_reach_their_targets(self):
        for kind, model, calibration, layers, _method in self._scored():
            shape = model(calibration[0][0]).shape
            scores = weight_scores(model, layers, self.weight_importance, calibration)
            prune_weights(model, dict.fromkeys(layers, 0.5), scores)
            for name in layers:
                weight = dict(model.named_modules())[name].weight
                assert abs(int((weight == 0).sum()) - 0.5 * weight.numel()) <= 1, (kind, name)
            make_permanent(model)
            skipped = prune_n_m(model, 2, 4, layers, weight_scores(model, layers, self.weight_importance, calibration))
            assert n_m_violations(model, 2, 4, [n for n in layers if n not in skipped]) == {}, kind
            assert model(calibration[0][0]).shape == shape


class MetricConformance:
    """Checks a metric: a valid direction, one finite number on every coupling, the model left alone."""

    metric: ClassVar[str | None] = None

    def _measured(self):
        assert self.metric is not None, f"{type(self).__name__} must set `metric`"
        for kind, model, x, calibration in _models():
            context = MetricContext(
                x[:1], x[:1], calibration, seed=0, baseline_model=copy.deepcopy(model), calibration=calibration
            )
            yield kind, model, context

    def test_has_a_direction(self):
        assert self.metric is not None, f"{type(self).__name__} must set `metric`"
        assert get_metric(self.metric).options.get("direction", "minimize") in ("minimize", "maximize")

    def test_one_finite_number_on_every_coupling(self):
        for kind, model, context in self._measured():
            value = measure_metrics(model, [self.metric], context)[self.metric]  # checks it is a finite number
            assert isinstance(value, (int, float)), (kind, value)

    def test_leaves_the_model_alone(self):
        for kind, model, context in self._measured():
            before = copy.deepcopy(model.state_dict())
            measure_metrics(model, [self.metric], context)
            after = model.state_dict()
            assert all(torch.equal(before[k], after[k]) for k in before), f"{self.metric} changed the {kind} model"
            assert not model.training, f"{self.metric} left the {kind} model in training mode"


class ModelConformance:
    """Checks a model factory: ``num_classes`` and ``in_channels`` are honoured, and it prunes.

    The outputs expected follow the task the model is registered for (``task=`` when
    registering; classification when none): ``(N, num_classes)`` logits, per-pixel
    ``(N, num_classes, H, W)`` logits (or a dict holding them in ``"out"``), or
    torchvision's detections for a list of images. Detectors and segmenters are
    tried with RGB inputs only.
    """

    model: ClassVar[str | None] = None
    params: ClassVar[dict[str, Any]] = {}
    input_size: ClassVar[tuple[int, int]] = (16, 16)

    def _build(self, num_classes: int, in_channels: int) -> nn.Module:
        assert self.model is not None, f"{type(self).__name__} must set `model`"
        torch.manual_seed(0)
        return create_model(self.model, num_classes=num_classes, in_channels=in_channels, **self.params).eval()

    @property
    def _task(self) -> str:
        return model_task(self.model)

    def _input(self, in_channels: int) -> Any:
        torch.manual_seed(0)
        return create_task(self._task, 1).repeated(torch.randn(in_channels, *self.input_size), 2)

    def _check_output(self, model: nn.Module, x: Any, num_classes: int) -> None:
        with torch.no_grad():
            out = call_model(model, x)
        problem = create_task(self._task, num_classes).output_problem(out, 2, self.input_size)
        assert not problem, f"{self.model} ({self._task}): {problem}"

    def test_honours_num_classes_and_in_channels(self):
        cases = ((7, 1), (3, 3)) if create_task(self._task, 1).any_in_channels else ((7, 3), (3, 3))
        for num_classes, in_channels in cases:
            self._check_output(self._build(num_classes, in_channels), self._input(in_channels), num_classes)

    def test_can_be_pruned(self):
        model = self._build(7, 3)
        x = self._input(3)
        before = sum(p.numel() for p in model.parameters())
        prune(model, x, 0.5)
        self._check_output(model, x, 7)
        assert sum(p.numel() for p in model.parameters()) < before


class DatasetConformance:
    """Checks a dataset factory: the documented attributes, matching shapes, disjoint splits."""

    dataset: ClassVar[str | None] = None
    params: ClassVar[dict[str, Any]] = {}

    def _data(self):
        assert self.dataset is not None, f"{type(self).__name__} must set `dataset`"
        return create_dataset(self.dataset, **self.params)

    def test_has_the_documented_attributes(self):
        data = self._data()
        for attr in ("train", "val", "test", "num_classes", "input_shape"):
            assert hasattr(data, attr), f"{self.dataset} lacks .{attr}"
        assert isinstance(data.num_classes, int) and data.num_classes >= 2
        assert len(data.input_shape) == 3 and len(data.train) > 0 and len(data.val) > 0

    def test_samples_match_the_declared_shape_and_classes(self):
        data = self._data()
        for split in (data.train, data.val, data.test):
            if split is None:
                continue
            x, y = split[0]
            assert tuple(x.shape) == tuple(data.input_shape)
            problem = dataset_task(data).target_problem(y, tuple(data.input_shape))
            assert not problem, f"{self.dataset}: {problem}"

    def test_splits_are_disjoint(self):
        data = self._data()
        train, val = data.train, data.val
        if isinstance(train, Subset) and isinstance(val, Subset) and train.dataset is val.dataset:
            assert not set(train.indices) & set(val.indices), f"{self.dataset}: train and val overlap"
        else:  # different objects: compare the samples themselves
            seen = {hash(train[i][0].numpy().tobytes()) for i in range(min(len(train), 2000))}
            overlap = sum(hash(val[i][0].numpy().tobytes()) in seen for i in range(min(len(val), 500)))
            assert overlap == 0, f"{self.dataset}: {overlap} validation samples also appear in train"


class TaskConformance:
    """Checks a task on a dataset and model of its kind: batches collate, the loss trains, the scores are
    points, the same twice, and leave the model as it was, and the example input traces."""

    task: ClassVar[str | None] = None
    dataset: ClassVar[str | None] = None
    dataset_params: ClassVar[dict[str, Any]] = {}
    model: ClassVar[str | None] = None
    model_params: ClassVar[dict[str, Any]] = {}
    batch: ClassVar[int] = 4

    def _setup(self):
        for attr in ("task", "dataset", "model"):
            assert getattr(self, attr) is not None, f"{type(self).__name__} must set `{attr}`"
        data = create_dataset(self.dataset, **self.dataset_params)
        task = create_task(self.task, data.num_classes)
        torch.manual_seed(0)
        model = create_model(self.model, data.num_classes, data.input_shape[0], **self.model_params)
        batch = task.collate([data.val[i] for i in range(min(self.batch, len(data.val)))])
        return data, task, model, batch

    def test_names_its_score(self):
        _, task, _, _ = self._setup()
        assert isinstance(task.metric, str) and task.metric, "a task's score needs a name (`metric`)"
        assert task.metric not in task.extra_metrics

    def test_the_loss_is_a_finite_scalar_that_trains_the_model(self):
        _, task, model, (inputs, targets) = self._setup()
        model.train()
        loss = task.loss(model, inputs, targets)
        assert isinstance(loss, torch.Tensor) and loss.ndim == 0 and torch.isfinite(loss), loss
        loss.backward()
        assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())

    def test_scores_are_points_the_same_twice_and_leave_the_model_alone(self):
        _, task, model, batch = self._setup()
        model.train()
        before = copy.deepcopy(model.state_dict())
        first, second = task.scores(model, [batch]), task.scores(model, [batch])
        assert set(first) == {task.metric, *task.extra_metrics}
        assert all(isinstance(v, float) and 0.0 <= v <= 100.0 for v in first.values()), first
        assert first == second and task.score(model, [batch]) == first[task.metric]
        assert model.training, "scoring must restore the model's mode"
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())

    def test_the_example_input_runs_and_traces(self):
        data, task, model, _ = self._setup()
        example = task.example(data.val[0][0])
        model.eval()
        with torch.no_grad():
            call_model(model, example)
        assert prunable_groups(model, example), f"no prunable group found through {self.task}'s example input"


def registered(kind: str) -> list[str]:
    """Names registered for ``kind`` ("importance", "weight_importance", "metric", "model", "dataset" or "task")."""
    return get_registries().of(kind).names()


#: The baseline metrics of a :class:`FakeStudy` unless it is given its own.
FAKE_BASELINE: dict[str, float] = {"accuracy": 95.0, "flops": 1_000_000, "params": 10_000}


class FakeStudy:
    """An autoprune study whose trials' metrics are made up, for testing what reads a study.

    It is created and its trials are written by :class:`~autoprune.results.StudyRecord`
    as a search writes them (``create``, ``enqueue``, ``write_plan``, ``write_trial``),
    so a report, a figure or any Optuna client reads it as it reads a real study; only
    the pruning and the measuring are left out::

        fake = FakeStudy(["conv1", "conv2"], SearchSettings(max_accuracy_drop=1.0, rate_step=0.1))
        fake.queue(fake.space.uniform(0.2))     # the first trial prunes 20 % of every group
        fake.run(lambda plan: {"accuracy": ..., "accuracy_drop": ..., "flops": ...}, trials=30)
        write_report(fake.record, folder)

    ``sampler`` proposes the plans (Optuna's random sampler seeded with the study's seed
    when not given); ``storage`` and ``study_name`` are Optuna's; ``baseline``, ``source``
    and ``run`` are what :meth:`StudyRecord.create` records. Plans are local (a rate and a
    method per group): a global plan needs a model to resolve it.
    """

    def __init__(
        self,
        groups: list[str],
        settings: SearchSettings | None = None,
        *,
        baseline: Mapping[str, float] | None = None,
        source: Mapping[str, Any] | None = None,
        run: Mapping[str, Any] | None = None,
        storage: str | optuna.storages.BaseStorage | None = None,
        study_name: str | None = None,
        sampler: optuna.samplers.BaseSampler | None = None,
    ) -> None:
        settings = settings if settings is not None else SearchSettings(max_accuracy_drop=1.0)
        study = optuna.create_study(
            study_name=study_name,
            storage=storage,
            directions=[metric_direction(o) for o in settings.objectives],
            sampler=sampler if sampler is not None else optuna.samplers.RandomSampler(seed=settings.seed),
        )
        self.record = StudyRecord(study)
        self.record.create(
            settings,
            list(groups),
            dict(FAKE_BASELINE if baseline is None else baseline),
            dict(source or {}),
            run=dict(run or {}),
        )

    @property
    def study(self) -> optuna.Study:
        return self.record.study

    @property
    def space(self) -> PlanSpace:
        return self.record.space

    def queue(self, plan: Plan) -> None:
        """Have the next trial prune ``plan`` (its rates rounded down to the study's grid), as a warm start is."""
        self.record.enqueue(self.space.params(plan))

    def run(self, measure: Callable[[Plan], Mapping[str, float]], trials: int = 1) -> list[optuna.trial.FrozenTrial]:
        """Run ``trials`` trials as a search does, queued plans first, each recording ``measure(plan)``:
        ``accuracy``, ``accuracy_drop`` and every objective at least. Return the new trials."""
        record, numbers = self.record, []

        def objective(trial: optuna.Trial) -> float | list[float]:
            numbers.append(trial.number)
            plan = self.space.suggest(trial, given=record.given_plan(trial))
            record.write_plan(trial, plan)
            return record.write_trial(trial, dict(measure(plan)))

        self.study.optimize(objective, n_trials=trials)
        done = {t.number: t for t in record.trials()}
        return [done[n] for n in numbers]

    def trial(self, metrics: Mapping[str, float], plan: Plan | None = None) -> optuna.trial.FrozenTrial:
        """One trial that records ``metrics``: of ``plan`` when given, else of the next plan proposed."""
        if plan is not None:
            self.queue(plan)
        return self.run(lambda _plan: metrics)[0]
