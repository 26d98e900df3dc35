"""Weights kept with a study: the baseline's (a file it names, or an Optuna artifact it uploaded), and the
fine-tuned weights of trials of a fine-tuned budget (artifacts of the trials)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from optuna.trial import FrozenTrial

from ...errors import AutopruneError
from .schema import FINETUNED_WEIGHTS

if TYPE_CHECKING:
    from .study_record import StudyRecord

ARTIFACT, STORE = "baseline_artifact", "artifact_store"


def store_baseline_weights(record: StudyRecord, state_file: Path, artifact_store: Path) -> None:
    """Keep the baseline's weights as an Optuna artifact of the study."""
    from optuna.artifacts import FileSystemArtifactStore, upload_artifact

    store_dir = Path(artifact_store).resolve()
    store_dir.mkdir(parents=True, exist_ok=True)
    artifact_id = upload_artifact(
        study_or_trial=record.study, file_path=str(state_file), artifact_store=FileSystemArtifactStore(str(store_dir))
    )
    record.write_attrs({ARTIFACT: artifact_id, STORE: str(store_dir)})


def baseline_weights_file(record: StudyRecord, workdir: Path) -> Path | None:
    """A file holding the baseline's state_dict (downloaded into ``workdir`` if it is an artifact)."""
    source = record.source
    if "baseline_weights" in source:
        return _moved(record, Path(source["baseline_weights"]))
    if ARTIFACT not in source:
        return None
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    store = _moved(record, Path(source[STORE]))
    if not store.is_dir():
        raise AutopruneError(f"the artifact store {str(store)!r} of study {record.name!r} is gone")
    target = Path(workdir) / "baseline.pt"
    download_artifact(
        artifact_store=FileSystemArtifactStore(str(store)), artifact_id=source[ARTIFACT], file_path=str(target)
    )
    return target


def _moved(record: StudyRecord, path: Path) -> Path:
    """``path`` as recorded, or, when it is gone and the study's storage file is in a folder, the file of
    the same name in that folder: a study folder moved or copied whole keeps its baseline."""
    if path.exists() or record.home is None:
        return path
    there = Path(record.home) / path.name
    return there if there.exists() else path


def finetuned_state(record: StudyRecord, trial: FrozenTrial) -> dict[str, torch.Tensor] | None:
    """The fine-tuned state_dict a trial of a fine-tuned budget kept as an artifact, or None."""
    kept = trial.user_attrs.get(FINETUNED_WEIGHTS)
    if not kept:
        return None
    from optuna.artifacts import FileSystemArtifactStore, download_artifact

    store = _moved(record, Path(kept["artifact_store"]))
    if not store.is_dir():
        raise AutopruneError(
            f"the fine-tuned weights of trial {trial.number} of study {record.name!r} were kept in "
            f"{str(store)!r}, which is gone"
        )
    with tempfile.TemporaryDirectory(prefix="autoprune-") as tmp:
        path = Path(tmp) / "finetuned.pt"
        download_artifact(
            artifact_store=FileSystemArtifactStore(str(store)), artifact_id=kept["artifact_id"], file_path=str(path)
        )
        return torch.load(path, map_location="cpu", weights_only=True)["state_dict"]
