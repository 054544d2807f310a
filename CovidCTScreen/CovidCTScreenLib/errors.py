"""The one error type the user sees for unusable input or a broken model package."""


class InputError(ValueError):
    """Input that cannot be screened; the message says why and what to do."""


class Cancelled(RuntimeError):
    """The user cancelled a long-running job."""
