"""Exceptions polyvit raises for bad input. Each message says what is wrong and what to do.

They subclass the builtin a caller would expect (ValueError, RuntimeError, FileNotFoundError),
so generic handlers keep working; the CLI prints any PolyvitError as one line.
"""


class PolyvitError(Exception):
    """Base of every error polyvit raises on purpose."""


class ConfigError(PolyvitError, ValueError):
    """A ViTConfig field or preset name is invalid."""


class WeightsError(PolyvitError, ValueError):
    """A checkpoint is unreadable, corrupt, of an unknown layout, or does not fit the config."""


class WeightsNotFoundError(WeightsError, FileNotFoundError):
    """The checkpoint path does not exist."""


class ImageError(PolyvitError, ValueError):
    """An image file cannot be decoded, is truncated, or is too large to be safe."""


class BackendError(PolyvitError, RuntimeError):
    """A backend is unknown, unavailable on this machine, or does not offer a precision."""


class DatasetError(PolyvitError, ValueError):
    """A dataset is missing, empty, malformed or lacks the split asked for."""


class TrainingError(PolyvitError, RuntimeError):
    """Training cannot go on: a non-finite loss, an output folder that cannot be written, or a
    checkpoint that does not belong to the run asked for."""
