"""User-facing errors: the CLI prints their message on one line and exits with status 2.

The one rule: a problem the user can fix (a bad option value, a missing or unreadable input, an
output folder that cannot be written, a run folder that is not vislab's, a checkpoint that cannot
be resumed) is raised as :class:`UserError` (or a subclass) *where it is detected*, with a message
naming the input and the fix. Every other exception is a bug: the CLI lets it through with its
traceback. ``ValueError``, ``OSError`` and friends are therefore never caught wholesale.
"""


class UserError(Exception):
    """A problem the user can fix (bad input, missing data or weights); the message says how."""


class ImageReadError(UserError):
    """An image file that cannot be read; the message names the file."""


class WeightsUnavailableError(UserError):
    """Pretrained weights cannot be obtained (no network, missing package, bad file)."""


class OutputError(UserError):
    """An output folder or file cannot be written (read-only, no permission, disk full, under a file)."""


class CorruptFileError(UserError):
    """A file vislab wrote earlier (checkpoint, cache) is truncated or corrupt; the message says what to do."""


class MalformedRunError(UserError):
    """A run folder's JSON file (metrics, manifest, config) cannot be read; the message names the file."""


class DownloadError(UserError):
    """A download that failed; ``reason`` is the short cause (``[Errno -2] Name or service not known``,
    a checksum mismatch) for summaries that should not repeat every URL tried."""

    def __init__(self, message: str, reason: str):
        super().__init__(message)
        self.reason = reason
