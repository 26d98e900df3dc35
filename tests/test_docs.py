"""The documentation and the code must not drift apart."""

from __future__ import annotations

import dataclasses
import inspect
import re
from pathlib import Path

from autoprune import hookspecs, reference
from autoprune.settings import ALIASES, options_class, parse_study_file, section_keys

DOCS = Path(__file__).resolve().parent.parent / "docs"
MINIMAL = {"study": {"max_accuracy_drop": 1.0}, "model": {"name": "small_cnn"}, "dataset": {"name": "digits"}}


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


def test_the_study_file_reference_is_the_table_the_declarations_render():
    text = (DOCS / "study_file.md").read_text()
    assert reference.current(text) == reference.render(), (
        "docs/study_file.md's reference table differs from the settings' declarations; "
        "regenerate it: python -m autoprune.reference docs/study_file.md (or make docs)"
    )
    assert "## Constraints" in text and "## Metric options" in text


def test_the_reference_documents_every_key_the_parser_accepts_and_no_other():
    documented = {row[0].strip("`") for row in reference.rows()}
    valid = {f"{s}.{k}" for s, keys in section_keys().items() for k in keys} - {f"{s}.{a}" for s, a in ALIASES}
    assert {k for k in documented if not k.startswith("metrics.")} == valid
    robust = {f"metrics.robust_accuracy.{f.name}" for f in dataclasses.fields(options_class("robust_accuracy"))}
    assert robust <= documented
    for key in documented - valid:  # a built-in metric's option: the parser takes it
        _, metric, option = key.split(".")
        parse_study_file({**MINIMAL, "metrics": {metric: {option: getattr(options_class(metric)(), option)}}})


def test_the_reference_command_rewrites_a_stale_table_and_checks_a_current_one(tmp_path, capsys):
    doc = tmp_path / "study_file.md"
    doc.write_text(f"# Reference\n\n{reference.BEGIN}\n| stale |\n{reference.END}\n\nAfter.\n")
    assert reference.main([str(doc), "--check"]) == 1
    assert "python -m autoprune.reference" in capsys.readouterr().out
    assert reference.main([str(doc)]) == 0
    assert doc.read_text() == f"# Reference\n\n{reference.render()}\n\nAfter.\n"
    assert reference.main([str(doc), "--check"]) == 0


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


def test_the_quickstart_page_shows_what_its_command_printed_and_the_study_file_it_describes():
    import sys

    import autoprune
    from autoprune.settings import load_study_file

    sys.path.insert(0, str(DOCS.parent / "benchmarks"))
    try:
        from quickstart_doc import BEGIN, END
    finally:
        sys.path.remove(str(DOCS.parent / "benchmarks"))
    text = (DOCS / "quickstart.md").read_text()
    written = text[text.index(BEGIN) : text.index(END)]
    study = load_study_file(DOCS.parent / "studies" / "quickstart.toml")
    trials = study.settings.trials
    printed = re.search(r"```\n(.*?)```", written, re.DOTALL).group(1).splitlines()
    assert printed[0].startswith(f"study 'quickstart' in sqlite:///.../runs/quickstart/study.db: {trials} trials")
    assert "best trial" in written and "vs the baselines" in written and "Machine: " in written.splitlines()[-1]
    assert "the same for the same seed" not in text
    # the prose describes the study file as it is
    data, prose = autoprune.create_dataset(study.dataset, **study.dataset_params), " ".join(text.split())
    assert f"runs {trials} trials" in prose and f"accuracy on {len(data.val)} images" in prose
    assert f"{study.train.epochs} epochs" in prose and "ResNet-20 (width 16)" in prose
    assert study.model == "resnet20" and study.model_params == {"width": 16}
