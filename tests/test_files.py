"""Files are written atomically with the mode an ordinary write would give them."""

from __future__ import annotations

import os
import stat

import pytest

from autoprune.files import atomic_write_text


@pytest.fixture
def umask():
    def set_umask(mask: int) -> None:
        os.umask(mask)

    before = os.umask(0o022)
    yield set_umask
    os.umask(before)


@pytest.mark.parametrize(("mask", "mode"), [(0o022, 0o644), (0o002, 0o664), (0o077, 0o600)])
def test_a_new_file_takes_the_umasks_mode(tmp_path, umask, mask, mode):
    umask(mask)
    path = atomic_write_text(tmp_path / "plan.json", "{}")
    assert stat.S_IMODE(path.stat().st_mode) == mode and path.read_text() == "{}"
    assert [p.name for p in tmp_path.iterdir()] == ["plan.json"]  # no temporary file left


def test_a_rewritten_file_keeps_its_own_mode(tmp_path, umask):
    umask(0o022)
    path = tmp_path / "report.html"
    path.write_text("old")
    path.chmod(0o640)
    atomic_write_text(path, "new")
    assert stat.S_IMODE(path.stat().st_mode) == 0o640 and path.read_text() == "new"
