"""The documentation and the code must not drift apart."""

from __future__ import annotations

import dataclasses
import inspect
import os
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


def _fenced(text: str) -> list[str]:
    """The code of each fenced block of a Markdown text."""
    return re.findall(r"^```[a-z]*\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def _named_file(text: str, name: str) -> str:
    """The fenced block of ``text`` whose first line is the comment ``# name``."""
    (code,) = [block for block in _fenced(text) if block.startswith(f"# {name}\n")]
    return code


def test_the_documented_plugin_package_builds_and_loads_without_the_plugin_option(tmp_path):
    """Regression: the guide's pyproject.toml lacked [build-system] and said nowhere where the module goes.
    The documented folder is built into a wheel (what ``pip install`` does with it) and, with the wheel on
    the path, ``autoprune plugins`` lists the importance with no --plugin."""
    import subprocess
    import sys
    import zipfile

    text = (DOCS / "writing_plugins.md").read_text()
    assert "my-autoprune-plugin/\n  pyproject.toml\n  my_metric.py" in text and "pip install -e ." in text
    folder = tmp_path / "my-autoprune-plugin"
    folder.mkdir()
    for name in ("pyproject.toml", "my_metric.py"):
        (folder / name).write_text(_named_file(text, name))
    (folder / "test_my_metric.py").write_text(_named_file(text, "test_my_metric.py"))
    pip = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q"]
    build = subprocess.run(
        [*pip, "-w", str(tmp_path / "dist"), str(folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert build.returncode == 0, build.stdout[-2000:] + build.stderr[-2000:]
    (wheel,) = (tmp_path / "dist").glob("my_autoprune_plugin-0.1.0-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "my_metric.py" in names and "test_my_metric.py" not in names
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)  # installed, as pip would lay it out in site-packages
    env = {k: v for k, v in os.environ.items() if k != "AUTOPRUNE_PLUGINS"}
    env["PYTHONPATH"] = os.pathsep.join([str(site), str(DOCS.parent)])
    listed = subprocess.run(
        [sys.executable, "-m", "autoprune.cli", "plugins", "--kind", "importance"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        check=False,
    )
    assert listed.returncode == 0, listed.stderr
    peak = next(row for row in listed.stdout.splitlines() if row.strip().startswith("peak "))
    assert "my-autoprune-plugin 0.1.0 (my_metric)" in peak


def test_every_conformance_suite_the_guide_names_exists_with_the_attributes_it_sets():
    """Regression: the guide said "models and datasets have suites too" without naming them."""
    import ast

    from autoprune import testing

    text = (DOCS / "writing_plugins.md").read_text()
    suites = {name for name in dir(testing) if name.endswith("Conformance")}
    for name in ("DatasetConformance", "ModelConformance", "MetricConformance", "TaskConformance"):
        assert f"`{name}`" in text and name in suites
    used = set()
    for block in _fenced(text):
        if "Conformance)" not in block:
            continue
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ClassDef):
                (base,) = [b.id for b in node.bases]
                used.add(base)
                targets = [t for s in node.body if isinstance(s, ast.Assign) for t in s.targets]
                assigned = {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
                assert assigned and assigned <= set(dir(getattr(testing, base))), (node.name, assigned)
    assert {"DatasetConformance", "ModelConformance", "MetricConformance", "TaskConformance"} <= used
