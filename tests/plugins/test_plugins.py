from __future__ import annotations

import subprocess
import sys
import types

import pytest
import torch

import autoprune
from autoprune import plugins
from autoprune.errors import AutopruneError, DuplicateNameError, UnknownNameError

BUILTIN_IMPORTANCES = {"l1", "l2", "fpgm", "taylor", "bn_scale", "random"}
BUILTIN_DATASETS = {
    "digits",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "image_folder",
    "driving_scenes",
    "coco_folder",
    "seg_folder",
}


def test_builtins_are_registered_through_entry_points_with_their_source():
    pm = plugins.get_plugin_manager()
    assert plugins.plugin_source(pm.get_plugin("importance_magnitude")).distribution == "autoprune"
    entries = {e.name: e for e in plugins.list_entries("importance")}
    assert set(entries) >= BUILTIN_IMPORTANCES
    assert entries["l1"].source.distribution == "autoprune"
    assert entries["taylor"].options["needs_grads"] is True
    assert set(autoprune.list_datasets()) >= BUILTIN_DATASETS
    assert {"resnet20", "resnet32", "resnet56", "vgg_small"} <= set(autoprune.list_models())


def test_every_torchvision_classifier_detector_and_segmenter_is_registered():
    import torchvision

    modules = (torchvision.models, torchvision.models.detection, torchvision.models.segmentation)
    expected = {f"torchvision/{n}" for module in modules for n in torchvision.models.list_models(module=module)}
    assert {"torchvision/resnet18", "torchvision/fcos_resnet50_fpn", "torchvision/fcn_resnet50"} <= expected
    assert expected == set(autoprune.list_models("torchvision/*"))
    classifiers = {f"torchvision/{n}" for n in torchvision.models.list_models(module=torchvision.models)}
    assert set(autoprune.list_models("torchvision/*", task="classification")) == classifiers
    assert "small_detector" in autoprune.list_models(task="detection")


def _plugin(name: str, **hooks) -> types.ModuleType:
    module = types.ModuleType(name)
    for hook, fn in hooks.items():
        setattr(module, hook, autoprune.hookimpl(fn))
    return module


def test_temporary_plugin_is_found_then_gone(temporary_plugin):
    def importances(register):
        register("ones", lambda group: torch.ones(group.num_channels), description="all equal")

    temporary_plugin(_plugin("ones_plugin", autoprune_register_importances=importances), "ones_plugin")
    entry = autoprune.get_importance("ones")
    assert entry.source.plugin == "ones_plugin" and entry.source.distribution is None
    assert entry.description == "all equal"
    plugins.unregister(name="ones_plugin")
    assert "ones" not in autoprune.list_importances()
    with pytest.raises(UnknownNameError):
        autoprune.get_importance("ones")
    temporary_plugin(_plugin("ones_plugin", autoprune_register_importances=importances), "ones_plugin")


def test_duplicate_name_names_both_plugins(temporary_plugin):
    def importances(register):
        register("l1", lambda group: torch.ones(group.num_channels))

    temporary_plugin(_plugin("copycat", autoprune_register_importances=importances), "copycat")
    with pytest.raises(DuplicateNameError) as err:
        plugins.get_registries()
    message = str(err.value)
    assert "'l1'" in message and "copycat" in message and "autoprune" in message
    plugins.unregister(name="copycat")
    assert plugins.get_registries().importances.get("l1").source.plugin == "importance_magnitude"
    temporary_plugin(_plugin("harmless"), "harmless")


def test_unknown_name_suggests_close_names():
    with pytest.raises(UnknownNameError) as err:
        autoprune.get_importance("fpmg")
    assert "'fpgm'" in str(err.value) and "did you mean" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        autoprune.create_model("resnet21", num_classes=10)
    assert "'resnet20'" in str(err.value)
    with pytest.raises(UnknownNameError) as err:
        autoprune.create_dataset("digitz")
    assert "'digits'" in str(err.value)


@pytest.mark.parametrize(
    ("args", "kwargs", "fragment"),
    [
        (("bad name!", lambda g: g), {}, "a name is"),
        (("notcallable", 3), {}, "not callable"),
        (("opt", lambda g: g), {"needs_grad": True}, "unknown option 'needs_grad'"),
        (("opt", lambda g: g), {"needs_grads": "yes"}, "must be a bool"),
    ],
)
def test_bad_registrations_are_rejected_with_the_plugin_named(temporary_plugin, args, kwargs, fragment):
    def importances(register):
        register(*args, **kwargs)

    temporary_plugin(_plugin("broken", autoprune_register_importances=importances), "broken")
    with pytest.raises(AutopruneError) as err:
        plugins.get_registries()
    assert "broken" in str(err.value) and fragment in str(err.value)
    plugins.unregister(name="broken")
    temporary_plugin(_plugin("harmless2"), "harmless2")


def test_model_parameters_are_checked_before_building():
    with pytest.raises(AutopruneError) as err:
        autoprune.create_model("resnet20", num_classes=10, depth=3)
    assert "depth" in str(err.value) and "width" in str(err.value)
    with pytest.raises(AutopruneError, match="positive integer"):
        autoprune.create_model("resnet20", num_classes=0)


def test_registering_a_plugin_name_twice_is_a_clear_error(temporary_plugin):
    temporary_plugin(_plugin("twice"), "twice")
    with pytest.raises(AutopruneError, match="cannot register plugin 'twice'"):
        plugins.register(_plugin("twice"), name="twice")


def test_third_party_entry_point_is_listed_and_used(third_party_dist, monkeypatch):
    env_path = f"{third_party_dist}"
    out = subprocess.run(
        [sys.executable, "-m", "autoprune", "plugins"],
        capture_output=True,
        text=True,
        env={**_env(), "PYTHONPATH": env_path},
        check=True,
    ).stdout
    for name in ("producer_l1", "tiny_thirdparty", "noise"):
        line = next(row for row in out.splitlines() if row.strip().startswith(name + " "))
        assert "thirdparty-autoprune 1.2.3" in line
    assert "importance_magnitude" in out  # listed side by side with the built-ins

    monkeypatch.syspath_prepend(env_path)
    monkeypatch.setattr(plugins, "_manager", None)
    monkeypatch.setattr(plugins, "_registries", None)
    import thirdparty_autoprune

    thirdparty_autoprune.calls.clear()
    model = autoprune.create_model("tiny_thirdparty", num_classes=3, in_channels=1, width=8)
    data = autoprune.create_dataset("noise")
    x = torch.stack([data.train[i][0] for i in range(2)])
    autoprune.prune(model, x, 0.5, importance="producer_l1")
    assert thirdparty_autoprune.calls == ["0"]
    assert model[0].out_channels == 4 and model(x).shape == (2, 3)


def _env() -> dict[str, str]:
    import os

    return {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}


def test_plugins_env_restricts_loaded_entry_points():
    out = subprocess.run(
        [sys.executable, "-m", "autoprune", "plugins"],
        capture_output=True,
        text=True,
        env={**_env(), plugins.PLUGINS_ENV: "importance_magnitude"},
        check=True,
    ).stdout
    assert "l1" in out and "fpgm" not in out and "resnet20" not in out


def test_a_name_left_out_by_the_plugins_env_is_a_one_line_error_that_says_why(tmp_path, study_file):
    study = study_file("s.toml")
    run = subprocess.run(
        [sys.executable, "-m", "autoprune", "search", str(study)],
        capture_output=True,
        text=True,
        check=False,
        env={**_env(), plugins.PLUGINS_ENV: "importance_magnitude"},
        cwd=tmp_path,
    )
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr.count("\n") == 1
    assert (
        "unknown dataset 'digits'; none are registered (AUTOPRUNE_PLUGINS='importance_magnitude' loads only"
        in run.stderr
    )
    assert "datasets_builtin" in run.stderr


def test_a_misspelled_hook_is_an_error_naming_the_plugin_and_the_hook(temporary_plugin):
    def importances(register):
        register("never_seen", lambda group: torch.ones(group.num_channels))

    module = types.ModuleType("typo_plugin")
    module.autoprune_register_importance = autoprune.hookimpl(importances)  # the hook ends in "importances"
    with pytest.raises(AutopruneError) as err:
        plugins.register(module, name="typo_plugin")
    message = str(err.value)
    assert "'typo_plugin'" in message and "'autoprune_register_importance'" in message
    assert "did you mean 'autoprune_register_importances'?" in message
    assert "typo_plugin" not in [
        plugins.get_plugin_manager().get_name(p) for p in plugins.get_plugin_manager().get_plugins()
    ]
    temporary_plugin(_plugin("harmless3"), "harmless3")
