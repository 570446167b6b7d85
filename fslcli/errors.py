"""Errors a user can act on.

Every error raised for bad input, missing data or an unusable file is an
:class:`FslError` whose message names the bad value and the way out. The CLI
prints the message on one line and exits with code 1; anything else is a bug.
"""

from __future__ import annotations


class FslError(Exception):
    """Base class for errors whose message is meant for the user."""


class DataError(FslError):
    """A dataset, folder or audio file cannot be used as asked."""


class EpisodeError(FslError):
    """An episode cannot be drawn from the available classes and clips."""


class CheckpointError(FslError):
    """A model file is missing, damaged, unsafe or from an incompatible version."""


class DownloadError(FslError):
    """A dataset could not be fetched or rendered."""


class OutputError(FslError):
    """An output path cannot be written."""
