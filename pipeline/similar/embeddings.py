"""Embeddings in Postgres: each model version's HNSW index, and vectors as pgvector text.

Every model version that embeds pictures gets its own HNSW index (cosine) on
`embedding::vector(n)` restricted to its rows: versions of different widths share the table, a
query for one version walks only that version's graph, and a rollback finds the previous
version's index as it was. The predict stage makes the index when a version starts embedding
(before its first rows, so the index grows with the rows and never needs a long build).
"""

from __future__ import annotations

import numpy as np
from sqlalchemy import Engine, text

HNSW_M = 16  # pgvector's defaults, stated: the graph's links per node and build candidates
HNSW_EF_CONSTRUCTION = 64


def index_name(version_id: int) -> str:
    return f"ix_image_embeddings_hnsw_v{int(version_id)}"


def distance_sql(dims: int, query: str) -> str:
    """The cosine distance expression the version's index answers (the same cast as the index)."""
    return f"(e.embedding::vector({int(dims)}) <=> CAST({query} AS vector({int(dims)})))"


def ensure_index(engine: Engine, *, version_id: int, dims: int) -> bool:
    """Create the version's HNSW index if it is missing; True when it was created. Shards of one
    run may race here: an advisory lock lets one create it while the others wait."""
    name = index_name(version_id)
    with engine.begin() as connection:
        connection.execute(text("SELECT pg_advisory_xact_lock(hashtext(:n))"), {"n": name})
        exists = connection.execute(
            text("SELECT to_regclass(:q) IS NOT NULL"), {"q": f"catalogue.{name}"}
        ).scalar_one()
        if exists:
            return False
        connection.execute(
            text(
                f"CREATE INDEX {name} ON catalogue.image_embeddings USING hnsw "
                f"((embedding::vector({int(dims)})) vector_cosine_ops) "
                f"WITH (m = {HNSW_M}, ef_construction = {HNSW_EF_CONSTRUCTION}) "
                f"WHERE model_version_id = {int(version_id)}"
            )
        )
        return True


def normalised(vectors: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.where(norms > 0, norms, 1.0)


def vector_text(vector: np.ndarray) -> str:
    """pgvector's text form, 7 significant digits (float4 keeps about as many)."""
    return "[" + ",".join(np.char.mod("%.7g", np.asarray(vector, dtype=np.float32))) + "]"
