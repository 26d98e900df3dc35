"""Small models with the couplings the pruning engine must handle, the digits data and the baselines trained
on it, and the storage and study files a test writes."""

from __future__ import annotations

import copy
import json
import re
import shutil
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import autoprune
from autoprune import TrainSettings, plugins, train
from autoprune.storage import folder_storage


class ConcatNet(nn.Module):
    """Two branches concatenated, then a plain convolution (DenseNet/Inception-style)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.left = nn.Sequential(nn.Conv2d(16, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU())
        self.right = nn.Sequential(nn.Conv2d(16, 20, 1), nn.BatchNorm2d(20), nn.ReLU())
        self.merge = nn.Sequential(nn.Conv2d(32, 24, 3, padding=1), nn.BatchNorm2d(24), nn.ReLU())
        self.fc = nn.Linear(24, num_classes)

    def forward(self, x):
        x = self.stem(x)
        x = torch.cat([self.left(x), self.right(x)], dim=1)
        return self.fc(self.merge(x).mean((2, 3)))


class DepthwiseNet(nn.Module):
    """MobileNetV2-style inverted residuals with depthwise convolutions."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU6())
        self.expand = nn.Sequential(nn.Conv2d(16, 48, 1), nn.BatchNorm2d(48), nn.ReLU6())
        self.depthwise = nn.Sequential(nn.Conv2d(48, 48, 3, padding=1, groups=48), nn.BatchNorm2d(48), nn.ReLU6())
        self.project = nn.Sequential(nn.Conv2d(48, 16, 1), nn.BatchNorm2d(16))
        self.head = nn.Conv2d(16, num_classes, 1)  # a convolutional classifier

    def forward(self, x):
        x = self.stem(x)
        x = x + self.project(self.depthwise(self.expand(x)))
        return self.head(x).mean((2, 3))


class GroupedConcatNet(nn.Module):
    """A grouped convolution that consumes a concatenation (a Torch-Pruning 1.6 trap)."""

    def __init__(self, num_classes: int = 5) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 8, 3, padding=1)
        self.b = nn.Conv2d(3, 8, 3, padding=1)
        self.grouped = nn.Conv2d(16, 16, 3, padding=1, groups=4)
        self.c = nn.Conv2d(16, 12, 1)
        self.fc = nn.Linear(12, num_classes)

    def forward(self, x):
        x = torch.relu(self.grouped(torch.cat([self.a(x), self.b(x)], 1)))
        return self.fc(torch.relu(self.c(x)).mean((2, 3)))


def tiny_resnet(num_classes: int = 5) -> nn.Module:
    return autoprune.create_model("resnet20", num_classes=num_classes, in_channels=3, width=8)


MODELS = {
    "residual": tiny_resnet,
    "concat": ConcatNet,
    "depthwise": DepthwiseNet,
}


@pytest.fixture
def example() -> torch.Tensor:
    return torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))


@pytest.fixture(params=sorted(MODELS))
def model_kind(request) -> str:
    return request.param


@pytest.fixture
def make_model(model_kind):
    def make() -> nn.Module:
        torch.manual_seed(0)
        return MODELS[model_kind]().eval()

    return make


@pytest.fixture
def temporary_plugin():
    """Register plugin modules or objects for one test, unregistering them after."""
    added: list[str] = []

    def add(plugin, name: str | None = None) -> str:
        added.append(plugins.register(plugin, name=name))
        return added[-1]

    yield add
    for name in added:
        plugins.unregister(name=name)


THIRD_PARTY = textwrap.dedent(
    '''
    import torch
    from torch import nn
    import autoprune

    def last_layer_l1(group):
        """Scores from the producing layer alone (Li et al., ICLR 2017)."""
        calls.append(group.name)
        return group.weights[0].flatten(1).abs().sum(1)

    calls = []

    def tiny(num_classes, in_channels, width=4):
        return nn.Sequential(nn.Conv2d(in_channels, width, 3), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                             nn.Flatten(), nn.Linear(width, num_classes))

    def noise(size=32):
        g = torch.Generator().manual_seed(0)
        ds = torch.utils.data.TensorDataset(torch.randn(size, 1, 8, 8, generator=g), torch.arange(size) % 2)
        train, val = autoprune.split_train_val(ds, 0.25)
        return autoprune.DataSplits(train, val, None, 2, (1, 8, 8))

    @autoprune.hookimpl
    def autoprune_register_importances(register):
        register("producer_l1", last_layer_l1, description="L1 of the producing layer")

    @autoprune.hookimpl
    def autoprune_register_models(register):
        register("tiny_thirdparty", tiny, description="a tiny model")

    @autoprune.hookimpl
    def autoprune_register_datasets(register):
        register("noise", noise, description="random inputs")
    '''
)


@pytest.fixture
def third_party_dist(tmp_path):
    """A third-party distribution on sys.path, declaring an ``autoprune`` entry point."""
    (tmp_path / "thirdparty_autoprune.py").write_text(THIRD_PARTY)
    dist = tmp_path / "thirdparty_autoprune-1.2.3.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: thirdparty-autoprune\nVersion: 1.2.3\n")
    (dist / "entry_points.txt").write_text("[autoprune]\nthirdparty = thirdparty_autoprune\n")
    return tmp_path


@pytest.fixture(scope="session")
def digits():
    """scikit-learn's bundled digits (8x8 images, 10 classes), split as the dataset plugin splits them."""
    return autoprune.create_dataset("digits")


#: Every recipe a test trains its digits baseline with, by name: small_cnn (``width``, 8 when not
#: given) trained with these TrainSettings. A test names one with ``@pytest.mark.baseline("short")``
#: (a module with ``pytestmark``) and takes the ``baseline`` fixture; each is trained once a session.
DIGITS_RECIPES: dict[str, dict] = {
    "brief": {"epochs": 1, "batch_size": 64, "lr": 0.05},
    "short": {"epochs": 2, "batch_size": 64, "lr": 0.05},
    "standard": {"epochs": 3, "batch_size": 64, "lr": 0.05},
    "long": {"epochs": 8},
    "default_short": {"epochs": 2},
    "narrow_brief": {"width": 4, "epochs": 1},
}


def pytest_configure(config) -> None:
    config.addinivalue_line(
        "markers", "baseline(recipe): the DIGITS_RECIPES entry the test's `baseline` fixture is trained with"
    )


@pytest.fixture(scope="session")
def train_digits_cnn(digits):
    """``trained(width=8, **recipe)``: a copy of small_cnn trained on digits with a TrainSettings recipe.

    The same initial weights and seed every time; each recipe is trained once per session.
    """
    cache: dict = {}

    def trained(width: int = 8, **recipe) -> nn.Module:
        key = (width, *sorted(recipe.items()))
        if key not in cache:
            torch.manual_seed(0)
            model = autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=width)
            cache[key] = train(model, digits, TrainSettings(**recipe), seed=0)
        return copy.deepcopy(cache[key])

    return trained


@pytest.fixture
def baseline(request, train_digits_cnn) -> nn.Module:
    """A copy of the digits baseline trained with the recipe the test's ``baseline`` marker names."""
    marker = request.node.get_closest_marker("baseline")
    if marker is None or marker.args[0] not in DIGITS_RECIPES:
        named = None if marker is None else marker.args[0]
        pytest.fail(
            f"the baseline fixture needs @pytest.mark.baseline(recipe) of {sorted(DIGITS_RECIPES)}, got {named!r}"
        )
    return train_digits_cnn(**DIGITS_RECIPES[marker.args[0]])


@pytest.fixture
def search_baseline(baseline, digits):
    """``search_baseline(settings=None, **overrides)``: :func:`autoprune.search` of a copy of the test's
    ``baseline`` on digits (the baseline itself is left as it was)."""

    def run(*settings, **overrides):
        return autoprune.search(copy.deepcopy(baseline), digits, *settings, **overrides)

    return run


@pytest.fixture
def storage(tmp_path) -> str:
    """The URL of an SQLite study database in the test's folder, where a search's output folder keeps it
    (so ``autoprune report`` and ``Study.load`` find it there)."""
    return folder_storage(tmp_path)


#: The study file the tests start from: small_cnn on digits, within 1 point; a test changes what it needs.
STUDY_FILE: dict[str, dict] = {
    "study": {"max_accuracy_drop": 1.0},
    "model": {"name": "small_cnn"},
    "dataset": {"name": "digits"},
}


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"a study file cannot hold {value!r}")


def _toml_key(key: str) -> str:
    return key if re.fullmatch(r"[A-Za-z0-9_-]+", key) else json.dumps(key)


def study_file_text(**sections: dict) -> str:
    """The TOML of :data:`STUDY_FILE` with each given section's keys added or replaced.

    Written by hand: the standard library reads TOML but does not write it, and a study file needs
    only tables of strings, numbers, booleans, lists and inline tables.
    """
    merged = {name: dict(keys) for name, keys in STUDY_FILE.items()}
    for name, keys in sections.items():
        merged.setdefault(name, {}).update(keys)
    return "".join(
        f"[{name}]\n" + "".join(f"{_toml_key(k)} = {_toml_value(v)}\n" for k, v in keys.items())
        for name, keys in merged.items()
    )


def write_study_file(path: Path, **sections: dict) -> Path:
    """Write :func:`study_file_text` of ``sections`` to ``path``; return ``path``."""
    path.write_text(study_file_text(**sections))
    return path


@pytest.fixture(scope="session")
def quickstart_baseline(tmp_path_factory) -> Path:
    """The baseline of studies/quickstart.toml, trained once a session: the cache file an output folder keeps."""
    from autoprune.baseline import build_model, load_or_train
    from autoprune.settings import load_study_file

    study = load_study_file("studies/quickstart.toml")
    study = study.replace(out=str(tmp_path_factory.mktemp("quickstart")))
    data = autoprune.create_dataset(study.dataset, **study.dataset_params)
    load_or_train(study, build_model(study, data), data, log=lambda message: None)
    (cached,) = study.out_dir.glob("baseline-*.pt")
    return cached


@pytest.fixture
def quickstart_folder(quickstart_baseline):
    """``quickstart_folder(path)``: output folder ``path`` holding the quickstart's trained baseline (trained once
    a session), so that a search of studies/quickstart.toml there goes straight to its trials; returns ``path``."""

    def seeded(path: str | Path) -> Path:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        shutil.copy(quickstart_baseline, path / quickstart_baseline.name)
        return path

    return seeded


@pytest.fixture
def study_file(tmp_path):
    """``study_file(name="study.toml", **sections)``: a study file written in the test's folder, from
    :data:`STUDY_FILE` with each given section's keys added or replaced."""

    def write(name: str = "study.toml", **sections: dict) -> Path:
        return write_study_file(tmp_path / name, **sections)

    return write
