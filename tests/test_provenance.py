"""What a study records of the machine it ran on."""

from __future__ import annotations

import torch

from autoprune.provenance import environment


def test_one_thread_is_singular(monkeypatch):
    """Regression (issue 23): the report's machine line read ``1 threads``."""
    monkeypatch.setattr(torch, "get_num_threads", lambda: 1)
    assert ", 1 thread, " in environment()["machine"]
    monkeypatch.setattr(torch, "get_num_threads", lambda: 2)
    assert ", 2 threads, " in environment()["machine"]
