"""Scores into Postgres set-based: one COPY into a staging table and a few statements per batch.

In one transaction per batch:
1. every score goes into `catalogue.model_predictions` (kept per model version);
2. the scores of versions that are champion become the shown `catalogue.predictions`;
3. `catalogue.refresh_products` writes the batch's marketplace rows, where a moderator's label
   always wins over the model;
4. pictures that could not be scored are recorded in `catalogue.unscorable_images`;
5. the embedding version's vectors go into `catalogue.image_embeddings` and every picture's
   perceptual hashes into `catalogue.image_hashes` (each written once: a rerun keeps the first).
A crash loses at most the batch in flight; nothing is ever half-written.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from sqlalchemy import Engine

from pipeline.similar.embeddings import vector_text


@dataclass(frozen=True)
class Score:
    version_id: int
    image_id: int
    value: str
    confidence: float
    margin: float
    top: list[dict]  # [{"value": ..., "confidence": ...}, ...] best first
    needs_review: bool


@dataclass(frozen=True)
class Unscorable:
    image_id: int
    kind: str  # 'undecodable' or 'missing'
    reason: str


@dataclass(frozen=True)
class Embedding:
    version_id: int
    image_id: int
    vector: np.ndarray  # L2-normalised


@dataclass(frozen=True)
class Hashes:
    image_id: int
    phash: int
    phash_mirrored: int
    colours: np.ndarray  # the colour histogram (`pipeline.similar.hashing`)


_STAGING = """
CREATE TEMP TABLE IF NOT EXISTS predict_scores (
    model_version_id integer, image_id bigint, value text, confidence real, margin real,
    top jsonb, needs_review boolean
) ON COMMIT DELETE ROWS
"""
_STAGING_UNSCORABLE = """
CREATE TEMP TABLE IF NOT EXISTS predict_unscorable (image_id bigint, kind text, reason text)
ON COMMIT DELETE ROWS
"""
_STAGING_EMBEDDINGS = """
CREATE TEMP TABLE IF NOT EXISTS predict_embeddings (
    model_version_id integer, image_id bigint, embedding vector
) ON COMMIT DELETE ROWS
"""
_STAGING_HASHES = """
CREATE TEMP TABLE IF NOT EXISTS predict_hashes (image_id bigint, phash bigint,
    phash_mirrored bigint, colours real[]) ON COMMIT DELETE ROWS
"""
_EMBED = """
INSERT INTO catalogue.image_embeddings (model_version_id, image_id, embedding)
SELECT DISTINCT ON (model_version_id, image_id) model_version_id, image_id, embedding
FROM predict_embeddings
ON CONFLICT (model_version_id, image_id) DO NOTHING
"""
_HASH = """
INSERT INTO catalogue.image_hashes (image_id, phash, phash_mirrored, colours)
SELECT DISTINCT ON (image_id) image_id, phash, phash_mirrored, colours FROM predict_hashes
ON CONFLICT (image_id) DO NOTHING
"""
# The scores kept per model version, and in the same statement those of champions shown: the
# staged rows are read once, and `top` parsed once (by the COPY).
_KEEP_AND_SHOW = """
WITH kept AS (
    INSERT INTO catalogue.model_predictions AS mp (model_version_id, image_id, value,
        confidence, margin, top, needs_review)
    SELECT model_version_id, image_id, value, confidence, margin, top, needs_review
    FROM predict_scores
    ON CONFLICT (model_version_id, image_id) DO UPDATE SET
        value = EXCLUDED.value, confidence = EXCLUDED.confidence, margin = EXCLUDED.margin,
        top = EXCLUDED.top, needs_review = EXCLUDED.needs_review, predicted_at = now()
    RETURNING mp.model_version_id, mp.image_id, mp.value, mp.confidence, mp.margin, mp.top,
              mp.needs_review
)
INSERT INTO catalogue.predictions AS p (image_id, attribute, value, confidence, margin, top,
    needs_review, model_version)
SELECT k.image_id, v.attribute, k.value, k.confidence, k.margin, k.top, k.needs_review, v.version
FROM kept k
JOIN catalogue.model_versions v ON v.id = k.model_version_id
WHERE v.status = 'champion'
ON CONFLICT (image_id, attribute) DO UPDATE SET
    value = EXCLUDED.value, confidence = EXCLUDED.confidence, margin = EXCLUDED.margin,
    top = EXCLUDED.top, needs_review = EXCLUDED.needs_review,
    model_version = EXCLUDED.model_version, predicted_at = now()
WHERE (p.value, p.confidence, p.margin, p.needs_review, p.model_version)
      IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.confidence, EXCLUDED.margin,
                        EXCLUDED.needs_review, EXCLUDED.model_version)
"""
_REFRESH = """
SELECT catalogue.refresh_products(ARRAY(SELECT DISTINCT image_id FROM predict_scores))
"""
_UNSCORABLE = """
INSERT INTO catalogue.unscorable_images AS u (image_id, kind, reason)
SELECT DISTINCT ON (image_id) image_id, kind, reason FROM predict_unscorable
ON CONFLICT (image_id) DO UPDATE SET kind = EXCLUDED.kind, reason = EXCLUDED.reason,
    attempts = u.attempts + 1, last_seen = now()
"""
_SCORED_NOW = """
DELETE FROM catalogue.unscorable_images u USING predict_scores s WHERE u.image_id = s.image_id
"""


def write_scores(
    *, engine: Engine, scores: list[Score], unscorable: list[Unscorable],
    embeddings: Sequence[Embedding] = (), hashes: Sequence[Hashes] = (),
) -> None:  # fmt: skip
    """Save one batch (see the module docstring) in one transaction."""
    connection = engine.raw_connection()
    try:
        with connection.cursor() as cursor:
            cursor.execute(_STAGING)
            cursor.execute(_STAGING_UNSCORABLE)
            if hashes:
                cursor.execute(_STAGING_HASHES)
                rows = ((h.image_id, h.phash, h.phash_mirrored, _array(h.colours))
                        for h in hashes)  # fmt: skip
                cursor.copy_expert("COPY predict_hashes FROM STDIN WITH (FORMAT csv)", _csv(rows))
                cursor.execute(_HASH)
            if embeddings:
                cursor.execute(_STAGING_EMBEDDINGS)
                rows = ((e.version_id, e.image_id, vector_text(e.vector)) for e in embeddings)
                cursor.copy_expert(
                    "COPY predict_embeddings FROM STDIN WITH (FORMAT csv)", _csv(rows)
                )
                cursor.execute(_EMBED)
            if scores:
                cursor.copy_expert(
                    "COPY predict_scores FROM STDIN WITH (FORMAT csv)", _csv(_score_rows(scores))
                )
                cursor.execute(_KEEP_AND_SHOW)
                cursor.execute(_REFRESH)
                cursor.execute(_SCORED_NOW)
            if unscorable:
                rows = ((u.image_id, u.kind, u.reason) for u in unscorable)
                cursor.copy_expert(
                    "COPY predict_unscorable FROM STDIN WITH (FORMAT csv)", _csv(rows)
                )
                cursor.execute(_UNSCORABLE)
        connection.commit()
    except BaseException:
        with contextlib.suppress(Exception):  # a lost connection cannot roll back: nothing to undo
            connection.rollback()
        raise
    finally:
        connection.close()


def _score_rows(scores: list[Score]):
    for s in scores:
        yield (s.version_id, s.image_id, s.value, f"{s.confidence:.6f}", f"{s.margin:.6f}",
               json.dumps(s.top), "t" if s.needs_review else "f")  # fmt: skip


def _array(values: np.ndarray) -> str:
    """A Postgres array literal of reals."""
    return "{" + ",".join(np.char.mod("%.5g", np.asarray(values, dtype=np.float32))) + "}"


def _csv(rows) -> io.StringIO:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerows(rows)
    buffer.seek(0)
    return buffer
