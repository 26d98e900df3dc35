"""Checkpoints: one loader, weights only, clear errors, the file remembered with absolute path."""

from __future__ import annotations

import pytest
import torch

import autoprune
from autoprune.provenance import fingerprint, provenance
from autoprune.results import save_model


def _model():
    return autoprune.create_model("small_cnn", num_classes=10, in_channels=1, width=4)


def test_load_checkpoint_records_the_absolute_path_and_a_fingerprint(tmp_path, monkeypatch):
    source = _model()
    monkeypatch.chdir(tmp_path)
    torch.save({"state_dict": source.state_dict()}, "weights.pt")
    model = _model()
    path = autoprune.load_checkpoint(model, "weights.pt")
    assert path == tmp_path / "weights.pt" and path.is_absolute()
    notes = provenance(model)
    assert notes["weights"] == str(tmp_path / "weights.pt") and notes["weights_sha256"] == fingerprint(source)
    assert notes["model"] == "small_cnn" and notes["model_params"] == {"width": 4}
    torch.save(source.state_dict(), "plain.pt")  # a bare state_dict works too
    autoprune.load_checkpoint(_model(), "plain.pt")


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint at all" * 10)
    with pytest.raises(autoprune.AutopruneError, match="is not a PyTorch checkpoint") as err:
        autoprune.load_checkpoint(_model(), garbage)
    assert "weights_only" not in str(err.value) and "\n" not in str(err.value)
    best = tmp_path / "best.pt"
    save_model(_model(), best)
    with pytest.raises(autoprune.AutopruneError, match="is a pruned model saved by autoprune"):
        autoprune.load_checkpoint(_model(), best)
    whole = tmp_path / "whole.pt"
    torch.save(_model(), whole)  # a pickled module: never unpickled
    with pytest.raises(autoprune.AutopruneError, match="holds Python objects, not only weights") as err:
        autoprune.load_checkpoint(_model(), whole)
    assert "weights_only=False" not in str(err.value)
    other = tmp_path / "other.pt"
    torch.save(autoprune.create_model("small_cnn", num_classes=3, in_channels=1, width=4).state_dict(), other)
    with pytest.raises(autoprune.AutopruneError, match="does not fit model 'small_cnn'"):
        autoprune.load_checkpoint(_model(), other)
    with pytest.raises(autoprune.AutopruneError, match="does not exist"):
        autoprune.load_checkpoint(_model(), tmp_path / "missing.pt")
    with pytest.raises(autoprune.AutopruneError, match="is a folder, not a checkpoint file") as err:
        autoprune.load_checkpoint(_model(), tmp_path)
    assert "does not exist" not in str(err.value)


def test_a_state_dict_of_another_architecture_is_a_short_summary(tmp_path):
    """Regression: torch's message, every key of both models, was one line of about 4,000 characters."""
    other = tmp_path / "resnet.pt"
    torch.save(autoprune.create_model("resnet20", num_classes=10, in_channels=1).state_dict(), other)
    with pytest.raises(autoprune.AutopruneError) as err:
        autoprune.load_checkpoint(_model(), other, what="model.checkpoint")
    message = str(err.value)
    assert message.startswith(f"model.checkpoint {str(other)!r} does not fit model 'small_cnn': ")
    assert "18 missing keys (features.0.weight, features.1.weight, features.1.bias, ...)" in message
    assert "126 unexpected (conv1.weight, bn1.weight, bn1.bias, ...)" in message
    assert "1 with another shape (fc.weight: (10, 64) in the file, (10, 16) in the model)" in message
    assert "\n" not in message and len(message) < 400


def test_parameters_are_recorded_as_a_study_can_store_them(tmp_path, monkeypatch):
    from pathlib import Path

    from autoprune.provenance import storable

    monkeypatch.chdir(tmp_path)
    (tmp_path / "imgs").mkdir()
    assert storable({"path": "imgs", "size": 8, "name": "not-a-path", "p": Path("x")}) == {
        "path": str(tmp_path / "imgs"),
        "size": 8,
        "name": "not-a-path",
        "p": str(tmp_path / "x"),
    }
    assert storable({"transform": object()}) is None
    data = autoprune.create_dataset("digits", val_fraction=0.25)
    assert provenance(data) == {"dataset": "digits", "dataset_params": {"val_fraction": 0.25}}
