"""The kinds of plugin object are declared once (autoprune.plugins.KINDS), and everything that lists kinds
is built from it."""

from __future__ import annotations

import dataclasses

import pytest

import autoprune
from autoprune import cli, hookspecs
from autoprune.plugins import KIND_NAMES, KINDS, Registries, get_registries
from autoprune.testing import registered


def test_every_kind_has_its_hook_its_registry_and_its_cli_choice():
    assert [f.name for f in dataclasses.fields(Registries)] == [kind.plural for kind in KINDS]
    registers = sorted(n for n in vars(hookspecs) if n.startswith("autoprune_register_"))
    assert sorted(kind.hook for kind in KINDS) == registers
    assert [registry.kind for registry in get_registries()] == list(KIND_NAMES)
    assert cli.KINDS == KIND_NAMES
    assert registered("importance") == autoprune.list_importances() and "l1" in registered("importance")


def test_an_unknown_kind_names_the_valid_ones():
    with pytest.raises(autoprune.AutopruneError, match="unknown plugin kind 'metrics'; kinds: importance, model"):
        registered("metrics")
