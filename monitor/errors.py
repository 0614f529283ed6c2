"""Errors the user can act on.

Every error raised for bad input (a file, a flag, a profile) derives from
``MonitorError``: the command line prints its message as one line and exits
non-zero, without a traceback. Anything else is a bug and keeps its traceback.
"""


class MonitorError(Exception):
    """A problem with the user's input, explained in one line."""


class RecordingError(MonitorError):
    """A recording that cannot be read or is not usable fluoroscopy."""


class MissingGeometryError(RecordingError):
    """Millimetres were asked for, but the recording does not carry its scale."""


class ImplausibleGeometryError(MissingGeometryError):
    """The recording carries a scale, but one no C-arm could have produced."""
