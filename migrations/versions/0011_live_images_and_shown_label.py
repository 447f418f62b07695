"""Shared conditions as database objects: the pictures with their posts, the live pictures, and
the rule that a moderator's label outranks a model's prediction.

- `raw.post_images`: every image with the columns of its post that callers use (shortcode, post
  media id, account id, taken_at, unavailable_since) and its account's username (`account`).
- `raw.live_images`: the pictures the catalogue shows: a slide still in its post
  (`removed_at IS NULL`) of a post Instagram still lists (`unavailable_since IS NULL`). Stages'
  set-based SQL reads these instead of repeating the join and the condition.
- `catalogue.shown_label(label, prediction, ...)`: what the marketplace shows for one attribute
  of one picture; its source, with the rule written down, is `migrations/sql/shown_label.0011.sql`.
  `catalogue.refresh_products` now reads `raw.live_images` and decides through it.

The views are read by the roles that read the raw tables (the application and moderators);
analysts' reader role reads catalogue and marketplace only, as before.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from alembic import context, op

revision: str = "0011"
down_revision: str | None = "0010"
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
    # LEFT JOIN raw.accounts: every post has its account (a foreign key, not null), so the rows
    # are those of an inner join, and Postgres leaves the join out when `account` is not read.
    op.execute(
        """
        CREATE VIEW raw.post_images AS
        SELECT i.id, i.media_id, i.post_id, i.position, i.is_video_cover, i.object_key,
               i.sha256, i.width, i.height, i.bytes, i.content_type, i.created_at, i.removed_at,
               p.shortcode, p.media_id AS post_media_id, p.account_id, p.taken_at,
               p.unavailable_since, a.username AS account
        FROM raw.images i
        JOIN raw.posts p ON p.id = i.post_id
        LEFT JOIN raw.accounts a ON a.id = p.account_id
        """
    )
    op.execute(
        """
        CREATE VIEW raw.live_images AS
        SELECT * FROM raw.post_images
        WHERE removed_at IS NULL AND unavailable_since IS NULL
        """
    )
    op.execute(
        """
        COMMENT ON VIEW raw.post_images IS
        'Every image with its post''s shortcode, media id, account, taken_at and availability.'
        """
    )
    op.execute(
        """
        COMMENT ON VIEW raw.live_images IS
        'The pictures the catalogue shows: slides still in their post, of posts Instagram still
         lists. Training, prediction and the marketplace read these.'
        """
    )
    roles = _roles()
    op.execute(
        f"GRANT SELECT ON raw.post_images, raw.live_images TO {roles['app']}, {roles['moderator']}"
    )
    op.execute((SQL / "shown_label.0011.sql").read_text())
    op.execute((SQL / "refresh_products.0011.sql").read_text())


def downgrade() -> None:
    op.execute((SQL / "refresh_products.0009.sql").read_text())
    op.execute("DROP FUNCTION catalogue.shown_label(text, text, real, text, boolean)")
    op.execute("DROP VIEW raw.live_images")
    op.execute("DROP VIEW raw.post_images")
