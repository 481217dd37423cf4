"""The one user-facing error type of HourNAS.

A HourNASError message is one line that says what is wrong, where, and what
would be valid. Entry points print it as ``error: <message>`` and exit 2
(see ``src.cli.run_main``); anything else is an internal error.
"""
import errno


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


# what to do about a failed file operation, by errno (src.cli.os_error_message, checkpoints)
OS_HINTS = {
    errno.ENOSPC: "the disk is full; free space or choose an --output_dir on another disk",
    errno.EDQUOT: "the disk quota is exhausted; free space or choose another --output_dir",
    errno.EACCES: "permission denied; choose a path you may read/write (e.g. another --output_dir)",
    errno.EPERM: "permission denied; choose a path you may read/write (e.g. another --output_dir)",
    errno.EROFS: "the file system is read-only; choose another --output_dir",
    errno.ENOTDIR: "a part of the path is a file, not a folder; fix the path",
    errno.EISDIR: "it is a folder where a file is expected; fix the path",
    errno.ENOENT: "it does not exist; check the path",
    errno.ENAMETOOLONG: "the path is too long; use a shorter one",
    errno.EFBIG: "the file is larger than this process may write (ulimit -f) or the file system "
                 "allows; raise the limit or choose another --output_dir",
    errno.EIO: "the storage reported an I/O error; check the disk or choose another --output_dir",
}


def os_error_hint(code: int | None) -> str:
    """What to do about a failed file operation with this errno."""
    return OS_HINTS.get(code, "check the path, its permissions and the free disk space")
