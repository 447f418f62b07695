"""What training can refuse, importable without Keras (the command line imports these at start)."""

from __future__ import annotations

from pipeline.errors import CatalogueError


class UnknownArchitecture(CatalogueError, ValueError):
    """No network of that name."""


class WeightsFileError(CatalogueError, ValueError):
    """The initial weights file cannot be used; the message names it."""


class RegistryError(CatalogueError, ValueError):
    """A registry action cannot be done; the message says why and what to do."""


class ExportError(CatalogueError, ValueError):
    """A file that is not a training export this version can read; the message names it."""


class TrainingInterrupted(KeyboardInterrupt):
    """Ctrl-C while a network trains: nothing of the run was kept; the message says so."""
