"""What prediction can refuse, importable without Keras (the command line imports these at start)."""

from __future__ import annotations

from pipeline.errors import CatalogueError


class PredictError(CatalogueError, RuntimeError):
    """A prediction run cannot go on; the message says why and what to do."""


class NoChampion(PredictError):
    """No model has been promoted for an attribute yet."""


class PredictInterrupted(PredictError):
    """The run stopped part way (database lost...); what was saved stays, a rerun finishes."""
