from __future__ import annotations

import sys
import types

import pytest

import autoprune
from autoprune import cli, plugins


def test_plugins_lists_every_kind_with_its_source(capsys):
    assert cli.main(["plugins"]) == 0
    out = capsys.readouterr().out
    assert "importances:" in out and "models:" in out and "datasets:" in out
    line = next(l for l in out.splitlines() if l.strip().startswith("fpgm "))
    assert "He et al., CVPR 2019" in line and "autoprune" in line and "importance_fpgm" in line
    assert "[needs grads]" in next(l for l in out.splitlines() if l.strip().startswith("taylor "))


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
