"""The package as users get it: ``python -m build`` makes a wheel that installs and runs in a clean venv.

The clean venv gets the wheel alone; its dependencies (torch is several GB, and
installing it again would download it) are made visible through a path file that
lists a folder holding every installed distribution of this environment except
autoprune's own, so the wheel's code and entry points are the only autoprune there.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dist")
    run = subprocess.run(
        [sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], capture_output=True, text=True, check=False
    )
    assert run.returncode == 0, run.stdout[-2000:] + run.stderr[-2000:]
    (built,) = out.glob("autoprune-*.whl")
    return built


def test_the_wheel_holds_the_package_its_plugins_and_its_license(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    sources = {p.relative_to(ROOT).as_posix() for p in (ROOT / "autoprune").rglob("*.py")}
    sources |= {f"autoprune_plugins/{p.name}" for p in (ROOT / "plugins").glob("*.py")}
    assert sources - set(names) == set()  # every module, subpackages' too
    assert not any(n.startswith(("tests/", "benchmarks/", "runs/")) for n in names)
    info = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    entry_points = zipfile.ZipFile(wheel).read(info).decode()
    assert "[autoprune]" in entry_points and "importance_fpgm = autoprune_plugins.importance_fpgm" in entry_points
    assert "autoprune = autoprune.cli:main" in entry_points
    assert any(n.endswith((".dist-info/licenses/LICENSE", ".dist-info/LICENSE")) for n in names)


def test_the_wheel_installs_and_runs_in_a_clean_venv(wheel, tmp_path):
    env_dir = tmp_path / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    install = subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", str(wheel)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert install.returncode == 0, install.stderr
    # the dependencies, without any autoprune distribution or editable finder of this environment
    deps = tmp_path / "deps"
    deps.mkdir()
    here = Path(sysconfig.get_paths()["purelib"])
    for entry in here.iterdir():
        if "autoprune" not in entry.name.lower() and entry.suffix != ".pth":
            (deps / entry.name).symlink_to(entry)
    site = Path(
        subprocess.run(
            [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    )
    (site / "dependencies.pth").write_text(f"{deps}\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "AUTOPRUNE_PLUGINS")}
    run = functools.partial(subprocess.run, capture_output=True, text=True, cwd=tmp_path, env=env, check=False)
    where = run(
        [
            str(python),
            "-c",
            "import autoprune, autoprune_plugins; print(autoprune.__file__); print(autoprune_plugins.__file__)",
        ]
    )
    assert where.returncode == 0, where.stderr
    assert all(line.startswith(str(env_dir)) for line in where.stdout.split()), where.stdout
    listed = run([str(env_dir / "bin" / "autoprune"), "plugins"])
    assert listed.returncode == 0, listed.stderr
    assert "importances:" in listed.stdout and "models:" in listed.stdout and "tasks:" in listed.stdout
    fpgm = next(row for row in listed.stdout.splitlines() if row.strip().startswith("fpgm "))
    assert "importance_fpgm" in fpgm and "He et al., CVPR 2019" in fpgm
    assert "example" not in listed.stdout  # the example plugin of this environment is not in the clean one
