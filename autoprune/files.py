"""Every file autoprune writes is written atomically: a kill mid-write leaves the old file or none.

The content goes to a temporary file beside the target, which is then renamed
into place (``os.replace``, atomic on POSIX and Windows within one folder). The
file gets the mode an ordinary write would give it: an existing file's own, else
``0o666`` less the process's umask (a temporary file is made readable by its owner
alone, which the rename would otherwise keep).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: str | Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(tmp)`` to fill a temporary file beside ``path``, then move it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        os.chmod(tmp, _mode_for(path))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def _mode_for(path: Path) -> int:
    """The permission bits ``path`` keeps (it exists) or gets (``0o666`` less the umask)."""
    try:
        return path.stat().st_mode & 0o7777
    except FileNotFoundError:
        umask = os.umask(0o022)  # read by setting it, as there is no other portable way, and put back at once
        os.umask(umask)
        return 0o666 & ~umask


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_savefig(fig, path: str | Path) -> Path:
    """A matplotlib figure saved atomically, in the format of ``path``'s suffix."""
    path = Path(path)
    return atomic_write(path, lambda tmp: fig.savefig(tmp, format=path.suffix.lstrip(".")))


def atomic_to_csv(frame, path: str | Path) -> Path:
    """A pandas frame saved as CSV atomically, without its index."""
    return atomic_write(path, lambda tmp: frame.to_csv(tmp, index=False))
