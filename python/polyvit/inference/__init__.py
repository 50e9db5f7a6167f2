"""Dataset-scale inference: inputs expanded to paths, a decode pipeline that keeps the model
busy, rows written in chunks that survive a kill, and a Ray Data engine for clusters.

polyvit.predict / polyvit.predict_table are the Python entry points; vit-predict the CLI.
"""

from .api import Job, predict, predict_table
from .inputs import InputError, expand_inputs
from .output import COLUMNS, OutputError, read_rows
from .pipeline import Stats

__all__ = ["COLUMNS", "InputError", "Job", "OutputError", "Stats", "expand_inputs", "predict",
           "predict_table", "read_rows"]
