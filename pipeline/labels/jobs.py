"""Relabelling jobs: bulk changes that are recorded, can be tried with a dry run, and undone.

- `rename`: every current label with one of the `from` values becomes `to` (a merge when there are
  several `from` values): all current `Navy Blue` colours become `Blue`.
- `move`: the images a filter selects get `to` (this account's images labelled `Tops` that the
  model calls `Kurtas`; the near-duplicates of one picture, `like`, which are the pictures of its
  duplicate group in `catalogue.image_duplicates`, the picture itself included).
- `clear`: the images a filter selects lose their label (a new row with no value).
- `undo JOB`: every label the job wrote that is still current goes back to what it replaced, as new
  rows; labels changed since are left and reported.

Each job selects its images in one SQL statement and writes through `history.write_staged`, so a
job over 20,000 images is a handful of statements.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from datetime import date
from typing import Any

from sqlalchemy import Connection, Engine, text

from pipeline.errors import CatalogueError
from pipeline.labels.history import (
    Who,
    analyse_staging,
    empty_staging,
    label_transaction,
    start_job,
    write_staged,
)
from pipeline.labels.taxonomy import taxonomy_from_database
from pipeline.picture_names import PictureNameError, find_picture, parse_picture_name

SAMPLE_SIZE = 10
KINDS = ("rename", "move", "clear")


class JobError(CatalogueError, ValueError):
    """A job cannot run as asked; the message says what to change, in the job's own terms (its
    attribute, the values to replace, the target value, the filters), which the command line's
    options and the relabel DAG's Params both name."""


@dataclass(frozen=True)
class Selection:
    """Which images a `move` or `clear` touches; every given filter must hold."""

    account: str | None = None
    value: list[str] = field(default_factory=list)  # current label of the attribute, any of
    predicted: list[str] = field(default_factory=list)  # model's prediction, any of
    shortcodes: list[str] = field(default_factory=list)
    since: date | None = None  # post taken on or after
    until: date | None = None  # post taken on or before
    like: str | None = None  # SHORTCODE[/POSITION]: the pictures of its duplicate group

    def given(self) -> list[str]:
        """The names of the filters set."""
        return [f.name for f in fields(self) if getattr(self, f.name)]


FILTERS = tuple(f.name for f in fields(Selection))


def validate_request(
    *, kind: str, attribute: str | None, to: str | None = None,
    from_values: list[str] | None = None, selection: Selection | None = None,
) -> None:  # fmt: skip
    """Refuse with `JobError` a rename, move or clear that cannot run as asked, before it reads
    anything: the rules every caller (command line, relabel DAG) relies on."""
    given = (selection or Selection()).given()
    if kind not in KINDS:
        raise JobError(f"unknown job '{kind}': a job is one of {', '.join(KINDS)}")
    if not attribute:
        raise JobError(f"{kind} needs the attribute whose labels change (colour, category, ...)")
    if kind == "rename":
        if not from_values or not to:
            raise JobError(
                "rename needs the values to replace (from, one or more) and the target value (to)"
            )
        if given:
            raise JobError(
                f"rename takes no filter ({', '.join(given)} given): it changes every image "
                "labelled with one of the values to replace; to change only some images, move "
                "them, selected by the filters (their current value among them)"
            )
        return
    if from_values:
        raise JobError(
            f"{kind} takes no values to replace (from), which are rename's: {kind} selects its "
            "images with the filters, their current value among them"
        )
    if kind == "move" and not to:
        raise JobError("move needs the target value (to) that the selected images get")
    if not given:
        raise JobError(
            f"{kind} needs a filter ({', '.join(FILTERS)}): a job over every image is a rename"
        )
    if selection is not None and selection.like:
        try:
            parse_picture_name(selection.like)
        except PictureNameError as exc:
            raise JobError(f"like {exc}") from None


def validate_undo(*, job_id: int | None) -> None:
    """Refuse with `JobError` an undo that names no job."""
    if not job_id:
        raise JobError("undo needs the number of the job to undo (listed with the recent jobs)")


@dataclass
class JobOutcome:
    kind: str
    dry_run: bool
    images: int  # labels the job changes (or would)
    job_id: int | None = None
    unchanged: int = 0
    skipped: int = 0  # undo: labels changed since the job
    sample: list[dict[str, Any]] = field(default_factory=list)


def run_job(
    *,
    engine: Engine,
    kind: str,
    attribute: str,
    who: Who,
    to: str | None = None,
    from_values: list[str] | None = None,
    selection: Selection | None = None,
    dry_run: bool = False,
    note: str | None = None,
) -> JobOutcome:
    """Run (or with `dry_run`, only count and sample) a rename, move or clear job."""
    selection = selection or Selection()
    validate_request(
        kind=kind, attribute=attribute, to=to, from_values=from_values, selection=selection
    )
    return label_transaction(
        engine,
        lambda connection: _run_job(
            connection,
            kind=kind,
            attribute=attribute,
            who=who,
            to=to,
            from_values=from_values or [],
            selection=selection,
            dry_run=dry_run,
            note=note,
        ),
    )


def _run_job(
    connection: Connection,
    *,
    kind: str,
    attribute: str,
    who: Who,
    to: str | None,
    from_values: list[str],
    selection: Selection,
    dry_run: bool,
    note: str | None,
) -> JobOutcome:
    spec = taxonomy_from_database(connection).attribute(attribute)
    target = spec.canonical(to) if to and kind != "clear" else None
    if kind == "rename":
        selection = Selection(value=from_values)
    values = [spec.canonical(v) for v in selection.value]
    predicted = [spec.canonical(v) for v in selection.predicted]
    group = _duplicate_group(connection, selection.like) if selection.like else None
    _stage_selection(connection, attribute, target, selection, values, predicted, group, note)
    arguments = {
        "attribute": attribute,
        "to": target,
        "from": values if kind == "rename" else None,
        "filter": {
            "account": selection.account,
            "value": values,
            "predicted": predicted,
            "shortcodes": selection.shortcodes,
            "since": selection.since,
            "until": selection.until,
            "like": selection.like,
            "duplicate_group": group,  # as grouped when the job ran; a later refresh may regroup
        },
        "note": note,
    }
    if dry_run:
        outcome = _dry_run(connection, kind)
        connection.rollback()
        return outcome
    job_id = start_job(connection=connection, kind=kind, who=who, arguments=arguments)
    written = write_staged(connection=connection, job_id=job_id)
    sample = _sample(connection, job_id)
    return JobOutcome(kind, False, written.written, job_id, written.unchanged, sample=sample)


def _duplicate_group(connection: Connection, like: str) -> int:
    """The duplicate group of the picture `like` names, refused in one line when the picture is
    unknown or in no group."""
    try:
        picture = find_picture(connection, like)
    except PictureNameError as exc:
        raise JobError(f"like: {exc}") from None
    group = connection.execute(
        text("SELECT group_id FROM catalogue.image_duplicates WHERE image_id = :i"),
        {"i": picture.image_id},
    ).scalar_one_or_none()
    if group is None:
        raise JobError(
            f"no near-duplicates known for {picture.shortcode}/{picture.position}: groups are "
            "found by the predict run (catalogue duplicates --refresh)"
        )
    return group


def _stage_selection(
    connection: Connection, attribute: str, target: str | None, selection: Selection,
    values: list[str], predicted: list[str], group: int | None, note: str | None,
) -> None:  # fmt: skip
    empty_staging(connection)
    # Selected by their labels alone (a rename), the pictures' labels are read from the view at
    # once; otherwise each selected picture's label is an index probe, so a job over some
    # pictures does not read every label of the catalogue.
    by_label_only = selection.given() == ["value"]
    labels = (
        "LEFT JOIN catalogue.current_labels l ON l.image_id = i.id AND l.attribute = :attribute"
        if by_label_only
        else """LEFT JOIN LATERAL (
                    SELECT latest.value FROM (
                        SELECT lb.value FROM catalogue.labels lb
                        WHERE lb.image_id = i.id AND lb.attribute = :attribute
                        ORDER BY lb.id DESC LIMIT 1) AS latest
                    WHERE latest.value IS NOT NULL) AS l ON true"""
    )
    connection.execute(
        text(
            f"""
            INSERT INTO wanted_labels (image_id, attribute, value, note)
            SELECT i.id, CAST(:attribute AS text), CAST(:target AS text), CAST(:note AS text)
            FROM raw.post_images i
            {labels}
            LEFT JOIN catalogue.predictions pr
                   ON pr.image_id = i.id AND pr.attribute = :attribute
            WHERE i.removed_at IS NULL
              AND (CAST(:account AS text) IS NULL OR i.account = :account)
              AND (cardinality(CAST(:values AS text[])) = 0 OR l.value = ANY(:values))
              AND (cardinality(CAST(:predicted AS text[])) = 0 OR pr.value = ANY(:predicted))
              AND (cardinality(CAST(:shortcodes AS text[])) = 0 OR i.shortcode = ANY(:shortcodes))
              AND (CAST(:since AS date) IS NULL OR i.taken_at >= :since)
              AND (CAST(:until AS date) IS NULL OR i.taken_at < CAST(:until AS date) + 1)
              AND (CAST(:group AS bigint) IS NULL OR EXISTS (
                      SELECT 1 FROM catalogue.image_duplicates d
                      WHERE d.image_id = i.id AND d.group_id = :group))
            """
        ),
        {
            "attribute": attribute,
            "target": target,
            "note": note,
            "account": selection.account,
            "values": values,
            "predicted": predicted,
            "shortcodes": selection.shortcodes,
            "since": selection.since,
            "until": selection.until,
            "group": group,
        },
    )


def _dry_run(connection: Connection, kind: str) -> JobOutcome:
    analyse_staging(connection)
    changing = """
        FROM wanted_labels w
        LEFT JOIN catalogue.latest_labels l
               ON l.image_id = w.image_id AND l.attribute = w.attribute
        WHERE l.value IS DISTINCT FROM w.value
    """
    total = connection.execute(text(f"SELECT count(*) {changing}")).scalar_one()
    rows = connection.execute(
        text(
            f"""
            SELECT i.shortcode, i.position, c.before, c.after
            FROM (SELECT w.image_id, l.value AS before, w.value AS after {changing}
                  ORDER BY w.image_id LIMIT :n) AS c
            JOIN raw.post_images i ON i.id = c.image_id
            ORDER BY i.shortcode, i.position
            """
        ),
        {"n": SAMPLE_SIZE},
    ).all()
    staged = connection.execute(text("SELECT count(*) FROM wanted_labels")).scalar_one()
    sample = [
        {"shortcode": r.shortcode, "position": r.position, "before": r.before, "after": r.after}
        for r in rows
    ]
    return JobOutcome(kind, True, total, unchanged=staged - total, sample=sample)


def _sample(connection: Connection, job_id: int) -> list[dict[str, Any]]:
    rows = connection.execute(
        text(
            """
            SELECT i.shortcode, i.position, old.value AS before, n.value AS after
            FROM (SELECT * FROM catalogue.labels WHERE job_id = :job ORDER BY id LIMIT :n) AS n
            JOIN raw.post_images i ON i.id = n.image_id
            LEFT JOIN catalogue.labels old ON old.id = n.replaces_label_id
            ORDER BY n.id
            """
        ),
        {"job": job_id, "n": SAMPLE_SIZE},
    ).all()
    return [dict(r._mapping) for r in rows]


def undo_job(*, engine: Engine, job_id: int, who: Who, dry_run: bool = False) -> JobOutcome:
    """Put back what job `job_id` replaced, where its labels are still the current ones."""
    validate_undo(job_id=job_id)
    return label_transaction(
        engine, lambda connection: _undo_job(connection, job_id=job_id, who=who, dry_run=dry_run)
    )


def _undo_job(connection: Connection, *, job_id: int, who: Who, dry_run: bool) -> JobOutcome:
    job = connection.execute(
        text(
            "SELECT j.id, j.kind, u.id AS undone_by FROM catalogue.label_jobs j "
            "LEFT JOIN catalogue.label_jobs u ON u.undoes_job_id = j.id WHERE j.id = :id"
        ),
        {"id": job_id},
    ).first()
    if job is None:
        raise JobError(f"there is no label job {job_id}: check its number among the recent jobs")
    if job.undone_by is not None:
        raise JobError(
            f"job {job_id} was already undone by job {job.undone_by}; "
            f"undoing job {job.undone_by} redoes it"
        )
    empty_staging(connection)
    # Each label of the job goes back to the one it replaced (no value if it replaced
    # nothing), only if it is still the latest: expected_label_id guards that.
    connection.execute(
        text(
            """
            INSERT INTO wanted_labels (image_id, attribute, value, moderator, note,
                                       expected_label_id)
            SELECT n.image_id, n.attribute, old.value, old.moderator,
                   'undo of job ' || n.job_id, n.id
            FROM catalogue.labels n
            LEFT JOIN catalogue.labels old ON old.id = n.replaces_label_id
            WHERE n.job_id = :job
            """
        ),
        {"job": job_id},
    )
    staged = connection.execute(text("SELECT count(*) FROM wanted_labels")).scalar_one()
    if dry_run:
        outcome = _dry_run(connection, "undo")
        stale = connection.execute(
            text(
                "SELECT count(*) FROM wanted_labels w LEFT JOIN catalogue.latest_labels l "
                "ON l.image_id = w.image_id AND l.attribute = w.attribute "
                "WHERE l.label_id IS DISTINCT FROM w.expected_label_id"
            )
        ).scalar_one()
        outcome.images -= stale
        outcome.skipped = stale
        connection.rollback()
        return outcome
    undo_id = start_job(
        connection=connection, kind="undo", who=who, arguments={"job": job_id},
        undoes_job_id=job_id,
    )  # fmt: skip
    written = write_staged(connection=connection, job_id=undo_id)
    sample = _sample(connection, undo_id)
    return JobOutcome(
        "undo", False, written.written, undo_id, staged - written.written - len(written.stale),
        skipped=len(written.stale), sample=sample,
    )  # fmt: skip


def list_jobs(*, engine: Engine, limit: int = 20) -> list[Any]:
    with engine.connect() as connection:
        return connection.execute(
            text(
                """
                SELECT j.id, j.kind, j.created_by, j.origin, j.labels_written, j.created_at,
                       j.arguments, j.undoes_job_id, u.id AS undone_by
                FROM catalogue.label_jobs j
                LEFT JOIN catalogue.label_jobs u ON u.undoes_job_id = j.id
                ORDER BY j.id DESC LIMIT :n
                """
            ),
            {"n": limit},
        ).all()
