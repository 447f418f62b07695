"""Label history stays one chain under concurrent writers; its identity and time come from the
database session, not from the inserted row.

- `catalogue.lock_images(ids)`: locks the images' rows in id order (FOR NO KEY UPDATE). Every
  label writer takes it before it reads the latest labels, and `refresh_products` takes it before
  it reads labels and predictions, so two writers of one picture take turns: the second reads what
  the first committed, and the marketplace row is computed by the last of them from everything
  committed (READ COMMITTED: each statement after the lock sees the other's commit). One
  statement in id order: two writers never hold each other's rows crosswise.
- Unique indexes: a label replaces at most one label (`replaces_label_id`), and an image's
  attribute has one first label. A writer that did not lock (raw SQL) and read a stale latest
  label is refused by them instead of forking the history.
- Triggers: a label's `db_role` and `created_at` are the session's; its `source` and
  `created_by` must be those of its job, and it must replace the latest label (else SQLSTATE
  40001, retry). A session that is not a member of the application role (a moderator at a SQL
  prompt) writes only its own name as `created_by` and `moderator`, only into its own jobs, and
  cannot record an undo (`undoes_job_id` is unique: a fake undo would block the real one).
  `labels_written` is counted by the database; nobody but the tables' owner updates or deletes a
  job (the application and moderators lose UPDATE and DELETE). Ids above their sequence's are
  refused: a label with a huge id would stay the latest for good and block every later write.

Histories forked before this revision stay as they are (labels are append-only); the unique
indexes cover the labels written after the last forked one.

The functions that later revisions redefine are read from `migrations/sql/NAME.REV.sql` (since
issue 23), so a downgrade restores the previous definition from its file instead of slicing it
out of this one; the SQL run is unchanged except `CREATE OR REPLACE` where one file serves an
upgrade and a downgrade.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op
from sqlalchemy import text

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).parents[1] / "sql"  # functions other revisions redefine, as applied


def _roles() -> dict[str, str]:
    names = context.config.attributes.get("role_names")
    if names is None:
        from pipeline.config import Settings

        names = Settings.from_env().role_names
    return names


def upgrade() -> None:
    roles = _roles()
    app, moderator = roles["app"], roles["moderator"]
    op.execute(
        """
        CREATE FUNCTION catalogue.lock_images(ids bigint[]) RETURNS bigint
        LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
            SELECT count(*) FROM (
                SELECT 1 FROM raw.images WHERE id = ANY(ids) ORDER BY id FOR NO KEY UPDATE
            ) AS locked
        $$
        """
    )
    # a reader holding pictures' rows in an open transaction would stop every writer
    op.execute("REVOKE ALL ON FUNCTION catalogue.lock_images(bigint[]) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION catalogue.lock_images(bigint[]) TO {app}, {moderator}")
    op.execute((SQL / "refresh_products.0009.sql").read_text())

    op.execute(
        f"""
        CREATE FUNCTION catalogue.trusted_writer() RETURNS boolean
        LANGUAGE sql STABLE AS $$ SELECT pg_has_role(session_user, '{app}', 'MEMBER') $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION catalogue.label_source(job_kind text) RETURNS text
        LANGUAGE sql IMMUTABLE AS $$
            SELECT CASE job_kind WHEN 'label' THEN 'moderator' WHEN 'import' THEN 'import'
                                 WHEN 'apply_csv' THEN 'import' WHEN 'undo' THEN 'undo'
                                 ELSE 'relabel' END
        $$
        """
    )
    op.execute(
        """
        CREATE FUNCTION catalogue.jobs_are_recorded_by_the_session() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF NEW.id > COALESCE(pg_sequence_last_value('catalogue.label_jobs_id_seq'), 0) THEN
                RAISE EXCEPTION 'label job ids come from the database: leave id out'
                    USING ERRCODE = 'insufficient_privilege';
            END IF;
            NEW.db_role := session_user;
            NEW.created_at := now();
            NEW.labels_written := 0;
            IF (NEW.kind = 'undo') IS DISTINCT FROM (NEW.undoes_job_id IS NOT NULL) THEN
                RAISE EXCEPTION 'an undo job names the job it undoes, and only an undo job does'
                    USING ERRCODE = 'check_violation';
            END IF;
            IF NOT catalogue.trusted_writer() THEN
                IF NEW.kind = 'undo' THEN
                    RAISE EXCEPTION 'undo jobs are recorded by `catalogue labels undo JOB`, not '
                        'by SQL' USING ERRCODE = 'insufficient_privilege';
                END IF;
                NEW.created_by := session_user;
                NEW.origin := 'sql';
                NEW.airflow_run_id := NULL;
            END IF;
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER jobs_are_recorded_by_the_session BEFORE INSERT ON catalogue.label_jobs
        FOR EACH ROW EXECUTE FUNCTION catalogue.jobs_are_recorded_by_the_session()
        """
    )
    op.execute(
        """
        CREATE FUNCTION catalogue.labels_are_recorded_by_the_session() RETURNS trigger
        LANGUAGE plpgsql SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            NEW.db_role := session_user;
            NEW.created_at := now();
            RETURN NEW;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER labels_are_recorded_by_the_session BEFORE INSERT ON catalogue.labels
        FOR EACH ROW EXECUTE FUNCTION catalogue.labels_are_recorded_by_the_session()
        """
    )
    # One set-based check per statement (a row trigger querying per label costs seconds on an
    # import of 20,000), then the jobs' counts. Named to fire before labels_reach_marketplace.
    op.execute(
        """
        CREATE FUNCTION catalogue.labels_follow_their_job() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            bad record;
            trusted boolean := catalogue.trusted_writer();
        BEGIN
            SELECT n.id, n.image_id, n.attribute, n.job_id, n.replaces_label_id,
                   n.source <> catalogue.label_source(j.kind) AS wrong_source,
                   n.created_by <> j.created_by AS wrong_creator,
                   NOT trusted AND j.db_role <> session_user AS foreign_job,
                   NOT trusted AND n.moderator <> session_user AS wrong_moderator,
                   n.id > COALESCE(pg_sequence_last_value('catalogue.labels_id_seq'), 0) AS own_id,
                   prev.id AS previous
            INTO bad
            FROM new_labels n
            JOIN catalogue.label_jobs j ON j.id = n.job_id
            LEFT JOIN LATERAL (
                SELECT l.id FROM catalogue.labels l
                WHERE l.image_id = n.image_id AND l.attribute = n.attribute AND l.id < n.id
                ORDER BY l.id DESC LIMIT 1
            ) AS prev ON true
            WHERE n.source <> catalogue.label_source(j.kind)
               OR n.id > COALESCE(pg_sequence_last_value('catalogue.labels_id_seq'), 0)
               OR n.created_by <> j.created_by
               OR (NOT trusted AND (j.db_role <> session_user OR n.moderator <> session_user))
               OR n.replaces_label_id IS DISTINCT FROM prev.id
            LIMIT 1;
            IF FOUND THEN
                IF bad.own_id THEN
                    -- an id above the sequence's would be the latest label for good: every
                    -- later write of the picture would be refused
                    RAISE EXCEPTION 'label ids come from the database: leave id out'
                        USING ERRCODE = 'insufficient_privilege';
                ELSIF bad.foreign_job THEN
                    RAISE EXCEPTION 'label job % was recorded by another role: write labels '
                        'into a job of your own', bad.job_id
                        USING ERRCODE = 'insufficient_privilege';
                ELSIF bad.wrong_source OR bad.wrong_creator OR bad.wrong_moderator THEN
                    RAISE EXCEPTION 'a label''s source, created_by and moderator come from its '
                        'job and the session (label job %): leave them to the database',
                        bad.job_id USING ERRCODE = 'insufficient_privilege';
                END IF;
                RAISE EXCEPTION 'the new % label of image % must replace label % (its latest),'
                    ' not %: its label changed meanwhile; read it again and retry',
                    bad.attribute, bad.image_id, COALESCE(bad.previous::text, 'none'),
                    COALESCE(bad.replaces_label_id::text, 'none')
                    USING ERRCODE = 'serialization_failure';
            END IF;
            UPDATE catalogue.label_jobs j SET labels_written = j.labels_written + c.n
            FROM (SELECT job_id, count(*) AS n FROM new_labels GROUP BY job_id) AS c
            WHERE j.id = c.job_id;
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER labels_follow_their_job AFTER INSERT ON catalogue.labels
        REFERENCING NEW TABLE AS new_labels
        FOR EACH STATEMENT EXECUTE FUNCTION catalogue.labels_follow_their_job()
        """
    )
    # A job, once recorded, is history: only the count above changes it (as the table's owner).
    op.execute(f"REVOKE UPDATE, DELETE ON catalogue.label_jobs FROM {app}, {moderator}")

    floor = (
        op.get_bind()
        .execute(
            text(
                """
                SELECT COALESCE(max(forked), 0) FROM (
                    SELECT max(id) AS forked FROM catalogue.labels
                    WHERE replaces_label_id IS NOT NULL
                    GROUP BY replaces_label_id HAVING count(*) > 1
                    UNION ALL
                    SELECT max(id) FROM catalogue.labels WHERE replaces_label_id IS NULL
                    GROUP BY image_id, attribute HAVING count(*) > 1
                ) AS forks
                """
            )
        )
        .scalar_one()
    )
    written_after = f" AND id > {int(floor)}" if floor else ""
    op.execute(
        "CREATE UNIQUE INDEX ix_labels_replaces_label_id ON catalogue.labels (replaces_label_id)"
        f" WHERE replaces_label_id IS NOT NULL{written_after}"
    )
    op.execute(
        "CREATE UNIQUE INDEX ix_labels_image_id_attribute_first ON catalogue.labels "
        f"(image_id, attribute) WHERE replaces_label_id IS NULL{written_after}"
    )


def downgrade() -> None:
    moderator = _roles()["moderator"]
    op.execute("DROP INDEX catalogue.ix_labels_image_id_attribute_first")
    op.execute("DROP INDEX catalogue.ix_labels_replaces_label_id")
    app = _roles()["app"]
    op.execute(f"GRANT UPDATE, DELETE ON catalogue.label_jobs TO {app}")
    op.execute(f"GRANT UPDATE (labels_written) ON catalogue.label_jobs TO {moderator}")
    op.execute("DROP TRIGGER labels_follow_their_job ON catalogue.labels")
    op.execute("DROP FUNCTION catalogue.labels_follow_their_job()")
    op.execute("DROP TRIGGER labels_are_recorded_by_the_session ON catalogue.labels")
    op.execute("DROP FUNCTION catalogue.labels_are_recorded_by_the_session()")
    op.execute("DROP TRIGGER jobs_are_recorded_by_the_session ON catalogue.label_jobs")
    op.execute("DROP FUNCTION catalogue.jobs_are_recorded_by_the_session()")
    op.execute("DROP FUNCTION catalogue.label_source(text)")
    op.execute("DROP FUNCTION catalogue.trusted_writer()")
    op.execute((SQL / "refresh_products.0007.sql").read_text())
    op.execute("DROP FUNCTION catalogue.lock_images(bigint[])")
