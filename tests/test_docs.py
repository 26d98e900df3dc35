"""The documentation and the code must not drift apart."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

from autoprune import hookspecs
from autoprune.config import _SECTIONS

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hooks():
    return [(name, fn) for name, fn in vars(hookspecs).items()
            if name.startswith("autoprune_") and inspect.isfunction(fn)]


def test_every_hook_is_documented_with_its_signature():
    text = (DOCS / "plugin_hooks.md").read_text()
    hooks = _hooks()
    assert len(hooks) == 3
    for name, fn in hooks:
        assert f"## {name}(" in text, f"{name} has no section in docs/plugin_hooks.md"
        signature = f"def {name}{inspect.signature(fn)}".replace("'", "")
        assert signature in text, f"docs/plugin_hooks.md lacks the signature {signature}"
        assert fn.__doc__, f"{name} has no docstring"


def test_every_study_file_key_is_documented():
    text = (DOCS / "study_file.md").read_text()
    for section, keys in _SECTIONS.items():
        for key in keys:
            assert re.search(rf"`{section}\.{key}`", text), f"{section}.{key} is not in docs/study_file.md"
