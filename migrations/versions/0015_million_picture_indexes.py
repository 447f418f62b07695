"""Indexes the million-picture rehearsal asked for (issue 26, docs/benchmarks.md).

- `raw.images (post_id)`: every slide of a post, taken out of its carousel or not. The only index
  on `post_id` was `ix_images_post_id_position`, partial (`removed_at IS NULL`), so a statement
  that reads `raw.post_images` for a few posts (the label export of one account, the label history
  of a post) read the whole table: 150 ms at a million pictures, and growing with it.
- `raw.posts (taken_at)`: the pictures of a time range (a relabel job's or the review queue's
  `since`/`until`) without reading every post (the only index on it led with the account).
- `marketplace.products (category, colour, updated_at DESC, image_id DESC)`: the analysts'
  "newest products of this category and colour" reads its page from the index instead of every
  product of the category (25 ms at a million pictures, ten times the 100,000's).

Revision ID: 0015
Revises: 0014
Create Date: 2026-12-06
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute("CREATE INDEX ix_images_post_id ON raw.images (post_id)")
    op.execute("CREATE INDEX ix_posts_taken_at ON raw.posts (taken_at)")
    op.execute(
        "CREATE INDEX ix_products_category_colour_updated_at ON marketplace.products "
        "(category, colour, updated_at DESC, image_id DESC)"
    )


def downgrade() -> None:
    op.execute("DROP INDEX marketplace.ix_products_category_colour_updated_at")
    op.execute("DROP INDEX raw.ix_posts_taken_at")
    op.execute("DROP INDEX raw.ix_images_post_id")
