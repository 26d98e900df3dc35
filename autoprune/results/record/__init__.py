"""The study record: every key an autoprune study keeps in its Optuna storage (:mod:`.schema`), read and
written through :class:`StudyRecord` alone."""

from .schema import RECORD_VERSION
from .study_record import StudyRecord, open_study

__all__ = ["RECORD_VERSION", "StudyRecord", "open_study"]
