"""Keras callbacks, one measurement each, for the LoRA rank x batch sweep.

Each takes an optional summary writer (``create_writer``: TensorBoard's own, no TensorFlow, on every
backend; scalars for the TensorBoard HParams view) and exposes ``results() -> dict`` of plain Python
values for the trial's metrics and results.csv.
"""

from ._summary import create_writer
from .epoch_timer import EpochTimer
from .loss_scalars import LossScalars
from .parameter_count import ParameterCount
from .peak_memory import FirstTrialStart, PeakMemory
from .step_timer import StepTimer

__all__ = ["EpochTimer", "FirstTrialStart", "LossScalars", "ParameterCount", "PeakMemory", "StepTimer",
           "create_writer"]
