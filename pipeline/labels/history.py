"""Writing labels: every change is a new row of `catalogue.labels`, made by a recorded job.

All writes go through `write_labels`, which works on whole sets in SQL: the wanted labels are
staged in a temporary table, compared with each image's latest label, and only real changes are
inserted, each naming the label it replaced. Rows whose label changed since the caller read it
(`expected_label_id`) are skipped and reported, never overwritten.

Writers at once (two imports, a job and an undo, the DAG and a moderator) take turns per picture:
`write_staged` locks the staged pictures' rows (`catalogue.lock_images`, in id order) before it
reads their latest labels, so the second writer compares with what the first committed and the
history stays one chain (unique indexes refuse a fork whatever the writer). A writer that still
collides (a deadlock with another statement, a raw SQL writer that did not lock) is retried
whole by `label_transaction`.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from sqlalchemy import Connection, Engine, Row, text
from sqlalchemy.exc import DBAPIError

from pipeline.db.session import collided
from pipeline.errors import CatalogueError

log = logging.getLogger(__name__)
T = TypeVar("T")
# the unique indexes that keep the history one chain, and one undo per job (a second undo run
# at the same time then reads that the job was undone)
CHAIN_INDEXES = (
    "ix_labels_replaces_label_id",
    "ix_labels_image_id_attribute_first",
    "uq_label_jobs_undoes_job_id",
)
ATTEMPTS = 5

JOB_KINDS = ("label", "import", "rename", "move", "clear", "apply_csv", "undo")


class LabelsBusy(CatalogueError, RuntimeError):
    """A label write kept colliding with other writers; nothing of it was written."""


@dataclass(frozen=True)
class Who:
    """The authenticated identity behind a change: the CLI's configured moderator, the Airflow
    user who triggered a run, or (when neither is known) the database role itself."""

    name: str | None = None
    origin: str = "cli"  # cli, airflow, sql
    airflow_run_id: str | None = None


@dataclass(frozen=True)
class WantedLabel:
    image_id: int
    attribute: str
    value: str | None  # None clears the label
    moderator: str | None = None  # the credited moderator (a CSV cell); default: who
    note: str | None = None
    # skip unless this is still the latest label (0: unless the image still has no label)
    expected_label_id: int | None = None
    line: int | None = None  # where it came from, for reports


@dataclass
class WriteOutcome:
    job_id: int | None
    written: int = 0
    unchanged: int = 0
    stale: list[WantedLabel] = field(default_factory=list)


# a staged label's picture's latest label (catalogue.latest_labels' row) as an index lookup: a
# join with the view computes it for every label of the catalogue, whatever the job's size
LATEST_OF_WANTED = """
    SELECT lb.id AS label_id, lb.value FROM catalogue.labels lb
    WHERE lb.image_id = w.image_id AND lb.attribute = w.attribute
    ORDER BY lb.id DESC LIMIT 1
"""


def start_job(
    *, connection: Connection, kind: str, who: Who, arguments: dict[str, Any],
    undoes_job_id: int | None = None,
) -> int:  # fmt: skip
    return connection.execute(
        text(
            "INSERT INTO catalogue.label_jobs (kind, arguments, created_by, origin, "
            "airflow_run_id, undoes_job_id) VALUES (:kind, CAST(:arguments AS jsonb), "
            "COALESCE(:who, session_user), :origin, :run_id, :undoes) RETURNING id"
        ),
        {
            "kind": kind,
            "arguments": json.dumps(arguments, default=str),
            "who": who.name,
            "origin": who.origin,
            "run_id": who.airflow_run_id,
            "undoes": undoes_job_id,
        },
    ).scalar_one()


def empty_staging(connection: Connection) -> None:
    """The transaction's `wanted_labels` table, empty: what a job wants the labels to be."""
    connection.execute(
        text(
            "CREATE TEMP TABLE IF NOT EXISTS wanted_labels (image_id bigint, attribute text, "
            "value text, moderator text, note text, expected_label_id bigint, line integer) "
            "ON COMMIT DROP"
        )
    )
    connection.execute(text("TRUNCATE wanted_labels"))


def analyse_staging(connection: Connection) -> None:
    """Give the planner the staged row count: without it a join of thousands of staged rows with
    the labels view is planned as a nested loop (15 s instead of 0.2 s for 20,000 rows)."""
    connection.execute(text("ANALYZE wanted_labels"))


def stage(connection: Connection, wanted: Sequence[WantedLabel]) -> None:
    """Put the wanted labels in the transaction's `wanted_labels` table."""
    empty_staging(connection)
    if not wanted:
        return
    connection.execute(
        text(
            """
            INSERT INTO wanted_labels
            SELECT * FROM unnest(CAST(:image_ids AS bigint[]), CAST(:attributes AS text[]),
                                 CAST(:values AS text[]), CAST(:moderators AS text[]),
                                 CAST(:notes AS text[]), CAST(:expected AS bigint[]),
                                 CAST(:lines AS integer[]))
            """
        ),
        {
            "image_ids": [w.image_id for w in wanted],
            "attributes": [w.attribute for w in wanted],
            "values": [w.value for w in wanted],
            "moderators": [w.moderator for w in wanted],
            "notes": [w.note for w in wanted],
            "expected": [w.expected_label_id for w in wanted],
            "lines": [w.line for w in wanted],
        },
    )


def lock_staged(connection: Connection) -> None:
    """Hold the staged pictures until the transaction ends: a writer of the same pictures waits,
    then reads what this one committed."""
    connection.execute(
        text("SELECT catalogue.lock_images(ARRAY(SELECT DISTINCT image_id FROM wanted_labels))")
    )


def write_staged(*, connection: Connection, job_id: int) -> WriteOutcome:
    """Insert the staged labels that change something; report the stale ones."""
    analyse_staging(connection)
    lock_staged(connection)
    stale_rows = connection.execute(
        text(
            f"""
            SELECT w.* FROM wanted_labels w
            LEFT JOIN LATERAL ({LATEST_OF_WANTED}) AS l ON true
            WHERE w.expected_label_id IS NOT NULL
              AND COALESCE(l.label_id, 0) <> w.expected_label_id
              AND l.value IS DISTINCT FROM w.value
            ORDER BY w.line NULLS LAST, w.image_id
            """
        )
    ).all()
    row = connection.execute(
        text(
            f"""
            WITH changes AS (
                SELECT w.*, l.label_id AS latest_id
                FROM wanted_labels w
                LEFT JOIN LATERAL ({LATEST_OF_WANTED}) AS l ON true
                WHERE l.value IS DISTINCT FROM w.value
                  AND (w.expected_label_id IS NULL
                       OR COALESCE(l.label_id, 0) = w.expected_label_id)
            ), inserted AS (
                INSERT INTO catalogue.labels (image_id, attribute, value, source, moderator,
                                              created_by, note, replaces_label_id, job_id)
                SELECT c.image_id, c.attribute, c.value, catalogue.label_source(j.kind),
                       COALESCE(c.moderator, j.created_by), j.created_by, c.note, c.latest_id,
                       j.id
                FROM changes c, catalogue.label_jobs j
                WHERE j.id = :job_id
                ORDER BY c.image_id, c.attribute
                RETURNING 1
            )
            SELECT (SELECT count(*) FROM inserted) AS written,
                   (SELECT count(*) FROM wanted_labels) AS wanted
            """
        ),
        {"job_id": job_id},
    ).one()
    stale = [
        WantedLabel(r.image_id, r.attribute, r.value, r.moderator, r.note, r.expected_label_id,
                    r.line)
        for r in stale_rows
    ]  # fmt: skip
    return WriteOutcome(
        job_id=job_id,
        written=row.written,
        unchanged=row.wanted - row.written - len(stale),
        stale=stale,
    )


def write_labels(
    *, connection: Connection, kind: str, who: Who, arguments: dict[str, Any],
    wanted: Sequence[WantedLabel],
) -> WriteOutcome:  # fmt: skip
    """Record a job and the labels it changes, in the caller's transaction."""
    job_id = start_job(connection=connection, kind=kind, who=who, arguments=arguments)
    stage(connection, wanted)
    return write_staged(connection=connection, job_id=job_id)


def label_transaction(engine: Engine, work: Callable[[Connection], T]) -> T:
    """Run `work` in a transaction of its own, again from the start when it collided with another
    writer of the same labels (it then reads what the other committed). Nothing is half-written:
    a collision rolls the whole attempt back."""
    for attempt in range(1, ATTEMPTS + 1):
        try:
            with engine.begin() as connection:
                return work(connection)
        except DBAPIError as exc:
            if not _collided(exc) or exc.connection_invalidated:
                raise
            if attempt == ATTEMPTS:
                raise LabelsBusy(
                    f"the labels are being written by others: {ATTEMPTS} tries collided with "
                    "them; nothing was written, run it again"
                ) from exc
            log.info("label write collided with another writer (attempt %d): retrying", attempt)
    raise AssertionError("unreachable")


def _collided(exc: DBAPIError) -> bool:
    if collided(exc):
        return True
    constraint = getattr(getattr(exc.orig, "diag", None), "constraint_name", None)
    return getattr(exc.orig, "pgcode", None) == "23505" and constraint in CHAIN_INDEXES


def label_history(
    *, engine: Engine, shortcode: str, position: int | None = None
) -> Sequence[Row[Any]]:
    """Every label a post's images were ever given (or one image's), oldest first per attribute:
    id, position, attribute, value, source, moderator, created_by, created_at, replaces_label_id,
    job_id, note."""
    with engine.connect() as connection:
        return connection.execute(
            text(
                """
                SELECT l.id, i.position, l.attribute, l.value, l.source, l.moderator,
                       l.created_by, l.created_at, l.replaces_label_id, l.job_id, l.note
                FROM catalogue.labels l JOIN raw.post_images i ON i.id = l.image_id
                WHERE i.shortcode = :s AND (CAST(:pos AS integer) IS NULL OR i.position = :pos)
                ORDER BY i.position, l.attribute, l.id
                """
            ),
            {"s": shortcode, "pos": position},
        ).all()
