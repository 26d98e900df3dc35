"""What a search leaves: the study record, the report, rebuilt and exported models, and :class:`Study`."""

from .export import FORMATS, load, measure_model, save, save_model
from .rebuild import Rebuilt, rebuild
from .record import StudyRecord, open_study
from .report import sensitivity_frame, trials_frame, write_report, write_sensitivity
from .study import Study

__all__ = [
    "FORMATS",
    "Rebuilt",
    "Study",
    "StudyRecord",
    "load",
    "measure_model",
    "open_study",
    "rebuild",
    "save",
    "save_model",
    "sensitivity_frame",
    "trials_frame",
    "write_report",
    "write_sensitivity",
]
