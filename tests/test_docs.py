"""The documentation and the code must not drift apart."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from autoprune import SearchSettings, TrainSettings, hookspecs
from autoprune.settings import ALIASES, FILE_KEYS, FINETUNE, section_keys

DOCS = Path(__file__).resolve().parent.parent / "docs"


def _hooks():
    return [
        (name, fn) for name, fn in vars(hookspecs).items() if name.startswith("autoprune_") and inspect.isfunction(fn)
    ]


def test_every_hook_is_documented_with_its_signature():
    text = (DOCS / "plugin_hooks.md").read_text()
    hooks = _hooks()
    assert len(hooks) == 6
    for name, fn in hooks:
        assert f"## {name}(" in text, f"{name} has no section in docs/plugin_hooks.md"
        signature = f"def {name}{inspect.signature(fn)}".replace("'", "")
        assert signature in text, f"docs/plugin_hooks.md lacks the signature {signature}"
        assert fn.__doc__, f"{name} has no docstring"


def _toml(value) -> str:
    """A default as the reference writes it: a TOML literal, or `none`."""
    if value is None:
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple):
        return "`[" + ", ".join(_toml(v).strip("`") for v in value) + "]`"
    return f"`{value!r}`"


def _reference_table() -> dict[str, tuple[str, str]]:
    """``{"section.key": (type, default)}`` from the table in docs/study_file.md."""
    rows = {}
    for line in (DOCS / "study_file.md").read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        match = re.fullmatch(r"`(\w+\.\w+)`", cells[0]) if len(cells) >= 3 else None
        if match:
            rows[match.group(1)] = (cells[1], cells[2])
    return rows


def test_every_setting_is_documented_with_its_rule_and_its_default():
    rows = _reference_table()
    text = (DOCS / "study_file.md").read_text()
    constraints = SearchSettings.__dataclass_fields__["constraints"].metadata
    assert "## Constraints" in text and "[constraints]" in text and constraints["section"] == "constraints"
    for cls in (SearchSettings, TrainSettings):
        for f in dataclasses.fields(cls):
            if f.name == "constraints":  # a section of metric names, documented in its own part
                continue
            key = f"{f.metadata['section']}.{f.name}"
            assert key in rows, f"{key} is not in docs/study_file.md"
            default = "required" if f.default is dataclasses.MISSING else _toml(f.default)
            assert rows[key] == (f.metadata["rule"], default), f"docs/study_file.md describes {key} otherwise"
    for f in dataclasses.fields(TrainSettings):  # [finetune]: the training recipe with its own defaults
        key = f"finetune.{f.name}"
        assert rows.get(key) == (f.metadata["rule"], _toml(getattr(FINETUNE, f.name))), key
    for section, keys in FILE_KEYS.items():
        for key, (_, rule, default, _) in keys.items():
            assert rows.get(f"{section}.{key}") == (rule, default), f"{section}.{key} in docs/study_file.md"


def test_the_reference_documents_no_key_the_parser_rejects():
    valid = {f"{s}.{k}" for s, keys in section_keys().items() for k in keys}
    documented = set(_reference_table())
    assert documented <= valid, f"documented but not accepted: {sorted(documented - valid)}"
    aliases = {f"{s}.{a}" for s, a in ALIASES}
    assert valid - aliases <= documented


def test_the_task_tutorial_shows_the_example_plugins_code():
    import autoprune_example_plugin

    text = (DOCS / "tasks.md").read_text()
    source = inspect.getsource(autoprune_example_plugin.RoadIoU)
    assert source in text, "docs/tasks.md and the example plugin's RoadIoU differ"
    assert "TaskConformance" in text and "autoprune_register_tasks" in text


def test_every_command_is_shown_in_the_readme():
    from autoprune.cli import build_parser

    readme = (DOCS.parent / "README.md").read_text()
    commands = next(a for a in build_parser()._actions if a.dest == "command").choices
    assert len(commands) >= 7
    for name in commands:
        assert re.search(rf"autoprune {name}\b", readme), f"autoprune {name} is not in the README"
