"""The availability trigger does nothing when availability did not change.

`INSERT ... ON CONFLICT DO UPDATE` fires a table's statement-level UPDATE triggers even when no
row conflicted, so every stored post fired `availability_reaches_marketplace` twice (posts and
images), and each call ran `catalogue.refresh_products` on an empty list: a temporary table
created and truncated, four statements, twice per post. On an archive import of 10,000 pictures
that was most of Postgres's CPU time. The trigger now collects the changed images first and calls
`refresh_products` only when there are some.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-22
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(
        """
        CREATE OR REPLACE FUNCTION catalogue.availability_reaches_marketplace() RETURNS trigger
        LANGUAGE plpgsql SECURITY DEFINER SET search_path = pg_catalog, pg_temp AS $$
        DECLARE
            changed bigint[];
        BEGIN
            IF TG_TABLE_NAME = 'posts' THEN
                changed := ARRAY(
                    SELECT i.id FROM new_rows n JOIN old_rows o ON o.id = n.id
                    JOIN raw.images i ON i.post_id = n.id
                    WHERE n.unavailable_since IS DISTINCT FROM o.unavailable_since);
            ELSE
                changed := ARRAY(
                    SELECT n.id FROM new_rows n JOIN old_rows o ON o.id = n.id
                    WHERE n.removed_at IS DISTINCT FROM o.removed_at
                       OR n.position IS DISTINCT FROM o.position);
            END IF;
            IF cardinality(changed) > 0 THEN
                PERFORM catalogue.refresh_products(changed);
            END IF;
            RETURN NULL;
        END $$
        """
    )


def downgrade() -> None:
    """Back to 0007's function (revisions are never edited once applied)."""
    from pathlib import Path

    source = Path(__file__).with_name("0007_predictions.py").read_text()
    start = source.index("CREATE FUNCTION catalogue.availability_reaches_marketplace")
    end = source.index("END $$", start) + len("END $$")
    op.execute(source[start:end].replace("CREATE FUNCTION", "CREATE OR REPLACE FUNCTION", 1))
