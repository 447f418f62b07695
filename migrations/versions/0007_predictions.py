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

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

REFRESH_PRODUCTS = """
CREATE OR REPLACE FUNCTION catalogue.refresh_products(ids bigint[]) RETURNS integer
LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
DECLARE
    written integer;
BEGIN
    -- a post no longer on Instagram, or a slide taken out of its carousel, leaves the marketplace
    DELETE FROM marketplace.products m
    USING raw.images i JOIN raw.posts po ON po.id = i.post_id
    WHERE m.image_id = i.id AND i.id = ANY(ids)
      AND (i.removed_at IS NOT NULL OR po.unavailable_since IS NOT NULL);

    CREATE TEMP TABLE IF NOT EXISTS decided (
        image_id bigint, attribute text, value text, source text, confidence real,
        model_version text, unsure boolean
    ) ON COMMIT DROP;
    TRUNCATE decided;
    INSERT INTO decided
    SELECT i.id, a.name,
           COALESCE(l.value, p.value),
           CASE WHEN l.value IS NOT NULL THEN 'moderator'
                WHEN p.value IS NOT NULL THEN 'model' END,
           CASE WHEN l.value IS NULL THEN p.confidence END,
           CASE WHEN l.value IS NULL THEN p.model_version END,
           l.value IS NULL AND (p.value IS NULL OR p.needs_review)
    FROM raw.images i
    JOIN raw.posts po ON po.id = i.post_id
    CROSS JOIN catalogue.attributes a
    LEFT JOIN catalogue.current_labels l ON l.image_id = i.id AND l.attribute = a.name
    LEFT JOIN catalogue.predictions p ON p.image_id = i.id AND p.attribute = a.name
    WHERE i.id = ANY(ids) AND a.active
      AND i.removed_at IS NULL AND po.unavailable_since IS NULL;

    INSERT INTO marketplace.products AS m (
        image_id, shortcode, position, account, image_key,
        colour, colour_source, colour_confidence,
        category, category_source, category_confidence,
        model_version, needs_review, updated_at)
    SELECT i.id, po.shortcode, i.position, ac.username, i.object_key,
           c.value, c.source, c.confidence, g.value, g.source, g.confidence,
           COALESCE(c.model_version, g.model_version),
           bool_or(d.unsure), now()
    FROM raw.images i
    JOIN raw.posts po ON po.id = i.post_id
    JOIN raw.accounts ac ON ac.id = po.account_id
    JOIN decided d ON d.image_id = i.id
    LEFT JOIN decided c ON c.image_id = i.id AND c.attribute = 'colour'
    LEFT JOIN decided g ON g.image_id = i.id AND g.attribute = 'category'
    WHERE i.id = ANY(ids)
    GROUP BY i.id, po.shortcode, i.position, ac.username, i.object_key,
             c.value, c.source, c.confidence, g.value, g.source, g.confidence,
             c.model_version, g.model_version
    HAVING bool_or(d.value IS NOT NULL)
        OR EXISTS (SELECT 1 FROM marketplace.products x WHERE x.image_id = i.id)
    ON CONFLICT (image_id) DO UPDATE SET
        shortcode = EXCLUDED.shortcode, position = EXCLUDED.position,
        colour = EXCLUDED.colour, colour_source = EXCLUDED.colour_source,
        colour_confidence = EXCLUDED.colour_confidence,
        category = EXCLUDED.category, category_source = EXCLUDED.category_source,
        category_confidence = EXCLUDED.category_confidence,
        model_version = EXCLUDED.model_version, needs_review = EXCLUDED.needs_review,
        updated_at = now()
    WHERE (m.position, m.colour, m.colour_source, m.colour_confidence, m.category,
           m.category_source, m.category_confidence, m.model_version, m.needs_review)
          IS DISTINCT FROM
          (EXCLUDED.position, EXCLUDED.colour, EXCLUDED.colour_source,
           EXCLUDED.colour_confidence, EXCLUDED.category, EXCLUDED.category_source,
           EXCLUDED.category_confidence, EXCLUDED.model_version, EXCLUDED.needs_review);
    GET DIAGNOSTICS written = ROW_COUNT;

    INSERT INTO marketplace.product_attributes AS m (
        image_id, attribute, value, source, confidence, model_version, needs_review,
        updated_at)
    SELECT d.image_id, d.attribute, d.value, d.source, d.confidence, d.model_version,
           d.unsure, now()
    FROM decided d
    JOIN marketplace.products p ON p.image_id = d.image_id
    WHERE d.attribute NOT IN ('colour', 'category')
    ON CONFLICT (image_id, attribute) DO UPDATE SET
        value = EXCLUDED.value, source = EXCLUDED.source,
        confidence = EXCLUDED.confidence, model_version = EXCLUDED.model_version,
        needs_review = EXCLUDED.needs_review, updated_at = now()
    WHERE (m.value, m.source, m.confidence, m.model_version, m.needs_review)
          IS DISTINCT FROM (EXCLUDED.value, EXCLUDED.source, EXCLUDED.confidence,
                            EXCLUDED.model_version, EXCLUDED.needs_review);
    RETURN written;
END $$
"""


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
    op.execute(REFRESH_PRODUCTS)
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
    op.execute(
        """
        CREATE FUNCTION catalogue.availability_reaches_marketplace() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        BEGIN
            IF TG_TABLE_NAME = 'posts' THEN
                PERFORM catalogue.refresh_products(ARRAY(
                    SELECT i.id FROM new_rows n JOIN old_rows o ON o.id = n.id
                    JOIN raw.images i ON i.post_id = n.id
                    WHERE n.unavailable_since IS DISTINCT FROM o.unavailable_since));
            ELSE
                PERFORM catalogue.refresh_products(ARRAY(
                    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
                    WHERE n.removed_at IS DISTINCT FROM o.removed_at
                       OR n.position IS DISTINCT FROM o.position));
            END IF;
            RETURN NULL;
        END $$
        """
    )
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
    _restore_refresh_products_of_0005()


def _restore_refresh_products_of_0005() -> None:
    """Revisions are never edited once applied, so 0005's text is the function to go back to."""
    from pathlib import Path

    source = Path(__file__).with_name("0005_labels.py").read_text()
    start = source.index("CREATE FUNCTION catalogue.refresh_products")
    end = source.index("END $$", start) + len("END $$")
    op.execute(source[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
