"""The base of every error a user can cause or meet: a bad input, a refused action, a service
down. Importable without any of the product's dependencies (the GPU machine carries only what
training from an export needs).

Each stage keeps its own errors beside its code (`SnapshotError`, `JobError`, ...), derived from
`CatalogueError` and from the built-in error they always were (`ValueError`, `RuntimeError`), so
callers that caught those still do. The command line reports a `CatalogueError` in one line; a
DAG's task fails with its message.
"""

from __future__ import annotations


class CatalogueError(Exception):
    """Something a user can act on; the message names the thing and what to do."""
