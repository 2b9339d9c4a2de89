"""The project's exception types, in one module that imports nothing of the project.

They used to live beside the code that raises them (``models``, ``measure``), so the backends,
which raise ``MeasurementError`` and are called by ``measure``, imported their caller back: an
import circle. Import them from here, or as ``pytest_quantperf.ModelError`` and so on.
"""
from __future__ import annotations

__all__ = ["ModelError", "QuantMismatchError", "BackendUnavailable", "MeasurementError"]


class ModelError(Exception):
    """A model could not be found, loaded or quantized as asked; the message says what to do."""


class QuantMismatchError(ModelError):
    """The loaded model is not what was asked (e.g. 8-bit asked, plain Linear layers found)."""


class BackendUnavailable(ModelError):
    """The backend's package is not installed; the message says which extra to install."""


class MeasurementError(Exception):
    """A measurement could not be taken (out of memory, bad arguments); the test fails with it."""
