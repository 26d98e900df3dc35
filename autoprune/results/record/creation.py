"""A study's creation, and the checks that a resumed study is the same search: same settings, groups and
baseline."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ...errors import AutopruneError
from ...settings import SearchSettings, setting_key
from .schema import GROUPS, RECORD_VERSION, RUN_KEYS, SCORE, SOURCE_KEYS, TASK_KEYS, VERSION, owned_keys

if TYPE_CHECKING:
    from .study_record import StudyRecord


def create(
    record: StudyRecord,
    settings: SearchSettings,
    groups: list[str],
    baseline: dict[str, float],
    source: dict[str, Any],
    task: dict[str, Any] | None = None,
    extra: dict[str, Any] | None = None,
    run: dict[str, Any] | None = None,
) -> None:
    """Write a new study's settings, baseline metrics, source, task (``task``, ``score``, ``score_label``),
    what it runs on (``run``, keys of :data:`.schema.RUN_KEYS`), and last its groups.

    ``extra`` holds user attributes of the caller's own (the CLI notes the study file); they may not use
    a key the record owns.
    """
    run, task, extra = dict(run or {}), dict(task or {}), dict(extra or {})
    for given, allowed, what in (
        (source, SOURCE_KEYS, "source"),
        (run, RUN_KEYS, "run"),
        (task, TASK_KEYS, "task"),
    ):
        if set(given) - set(allowed):
            raise ValueError(f"not a {what} key of the study record: {sorted(set(given) - set(allowed))}")
    taken = sorted(set(extra) & owned_keys(list(settings.to_attrs())))
    if taken:
        raise AutopruneError(f"study_attrs cannot set {', '.join(taken)}: the study record owns them")
    score = task.get(SCORE, "accuracy")  # a task's score is recorded under its own name too
    scored = {} if score == "accuracy" or "accuracy" not in baseline else {f"baseline_{score}": baseline["accuracy"]}
    values = {
        **extra,
        VERSION: RECORD_VERSION,
        **settings.to_attrs(),
        **source,
        **run,
        **task,
        **{f"baseline_{k}": v for k, v in baseline.items()},
        **scored,
    }
    for key, value in values.items():
        try:
            json.dumps(value)
        except (TypeError, ValueError):
            raise AutopruneError(f"{key}={value!r} cannot be stored in an Optuna study (not JSON)") from None
    record.write_attrs({**values, GROUPS: list(groups)})


def check_resumable(
    record: StudyRecord, settings: SearchSettings, groups: list[str], source: dict[str, Any] | None = None
) -> None:
    """Refuse to resume with other settings, groups or baseline than the study's, naming every difference."""
    conflicts = [(setting_key(name), before, now) for name, before, now in settings.resume_conflicts(record.settings)]
    if record.groups != list(groups):
        conflicts.append((GROUPS, record.groups, list(groups)))
    stored, given = record.source, source or {}
    for key in ("model", "model_params", "dataset", "dataset_params"):
        if source is not None and key in stored and stored.get(key) != given.get(key):
            conflicts.append((key, stored.get(key), given.get(key)))
    if conflicts:
        listed = ", ".join(f"{key}={before!r} (not {now!r})" for key, before, now in conflicts)
        raise AutopruneError(
            f"study {record.name!r} was created with {listed}; "
            "use another study name (or output folder) for new settings"
        )
    sha, now = stored.get("baseline_sha256"), given.get("baseline_sha256")
    if sha and now and now != sha:
        raise AutopruneError(
            f"study {record.name!r} was searched on a baseline with other weights (their SHA-256 fingerprint "
            "differs); resuming would mix two models: use another study name (or output folder)"
        )


def update_budget(record: StudyRecord, settings: SearchSettings) -> None:
    """Record the settings a resumed study may change (its trial budget and timeout)."""
    attrs = record.attrs
    record.write_attrs({k: v for k, v in settings.to_attrs().items() if settings.is_resumable(k) and attrs.get(k) != v})
