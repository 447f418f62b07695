"""Moderation: taxonomy tables, append-only labels, label jobs, predictions, and the rule that a
moderator's label outranks a model's prediction in the marketplace tables.

- `catalogue.attributes`, `attribute_values` (with their path in the grouping), `value_aliases`:
  the synced taxonomy; the shipped default is synced here.
- `catalogue.labels`: append-only (a trigger refuses UPDATE, and DELETE except during a takedown
  purge); `catalogue.latest_labels` / `current_labels` are views.
- `catalogue.label_jobs`: every change of labels is made by a recorded job.
- `catalogue.predictions`: the latest model prediction per image and attribute (predict writes it).
- `catalogue.refresh_products(ids)`: writes marketplace rows from current labels and predictions;
  a statement trigger on labels calls it, so moderator labels reach the marketplace whichever way
  they are inserted.

The functions that later revisions redefine are read from `migrations/sql/NAME.REV.sql` (since
issue 23), so a downgrade restores the previous definition from its file instead of slicing it
out of this one; the SQL run is unchanged except `CREATE OR REPLACE` where one file serves an
upgrade and a downgrade.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import context, op
from sqlalchemy.dialects import postgresql

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LABEL_SOURCES = "('moderator', 'import', 'relabel', 'undo')"
JOB_KINDS = "('label', 'import', 'rename', 'move', 'clear', 'apply_csv', 'undo')"
SQL = Path(__file__).parents[1] / "sql"  # functions later revisions redefine, as applied


def _roles() -> dict[str, str]:
    names = context.config.attributes.get("role_names")
    if names is None:
        from pipeline.config import Settings

        names = Settings.from_env().role_names
    return names


def _now(name: str = "created_at") -> sa.Column:
    return sa.Column(
        name, sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
    )


def upgrade() -> None:
    op.create_table(
        "attributes",
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("levels", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("train_at", sa.Text(), nullable=False),
        sa.Column("position", sa.SmallInteger(), nullable=False),
        sa.Column("active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("taxonomy_version_id", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_attributes"),
        sa.ForeignKeyConstraint(
            ["taxonomy_version_id"],
            ["catalogue.taxonomy_versions.id"],
            name="fk_attributes_taxonomy_version_id_taxonomy_versions",
        ),
        schema="catalogue",
    )
    op.create_table(
        "attribute_values",
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("path", postgresql.ARRAY(sa.Text()), nullable=False),
        sa.Column("parent", sa.Text()),
        sa.Column("depth", sa.SmallInteger(), nullable=False),
        sa.Column("taxonomy_version_id", sa.Integer(), nullable=False),
        sa.Column("retired_at", sa.DateTime(timezone=True)),
        sa.PrimaryKeyConstraint("attribute", "value", name="pk_attribute_values"),
        sa.ForeignKeyConstraint(
            ["attribute"],
            ["catalogue.attributes.name"],
            name="fk_attribute_values_attribute_attributes",
        ),
        sa.ForeignKeyConstraint(
            ["taxonomy_version_id"],
            ["catalogue.taxonomy_versions.id"],
            name="fk_attribute_values_taxonomy_version_id_taxonomy_versions",
        ),
        schema="catalogue",
    )
    op.create_table(
        "value_aliases",
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("alias_key", sa.Text(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("attribute", "alias_key", name="pk_value_aliases"),
        sa.ForeignKeyConstraint(
            ["attribute", "value"],
            ["catalogue.attribute_values.attribute", "catalogue.attribute_values.value"],
            name="fk_value_aliases_attribute_attribute_values",
        ),
        schema="catalogue",
    )
    op.create_table(
        "label_jobs",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("arguments", postgresql.JSONB(), server_default=sa.text("'{}'"), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("db_role", sa.Text(), server_default=sa.text("session_user"), nullable=False),
        sa.Column("origin", sa.String(16), server_default=sa.text("'cli'"), nullable=False),
        sa.Column("airflow_run_id", sa.Text()),
        sa.Column("labels_written", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("undoes_job_id", sa.BigInteger()),
        _now(),
        sa.PrimaryKeyConstraint("id", name="pk_label_jobs"),
        sa.UniqueConstraint("undoes_job_id", name="uq_label_jobs_undoes_job_id"),
        sa.ForeignKeyConstraint(
            ["undoes_job_id"],
            ["catalogue.label_jobs.id"],
            name="fk_label_jobs_undoes_job_id_label_jobs",
        ),
        sa.CheckConstraint(f"kind IN {JOB_KINDS}", name="ck_label_jobs_kind"),
        schema="catalogue",
    )
    op.create_index("ix_label_jobs_created_at", "label_jobs", ["created_at"], schema="catalogue")
    op.create_table(
        "labels",
        sa.Column("id", sa.BigInteger(), sa.Identity(), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("value", sa.Text()),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("moderator", sa.Text(), nullable=False),
        sa.Column("created_by", sa.Text(), nullable=False),
        sa.Column("db_role", sa.Text(), server_default=sa.text("session_user"), nullable=False),
        sa.Column("note", sa.Text()),
        sa.Column("replaces_label_id", sa.BigInteger()),
        sa.Column("job_id", sa.BigInteger(), nullable=False),
        _now(),
        sa.PrimaryKeyConstraint("id", name="pk_labels"),
        sa.ForeignKeyConstraint(
            ["image_id"], ["raw.images.id"], name="fk_labels_image_id_images", ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["attribute", "value"],
            ["catalogue.attribute_values.attribute", "catalogue.attribute_values.value"],
            name="fk_labels_attribute_attribute_values",
        ),
        sa.ForeignKeyConstraint(
            ["attribute"], ["catalogue.attributes.name"], name="fk_labels_attribute_attributes"
        ),
        sa.ForeignKeyConstraint(
            ["replaces_label_id"],
            ["catalogue.labels.id"],
            name="fk_labels_replaces_label_id_labels",
        ),
        sa.ForeignKeyConstraint(
            ["job_id"], ["catalogue.label_jobs.id"], name="fk_labels_job_id_label_jobs"
        ),
        sa.CheckConstraint(f"source IN {LABEL_SOURCES}", name="ck_labels_source"),
        schema="catalogue",
    )
    op.create_index(
        "ix_labels_image_id_attribute_id", "labels", ["image_id", "attribute", "id"],
        schema="catalogue",
    )  # fmt: skip
    op.create_index("ix_labels_job_id", "labels", ["job_id"], schema="catalogue")
    op.create_index("ix_labels_created_at", "labels", ["created_at"], schema="catalogue")
    op.create_table(
        "predictions",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("attribute", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("confidence", sa.REAL(), nullable=False),
        sa.Column("margin", sa.REAL(), nullable=False),
        sa.Column("top", postgresql.JSONB(), server_default=sa.text("'[]'"), nullable=False),
        sa.Column("needs_review", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("model_version", sa.Text(), nullable=False),
        _now("predicted_at"),
        sa.PrimaryKeyConstraint("image_id", "attribute", name="pk_predictions"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["raw.images.id"],
            name="fk_predictions_image_id_images",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["attribute"],
            ["catalogue.attributes.name"],
            name="fk_predictions_attribute_attributes",
        ),
        sa.CheckConstraint("confidence BETWEEN 0 AND 1", name="ck_predictions_confidence_range"),
        schema="catalogue",
    )
    op.create_index(
        "ix_predictions_attribute_margin", "predictions", ["attribute", "margin"],
        schema="catalogue",
    )  # fmt: skip

    op.execute(
        """
        CREATE VIEW catalogue.latest_labels AS
        SELECT DISTINCT ON (image_id, attribute)
               id AS label_id, image_id, attribute, value, source, moderator, created_by, note,
               job_id, created_at
        FROM catalogue.labels
        ORDER BY image_id, attribute, id DESC
        """
    )
    op.execute(
        """
        CREATE VIEW catalogue.current_labels AS
        SELECT * FROM catalogue.latest_labels WHERE value IS NOT NULL
        """
    )
    op.execute(
        """
        COMMENT ON VIEW catalogue.current_labels IS
        'Each image''s current label per attribute: the newest row of catalogue.labels, unless
         that row cleared the label. Labels outrank predictions everywhere.'
        """
    )
    op.execute(
        """
        CREATE FUNCTION catalogue.labels_are_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$
        BEGIN
            IF TG_OP = 'DELETE' AND current_setting('catalogue.purge', true) = 'on' THEN
                RETURN OLD;  -- a takedown removes the image and everything about it
            END IF;
            RAISE EXCEPTION 'catalogue.labels is append-only: record a change as a new label '
                '(catalogue labels import, or a relabel job), never % a label', lower(TG_OP)
                USING ERRCODE = 'insufficient_privilege';
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER labels_are_append_only BEFORE UPDATE OR DELETE ON catalogue.labels
        FOR EACH ROW EXECUTE FUNCTION catalogue.labels_are_append_only()
        """
    )
    op.execute((SQL / "refresh_products.0005.sql").read_text())
    op.execute(
        """
        CREATE FUNCTION catalogue.labels_reach_marketplace() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            PERFORM catalogue.refresh_products(ARRAY(SELECT DISTINCT image_id FROM new_labels));
            RETURN NULL;
        END $$
        """
    )
    op.execute(
        """
        CREATE TRIGGER labels_reach_marketplace AFTER INSERT ON catalogue.labels
        REFERENCING NEW TABLE AS new_labels
        FOR EACH STATEMENT EXECUTE FUNCTION catalogue.labels_reach_marketplace()
        """
    )

    roles = _roles()
    app, reader, moderator = roles["app"], roles["reader"], roles["moderator"]
    op.execute("REVOKE ALL ON FUNCTION catalogue.refresh_products(bigint[]) FROM PUBLIC")
    op.execute(f"GRANT EXECUTE ON FUNCTION catalogue.refresh_products(bigint[]) TO {app}")
    # Labels are history: nobody updates or deletes them (the trigger enforces it for owners too).
    op.execute(f"REVOKE UPDATE, DELETE, TRUNCATE ON catalogue.labels FROM {app}")
    op.execute(f"GRANT INSERT ON catalogue.labels, catalogue.label_jobs TO {moderator}")
    op.execute(f"GRANT UPDATE (labels_written) ON catalogue.label_jobs TO {moderator}")
    op.execute(
        f"GRANT USAGE ON SEQUENCE catalogue.labels_id_seq, catalogue.label_jobs_id_seq "
        f"TO {moderator}"
    )
    # Readers (analysts) and moderators read labels and their history by default privileges;
    # said explicitly for the views, which some Postgres versions do not cover by default.
    op.execute(
        f"GRANT SELECT ON catalogue.latest_labels, catalogue.current_labels TO {reader}, "
        f"{moderator}, {app}"
    )

    from pipeline.labels.taxonomy import load_taxonomy, sync_taxonomy

    sync_taxonomy(connection=op.get_bind(), taxonomy=load_taxonomy())


def downgrade() -> None:
    op.execute("DROP TRIGGER labels_reach_marketplace ON catalogue.labels")
    op.execute("DROP FUNCTION catalogue.labels_reach_marketplace()")
    op.execute("DROP FUNCTION catalogue.refresh_products(bigint[])")
    op.execute("DROP VIEW catalogue.current_labels")
    op.execute("DROP VIEW catalogue.latest_labels")
    op.drop_table("predictions", schema="catalogue")
    op.execute("DROP TRIGGER labels_are_append_only ON catalogue.labels")
    op.drop_table("labels", schema="catalogue")
    op.execute("DROP FUNCTION catalogue.labels_are_append_only()")
    op.drop_table("label_jobs", schema="catalogue")
    op.drop_table("value_aliases", schema="catalogue")
    op.drop_table("attribute_values", schema="catalogue")
    op.drop_table("attributes", schema="catalogue")
    op.execute("DELETE FROM catalogue.taxonomy_versions")
