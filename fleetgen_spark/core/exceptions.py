"""The errors fleetgen-spark raises for bad input."""

from __future__ import annotations

__all__ = ["ConfigError", "DataDirError", "FleetGenError", "GenerationError", "OptionError"]


class FleetGenError(ValueError):
    """Base of every error caused by what a user asked for: the message is the product."""


class ConfigError(FleetGenError):
    """A configuration file or value breaks a rule of the config contract."""


class OptionError(FleetGenError):
    """A source option or command-line flag is unknown or has a bad value."""


class GenerationError(FleetGenError):
    """Generation stopped: a streaming query failed, or a data directory's record is inconsistent."""


class DataDirError(FleetGenError):
    """A data directory is missing, is not a fleetgen data directory, or has nothing to read yet."""
