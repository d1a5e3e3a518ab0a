"""User-facing errors: the CLI prints their message on one line and exits with status 2."""


class UserError(Exception):
    """A problem the user can fix (bad input, missing data or weights); the message says how."""


class ImageReadError(UserError):
    """An image file that cannot be read; the message names the file."""


class WeightsUnavailableError(UserError):
    """Pretrained weights cannot be obtained (no network, missing package, bad file)."""
