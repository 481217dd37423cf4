"""The one user-facing error type of HourNAS.

A HourNASError message is one line that says what is wrong, where, and what
would be valid. Entry points print it as ``error: <message>`` and exit 2
(see ``src.cli.run_main``); anything else is an internal error.
"""


class HourNASError(Exception):
    """A problem the user can fix (bad config, data, checkpoint, target, ...)."""


class ConfigError(HourNASError):
    """Invalid configuration file, key, value or override."""


class DataError(HourNASError):
    """Missing or malformed dataset."""


class CheckpointError(HourNASError):
    """Missing, unreadable or mismatched checkpoint, or an unwritable output."""


class ResourceTargetError(HourNASError):
    """A resource target (FLOPs, params, latency) that cannot be met."""


class DeviceError(HourNASError):
    """A device target or distributed setup that is not usable here."""


class Stopped(Exception):
    """A run stopped by a signal after saving its state: the entry point exits 128 + signum
    (the library never exits the process itself)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = int(signum)
