"""A broken installed plugin is left out with one line; the others keep working. A --plugin module that
registers nothing, or an AUTOPRUNE_PLUGINS name nothing declares, is an error."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from autoprune import plugins


def _installed_broken_plugin(folder, body: str) -> dict[str, str]:
    """An installed package (a dist-info on PYTHONPATH) whose ``autoprune`` entry point is ``body``."""
    info = folder / "broken_dist-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-dist\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[autoprune]\nbroken = broken_plugin_mod\n")
    (folder / "broken_plugin_mod.py").write_text(body)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", plugins.PLUGINS_ENV)}
    return {**env, "PYTHONPATH": str(folder)}


def _autoprune(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "autoprune", *args], capture_output=True, text=True, env=env, check=False
    )


@pytest.mark.parametrize(
    ("body", "error"),
    [
        ("raise ImportError('needs a library that is not installed')", "ImportError: needs a library"),
        ("1 / 0", "ZeroDivisionError: division by zero"),
        (
            "import autoprune\n@autoprune.hookimpl\ndef autoprune_register_importance(register): pass\n",
            "which is not a hook of autoprune",
        ),
    ],
    ids=["import-error", "raises", "misspelled-hook"],
)
def test_a_broken_installed_plugin_is_left_out_in_one_line_and_the_others_work(tmp_path, body, error):
    env = _installed_broken_plugin(tmp_path, body)
    run = _autoprune("plugins", env=env)
    assert run.returncode == 0 and "l1" in run.stdout and "resnet20" in run.stdout  # the others are listed
    assert "left out (cannot be loaded):" in run.stdout and "broken-dist" in run.stdout
    warning = run.stderr.strip()
    assert "\n" not in warning and "Traceback" not in run.stderr
    assert "plugin 'broken' (package broken-dist) cannot be loaded" in warning and error in warning
    assert f"set {plugins.PLUGINS_ENV}=" in warning and "importance_magnitude" in warning
    assert "broken," not in warning.split(f"{plugins.PLUGINS_ENV}=")[1]  # the way out leaves it out


def test_an_unknown_plugins_env_name_and_a_module_without_hooks_are_one_line_errors(tmp_path):
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = _autoprune("plugins", env={**env, plugins.PLUGINS_ENV: "nosuch"})
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "AUTOPRUNE_PLUGINS names 'nosuch', which no installed package declares" in run.stderr
    assert "importance_magnitude" in run.stderr
    run = _autoprune("--plugin", "os.path", "plugins", env=env)
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "'os.path' implements no hook" in run.stderr
    (tmp_path / "raising_mod.py").write_text("raise RuntimeError('boom at import')\n")
    run = _autoprune("--plugin", "raising_mod", "plugins", env={**env, "PYTHONPATH": str(tmp_path)})
    assert run.returncode == 2 and run.stderr.count("\n") == 1
    assert "cannot import plugin module 'raising_mod': RuntimeError: boom at import" in run.stderr
