"""Prediction: every model's scores kept, the champion's in the marketplace, takedowns honoured.

- `catalogue.model_predictions`: what each model version said about each image (value, top
  classes with probabilities, confidence, margin, needs_review). Kept after a model is retired, so
  a rollback restores the previous champion's values without rescoring and analysts can compare
  models. `catalogue.predictions` stays the prediction the marketplace shows.
- `catalogue.adopt_champion_predictions(attribute)`: after a promotion or a rollback, the new
  champion's stored predictions become the shown ones (images it never scored keep the value they
  had until predict scores them).
- `catalogue.unscorable_images`: pictures predict could not use (undecodable, object missing),
  with the reason; undecodable ones are not tried again (the bytes never change).
- `catalogue.refresh_products(ids)` now leaves out images of posts that are no longer available
  and slides removed from a carousel, and deletes their marketplace rows; triggers on
  `raw.posts` / `raw.images` call it when that changes.

The functions that later revisions redefine are read from `migrations/sql/NAME.REV.sql` (since
issue 23), so a downgrade restores the previous definition from its file instead of slicing it
out of this one; the SQL run is unchanged except `CREATE OR REPLACE` where one file serves an
upgrade and a downgrade.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SQL = Path(__file__).parents[1] / "sql"  # functions other revisions redefine, as applied


def upgrade() -> None:
    op.create_table(
        "model_predictions",
        sa.Column("model_version_id", sa.Integer(), nullable=False),
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("confidence", sa.REAL(), nullable=False),
        sa.Column("margin", sa.REAL(), nullable=False),
        sa.Column("top", postgresql.JSONB(), nullable=False),
        sa.Column("needs_review", sa.Boolean(), nullable=False),
        sa.Column(
            "predicted_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("model_version_id", "image_id", name="pk_model_predictions"),
        sa.ForeignKeyConstraint(
            ["model_version_id"],
            ["catalogue.model_versions.id"],
            name="fk_model_predictions_model_version_id_model_versions",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["raw.images.id"],
            name="fk_model_predictions_image_id_images",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "confidence BETWEEN 0 AND 1", name="ck_model_predictions_confidence_range"
        ),
        schema="catalogue",
    )
    op.create_index(
        "ix_model_predictions_image_id", "model_predictions", ["image_id"], schema="catalogue"
    )
    op.create_table(
        "unscorable_images",
        sa.Column("image_id", sa.BigInteger(), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column(
            "first_seen",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_seen",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("image_id", name="pk_unscorable_images"),
        sa.ForeignKeyConstraint(
            ["image_id"],
            ["raw.images.id"],
            name="fk_unscorable_images_image_id_images",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint("kind IN ('undecodable', 'missing')", name="ck_unscorable_images_kind"),
        schema="catalogue",
    )
    op.execute((SQL / "refresh_products.0007.sql").read_text())
    op.execute(
        """
        CREATE FUNCTION catalogue.adopt_champion_predictions(attribute_name text)
        RETURNS integer
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            adopted integer;
        BEGIN
            CREATE TEMP TABLE IF NOT EXISTS adopted_images (image_id bigint) ON COMMIT DROP;
            TRUNCATE adopted_images;
            WITH written AS (
                INSERT INTO catalogue.predictions AS p (image_id, attribute, value, confidence,
                    margin, top, needs_review, model_version, predicted_at)
                SELECT mp.image_id, v.attribute, mp.value, mp.confidence, mp.margin, mp.top,
                       mp.needs_review, v.version, mp.predicted_at
                FROM catalogue.model_predictions mp
                JOIN catalogue.model_versions v ON v.id = mp.model_version_id
                WHERE v.attribute = attribute_name AND v.status = 'champion'
                ON CONFLICT (image_id, attribute) DO UPDATE SET
                    value = EXCLUDED.value, confidence = EXCLUDED.confidence,
                    margin = EXCLUDED.margin, top = EXCLUDED.top,
                    needs_review = EXCLUDED.needs_review,
                    model_version = EXCLUDED.model_version,
                    predicted_at = EXCLUDED.predicted_at
                WHERE p.model_version IS DISTINCT FROM EXCLUDED.model_version
                RETURNING image_id
            )
            INSERT INTO adopted_images SELECT image_id FROM written;
            GET DIAGNOSTICS adopted = ROW_COUNT;
            PERFORM catalogue.refresh_products(ARRAY(SELECT image_id FROM adopted_images));
            RETURN adopted;
        END $$
        """
    )
    op.execute((SQL / "availability_reaches_marketplace.0007.sql").read_text())
    for table in ("posts", "images"):
        op.execute(
            f"""
            CREATE TRIGGER availability_reaches_marketplace AFTER UPDATE ON raw.{table}
            REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
            FOR EACH STATEMENT EXECUTE FUNCTION catalogue.availability_reaches_marketplace()
            """
        )


def downgrade() -> None:
    for table in ("posts", "images"):
        op.execute(f"DROP TRIGGER availability_reaches_marketplace ON raw.{table}")
    op.execute("DROP FUNCTION catalogue.availability_reaches_marketplace()")
    op.execute("DROP FUNCTION catalogue.adopt_champion_predictions(text)")
    op.drop_table("unscorable_images", schema="catalogue")
    op.drop_table("model_predictions", schema="catalogue")
    op.execute((SQL / "refresh_products.0005.sql").read_text())
